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
        PolicyConfig { behavioral: None, ato: None, large_amount_usd: 10_000.0, degraded_review_usd: 1_000.0 }
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
    pub fn new(config: &PolicyConfig, behavioral_default: Thresholds, ato_default: Thresholds) -> Self {
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
                let usd = tx.amount.as_ref().map(|a| a.usd_cents as f64 / 100.0).unwrap_or(0.0);
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
                    Decision::Challenge if tx.kind == TransactionKind::Login => Friction::KnowledgeQuiz,
                    Decision::Challenge => Friction::StepUpMfa,
                    Decision::Review => Friction::HumanReview,
                    Decision::Block => Friction::Block,
                };
                (decision, friction)
            }
        }
    }
}
