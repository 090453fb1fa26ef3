//! Rust mirrors of the Avro records in `schemas/`. Field names match the schema exactly.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The device block shared by capture sessions and transactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub fingerprint_hash: String,
    pub platform: Platform,
    pub app_version: String,
    pub emulator: bool,
    pub rooted: bool,
    pub ip_address: String,
    pub ip_country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Platform {
    Unknown,
    Ios,
    Android,
    Web,
}

/// An identity-verification capture session (`schemas/capture_session.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureSession {
    pub event_id: String,
    pub account_id: String,
    pub event_time: i64,
    pub region: String,
    pub country: String,
    pub device: Device,
    pub session_id: String,
    pub document: Option<Document>,
    pub vendor: VendorResult,
    pub injection: InjectionSignals,
    pub telemetry: Vec<InteractionEvent>,
    pub steps: Vec<StepDuration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub doc_hash: String,
    pub doc_type: DocumentType,
    pub issuing_country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentType {
    Unknown,
    Passport,
    IdCard,
    DrivingLicence,
    ResidencePermit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VendorResult {
    pub vendor: String,
    pub liveness_score: f64,
    pub face_match_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectionSignals {
    pub virtual_camera: bool,
    pub injection_detected: bool,
    pub screen_replay_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionEvent {
    pub kind: InteractionKind,
    pub dt_ms: i32,
    pub x: Option<i32>,
    pub y: Option<i32>,
    pub key_class: KeyClass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InteractionKind {
    Other,
    KeyDown,
    KeyUp,
    PointerMove,
    PointerDown,
    PointerUp,
    Scroll,
    Focus,
    Blur,
    Paste,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyClass {
    None,
    Letter,
    Digit,
    Punctuation,
    Control,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDuration {
    pub step: String,
    pub duration_ms: i32,
}

/// A login, money movement or credential change (`schemas/transaction.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub event_id: String,
    pub account_id: String,
    pub event_time: i64,
    pub region: String,
    pub country: String,
    pub device: Device,
    pub kind: TransactionKind,
    pub amount: Option<Amount>,
    pub destination: Option<Destination>,
    pub channel: Channel,
    pub session_age_s: i64,
    /// Failed password or second-factor attempts in this sign-in before it succeeded (schema
    /// version 2; 0 in records written before it).
    #[serde(default)]
    pub failed_auth_attempts: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionKind {
    Other,
    Login,
    TransferOut,
    Withdrawal,
    CardPayment,
    Deposit,
    Trade,
    PasswordChange,
    MfaChange,
    EmailChange,
    ApiKeyCreate,
    AddressAdd,
}

impl TransactionKind {
    /// Kinds that move value out of the account.
    /// Every kind, in schema order (`kind as u8` is the index).
    pub const ALL: [TransactionKind; 12] = [
        Self::Other,
        Self::Login,
        Self::TransferOut,
        Self::Withdrawal,
        Self::CardPayment,
        Self::Deposit,
        Self::Trade,
        Self::PasswordChange,
        Self::MfaChange,
        Self::EmailChange,
        Self::ApiKeyCreate,
        Self::AddressAdd,
    ];
    /// The kind with schema index `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }
    /// The kind whose schema symbol is `symbol` (e.g. `WITHDRAWAL`).
    pub fn parse(symbol: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == symbol)
    }
    /// The schema symbol, e.g. `WITHDRAWAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Other => "OTHER",
            Self::Login => "LOGIN",
            Self::TransferOut => "TRANSFER_OUT",
            Self::Withdrawal => "WITHDRAWAL",
            Self::CardPayment => "CARD_PAYMENT",
            Self::Deposit => "DEPOSIT",
            Self::Trade => "TRADE",
            Self::PasswordChange => "PASSWORD_CHANGE",
            Self::MfaChange => "MFA_CHANGE",
            Self::EmailChange => "EMAIL_CHANGE",
            Self::ApiKeyCreate => "API_KEY_CREATE",
            Self::AddressAdd => "ADDRESS_ADD",
        }
    }
    pub fn moves_money_out(self) -> bool {
        matches!(
            self,
            Self::TransferOut | Self::Withdrawal | Self::CardPayment
        )
    }
    /// Kinds that change how the account is accessed or where money can go.
    pub fn is_credential_change(self) -> bool {
        matches!(
            self,
            Self::PasswordChange
                | Self::MfaChange
                | Self::EmailChange
                | Self::ApiKeyCreate
                | Self::AddressAdd
        )
    }
}

/// Money in integer minor units: `value_minor / 10^decimals` of `asset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amount {
    pub asset: String,
    pub value_minor: i64,
    pub decimals: i32,
    pub usd_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub address_hash: String,
    pub first_seen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    Unknown,
    App,
    Web,
    Api,
}

/// Any input event the pipeline scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    CaptureSession(CaptureSession),
    Transaction(Transaction),
}

impl Event {
    pub fn event_id(&self) -> &str {
        match self {
            Event::CaptureSession(e) => &e.event_id,
            Event::Transaction(e) => &e.event_id,
        }
    }
    pub fn account_id(&self) -> &str {
        match self {
            Event::CaptureSession(e) => &e.account_id,
            Event::Transaction(e) => &e.account_id,
        }
    }
    pub fn event_time(&self) -> i64 {
        match self {
            Event::CaptureSession(e) => e.event_time,
            Event::Transaction(e) => e.event_time,
        }
    }
    pub fn device(&self) -> &Device {
        match self {
            Event::CaptureSession(e) => &e.device,
            Event::Transaction(e) => &e.device,
        }
    }
    pub fn region(&self) -> &str {
        match self {
            Event::CaptureSession(e) => &e.region,
            Event::Transaction(e) => &e.region,
        }
    }
    pub fn event_type(&self) -> EventType {
        match self {
            Event::CaptureSession(_) => EventType::CaptureSession,
            Event::Transaction(_) => EventType::Transaction,
        }
    }

    /// The checks that need a clock, after [`Event::validate_with`] (which
    /// [`crate::Codec::decode_event`] runs): refuses event times more than
    /// `bounds.max_future_ms` after `now_ms` (a bogus future time would otherwise trim feature
    /// windows) and, when `bounds.max_age_ms` is set, more than that before the record's broker
    /// timestamp `broker_ms` (a replay of old records is fine: their broker timestamps are old too).
    pub fn validate_at(
        &self,
        now_ms: i64,
        broker_ms: Option<i64>,
        bounds: &Bounds,
    ) -> Result<(), ValidationError> {
        if self.event_time() > now_ms.saturating_add(bounds.max_future_ms) {
            return Err(ValidationError {
                field: "event_time",
                why: "is too far in the future (--max-future-skew-ms)",
            });
        }
        if let (true, Some(broker)) = (bounds.max_age_ms > 0, broker_ms) {
            if self.event_time() < broker.saturating_sub(bounds.max_age_ms) {
                return Err(ValidationError {
                    field: "event_time",
                    why: "is implausibly far before the record's broker timestamp (--max-event-age-ms)",
                });
            }
        }
        Ok(())
    }

    /// The first string field longer than `max` bytes, if any (no allocation: this runs for
    /// every event).
    fn an_overlong_string(&self, max: usize) -> Option<&'static str> {
        let long = |v: &str| v.len() > max;
        let d = self.device();
        let common = [
            ("event_id", self.event_id()),
            ("account_id", self.account_id()),
            ("region", self.region()),
            ("device.fingerprint_hash", d.fingerprint_hash.as_str()),
            ("device.app_version", d.app_version.as_str()),
            ("device.ip_address", d.ip_address.as_str()),
            ("device.ip_country", d.ip_country.as_str()),
        ];
        if let Some((field, _)) = common.iter().find(|(_, v)| long(v)) {
            return Some(field);
        }
        match self {
            Event::CaptureSession(c) => {
                let doc = c.document.as_ref();
                [
                    ("country", Some(c.country.as_str())),
                    ("session_id", Some(c.session_id.as_str())),
                    ("vendor.vendor", Some(c.vendor.vendor.as_str())),
                    ("document.doc_hash", doc.map(|d| d.doc_hash.as_str())),
                    (
                        "document.issuing_country",
                        doc.map(|d| d.issuing_country.as_str()),
                    ),
                ]
                .into_iter()
                .find(|(_, v)| v.is_some_and(long))
                .map(|(f, _)| f)
                .or_else(|| {
                    c.steps
                        .iter()
                        .any(|s| long(&s.step))
                        .then_some("steps.step")
                })
            }
            Event::Transaction(t) => [
                ("country", Some(t.country.as_str())),
                ("amount.asset", t.amount.as_ref().map(|a| a.asset.as_str())),
                (
                    "destination.address_hash",
                    t.destination.as_ref().map(|d| d.address_hash.as_str()),
                ),
            ]
            .into_iter()
            .find(|(_, v)| v.is_some_and(long))
            .map(|(f, _)| f),
        }
    }

    /// Checks the invariants Avro cannot express, with the default plausibility bounds.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_with(&Bounds::default())
    }

    /// Checks the invariants Avro cannot express and the plausibility `bounds` on strings and
    /// amounts. A failing event is dead-lettered, naming the field.
    pub fn validate_with(&self, bounds: &Bounds) -> Result<(), ValidationError> {
        let bad = |field: &'static str, why: &'static str| Err(ValidationError { field, why });
        if self.event_id().is_empty() {
            return bad("event_id", "must not be empty");
        }
        if self.account_id().is_empty() {
            return bad("account_id", "must not be empty");
        }
        if self.event_time() <= 0 {
            return bad(
                "event_time",
                "must be a positive epoch-milliseconds timestamp",
            );
        }
        if self.device().fingerprint_hash.is_empty() {
            return bad("device.fingerprint_hash", "must not be empty");
        }
        if let Some(field) = self.an_overlong_string(bounds.max_string_bytes) {
            return bad(
                field,
                "is longer than the plausibility bound (--max-string-bytes)",
            );
        }
        match self {
            Event::CaptureSession(c) => {
                for (field, v) in [
                    ("vendor.liveness_score", c.vendor.liveness_score),
                    ("vendor.face_match_score", c.vendor.face_match_score),
                    (
                        "injection.screen_replay_score",
                        c.injection.screen_replay_score,
                    ),
                ] {
                    if !(0.0..=1.0).contains(&v) {
                        return bad(field, "must be within [0, 1]");
                    }
                }
                if c.telemetry.iter().any(|t| t.dt_ms < 0) {
                    return bad("telemetry.dt_ms", "must not be negative");
                }
            }
            Event::Transaction(t) => {
                if let Some(a) = &t.amount {
                    if a.value_minor < 0 || a.usd_cents < 0 {
                        return bad("amount", "must not be negative");
                    }
                    if !(0..=30).contains(&a.decimals) {
                        return bad("amount.decimals", "must be within 0..=30");
                    }
                    if a.usd_cents > bounds.max_usd_cents {
                        return bad(
                            "amount.usd_cents",
                            "exceeds the plausibility bound (--max-amount-usd)",
                        );
                    }
                }
                if !(0..=MAX_FAILED_AUTH_ATTEMPTS).contains(&t.failed_auth_attempts) {
                    return bad("failed_auth_attempts", "must be within 0..=10000");
                }
            }
        }
        Ok(())
    }
}

