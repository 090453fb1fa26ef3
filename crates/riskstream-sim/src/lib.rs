//! Synthetic traffic with labelled fraud scenarios, for the demo, benchmarks, tests and
//! training data.
//!
//! Out: a time-ordered stream of [`SimEvent`]s (an [`Event`] plus its ground truth). The same
//! seed gives the same stream. Scenarios (see [`Scenario`]):
//! - legitimate users: logins, trades, deposits, withdrawals to known addresses, occasional
//!   capture sessions; some travel (IP country mismatch), change phones, reset passwords,
//!   paste from password managers, or have rooted devices — legitimate but unusual;
//! - bots in capture sessions: scripted ones (regular timing, straight pointer paths, paste,
//!   emulators, virtual cameras) and imitating ones (human gap and action distributions
//!   without a human's bursts and strokes — only the order of the telemetry gives them
//!   away — fewer device red flags, device farms shared across accounts);
//! - account takeover: a login from a new device, credential changes within minutes, then
//!   withdrawals to new destinations — each step alone also happens legitimately.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use riskstream_events::*;

/// Ground truth of a simulated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Ordinary legitimate activity.
    Legit,
    /// Legitimate but unusual: new phone, travel, password reset, rooted device.
    LegitUnusual,
    /// A scripted bot in a capture session.
    Bot,
    /// A bot imitating human behaviour.
    BotImitating,
    /// A step of an account-takeover sequence.
    Ato,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Legit,
        Scenario::LegitUnusual,
        Scenario::Bot,
        Scenario::BotImitating,
        Scenario::Ato,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Legit => "legit",
            Scenario::LegitUnusual => "legit_unusual",
            Scenario::Bot => "bot",
            Scenario::BotImitating => "bot_imitating",
            Scenario::Ato => "ato",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True for the scenarios a model should catch.
    pub fn is_fraud(self) -> bool {
        matches!(self, Scenario::Bot | Scenario::BotImitating | Scenario::Ato)
    }
}

/// One simulated event with its ground truth.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub event: Event,
    pub scenario: Scenario,
}

impl SimEvent {
    /// The label a case-management system would eventually emit (fraud only).
    pub fn label(&self) -> Option<Label> {
        let kind = match self.scenario {
            Scenario::Bot | Scenario::BotImitating => LabelKind::Bot,
            Scenario::Ato => LabelKind::ConfirmedAto,
            _ => return None,
        };
        Some(Label {
            event_id: Some(self.event.event_id().to_string()),
            account_id: Some(self.event.account_id().to_string()),
            kind,
            source: "simulator".into(),
            label_time: self.event.event_time() + 3_600_000,
        })
    }
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Event time of the first event, epoch ms.
    pub start_ms: i64,
    /// Mean simulated time between consecutive events, ms.
    pub mean_gap_ms: f64,
    /// Number of legitimate accounts.
    pub accounts: usize,
    /// Share of new actions that are bot capture sessions.
    pub bot_share: f64,
    /// Share of new actions that start an account takeover.
    pub ato_share: f64,
}

impl SimConfig {
    /// Defaults scaled to a stream of `events` events.
    pub fn for_events(events: u64, seed: u64) -> Self {
        SimConfig {
            seed,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            mean_gap_ms: 2_000.0,
            accounts: (events as usize / 15).clamp(200, 200_000),
            bot_share: 0.05,
            ato_share: 0.012,
        }
    }
}

struct Account {
    id: String,
    country: &'static str,
    region: &'static str,
    devices: Vec<Device>,
    known_dests: Vec<String>,
}

