//! Updates waiting for their turn in one sequence.
//!
//! Every numbered thing the engine receives occupies a range `start..=end` of its sequence:
//! a pts update `pts - pts_count ..= pts`, a qts event `qts - 1 ..= qts`, a `seq` container
//! `seq_start - 1 ..= seq`. The rule of all three sequences is then one rule: with the local
//! value `local`, an item applies when `start == local` (and moves `local` to `end`), is a
//! duplicate when `start < local`, and waits behind a gap when `start > local`.

/// Where an item falls relative to the local value of its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// `start == local`: apply it now.
    Next,
    /// `start < local`: already applied.
    Old,
    /// `start > local`: something is missing before it.
    Gap,
}

/// Classifies `start` against `local`.
#[inline]
pub(crate) fn fit(start: i32, local: i32) -> Fit {
    match start.cmp(&local) {
        std::cmp::Ordering::Equal => Fit::Next,
        std::cmp::Ordering::Less => Fit::Old,
        std::cmp::Ordering::Greater => Fit::Gap,
    }
}

/// One waiting item, the range it occupies, and when it arrived.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    pub(crate) start: i32,
    pub(crate) end: i32,
    /// The engine's arrival count when the item was buffered: tells items that waited before
    /// a request was sent from those that came while it was in flight.
    pub(crate) arrival: u64,
    pub(crate) item: T,
}

/// Items sorted by `(start, end)`, ties in arrival order.
///
/// Invariant: `items` is sorted by `(start, end)`. Sorting by `start` puts the item that can
/// apply next first; sorting ties by `end` puts a zero-count update at `p` (range `p..=p`)
/// before the update that moves the sequence from `p` onwards (`p..=p+n`), which is the order
/// the server produced them in.
#[derive(Debug)]
pub(crate) struct Buffer<T> {
    items: Vec<Pending<T>>,
}

impl<T> Default for Buffer<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

impl<T> Buffer<T> {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Inserts an item, unless an item of the same non-empty range waits already (a duplicate
    /// push of a buffered update). Returns whether it was inserted.
    pub(crate) fn insert(&mut self, start: i32, end: i32, arrival: u64, item: T) -> bool {
        let key = (start, end);
        let at = self.items.partition_point(|p| (p.start, p.end) <= key);
        if start != end && at > 0 && (self.items[at - 1].start, self.items[at - 1].end) == key {
            return false;
        }
        self.items.insert(
            at,
            Pending {
                start,
                end,
                arrival,
                item,
            },
        );
        true
    }

    /// Removes the items that arrived before `arrival` and end past `named`, the value an
    /// authoritative answer gave the sequence; returns them.
    ///
    /// Such an item cannot be real: the server's value is at least that of every update it
    /// had pushed before it was asked. Items that arrived later may be newer than the answer
    /// and are kept.
    pub(crate) fn discard_beyond(&mut self, named: i32, arrival: u64) -> Vec<T> {
        self.items
            .extract_if(.., |p| p.end > named && p.arrival < arrival)
            .map(|p| p.item)
            .collect()
    }

    /// Removes and returns the first item if it no longer waits behind a gap at `local`.
    pub(crate) fn pop_ready(&mut self, local: i32) -> Option<(Fit, Pending<T>)> {
        let first = self.items.first()?;
        match fit(first.start, local) {
            Fit::Gap => None,
            kind => Some((kind, self.items.remove(0))),
        }
    }

    /// Empties the buffer, returning how many items it held.
    pub(crate) fn clear(&mut self) -> usize {
        let count = self.items.len();
        self.items.clear();
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ranges_sorted_and_rejects_duplicates() {
        let mut buffer = Buffer::default();
        assert!(buffer.insert(5, 6, 0, "b"));
        assert!(buffer.insert(3, 5, 0, "a"));
        assert!(!buffer.insert(5, 6, 0, "b again"));
        assert!(buffer.insert(5, 5, 0, "zero-count at 5"));
        assert!(buffer.insert(5, 5, 0, "another zero-count at 5"));
        assert_eq!(buffer.len(), 4);

        assert!(buffer.pop_ready(2).is_none(), "3 > 2 is a gap");
        let order: Vec<_> =
            std::iter::from_fn(|| buffer.pop_ready(10).map(|(_, p)| p.item)).collect();
        assert_eq!(
            order,
            ["a", "zero-count at 5", "another zero-count at 5", "b"]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn discards_only_what_waited_before_the_answer_and_lies_beyond_it() {
        let mut buffer = Buffer::default();
        assert!(buffer.insert(7, 8, 1, "beyond, early"));
        assert!(buffer.insert(4, 5, 1, "within, early"));
        assert!(buffer.insert(9, 10, 3, "beyond, late"));
        let discarded = buffer.discard_beyond(6, 2);
        assert_eq!(discarded, ["beyond, early"]);
        assert_eq!(
            buffer.discard_beyond(-1, 4),
            ["within, early", "beyond, late"]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn classifies_against_local() {
        assert_eq!(fit(4, 4), Fit::Next);
        assert_eq!(fit(3, 4), Fit::Old);
        assert_eq!(fit(5, 4), Fit::Gap);
    }
}
