use super::*;
use crate::types::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

fn device() -> Device {
    Device {
        fingerprint_hash: "fp1".into(),
        platform: Platform::Android,
        app_version: "7.1.0".into(),
        emulator: false,
        rooted: true,
        ip_address: "10.0.0.1".into(),
        ip_country: "DE".into(),
    }
}

fn transaction() -> Transaction {
    Transaction {
        event_id: "e1".into(),
        account_id: "a1".into(),
        event_time: 1_700_000_000_000,
        region: "eu".into(),
        country: "DE".into(),
        device: device(),
        kind: TransactionKind::Withdrawal,
        amount: Some(Amount {
            asset: "BTC".into(),
            value_minor: 12_345_678,
            decimals: 8,
            usd_cents: 850_000,
        }),
        destination: Some(Destination {
            address_hash: "d1".into(),
            first_seen: true,
        }),
        channel: Channel::App,
        session_age_s: 42,
        failed_auth_attempts: 2,
    }
}

fn capture() -> CaptureSession {
    CaptureSession {
        event_id: "c1".into(),
        account_id: "a1".into(),
        event_time: 1_700_000_000_000,
        region: "eu".into(),
        country: "DE".into(),
        device: device(),
        session_id: "s1".into(),
        document: None,
        vendor: VendorResult {
            vendor: "v".into(),
            liveness_score: 0.9,
            face_match_score: 0.8,
        },
        injection: InjectionSignals {
            virtual_camera: false,
            injection_detected: true,
            screen_replay_score: 0.1,
        },
        telemetry: vec![
            InteractionEvent {
                kind: InteractionKind::KeyDown,
                dt_ms: 0,
                x: None,
                y: None,
                key_class: KeyClass::Letter,
            },
            InteractionEvent {
                kind: InteractionKind::PointerMove,
                dt_ms: 17,
                x: Some(3),
                y: Some(-4),
                key_class: KeyClass::None,
            },
        ],
        steps: vec![StepDuration {
            step: "selfie".into(),
            duration_ms: 4000,
        }],
    }
}

#[test]
fn single_object_round_trip_preserves_every_field() {
    let codec = Codec::registry_free();
    let tx = transaction();
    let bytes = codec
        .encode(SchemaKind::Transaction, "transactions", &tx)
        .unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(codec.decode_event(&bytes).unwrap(), Event::Transaction(tx));

    let cs = capture();
    let bytes = codec
        .encode(SchemaKind::CaptureSession, "capture-sessions", &cs)
        .unwrap();
    assert_eq!(
        codec.decode_event(&bytes).unwrap(),
        Event::CaptureSession(cs)
    );
}

#[test]
fn fingerprint_is_crc64_avro_of_canonical_form() {
    // The spec's CRC-64-AVRO of the canonical form `"null"` is 0x63dd24e7cc258f8a, written little-endian.
    let null = apache_avro::Schema::parse_str("\"null\"").unwrap();
    let fp = null.fingerprint::<apache_avro::rabin::Rabin>().bytes;
    assert_eq!(
        u64::from_le_bytes(fp[..8].try_into().unwrap()),
        0x63dd24e7cc258f8a
    );
}

#[test]
fn garbage_is_rejected_with_a_reason_never_a_panic() {
    let codec = Codec::registry_free();
    let good = codec
        .encode(SchemaKind::Transaction, "t", &transaction())
        .unwrap();
    assert!(matches!(codec.decode_event(&[]), Err(DecodeError::Empty)));
    assert!(matches!(
        codec.decode_event(b"{\"json\":1}"),
        Err(DecodeError::UnknownFraming(b'{'))
    ));
    assert!(matches!(
        codec.decode_event(&good[..5]),
        Err(DecodeError::TruncatedHeader { .. })
    ));
    let mut wrong_fp = good.clone();
    wrong_fp[3] ^= 0xff;
    assert!(matches!(
        codec.decode_event(&wrong_fp),
        Err(DecodeError::UnknownFingerprint(_))
    ));
    assert!(matches!(
        codec.decode_event(&good[..good.len() - 3]),
        Err(DecodeError::Body { .. })
    ));
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    assert!(matches!(
        codec.decode_event(&trailing),
        Err(DecodeError::TrailingBytes(2))
    ));
    assert!(matches!(
        codec.decode_event(&[0, 0, 0, 0, 7, 1]),
        Err(DecodeError::NoRegistry(7))
    ));
    // A huge array length must not allocate: header + event_id length claiming 2^62 bytes.
    let mut huge = good[..10].to_vec();
    huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(codec.decode_event(&huge).is_err());
    // Every truncation of a valid record fails cleanly.
    for n in 0..good.len() {
        assert!(
            codec.decode_event(&good[..n]).is_err(),
            "prefix of {n} bytes decoded"
        );
    }
}