/// A step scheduled for later (the rest of a sequence).
struct Pending {
    at: i64,
    seq: u64,
    step: Step,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

enum Step {
    /// Legit user on a brand new phone: ordinary activity on it.
    LegitNewDeviceFollowUp {
        account: usize,
        device: Device,
        remaining: u8,
    },
    /// Account takeover in progress, on the attacker's device.
    Ato {
        account: usize,
        device: Device,
        stage: u8,
        dest: String,
    },
}

const COUNTRIES: [(&str, &str); 8] = [
    ("DE", "eu"),
    ("FR", "eu"),
    ("ES", "eu"),
    ("GB", "eu"),
    ("US", "us"),
    ("CA", "us"),
    ("SG", "apac"),
    ("JP", "apac"),
];
const VENDORS: [&str; 2] = ["vendor_a", "vendor_b"];

/// The simulator: an infinite, time-ordered iterator of [`SimEvent`]s.
pub struct Simulator {
    cfg: SimConfig,
    rng: SmallRng,
    clock: i64,
    next_id: u64,
    seq: u64,
    accounts: Vec<Account>,
    farm_devices: Vec<Device>,
    pending: BinaryHeap<Reverse<Pending>>,
}

fn normal(rng: &mut SmallRng) -> f64 {
    // Box-Muller
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn lognormal(rng: &mut SmallRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn shuffle<T>(rng: &mut SmallRng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
}

fn hex(rng: &mut SmallRng) -> String {
    format!("{:016x}", rng.gen::<u64>())
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let mut accounts = Vec::with_capacity(cfg.accounts);
        for i in 0..cfg.accounts {
            let (country, region) = COUNTRIES[rng.gen_range(0..COUNTRIES.len())];
            let mut s = Self::device_for(&mut rng, country);
            if rng.gen_bool(0.04) {
                s.rooted = true; // legitimate power users
            }
            let known_dests = (0..rng.gen_range(1..4)).map(|_| hex(&mut rng)).collect();
            accounts.push(Account {
                id: format!("acct-{}-{i}", cfg.seed),
                country,
                region,
                devices: vec![s],
                known_dests,
            });
        }
        let farm_devices = (0..8)
            .map(|_| {
                let mut d = Self::device_for(&mut rng, "US");
                d.platform = Platform::Android;
                d
            })
            .collect();
        Simulator {
            clock: cfg.start_ms,
            cfg,
            rng,
            next_id: 0,
            seq: 0,
            accounts,
            farm_devices,
            pending: BinaryHeap::new(),
        }
    }

    fn device_for(rng: &mut SmallRng, country: &str) -> Device {
        let platform = [Platform::Ios, Platform::Android, Platform::Web][rng.gen_range(0..3)];
        Device {
            fingerprint_hash: hex(rng),
            platform,
            app_version: format!("7.{}.{}", rng.gen_range(0..10), rng.gen_range(0..5)),
            emulator: false,
            rooted: false,
            ip_address: format!("198.51.{}.{}", rng.gen_range(0..255), rng.gen_range(1..255)),
            ip_country: country.to_string(),
        }
    }

    fn event_id(&mut self) -> String {
        self.next_id += 1;
        format!("ev-{}-{}", self.cfg.seed, self.next_id)
    }

    fn schedule(&mut self, at: i64, step: Step) {
        self.seq += 1;
        self.pending.push(Reverse(Pending {
            at,
            seq: self.seq,
            step,
        }));
    }

    /// The next event in event-time order.
    pub fn next_event(&mut self) -> SimEvent {
        let gap = -self.cfg.mean_gap_ms * self.rng.gen_range(f64::EPSILON..1.0f64).ln();
        self.clock += gap.max(1.0) as i64;
        if let Some(Reverse(p)) = self.pending.peek() {
            if p.at <= self.clock {
                let Reverse(p) = self.pending.pop().expect("peeked");
                return self.run_step(p.at, p.step);
            }
        }
        let r: f64 = self.rng.gen();
        if r < self.cfg.bot_share {
            self.bot_capture()
        } else if r < self.cfg.bot_share + self.cfg.ato_share {
            self.start_ato()
        } else {
            self.legit_action()
        }
    }

    fn pick_account(&mut self) -> usize {
        self.rng.gen_range(0..self.accounts.len())
    }

    fn tx(
        &mut self,
        account: usize,
        device: Device,
        kind: TransactionKind,
        time: i64,
    ) -> Transaction {
        let a = &self.accounts[account];
        Transaction {
            event_id: String::new(),
            account_id: a.id.clone(),
            event_time: time,
            region: a.region.to_string(),
            country: a.country.to_string(),
            device,
            kind,
            amount: None,
            destination: None,
            channel: Channel::App,
            session_age_s: 0,
        }
        .with_id(self.event_id())
    }

    fn amount(&mut self, usd: f64) -> Amount {
        let usd_cents = (usd * 100.0).round().max(1.0) as i64;
        match self.rng.gen_range(0..3) {
            0 => Amount {
                asset: "USD".into(),
                value_minor: usd_cents,
                decimals: 2,
                usd_cents,
            },
            1 => Amount {
                asset: "BTC".into(),
                value_minor: (usd / 60_000.0 * 1e8).round() as i64,
                decimals: 8,
                usd_cents,
            },
            _ => Amount {
                asset: "ETH".into(),
                value_minor: (usd / 3_000.0 * 1e9).round() as i64,
                decimals: 9,
                usd_cents,
            },
        }
    }

    fn legit_action(&mut self) -> SimEvent {
        let account = self.pick_account();
        let time = self.clock;
        let mut scenario = Scenario::Legit;
        let mut device = self.accounts[account].devices
            [self.rng.gen_range(0..self.accounts[account].devices.len())]
        .clone();
        if self.rng.gen_bool(0.06) {
            // Travelling: IP from elsewhere.
            device.ip_country = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())]
                .0
                .to_string();
            scenario = Scenario::LegitUnusual;
        }
        let roll: f64 = self.rng.gen();
        if roll < 0.08 {
            return self.legit_capture(account, device, scenario);
        }
        if roll < 0.12 {
            // A new phone: log in on it now, carry on with it over the next hours.
            let country = self.accounts[account].country;
            let new_device = Self::device_for(&mut self.rng, country);
            self.accounts[account].devices.push(new_device.clone());
            let mut t = self.tx(account, new_device.clone(), TransactionKind::Login, time);
            t.session_age_s = 0;
            let later = time + self.rng.gen_range(60_000..6 * 3_600_000);
            let remaining = self.rng.gen_range(1..4);
            self.schedule(
                later,
                Step::LegitNewDeviceFollowUp {
                    account,
                    device: new_device,
                    remaining,
                },
            );
            return SimEvent {
                event: Event::Transaction(t),
                scenario: Scenario::LegitUnusual,
            };
        }
        let kind = match self.rng.gen_range(0..100) {
            0..=34 => TransactionKind::Login,
            35..=59 => TransactionKind::Trade,
            60..=69 => TransactionKind::Deposit,
            70..=81 => TransactionKind::Withdrawal,
            82..=87 => TransactionKind::CardPayment,
            88..=93 => TransactionKind::TransferOut,
            94..=95 => TransactionKind::PasswordChange,
            96 => TransactionKind::MfaChange,
            97 => TransactionKind::AddressAdd,
            98 => TransactionKind::EmailChange,
            _ => TransactionKind::ApiKeyCreate,
        };
        if kind.is_credential_change() {
            scenario = Scenario::LegitUnusual;
        }
        let mut t = self.tx(account, device, kind, time);
        self.legit_details(account, &mut t, &mut scenario);
        SimEvent {
            event: Event::Transaction(t),
            scenario,
        }
    }

