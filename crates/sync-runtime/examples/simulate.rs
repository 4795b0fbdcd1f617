//! Placeholder, replaced by the simulation below.
fn main() {}