#[test]
fn implausible_amounts_and_overlong_strings_are_refused() {
    let codec = Codec::registry_free();
    let mut tx = transaction();
    tx.amount.as_mut().unwrap().usd_cents = i64::MAX;
    let bytes = codec.encode(SchemaKind::Transaction, "t", &tx).unwrap();
    let err = codec.decode_event(&bytes).unwrap_err();
    assert!(err.to_string().contains("amount.usd_cents"), "{err}");
    let mut tx = transaction();
    tx.amount.as_mut().unwrap().usd_cents = crate::types::MAX_USD_CENTS;
    let bytes = codec.encode(SchemaKind::Transaction, "t", &tx).unwrap();
    assert!(
        codec.decode_event(&bytes).is_ok(),
        "the bound itself is fine"
    );
    let mut tx = transaction();
    tx.destination.as_mut().unwrap().address_hash = "x".repeat(900_000);
    let bytes = codec.encode(SchemaKind::Transaction, "t", &tx).unwrap();
    let err = codec.decode_event(&bytes).unwrap_err();
    assert_eq!(err.kind(), "validation");
    assert!(
        err.to_string().contains("destination.address_hash"),
        "{err}"
    );
    let mut c = capture();
    c.steps[0].step = "s".repeat(1025);
    let bytes = codec.encode(SchemaKind::CaptureSession, "c", &c).unwrap();
    assert!(codec
        .decode_event(&bytes)
        .unwrap_err()
        .to_string()
        .contains("steps.step"));
}

#[test]
fn validation_failure_names_the_field() {
    let codec = Codec::registry_free();
    let mut tx = transaction();
    tx.account_id.clear();
    let bytes = codec.encode(SchemaKind::Transaction, "t", &tx).unwrap();
    let err = codec.decode_event(&bytes).unwrap_err();
    assert_eq!(err.kind(), "validation");
    assert!(err.to_string().contains("account_id"), "{err}");
}

#[test]
fn a_verdict_is_not_an_event() {
    let codec = Codec::registry_free();
    let label = Label {
        event_id: Some("e".into()),
        account_id: None,
        kind: LabelKind::Bot,
        source: "t".into(),
        label_time: 5,
    };
    let bytes = codec.encode(SchemaKind::Label, "labels", &label).unwrap();
    assert!(matches!(
        codec.decode_event(&bytes),
        Err(DecodeError::WrongRecordType { .. })
    ));
    assert_eq!(codec.decode_label(&bytes).unwrap(), label);
}

fn verdict() -> Verdict {
    Verdict {
        event_id: "e1".into(),
        event_type: EventType::Transaction,
        account_id: "a1".into(),
        event_time: 1_700_000_000_000,
        scored_at: 1_700_000_000_050,
        decision: Decision::Challenge,
        friction: Friction::StepUpMfa,
        scores: vec![ModelScore {
            model: "ato".into(),
            version: "2.0.0".into(),
            score: 0.42,
            shadow: false,
        }],
        reasons: vec!["policy:r".into()],
        features: vec![FeatureValue {
            name: "graph_linked_accounts".into(),
            value: 2.0,
        }],
        model_inputs: vec![ModelInputs {
            model: "ato".into(),
            version: "2.0.0".into(),
            values: vec![1.0, 0.5, -3.25],
        }],
        degraded: false,
        degraded_reasons: vec![],
        source: SourcePosition {
            topic: "transactions".into(),
            partition: 3,
            offset: 99,
        },
        region: "eu".into(),
        transaction_kind: "WITHDRAWAL".into(),
        vendor: String::new(),
        vendor_liveness_score: None,
        vendor_face_match_score: None,
    }
}

#[test]
fn a_verdict_round_trips_with_its_model_inputs() {
    let codec = Codec::registry_free();
    let bytes = codec
        .encode(SchemaKind::Verdict, "verdicts", &verdict())
        .unwrap();
    let back: Verdict = codec.decode_as(SchemaKind::Verdict, &bytes).unwrap();
    assert_eq!(back, verdict());
    // A capture session's verdict carries its vendor and the vendor's scores.
    let capture = Verdict {
        event_type: EventType::CaptureSession,
        transaction_kind: "".into(),
        vendor: "onfido".into(),
        vendor_liveness_score: Some(0.93),
        vendor_face_match_score: Some(0.25),
        ..verdict()
    };
    let bytes = codec
        .encode(SchemaKind::Verdict, "verdicts", &capture)
        .unwrap();
    let back: Verdict = codec.decode_as(SchemaKind::Verdict, &bytes).unwrap();
    assert_eq!(back, capture);
}

/// A verdict as schema version 2 wrote it (no region / transaction kind / vendor fields).
#[derive(serde::Serialize)]
struct VerdictV2 {
    event_id: String,
    event_type: EventType,
    account_id: String,
    event_time: i64,
    scored_at: i64,
    decision: Decision,
    friction: Friction,
    scores: Vec<ModelScore>,
    reasons: Vec<String>,
    features: Vec<FeatureValue>,
    model_inputs: Vec<ModelInputs>,
    degraded: bool,
    degraded_reasons: Vec<String>,
    source: SourcePosition,
}

#[test]
fn a_verdict_written_with_schema_version_2_still_decodes() {
    let codec = Codec::registry_free();
    let (_, source) = crate::schemas::HISTORY
        .iter()
        .map(|(k, v, _, src)| ((*k, *v), *src))
        .find(|(kv, _)| *kv == (SchemaKind::Verdict, 2))
        .expect("verdict v2 in the history");
    let writer = crate::schemas::LoadedSchema::parse(SchemaKind::Verdict, source).unwrap();
    let v = verdict();
    let old = VerdictV2 {
        event_id: v.event_id.clone(),
        event_type: v.event_type,
        account_id: v.account_id.clone(),
        event_time: v.event_time,
        scored_at: v.scored_at,
        decision: v.decision,
        friction: v.friction,
        scores: v.scores.clone(),
        reasons: v.reasons.clone(),
        features: v.features.clone(),
        model_inputs: v.model_inputs.clone(),
        degraded: v.degraded,
        degraded_reasons: v.degraded_reasons.clone(),
        source: v.source.clone(),
    };
    for fingerprint in [writer.legacy_fingerprint, writer.fingerprint] {
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&fingerprint);
        writer.writer.write_ser(&mut bytes, &old).unwrap();
        let back: Verdict = codec.decode_as(SchemaKind::Verdict, &bytes).unwrap();
        assert_eq!(back.model_inputs, v.model_inputs);
        assert_eq!(
            (
                back.region.as_str(),
                back.transaction_kind.as_ref(),
                back.vendor.as_str()
            ),
            ("", "", ""),
            "the new fields take their defaults"
        );
        assert_eq!(back.vendor_liveness_score, None);
        assert_eq!(back.source, v.source);
    }
}

