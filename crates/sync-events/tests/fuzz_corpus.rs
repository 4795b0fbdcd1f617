//! The fan-out fuzz body as an ordinary test, over the checked-in corpus and random bytes.
#![allow(missing_docs)]

use proptest::prelude::*;
use sync_events::fuzzing::fan_out;
use sync_testkit::fuzz::check_corpus;

#[test]
fn events_corpus() {
    check_corpus("events", fan_out);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_fan_out(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fan_out(&bytes).map_err(TestCaseError::fail)?;
    }
}
