//! A sans-IO engine that keeps a Telegram account's update state in sync.
//!
//! Telegram numbers the updates it pushes: a common `pts` for the message box, `qts` for
//! secret-chat and bot events, `seq` for `updates` containers, and one `pts` per channel.
//! Pushes get lost, duplicated, reordered, or summarised as "too long". [`Engine`] detects every
//! gap, waits briefly for it to fill, otherwise asks for the difference, and hands the
//! application every update exactly once, in order, while telling storage what to persist.
//!
//! The engine does no I/O and never reads the clock. It is a state machine: you feed it
//! *inputs*, it produces *outputs*, and it tells you when it next needs to be woken. Any
//! runtime can drive it (the `sync-runtime` crate drives it on tokio); tests drive it on a
//! virtual clock.
//!
//! # Your update type
//!
//! The engine is generic over the application's update type `U` ([`Update`]: which
//! [`Sequence`] an update belongs to, nothing else) and over the entities `E` that come with
//! them ([`Entities`]: only the channel access hashes they carry are read; `()` for none).
//!
//! # Inputs
//!
//! Every input takes `now`, the current time, and returns `Result<(), Error>` where it can be
//! malformed. An error means the input was refused as a whole: nothing of it was applied or
//! delivered. A refused reply changes nothing (the driver retries the request). A refused push
//! ([`Engine::handle_updates`], [`Engine::handle_affected`]) is not forgotten: the engine
//! fetches the difference of every sequence it names, so its good updates come back that way.
//!
//! | input | when | in |
//! | --- | --- | --- |
//! | [`Engine::handle_updates`] | a pushed `Updates` value ([`Updates`]); `updatePtsChanged` comes as [`Sequence::PtsChanged`] | `engine/intake.rs` |
//! | [`Engine::handle_state`] | the answer to a [`RequestKind::GetState`] (first start, or a re-base after `updatePtsChanged`) | `engine/fetch.rs` |
//! | [`Engine::handle_difference`] | the answer to a [`RequestKind::GetDifference`] | `engine/fetch.rs` |
//! | [`Engine::handle_channel_difference`] | the answer to a [`RequestKind::GetChannelDifference`] | `engine/fetch.rs` |
//! | [`Engine::handle_failure`] | a request failed ([`Failure`]: retry, maybe after FLOOD_WAIT; or channel inaccessible) | `engine/fetch.rs` |
//! | [`Engine::handle_timeout`] | the instant from [`Engine::poll_timeout`] has come | `engine/timers.rs` |
//! | [`Engine::ack`] | the application has handled a delivered [`Batch`] | `engine/commit.rs` |
//! | [`Engine::handle_affected`] | the `pts` returned by the application's own calls | `engine/intake.rs` |
//! | [`Engine::request_difference`] | the session was lost, or an update could not be decoded | `engine/mod.rs` |
//! | [`Engine::track_channel`], [`Engine::open_channel`], [`Engine::close_channel`], [`Engine::forget_channel`] | the application's view of its channels | `engine/mod.rs` |
//!
//! # Outputs and the polling discipline
//!
//! Outputs gather in `engine/commit.rs` (deliveries, commits) and `engine/fetch.rs`
//! (requests); the boxes that decide what applies are in `engine/boxes.rs`.
//!
//! After **every** input, call [`Engine::poll_output`] until it returns `None`, doing what each
//! [`Output`] says, then call [`Engine::poll_timeout`] and arrange to call
//! [`Engine::handle_timeout`] at that instant (or earlier: a spurious call is harmless):
//!
//! - [`Output::Deliver`]: hand the batch's updates to the application in order, then
//!   [`Engine::ack`] it. Deliveries gathered since the last poll come as one batch.
//! - [`Output::Request`]: send it to Telegram; answer with the matching `handle_*` input
//!   quoting its [`RequestId`], or with [`Engine::handle_failure`].
//! - [`Output::Commit`]: persist it atomically, in order.
//! - [`Output::AccessHashes`]: store them; channel requests need them. A hash is reported
//!   when first learned and again only when it changes, not at every update that mentions it.
//! - [`Notice::ChannelTooLong`], [`Notice::DifferenceTooLong`], [`Notice::ChannelClosed`]:
//!   history was skipped or a channel was lost; tell the application. The latest messages a
//!   `channelDifferenceTooLong` carries are delivered right after its notice.
//!
//! # Time
//!
//! `now` must never go backwards between calls. The engine only compares instants it was given
//! and adds its configured durations to them, so a virtual clock works as well as a real one.
//!
//! # Guarantees
//!
//! These hold for any sequence of inputs, and are checked by property tests against a simulated
//! server (the `sync-testkit` crate):
//!
//! 1. Every update the server produced is delivered exactly once and each sequence's updates in
//!    ascending order, whatever the faults, provided the server answers differences correctly.
//!    (An update with `pts_count == 0` cannot be told from its duplicate by Telegram's numbers:
//!    a duplicate that arrives while the local pts still equals its pts is delivered again.)
//! 2. Nothing after a gap is delivered before the gap is filled or a difference replaces it.
//! 3. A [`Commit`] never runs ahead of what the application acknowledged: storage that applies
//!    the commits in order can restart the engine ([`Engine::from_state`]) without losing an
//!    update (the unacknowledged tail is delivered again).
//! 4. Memory is bounded: buffered updates are capped per sequence and in total
//!    ([`EngineConfig::max_buffered_per_sequence`], [`EngineConfig::max_buffered_total`]); past a cap the
//!    engine drops the buffer and fetches the difference instead.
//! 5. Every gap is resolved within [`EngineConfig::gap_timeout`] plus the request round trips; failed
//!    requests back off and retry; a request is only repeated while the server says there is
//!    more (slices, non-final channel differences). What waited before a request and lies
//!    beyond the final answer's state cannot exist (absurd or far-future numbers) and is
//!    discarded ([`Stats::updates_discarded`]), so once the server is quiet the engine is idle
//!    within a bounded number of requests, whatever it was pushed. This holds for channels
//!    the engine did not track too: a push is never trusted to say where a channel starts.
//!    A channel first named by a push (not by the application, storage or a server answer)
//!    is *unverified*: its updates wait, its pts is not committed, and its difference is
//!    fetched from where the update starts; the server's answer is taken even when lower
//!    (a re-base, committed as a reset), so an absurd first pts cannot make the channel's
//!    real updates look old. A real first update comes back by that difference, once.
//! 6. No input makes it panic; malformed input yields an [`Error`] and applies nothing; a
//!    refused reply changes nothing, and a refused push leads to a difference of every
//!    sequence it names (a channel it names that was not tracked is fetched, unverified,
//!    from where its good update starts). A channel difference whose pts is below the
//!    channel's is refused, unless the channel is unverified.
//!
//! `updatePtsChanged` ([`Sequence::PtsChanged`]) may renumber the common box: the engine
//! fetches what is pending under the old numbers, then asks `getState`. If its pts is lower,
//! the engine re-bases on it (committed as a reset); pushes under the new numbers that arrived
//! before `getState` was asked are covered by its answer and not delivered, those after it
//! are. Otherwise the numbers still hold: nothing is skipped, and a difference fetches what
//! the server has beyond them.
//!
//! # Where things are
//!
//! | file | holds |
//! | --- | --- |
//! | `update.rs` | what the engine reads of your types ([`Update`], [`Entities`], [`Sequence`]) and the shapes replies and pushes come in ([`Updates`], [`Difference`], [`ChannelDifference`], [`Affected`]) |
//! | `output.rs` | what it asks of its driver ([`Output`], [`Request`], [`Batch`], [`Failure`], [`Stats`]) |
//! | `state.rs`, `config.rs`, `error.rs` | [`State`] and [`Commit`], [`EngineConfig`], [`Error`] |
//! | `buffer.rs` | the sorted buffer of one sequence and its one rule (apply, duplicate, gap) |
//! | `engine/` | [`Engine`]: `mod.rs` the type, its queries and the application's channel commands; `intake.rs`, `boxes.rs`, `fetch.rs`, `timers.rs`, `commit.rs` its sections (see the inputs table) |
//!
//! # Cost
//!
//! A tracked channel costs one map entry, about 36 bytes (1,000,000 channels: 35.7 MB); a
//! buffered update costs its own size plus about 20 bytes; the in-order path allocates nothing
//! once [`Engine::recycle`] hands batch vectors back. Measured by `tests/memory.rs` with a
//! counting allocator; throughput figures are in the repository's `docs/PERFORMANCE.md`.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sync_core::{EngineConfig, Difference, Engine, Output, RequestKind, Sequence, State, Update, Updates};
//!
//! #[derive(Debug, Clone, PartialEq)]
//! struct Message { pts: i32 }
//!
//! impl Update for Message {
//!     fn sequence(&self) -> Sequence {
//!         Sequence::Common { pts: self.pts, pts_count: 1 }
//!     }
//! }
//!
//! let start = Instant::now();
//! let stored = State { pts: 10, qts: 0, date: 0, seq: 0 };
//! let mut engine: Engine<Message> =
//!     Engine::from_state(EngineConfig::default(), start, stored, []).unwrap();
//!
//! // At start the engine catches up with one getDifference.
//! let Some(Output::Request(request)) = engine.poll_output() else { panic!() };
//! assert!(matches!(request.kind, RequestKind::GetDifference { pts: 10, .. }));
//! let caught_up = Difference::Difference {
//!     updates: vec![Message { pts: 11 }],
//!     entities: (),
//!     state: State { pts: 11, ..stored },
//!     slice: false,
//! };
//! engine.handle_difference(start, request.id, caught_up).unwrap();
//!
//! // Pushes: 13 arrives before 12, so it waits behind the gap; 12 fills it.
//! engine.handle_updates(start, Updates::Short { update: Message { pts: 13 }, date: 0 }).unwrap();
//! engine.handle_updates(start, Updates::Short { update: Message { pts: 12 }, date: 0 }).unwrap();
//!
//! let mut delivered = Vec::new();
//! while let Some(output) = engine.poll_output() {
//!     match output {
//!         Output::Deliver(batch) => {
//!             delivered.extend(batch.updates.iter().map(|m| m.pts));
//!             engine.ack(batch.id).unwrap(); // handled: its state may be committed
//!         }
//!         Output::Commit(commit) => { /* persist commit.state, commit.channels */ }
//!         _ => {}
//!     }
//! }
//! assert_eq!(delivered, [11, 12, 13]);
//! assert_eq!(engine.state().map(|s| s.pts), Some(13));
//!
//! // A gap that does not fill within the wait is fetched by getDifference.
//! engine.handle_updates(start, Updates::Short { update: Message { pts: 15 }, date: 0 }).unwrap();
//! let deadline = engine.poll_timeout().unwrap();
//! assert_eq!(deadline, start + Duration::from_millis(500));
//! engine.handle_timeout(deadline);
//! let Some(Output::Request(request)) = engine.poll_output() else { panic!() };
//! assert!(matches!(request.kind, RequestKind::GetDifference { pts: 13, .. }));
//! ```

mod buffer;
mod config;
mod engine;
mod error;
mod output;
mod state;
mod update;

pub use config::EngineConfig;
pub use engine::Engine;
pub use error::Error;
pub use output::{Batch, BatchId, Failure, Notice, Output, Request, RequestId, RequestKind, Stats};
pub use state::{ChannelCommit, ChannelId, Commit, State};
pub use update::{
    Affected, ChannelDifference, ChannelDifferenceKind, ChannelHash, Difference, Entities,
    Sequence, Update, Updates,
};
