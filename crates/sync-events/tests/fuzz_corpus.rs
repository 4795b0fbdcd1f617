//! The fan-out fuzz body as an ordinary test, over the checked-in corpus and random bytes.
#![allow(missing_docs)]

use std::path::PathBuf;

use proptest::prelude::*;
use sync_events::fuzzing::fan_out;

#[test]
fn events_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/events");
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
        if let Err(message) = fan_out(&bytes) {
            panic!("{}: {message}", path.display());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_fan_out(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fan_out(&bytes).map_err(TestCaseError::fail)?;
    }
}
