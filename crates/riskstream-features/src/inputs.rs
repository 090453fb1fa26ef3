//! Model inputs: every named value a model may take, computed from an event and its store
//! features. Serving (the pipeline) and training data (`riskstream simulate --output`) both
//! build rows here, so a model sees exactly the features it was trained on.

use riskstream_events::{CaptureSession, Event, InteractionKind, Transaction, TransactionKind};

use crate::catalogue::{
    store_features, FeatureDef, StoreFeatures, FAILED_CHECK_BELOW, N_STORE_FEATURES,
};

/// Features computed from the event itself (no state), after the store features in [`input_names`] order.
pub const EVENT_FEATURES: [FeatureDef; 29] = [
    FeatureDef {
        name: "device_emulator",
        entity: "event",
        window: "-",
        group: "event",
        meaning: "1 if client emulator detection fired.",
    },
    FeatureDef {
        name: "device_rooted",
        entity: "event",
        window: "-",
        group: "event",
        meaning: "1 if the device is rooted / jailbroken.",
    },
    FeatureDef {
        name: "ip_country_mismatch",
        entity: "event",
        window: "-",
        group: "event",
        meaning: "1 if the IP's country differs from the account's country.",
    },
    FeatureDef {
        name: "platform_web",
        entity: "event",
        window: "-",
        group: "event",
        meaning: "1 for the web platform.",
    },
    FeatureDef {
        name: "vendor_liveness",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Vendor liveness score.",
    },
    FeatureDef {
        name: "vendor_face_match",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Vendor face-match score.",
    },
    FeatureDef {
        name: "virtual_camera",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "1 if a virtual camera was detected.",
    },
    FeatureDef {
        name: "injection_detected",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "1 if frame injection was detected.",
    },
    FeatureDef {
        name: "screen_replay_score",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Screen-replay probability.",
    },
    FeatureDef {
        name: "tel_events",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Number of interaction events.",
    },
    FeatureDef {
        name: "tel_dt_log_mean",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Mean of ln(1 + dt_ms) between interactions.",
    },
    FeatureDef {
        name: "tel_dt_log_std",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Standard deviation of ln(1 + dt_ms): humans are irregular.",
    },
    FeatureDef {
        name: "tel_paste_frac",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Fraction of interactions that are pastes.",
    },
    FeatureDef {
        name: "tel_key_frac",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Fraction of interactions that are key events.",
    },
    FeatureDef {
        name: "tel_pointer_straightness",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Net displacement / path length of pointer moves (1 = ruler-straight).",
    },
    FeatureDef {
        name: "steps_total_log_s",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "ln(1 + total seconds spent in the capture steps).",
    },
    FeatureDef {
        name: "steps_min_s",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Shortest step, seconds.",
    },
    FeatureDef {
        name: "tel_modality_switch_frac",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Fraction of consecutive interactions that switch between typing, pointer and paste: people act in runs (type a field, then move the pointer), so few switch; a bot drawing each action on its own switches about every other step.",
    },
    FeatureDef {
        name: "tel_key_unpaired_frac",
        entity: "capture",
        window: "-",
        group: "event",
        meaning: "Fraction of key downs not followed by a key up (the next key event is another key down): a hand presses, then releases; replayed key events drawn one by one break the pairs.",
    },
    FeatureDef {
        name: "tx_money_out",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "1 for transfer out, withdrawal or card payment.",
    },
    FeatureDef {
        name: "tx_credential_change",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "1 for password, MFA, e-mail, API-key or address changes.",
    },
    FeatureDef {
        name: "tx_login",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "1 for a login.",
    },
    FeatureDef {
        name: "tx_amount_usd_log",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "ln(1 + notional USD).",
    },
    FeatureDef {
        name: "tx_amount_usd",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "Notional USD (for policy amount bands; models should prefer the log).",
    },
    FeatureDef {
        name: "tx_dest_first_seen",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "1 if the destination was never used by the account.",
    },
    FeatureDef {
        name: "tx_session_age_log_s",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "ln(1 + seconds since the session began).",
    },
    FeatureDef {
        name: "tx_channel_api",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "1 if the action came through the API.",
    },
    FeatureDef {
        name: "tx_amount_vs_24h",
        entity: "transaction",
        window: "24h",
        group: "event",
        meaning: "USD amount / (1 + money-out USD in the previous 24 h).",
    },
    FeatureDef {
        name: "tx_failed_auth_attempts",
        entity: "transaction",
        window: "-",
        group: "event",
        meaning: "Failed password or second-factor attempts in the sign-in before it succeeded (the event's `failed_auth_attempts`; 0 when unknown).",
    },
];

/// Interactions of a capture session given to sequence models (the first ones; shorter
/// sessions are zero-padded at the end).
pub const SEQ_LEN: usize = 48;

