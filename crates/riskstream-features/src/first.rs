//! First features: what each event got when it was first scored, kept so that a redelivered or
//! replayed event id gets the same features back (and so the same decision), whatever arrived
//! or was sealed into tiles in between.
//!
//! Kept per hour of event time and bucket of event ids in a hash `P:{f:HOUR:BUCKET}` (field:
//! the event-id hash; value: the non-zero features as `index: u8, value: f32` pairs, typically
//! 60–150 bytes), written field by field with `HSETNX` semantics (the first value stays; one
//! `EVAL` of an `HSETNX` loop per hash and batch) and expiring
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
    if b.len() % 5 != 0 {
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
}
