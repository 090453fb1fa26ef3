//! Avro's Parsing Canonical Form and its 64-bit Rabin fingerprint (CRC-64-AVRO), written to
//! the specification ("Parsing Canonical Form for Schemas", "Schema Fingerprints") so our
//! single-object fingerprints match every other implementation (Java's
//! `SchemaNormalization`, fastavro, …).
//!
//! Why our own: apache-avro 0.22 keeps `{"type":"long"}` for a primitive with a logical type
//! (e.g. `timestamp-millis`) where the spec strips the attribute and writes `"long"`
//! (upstream AVRO-4004), so every schema with a timestamp got a fingerprint no other
//! implementation computes. The spec's transformations:
//! - PRIMITIVES: a primitive schema becomes its name (`{"type":"int"}` → `"int"`; a logical
//!   type on it is an attribute, stripped with the rest);
//! - FULLNAMES: names of records, enums and fixed, and references to them, become full names;
//! - STRIP: only `type`, `name`, `fields`, `symbols`, `items`, `values`, `size` are kept;
//! - ORDER: in that order; STRINGS: no escapes beyond JSON's required ones; INTEGERS: plain;
//!   WHITESPACE: none outside strings;
//! - a named type after its definition is written as its full name.

use std::collections::HashSet;

use serde_json::Value;

/// The schema text is not a schema this module understands.
#[derive(Debug, thiserror::Error)]
#[error("not a canonicalisable Avro schema: {0}")]
pub struct CanonicalError(String);

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of the schema in `json`.
pub fn parsing_canonical_form(json: &str) -> Result<String, CanonicalError> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| CanonicalError(format!("JSON: {e}")))?;
    let mut out = String::with_capacity(json.len());
    let mut defined = HashSet::new();
    write_schema(&value, "", &mut defined, &mut out)?;
    Ok(out)
}

/// CRC-64-AVRO (the spec's 64-bit Rabin fingerprint) of `bytes`.
pub fn rabin64(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            }
            *slot = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for &b in bytes {
        fp = (fp >> 8) ^ table[((fp ^ b as u64) & 0xff) as usize];
    }
    fp
}

/// The single-object fingerprint of the schema in `json`: CRC-64-AVRO of its Parsing
/// Canonical Form, as the 8 little-endian bytes that follow `C3 01` on the wire.
pub fn fingerprint(json: &str) -> Result<[u8; 8], CanonicalError> {
    Ok(rabin64(parsing_canonical_form(json)?.as_bytes()).to_le_bytes())
}

fn push_str(out: &mut String, s: &str) {
    // serde_json writes UTF-8 as is and escapes only what JSON requires ([STRINGS]).
    out.push_str(&serde_json::to_string(s).expect("a string serialises"));
}

/// Full name of `name` declared with an optional explicit namespace inside `enclosing`.
fn full_name(name: &str, namespace: Option<&str>, enclosing: &str) -> String {
    if name.contains('.') {
        return name.to_string();
    }
    let ns = namespace.unwrap_or(enclosing);
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}.{name}")
    }
}

/// The namespace a full name puts its nested definitions in.
fn namespace_of(full: &str) -> &str {
    full.rsplit_once('.').map_or("", |(ns, _)| ns)
}

fn write_schema(
    schema: &Value,
    enclosing: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), CanonicalError> {
    match schema {
        Value::String(name) => {
            if PRIMITIVES.contains(&name.as_str()) {
                push_str(out, name);
            } else {
                push_str(out, &full_name(name, None, enclosing));
            }
            Ok(())
        }
        Value::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(b, enclosing, defined, out)?;
            }
            out.push(']');
            Ok(())
        }
        Value::Object(map) => {
            let ty = map
                .get("type")
                .ok_or_else(|| CanonicalError("an object without `type`".into()))?;
            let ty = match ty {
                // {"type": {...}} or {"type": [...]}: the schema is the inner one.
                Value::Object(_) | Value::Array(_) => {
                    return write_schema(ty, enclosing, defined, out)
                }
                Value::String(t) => t.as_str(),
                _ => return Err(CanonicalError("`type` is not a string".into())),
            };
            match ty {
                t if PRIMITIVES.contains(&t) => {
                    push_str(out, t);
                    Ok(())
                }
                "record" | "error" | "enum" | "fixed" => {
                    write_named(map, ty, enclosing, defined, out)
                }
                // {"type":"array","items":…} and {"type":"map","values":…}
                "array" | "map" => {
                    let inner = if ty == "array" { "items" } else { "values" };
                    let schema = map
                        .get(inner)
                        .ok_or_else(|| CanonicalError(format!("{ty} without `{inner}`")))?;
                    out.push_str(&format!("{{\"type\":\"{ty}\",\"{inner}\":"));
                    write_schema(schema, enclosing, defined, out)?;
                    out.push('}');
                    Ok(())
                }
                // A reference to a named type written as {"type": "Name"}.
                other => {
                    push_str(out, &full_name(other, None, enclosing));
                    Ok(())
                }
            }
        }
        _ => Err(CanonicalError(format!("unexpected JSON {schema}"))),
    }
}

fn write_named(
    map: &serde_json::Map<String, Value>,
    ty: &str,
    enclosing: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), CanonicalError> {
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| CanonicalError(format!("{ty} without a `name`")))?;
    let namespace = map.get("namespace").and_then(Value::as_str);
    let full = full_name(name, namespace, enclosing);
    if !defined.insert(full.clone()) {
        push_str(out, &full); // defined earlier: a reference
        return Ok(());
    }
    out.push_str("{\"name\":");
    push_str(out, &full);
    out.push_str(",\"type\":");
    push_str(out, ty);
    let inner = namespace_of(&full).to_string();
    match ty {
        "record" | "error" => {
            out.push_str(",\"fields\":[");
            let fields = map
                .get("fields")
                .and_then(Value::as_array)
                .ok_or_else(|| CanonicalError(format!("record {full} without `fields`")))?;
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let fname = f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CanonicalError(format!("a field of {full} without a name")))?;
                let ftype = f.get("type").ok_or_else(|| {
                    CanonicalError(format!("field {full}.{fname} without a type"))
                })?;
                out.push_str("{\"name\":");
                push_str(out, fname);
                out.push_str(",\"type\":");
                write_schema(ftype, &inner, defined, out)?;
                out.push('}');
            }
            out.push(']');
        }
        "enum" => {
            out.push_str(",\"symbols\":[");
            let symbols = map
                .get("symbols")
                .and_then(Value::as_array)
                .ok_or_else(|| CanonicalError(format!("enum {full} without `symbols`")))?;
            for (i, s) in symbols.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(
                    out,
                    s.as_str().ok_or_else(|| {
                        CanonicalError(format!("enum {full}: a symbol is not a string"))
                    })?,
                );
            }
            out.push(']');
        }
        _ => {
            // fixed
            let size = map
                .get("size")
                .and_then(|s| match s {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .ok_or_else(|| CanonicalError(format!("fixed {full} without an integer `size`")))?;
            out.push_str(&format!(",\"size\":{size}"));
        }
    }
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests;
