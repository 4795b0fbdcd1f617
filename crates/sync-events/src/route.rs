//! Routing: which shard an event goes to.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

/// An event that can be routed by the key of the stream it belongs to.
///
/// All events with equal keys reach the same observer, in the order they were sent. Events
/// without a key ([`None`]) all go to shard `0`: they are still delivered in order with respect
/// to each other, and the choice is fixed so that a keyless event never lands on a shard at
/// random.
///
/// ```
/// use sync_events::Event;
///
/// struct Message {
///     chat_id: i64,
///     text: String,
/// }
///
/// impl Event for Message {
///     type Key = i64;
///     fn stream_key(&self) -> Option<i64> {
///         Some(self.chat_id)
///     }
/// }
/// ```
pub trait Event: Send + 'static {
    /// The stream key; hashed to pick the shard.
    type Key: Hash;

    /// The key of the stream this event belongs to, or `None` for the fixed shard `0`.
    fn stream_key(&self) -> Option<Self::Key>;
}

/// The shard that `key` maps to when there are `shards` shards (`0` when `shards` is `0`).
///
/// The mapping is stable: it has no random seed, so the same key always maps to the same shard
/// for a given shard count (within one build of the crate on one platform). It hashes with
/// `FxHasher` (a multiply per machine word), mixes the result so that every output bit depends
/// on every input bit, and maps the 64-bit hash onto `0..shards` with a multiply-shift instead
/// of a division.
pub fn shard_for_key<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    reduce(mix(hasher.finish()), shards)
}

/// The shard `event` goes to when there are `shards` shards; keyless events go to shard `0`.
pub fn shard_for_event<E: Event>(event: &E, shards: usize) -> usize {
    match event.stream_key() {
        Some(key) => shard_for_key(&key, shards),
        None => 0,
    }
}

/// The 64-bit finaliser of MurmurHash3: FxHash leaves the high bits of small integer keys
/// poorly mixed, and [`reduce`] reads exactly the high bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Maps a uniformly distributed `hash` onto `0..n` (Lemire's multiply-shift).
fn reduce(hash: u64, n: usize) -> usize {
    // The product's high word is below `n`, so it fits in `usize`.
    ((u128::from(hash) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_range_and_spread() {
        for shards in 1..=9 {
            let mut hits = vec![0_u32; shards];
            for key in 0_i64..9_000 {
                let shard = shard_for_key(&key, shards);
                assert!(shard < shards);
                assert_eq!(shard, shard_for_key(&key, shards), "routing must be stable");
                hits[shard] += 1;
            }
            let expected = 9_000 / shards as u32;
            for &h in &hits {
                // Loose bound: a sequential key range must not pile onto a few shards.
                assert!(h > expected / 2 && h < expected * 3 / 2, "{hits:?}");
            }
        }
    }

    #[test]
    fn zero_shards_maps_to_zero() {
        assert_eq!(shard_for_key(&42_u64, 0), 0);
    }

    #[test]
    fn keyless_events_go_to_shard_zero() {
        struct NoKey;
        impl Event for NoKey {
            type Key = u8;
            fn stream_key(&self) -> Option<u8> {
                None
            }
        }
        for shards in 1..8 {
            assert_eq!(shard_for_event(&NoKey, shards), 0);
        }
    }
}
