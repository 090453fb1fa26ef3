//! The Avro schemas of `schemas/`, embedded at build time, with their fingerprints and
//! pre-built readers and writers.

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

/// One parsed schema with everything needed to read and write it without per-record setup.
pub struct LoadedSchema {
    pub kind: SchemaKind,
    pub schema: &'static Schema,
    /// CRC-64-AVRO (Rabin) fingerprint of the parsing canonical form, as used by single-object encoding.
    pub fingerprint: [u8; 8],
    pub(crate) reader: GenericDatumReader<'static>,
    pub(crate) writer: GenericDatumWriter<'static>,
}

impl LoadedSchema {
    /// Parses a schema; it lives for the rest of the process (there are a handful of them).
    pub(crate) fn parse(kind: SchemaKind, source: &str) -> Result<Self, apache_avro::Error> {
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(source)?));
        let fp = schema.fingerprint::<Rabin>().bytes;
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&fp[..8]);
        Ok(LoadedSchema {
            kind,
            schema,
            fingerprint,
            reader: GenericDatumReader::builder(schema).build()?,
            writer: GenericDatumWriter::builder(schema)
                .validate(false)
                .build()?,
        })
    }
}

/// All of riskstream's own schemas.
pub struct Schemas {
    loaded: Vec<LoadedSchema>,
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
            .collect();
        Schemas { loaded }
    }

    pub fn get(&self, kind: SchemaKind) -> &LoadedSchema {
        self.loaded
            .iter()
            .find(|l| l.kind == kind)
            .expect("every kind is loaded")
    }

    pub fn by_fingerprint(&self, fp: &[u8]) -> Option<&LoadedSchema> {
        self.loaded.iter().find(|l| l.fingerprint == fp)
    }
}

impl Default for Schemas {
    fn default() -> Self {
        Self::embedded()
    }
}