/// A verdict as schema version 1 wrote it (no `model_inputs`; every model input by name).
#[derive(serde::Serialize)]
struct VerdictV1 {
    event_id: String,
    event_type: EventType,
    account_id: String,
    event_time: i64,
    scored_at: i64,
    decision: Decision,
    friction: Friction,
    scores: Vec<ModelScore>,
    reasons: Vec<String>,
    features: Vec<FeatureValue>,
    degraded: bool,
    degraded_reasons: Vec<String>,
    source: SourcePosition,
}

#[test]
fn a_verdict_written_with_schema_version_1_still_decodes() {
    let codec = Codec::registry_free();
    let history = codec.schemas().history();
    let v1 = history
        .iter()
        .find(|h| h.kind == SchemaKind::Verdict && h.version == 1)
        .expect("verdict v1 in the history");
    assert_ne!(
        v1.fingerprint,
        codec.schemas().get(SchemaKind::Verdict).fingerprint,
        "a changed schema has a new fingerprint"
    );
    let (_, source) = crate::schemas::HISTORY
        .iter()
        .map(|(k, v, _, src)| ((*k, *v), *src))
        .find(|(kv, _)| *kv == (SchemaKind::Verdict, 1))
        .unwrap();
    let writer = crate::schemas::LoadedSchema::parse(SchemaKind::Verdict, source).unwrap();
    assert_eq!(writer.fingerprint, v1.fingerprint);
    assert_eq!(writer.legacy_fingerprint, v1.legacy_fingerprint);
    let current = verdict();
    let old = VerdictV1 {
        event_id: current.event_id.clone(),
        event_type: current.event_type,
        account_id: current.account_id.clone(),
        event_time: current.event_time,
        scored_at: current.scored_at,
        decision: current.decision,
        friction: current.friction,
        scores: current.scores.clone(),
        reasons: current.reasons.clone(),
        features: vec![
            FeatureValue {
                name: "tx_usd".into(),
                value: 12.5,
            },
            FeatureValue {
                name: "graph_linked_accounts".into(),
                value: 2.0,
            },
        ],
        degraded: true,
        degraded_reasons: vec!["feature_store_unavailable".into()],
        source: current.source.clone(),
    };
    // As a v1 release wrote it (its legacy fingerprint), and as a stock Avro encoder with the
    // v1 schema would (the spec fingerprint): both decode into the current verdict.
    for fingerprint in [writer.legacy_fingerprint, writer.fingerprint] {
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&fingerprint);
        writer.writer.write_ser(&mut bytes, &old).unwrap();
        let back: Verdict = codec.decode_as(SchemaKind::Verdict, &bytes).unwrap();
        assert_eq!(back.event_id, "e1");
        assert_eq!(back.features, old.features, "v1's named features survive");
        assert!(
            back.model_inputs.is_empty(),
            "the new field takes its default"
        );
        assert!(back.degraded);
        assert_eq!(back.source, current.source);
    }
}

/// Our schemas' single-object fingerprints in wire order, as an independent implementation
/// computes them: fastavro 1.13.1, `fingerprint(to_parsing_canonical_form(schema),
/// "CRC-64-AVRO")`, which writes the 64-bit value little-endian as Java's
/// `SchemaNormalization` does. A schema change must update this table (and add the old
/// version to `schema-history/`).
const SPEC_FINGERPRINTS: &[(&str, &str)] = &[
    ("capture_session.avsc", "0aa435f07390c06f"),
    ("transaction.avsc", "1d01d66af241c4c6"),
    ("transaction.v1.avsc", "25424ee9474eb810"),
    ("verdict.avsc", "e05fadacd680b6c6"),
    ("label.avsc", "b1b7199afb2af893"),
    ("verdict.v1.avsc", "779ee7141ec264d5"),
    ("verdict.v2.avsc", "8afd21eb611a437a"),
];

