//! The contract suite and the model property test, run against the in-process backends
//! (memory always, the redb file store with feature `file`). The Redis backend runs the same
//! suite in `tests/redis.rs`.

mod common;

mod memory {
    use std::sync::Arc;

    use sync_storage::MemoryStorage;

    use super::common;
    use crate::contract_suite;

    async fn make() -> Option<((), Arc<MemoryStorage>)> {
        Some(((), Arc::new(MemoryStorage::new())))
    }

    contract_suite!(make);
}

#[cfg(feature = "file")]
mod file {
    use sync_storage::FileStorage;
    use tempfile::TempDir;

    use super::common;
    use crate::contract_suite;

    async fn make() -> Option<(TempDir, FileStorage)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FileStorage::open(dir.path().join("state.redb")).expect("open");
        Some((dir, storage))
    }

    contract_suite!(make);
}