/// Plausibility bound on a transaction's `failed_auth_attempts` (an authentication service
/// locks an account long before this).
pub const MAX_FAILED_AUTH_ATTEMPTS: i32 = 10_000;

/// Default plausibility bound on an input record's size, bytes (1 MiB, about Kafka's default
/// `message.max.bytes`): larger records are dead-lettered (`oversized`) without being decoded.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Default plausibility bound on every string field of an event, bytes (ids, hashes, names):
/// longer values are dead-lettered (`validation`).
pub const MAX_STRING_BYTES: usize = 1024;

/// Default plausibility bound on a transaction's USD value, cents (10 billion USD): larger
/// amounts are dead-lettered rather than scored (a value near `i64::MAX` would saturate every
/// money feature).
pub const MAX_USD_CENTS: i64 = 1_000_000_000_000;

/// Plausibility bounds on decoded events (worker options `--max-string-bytes`,
/// `--max-amount-usd`, `--max-future-skew-ms`, `--max-event-age-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Largest record value, bytes (checked before decoding).
    pub max_record_bytes: usize,
    /// Longest string field, bytes.
    pub max_string_bytes: usize,
    /// Largest USD value of a transaction, cents.
    pub max_usd_cents: i64,
    /// How far an event time may be ahead of the worker's clock, ms.
    pub max_future_ms: i64,
    /// How far an event time may be before the record's broker timestamp, ms (0: unchecked).
    /// Default 30 days, the longest feature window: an older event can count in no window.
    pub max_age_ms: i64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_record_bytes: MAX_RECORD_BYTES,
            max_string_bytes: MAX_STRING_BYTES,
            max_usd_cents: MAX_USD_CENTS,
            max_future_ms: 3_600_000,
            max_age_ms: 30 * 86_400_000,
        }
    }
}

