//! A deterministic simulated Telegram update server with fault injection, and the oracle that
//! checks what a client received.
//!
//! - [`Server`] models Telegram's side of one account: the true common pts, qts, seq and date,
//!   any number of channels, and a log of every event. It generates a seeded workload ([`Workload`]:
//!   messages, deletions with `pts_count > 1`, zero-count updates, secret-chat events, channel
//!   posts, updates that ride in `seq` containers, ephemeral updates, "min" channels) and answers
//!   `getState`, `getDifference` and `getChannelDifference` as Telegram does, slices and
//!   too-long answers included ([`Limits`]).
//! - [`Scenario`] runs the sans-IO [`sync_core::Engine`] against it on a virtual clock (it
//!   jumps to the next deadline, never sleeps), through a network that drops, duplicates,
//!   reorders and summarises pushes, adds pushes the server never made (far-future or
//!   malformed numbers, a malformed update inside a good container, `updatePtsChanged`),
//!   fails and corrupts replies ([`Faults`]), and crashes the client to restart it from what
//!   it committed. The client resumes from stored state with every channel, or starts fresh
//!   ([`Scenario::fresh_start`]: `getState`, no channel tracked, each learned from its events,
//!   so absurd pushes also name channels it does not track yet). Once every push has arrived the network goes quiet: the engine must then be
//!   idle within a bounded number of requests ([`Report::tail_requests`]).
//! - [`Oracle`] judges the run: every durable update exactly once (repeats only inside the
//!   window a crash left unacknowledged), each sequence in order, nothing after an unresolved
//!   gap, nothing the server never made, the latest messages of a `channelDifferenceTooLong`
//!   at most once, and the client ending where the server is. A failure is a [`Violation`] with the seed
//!   that replays it and the last steps before it.
//! - [`Network`] is that faulty network on its own, for drivers of their own (the runtime's
//!   simulated producer uses it): what becomes of each push ([`Arrival`]s), and what it did
//!   ([`Traffic`]).
//! - [`lean`] is the leanest update type and a bare engine of it past its startup, for
//!   measuring the engine itself.
//! - [`redis_server`] starts a private `redis-server`, or a Redis Cluster of them, for tests
//!   that need a real one.
//! - [`fuzz`] holds the fuzz bodies that the cargo-fuzz targets (`fuzz/`), the property tests
//!   and the corpus tests share: raw bytes in, the first broken rule out.
//!
//! # Where things are
//!
//! | file | holds |
//! | --- | --- |
//! | `server.rs` | [`Server`], [`Workload`], [`Limits`]: the server model |
//! | `faults.rs`, `network.rs` | [`Faults`], [`Network`]: what goes wrong between server and client |
//! | `scenario/` | [`Scenario`]: `mod.rs` the builder and [`Report`], `run.rs` the virtual timeline, `requests.rs` the replies |
//! | `oracle.rs` | [`Oracle`]: the judge |
//! | `fuzz.rs`, `lean.rs`, `redis_server.rs`, `rng.rs`, `update.rs` | fuzz bodies, a bare engine of a lean update, a private redis-server or cluster, the seeded [`Rng`], [`TestUpdate`] |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sync_testkit::{Faults, Scenario};
//!
//! let report = Scenario::new(42)
//!     .events(400)
//!     .channels(20)
//!     .faults(Faults::harsh())
//!     .crashes(2)
//!     .ack_delay(Duration::from_millis(50))
//!     .run()
//!     .unwrap_or_else(|violation| panic!("{violation}"));
//! assert_eq!(report.crashes, 2);
//! ```

mod faults;
pub mod fuzz;
pub mod lean;
pub mod network;
mod oracle;
pub mod redis_server;
mod rng;
mod scenario;
mod server;
mod update;

pub use faults::Faults;
pub use network::{Arrival, Network, Traffic};
pub use oracle::Oracle;
pub use rng::Rng;
pub use scenario::{Report, Scenario, Violation};
pub use server::{ChannelRefusal, Delivery, Limits, Server, Workload};
pub use update::{TestEntities, TestUpdate};
