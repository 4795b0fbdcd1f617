//! The fan-out fuzz body as an ordinary test, over the checked-in corpus and random bytes.
#![allow(missing_docs)]

use std::path::Path;

use proptest::prelude::*;
use sync_events::fuzzing::fan_out;
use sync_testkit::fuzz::run_corpus;

#[test]
fn events_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/events");
    if let Err(message) = run_corpus(&corpus, fan_out) {
        panic!("{message}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_fan_out(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fan_out(&bytes).map_err(TestCaseError::fail)?;
    }
}