    fn legit_details(&mut self, account: usize, t: &mut Transaction, scenario: &mut Scenario) {
        t.session_age_s = lognormal(&mut self.rng, 600.0, 1.2) as i64;
        if self.rng.gen_bool(0.05) {
            t.channel = Channel::Api;
        } else if t.device.platform == Platform::Web {
            t.channel = Channel::Web;
        }
        match t.kind {
            TransactionKind::Withdrawal
            | TransactionKind::TransferOut
            | TransactionKind::CardPayment
            | TransactionKind::Deposit
            | TransactionKind::Trade => {
                let usd = lognormal(&mut self.rng, 250.0, 1.4);
                t.amount = Some(self.amount(usd));
                if t.kind == TransactionKind::Withdrawal || t.kind == TransactionKind::TransferOut {
                    let known = &self.accounts[account].known_dests;
                    let (dest, first_seen) = if self.rng.gen_bool(0.08) {
                        *scenario = Scenario::LegitUnusual;
                        let d = hex(&mut self.rng);
                        self.accounts[account].known_dests.push(d.clone());
                        (d, true)
                    } else {
                        (known[self.rng.gen_range(0..known.len())].clone(), false)
                    };
                    t.destination = Some(Destination {
                        address_hash: dest,
                        first_seen,
                    });
                }
            }
            _ => {}
        }
    }