/// Values per interaction in the sequence block: (channel, meaning).
pub const SEQ_CHANNELS: [(&str, &str); 5] = [
    ("dt", "ln(1 + ms since the previous interaction)"),
    ("key", "1 if a key down/up"),
    ("pointer", "1 if a pointer move/down/up"),
    ("paste", "1 if a paste"),
    (
        "move",
        "ln(1 + pixels travelled since the previous pointer position)",
    ),
];

/// Number of inputs in the sequence block.
pub const N_SEQ_INPUTS: usize = SEQ_LEN * SEQ_CHANNELS.len();

/// Total number of model inputs: store features, event features, then the telemetry sequence
/// (interaction-major: `tel_seq_00_dt`, `tel_seq_00_key`, …, `tel_seq_47_move`), so a model
/// can reshape the block to `[SEQ_LEN, channels]`.
pub const N_INPUTS: usize = N_STORE_FEATURES + EVENT_FEATURES.len() + N_SEQ_INPUTS;

/// The sequence block's definitions, `tel_seq_<tt>_<channel>`.
fn sequence_defs() -> &'static [FeatureDef] {
    static DEFS: std::sync::LazyLock<Vec<FeatureDef>> = std::sync::LazyLock::new(|| {
        (0..SEQ_LEN)
            .flat_map(|t| {
                SEQ_CHANNELS.iter().map(move |(ch, meaning)| FeatureDef {
                    name: Box::leak(format!("tel_seq_{t:02}_{ch}").into_boxed_str()),
                    entity: "capture session",
                    window: "-",
                    group: "event",
                    meaning,
                })
            })
            .collect()
    });
    &DEFS
}

/// Every input name, in row order.
pub fn input_names() -> impl Iterator<Item = &'static str> {
    input_defs().map(|f| f.name)
}

/// Every input definition, in row order.
pub fn input_defs() -> impl Iterator<Item = &'static FeatureDef> {
    store_features()
        .iter()
        .chain(EVENT_FEATURES.iter())
        .chain(sequence_defs().iter())
}

/// The catalogue as the Markdown table committed in `FEATURES.md` (a test keeps them equal).
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# Feature catalogue\n\nEvery model input, in row order. Generated by `riskstream features`; \
         `crates/riskstream-features/src/catalogue.rs` (store) and `inputs.rs` (event) define them.\n\n\
         | feature | group | entity | window | meaning |\n|---|---|---|---|---|\n",
    );
    for f in store_features().iter().chain(EVENT_FEATURES.iter()) {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            f.name, f.group, f.entity, f.window, f.meaning
        ));
    }
    for (ch, meaning) in SEQ_CHANNELS {
        out.push_str(&format!(
            "| `tel_seq_<tt>_{ch}`, tt = 00…{:02} | event | capture session interaction tt | - | {meaning} |\n",
            SEQ_LEN - 1
        ));
    }
    out
}

/// The row index of a named input.
pub fn input_index(name: &str) -> Option<usize> {
    input_names().position(|n| n == name)
}

fn b(v: bool) -> f32 {
    v as u8 as f32
}

/// Writes the full input row for `event` into `row` (length [`N_INPUTS`]).
pub fn fill_row(event: &Event, store: &StoreFeatures, row: &mut [f32]) {
    debug_assert_eq!(row.len(), N_INPUTS);
    row.fill(0.0);
    row[..N_STORE_FEATURES].copy_from_slice(&store.values);
    let ev = &mut row[N_STORE_FEATURES..];
    let d = event.device();
    let country = match event {
        Event::CaptureSession(c) => &c.country,
        Event::Transaction(t) => &t.country,
    };
    ev[0] = b(d.emulator);
    ev[1] = b(d.rooted);
    ev[2] = b(!d.ip_country.is_empty() && !country.is_empty() && d.ip_country != *country);
    ev[3] = b(d.platform == riskstream_events::Platform::Web);
    match event {
        Event::CaptureSession(c) => {
            fill_capture(c, &mut ev[4..19]);
            fill_sequence(c, &mut ev[EVENT_FEATURES.len()..]);
        }
        Event::Transaction(t) => fill_transaction(t, store, &mut ev[19..29]),
    }
}

