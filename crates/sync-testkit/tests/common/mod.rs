//! What the property tests share: the case count, and a scenario run as a proptest case.
#![allow(dead_code)]

use proptest::prelude::*;
use sync_testkit::{Report, Scenario};

/// `default` cases, or `PROPTEST_CASES` when set; no failure files.
pub(crate) fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `scenario` as a proptest case: a violation fails it, with the scenario's settings.
pub(crate) fn check(scenario: &Scenario) -> Result<Report, TestCaseError> {
    scenario
        .run()
        .map_err(|violation| TestCaseError::fail(format!("{violation}\n{scenario:?}")))
}
