//! The decision policy: an ordered rule table mapping the champion's score, the event's slot
//! and kind, its amount band and whether features were missing to a decision and a friction.
//! Configured in `[policy]` of `serving.toml` (see `models/serving.toml`), reloaded with it.

use riskstream_events::{Decision, Event, Friction, TransactionKind};
use riskstream_models::{Slot, Thresholds};
use serde::Deserialize;

/// `[policy]` as written in `serving.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rules in order; the first that matches decides.
    pub rules: Vec<RuleConfig>,
}

/// One rule. Conditions left out match anything.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Reported as the verdict's last reason code, `policy:<name>`.
    pub name: String,
    pub slot: Option<Slot>,
    /// Transaction kinds (schema symbols, e.g. `WITHDRAWAL`); never matches a capture session.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Amount band, USD: `min_usd <= amount < below_usd`. Events without an amount count as 0.
    pub min_usd: Option<f64>,
    pub below_usd: Option<f64>,
    /// `true`: only when some features were missing; `false`: only when none were.
    pub degraded: Option<bool>,
    /// The champion's score must reach this.
    pub score_at_least: Option<ScoreBound>,
    pub decision: Decision,
    pub friction: Friction,
}

/// A score bound: a number, or one of the champion manifest's suggested thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ScoreBound {
    Value(f32),
    Named(NamedThreshold),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedThreshold {
    Challenge,
    Review,
    Block,
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy has no rules (it would allow everything)")]
    NoRules,
    #[error("policy rule `{rule}`: unknown transaction kind `{kind}`")]
    UnknownKind { rule: String, kind: String },
    #[error("policy rule `{rule}`: a rule with `kinds` can only match slot `ato`")]
    KindsOnCaptureSlot { rule: String },
    #[error("policy rule `{rule}`: min_usd {min} is not below below_usd {below}")]
    EmptyBand { rule: String, min: f64, below: f64 },
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    slot: Option<Slot>,
    kinds: Vec<TransactionKind>,
    min_usd: f64,
    below_usd: f64,
    degraded: Option<bool>,
    score_at_least: Option<ScoreBound>,
    decision: Decision,
    friction: Friction,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// A decision with the rule that made it (`None`: no rule matched, the default ALLOW).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decided<'a> {
    pub decision: Decision,
    pub friction: Friction,
    pub rule: Option<&'a str>,
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Result<Policy, PolicyError> {
        if config.rules.is_empty() {
            return Err(PolicyError::NoRules);
        }
        let rules = config
            .rules
            .iter()
            .map(|r| {
                let kinds = r
                    .kinds
                    .iter()
                    .map(|k| {
                        TransactionKind::parse(k).ok_or_else(|| PolicyError::UnknownKind {
                            rule: r.name.clone(),
                            kind: k.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !kinds.is_empty() && r.slot == Some(Slot::Behavioral) {
                    return Err(PolicyError::KindsOnCaptureSlot {
                        rule: r.name.clone(),
                    });
                }
                let (min_usd, below_usd) = (
                    r.min_usd.unwrap_or(f64::NEG_INFINITY),
                    r.below_usd.unwrap_or(f64::INFINITY),
                );
                if min_usd >= below_usd {
                    return Err(PolicyError::EmptyBand {
                        rule: r.name.clone(),
                        min: min_usd,
                        below: below_usd,
                    });
                }
                Ok(Rule {
                    name: r.name.clone(),
                    slot: r.slot,
                    kinds,
                    min_usd,
                    below_usd,
                    degraded: r.degraded,
                    score_at_least: r.score_at_least,
                    decision: r.decision,
                    friction: r.friction,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { rules })
    }

    /// Decides one event from its champion's score and suggested thresholds.
    /// `degraded` = some features were missing.
    pub fn decide(
        &self,
        event: &Event,
        score: f32,
        thresholds: &Thresholds,
        degraded: bool,
    ) -> Decided<'_> {
        let (slot, kind, usd) = match event {
            Event::CaptureSession(_) => (Slot::Behavioral, None, 0.0),
            Event::Transaction(tx) => (
                Slot::Ato,
                Some(tx.kind),
                tx.amount
                    .as_ref()
                    .map_or(0.0, |a| a.usd_cents as f64 / 100.0),
            ),
        };
        for r in &self.rules {
            let bound = r.score_at_least.map(|b| match b {
                ScoreBound::Value(v) => v,
                ScoreBound::Named(NamedThreshold::Challenge) => thresholds.challenge,
                ScoreBound::Named(NamedThreshold::Review) => thresholds.review,
                ScoreBound::Named(NamedThreshold::Block) => thresholds.block,
            });
            let matches = r.slot.is_none_or(|s| s == slot)
                && (r.kinds.is_empty() || kind.is_some_and(|k| r.kinds.contains(&k)))
                && usd >= r.min_usd
                && usd < r.below_usd
                && r.degraded.is_none_or(|d| d == degraded)
                && bound.is_none_or(|b| score >= b);
            if matches {
                return Decided {
                    decision: r.decision,
                    friction: r.friction,
                    rule: Some(&r.name),
                };
            }
        }
        Decided {
            decision: Decision::Allow,
            friction: Friction::None,
            rule: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskstream_events::{Amount, Channel, Device, Platform, Transaction};

    const T: Thresholds = Thresholds {
        challenge: 0.3,
        review: 0.6,
        block: 0.9,
    };

    /// The committed `models/serving.toml` policy.
    fn policy() -> Policy {
        crate::serving::ServingConfig::parse(crate::serving::DEFAULT_SERVING)
            .unwrap()
            .policy()
            .unwrap()
    }

    fn tx(kind: TransactionKind, usd: i64) -> Event {
        Event::Transaction(Transaction {
            event_id: "e".into(),
            account_id: "a".into(),
            event_time: 1,
            region: String::new(),
            country: String::new(),
            device: Device {
                fingerprint_hash: "d".into(),
                platform: Platform::Ios,
                app_version: String::new(),
                emulator: false,
                rooted: false,
                ip_address: String::new(),
                ip_country: String::new(),
            },
            kind,
            amount: Some(Amount {
                asset: "USD".into(),
                value_minor: usd * 100,
                decimals: 2,
                usd_cents: usd * 100,
            }),
            destination: None,
            channel: Channel::App,
            session_age_s: 0,
        })
    }

    fn decide(p: &Policy, e: &Event, score: f32, degraded: bool) -> (Decision, Friction) {
        let d = p.decide(e, score, &T, degraded);
        (d.decision, d.friction)
    }

    #[test]
    fn score_bands_map_to_decisions_and_friction() {
        let p = policy();
        let w = tx(TransactionKind::Withdrawal, 100);
        assert_eq!(
            decide(&p, &w, 0.1, false),
            (Decision::Allow, Friction::None)
        );
        assert_eq!(
            decide(&p, &w, 0.4, false),
            (Decision::Challenge, Friction::StepUpMfa)
        );
        assert_eq!(
            decide(&p, &tx(TransactionKind::Login, 0), 0.4, false),
            (Decision::Challenge, Friction::KnowledgeQuiz)
        );
        assert_eq!(
            decide(&p, &w, 0.7, false),
            (Decision::Review, Friction::HumanReview)
        );
        assert_eq!(
            decide(&p, &w, 0.95, false),
            (Decision::Block, Friction::Block)
        );
        assert_eq!(
            p.decide(&w, 0.4, &T, false).rule,
            Some("ato_challenge"),
            "the deciding rule is named"
        );
        assert_eq!(p.decide(&w, 0.1, &T, false).rule, None);
    }

    #[test]
    fn large_amounts_are_reviewed_rather_than_challenged() {
        let p = policy();
        let big = tx(TransactionKind::Withdrawal, 20_000);
        assert_eq!(decide(&p, &big, 0.4, false).0, Decision::Review);
        assert_eq!(decide(&p, &big, 0.1, false).0, Decision::Allow);
    }

    #[test]
    fn degraded_policy_reviews_large_money_out_and_decides_small_on_score() {
        let p = policy();
        let w = |usd| tx(TransactionKind::Withdrawal, usd);
        assert_eq!(decide(&p, &w(5_000), 0.0, true).0, Decision::Review);
        assert_eq!(decide(&p, &w(50), 0.0, true).0, Decision::Allow);
        assert_eq!(decide(&p, &w(50), 0.95, true).0, Decision::Block);
        assert_eq!(
            decide(&p, &tx(TransactionKind::Trade, 5_000), 0.0, true).0,
            Decision::Allow
        );
        assert_eq!(decide(&p, &w(5_000), 0.0, false).0, Decision::Allow);
    }

    #[test]
    fn amount_bands_and_numeric_bounds_from_config() {
        let config: PolicyConfig = toml::from_str(
            r#"
            [[rules]]
            name = "mid_band"
            kinds = ["TRANSFER_OUT"]
            min_usd = 1000.0
            below_usd = 5000.0
            score_at_least = 0.2
            decision = "CHALLENGE"
            friction = "CONVERSATIONAL_AGENT"
            "#,
        )
        .unwrap();
        let p = Policy::new(&config).unwrap();
        let t = |usd| tx(TransactionKind::TransferOut, usd);
        assert_eq!(
            decide(&p, &t(2_000), 0.25, false),
            (Decision::Challenge, Friction::ConversationalAgent)
        );
        assert_eq!(decide(&p, &t(5_000), 0.25, false).0, Decision::Allow);
        assert_eq!(decide(&p, &t(999), 0.25, false).0, Decision::Allow);
        assert_eq!(decide(&p, &t(2_000), 0.1, false).0, Decision::Allow);
    }

    #[test]
    fn unknown_kinds_and_empty_bands_are_refused() {
        let bad: PolicyConfig = toml::from_str(
            "[[rules]]\nname = \"x\"\nkinds = [\"WITHDRAWL\"]\ndecision = \"BLOCK\"\nfriction = \"BLOCK\"\n",
        )
        .unwrap();
        assert!(matches!(
            Policy::new(&bad),
            Err(PolicyError::UnknownKind { .. })
        ));
        let empty: PolicyConfig = toml::from_str(
            "[[rules]]\nname = \"x\"\nmin_usd = 5.0\nbelow_usd = 5.0\ndecision = \"BLOCK\"\nfriction = \"BLOCK\"\n",
        )
        .unwrap();
        assert!(matches!(
            Policy::new(&empty),
            Err(PolicyError::EmptyBand { .. })
        ));
        assert!(matches!(
            Policy::new(&PolicyConfig::default()),
            Err(PolicyError::NoRules)
        ));
    }
}