    /// Interaction telemetry. Humans act in runs: a burst of keystrokes or a pointer stroke
    /// (short gaps), then a pause (a long gap). Imitating bots draw from the *same* gap and
    /// action distributions but independently per step (the gaps and actions of a human-like
    /// session, shuffled): their counts, means and spreads match a human's, only the order
    /// gives them away. Scripted bots are fast and regular.
    fn telemetry(&mut self, human: bool, imitation: bool) -> Vec<InteractionEvent> {
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

    fn capture(
        &mut self,
        account_id: String,
        country: &str,
        region: &str,
        device: Device,
        human: bool,
        imitation: bool,
    ) -> CaptureSession {
        let telemetry = self.telemetry(human, imitation);
        let step_scale = if human {
            1.0
        } else if imitation {
            0.9
        } else {
            0.2
        };
        let steps = ["document_front", "document_back", "selfie"]
            .iter()
            .map(|s| StepDuration {
                step: s.to_string(),
                duration_ms: (lognormal(&mut self.rng, 7_000.0, 0.5) * step_scale) as i32,
            })
            .collect();
        let liveness = if human {
            if self.rng.gen_bool(0.1) {
                self.rng.gen_range(0.35..0.75)
            } else {
                self.rng.gen_range(0.8..1.0)
            }
        } else if imitation {
            // Replayed or deep-faked well enough to pass most vendor checks.
            if self.rng.gen_bool(0.2) {
                self.rng.gen_range(0.35..0.75)
            } else {
                self.rng.gen_range(0.78..1.0)
            }
        } else {
            self.rng.gen_range(0.2..0.85)
        };
        let face_match = if human || imitation {
            self.rng.gen_range(0.7..1.0)
        } else {
            self.rng.gen_range(0.45..0.95)
        };
        let (vc, inj, replay) = if human {
            (self.rng.gen_bool(0.01), false, self.rng.gen_range(0.0..0.2))
        } else if imitation {
            (
                self.rng.gen_bool(0.05),
                self.rng.gen_bool(0.03),
                self.rng.gen_range(0.0..0.3),
            )
        } else {
            (
                self.rng.gen_bool(0.5),
                self.rng.gen_bool(0.4),
                self.rng.gen_range(0.1..0.9),
            )
        };
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

    fn legit_capture(
        &mut self,
        account: usize,
        device: Device,
        mut scenario: Scenario,
    ) -> SimEvent {
        let a = &self.accounts[account];
        let (id, country, region) = (a.id.clone(), a.country, a.region);
        let mut c = self.capture(id, country, region, device, true, false);
        if c.vendor.liveness_score < 0.8 || c.device.rooted {
            scenario = Scenario::LegitUnusual; // bad lighting, old rooted phone
        }
        if c.telemetry.iter().any(|t| t.kind == InteractionKind::Paste) {
            scenario = Scenario::LegitUnusual; // password manager
        }
        c.event_time = self.clock;
        SimEvent {
            event: Event::CaptureSession(c),
            scenario,
        }
    }

    fn bot_capture(&mut self) -> SimEvent {
        let imitation = self.rng.gen_bool(0.5);
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
        let c = self.capture(account_id, country, region, device, false, imitation);
        SimEvent {
            event: Event::CaptureSession(c),
            scenario: if imitation {
                Scenario::BotImitating
            } else {
                Scenario::Bot
            },
        }
    }

    fn start_ato(&mut self) -> SimEvent {
        let account = self.pick_account();
        let country = self.accounts[account].country;
        let mut device = Self::device_for(&mut self.rng, country);
        if self.rng.gen_bool(0.5) {
            device.ip_country = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())]
                .0
                .to_string();
        }
        device.emulator = self.rng.gen_bool(0.1);
        let dest = hex(&mut self.rng);
        let time = self.clock;
        let mut t = self.tx(account, device.clone(), TransactionKind::Login, time);
        t.session_age_s = 0;
        t.channel = if self.rng.gen_bool(0.3) {
            Channel::Web
        } else {
            Channel::App
        };
        let next = time + self.rng.gen_range(30_000..900_000);
        self.schedule(
            next,
            Step::Ato {
                account,
                device,
                stage: 1,
                dest,
            },
        );
        SimEvent {
            event: Event::Transaction(t),
            scenario: Scenario::Ato,
        }
    }