/// A semantic check on a decoded event failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {why}")]
pub struct ValidationError {
    pub field: &'static str,
    pub why: &'static str,
}

/// The scored decision for one event (`schemas/verdict.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub event_id: String,
    pub event_type: EventType,
    pub account_id: String,
    pub event_time: i64,
    pub scored_at: i64,
    pub decision: Decision,
    pub friction: Friction,
    pub scores: Vec<ModelScore>,
    pub reasons: Vec<String>,
    /// Features logged by name besides the model inputs (the identity graph).
    pub features: Vec<FeatureValue>,
    /// Per scored model (champion first, then shadows), its inputs in manifest order.
    #[serde(default)]
    pub model_inputs: Vec<ModelInputs>,
    pub degraded: bool,
    pub degraded_reasons: Vec<String>,
    pub source: SourcePosition,
    /// The event's region (since schema version 3).
    #[serde(default)]
    pub region: String,
    /// Transactions: the kind's schema symbol; empty for capture sessions (since version 3).
    /// Borrowed from the kind on the hot path (no per-event allocation).
    #[serde(default)]
    pub transaction_kind: Cow<'static, str>,
    /// Capture sessions: the identity-verification vendor; empty otherwise (since version 3).
    #[serde(default)]
    pub vendor: String,
    /// Capture sessions: the vendor's liveness score (since version 3).
    #[serde(default)]
    pub vendor_liveness_score: Option<f64>,
    /// Capture sessions: the vendor's face-match score (since version 3).
    #[serde(default)]
    pub vendor_face_match_score: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Unknown,
    CaptureSession,
    Transaction,
}