fn hex(fp: &[u8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn our_fingerprints_are_the_ones_other_implementations_compute() {
    let schemas = Schemas::embedded();
    let ours: Vec<(&str, String)> = SchemaKind::ALL
        .iter()
        .map(|k| (k.file_name(), hex(&schemas.get(*k).fingerprint)))
        .chain(
            schemas
                .history()
                .iter()
                .map(|h| (h.file, hex(&h.fingerprint))),
        )
        .collect();
    for (file, fp) in &ours {
        let want = SPEC_FINGERPRINTS
            .iter()
            .find(|(f, _)| f == file)
            .unwrap_or_else(|| panic!("{file} has no fixture"))
            .1;
        assert_eq!(fp, want, "{file}");
    }
    assert_eq!(ours.len(), SPEC_FINGERPRINTS.len());
}

#[test]
fn a_stock_encoder_record_decodes_and_legacy_fingerprints_still_do() {
    let codec = Codec::registry_free();
    let tx = transaction();
    let ours = codec.encode(SchemaKind::Transaction, "t", &tx).unwrap();
    let loaded = codec.schemas().get(SchemaKind::Transaction);
    assert_eq!(
        &ours[2..10],
        &loaded.fingerprint,
        "we write the spec fingerprint"
    );
    assert_eq!(hex(&ours[2..10]), "1d01d66af241c4c6");
    // A stock encoder writes the same header and body; a release up to 2026-12-01 wrote the
    // legacy fingerprint (different: the schema has a timestamp-millis field).
    assert_ne!(loaded.fingerprint, loaded.legacy_fingerprint);
    let mut legacy = ours.clone();
    legacy[2..10].copy_from_slice(&loaded.legacy_fingerprint);
    for bytes in [&ours, &legacy] {
        assert_eq!(
            codec.decode_event(bytes).unwrap(),
            Event::Transaction(tx.clone())
        );
    }
}

/// Records written by a stock encoder (fastavro, see `fixtures/README.md`): ours decodes them,
/// and our encoder writes byte for byte what fastavro writes, so a stock decoder reads our
/// verdicts.
#[test]
fn records_of_a_stock_encoder_decode_and_ours_are_byte_identical() {
    let codec = Codec::registry_free();
    let tx_bytes: &[u8] = include_bytes!("fixtures/transaction.fastavro.bin");
    assert_eq!(
        codec.decode_event(tx_bytes).unwrap(),
        Event::Transaction(transaction())
    );
    // The same transaction written by the stock encoder with the previous version of the schema
    // (before `failed_auth_attempts`): found by its fingerprint in `schema-history/`, resolved
    // into the current schema, the new field at its default.
    let v1_bytes: &[u8] = include_bytes!("fixtures/transaction.v1.fastavro.bin");
    assert_eq!(hex(&v1_bytes[2..10]), "25424ee9474eb810");
    assert_eq!(
        codec.decode_event(v1_bytes).unwrap(),
        Event::Transaction(Transaction {
            failed_auth_attempts: 0,
            ..transaction()
        })
    );
    assert_eq!(
        codec
            .encode(SchemaKind::Transaction, "transactions", &transaction())
            .unwrap(),
        tx_bytes
    );
    let v_bytes: &[u8] = include_bytes!("fixtures/verdict.fastavro.bin");
    assert_eq!(
        codec
            .encode(SchemaKind::Verdict, "verdicts", &verdict())
            .unwrap(),
        v_bytes
    );
    let back: Verdict = codec.decode_as(SchemaKind::Verdict, v_bytes).unwrap();
    assert_eq!(back, verdict());
}

/// A schema-registry stand-in: serves `/schemas/ids/{id}` and `/subjects/{s}/versions` from
/// memory for `requests` requests, and records the subjects registered.
fn registry_stand_in(
    requests: usize,
) -> (
    String,
    std::thread::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let subjects = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = subjects.clone();
    let handle = std::thread::spawn(move || {
        let mut by_id: Vec<String> = Vec::new();
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut content_length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).unwrap();
            let path = request_line.split_whitespace().nth(1).unwrap().to_string();
            let (status, reply) = if request_line.starts_with("POST") && path.ends_with("/versions")
            {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                by_id.push(v["schema"].as_str().unwrap().to_string());
                let subject = path
                    .trim_start_matches("/subjects/")
                    .trim_end_matches("/versions");
                seen.lock().unwrap().push(subject.to_string());
                (
                    "200 OK",
                    serde_json::json!({ "id": by_id.len() + 100 }).to_string(),
                )
            } else if let Some(id) = path.strip_prefix("/schemas/ids/") {
                let id: usize = id.parse().unwrap();
                match by_id.get(id.wrapping_sub(101)) {
                    Some(s) => ("200 OK", serde_json::json!({ "schema": s }).to_string()),
                    None => ("404 Not Found", "{\"error_code\":40403}".to_string()),
                }
            } else {
                ("404 Not Found", "{}".to_string())
            };
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
    });
    (url, handle, subjects)
}

#[test]
fn confluent_framing_round_trips_through_a_registry() {
    let (url, _server, subjects) = registry_stand_in(6);
    let writer = Codec::with_registry(&url, SubjectStrategy::Topic);
    let tx = transaction();
    let bytes = writer
        .encode(SchemaKind::Transaction, "transactions", &tx)
        .unwrap();
    assert_eq!(bytes[0], 0);
    assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), 101);
    // The id is cached: a second encode makes no request.
    let again = writer
        .encode(SchemaKind::Transaction, "transactions", &tx)
        .unwrap();
    assert_eq!(bytes, again);

    // A fresh reader fetches schema 101 from the registry and resolves it.
    assert_eq!(*subjects.lock().unwrap(), vec!["transactions-value"]);
    let reader = Codec::with_registry(&url, SubjectStrategy::Topic);
    assert_eq!(
        reader.decode_event(&bytes).unwrap(),
        Event::Transaction(tx.clone())
    );
    assert_eq!(reader.decode_event(&bytes).unwrap(), Event::Transaction(tx));
    // An unknown id is an error naming the registry, not a panic.
    let err = reader.decode_event(&[0, 0, 0, 0, 55, 2]).unwrap_err();
    assert_eq!(err.kind(), "registry_error", "{err}");
}

