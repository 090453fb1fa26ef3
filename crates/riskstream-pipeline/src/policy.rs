//! The decision policy: model scores, event kind and amount → decision and friction.

use riskstream_events::{Decision, Event, Friction, TransactionKind};
use riskstream_models::Thresholds;
use serde::{Deserialize, Serialize};

/// Policy settings. Thresholds default to the ones each model's manifest suggests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Overrides the behavioral model's suggested thresholds.
    pub behavioral: Option<Thresholds>,
    /// Overrides the ATO model's suggested thresholds.
    pub ato: Option<Thresholds>,
    /// Money out at or above this (USD) is never simply allowed when the score reaches the
    /// challenge threshold: it goes to review.
    pub large_amount_usd: f64,
    /// Degraded mode (features missing): money out at or above this (USD) goes to review
    /// whatever the score; smaller amounts are decided on the score alone.
    pub degraded_review_usd: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            behavioral: None,
            ato: None,
            large_amount_usd: 10_000.0,
            degraded_review_usd: 1_000.0,
        }
    }
}

/// A resolved policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub behavioral: Thresholds,
    pub ato: Thresholds,
    pub large_amount_usd: f64,
    pub degraded_review_usd: f64,
}

impl Policy {
    pub fn new(
        config: &PolicyConfig,
        behavioral_default: Thresholds,
        ato_default: Thresholds,
    ) -> Self {
        Policy {
            behavioral: config.behavioral.unwrap_or(behavioral_default),
            ato: config.ato.unwrap_or(ato_default),
            large_amount_usd: config.large_amount_usd,
            degraded_review_usd: config.degraded_review_usd,
        }
    }

    /// Decides one event from its champion score. `degraded` = some features were missing.
    pub fn decide(&self, event: &Event, score: f32, degraded: bool) -> (Decision, Friction) {
        match event {
            Event::CaptureSession(_) => {
                let t = &self.behavioral;
                if score >= t.block {
                    (Decision::Block, Friction::Block)
                } else if score >= t.review {
                    (Decision::Review, Friction::HumanReview)
                } else if score >= t.challenge {
                    // Re-verify with a live conversational agent rather than reject outright.
                    (Decision::Challenge, Friction::ConversationalAgent)
                } else {
                    (Decision::Allow, Friction::None)
                }
            }
            Event::Transaction(tx) => {
                let t = &self.ato;
                let usd = tx
                    .amount
                    .as_ref()
                    .map(|a| a.usd_cents as f64 / 100.0)
                    .unwrap_or(0.0);
                let money_out = tx.kind.moves_money_out();
                let mut decision = if score >= t.block {
                    Decision::Block
                } else if score >= t.review {
                    Decision::Review
                } else if score >= t.challenge {
                    if money_out && usd >= self.large_amount_usd {
                        Decision::Review
                    } else {
                        Decision::Challenge
                    }
                } else {
                    Decision::Allow
                };
                if degraded && money_out && usd >= self.degraded_review_usd {
                    decision = decision.max(Decision::Review);
                }
                let friction = match decision {
                    Decision::Allow => Friction::None,
                    Decision::Challenge if tx.kind == TransactionKind::Login => {
                        Friction::KnowledgeQuiz
                    }
                    Decision::Challenge => Friction::StepUpMfa,
                    Decision::Review => Friction::HumanReview,
                    Decision::Block => Friction::Block,
                };
                (decision, friction)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskstream_events::{Amount, Channel, Device, Platform, Transaction};

    fn policy() -> Policy {
        let t = Thresholds {
            challenge: 0.3,
            review: 0.6,
            block: 0.9,
        };
        Policy::new(&PolicyConfig::default(), t, t)
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

    #[test]
    fn score_bands_map_to_decisions_and_friction() {
        let p = policy();
        let w = tx(TransactionKind::Withdrawal, 100);
        assert_eq!(p.decide(&w, 0.1, false), (Decision::Allow, Friction::None));
        assert_eq!(
            p.decide(&w, 0.4, false),
            (Decision::Challenge, Friction::StepUpMfa)
        );
        assert_eq!(
            p.decide(&tx(TransactionKind::Login, 0), 0.4, false),
            (Decision::Challenge, Friction::KnowledgeQuiz)
        );
        assert_eq!(
            p.decide(&w, 0.7, false),
            (Decision::Review, Friction::HumanReview)
        );
        assert_eq!(
            p.decide(&w, 0.95, false),
            (Decision::Block, Friction::Block)
        );
    }

    #[test]
    fn large_amounts_are_reviewed_rather_than_challenged() {
        let p = policy();
        assert_eq!(
            p.decide(&tx(TransactionKind::Withdrawal, 20_000), 0.4, false)
                .0,
            Decision::Review
        );
        assert_eq!(
            p.decide(&tx(TransactionKind::Withdrawal, 20_000), 0.1, false)
                .0,
            Decision::Allow
        );
    }

    #[test]
    fn degraded_policy_reviews_large_money_out_and_decides_small_on_score() {
        let p = policy();
        assert_eq!(
            p.decide(&tx(TransactionKind::Withdrawal, 5_000), 0.0, true)
                .0,
            Decision::Review
        );
        assert_eq!(
            p.decide(&tx(TransactionKind::Withdrawal, 50), 0.0, true).0,
            Decision::Allow
        );
        assert_eq!(
            p.decide(&tx(TransactionKind::Withdrawal, 50), 0.95, true).0,
            Decision::Block
        );
        assert_eq!(
            p.decide(&tx(TransactionKind::Trade, 5_000), 0.0, true).0,
            Decision::Allow
        );
    }
}
