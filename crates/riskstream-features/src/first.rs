//! First features: what each event got when it was first scored, kept so that a redelivered or
//! replayed event id gets the same features back (and so the same decision), whatever arrived
//! or was sealed into tiles in between.
//!
//! Kept per hour of event time and bucket of event ids in a hash `P:{f:HOUR:BUCKET}` (field:
//! the event-id hash; value: the non-zero features as `index: u8, value: f32` pairs, typically
//! 60–150 bytes), written field by field with `HSETNX` (the first value stays; one pipelined
//! command per field: Redis ran a Lua loop of them 4× slower per field) and expiring
//! [`StoreLimits::first_features_ttl_ms`](crate::StoreLimits) after its last write. A batch's
//! events share an hour or two, so its first features take at most [`BUCKETS`] reads and writes
//! per hour however many accounts it touches (they were one `HMGET` and one `HSETNX` per event
//! when kept per account); the buckets spread an hour over as many Redis Cluster slots.

use crate::catalogue::{StoreFeatures, N_STORE_FEATURES};

/// Hashes per hour of event time.
pub(crate) const BUCKETS: u64 = 16;

/// The hash field of an event, from its event-id hash.
pub(crate) fn field(id: u64) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

/// A first-features hash: (hour of event time, bucket of event ids).
pub(crate) type Slot = (i64, u64);

/// The hash that keeps the first features of the event with id hash `id`.
pub(crate) fn slot(id: u64, event_time: i64) -> Slot {
    (
        event_time.div_euclid(crate::catalogue::HOUR_MS),
        id % BUCKETS,
    )
}

pub(crate) fn encode(f: &StoreFeatures) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for (i, v) in f.values.iter().enumerate() {
        if *v != 0.0 || v.is_sign_negative() {
            out.push(i as u8);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// `None` for a value this version cannot read (then the features are computed afresh).
pub(crate) fn decode(b: &[u8]) -> Option<StoreFeatures> {
    if !b.len().is_multiple_of(5) {
        return None;
    }
    let mut f = StoreFeatures::default();
    for c in b.chunks_exact(5) {
        let i = c[0] as usize;
        if i >= N_STORE_FEATURES {
            return None;
        }
        f.values[i] = f32::from_le_bytes(c[1..].try_into().expect("4 bytes"));
    }
    Some(f)
}

/// The first features of the last few store calls' events, by event-id hash, kept in process:
/// with overlapping batches (`order.rs`), batch N+1's read of the first-features hashes can
/// reach Redis before batch N's follow-up wrote them, so a redelivery of one of N's events in
/// N+1 looks here. Calls compute features in batch order, so N's are here before N+1 looks.
/// Filled by `algorithm::evaluate` with each call's new first features.
#[derive(Default)]
pub(crate) struct Recent {
    calls: std::collections::VecDeque<
        std::collections::HashMap<u64, StoreFeatures, crate::keyspace::Seeded>,
    >,
}

impl Recent {
    /// Calls remembered: more than can overlap (`--store-in-flight` is a handful at most).
    const CALLS: usize = 8;

    pub(crate) fn get(&self, id: u64) -> Option<StoreFeatures> {
        self.calls.iter().rev().find_map(|c| c.get(&id).copied())
    }

    /// Notes one call's first features (the oldest call's are forgotten past [`Self::CALLS`]).
    pub(crate) fn push(&mut self, firsts: impl IntoIterator<Item = (u64, StoreFeatures)>) {
        let mut call = if self.calls.len() >= Self::CALLS {
            let mut oldest = self.calls.pop_front().expect("non-empty");
            oldest.clear();
            oldest
        } else {
            Default::default()
        };
        for (id, f) in firsts {
            call.entry(id).or_insert(f);
        }
        self.calls.push_back(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_sparsely() {
        let mut f = StoreFeatures::default();
        f.values[0] = 3.0;
        f.values[N_STORE_FEATURES - 1] = -0.5;
        f.values[10] = f32::MAX;
        let b = encode(&f);
        assert_eq!(b.len(), 15);
        assert_eq!(decode(&b), Some(f));
        assert_eq!(decode(&b[..4]), None);
        assert_eq!(decode(&[200, 0, 0, 0, 0]), None);
    }

    #[test]
    fn recent_first_features_are_found_for_the_last_calls_only() {
        let f = |v: f32| {
            let mut f = StoreFeatures::default();
            f.values[0] = v;
            f
        };
        let mut recent = Recent::default();
        recent.push([(1, f(1.0)), (1, f(9.0))]);
        assert_eq!(
            recent.get(1),
            Some(f(1.0)),
            "the first value of a call stays"
        );
        recent.push([(1, f(2.0)), (2, f(3.0))]);
        assert_eq!(recent.get(1), Some(f(2.0)), "the newest call wins");
        for i in 0..Recent::CALLS as u64 - 1 {
            recent.push([(100 + i, f(0.0))]);
        }
        assert_eq!(recent.get(2), Some(f(3.0)), "still one of the last calls");
        recent.push([]);
        assert_eq!(recent.get(2), None, "forgotten");
        assert_eq!(recent.calls.len(), Recent::CALLS);
    }
}