#[test]
fn subjects_follow_the_configured_naming_strategy() {
    let (url, server, subjects) = registry_stand_in(3);
    for strategy in ["topic", "record", "topic-record"] {
        let codec = Codec::with_registry(&url, SubjectStrategy::parse(strategy).unwrap());
        let bytes = codec
            .encode(SchemaKind::Verdict, "verdicts", &verdict())
            .unwrap();
        assert_eq!(bytes[0], 0, "Confluent framing");
    }
    server.join().unwrap();
    assert_eq!(
        *subjects.lock().unwrap(),
        vec![
            "verdicts-value",
            "riskstream.v1.Verdict",
            "verdicts-riskstream.v1.Verdict"
        ]
    );
    assert_eq!(SubjectStrategy::parse("TopicNameStrategy"), None);
}

/// Verdicts covering every field, branch and array shape the direct encoder writes.
fn verdict_variants() -> Vec<Verdict> {
    let many: Vec<f32> = (0..700).map(|i| (i as f32 - 350.0) * 0.37).collect();
    vec![
        verdict(),
        Verdict {
            event_id: "é-ünïcode-事件".into(),
            event_type: EventType::CaptureSession,
            account_id: String::new(),
            event_time: -1,
            scored_at: i64::MAX,
            decision: Decision::Block,
            friction: Friction::Block,
            scores: vec![
                ModelScore {
                    model: "behavioral".into(),
                    version: "4.0.0".into(),
                    score: 1e-300,
                    shadow: false,
                },
                ModelScore {
                    model: "behavioral_conv".into(),
                    version: "5.0.0-rc1".into(),
                    score: -0.0,
                    shadow: true,
                },
            ],
            reasons: (0..130).map(|i| format!("reason_{i}:+{i}.5")).collect(),
            features: vec![],
            model_inputs: vec![
                ModelInputs {
                    model: "behavioral".into(),
                    version: "4.0.0".into(),
                    values: many.clone(),
                },
                ModelInputs {
                    model: "ato".into(),
                    version: "4.0.0".into(),
                    values: vec![],
                },
            ],
            degraded: true,
            degraded_reasons: vec!["feature_store_unavailable".into(), "x".into()],
            source: SourcePosition {
                topic: "capture-sessions".into(),
                partition: i32::MIN,
                offset: i64::MIN,
            },
            region: "apac".into(),
            transaction_kind: "".into(),
            vendor: "onfido".into(),
            vendor_liveness_score: Some(0.93),
            vendor_face_match_score: Some(f64::INFINITY),
        },
        Verdict {
            event_type: EventType::Unknown,
            decision: Decision::Review,
            friction: Friction::ConversationalAgent,
            scores: vec![],
            reasons: vec![],
            model_inputs: vec![],
            features: (0..70)
                .map(|i| FeatureValue {
                    name: format!("f{i}").into(),
                    value: i as f64 * -1.5,
                })
                .collect(),
            vendor_liveness_score: None,
            vendor_face_match_score: Some(0.0),
            ..verdict()
        },
        Verdict {
            decision: Decision::Allow,
            friction: Friction::None,
            ..verdict()
        },
        Verdict {
            friction: Friction::KnowledgeQuiz,
            ..verdict()
        },
        Verdict {
            friction: Friction::HumanReview,
            ..verdict()
        },
    ]
}

#[test]
fn the_direct_verdict_encoder_writes_what_apache_avro_writes() {
    let codec = Codec::registry_free();
    for v in verdict_variants() {
        let by_serde = codec.encode(SchemaKind::Verdict, "verdicts", &v).unwrap();
        let mut direct = Vec::new();
        codec
            .encode_verdict_into("verdicts", &v, &mut direct)
            .unwrap();
        assert_eq!(direct, by_serde, "verdict {}", v.event_id);
        let back: Verdict = codec.decode_as(SchemaKind::Verdict, &direct).unwrap();
        assert_eq!(back, v);
    }
}

#[test]
fn the_direct_verdict_encoder_knows_every_field_of_the_schema_in_order() {
    assert_eq!(
        field_names(SchemaKind::Verdict),
        crate::verdict_body::FIELDS
    );
}

