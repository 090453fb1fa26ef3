//! Typed events and verdicts, their Avro schemas (from the repository's `schemas/`), and the
//! wire framing used on every topic.
//!
//! In: raw Kafka payload bytes. Out: [`Event`]s (capture sessions and transactions), and
//! encoded [`Verdict`] and [`Label`] payloads. Knows nothing of Kafka, Redis or models.
//!
//! Two framings are recognised by their first bytes (see [`framing`]): Avro single-object
//! encoding (`C3 01` + 8-byte schema fingerprint, the registry-free default) and the Confluent
//! wire format (`00` + 4-byte schema id, resolved through a schema registry).

pub mod canonical;
mod event_body;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod log_ids;
pub mod registry;
pub mod schemas;
pub mod types;
mod verdict_body;

pub use framing::{Codec, DecodeError, EncodeError, Framing};
pub use registry::{RegistryClient, RegistryError, SubjectStrategy};
pub use schemas::{HistoricSchema, SchemaKind, Schemas};
pub use types::*;
