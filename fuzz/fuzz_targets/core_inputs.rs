//! Fuzz target `core_inputs`: see `sync_testkit::fuzz::core_inputs` for the rules it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(message) = sync_testkit::fuzz::core_inputs(data) {
        panic!("{message}");
    }
});