/// A small deterministic generator of varied events (xorshift; no dependency).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn string(&mut self) -> String {
        let alphabet = ["a", "Z", "9", "-", "é", "事", "🙂", " "];
        (0..self.below(12))
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }
    fn long(&mut self) -> i64 {
        match self.below(4) {
            0 => self.next() as i64,
            1 => -(self.below(1000) as i64),
            _ => self.below(1 << 42) as i64,
        }
    }
    fn int(&mut self) -> i32 {
        self.long() as i32
    }
    fn double(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 3.0 - 1.0
    }
    fn device(&mut self) -> Device {
        Device {
            fingerprint_hash: self.string(),
            platform: [
                Platform::Unknown,
                Platform::Ios,
                Platform::Android,
                Platform::Web,
            ][self.below(4) as usize],
            app_version: self.string(),
            emulator: self.below(2) == 1,
            rooted: self.below(2) == 1,
            ip_address: self.string(),
            ip_country: self.string(),
        }
    }
    fn capture(&mut self) -> CaptureSession {
        CaptureSession {
            event_id: self.string(),
            account_id: self.string(),
            event_time: self.long(),
            region: self.string(),
            country: self.string(),
            device: self.device(),
            session_id: self.string(),
            document: (self.below(2) == 1).then(|| Document {
                doc_hash: self.string(),
                doc_type: crate::event_body::DOCUMENT_TYPES[self.below(5) as usize],
                issuing_country: self.string(),
            }),
            vendor: VendorResult {
                vendor: self.string(),
                liveness_score: self.double(),
                face_match_score: self.double(),
            },
            injection: InjectionSignals {
                virtual_camera: self.below(2) == 1,
                injection_detected: self.below(2) == 1,
                screen_replay_score: self.double(),
            },
            telemetry: (0..[0, 1, 48, 200][self.below(4) as usize])
                .map(|_| InteractionEvent {
                    kind: crate::event_body::INTERACTION_KINDS[self.below(10) as usize],
                    dt_ms: self.int(),
                    x: (self.below(2) == 1).then(|| self.int()),
                    y: (self.below(2) == 1).then(|| self.int()),
                    key_class: crate::event_body::KEY_CLASSES[self.below(5) as usize],
                })
                .collect(),
            steps: (0..self.below(6))
                .map(|_| StepDuration {
                    step: self.string(),
                    duration_ms: self.int(),
                })
                .collect(),
        }
    }
    fn transaction(&mut self) -> Transaction {
        Transaction {
            event_id: self.string(),
            account_id: self.string(),
            event_time: self.long(),
            region: self.string(),
            country: self.string(),
            device: self.device(),
            kind: TransactionKind::ALL[self.below(12) as usize],
            amount: (self.below(2) == 1).then(|| Amount {
                asset: self.string(),
                value_minor: self.long(),
                decimals: self.int(),
                usd_cents: self.long(),
            }),
            destination: (self.below(2) == 1).then(|| Destination {
                address_hash: self.string(),
                first_seen: self.below(2) == 1,
            }),
            channel: [Channel::Unknown, Channel::App, Channel::Web, Channel::Api]
                [self.below(4) as usize],
            session_age_s: self.long(),
            failed_auth_attempts: self.int(),
        }
    }
}

/// The body as the direct reader sees it, and as apache-avro does (the path for earlier schema
/// versions): both errors, or the same event.
fn both_readings(codec: &Codec, payload: &[u8]) -> (Result<Event, String>, Result<Event, String>) {
    let Ok((located, body)) = codec.locate(payload) else {
        panic!("test payloads carry our header")
    };
    let kind = located.kind();
    let direct = match kind {
        SchemaKind::CaptureSession => {
            crate::event_body::capture_session(body).and_then(|(e, rest)| {
                rest.is_empty()
                    .then_some(Event::CaptureSession(e))
                    .ok_or("trailing".into())
            })
        }
        _ => crate::event_body::transaction(body).and_then(|(e, rest)| {
            rest.is_empty()
                .then_some(Event::Transaction(e))
                .ok_or("trailing".into())
        }),
    };
    let generic = match kind {
        SchemaKind::CaptureSession => codec.read(&located, body).map(Event::CaptureSession),
        _ => codec.read(&located, body).map(Event::Transaction),
    }
    .map_err(|e| e.to_string());
    (direct, generic)
}

