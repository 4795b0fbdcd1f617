//! The stored-value decoding fuzz body as an ordinary test, over the checked-in corpus and
//! random bytes.
#![allow(missing_docs)]

use proptest::prelude::*;
use sync_storage::fuzzing::decode;
use sync_testkit::fuzz::check_corpus;

#[test]
fn storage_decode_corpus() {
    check_corpus("storage_decode", decode);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_stored_values(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode(&bytes).map_err(TestCaseError::fail)?;
    }
}
