//! Counters, per shard and in total.

/// One shard's counters, as of [`EventStream::stats`](crate::EventStream::stats).
///
/// The counters are read one by one without stopping the shard, so a snapshot taken while
/// events flow may be a little inconsistent (for example `delivered` read after `sent`); once the
/// stream is drained they are exact: `sent == delivered + lost`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Events accepted into the shard's queue.
    pub sent: u64,
    /// Events handed to the observer and completed (those it panicked on included).
    pub delivered: u64,
    /// Events discarded by [`Overflow::DropNewest`](crate::Overflow::DropNewest).
    pub dropped: u64,
    /// Events refused and handed back to the sender ([`Overflow::FailFast`](crate::Overflow::FailFast)
    /// or [`EventStream::try_send`](crate::EventStream::try_send) on a full queue).
    pub rejected: u64,
    /// Accepted events that will never be delivered because the shard's worker was dropped
    /// before it finished. Zero unless a worker was dropped (for example cancelled).
    pub lost: u64,
    /// Observer panics caught (while handling or shutting down).
    pub panics: u64,
    /// Queue depth: events accepted and not yet delivered (waiting, or being handled).
    pub queued: u64,
    /// Senders currently waiting for room in this shard's queue.
    pub blocked_senders: usize,
    /// The worker has finished: the observer was shut down (or the worker was dropped).
    pub finished: bool,
    /// The message of the observer's last panic.
    pub last_panic: Option<String>,
}

/// Counters of every shard, as of [`EventStream::stats`](crate::EventStream::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// One entry per shard, by shard index.
    pub shards: Vec<ShardStats>,
}

impl Stats {
    /// The counters summed over all shards (`finished` when every shard is; the last panic of
    /// the highest-numbered shard that had one).
    pub fn total(&self) -> ShardStats {
        let mut total = ShardStats {
            finished: true,
            ..ShardStats::default()
        };
        for s in &self.shards {
            total.sent += s.sent;
            total.delivered += s.delivered;
            total.dropped += s.dropped;
            total.rejected += s.rejected;
            total.lost += s.lost;
            total.panics += s.panics;
            total.queued += s.queued;
            total.blocked_senders += s.blocked_senders;
            total.finished &= s.finished;
            if s.last_panic.is_some() {
                total.last_panic.clone_from(&s.last_panic);
            }
        }
        total
    }
}
