//! The oracles of the fuzz targets (`fuzz/`, run by `scripts/fuzz`). Each takes arbitrary bytes,
//! must not panic on any input, and panics when an invariant breaks:
//!
//! - [`event`]: an input payload is decoded (either framing, every schema version) and
//!   validated, including the clock checks against a broker timestamp taken from the input;
//!   what decodes must pass validation, read the same through the direct reader
//!   (`event_body.rs`) and apache-avro, and survive an encode / decode round trip;
//! - [`label`]: the same round trip for labels;
//! - [`verdict`]: a decoded verdict written by the worker's direct writer (`verdict_body.rs`) is
//!   byte for byte what apache-avro writes, and reads back as itself;
//! - [`canonical`]: any text given as a schema (a registry's answer) gives a Parsing Canonical
//!   Form that is its own canonical form, or a typed error.
//!
//! `tests/fuzz_inputs.rs` runs them over the committed seeds and every input fuzzing found
//! (`fuzz/regressions/`), so they stay compiled and true in CI without a fuzzer.

use std::sync::OnceLock;

use crate::framing::{Codec, Located};
use crate::schemas::SchemaKind;
use crate::types::{Bounds, Event, Label, Verdict};

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(Codec::registry_free)
}

/// The encoded bytes of an event (compared as bytes: a NaN score equals itself there).
fn encoded(event: &Event) -> Vec<u8> {
    let c = codec();
    match event {
        Event::CaptureSession(e) => c.encode(SchemaKind::CaptureSession, "fuzz", e),
        Event::Transaction(e) => c.encode(SchemaKind::Transaction, "fuzz", e),
    }
    .expect("a decoded event encodes")
}

/// `data` = 8 bytes of broker timestamp (little-endian ms) + an input payload.
pub fn event(data: &[u8]) {
    let (broker, payload) = match data.split_first_chunk::<8>() {
        Some((ms, payload)) => (Some(i64::from_le_bytes(*ms)), payload),
        None => (None, data),
    };
    let c = codec();
    let Ok(event) = c.decode_event(payload) else {
        return;
    };
    event
        .validate_with(&Bounds::default())
        .expect("a decoded event passed validation");
    let now = 1_800_000_000_000;
    let _ = event.validate_at(now, broker, &Bounds::default());
    let _ = event.validate_at(
        i64::MIN,
        broker.map(|b| b.wrapping_neg()),
        &Bounds::default(),
    );

    // The direct reader and apache-avro agree on what the current schemas wrote.
    let (located, body) = c.locate(payload).expect("located once already");
    if let Located::Own(_) = located {
        let generic: Event = match located.kind() {
            SchemaKind::CaptureSession => {
                Event::CaptureSession(c.read(&located, body).unwrap_or_else(|e| {
                    panic!("the direct reader read {event:?}, apache-avro refused: {e}")
                }))
            }
            _ => Event::Transaction(c.read(&located, body).unwrap_or_else(|e| {
                panic!("the direct reader read {event:?}, apache-avro refused: {e}")
            })),
        };
        assert_eq!(
            encoded(&event),
            encoded(&generic),
            "direct and apache-avro readings differ"
        );
    }

    // Round trip: what decoded encodes with the current schema and decodes to itself.
    let bytes = encoded(&event);
    let again = c.decode_event(&bytes).expect("a re-encoded event decodes");
    assert_eq!(encoded(&again), bytes, "round trip changed the event");
}

/// An input payload decoded as a label.
pub fn label(data: &[u8]) {
    let c = codec();
    let Ok(label) = c.decode_label(data) else {
        return;
    };
    let bytes = c
        .encode(SchemaKind::Label, "fuzz", &label)
        .expect("a decoded label encodes");
    let again: Label = c.decode_label(&bytes).expect("a re-encoded label decodes");
    let twice = c
        .encode(SchemaKind::Label, "fuzz", &again)
        .expect("encodes");
    assert_eq!(twice, bytes, "round trip changed the label");
}

/// A payload decoded as a verdict, written back by both writers.
pub fn verdict(data: &[u8]) {
    let c = codec();
    let Ok(verdict) = c.decode_as::<Verdict>(SchemaKind::Verdict, data) else {
        return;
    };
    let generic = c
        .encode(SchemaKind::Verdict, "fuzz", &verdict)
        .expect("a decoded verdict encodes");
    let mut direct = Vec::new();
    c.encode_verdict_into("fuzz", &verdict, &mut direct)
        .expect("a decoded verdict encodes directly");
    assert_eq!(
        direct, generic,
        "the direct verdict writer differs from apache-avro"
    );
    let again: Verdict = c
        .decode_as(SchemaKind::Verdict, &direct)
        .expect("a re-encoded verdict decodes");
    let mut twice = Vec::new();
    c.encode_verdict_into("fuzz", &again, &mut twice)
        .expect("encodes");
    assert_eq!(twice, direct, "round trip changed the verdict");
}

/// Text given as a schema.
pub fn canonical(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(form) = crate::canonical::parsing_canonical_form(text) else {
        return;
    };
    let again = crate::canonical::parsing_canonical_form(&form)
        .unwrap_or_else(|e| panic!("the canonical form {form} does not parse: {e}"));
    assert_eq!(
        again, form,
        "the canonical form is not its own canonical form"
    );
    let _ = crate::canonical::fingerprint(text);
}
