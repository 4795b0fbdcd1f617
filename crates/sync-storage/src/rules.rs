//! The write rules every backend enforces, written once for the Rust backends (the Redis
//! backend repeats them in its Lua script, `redis/commit.lua`, which must stay in step).
//! Public so that a backend written elsewhere enforces the same contract: check a commit
//! with [`plan`], then apply the [`Plan`] in one write.

use std::collections::BTreeMap;

use sync_core::{ChannelId, Commit, State};

use crate::{AccountId, Error, Result, StaleSequence};

/// Rejects `new` when it would move `pts`, `qts` or `seq` of `stored` backwards, unless the
/// write is a forced reset. Equal values pass, so repeating a write is harmless. `date` is not
/// checked: it is the server time of the stored sequences and always travels with them.
pub fn check_state(
    account: AccountId,
    stored: Option<State>,
    new: State,
    reset: bool,
) -> Result<()> {
    let Some(old) = stored.filter(|_| !reset) else {
        return Ok(());
    };
    for (sequence, stored, attempted) in [
        (StaleSequence::Pts, old.pts, new.pts),
        (StaleSequence::Qts, old.qts, new.qts),
        (StaleSequence::Seq, old.seq, new.seq),
    ] {
        if attempted < stored {
            return Err(Error::Stale {
                account,
                sequence,
                stored,
                attempted,
            });
        }
    }
    Ok(())
}

/// Rejects a channel pts that would move backwards, unless the write is a forced reset.
pub fn check_channel(
    account: AccountId,
    channel: ChannelId,
    stored: Option<i32>,
    pts: i32,
    reset: bool,
) -> Result<()> {
    match stored {
        Some(stored) if !reset && pts < stored => Err(Error::Stale {
            account,
            sequence: StaleSequence::Channel(channel),
            stored,
            attempted: pts,
        }),
        _ => Ok(()),
    }
}

/// What a commit turns into once every check has passed: the writes to make.
#[derive(Debug, Default)]
pub struct Plan {
    /// The new common state, if the commit sets one.
    pub state: Option<State>,
    /// The final value of every channel the commit touches: `None` deletes it.
    pub channels: BTreeMap<ChannelId, Option<i32>>,
}

/// Checks a whole commit against the stored values and returns the writes to make, or the
/// first rule it breaks. Nothing is written here: a backend applies the plan in one
/// transaction only after this returned `Ok`, which is what makes a commit all or nothing.
///
/// The order inside a commit is fixed: `removed_channels` first, then `state`, then
/// `channels` in order, each checked against the value left by the steps before it (so a
/// channel removed and set in one commit is stored fresh, and a duplicate entry is checked
/// against the earlier one).
pub fn plan(
    account: AccountId,
    commit: &Commit,
    stored_state: Option<State>,
    mut stored_channel: impl FnMut(ChannelId) -> Result<Option<i32>>,
) -> Result<Plan> {
    let mut plan = Plan::default();
    for &channel in &commit.removed_channels {
        plan.channels.insert(channel, None);
    }
    if let Some(state) = commit.state {
        check_state(account, stored_state, state, commit.state_reset)?;
        plan.state = Some(state);
    }
    for entry in &commit.channels {
        let stored = match plan.channels.get(&entry.channel_id) {
            Some(pending) => *pending,
            None => stored_channel(entry.channel_id)?,
        };
        check_channel(account, entry.channel_id, stored, entry.pts, entry.reset)?;
        plan.channels.insert(entry.channel_id, Some(entry.pts));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use sync_core::ChannelCommit;

    use super::*;

    fn state(pts: i32, qts: i32, seq: i32) -> State {
        State {
            pts,
            qts,
            date: 0,
            seq,
        }
    }

    #[test]
    fn each_sequence_is_checked() {
        let old = Some(state(10, 10, 10));
        assert!(check_state(1, old, state(10, 10, 10), false).is_ok());
        assert!(check_state(1, old, state(11, 12, 13), false).is_ok());
        for (new, sequence) in [
            (state(9, 10, 10), StaleSequence::Pts),
            (state(10, 9, 10), StaleSequence::Qts),
            (state(10, 10, 9), StaleSequence::Seq),
        ] {
            match check_state(1, old, new, false) {
                Err(Error::Stale {
                    sequence: got,
                    stored: 10,
                    attempted: 9,
                    ..
                }) => {
                    assert_eq!(got, sequence);
                }
                other => panic!("expected a stale {sequence}, got {other:?}"),
            }
            assert!(
                check_state(1, old, new, true).is_ok(),
                "a reset may go back"
            );
        }
    }

    #[test]
    fn removal_then_set_in_one_commit_starts_fresh() {
        let commit = Commit {
            removed_channels: vec![7],
            channels: vec![ChannelCommit {
                channel_id: 7,
                pts: 1,
                reset: false,
            }],
            ..Commit::default()
        };
        let plan = plan(1, &commit, None, |_| Ok(Some(100))).expect("removed first");
        assert_eq!(plan.channels.get(&7), Some(&Some(1)));
    }

    #[test]
    fn duplicate_entries_are_checked_in_order() {
        let commit = Commit {
            channels: vec![
                ChannelCommit {
                    channel_id: 7,
                    pts: 5,
                    reset: false,
                },
                ChannelCommit {
                    channel_id: 7,
                    pts: 4,
                    reset: false,
                },
            ],
            ..Commit::default()
        };
        assert!(plan(1, &commit, None, |_| Ok(None)).is_err_and(|e| e.is_stale()));
    }
}