    fn run_step(&mut self, at: i64, step: Step) -> SimEvent {
        let time = at.max(self.clock);
        self.clock = time;
        match step {
            Step::LegitNewDeviceFollowUp {
                account,
                device,
                remaining,
            } => {
                let kind = match self.rng.gen_range(0..10) {
                    0..=3 => TransactionKind::Login,
                    4..=5 => TransactionKind::Trade,
                    6 => TransactionKind::PasswordChange,
                    7 => TransactionKind::MfaChange,
                    _ => TransactionKind::Withdrawal,
                };
                let mut t = self.tx(account, device.clone(), kind, time);
                let mut scenario = Scenario::LegitUnusual;
                self.legit_details(account, &mut t, &mut scenario);
                if remaining > 1 {
                    let later = time + self.rng.gen_range(60_000..4 * 3_600_000);
                    self.schedule(
                        later,
                        Step::LegitNewDeviceFollowUp {
                            account,
                            device,
                            remaining: remaining - 1,
                        },
                    );
                }
                SimEvent {
                    event: Event::Transaction(t),
                    scenario,
                }
            }
            Step::Ato {
                account,
                device,
                stage,
                dest,
            } => {
                let kind = match stage {
                    1 => [
                        TransactionKind::PasswordChange,
                        TransactionKind::MfaChange,
                        TransactionKind::EmailChange,
                    ][self.rng.gen_range(0..3)],
                    2 if self.rng.gen_bool(0.6) => TransactionKind::AddressAdd,
                    2 => TransactionKind::MfaChange,
                    _ => {
                        if self.rng.gen_bool(0.7) {
                            TransactionKind::Withdrawal
                        } else {
                            TransactionKind::TransferOut
                        }
                    }
                };
                let mut t = self.tx(account, device.clone(), kind, time);
                t.session_age_s = self.rng.gen_range(30..1_800);
                if self.rng.gen_bool(0.15) {
                    t.channel = Channel::Api;
                }
                if stage >= 3 {
                    // Drain: larger than usual, to a destination the account never used.
                    let usd = lognormal(&mut self.rng, 2_500.0, 1.0);
                    t.amount = Some(self.amount(usd));
                    t.destination = Some(Destination {
                        address_hash: dest.clone(),
                        first_seen: stage == 3,
                    });
                }
                let last_stage = 3 + self.rng.gen_range(0..3);
                if stage < last_stage {
                    let next = time + self.rng.gen_range(20_000..1_200_000);
                    self.schedule(
                        next,
                        Step::Ato {
                            account,
                            device,
                            stage: stage + 1,
                            dest,
                        },
                    );
                }
                SimEvent {
                    event: Event::Transaction(t),
                    scenario: Scenario::Ato,
                }
            }
        }
    }
}

impl Iterator for Simulator {
    type Item = SimEvent;
    fn next(&mut self) -> Option<SimEvent> {
        Some(self.next_event())
    }
}

trait WithId {
    fn with_id(self, id: String) -> Self;
}

impl WithId for Transaction {
    fn with_id(mut self, id: String) -> Self {
        self.event_id = id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_in_time_order_and_valid() {
        let a: Vec<_> = Simulator::new(SimConfig::for_events(2000, 7))
            .take(2000)
            .collect();
        let b: Vec<_> = Simulator::new(SimConfig::for_events(2000, 7))
            .take(2000)
            .collect();
        let mut last = 0;
        let mut ids = std::collections::HashSet::new();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.event, y.event);
            assert!(x.event.event_time() >= last, "not time ordered");
            last = x.event.event_time();
            x.event.validate().unwrap();
            assert!(
                ids.insert(x.event.event_id().to_string()),
                "duplicate event id"
            );
        }
        for s in Scenario::ALL {
            assert!(a.iter().any(|e| e.scenario == s), "no {s:?} in 2000 events");
        }
    }
}
