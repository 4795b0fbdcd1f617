//! The storage writer: persists the engine's commits and learned access hashes in the order the
//! engine emitted them, retrying what may succeed later.

use std::sync::Arc;

use sync_core::{ChannelId, Commit};
use sync_storage::{AccessHashStorage, AccountId, Error, StateStorage};

use crate::backoff::{Jitter, Policy};
use crate::handle::mailbox;
use crate::lease::{Fence, LeaseLoss};
use crate::stats::{Counters, Timer};

/// One write, queued in the order the engine asked for it.
#[derive(Debug)]
pub(crate) enum Write {
    Commit(Commit),
    Hashes(Vec<(ChannelId, i64)>),
}

pub(crate) struct Writer<S> {
    pub(crate) account: AccountId,
    pub(crate) storage: Arc<S>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) retry: Policy,
    pub(crate) jitter: Jitter,
    /// The lease the commits are fenced with, if the manager runs under one.
    pub(crate) fence: Option<Fence>,
}

/// What one turn of the writer writes: access hashes, the commit (if not empty) and how many
/// engine commits it folds.
type Batch = (Vec<(ChannelId, i64)>, Option<Commit>, u64);

/// Takes `first` and whatever else is queued behind it: the access hashes, and the commits
/// folded into one with how many they were; `None` when there is nothing to write.
fn take_queued(first: Write, queue: &mut mailbox::Receiver<Write>) -> Option<Batch> {
    let mut hashes = Vec::new();
    let mut commit: Option<Commit> = None;
    let mut commits = 0u64;
    let mut take = |write: Write| match write {
        Write::Hashes(more) => hashes.extend(more),
        Write::Commit(more) => {
            commits += 1;
            match &mut commit {
                Some(commit) => merge(commit, more),
                None => commit = Some(more),
            }
        }
    };
    take(first);
    while let Some(write) = queue.try_recv() {
        take(write);
    }
    let commit = commit.filter(|c| !c.is_empty());
    (!hashes.is_empty() || commit.is_some()).then_some((hashes, commit, commits))
}

/// Folds `later` into `earlier`, as if storage had applied both in order. Storage applies a
/// commit's removals first, then its state, then its channels, so: a later removal erases the
/// earlier position of that channel, a later position wins over an earlier one, and reset
/// flags are kept (a merged reset still has to be accepted where it looks like a regression).
pub(crate) fn merge(earlier: &mut Commit, later: Commit) {
    if let Some(state) = later.state {
        earlier.state = Some(state);
    }
    earlier.state_reset |= later.state_reset;
    for id in later.removed_channels {
        earlier.channels.retain(|c| c.channel_id != id);
        if !earlier.removed_channels.contains(&id) {
            earlier.removed_channels.push(id);
        }
    }
    for channel in later.channels {
        match earlier
            .channels
            .iter_mut()
            .find(|c| c.channel_id == channel.channel_id)
        {
            Some(known) => {
                known.pts = channel.pts;
                known.reset |= channel.reset;
            }
            None => earlier.channels.push(channel),
        }
    }
}

impl<S: StateStorage + AccessHashStorage> Writer<S> {
    /// Writes until the queue is closed and empty.
    ///
    /// Invariant (commits reach storage in order): there is one writer per manager, it takes
    /// the queue in order, and it only coalesces writes that are queued together, hashes
    /// before the commit (a hash written early is harmless; a commit that names a channel
    /// whose hash is not stored yet would leave the channel unreadable after a crash).
    pub(crate) async fn run(mut self, mut queue: mailbox::Receiver<Write>) {
        while let Some(first) = queue.recv().await {
            // Taken by a plain function and moved on whole: a value the loop looked at here
            // would keep its room in the writer's future while it waits.
            let Some((hashes, commit, commits)) = take_queued(first, &mut queue) else {
                continue;
            };
            // Boxed while a write is under way: the writer waits on its queue inside the
            // manager's future, which should not hold room for a storage call (nor for what
            // it writes) while idle.
            Box::pin(self.persist(hashes, commit, commits)).await;
        }
    }

