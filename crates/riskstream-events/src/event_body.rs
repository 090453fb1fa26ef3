//! The two input records' Avro bodies read directly, field by field in the order of the
//! current `schemas/capture_session.avsc` and `schemas/transaction.avsc`: the worker decodes
//! every input event, and apache-avro's schema-walking deserializer was ~13 % of the scoring
//! worker's CPU in `perf` (most of it the capture session's telemetry array). Only payloads
//! written with the current schemas take this path; earlier versions and registry schemas are
//! resolved by apache-avro as before (`framing.rs`).
//!
//! The tests pin it against apache-avro: the same events from every simulated family, the
//! fields of the schemas in this order, and on corrupted payloads both reject or both give the
//! same event. Hostile input cannot make it allocate beyond the payload: every length and
//! count is checked against the bytes left before anything is reserved.

use crate::types::*;

/// Why a body could not be read.
pub(crate) type Error = String;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, Error> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("unexpected end of data")?;
            self.buf = rest;
            z |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn int(&mut self) -> Result<i32, Error> {
        let n = self.long()?;
        i32::try_from(n).map_err(|_| format!("int out of range: {n}"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(format!("length {n} past the end of data"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, Error> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("negative string length {n}"))?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("string is not UTF-8: {e}"))
    }

    fn boolean(&mut self) -> Result<bool, Error> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("invalid boolean byte {b}")),
        }
    }

    fn double(&mut self) -> Result<f64, Error> {
        let b = self.take(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// An enum's symbol index, below `symbols`.
    fn symbol(&mut self, symbols: usize) -> Result<usize, Error> {
        let i = self.int()?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < symbols)
            .ok_or_else(|| format!("enum index {i} out of range ({symbols} symbols)"))
    }

    /// `["null", T]`: whether T follows.
    fn present(&mut self) -> Result<bool, Error> {
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(format!("union index {i} out of range (2 branches)")),
        }
    }

    /// `["null", T]` read with `item` when present.
    fn optional<T>(
        &mut self,
        item: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.present()? {
            item(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An array: blocks of items ended by a count of 0 (a negative count is followed by the
    /// block's size in bytes). `min_item_bytes` bounds the count by the bytes left.
    fn array<T>(
        &mut self,
        min_item_bytes: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        loop {
            let mut n = self.long()?;
            if n == 0 {
                return Ok(out);
            }
            if n < 0 {
                n = n.checked_neg().ok_or("array block count out of range")?;
                self.long()?; // the block's size in bytes
            }
            let n = n as u64;
            if n > (self.buf.len() / min_item_bytes.max(1)) as u64 {
                return Err(format!("array block of {n} items past the end of data"));
            }
            out.reserve(n as usize);
            for _ in 0..n {
                out.push(item(self)?);
            }
        }
    }

    fn device(&mut self) -> Result<Device, Error> {
        Ok(Device {
            fingerprint_hash: self.string()?,
            platform: [
                Platform::Unknown,
                Platform::Ios,
                Platform::Android,
                Platform::Web,
            ][self.symbol(4)?],
            app_version: self.string()?,
            emulator: self.boolean()?,
            rooted: self.boolean()?,
            ip_address: self.string()?,
            ip_country: self.string()?,
        })
    }
}

/// The capture-session fields, in schema order (pinned against the schema by a test).
#[cfg(test)]
pub(crate) const CAPTURE_SESSION_FIELDS: &[&str] = &[
    "event_id",
    "account_id",
    "event_time",
    "region",
    "country",
    "device",
    "session_id",
    "document",
    "vendor",
    "injection",
    "telemetry",
    "steps",
];

/// The transaction fields, in schema order (pinned against the schema by a test).
#[cfg(test)]
pub(crate) const TRANSACTION_FIELDS: &[&str] = &[
    "event_id",
    "account_id",
    "event_time",
    "region",
    "country",
    "device",
    "kind",
    "amount",
    "destination",
    "channel",
    "session_age_s",
    "failed_auth_attempts",
];

pub(crate) const INTERACTION_KINDS: [InteractionKind; 10] = [
    InteractionKind::Other,
    InteractionKind::KeyDown,
    InteractionKind::KeyUp,
    InteractionKind::PointerMove,
    InteractionKind::PointerDown,
    InteractionKind::PointerUp,
    InteractionKind::Scroll,
    InteractionKind::Focus,
    InteractionKind::Blur,
    InteractionKind::Paste,
];

pub(crate) const KEY_CLASSES: [KeyClass; 5] = [
    KeyClass::None,
    KeyClass::Letter,
    KeyClass::Digit,
    KeyClass::Punctuation,
    KeyClass::Control,
];

pub(crate) const DOCUMENT_TYPES: [DocumentType; 5] = [
    DocumentType::Unknown,
    DocumentType::Passport,
    DocumentType::IdCard,
    DocumentType::DrivingLicence,
    DocumentType::ResidencePermit,
];

const CHANNELS: [Channel; 4] = [Channel::Unknown, Channel::App, Channel::Web, Channel::Api];

/// Reads a capture session; returns it and the bytes after it.
pub(crate) fn capture_session(buf: &[u8]) -> Result<(CaptureSession, &[u8]), Error> {
    let mut r = Reader { buf };
    let event = CaptureSession {
        event_id: r.string()?,
        account_id: r.string()?,
        event_time: r.long()?,
        region: r.string()?,
        country: r.string()?,
        device: r.device()?,
        session_id: r.string()?,
        document: r.optional(|r| {
            Ok(Document {
                doc_hash: r.string()?,
                doc_type: DOCUMENT_TYPES[r.symbol(DOCUMENT_TYPES.len())?],
                issuing_country: r.string()?,
            })
        })?,
        vendor: VendorResult {
            vendor: r.string()?,
            liveness_score: r.double()?,
            face_match_score: r.double()?,
        },
        injection: InjectionSignals {
            virtual_camera: r.boolean()?,
            injection_detected: r.boolean()?,
            screen_replay_score: r.double()?,
        },
        telemetry: r.array(5, |r| {
            Ok(InteractionEvent {
                kind: INTERACTION_KINDS[r.symbol(INTERACTION_KINDS.len())?],
                dt_ms: r.int()?,
                x: r.optional(Reader::int)?,
                y: r.optional(Reader::int)?,
                key_class: KEY_CLASSES[r.symbol(KEY_CLASSES.len())?],
            })
        })?,
        steps: r.array(2, |r| {
            Ok(StepDuration {
                step: r.string()?,
                duration_ms: r.int()?,
            })
        })?,
    };
    Ok((event, r.buf))
}

/// Reads a transaction; returns it and the bytes after it.
pub(crate) fn transaction(buf: &[u8]) -> Result<(Transaction, &[u8]), Error> {
    let mut r = Reader { buf };
    let event = Transaction {
        event_id: r.string()?,
        account_id: r.string()?,
        event_time: r.long()?,
        region: r.string()?,
        country: r.string()?,
        device: r.device()?,
        kind: TransactionKind::ALL[r.symbol(TransactionKind::ALL.len())?],
        amount: r.optional(|r| {
            Ok(Amount {
                asset: r.string()?,
                value_minor: r.long()?,
                decimals: r.int()?,
                usd_cents: r.long()?,
            })
        })?,
        destination: r.optional(|r| {
            Ok(Destination {
                address_hash: r.string()?,
                first_seen: r.boolean()?,
            })
        })?,
        channel: CHANNELS[r.symbol(CHANNELS.len())?],
        session_age_s: r.long()?,
        failed_auth_attempts: r.int()?,
    };
    Ok((event, r.buf))
}