#[test]
fn the_direct_event_reader_reads_what_apache_avro_reads() {
    let codec = Codec::registry_free();
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for i in 0..600 {
        let (payload, event) = if i % 2 == 0 {
            let e = g.capture();
            let p = codec.encode(SchemaKind::CaptureSession, "t", &e).unwrap();
            (p, Event::CaptureSession(e))
        } else {
            let e = g.transaction();
            let p = codec.encode(SchemaKind::Transaction, "t", &e).unwrap();
            (p, Event::Transaction(e))
        };
        let (direct, generic) = both_readings(&codec, &payload);
        assert_eq!(direct.as_ref().unwrap(), &event, "event {i}");
        assert_eq!(generic.as_ref().unwrap(), &event, "event {i}");
        // Corrupted copies: a byte changed, or cut short. Same answer from both readers.
        for j in 0..20 {
            let mut bad = payload.clone();
            let at = 10 + g.below((bad.len() - 10) as u64) as usize;
            if j % 4 == 0 {
                bad.truncate(at);
            } else {
                bad[at] = g.next() as u8;
            }
            let (direct, generic) = both_readings(&codec, &bad);
            match (&direct, &generic) {
                // Compared as printed: a corrupted score may read as NaN in both.
                (Ok(a), Ok(b)) => assert_eq!(
                    format!("{a:?}"),
                    format!("{b:?}"),
                    "event {i} corruption {j}"
                ),
                (Err(_), Err(_)) => {}
                _ => panic!("event {i} corruption {j}: direct {direct:?}, apache-avro {generic:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12_000);
}

#[test]
fn the_direct_event_reader_knows_every_field_of_the_schemas_in_order() {
    for (kind, fields) in [
        (
            SchemaKind::CaptureSession,
            crate::event_body::CAPTURE_SESSION_FIELDS,
        ),
        (
            SchemaKind::Transaction,
            crate::event_body::TRANSACTION_FIELDS,
        ),
    ] {
        assert_eq!(field_names(kind), fields, "{kind:?}");
    }
}

/// The top-level field names of `kind`'s current schema, in order.
fn field_names(kind: SchemaKind) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(kind.source()).unwrap();
    schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

/// The seed inputs of the fuzz targets (`fuzz/`): valid payloads of each kind.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let codec = Codec::registry_free();
    let mut seeds = Vec::new();
    let broker = 1_767_225_600_000_i64.to_le_bytes();
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    let events: Vec<Event> = [
        Event::CaptureSession(capture()),
        Event::Transaction(transaction()),
    ]
    .into_iter()
    .chain((0..6).map(|i| {
        if i % 2 == 0 {
            Event::CaptureSession(g.capture())
        } else {
            Event::Transaction(g.transaction())
        }
    }))
    .collect();
    for e in &events {
        let payload = match e {
            Event::CaptureSession(c) => codec.encode(SchemaKind::CaptureSession, "t", c),
            Event::Transaction(t) => codec.encode(SchemaKind::Transaction, "t", t),
        }
        .unwrap();
        seeds.push(("event", [&broker[..], &payload].concat()));
    }
    for v in verdict_variants() {
        seeds.push((
            "verdict",
            codec.encode(SchemaKind::Verdict, "v", &v).unwrap(),
        ));
    }
    for (i, kind) in LabelKind::ALL.into_iter().enumerate() {
        let label = Label {
            event_id: (i % 2 == 0).then(|| format!("evt-{i}")),
            account_id: (i % 3 != 0).then(|| format!("acct-{i}")),
            kind,
            source: "chargeback-feed".into(),
            label_time: 1_767_225_600_000 + i as i64,
        };
        seeds.push((
            "label",
            codec.encode(SchemaKind::Label, "l", &label).unwrap(),
        ));
    }
    for kind in SchemaKind::ALL {
        seeds.push(("canonical", kind.source().as_bytes().to_vec()));
    }
    seeds
}

/// The fuzz targets' oracles (`crate::fuzzing`) hold on their seeds, on corrupted copies of
/// them, and on every input fuzzing found (`fuzz/regressions/<target>/`): they stay compiled and
/// true without a fuzzer. With `RISKSTREAM_WRITE_FUZZ_SEEDS=<dir>` the seeds are also written
/// there, one directory per target (what `scripts/fuzz` starts from).
#[test]
fn the_fuzz_oracles_hold_on_seeds_corruptions_and_found_inputs() {
    let oracle = |target: &str| -> fn(&[u8]) {
        match target {
            "event" => crate::fuzzing::event,
            "label" => crate::fuzzing::label,
            "verdict" => crate::fuzzing::verdict,
            "canonical" => crate::fuzzing::canonical,
            other => panic!("no fuzz target {other}"),
        }
    };
    let seeds = fuzz_seeds();
    if let Some(dir) = std::env::var_os("RISKSTREAM_WRITE_FUZZ_SEEDS") {
        for (i, (target, bytes)) in seeds.iter().enumerate() {
            let dir = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i:03}")), bytes).unwrap();
        }
    }
    let codec = Codec::registry_free();
    let mut decoded = std::collections::HashMap::<&str, usize>::new();
    let mut g = Gen(0x5851_f42d_4c95_7f2d);
    for (target, seed) in &seeds {
        let check = oracle(target);
        check(seed);
        let ok = match *target {
            "event" => codec.decode_event(&seed[8..]).is_ok(),
            "label" => codec.decode_label(seed).is_ok(),
            "verdict" => codec
                .decode_as::<Verdict>(SchemaKind::Verdict, seed)
                .is_ok(),
            _ => {
                crate::canonical::parsing_canonical_form(std::str::from_utf8(seed).unwrap()).is_ok()
            }
        };
        *decoded.entry(target).or_default() += ok as usize;
        for j in 0..200 {
            let mut bad = seed.clone();
            let at = g.below(bad.len() as u64) as usize;
            match j % 4 {
                0 => bad.truncate(at),
                1 => bad.insert(at, g.next() as u8),
                _ => bad[at] = g.next() as u8,
            }
            check(&bad);
        }
    }
    assert!(
        decoded["event"] >= 2,
        "the hand-made events are valid seeds"
    );
    assert_eq!(decoded["verdict"], verdict_variants().len());
    assert_eq!(decoded["label"], LabelKind::ALL.len());
    assert_eq!(decoded["canonical"], SchemaKind::ALL.len());

    let found = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for target in ["event", "label", "verdict", "canonical"] {
        let Ok(files) = std::fs::read_dir(found.join(target)) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            oracle(target)(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    eprintln!("{replayed} inputs found by fuzzing replayed");
}

/// `payload` with the `len` bytes right after the first occurrence of `marker` replaced by
/// `with`.
fn splice(payload: &[u8], marker: &[u8], len: usize, with: &[u8]) -> Vec<u8> {
    let at = payload
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in payload")
        + marker.len();
    [&payload[..at], with, &payload[at + len..]].concat()
}

/// One case per kind of hostile input the reliability issue names, each refused with its
/// dead-letter kind and a reason that names what is wrong (the end-to-end tests send the
/// topic-contract, null-value, amount, event-age and oversized cases through a worker).
#[test]
fn one_case_per_kind_of_hostile_input_is_refused_with_its_reason() {
    let codec = Codec::registry_free();
    let tx = |f: &dyn Fn(&mut Transaction)| {
        let mut t = transaction();
        t.device.ip_country = "ZQ".into(); // a marker just before the kind enum
        f(&mut t);
        codec.encode(SchemaKind::Transaction, "t", &t).unwrap()
    };
    let cs = |f: &dyn Fn(&mut CaptureSession)| {
        let mut c = capture();
        c.injection.screen_replay_score = 0.125; // a marker just before the telemetry count
        f(&mut c);
        codec.encode(SchemaKind::CaptureSession, "c", &c).unwrap()
    };
    let good = tx(&|_| {});
    let session = cs(&|_| {});
    let replay_score = 0.125f64.to_le_bytes();
    let big = cs(&|c| {
        c.telemetry = std::iter::repeat_n(c.telemetry.clone(), 150_000)
            .flatten()
            .collect()
    });
    let kind_byte = {
        let at = good.windows(3).position(|w| w == b"\x04ZQ").unwrap() + 3;
        good[at]
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "truncated",
            good[..good.len() - 4].to_vec(),
            "bad_avro_body",
            "",
        ),
        (
            "truncated header",
            good[..6].to_vec(),
            "truncated_header",
            "single-object",
        ),
        (
            "unknown fingerprint",
            splice(&good, &[0xC3, 0x01], 8, &[7; 8]),
            "unknown_fingerprint",
            "0707",
        ),
        (
            "not ours: a verdict",
            codec.encode(SchemaKind::Verdict, "v", &verdict()).unwrap(),
            "wrong_record_type",
            "Verdict",
        ),
        (
            "huge declared length",
            [
                &good[..10],
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            ]
            .concat(),
            "bad_avro_body",
            "",
        ),
        (
            "huge declared count",
            splice(&session, &replay_score, 1, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            "bad_avro_body",
            "past the end of data",
        ),
        (
            "invalid UTF-8",
            splice(&good, &good[..11], 2, &[0xff, 0xfe]),
            "bad_avro_body",
            "UTF-8",
        ),
        (
            "enum index out of range",
            splice(&good, b"\x04ZQ", 1, &[0x78]),
            "bad_avro_body",
            "enum index 60",
        ),
        (
            "union index out of range",
            splice(&good, b"\x04ZQ", 2, &[kind_byte, 0x0a]),
            "bad_avro_body",
            "union index 5",
        ),
        (
            "NaN score",
            cs(&|c| c.vendor.liveness_score = f64::NAN),
            "validation",
            "vendor.liveness_score",
        ),
        (
            "infinite score",
            cs(&|c| c.vendor.face_match_score = f64::INFINITY),
            "validation",
            "vendor.face_match_score",
        ),
        (
            "negative score",
            cs(&|c| c.injection.screen_replay_score = -0.5),
            "validation",
            "injection.screen_replay_score",
        ),
        (
            "negative amount",
            tx(&|t| t.amount.as_mut().unwrap().value_minor = -1),
            "validation",
            "must not be negative",
        ),
        (
            "negative failed sign-in attempts",
            tx(&|t| t.failed_auth_attempts = -1),
            "validation",
            "failed_auth_attempts",
        ),
        (
            "absurd failed sign-in attempts",
            tx(&|t| t.failed_auth_attempts = i32::MAX),
            "validation",
            "failed_auth_attempts",
        ),
        (
            "absurd amount",
            tx(&|t| t.amount.as_mut().unwrap().usd_cents = i64::MAX),
            "validation",
            "--max-amount-usd",
        ),
        (
            "absurd decimals",
            tx(&|t| t.amount.as_mut().unwrap().decimals = 99),
            "validation",
            "amount.decimals",
        ),
        (
            "event time 0",
            tx(&|t| t.event_time = 0),
            "validation",
            "event_time",
        ),
        (
            "negative event time",
            tx(&|t| t.event_time = -86_400_000),
            "validation",
            "event_time",
        ),
        (
            "negative telemetry time",
            cs(&|c| c.telemetry[1].dt_ms = -5),
            "validation",
            "telemetry.dt_ms",
        ),
        (
            "overlong string",
            tx(&|t| t.country = "x".repeat(1025)),
            "validation",
            "--max-string-bytes",
        ),
        ("oversized record", big, "oversized", "--max-record-bytes"),
        (
            "trailing bytes",
            [&good[..], b"xx"].concat(),
            "trailing_bytes",
            "2 trailing",
        ),
        (
            "empty event id",
            tx(&|t| t.event_id.clear()),
            "validation",
            "event_id",
        ),
        (
            "empty account id",
            tx(&|t| t.account_id.clear()),
            "validation",
            "account_id",
        ),
        (
            "empty device fingerprint",
            tx(&|t| t.device.fingerprint_hash.clear()),
            "validation",
            "device.fingerprint_hash",
        ),
    ];
    for (name, payload, kind, says) in &cases {
        let err = codec
            .decode_event(payload)
            .expect_err(&format!("{name}: decoded"));
        if !kind.is_empty() {
            assert_eq!(err.kind(), *kind, "{name}: {err}");
        }
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
    // The clock checks (the worker runs them with the record's broker timestamp).
    let now = 1_800_000_000_000;
    let at = |event_time: i64| {
        let mut t = transaction();
        t.event_time = event_time;
        Event::Transaction(t)
    };
    let bounds = crate::types::Bounds::default();
    let future = at(now + 2 * 3_600_000).validate_at(now, Some(now), &bounds);
    assert!(future
        .unwrap_err()
        .to_string()
        .contains("--max-future-skew-ms"));
    let past = at(now - 31 * 86_400_000).validate_at(now, Some(now), &bounds);
    assert!(past.unwrap_err().to_string().contains("--max-event-age-ms"));
    assert!(
        at(now - 31 * 86_400_000)
            .validate_at(now, Some(now - 30 * 86_400_000), &bounds)
            .is_ok(),
        "an old record with an old broker timestamp (a replay) passes"
    );
    // And the untouched records decode: the cases are what made them fail.
    assert!(codec.decode_event(&good).is_ok());
    assert!(codec.decode_event(&session).is_ok());
}
