//! Scripted exchanges with the engine on a fake clock, one rule each, one module per topic.
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_methods)]

mod channels;
mod common;
mod lifecycle;
mod refusals;
mod regressions;
mod sequences;
