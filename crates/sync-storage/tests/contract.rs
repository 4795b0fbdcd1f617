//! The contract suites (state, leases and registry) and the model property test, run against
//! the in-process backends
//! (memory always, the redb file store with feature `file`). The Redis backend runs the same
//! suite in `tests/redis.rs`.

mod common;

mod memory {
    use std::sync::Arc;

    use sync_storage::MemoryStorage;

    use super::common;
    use crate::common::lease::Manual;
    use crate::{contract_suite, lease_suite};

    async fn make() -> Option<((), Arc<MemoryStorage>)> {
        Some(((), Arc::new(MemoryStorage::new())))
    }

    async fn make_leases() -> Option<((), Arc<MemoryStorage>, Manual)> {
        let time = Manual::default();
        Some((
            (),
            Arc::new(MemoryStorage::with_clock(time.0.clone())),
            time,
        ))
    }

    contract_suite!(make);
    lease_suite!(make_leases);
}

#[cfg(feature = "file")]
mod file {
    use sync_storage::FileStorage;
    use tempfile::TempDir;

    use super::common;
    use crate::common::lease::Manual;
    use crate::{contract_suite, lease_suite};

    async fn make() -> Option<(TempDir, FileStorage)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FileStorage::open(dir.path().join("state.redb")).expect("open");
        Some((dir, storage))
    }

    async fn make_leases() -> Option<(TempDir, FileStorage, Manual)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let time = Manual::default();
        let storage = FileStorage::open_with_clock(dir.path().join("state.redb"), time.0.clone())
            .expect("open");
        Some((dir, storage, time))
    }

    contract_suite!(make);
    lease_suite!(make_leases);
}
