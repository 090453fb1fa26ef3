//! Ground truth for a scored event: which labels apply to it, and whether they make it a
//! positive for a given model.
//!
//! A label names an event (`event_id`), or only an account (`account_id`, no `event_id`). An
//! event's own labels decide for it; otherwise the labels of its account whose `label_time` is
//! at most the *account-label window* after the event decide (`event_time ≤ label_time ≤
//! event_time + window`: the account was established as, say, taken over, within the window after
//! the event). An event with neither is *unlabelled*: by default a negative (no case, no
//! chargeback: what a fraud team assumes once labels have matured), or left out.
//! UNKNOWN labels are ignored.

use std::collections::{BTreeMap, HashMap};

use riskstream_events::{Label, LabelKind};

/// What the labels say about one event for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    Positive,
    Negative,
    /// No label applies (counted as negative or left out, see [`Unlabelled`]).
    Unlabelled,
}

/// What to do with events no label applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unlabelled {
    /// Count them as negatives (default).
    #[default]
    Negative,
    /// Leave them out of every metric.
    Skip,
}

/// The label kinds that count as positive for each model (by model name), with a default for
/// models not named.
#[derive(Debug, Clone, PartialEq)]
pub struct Positives {
    by_model: BTreeMap<String, Vec<LabelKind>>,
    default: Vec<LabelKind>,
}

/// Every label kind that establishes fraud of some sort.
const ALL_FRAUD: [LabelKind; 4] = [
    LabelKind::ConfirmedFraud,
    LabelKind::ConfirmedAto,
    LabelKind::Chargeback,
    LabelKind::Bot,
];

impl Default for Positives {
    /// behavioral: BOT, CONFIRMED_FRAUD; ato: CONFIRMED_ATO, CHARGEBACK, CONFIRMED_FRAUD;
    /// vendor (the vendors' liveness and face-match scores): BOT, CONFIRMED_FRAUD; any other
    /// model: every fraud kind.
    fn default() -> Self {
        let mut by_model = BTreeMap::new();
        by_model.insert(
            "behavioral".to_string(),
            vec![LabelKind::Bot, LabelKind::ConfirmedFraud],
        );
        by_model.insert(
            "ato".to_string(),
            vec![
                LabelKind::ConfirmedAto,
                LabelKind::Chargeback,
                LabelKind::ConfirmedFraud,
            ],
        );
        by_model.insert(
            "vendor".to_string(),
            vec![LabelKind::Bot, LabelKind::ConfirmedFraud],
        );
        Positives {
            by_model,
            default: ALL_FRAUD.to_vec(),
        }
    }
}

/// A `--positive` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("positive label kinds `{spec}`: {why}")]
pub struct PositivesError {
    pub spec: String,
    pub why: String,
}

