//! Fuzz target `events`: see `sync_events::fuzzing::fan_out` for the rules it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(message) = sync_events::fuzzing::fan_out(data) {
        panic!("{message}");
    }
});
