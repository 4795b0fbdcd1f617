//! The stored-value decoding fuzz body as an ordinary test, over the checked-in corpus and
//! random bytes.
#![allow(missing_docs)]

use std::path::PathBuf;

use proptest::prelude::*;
use sync_storage::fuzzing::decode;

#[test]
fn storage_decode_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/storage_decode");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus at {} is missing",
        dir.display()
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap_or_default();
        if let Err(message) = decode(&bytes) {
            panic!("{}: {message}", path.display());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_stored_values(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode(&bytes).map_err(TestCaseError::fail)?;
    }
}
