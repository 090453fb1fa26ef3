//! The Avro schemas of `schemas/` (current) and `schema-history/` (every earlier version),
//! embedded at build time, with their fingerprints and pre-built readers and writers.

use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

/// Which of our record types a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    CaptureSession,
    Transaction,
    Verdict,
    Label,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 4] = [
        SchemaKind::CaptureSession,
        SchemaKind::Transaction,
        SchemaKind::Verdict,
        SchemaKind::Label,
    ];

    /// The record's Avro full name, used to recognise registry schemas.
    pub fn full_name(self) -> &'static str {
        match self {
            SchemaKind::CaptureSession => "riskstream.v1.CaptureSession",
            SchemaKind::Transaction => "riskstream.v1.Transaction",
            SchemaKind::Verdict => "riskstream.v1.Verdict",
            SchemaKind::Label => "riskstream.v1.Label",
        }
    }

    /// The `.avsc` source text as committed in `schemas/`.
    pub fn source(self) -> &'static str {
        match self {
            SchemaKind::CaptureSession => include_str!("../../../schemas/capture_session.avsc"),
            SchemaKind::Transaction => include_str!("../../../schemas/transaction.avsc"),
            SchemaKind::Verdict => include_str!("../../../schemas/verdict.avsc"),
            SchemaKind::Label => include_str!("../../../schemas/label.avsc"),
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            SchemaKind::CaptureSession => "capture_session.avsc",
            SchemaKind::Transaction => "transaction.avsc",
            SchemaKind::Verdict => "verdict.avsc",
            SchemaKind::Label => "label.avsc",
        }
    }

    pub fn from_full_name(name: &str) -> Option<SchemaKind> {
        SchemaKind::ALL.into_iter().find(|k| k.full_name() == name)
    }
}

/// Earlier versions of our schemas (`schema-history/`, beside `schemas/`): (kind, version,
/// file, source). Payloads written with one of them are resolved into the current schema.
pub const HISTORY: &[(SchemaKind, u32, &str, &str)] = &[
    (
        SchemaKind::Verdict,
        1,
        "verdict.v1.avsc",
        include_str!("../../../schema-history/verdict.v1.avsc"),
    ),
    (
        SchemaKind::Verdict,
        2,
        "verdict.v2.avsc",
        include_str!("../../../schema-history/verdict.v2.avsc"),
    ),
    (
        SchemaKind::Transaction,
        1,
        "transaction.v1.avsc",
        include_str!("../../../schema-history/transaction.v1.avsc"),
    ),
];

/// The current version number of each schema (one more than its newest historical version).
pub fn current_version(kind: SchemaKind) -> u32 {
    HISTORY
        .iter()
        .filter(|(k, ..)| *k == kind)
        .map(|(_, v, ..)| v + 1)
        .max()
        .unwrap_or(1)
}

/// Until when decoding also accepts the fingerprints that riskstream releases up to
/// 2026-12-01 wrote (apache-avro 0.22's, which differ from the spec for schemas with logical
/// types): records already on the topics from those releases stay readable while producers and
/// consumers upgrade. After this date, drop [`LoadedSchema::legacy_fingerprint`] and
/// [`HistoricSchema::legacy_fingerprint`] from the look-ups.
pub const LEGACY_FINGERPRINTS_UNTIL: &str = "2027-06-30";

/// An earlier version of one of our schemas, resolved into the current one.
pub struct HistoricSchema {
    pub kind: SchemaKind,
    pub version: u32,
    pub file: &'static str,
    /// Spec fingerprint of that version (see [`LoadedSchema::fingerprint`]).
    pub fingerprint: [u8; 8],
    /// What releases up to 2026-12-01 wrote for it (see [`LEGACY_FINGERPRINTS_UNTIL`]).
    pub legacy_fingerprint: [u8; 8],
    /// Reads that version's bodies into values of the current schema.
    pub(crate) resolver: GenericDatumReader<'static>,
}

/// apache-avro's fingerprint (non-standard for logical types; what older releases wrote).
fn legacy_fingerprint_of(schema: &Schema) -> [u8; 8] {
    let fp = schema.fingerprint::<Rabin>().bytes;
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&fp[..8]);
    fingerprint
}

