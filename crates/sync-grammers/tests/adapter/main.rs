//! The adapter's tests, one module per constructor family.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "client")]
mod client;
mod common;
mod difference;
mod engine;
mod envelope;
mod index;
mod mentions;
mod peers;
mod request;
mod sequence;
#[cfg(feature = "client")]
mod tl_end_to_end;