    /// Writes the access hashes, then the commit that folds `commits` engine commits.
    async fn persist(
        &mut self,
        hashes: Vec<(ChannelId, i64)>,
        commit: Option<Commit>,
        commits: u64,
    ) {
        if !hashes.is_empty() {
            let count = hashes.len() as u64;
            let written = self
                .retry("access hashes", |storage, account| {
                    let hashes = hashes.clone();
                    async move { storage.set_access_hashes(account, &hashes).await }
                })
                .await;
            if written {
                self.counters.access_hashes_written.add(count);
            }
        }
        if let Some(commit) = commit {
            let fence = self.fence.clone();
            let timer = Timer::start();
            let written = self
                .retry("commit", |storage, account| {
                    let commit = commit.clone();
                    let fence = fence.clone();
                    async move {
                        match fence {
                            None => storage.apply(account, &commit).await,
                            Some(fence) => {
                                fence
                                    .fencing
                                    .apply_fenced(account, fence.held.lease.token, commit)
                                    .await
                            }
                        }
                    }
                })
                .await;
            self.counters.commit_ended(timer, written, commits);
            if written {
                tracing::trace!(state = ?commit.state, channels = commit.channels.len(), "commit written");
            }
        }
    }

    /// Runs `write` until it succeeds (true) or fails for good (false). Unavailable and
    /// ambiguous outcomes are retried: every write here is safe to repeat, because this writer
    /// is the account's only one and a repeated position is accepted as equal.
    async fn retry<F, Fut>(&mut self, what: &'static str, mut write: F) -> bool
    where
        F: FnMut(Arc<S>, AccountId) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let mut attempt = 0u32;
        loop {
            match write(Arc::clone(&self.storage), self.account).await {
                Ok(()) => return true,
                Err(error) if error.is_unavailable() || error.is_ambiguous() => {
                    let delay = self.jitter.backoff(self.retry, attempt);
                    attempt = attempt.saturating_add(1);
                    self.counters.commit_retries.incr();
                    tracing::warn!(%error, ?delay, attempt, "{what} not written; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(sync_storage::Error::Fenced { current, .. }) => {
                    // Another owner runs the account: this manager must stop (its run ends
                    // at once), and nothing it still holds may be written.
                    self.counters.commits_failed.incr();
                    if let Some(fence) = &self.fence {
                        fence.held.lose(LeaseLoss::TakenOver { current });
                    }
                    return false;
                }
                Err(error) if error.is_stale() => {
                    self.counters.commits_stale.incr();
                    tracing::warn!(%error, "{what} rejected as stale; skipped");
                    return false;
                }
                Err(error) => {
                    self.counters.commits_failed.incr();
                    tracing::error!(%error, "{what} failed for good; skipped");
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sync_core::{ChannelCommit, State};

    use super::*;

    fn channel(channel_id: ChannelId, pts: i32, reset: bool) -> ChannelCommit {
        ChannelCommit {
            channel_id,
            pts,
            reset,
        }
    }

    #[test]
    fn merge_keeps_the_effect_of_applying_in_order() {
        let state = |pts| State {
            pts,
            qts: 1,
            date: 1,
            seq: 1,
        };
        let mut first = Commit {
            state: Some(state(5)),
            state_reset: true,
            channels: vec![channel(1, 10, false), channel(2, 20, true)],
            removed_channels: vec![3],
        };
        merge(
            &mut first,
            Commit {
                state: Some(state(7)),
                state_reset: false,
                channels: vec![channel(2, 21, false), channel(3, 1, false)],
                removed_channels: vec![1],
            },
        );
        assert_eq!(first.state, Some(state(7)));
        assert!(first.state_reset);
        assert_eq!(
            first.channels,
            vec![channel(2, 21, true), channel(3, 1, false)]
        );
        assert_eq!(first.removed_channels, vec![3, 1]);
    }
}
