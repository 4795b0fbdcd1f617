//! The adapter's tests, one module per constructor family.
#![allow(clippy::unwrap_used)]

mod common;
mod difference;
mod engine;
mod envelope;
mod mentions;
mod peers;
mod request;
mod sequence;