/// One of our schema files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{0}")]
    Avro(#[from] apache_avro::Error),
    #[error("{0}")]
    Canonical(#[from] crate::canonical::CanonicalError),
}

/// One parsed schema with everything needed to read and write it without per-record setup.
pub struct LoadedSchema {
    pub kind: SchemaKind,
    pub schema: &'static Schema,
    /// CRC-64-AVRO (Rabin) fingerprint of the spec's Parsing Canonical Form, in wire order
    /// (little-endian), as single-object encoding writes it ([`crate::canonical`]).
    pub fingerprint: [u8; 8],
    /// What releases up to 2026-12-01 wrote for this schema (see [`LEGACY_FINGERPRINTS_UNTIL`]).
    pub legacy_fingerprint: [u8; 8],
    pub(crate) reader: GenericDatumReader<'static>,
    pub(crate) writer: GenericDatumWriter<'static>,
}

impl LoadedSchema {
    /// Parses a schema; it lives for the rest of the process (there are a handful of them).
    pub(crate) fn parse(kind: SchemaKind, source: &str) -> Result<Self, SchemaError> {
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(source)?));
        Ok(LoadedSchema {
            kind,
            schema,
            fingerprint: crate::canonical::fingerprint(source)?,
            legacy_fingerprint: legacy_fingerprint_of(schema),
            reader: GenericDatumReader::builder(schema).build()?,
            writer: GenericDatumWriter::builder(schema)
                .validate(false)
                .build()?,
        })
    }
}

/// All of riskstream's own schemas: the current versions and the history.
pub struct Schemas {
    loaded: Vec<LoadedSchema>,
    history: Vec<HistoricSchema>,
}

impl Schemas {
    /// Parses the embedded schemas. They are compiled in, so failure is a build defect.
    pub fn embedded() -> Self {
        let loaded = SchemaKind::ALL
            .into_iter()
            .map(|k| {
                LoadedSchema::parse(k, k.source()).unwrap_or_else(|e| {
                    panic!("embedded schema {} does not parse: {e}", k.file_name())
                })
            })
            .collect::<Vec<LoadedSchema>>();
        let history = HISTORY
            .iter()
            .map(|&(kind, version, file, source)| {
                let parsed = Schema::parse_str(source)
                    .unwrap_or_else(|e| panic!("historical schema {file} does not parse: {e}"));
                let writer: &'static Schema = Box::leak(Box::new(parsed));
                let current = loaded
                    .iter()
                    .find(|l| l.kind == kind)
                    .expect("every kind is loaded");
                let resolver = GenericDatumReader::builder(writer)
                    .reader_schema(current.schema)
                    .build()
                    .unwrap_or_else(|e| {
                        panic!(
                            "historical schema {file} does not resolve into the current one: {e}"
                        )
                    });
                HistoricSchema {
                    kind,
                    version,
                    file,
                    fingerprint: crate::canonical::fingerprint(source).unwrap_or_else(|e| {
                        panic!("historical schema {file} has no canonical form: {e}")
                    }),
                    legacy_fingerprint: legacy_fingerprint_of(writer),
                    resolver,
                }
            })
            .collect();
        Schemas { loaded, history }
    }

    /// Earlier versions, oldest first.
    pub fn history(&self) -> &[HistoricSchema] {
        &self.history
    }

    /// The earlier version with fingerprint `fp`, if any.
    pub fn historic_by_fingerprint(&self, fp: &[u8]) -> Option<&HistoricSchema> {
        self.history
            .iter()
            .find(|h| h.fingerprint == fp || h.legacy_fingerprint == fp)
    }

    pub fn get(&self, kind: SchemaKind) -> &LoadedSchema {
        self.loaded
            .iter()
            .find(|l| l.kind == kind)
            .expect("every kind is loaded")
    }

    pub fn by_fingerprint(&self, fp: &[u8]) -> Option<&LoadedSchema> {
        self.loaded
            .iter()
            .find(|l| l.fingerprint == fp || l.legacy_fingerprint == fp)
    }
}

impl Default for Schemas {
    fn default() -> Self {
        Self::embedded()
    }
}