impl EventType {
    /// The schema symbol, e.g. `CAPTURE_SESSION`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Unknown => "UNKNOWN",
            EventType::CaptureSession => "CAPTURE_SESSION",
            EventType::Transaction => "TRANSACTION",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Allow,
    Challenge,
    Review,
    Block,
}

impl Decision {
    pub const ALL: [Decision; 4] = [
        Decision::Allow,
        Decision::Challenge,
        Decision::Review,
        Decision::Block,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Challenge => "CHALLENGE",
            Decision::Review => "REVIEW",
            Decision::Block => "BLOCK",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Friction {
    None,
    StepUpMfa,
    KnowledgeQuiz,
    ConversationalAgent,
    HumanReview,
    Block,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    pub model: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub score: f64,
    pub shadow: bool,
}

/// The inputs one model saw, compact: values in the order of that model's manifest inputs
/// (grouped inputs such as the telemetry sequence left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInputs {
    pub model: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub values: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureValue {
    /// Borrowed from the model manifest on the hot path (no per-event allocation).
    pub name: Cow<'static, str>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Ground truth about an event or an account (`schemas/label.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub event_id: Option<String>,
    pub account_id: Option<String>,
    pub kind: LabelKind,
    pub source: String,
    pub label_time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LabelKind {
    Unknown,
    ConfirmedFraud,
    ConfirmedAto,
    Chargeback,
    Legitimate,
    Bot,
}

impl LabelKind {
    /// Every kind, in schema order.
    pub const ALL: [LabelKind; 6] = [
        LabelKind::Unknown,
        LabelKind::ConfirmedFraud,
        LabelKind::ConfirmedAto,
        LabelKind::Chargeback,
        LabelKind::Legitimate,
        LabelKind::Bot,
    ];
    /// The schema symbol, e.g. `CONFIRMED_ATO`.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKind::Unknown => "UNKNOWN",
            LabelKind::ConfirmedFraud => "CONFIRMED_FRAUD",
            LabelKind::ConfirmedAto => "CONFIRMED_ATO",
            LabelKind::Chargeback => "CHARGEBACK",
            LabelKind::Legitimate => "LEGITIMATE",
            LabelKind::Bot => "BOT",
        }
    }
    /// The kind whose schema symbol is `symbol`.
    pub fn parse(symbol: &str) -> Option<LabelKind> {
        LabelKind::ALL.into_iter().find(|k| k.as_str() == symbol)
    }
}

/// Kafka header names riskstream writes on dead letters.
pub mod dlq_headers {
    pub const ERROR: &str = "riskstream.error";
    pub const ERROR_KIND: &str = "riskstream.error.kind";
    pub const SOURCE_TOPIC: &str = "riskstream.source.topic";
    pub const SOURCE_PARTITION: &str = "riskstream.source.partition";
    pub const SOURCE_OFFSET: &str = "riskstream.source.offset";
    /// On a dead letter whose value was cut to [`DEAD_LETTER_MAX_VALUE`] bytes: the original
    /// value's size (the whole record stays on its source topic, at the source offset).
    pub const VALUE_TRUNCATED_FROM: &str = "riskstream.value.truncated_from";
    /// The most of a record's value a dead letter carries: a larger one (only an `oversized`
    /// record can be) is cut, so the dead letter stays under the producer's `message.max.bytes`
    /// (librdkafka's default is 1 000 000) and its delivery cannot fail and stop the worker.
    pub const DEAD_LETTER_MAX_VALUE: usize = 512 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_kind_codes_follow_schema_order() {
        for (i, k) in TransactionKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(TransactionKind::from_code(i as u8), Some(*k));
        }
        assert_eq!(TransactionKind::from_code(12), None);
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/transaction.avsc"))
                .expect("schema");
        let symbols = schema["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["name"] == "kind")
            .expect("kind")["type"]["symbols"]
            .as_array()
            .expect("symbols")
            .len();
        assert_eq!(symbols, TransactionKind::ALL.len());
    }
}
