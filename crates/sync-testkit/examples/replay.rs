//! Replays one fuzz input (a corpus file, a crash artifact, or a proptest byte list such as
//! `[1, 2, 3]`) and prints the decoded input and the verdict.
//!
//! `cargo run -p sync-testkit --example replay -- core_inputs|core_scenario FILE`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use arbitrary::{Arbitrary, Unstructured};
use sync_testkit::fuzz::{self, CoreInputs, ScenarioSpec};

fn bytes(path: &str) -> Option<Vec<u8>> {
    let raw = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let trimmed = text.trim();
    if trimmed.starts_with('[') && trimmed.ends_with(']') {
        let inner = &trimmed[1..trimmed.len() - 1];
        return inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect();
    }
    Some(raw)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, path] = args.as_slice() else {
        eprintln!("usage: replay core_inputs|core_scenario FILE");
        return ExitCode::FAILURE;
    };
    let Some(data) = bytes(path) else {
        eprintln!("cannot read {path}");
        return ExitCode::FAILURE;
    };
    let verdict = match target.as_str() {
        "core_inputs" => {
            if let Ok(input) = CoreInputs::arbitrary_take_rest(Unstructured::new(&data)) {
                println!("{input:#?}");
            }
            fuzz::core_inputs(&data)
        }
        "core_scenario" => {
            if let Ok(spec) = ScenarioSpec::arbitrary_take_rest(Unstructured::new(&data)) {
                println!("{spec:#?}");
            }
            fuzz::core_scenario(&data)
        }
        other => {
            eprintln!("unknown target {other}");
            return ExitCode::FAILURE;
        }
    };
    match verdict {
        Ok(()) => {
            println!("passes");
            ExitCode::SUCCESS
        }
        Err(message) => {
            println!("fails: {message}");
            ExitCode::FAILURE
        }
    }
}
