//! Fuzz target `storage_decode`: see `sync_storage::fuzzing::decode` for the rules it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(message) = sync_storage::fuzzing::decode(data) {
        panic!("{message}");
    }
});
