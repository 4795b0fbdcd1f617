//! Receipts: what a send accepted, and a way to learn when it was handled.

/// One shard's position: the shard's accepted-event count right after the send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) shard: usize,
    pub(crate) position: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Marks {
    #[default]
    None,
    // A single send touches one shard: keep it inline so that sending one event does not
    // allocate.
    One(Mark),
    Many(Vec<Mark>),
}

/// What a send accepted, usable to learn when those events were handled.
///
/// Each shard numbers the events it accepts `1, 2, 3, …` and hands them to its observer in that
/// order; a receipt records, for each shard a send touched, the number of its last accepted
/// event. The events are handled once every such shard has delivered that many events, which
/// [`EventStream::handled`](crate::EventStream::handled) (async),
/// [`EventStream::wait_handled`](crate::EventStream::wait_handled) (blocking) and
/// [`EventStream::is_handled`](crate::EventStream::is_handled) check. Because a shard delivers
/// in order, a receipt being handled also means every event accepted before it on the same
/// shards was handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    accepted: usize,
    dropped: usize,
    marks: Marks,
}

impl Receipt {
    /// How many events the send accepted.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// How many events the [`Overflow::DropNewest`](crate::Overflow::DropNewest) policy
    /// discarded from the send.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Adds `other` to this receipt: the result is handled when both are.
    pub fn merge(&mut self, other: &Receipt) {
        self.accepted += other.accepted;
        self.dropped += other.dropped;
        for mark in other.marks() {
            self.mark(mark.shard, mark.position, 0);
        }
    }

    /// Records that `accepted` more events were taken by `shard`, the last at `position`.
    pub(crate) fn mark(&mut self, shard: usize, position: u64, accepted: usize) {
        self.accepted += accepted;
        let new = Mark { shard, position };
        match &mut self.marks {
            Marks::None => self.marks = Marks::One(new),
            Marks::One(old) if old.shard == shard => old.position = old.position.max(position),
            Marks::One(old) => self.marks = Marks::Many(vec![*old, new]),
            Marks::Many(list) => match list.iter_mut().find(|m| m.shard == shard) {
                Some(old) => old.position = old.position.max(position),
                None => list.push(new),
            },
        }
    }

    /// Records that `n` events were accepted without a shard (the no-op stream).
    pub(crate) fn add_accepted(&mut self, n: usize) {
        self.accepted += n;
    }

    /// Records that `n` events were discarded.
    pub(crate) fn add_dropped(&mut self, n: usize) {
        self.dropped += n;
    }

    /// The per-shard positions.
    pub(crate) fn marks(&self) -> &[Mark] {
        match &self.marks {
            Marks::None => &[],
            Marks::One(mark) => std::slice::from_ref(mark),
            Marks::Many(list) => list,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_highest_position_per_shard() {
        let mut a = Receipt::default();
        a.mark(0, 5, 2);
        let mut b = Receipt::default();
        b.mark(0, 3, 1);
        b.mark(2, 7, 4);
        b.add_dropped(1);
        a.merge(&b);
        assert_eq!(a.accepted(), 7);
        assert_eq!(a.dropped(), 1);
        assert_eq!(
            a.marks(),
            &[
                Mark {
                    shard: 0,
                    position: 5
                },
                Mark {
                    shard: 2,
                    position: 7
                }
            ]
        );
    }
}
