//! Capture sessions: interaction telemetry (human, scripted, imitating), the vendor's checks,
//! injection signals, and the families that live in capture sessions (bots, injection and
//! presentation attacks).

use rand::Rng;
use riskstream_events::*;

use super::{hex, lognormal, normal, shuffle, Scenario, SimEvent, Simulator, COUNTRIES, VENDORS};

/// Who or what operates a capture session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum CaptureMode {
    Human,
    Scripted,
    Imitating,
    /// A person presenting something other than their live face.
    Attack(Attack),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Attack {
    VirtualCamera,
    HookedApi,
    ScreenReplay,
    Deepfake,
}

impl Simulator {
    /// Interaction telemetry. Humans act in runs: a burst of keystrokes or a pointer stroke
    /// (short gaps), then a pause (a long gap). Imitating bots draw from the *same* gap and
    /// action distributions but independently per step (the gaps and actions of a human-like
    /// session, shuffled): their counts, means and spreads match a human's, only the order
    /// gives them away. Scripted bots are fast and regular.
    pub(super) fn telemetry(&mut self, human: bool, imitation: bool) -> Vec<InteractionEvent> {
        let scripted = !human && !imitation;
        let n = if scripted {
            self.rng.gen_range(25..90)
        } else {
            self.rng.gen_range(40..140)
        };
        let paste_p = if human {
            if self.rng.gen_bool(0.15) {
                0.04
            } else {
                0.0
            }
        } else if imitation {
            0.03
        } else {
            0.12
        };
        // (kind, gap) pairs
        let mut steps: Vec<(InteractionKind, i32)> = Vec::with_capacity(n);
        if scripted {
            let (median, sigma) = (
                self.rng.gen_range(20.0..80.0),
                self.rng.gen_range(0.02..0.2),
            );
            for _ in 0..n {
                let r: f64 = self.rng.gen();
                let kind = if r < paste_p {
                    InteractionKind::Paste
                } else if r < 0.5 {
                    InteractionKind::PointerMove
                } else if r < 0.75 {
                    InteractionKind::KeyDown
                } else {
                    InteractionKind::KeyUp
                };
                steps.push((kind, lognormal(&mut self.rng, median, sigma) as i32));
            }
        } else {
            let median = lognormal(&mut self.rng, 160.0, 0.3);
            let (fast, pause) = (median * 0.55, median * 3.0);
            while steps.len() < n {
                let run = self.rng.gen_range(3..12);
                let pointer = self.rng.gen_bool(0.5);
                for j in 0..run {
                    if steps.len() == n {
                        break;
                    }
                    let gap = if j == 0 {
                        lognormal(&mut self.rng, pause, 0.5)
                    } else {
                        lognormal(&mut self.rng, fast, 0.35)
                    };
                    let kind = if self.rng.gen_bool(paste_p) {
                        InteractionKind::Paste
                    } else if pointer {
                        InteractionKind::PointerMove
                    } else if j % 2 == 0 {
                        InteractionKind::KeyDown
                    } else {
                        InteractionKind::KeyUp
                    };
                    steps.push((kind, gap.min(30_000.0) as i32));
                }
            }
            if imitation {
                // Same marginals, no structure: shuffle gaps and actions independently.
                let mut gaps: Vec<i32> = steps.iter().map(|s| s.1).collect();
                let mut kinds: Vec<InteractionKind> = steps.iter().map(|s| s.0).collect();
                shuffle(&mut self.rng, &mut gaps);
                shuffle(&mut self.rng, &mut kinds);
                steps = kinds.into_iter().zip(gaps).collect();
            }
        }
        let curve = if human {
            self.rng.gen_range(4.0..25.0)
        } else if imitation {
            self.rng.gen_range(2.0..12.0)
        } else {
            0.0
        };
        let (mut x, mut y) = (
            self.rng.gen_range(0..400) as f64,
            self.rng.gen_range(0..800) as f64,
        );
        let (dx, dy) = (
            self.rng.gen_range(-12.0..12.0),
            self.rng.gen_range(-12.0..12.0),
        );
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (kind, gap))| {
                let dt_ms = if i == 0 { 0 } else { gap.max(0) };
                match kind {
                    InteractionKind::PointerMove => {
                        x += dx + curve * normal(&mut self.rng);
                        y += dy + curve * normal(&mut self.rng);
                        InteractionEvent {
                            kind,
                            dt_ms,
                            x: Some(x as i32),
                            y: Some(y as i32),
                            key_class: KeyClass::None,
                        }
                    }
                    InteractionKind::KeyDown | InteractionKind::KeyUp => InteractionEvent {
                        kind,
                        dt_ms,
                        x: None,
                        y: None,
                        key_class: [KeyClass::Letter, KeyClass::Digit, KeyClass::Control]
                            [self.rng.gen_range(0..3)],
                    },
                    _ => InteractionEvent {
                        kind,
                        dt_ms,
                        x: None,
                        y: None,
                        key_class: KeyClass::None,
                    },
                }
            })
            .collect()
    }

    pub(super) fn capture(
        &mut self,
        account_id: String,
        country: &str,
        region: &str,
        device: Device,
        mode: CaptureMode,
    ) -> CaptureSession {
        let (human, imitation) = match mode {
            CaptureMode::Human | CaptureMode::Attack(_) => (true, false),
            CaptureMode::Imitating => (false, true),
            CaptureMode::Scripted => (false, false),
        };
        let telemetry = self.telemetry(human, imitation);
        let step_scale = match mode {
            CaptureMode::Human | CaptureMode::Attack(_) => 1.0,
            CaptureMode::Imitating => 0.9,
            CaptureMode::Scripted => 0.2,
        };
        let mut steps: Vec<StepDuration> = ["document_front", "document_back", "selfie"]
            .iter()
            .map(|s| StepDuration {
                step: s.to_string(),
                duration_ms: (lognormal(&mut self.rng, 7_000.0, 0.5) * step_scale) as i32,
            })
            .collect();
        let r = &mut self.rng;
        let (mut liveness, mut face_match) = match mode {
            CaptureMode::Human => (
                if r.gen_bool(0.1) {
                    r.gen_range(0.35..0.75) // poor lighting, old camera
                } else {
                    r.gen_range(0.8..1.0)
                },
                r.gen_range(0.7..1.0),
            ),
            CaptureMode::Imitating => (
                // Replayed or deep-faked well enough to pass most vendor checks.
                if r.gen_bool(0.2) {
                    r.gen_range(0.35..0.75)
                } else {
                    r.gen_range(0.78..1.0)
                },
                r.gen_range(0.7..1.0),
            ),
            CaptureMode::Scripted => (r.gen_range(0.2..0.85), r.gen_range(0.45..0.95)),
            CaptureMode::Attack(_) => (r.gen_range(0.6..1.0), r.gen_range(0.65..1.0)),
        };
        let (mut vc, mut inj, mut replay) = match mode {
            CaptureMode::Human => (r.gen_bool(0.01), false, r.gen_range(0.0..0.2)),
            CaptureMode::Imitating => (r.gen_bool(0.05), r.gen_bool(0.03), r.gen_range(0.0..0.3)),
            CaptureMode::Scripted => (r.gen_bool(0.5), r.gen_bool(0.4), r.gen_range(0.1..0.9)),
            CaptureMode::Attack(_) => (false, false, r.gen_range(0.0..0.25)),
        };
        if mode == CaptureMode::Human && r.gen_bool(0.03) {
            replay = r.gen_range(0.2..0.55); // glare on a glossy document
        }
        if let CaptureMode::Attack(attack) = mode {
            match attack {
                // OBS-style virtual camera feeding a recorded or generated face.
                Attack::VirtualCamera => vc = r.gen_bool(0.85),
                // A hooked camera API: frames injected below the app; flagged by the SDK.
                Attack::HookedApi => inj = r.gen_bool(0.8),
                // A phone filming another screen.
                Attack::ScreenReplay => {
                    replay = if r.gen_bool(0.85) {
                        r.gen_range(0.55..0.98)
                    } else {
                        r.gen_range(0.2..0.55)
                    };
                    liveness = r.gen_range(0.45..0.95);
                }
                // A generated face that the vendor accepts: caught by the channel it comes
                // through (virtual camera, injection, emulator) or by a selfie step too short
                // for a person to frame themselves.
                Attack::Deepfake => {
                    liveness = r.gen_range(0.85..1.0);
                    face_match = r.gen_range(0.85..1.0);
                    vc = r.gen_bool(0.45);
                    inj = r.gen_bool(0.35);
                    if r.gen_bool(0.5) {
                        steps[2].duration_ms = r.gen_range(300..1_200);
                    }
                }
            }
        }
        let mut device = device;
        if let CaptureMode::Attack(Attack::Deepfake | Attack::HookedApi) = mode {
            if self.rng.gen_bool(0.3) {
                device.emulator = true;
            }
        }
        CaptureSession {
            event_id: self.event_id(),
            account_id,
            event_time: self.clock,
            region: region.to_string(),
            country: country.to_string(),
            device,
            session_id: hex(&mut self.rng),
            document: Some(Document {
                doc_hash: hex(&mut self.rng),
                doc_type: [
                    DocumentType::Passport,
                    DocumentType::IdCard,
                    DocumentType::DrivingLicence,
                ][self.rng.gen_range(0..3)],
                issuing_country: country.to_string(),
            }),
            vendor: VendorResult {
                vendor: VENDORS[self.rng.gen_range(0..2)].into(),
                liveness_score: liveness,
                face_match_score: face_match,
            },
            injection: InjectionSignals {
                virtual_camera: vc,
                injection_detected: inj,
                screen_replay_score: replay,
            },
            telemetry,
            steps,
        }
    }

    pub(super) fn legit_capture(
        &mut self,
        account: usize,
        device: Device,
        mut scenario: Scenario,
    ) -> SimEvent {
        let a = &self.accounts[account];
        let (id, country, region) = (a.id.clone(), a.country, a.region);
        let c = self.capture(id, country, region, device, CaptureMode::Human);
        if scenario == Scenario::Legit
            && (c.vendor.liveness_score < 0.8
                || c.device.rooted
                || c.injection.virtual_camera
                || c.injection.screen_replay_score >= 0.2
                || c.telemetry.iter().any(|t| t.kind == InteractionKind::Paste))
        {
            // Bad lighting, an old rooted phone, a webcam app, glare, a password manager.
            scenario = Scenario::LegitUnusual;
        }
        SimEvent {
            event: Event::CaptureSession(c),
            scenario,
        }
    }

    pub(super) fn bot_capture(&mut self, imitation: bool) -> SimEvent {
        let (country, region) = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())];
        // Fresh synthetic accounts; devices come from a farm (imitators) or are emulators.
        let account_id = format!("bot-{}-{}", self.cfg.seed, self.rng.gen_range(0..100_000));
        let device = if imitation && self.rng.gen_bool(0.35) {
            self.farm_devices[self.rng.gen_range(0..self.farm_devices.len())].clone()
        } else {
            let mut d = Self::device_for(&mut self.rng, country);
            d.emulator = self.rng.gen_bool(if imitation { 0.05 } else { 0.6 });
            d.rooted = self.rng.gen_bool(if imitation { 0.06 } else { 0.3 });
            if self.rng.gen_bool(0.4) {
                d.ip_country = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())]
                    .0
                    .to_string();
            }
            d
        };
        let mode = if imitation {
            CaptureMode::Imitating
        } else {
            CaptureMode::Scripted
        };
        let c = self.capture(account_id, country, region, device, mode);
        SimEvent {
            event: Event::CaptureSession(c),
            scenario: if imitation {
                Scenario::BotImitating
            } else {
                Scenario::BotScripted
            },
        }
    }

    /// A presentation or injection attack: at onboarding with a stolen identity (a new
    /// account), or to pass an existing account's re-verification on the attacker's device.
    pub(super) fn start_injection(&mut self) -> SimEvent {
        let attack = [
            Attack::VirtualCamera,
            Attack::HookedApi,
            Attack::ScreenReplay,
            Attack::Deepfake,
        ][self.rng.gen_range(0..4)];
        let (country, region) = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())];
        let mut device = Self::device_for(&mut self.rng, country);
        device.rooted = self.rng.gen_bool(0.25);
        let account_id = if self.rng.gen_bool(0.6) {
            format!("new-{}-{}", self.cfg.seed, self.rng.gen_range(0..1_000_000))
        } else {
            let a = self.pick_account();
            self.accounts[a].id.clone()
        };
        let c = self.capture(
            account_id,
            country,
            region,
            device,
            CaptureMode::Attack(attack),
        );
        SimEvent {
            event: Event::CaptureSession(c),
            scenario: Scenario::Injection,
        }
    }
}
