//! The verdict's Avro body written directly, field by field in `schemas/verdict.avsc` order:
//! the one record the worker encodes per event. apache-avro's serde serializer walks the schema
//! for every value it writes (its `Verdict` encoding was ~9 % of the scoring worker's CPU in
//! `perf`); this writes the same bytes without the walk. The tests pin it byte for byte against
//! apache-avro over verdicts with every field set, and check that the schema still has exactly
//! the fields written here, in this order — a schema change that forgets this file fails them.
//!
//! Avro binary encoding (specification, "Binary Encoding"): `int` / `long` as zig-zag varints,
//! `string` as a long length and UTF-8 bytes, `float` / `double` little-endian IEEE 754,
//! `boolean` one byte, an enum as the int index of its symbol, a union as the long index of its
//! branch then the value, an array as blocks (a long count, the items) ended by a count of 0.

use crate::types::{Decision, EventType, Friction, Verdict};

/// The verdict schema's fields, in the order [`write`] writes them.
#[cfg(test)]
pub(crate) const FIELDS: &[&str] = &[
    "event_id",
    "event_type",
    "account_id",
    "event_time",
    "scored_at",
    "decision",
    "friction",
    "scores",
    "reasons",
    "features",
    "model_inputs",
    "degraded",
    "degraded_reasons",
    "source",
    "region",
    "transaction_kind",
    "vendor",
    "vendor_liveness_score",
    "vendor_face_match_score",
];

/// Appends `v`'s Avro binary body (no framing header) to `out`.
pub(crate) fn write(out: &mut Vec<u8>, v: &Verdict) {
    string(out, &v.event_id);
    int(
        out,
        match v.event_type {
            EventType::Unknown => 0,
            EventType::CaptureSession => 1,
            EventType::Transaction => 2,
        },
    );
    string(out, &v.account_id);
    long(out, v.event_time);
    long(out, v.scored_at);
    int(
        out,
        match v.decision {
            Decision::Allow => 0,
            Decision::Challenge => 1,
            Decision::Review => 2,
            Decision::Block => 3,
        },
    );
    int(
        out,
        match v.friction {
            Friction::None => 0,
            Friction::StepUpMfa => 1,
            Friction::KnowledgeQuiz => 2,
            Friction::ConversationalAgent => 3,
            Friction::HumanReview => 4,
            Friction::Block => 5,
        },
    );
    array(out, &v.scores, |out, s| {
        string(out, &s.model);
        string(out, &s.version);
        double(out, s.score);
        out.push(s.shadow as u8);
    });
    array(out, &v.reasons, |out, r| string(out, r));
    array(out, &v.features, |out, f| {
        string(out, &f.name);
        double(out, f.value);
    });
    array(out, &v.model_inputs, |out, m| {
        string(out, &m.model);
        string(out, &m.version);
        array(out, &m.values, |out, x| {
            out.extend_from_slice(&x.to_le_bytes())
        });
    });
    out.push(v.degraded as u8);
    array(out, &v.degraded_reasons, |out, r| string(out, r));
    string(out, &v.source.topic);
    int(out, v.source.partition);
    long(out, v.source.offset);
    string(out, &v.region);
    string(out, &v.transaction_kind);
    string(out, &v.vendor);
    optional_double(out, v.vendor_liveness_score);
    optional_double(out, v.vendor_face_match_score);
}

fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn int(out: &mut Vec<u8>, n: i32) {
    long(out, n as i64);
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn double(out: &mut Vec<u8>, x: f64) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// `["null", "double"]`.
fn optional_double(out: &mut Vec<u8>, x: Option<f64>) {
    match x {
        None => long(out, 0),
        Some(x) => {
            long(out, 1);
            double(out, x);
        }
    }
}

/// One block holding every item, then the end marker (an empty array is the marker alone).
fn array<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        long(out, items.len() as i64);
        for x in items {
            item(out, x);
        }
    }
    long(out, 0);
}
