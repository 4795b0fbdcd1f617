//! Sans-IO engine that keeps a Telegram account's update state in sync.
mod state;
pub use state::{ChannelCommit, ChannelId, Commit, State};
