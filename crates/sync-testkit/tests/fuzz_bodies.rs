//! The fuzz bodies as ordinary tests: over the checked-in corpus (`fuzz/corpus/`), and over
//! random bytes from proptest, so the two kinds of testing share one input generator.
#![allow(missing_docs)]

mod common;

use common::cases;
use proptest::prelude::*;
use sync_testkit::fuzz;

#[test]
fn core_inputs_corpus() {
    fuzz::check_corpus("core_inputs", fuzz::core_inputs);
}

#[test]
fn core_scenario_corpus() {
    fuzz::check_corpus("core_scenario", fuzz::core_scenario);
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_core_inputs(bytes in proptest::collection::vec(any::<u8>(), 0..4_096)) {
        fuzz::core_inputs(&bytes).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn arbitrary_scenarios(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        fuzz::core_scenario(&bytes).map_err(TestCaseError::fail)?;
    }
}