/// The sequence block (`out` is zeroed, length [`N_SEQ_INPUTS`]).
fn fill_sequence(c: &CaptureSession, out: &mut [f32]) {
    let mut last: Option<(i32, i32)> = None;
    for (t, e) in c.telemetry.iter().take(SEQ_LEN).enumerate() {
        let v = &mut out[t * SEQ_CHANNELS.len()..(t + 1) * SEQ_CHANNELS.len()];
        v[0] = (1.0 + e.dt_ms.max(0) as f32).ln();
        match e.kind {
            InteractionKind::KeyDown | InteractionKind::KeyUp => v[1] = 1.0,
            InteractionKind::PointerMove
            | InteractionKind::PointerDown
            | InteractionKind::PointerUp => {
                v[2] = 1.0;
                if let (Some(x), Some(y)) = (e.x, e.y) {
                    if let Some((lx, ly)) = last {
                        let d = (((x - lx) as f32).powi(2) + ((y - ly) as f32).powi(2)).sqrt();
                        v[4] = (1.0 + d).ln();
                    }
                    last = Some((x, y));
                }
            }
            InteractionKind::Paste => v[3] = 1.0,
            _ => {}
        }
    }
}

fn fill_capture(c: &CaptureSession, out: &mut [f32]) {
    out[0] = c.vendor.liveness_score as f32;
    out[1] = c.vendor.face_match_score as f32;
    out[2] = b(c.injection.virtual_camera);
    out[3] = b(c.injection.injection_detected);
    out[4] = c.injection.screen_replay_score as f32;
    let n = c.telemetry.len();
    out[5] = n as f32;
    if n > 0 {
        let (mut sum, mut sum_sq, mut pastes, mut keys) = (0f64, 0f64, 0usize, 0usize);
        let mut path = 0f64;
        let mut start: Option<(i32, i32)> = None;
        let mut last: Option<(i32, i32)> = None;
        for t in &c.telemetry {
            let l = (1.0 + t.dt_ms.max(0) as f64).ln();
            sum += l;
            sum_sq += l * l;
            match t.kind {
                InteractionKind::Paste => pastes += 1,
                InteractionKind::KeyDown | InteractionKind::KeyUp => keys += 1,
                InteractionKind::PointerMove => {
                    if let (Some(x), Some(y)) = (t.x, t.y) {
                        if let Some((lx, ly)) = last {
                            path += (((x - lx) as f64).powi(2) + ((y - ly) as f64).powi(2)).sqrt();
                        }
                        start.get_or_insert((x, y));
                        last = Some((x, y));
                    }
                }
                _ => {}
            }
        }
        let mean = sum / n as f64;
        out[6] = mean as f32;
        out[7] = (sum_sq / n as f64 - mean * mean).max(0.0).sqrt() as f32;
        out[8] = pastes as f32 / n as f32;
        out[9] = keys as f32 / n as f32;
        if let (Some((sx, sy)), Some((lx, ly))) = (start, last) {
            let net = (((lx - sx) as f64).powi(2) + ((ly - sy) as f64).powi(2)).sqrt();
            out[10] = if path > 0.0 { (net / path) as f32 } else { 0.0 };
        }
    }
    let (switch, unpaired) = telemetry_structure(&c.telemetry);
    out[13] = switch;
    out[14] = unpaired;
    if !c.steps.is_empty() {
        let total: i64 = c.steps.iter().map(|s| s.duration_ms.max(0) as i64).sum();
        out[11] = (1.0 + total as f64 / 1000.0).ln() as f32;
        out[12] = c
            .steps
            .iter()
            .map(|s| s.duration_ms.max(0))
            .min()
            .unwrap_or(0) as f32
            / 1000.0;
    }
}

/// How the interactions are ordered (`tel_modality_switch_frac`, `tel_key_unpaired_frac`):
/// the share of consecutive pairs that change modality (typing, pointer, paste), and the share
/// of key downs whose next key event is not a key up. 0 and 0 without pairs or key downs.
fn telemetry_structure(telemetry: &[riskstream_events::InteractionEvent]) -> (f32, f32) {
    #[derive(PartialEq, Clone, Copy)]
    enum Modality {
        Keys,
        Pointer,
        Paste,
        Other,
    }
    let modality = |k: InteractionKind| match k {
        InteractionKind::KeyDown | InteractionKind::KeyUp => Modality::Keys,
        InteractionKind::PointerMove
        | InteractionKind::PointerDown
        | InteractionKind::PointerUp => Modality::Pointer,
        InteractionKind::Paste => Modality::Paste,
        _ => Modality::Other,
    };
    // One pass: modality changes between neighbours; a key down is unpaired when the next key
    // event is another key down, or when none follows.
    let (mut switches, mut downs, mut unpaired) = (0usize, 0usize, 0usize);
    let mut previous: Option<Modality> = None;
    let mut open_down = false;
    for e in telemetry {
        let m = modality(e.kind);
        switches += previous.is_some_and(|p| p != m) as usize;
        previous = Some(m);
        match e.kind {
            InteractionKind::KeyDown => {
                unpaired += open_down as usize;
                downs += 1;
                open_down = true;
            }
            InteractionKind::KeyUp => open_down = false,
            _ => {}
        }
    }
    unpaired += open_down as usize;
    let pairs = telemetry.len().saturating_sub(1);
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    (frac(switches, pairs), frac(unpaired, downs))
}

