//! Declares the `loom` cfg so that `--cfg loom` builds (the model checker) are not flagged as
//! unexpected configurations.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
