#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]
use arbitrary::{Arbitrary, Unstructured};
fn main() {
    let text = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let bytes: Vec<u8> = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let input =
        sync_testkit::fuzz::CoreInputs::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
    println!("{input:#?}");
    println!("{:?}", sync_testkit::fuzz::run_core_inputs(&input));
}