fn fill_transaction(t: &Transaction, store: &StoreFeatures, out: &mut [f32]) {
    out[0] = b(t.kind.moves_money_out());
    out[1] = b(t.kind.is_credential_change());
    out[2] = b(t.kind == TransactionKind::Login);
    let usd = t
        .amount
        .as_ref()
        .map(|a| a.usd_cents as f64 / 100.0)
        .unwrap_or(0.0);
    out[3] = (1.0 + usd).ln() as f32;
    out[4] = usd as f32;
    out[5] = b(t.destination.as_ref().is_some_and(|d| d.first_seen));
    out[6] = (1.0 + t.session_age_s.max(0) as f64).ln() as f32;
    out[7] = b(t.channel == riskstream_events::Channel::Api);
    out[8] = (usd / (1.0 + store.values[crate::catalogue::velocity(2, 0, 1)] as f64)) as f32;
    out[9] = t.failed_auth_attempts.max(0) as f32;
}

/// What the feature store needs from an event.
pub fn facts(event: &Event) -> crate::EventFacts<'_> {
    let device = event.device();
    let (kind, country, document, destination) = match event {
        Event::CaptureSession(c) => {
            let failed = c.vendor.liveness_score < FAILED_CHECK_BELOW
                || c.vendor.face_match_score < FAILED_CHECK_BELOW;
            let document = c.document.as_ref().map_or("", |d| d.doc_hash.as_str());
            (
                crate::FactKind::CaptureSession {
                    failed_check: failed,
                },
                &c.country,
                document,
                "",
            )
        }
        Event::Transaction(t) => {
            let usd_cents = t.amount.as_ref().map_or(0, |a| a.usd_cents);
            let destination = t
                .destination
                .as_ref()
                .map_or("", |d| d.address_hash.as_str());
            (
                crate::FactKind::Transaction {
                    kind: t.kind,
                    usd_cents,
                },
                &t.country,
                "",
                destination,
            )
        }
    };
    crate::EventFacts {
        event_id: event.event_id(),
        account_id: event.account_id(),
        device_id: &device.fingerprint_hash,
        ip: &device.ip_address,
        country: if device.ip_country.is_empty() {
            country
        } else {
            &device.ip_country
        },
        document,
        destination,
        event_time: event.event_time(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_md_is_the_generated_catalogue() {
        let committed = include_str!("../../../FEATURES.md");
        assert_eq!(
            committed,
            catalogue_markdown(),
            "run `riskstream features > FEATURES.md`"
        );
    }

    #[test]
    fn telemetry_structure_tells_runs_from_actions_drawn_one_by_one() {
        use riskstream_events::{InteractionEvent, KeyClass};
        use InteractionKind::{KeyDown as D, KeyUp as U, Paste as P, PointerMove as M};
        let events = |kinds: &[InteractionKind]| -> Vec<InteractionEvent> {
            kinds
                .iter()
                .map(|k| InteractionEvent {
                    kind: *k,
                    dt_ms: 100,
                    x: None,
                    y: None,
                    key_class: KeyClass::None,
                })
                .collect()
        };
        // A person: typing a field (down/up pairs), then a pointer stroke, then a paste.
        let person = events(&[D, U, D, U, D, U, M, M, M, M, P]);
        let (switch, unpaired) = telemetry_structure(&person);
        assert!((switch - 2.0 / 10.0).abs() < 1e-6, "{switch}");
        assert_eq!(unpaired, 0.0);
        // The same actions drawn one by one.
        let drawn = events(&[D, M, D, P, U, M, D, M, U, M, U]);
        let (switch, unpaired) = telemetry_structure(&drawn);
        assert!((switch - 1.0).abs() < 1e-6, "{switch}");
        // The first down's next key event is the second down; the others' are ups.
        assert!((unpaired - 1.0 / 3.0).abs() < 1e-6, "{unpaired}");
        assert_eq!(telemetry_structure(&[]), (0.0, 0.0));
    }

    #[test]
    fn names_are_unique_and_indexable() {
        let names: Vec<_> = input_names().collect();
        assert_eq!(names.len(), N_INPUTS);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), N_INPUTS, "duplicate input name");
        assert_eq!(
            input_index("tx_amount_usd_log"),
            Some(N_STORE_FEATURES + 22)
        );
        assert_eq!(input_index("steps_min_s"), Some(N_STORE_FEATURES + 16));
        assert_eq!(
            input_index("tel_key_unpaired_frac"),
            Some(N_STORE_FEATURES + 18)
        );
        assert_eq!(input_index("tel_seq_00_dt"), Some(N_STORE_FEATURES + 29));
        assert_eq!(input_index("tel_seq_47_move"), Some(N_INPUTS - 1));
    }
}