impl Positives {
    /// Overrides one model's kinds from `MODEL=KIND,KIND` (kinds as the schema's symbols).
    pub fn set(&mut self, spec: &str) -> Result<(), PositivesError> {
        let err = |why: &str| PositivesError {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (model, kinds) = spec
            .split_once('=')
            .ok_or_else(|| err("expected MODEL=KIND,KIND"))?;
        let kinds = kinds
            .split(',')
            .map(|k| LabelKind::parse(k.trim()).ok_or_else(|| err(&format!("unknown kind `{k}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        if kinds.is_empty() || model.trim().is_empty() {
            return Err(err("expected MODEL=KIND,KIND"));
        }
        self.by_model.insert(model.trim().to_string(), kinds);
        Ok(())
    }

    /// The kinds that are positive for `model`.
    pub fn of(&self, model: &str) -> &[LabelKind] {
        self.by_model.get(model).unwrap_or(&self.default)
    }

    /// Every configured model and its kinds, for the report (`*` = any other model).
    pub fn describe(&self) -> BTreeMap<String, Vec<String>> {
        let names = |k: &[LabelKind]| k.iter().map(|k| k.as_str().to_string()).collect();
        let mut out: BTreeMap<String, Vec<String>> = self
            .by_model
            .iter()
            .map(|(m, k)| (m.clone(), names(k)))
            .collect();
        out.insert("*".to_string(), names(&self.default));
        out
    }
}

/// The labels, indexed for the join.
#[derive(Debug, Clone, Default)]
pub struct LabelIndex {
    by_event: HashMap<String, Vec<LabelKind>>,
    /// Per account: (label_time, kind), for labels that name no event.
    by_account: HashMap<String, Vec<(i64, LabelKind)>>,
    window_ms: i64,
    /// Labels read, and of those ignored (UNKNOWN or naming neither event nor account).
    pub read: u64,
    pub ignored: u64,
}

impl LabelIndex {
    /// Indexes `labels`; account labels apply to the account's events up to `window_ms` before
    /// the label's time.
    pub fn new(labels: impl IntoIterator<Item = Label>, window_ms: i64) -> Self {
        let mut index = LabelIndex {
            window_ms,
            ..LabelIndex::default()
        };
        for l in labels {
            index.read += 1;
            if l.kind == LabelKind::Unknown {
                index.ignored += 1;
                continue;
            }
            match (
                l.event_id.filter(|e| !e.is_empty()),
                l.account_id.filter(|a| !a.is_empty()),
            ) {
                (Some(event), _) => index.by_event.entry(event).or_default().push(l.kind),
                (None, Some(account)) => index
                    .by_account
                    .entry(account)
                    .or_default()
                    .push((l.label_time, l.kind)),
                (None, None) => index.ignored += 1,
            }
        }
        index
    }

    /// The truth about event `event_id` of `account` at `event_time` for a model whose positive
    /// kinds are `positives`.
    pub fn truth(
        &self,
        event_id: &str,
        account: &str,
        event_time: i64,
        positives: &[LabelKind],
    ) -> Truth {
        let decide = |mut kinds: std::slice::Iter<'_, LabelKind>| {
            if kinds.any(|k| positives.contains(k)) {
                Truth::Positive
            } else {
                Truth::Negative
            }
        };
        if let Some(kinds) = self.by_event.get(event_id) {
            return decide(kinds.iter());
        }
        let applying: Vec<LabelKind> = self
            .by_account
            .get(account)
            .into_iter()
            .flatten()
            .filter(|(t, _)| *t >= event_time && *t - event_time <= self.window_ms)
            .map(|(_, k)| *k)
            .collect();
        if applying.is_empty() {
            Truth::Unlabelled
        } else {
            decide(applying.iter())
        }
    }
}

/// Parses a duration: `500ms`, `30s`, `15m`, `24h`, `7d`, or plain milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(event: Option<&str>, account: Option<&str>, kind: LabelKind, at: i64) -> Label {
        Label {
            event_id: event.map(str::to_string),
            account_id: account.map(str::to_string),
            kind,
            source: "t".into(),
            label_time: at,
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn event_labels_decide_then_account_labels_within_the_window() {
        let index = LabelIndex::new(
            [
                label(Some("e1"), Some("a"), LabelKind::Bot, 10 * DAY),
                label(Some("e2"), None, LabelKind::Legitimate, 10 * DAY),
                label(None, Some("a"), LabelKind::ConfirmedAto, 10 * DAY),
                label(None, Some("b"), LabelKind::Legitimate, 10 * DAY),
                label(None, None, LabelKind::Bot, 0),
                label(Some("e9"), None, LabelKind::Unknown, 0),
            ],
            7 * DAY,
        );
        assert_eq!((index.read, index.ignored), (6, 2));
        let p = Positives::default();
        let (beh, ato) = (p.of("behavioral"), p.of("ato"));
        // The event's own label decides, whatever its account's labels say.
        assert_eq!(index.truth("e1", "a", 9 * DAY, beh), Truth::Positive);
        assert_eq!(index.truth("e1", "a", 9 * DAY, ato), Truth::Negative);
        assert_eq!(index.truth("e2", "a", 9 * DAY, ato), Truth::Negative);
        // Account label: events up to the window before it.
        assert_eq!(index.truth("x", "a", 3 * DAY, ato), Truth::Positive);
        assert_eq!(index.truth("x", "a", 10 * DAY, ato), Truth::Positive);
        assert_eq!(index.truth("x", "a", 3 * DAY - 1, ato), Truth::Unlabelled);
        assert_eq!(index.truth("x", "a", 10 * DAY + 1, ato), Truth::Unlabelled);
        assert_eq!(index.truth("x", "a", 5 * DAY, beh), Truth::Negative);
        assert_eq!(index.truth("x", "b", 5 * DAY, ato), Truth::Negative);
        assert_eq!(index.truth("x", "c", 5 * DAY, ato), Truth::Unlabelled);
    }

    #[test]
    fn positives_are_configurable_per_model() {
        let mut p = Positives::default();
        assert_eq!(p.of("something-new").len(), 4);
        p.set("ato=CHARGEBACK").unwrap();
        assert_eq!(p.of("ato"), &[LabelKind::Chargeback]);
        assert!(p.set("ato=NOPE").is_err());
        assert!(p.set("ato").is_err());
        assert_eq!(p.describe()["behavioral"], vec!["BOT", "CONFIRMED_FRAUD"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("7d"), Some(7 * DAY));
        assert_eq!(parse_duration_ms("90m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("1500"), Some(1500));
        assert_eq!(parse_duration_ms("2w"), None);
    }
}
