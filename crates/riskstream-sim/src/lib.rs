//! Synthetic traffic with labelled fraud families, for the demo, benchmarks, tests and
//! training data.
//!
//! Out: a time-ordered stream of [`SimEvent`]s (an [`Event`] plus its ground truth, a
//! [`Scenario`]). The same seed gives the same stream; each seed also draws its own family
//! rates (×0.6–1.4 of the defaults) and its own parameters per family instance (ring sizes,
//! delays, amounts), so a model trained on one seed meets different mixes on another.
//!
//! **Fraud families**, each written from what a fraud / identity team sees:
//! - `bot_scripted`: scripted capture sessions — fast regular timing, ruler-straight pointer,
//!   pastes, emulators and virtual cameras often.
//! - `bot_imitating`: bots replaying human gap and action distributions shuffled (only the order
//!   of the telemetry gives them away), few device red flags, devices from a small farm.
//! - `injection`: presentation and injection attacks operated by a person (human-like
//!   telemetry): a virtual camera, a hooked camera API (frame injection), a screen replay, or a
//!   deepfake-grade face that passes the vendor's liveness. Each variant shows its signal most
//!   of the time (virtual-camera flag, injection flag, high screen-replay score; a deepfake shows
//!   a virtual camera or injection flag, an emulator, or a too-short selfie step) — the vendor
//!   scores mostly pass.
//! - `ring`: document and device reuse — 5–25 accounts opened with one document, on 1–3 shared
//!   devices behind one IP, each verified by a capture session, then paying out to one address.
//! - `mule`: many accounts, each on its own device and IP, passing money to one collector
//!   address (a few payouts each over days).
//! - `scam`: the real customer, on their own device and IP, talked into an unusually large
//!   transfer to a new address during a long session, half the time adding the scammer's
//!   address to the address book first. No takeover signal: the payment carries the risk
//!   (amount against the account's history, first use of the address, and the scammer's
//!   address collecting from several victims — visible when it is added, too). The ATO model
//!   (the transaction slot) is trained to cover it.
//! - `ato_fast`: login from a new device (often abroad, sometimes an emulator), credential
//!   changes within minutes, withdrawals of larger-than-usual amounts to a new address.
//! - `ato_slow`: the same steps spread over hours from a new device in the customer's country,
//!   amounts near the customer's usual.
//! - `ato_delayed`: credential changes on a new device, the payouts one to four days later.
//!
//! **Legitimate traffic and its look-alikes** (what the models must not confuse with the
//! families above):
//! - `legit`: logins, trades, deposits, withdrawals to known addresses, card payments,
//!   occasional capture sessions.
//! - `legit_unusual`: a password reset or other credential change, a rooted phone, a password
//!   manager's paste, poor lighting (low liveness), a first payout to a new address.
//! - `traveller`: a trip abroad — the customer's IP country changes for a day or more, often a
//!   new device (travel phone, hotel laptop), ordinary card payments and logins there.
//! - `new_phone`: a new device, logged in and used for ordinary activity over the next hours,
//!   sometimes with a password or MFA reset.
//! - `household`: family members with their own accounts on one shared device.
//! - `salary_day`: a deposit and, soon after, larger than usual payouts to known addresses;
//!   sometimes a large first payment to a new address (rent, a car) with no scam behind it.
//! - `new_customer`: a newly opened account, as rings and mules open them: identity
//!   verification on the customer's own device and document (now and then from an IP abroad:
//!   an expat, a VPN), a deposit, trades, and often a first withdrawal to a new address (their
//!   own wallet) within hours or days.
//!
//! **Warm-up history** (`warmup`): before the scenarios start, every customer's account has the
//! history an established account has — logins on its device and a payment to each of its
//! known payees, spread over the `SimConfig::warmup_ms` before `start_ms` — so a store fed from
//! the stream knows customers' devices and payees, as a production store does. Accounts opened
//! by rings, mules, bots and new customers have none.
//!
//! An `ADDRESS_ADD` carries the address being added in `destination` (as an exchange's address
//! book does): a customer's new payee (remembered, paid later like a known one), a scammer's
//! collecting address, a takeover's drain address.
//!
//! **Whole journeys**: a stream cut after a number of events ends mid-journey (a slow takeover
//! signed in, its payouts hours away); [`Simulator::next_planned`] finishes the journeys under
//! way without starting new ones. The demo scores whole journeys this way.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use riskstream_events::*;

mod capture;
use capture::CaptureMode;

/// Ground truth of a simulated event: its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Ordinary legitimate activity.
    Legit,
    /// Legitimate but unusual: credential reset, rooted device, paste, low liveness, new payee.
    LegitUnusual,
    /// A customer abroad (new country, often a new device).
    Traveller,
    /// A customer's new phone.
    NewPhone,
    /// Family members sharing a device.
    Household,
    /// Salary-day deposit and larger payouts, incl. a legitimate large first payment.
    SalaryDay,
    /// A newly opened legitimate account: verification, deposit, trades, a first withdrawal.
    NewCustomer,
    /// An established account's history before the scenarios start (legitimate).
    Warmup,
    /// A scripted bot in a capture session.
    BotScripted,
    /// A bot imitating human behaviour.
    BotImitating,
    /// Presentation / injection attack with human-like behaviour.
    Injection,
    /// Document and device reuse ring.
    Ring,
    /// Money mule paying a collector address.
    Mule,
    /// Authorised push-payment scam.
    Scam,
    /// Account takeover within minutes.
    AtoFast,
    /// Account takeover over hours, amounts near the usual.
    AtoSlow,
    /// Credential change, payouts days later.
    AtoDelayed,
}

impl Scenario {
    pub const ALL: [Scenario; 17] = [
        Scenario::Legit,
        Scenario::LegitUnusual,
        Scenario::Traveller,
        Scenario::NewPhone,
        Scenario::Household,
        Scenario::SalaryDay,
        Scenario::NewCustomer,
        Scenario::Warmup,
        Scenario::BotScripted,
        Scenario::BotImitating,
        Scenario::Injection,
        Scenario::Ring,
        Scenario::Mule,
        Scenario::Scam,
        Scenario::AtoFast,
        Scenario::AtoSlow,
        Scenario::AtoDelayed,
    ];

    /// The fraud families, in [`Scenario::ALL`] order.
    pub fn fraud_families() -> impl Iterator<Item = Scenario> {
        Scenario::ALL.into_iter().filter(|s| s.is_fraud())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Legit => "legit",
            Scenario::LegitUnusual => "legit_unusual",
            Scenario::Traveller => "traveller",
            Scenario::NewPhone => "new_phone",
            Scenario::Household => "household",
            Scenario::SalaryDay => "salary_day",
            Scenario::NewCustomer => "new_customer",
            Scenario::Warmup => "warmup",
            Scenario::BotScripted => "bot_scripted",
            Scenario::BotImitating => "bot_imitating",
            Scenario::Injection => "injection",
            Scenario::Ring => "ring",
            Scenario::Mule => "mule",
            Scenario::Scam => "scam",
            Scenario::AtoFast => "ato_fast",
            Scenario::AtoSlow => "ato_slow",
            Scenario::AtoDelayed => "ato_delayed",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True for the families a model should catch.
    pub fn is_fraud(self) -> bool {
        !matches!(
            self,
            Scenario::Legit
                | Scenario::LegitUnusual
                | Scenario::Traveller
                | Scenario::NewPhone
                | Scenario::Household
                | Scenario::SalaryDay
                | Scenario::NewCustomer
                | Scenario::Warmup
        )
    }

    /// The label a case-management system would emit for this family (fraud only).
    pub fn label_kind(self) -> Option<LabelKind> {
        match self {
            Scenario::BotScripted | Scenario::BotImitating => Some(LabelKind::Bot),
            Scenario::AtoFast | Scenario::AtoSlow | Scenario::AtoDelayed => {
                Some(LabelKind::ConfirmedAto)
            }
            Scenario::Injection | Scenario::Ring | Scenario::Mule | Scenario::Scam => {
                Some(LabelKind::ConfirmedFraud)
            }
            _ => None,
        }
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
        let kind = self.scenario.label_kind()?;
        Some(Label {
            event_id: Some(self.event.event_id().to_string()),
            account_id: Some(self.event.account_id().to_string()),
            kind,
            source: "simulator".into(),
            label_time: self.event.event_time() + 3_600_000,
        })
    }
}

/// How often each family starts, as a share of the simulator's new actions (the rest is
/// legitimate activity). A family instance may emit many events (a ring: tens).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyRates {
    pub bot_scripted: f64,
    pub bot_imitating: f64,
    pub injection: f64,
    pub ring: f64,
    pub mule: f64,
    pub scam: f64,
    pub ato_fast: f64,
    pub ato_slow: f64,
    pub ato_delayed: f64,
    pub traveller: f64,
    pub household: f64,
    pub salary_day: f64,
    pub new_customer: f64,
}

impl Default for FamilyRates {
    fn default() -> Self {
        FamilyRates {
            bot_scripted: 0.02,
            bot_imitating: 0.02,
            injection: 0.012,
            ring: 0.0006,
            mule: 0.0012,
            scam: 0.004,
            ato_fast: 0.004,
            ato_slow: 0.003,
            ato_delayed: 0.003,
            traveller: 0.004,
            household: 0.003,
            salary_day: 0.006,
            new_customer: 0.015,
        }
    }
}

impl FamilyRates {
    /// The defaults, each scaled by its own factor in 0.6–1.4 drawn from `seed`.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x05ee_dfa1_11e5);
        let mut f = || rng.gen_range(0.6..1.4);
        let d = FamilyRates::default();
        FamilyRates {
            bot_scripted: d.bot_scripted * f(),
            bot_imitating: d.bot_imitating * f(),
            injection: d.injection * f(),
            ring: d.ring * f(),
            mule: d.mule * f(),
            scam: d.scam * f(),
            ato_fast: d.ato_fast * f(),
            ato_slow: d.ato_slow * f(),
            ato_delayed: d.ato_delayed * f(),
            traveller: d.traveller * f(),
            household: d.household * f(),
            salary_day: d.salary_day * f(),
            new_customer: d.new_customer * f(),
        }
    }

    /// The families a new action may start, with their rates (the rest is ordinary activity).
    fn table(&self) -> [(Scenario, f64); 13] {
        [
            (Scenario::BotScripted, self.bot_scripted),
            (Scenario::BotImitating, self.bot_imitating),
            (Scenario::Injection, self.injection),
            (Scenario::Ring, self.ring),
            (Scenario::Mule, self.mule),
            (Scenario::Scam, self.scam),
            (Scenario::AtoFast, self.ato_fast),
            (Scenario::AtoSlow, self.ato_slow),
            (Scenario::AtoDelayed, self.ato_delayed),
            (Scenario::Traveller, self.traveller),
            (Scenario::Household, self.household),
            (Scenario::SalaryDay, self.salary_day),
            (Scenario::NewCustomer, self.new_customer),
        ]
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
    /// Warm-up history: customers' events spread over this long before `start_ms` (0: none).
    /// Every customer logs in on its device and pays each of its known payees once.
    pub warmup_ms: i64,
    /// How often each family starts.
    pub rates: FamilyRates,
}

impl SimConfig {
    /// Defaults scaled to a stream of `events` events, family rates drawn from `seed`.
    pub fn for_events(events: u64, seed: u64) -> Self {
        SimConfig {
            seed,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            mean_gap_ms: 2_000.0,
            accounts: (events as usize / 15).clamp(200, 200_000),
            warmup_ms: 0,
            rates: FamilyRates::for_seed(seed),
        }
    }

    /// The same stream, moved in time so that its `events` events end about `end_ms`: the
    /// first starts `events` mean gaps before it (planned steps are emitted only once the
    /// clock reaches them, so the last event is within a few minutes of `end_ms` for any
    /// stream of more than a few hundred events). Producers use it so that event times are
    /// near the records' broker timestamps, as real traffic is.
    pub fn ending_at(mut self, events: u64, end_ms: i64) -> Self {
        // Warm-up events come before `start_ms`, not one mean gap apart.
        let warmup = if self.warmup_ms > 0 {
            (self.accounts as f64 * WARMUP_EVENTS_PER_ACCOUNT) as u64
        } else {
            0
        };
        let scenario_events = events.saturating_sub(warmup).max(events / 2);
        self.start_ms = end_ms - (scenario_events as f64 * self.mean_gap_ms) as i64;
        self
    }

    /// The same stream moved in time so that its `events` events and then the journeys under
    /// way at the cut ([`Simulator::next_planned`]) end at `end_ms`: a dry run of the same
    /// stream finds how far the finished journeys reach (days, for a takeover whose payouts
    /// come days after its credential change), and the start moves back by that much.
    pub fn finishing_at(self, events: u64, end_ms: i64) -> Self {
        let mut dry = Simulator::new(self.clone());
        let mut last = i64::MIN;
        for e in dry.by_ref().take(events as usize) {
            last = last.max(e.event.event_time());
        }
        while let Some(e) = dry.next_planned() {
            last = last.max(e.event.event_time());
        }
        let mut cfg = self;
        if last > i64::MIN {
            cfg.start_ms -= last - end_ms;
        }
        cfg
    }

    /// Warm-up history over `ms` before the start (0: none, every account starts cold — the
    /// default, for tests that need the scenarios from the first event).
    pub fn with_warmup(mut self, ms: i64) -> Self {
        self.warmup_ms = ms.max(0);
        self
    }
}

/// Default warm-up span: two weeks (inside the store's 30-day memory and the 30-day event-age
/// bound, longer than the 7-day velocity windows).
pub const WARMUP_MS: i64 = 14 * DAY;
/// Warm-up events per customer on average (a login, and a payment to each of its 1–3 payees).
const WARMUP_EVENTS_PER_ACCOUNT: f64 = 3.0;

struct Account {
    id: String,
    country: &'static str,
    region: &'static str,
    devices: Vec<Device>,
    known_dests: Vec<String>,
    /// The account's typical payment, USD (median of its legitimate amounts).
    usual_usd: f64,
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
    /// Ordinary activity on a device the customer just started using (a new phone, a shared
    /// household device, a travel device): `remaining` more events.
    FollowUp {
        account: usize,
        device: Device,
        remaining: u8,
        scenario: Scenario,
    },
    /// Account takeover within minutes, on the attacker's device.
    AtoFast {
        account: usize,
        device: Device,
        stage: u8,
        dest: String,
    },
    /// One fully described event of a family instance.
    Planned(Planned),
}

struct Planned {
    account: usize,
    device: Device,
    scenario: Scenario,
    action: Action,
}

enum Action {
    Tx {
        kind: TransactionKind,
        usd: Option<f64>,
        dest: Option<String>,
        session_age_s: i64,
        channel: Channel,
    },
    Capture {
        mode: CaptureMode,
        document: Option<String>,
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
/// Scam payout addresses in use at once: each collects from several victims.
const SCAM_ADDRESSES: usize = 6;

/// The simulator: an infinite, time-ordered iterator of [`SimEvent`]s.
pub struct Simulator {
    cfg: SimConfig,
    rng: SmallRng,
    clock: i64,
    next_id: u64,
    seq: u64,
    /// Legitimate accounts first (`cfg.accounts`), then accounts opened by rings and mules.
    accounts: Vec<Account>,
    farm_devices: Vec<Device>,
    scam_dests: Vec<String>,
    /// Fingerprints of devices shared by a household.
    shared_devices: std::collections::HashSet<String>,
    pending: BinaryHeap<Reverse<Pending>>,
    /// Warm-up history still to emit, oldest first: (time, account, payee or `None` for a login).
    warmup: std::collections::VecDeque<(i64, usize, Option<String>)>,
    /// This seed's factor (0.6–1.4) on how often sign-ins fail before they succeed.
    auth_fail_scale: f64,
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

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

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
            let usual_usd = lognormal(&mut rng, 250.0, 0.8);
            accounts.push(Account {
                id: format!("acct-{}-{i}", cfg.seed),
                country,
                region,
                devices: vec![s],
                known_dests,
                usual_usd,
            });
        }
        let farm_devices = (0..8)
            .map(|_| {
                let mut d = Self::device_for(&mut rng, "US");
                d.platform = Platform::Android;
                d
            })
            .collect();
        let scam_dests = (0..SCAM_ADDRESSES).map(|_| hex(&mut rng)).collect();
        let mut warmup = Vec::new();
        if cfg.warmup_ms > 0 {
            for (i, a) in accounts.iter().enumerate() {
                let mut at = || cfg.start_ms - rng.gen_range(1..=cfg.warmup_ms);
                warmup.push((at(), i, None));
                for d in &a.known_dests {
                    warmup.push((at(), i, Some(d.clone())));
                }
            }
        }
        warmup.sort_by_key(|(t, i, _)| (*t, *i));
        let auth_fail_scale = SmallRng::seed_from_u64(cfg.seed ^ 0xa07f_a11).gen_range(0.6..1.4);
        Simulator {
            clock: cfg.start_ms,
            cfg,
            rng,
            next_id: 0,
            seq: 0,
            accounts,
            farm_devices,
            scam_dests,
            shared_devices: Default::default(),
            pending: BinaryHeap::new(),
            warmup: warmup.into(),
            auth_fail_scale,
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

    fn plan(
        &mut self,
        at: i64,
        account: usize,
        device: &Device,
        scenario: Scenario,
        action: Action,
    ) {
        self.schedule(
            at,
            Step::Planned(Planned {
                account,
                device: device.clone(),
                scenario,
                action,
            }),
        );
    }

    /// A transaction action with the usual session age and channel.
    fn tx_action(
        &mut self,
        kind: TransactionKind,
        usd: Option<f64>,
        dest: Option<String>,
    ) -> Action {
        Action::Tx {
            kind,
            usd,
            dest,
            session_age_s: lognormal(&mut self.rng, 600.0, 1.2) as i64,
            channel: Channel::App,
        }
    }

    /// The next event in event-time order.
    pub fn next_event(&mut self) -> SimEvent {
        let e = self.next_untold();
        self.told(e)
    }

    /// `events` events, then, when `finish`, the steps of the journeys under way at the cut
    /// ([`Simulator::next_planned`]).
    pub fn into_stream(mut self, events: u64, finish: bool) -> impl Iterator<Item = SimEvent> {
        let mut told = 0u64;
        std::iter::from_fn(move || {
            if told < events {
                told += 1;
                Some(self.next_event())
            } else if finish {
                self.next_planned()
            } else {
                None
            }
        })
    }

    /// Adds what is drawn as an event is told: a sign-in's failed attempts.
    fn told(&mut self, mut e: SimEvent) -> SimEvent {
        if let Event::Transaction(t) = &mut e.event {
            if t.kind == TransactionKind::Login {
                t.failed_auth_attempts = self.failed_auth_attempts(e.scenario);
            }
        }
        e
    }

    /// The next step of a journey already under way (a slow takeover's payouts, a scam's second
    /// payment, a new phone's follow-ups), in event-time order, without starting any new
    /// journey; `None` once every journey has finished. A stream cut after a fixed number of
    /// events ends mid-journey: a takeover spread over hours would be counted by its sign-in
    /// alone, a new phone by its first login. The demo finishes journeys before it scores.
    pub fn next_planned(&mut self) -> Option<SimEvent> {
        if !self.warmup.is_empty() {
            return None; // still in the warm-up history: no journey has started yet
        }
        let Reverse(p) = self.pending.pop()?;
        let e = self.run_step(p.at, p.step);
        Some(self.told(e))
    }

    /// Failed password / second-factor attempts before a sign-in succeeded. Customers mistype
    /// now and then, more often on a device they just took up (a new phone, a hotel laptop, a
    /// shared one); a takeover guesses or replays stuffed credentials and fails often, but an
    /// attacker with phished credentials gets in at once. Shares scaled per seed.
    fn failed_auth_attempts(&mut self, scenario: Scenario) -> i32 {
        let (p, most) = match scenario {
            Scenario::AtoFast | Scenario::AtoSlow | Scenario::AtoDelayed => (0.45, 6),
            Scenario::NewPhone | Scenario::Household | Scenario::Traveller => (0.12, 3),
            _ => (0.03, 2),
        };
        if self.rng.gen_bool((p * self.auth_fail_scale).min(1.0)) {
            self.rng.gen_range(1..=most)
        } else {
            0
        }
    }

    fn next_untold(&mut self) -> SimEvent {
        if let Some((at, account, payee)) = self.warmup.pop_front() {
            return self.warmup_event(at, account, payee);
        }
        let gap = -self.cfg.mean_gap_ms * self.rng.gen_range(f64::EPSILON..1.0f64).ln();
        self.clock += gap.max(1.0) as i64;
        if let Some(Reverse(p)) = self.pending.peek() {
            if p.at <= self.clock {
                let Reverse(p) = self.pending.pop().expect("peeked");
                return self.run_step(p.at, p.step);
            }
        }
        let mut r: f64 = self.rng.gen();
        for (start, rate) in self.cfg.rates.table() {
            if r < rate {
                return self.start(start);
            }
            r -= rate;
        }
        self.legit_action()
    }

    fn start(&mut self, start: Scenario) -> SimEvent {
        match start {
            Scenario::BotScripted => self.bot_capture(false),
            Scenario::BotImitating => self.bot_capture(true),
            Scenario::Injection => self.start_injection(),
            Scenario::Ring => self.start_ring(),
            Scenario::Mule => self.start_mule(),
            Scenario::Scam => self.start_scam(),
            Scenario::AtoFast => self.start_ato_fast(),
            Scenario::AtoSlow => self.start_ato_slow(),
            Scenario::AtoDelayed => self.start_ato_delayed(),
            Scenario::Traveller => self.start_trip(),
            Scenario::Household => self.start_household(),
            Scenario::SalaryDay => self.start_salary_day(),
            Scenario::NewCustomer => self.start_new_customer(),
            // Ordinary activity and new phones start from `legit_action`; warm-up comes first.
            Scenario::Legit | Scenario::LegitUnusual | Scenario::NewPhone | Scenario::Warmup => {
                self.legit_action()
            }
        }
    }

    /// A legitimate customer's account (not one opened by a ring or a mule).
    fn is_customer(&self, account: usize) -> bool {
        account < self.cfg.accounts
    }

    fn pick_account(&mut self) -> usize {
        self.rng.gen_range(0..self.cfg.accounts)
    }

    /// A new account (opened by a ring or a mule), kept apart from the legitimate ones.
    fn open_account(&mut self, prefix: &str, device: Device) -> usize {
        let (country, region) = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())];
        let n = self.accounts.len();
        self.accounts.push(Account {
            id: format!("{prefix}-{}-{n}", self.cfg.seed),
            country,
            region,
            devices: vec![device],
            known_dests: Vec::new(),
            usual_usd: lognormal(&mut self.rng, 250.0, 0.8),
        });
        n
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
            failed_auth_attempts: 0,
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

    /// A destination for `account`: `first_seen` if the account never paid it before. The
    /// customer's own payments make it one of their payees; a fraudster's (`remember` false:
    /// a takeover's or a scam's address) does not become one.
    fn destination(&mut self, account: usize, dest: String, remember: bool) -> Destination {
        let known = &mut self.accounts[account].known_dests;
        let first_seen = !known.contains(&dest);
        if first_seen && remember {
            known.push(dest.clone());
        }
        Destination {
            address_hash: dest,
            first_seen,
        }
    }

    fn legit_action(&mut self) -> SimEvent {
        let account = self.pick_account();
        let time = self.clock;
        let mut scenario = Scenario::Legit;
        let n = self.accounts[account].devices.len();
        let mut device = self.accounts[account].devices[self.rng.gen_range(0..n)].clone();
        if self.shared_devices.contains(&device.fingerprint_hash) {
            scenario = Scenario::Household;
        }
        if self.rng.gen_bool(0.03) {
            // A day trip or a VPN: IP from elsewhere, once.
            device.ip_country = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())]
                .0
                .to_string();
            if device.ip_country != self.accounts[account].country {
                scenario = Scenario::Traveller;
            }
        }
        let roll: f64 = self.rng.gen();
        if roll < 0.08 {
            return self.legit_capture(account, device, scenario);
        }
        if roll < 0.10 {
            // A new phone: log in on it now, carry on with it over the next hours.
            let country = self.accounts[account].country;
            let new_device = Self::device_for(&mut self.rng, country);
            self.accounts[account].devices.push(new_device.clone());
            return self.login_then_follow_ups(
                account,
                new_device,
                Scenario::NewPhone,
                MINUTE..6 * HOUR,
                1..4,
            );
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
        if kind.is_credential_change() && scenario == Scenario::Legit {
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
        t.session_age_s = if t.kind == TransactionKind::Login {
            0
        } else {
            lognormal(&mut self.rng, 600.0, 1.2) as i64
        };
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
                let usual = self.accounts[account].usual_usd;
                let usd = lognormal(&mut self.rng, usual, 0.9);
                t.amount = Some(self.amount(usd));
                if t.kind == TransactionKind::Withdrawal || t.kind == TransactionKind::TransferOut {
                    let dest = if self.rng.gen_bool(0.05) {
                        if *scenario == Scenario::Legit {
                            *scenario = Scenario::LegitUnusual;
                        }
                        hex(&mut self.rng)
                    } else {
                        let known = &self.accounts[account].known_dests;
                        if known.is_empty() {
                            hex(&mut self.rng)
                        } else {
                            known[self.rng.gen_range(0..known.len())].clone()
                        }
                    };
                    t.destination = Some(self.destination(account, dest, true));
                }
            }
            // A new payee in the address book, paid later like any known one.
            TransactionKind::AddressAdd => {
                let dest = hex(&mut self.rng);
                t.destination = Some(self.destination(account, dest, true));
            }
            _ => {}
        }
    }

    /// Accounts opened with one document on a few shared devices behind one IP, each verified
    /// by a capture session, then paying out to one address.
    fn start_ring(&mut self) -> SimEvent {
        let size = self.rng.gen_range(5..=25);
        let (country, _) = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())];
        let ip = format!(
            "203.0.{}.{}",
            self.rng.gen_range(0..255),
            self.rng.gen_range(1..255)
        );
        let devices: Vec<Device> = (0..self.rng.gen_range(1..=3))
            .map(|_| {
                let mut d = Self::device_for(&mut self.rng, country);
                d.ip_address = ip.clone();
                d.rooted = self.rng.gen_bool(0.3);
                d
            })
            .collect();
        let document = hex(&mut self.rng);
        let payout = hex(&mut self.rng);
        let spacing = self.rng.gen_range(5 * MINUTE..3 * HOUR);
        let mut first = None;
        for i in 0..size {
            let device = devices[i % devices.len()].clone();
            let account = self.open_account("ring", device.clone());
            let at = self.clock + i as i64 * spacing + self.rng.gen_range(0..spacing.max(1));
            let capture = Action::Capture {
                mode: CaptureMode::Human,
                document: Some(document.clone()),
            };
            if i == 0 {
                first = Some((account, device.clone()));
            } else {
                self.plan(at, account, &device, Scenario::Ring, capture);
            }
            let login = at + self.rng.gen_range(HOUR..2 * DAY);
            let action = self.tx_action(TransactionKind::Login, None, None);
            self.plan(login, account, &device, Scenario::Ring, action);
            for k in 0..self.rng.gen_range(1..=2) {
                let usd = lognormal(&mut self.rng, 900.0, 0.7);
                let kind = if self.rng.gen_bool(0.7) {
                    TransactionKind::Withdrawal
                } else {
                    TransactionKind::TransferOut
                };
                let action = self.tx_action(kind, Some(usd), Some(payout.clone()));
                let when = login + (k as i64 + 1) * self.rng.gen_range(2 * MINUTE..6 * HOUR);
                self.plan(when, account, &device, Scenario::Ring, action);
            }
        }
        let (account, device) = first.expect("a ring has accounts");
        let a = &self.accounts[account];
        let (id, c, r) = (a.id.clone(), a.country, a.region);
        let mut s = self.capture(id, c, r, device, CaptureMode::Human);
        if let Some(d) = s.document.as_mut() {
            d.doc_hash = document;
        }
        SimEvent {
            event: Event::CaptureSession(s),
            scenario: Scenario::Ring,
        }
    }

    /// Accounts, each on its own device and IP, passing money to one collector address.
    fn start_mule(&mut self) -> SimEvent {
        let collector = hex(&mut self.rng);
        let mules = self.rng.gen_range(4..=15);
        let mut first = None;
        for i in 0..mules {
            let (country, _) = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())];
            let device = Self::device_for(&mut self.rng, country);
            let account = self.open_account("mule", device.clone());
            let start = self.clock + self.rng.gen_range(0..3 * DAY);
            let payouts = self.rng.gen_range(1..=3);
            for k in 0..payouts {
                let usd = lognormal(&mut self.rng, 1_500.0, 0.7);
                let kind = if self.rng.gen_bool(0.5) {
                    TransactionKind::TransferOut
                } else {
                    TransactionKind::Withdrawal
                };
                let action = self.tx_action(kind, Some(usd), Some(collector.clone()));
                let at = start + k as i64 * self.rng.gen_range(HOUR..DAY);
                if i == 0 && k == 0 {
                    first = Some((account, device.clone(), action));
                } else {
                    self.plan(at, account, &device, Scenario::Mule, action);
                }
            }
        }
        let (account, device, action) = first.expect("mules");
        self.emit(
            self.clock,
            Planned {
                account,
                device,
                scenario: Scenario::Mule,
                action,
            },
        )
    }

    /// The real customer, on their own device, talked into a large payment to a scammer's
    /// address (which collects from several victims) during a long session.
    fn start_scam(&mut self) -> SimEvent {
        let account = self.pick_account();
        let device = self.accounts[account].devices[0].clone();
        let i = self.rng.gen_range(0..SCAM_ADDRESSES);
        if self.rng.gen_bool(0.3) {
            self.scam_dests[i] = hex(&mut self.rng); // the scammer moves on to a new address
        }
        let dest = self.scam_dests[i].clone();
        let usual = self.accounts[account].usual_usd;
        let session = self.rng.gen_range(1_200..5_400);
        let mut at = self.clock;
        if self.rng.gen_bool(0.5) {
            // The scammer walks the victim through adding the address first.
            let action = Action::Tx {
                kind: TransactionKind::AddressAdd,
                usd: None,
                dest: Some(dest.clone()),
                session_age_s: session,
                channel: Channel::App,
            };
            self.plan(at, account, &device, Scenario::Scam, action);
            at += self.rng.gen_range(2 * MINUTE..20 * MINUTE);
        }
        for k in 0..self.rng.gen_range(1..=2) {
            let usd = usual * self.rng.gen_range(8.0..40.0) / (1 + k) as f64;
            let action = Action::Tx {
                kind: TransactionKind::TransferOut,
                usd: Some(usd),
                dest: Some(dest.clone()),
                session_age_s: session + (at - self.clock) / 1000,
                channel: Channel::App,
            };
            self.plan(at, account, &device, Scenario::Scam, action);
            at += self.rng.gen_range(5 * MINUTE..DAY);
        }
        self.next_event_now()
    }

    /// Pops the step just planned for now (family starts that plan everything up front).
    fn next_event_now(&mut self) -> SimEvent {
        let Reverse(p) = self.pending.pop().expect("a planned step");
        self.run_step(p.at, p.step)
    }

    fn start_ato_fast(&mut self) -> SimEvent {
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
            Step::AtoFast {
                account,
                device,
                stage: 1,
                dest,
            },
        );
        SimEvent {
            event: Event::Transaction(t),
            scenario: Scenario::AtoFast,
        }
    }

    /// A takeover spread over hours from a device in the customer's own country, amounts near
    /// the customer's usual.
    fn start_ato_slow(&mut self) -> SimEvent {
        let account = self.pick_account();
        let country = self.accounts[account].country;
        let device = Self::device_for(&mut self.rng, country);
        let dest = hex(&mut self.rng);
        let usual = self.accounts[account].usual_usd;
        let mut at = self.clock;
        let action = self.tx_action(TransactionKind::Login, None, None);
        self.plan(at, account, &device, Scenario::AtoSlow, action);
        at += self.rng.gen_range(HOUR..6 * HOUR);
        let kind = [
            TransactionKind::PasswordChange,
            TransactionKind::EmailChange,
            TransactionKind::MfaChange,
        ][self.rng.gen_range(0..3)];
        let action = self.tx_action(kind, None, None);
        self.plan(at, account, &device, Scenario::AtoSlow, action);
        for _ in 0..self.rng.gen_range(1..=3) {
            at += self.rng.gen_range(2 * HOUR..10 * HOUR);
            let usd = usual * self.rng.gen_range(0.5..2.5);
            let kind = if self.rng.gen_bool(0.6) {
                TransactionKind::Withdrawal
            } else {
                TransactionKind::TransferOut
            };
            let action = self.tx_action(kind, Some(usd), Some(dest.clone()));
            self.plan(at, account, &device, Scenario::AtoSlow, action);
        }
        self.next_event_now()
    }

    /// Credential changes on a new device; the payouts one to four days later.
    fn start_ato_delayed(&mut self) -> SimEvent {
        let account = self.pick_account();
        let country = self.accounts[account].country;
        let mut device = Self::device_for(&mut self.rng, country);
        if self.rng.gen_bool(0.3) {
            device.ip_country = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())]
                .0
                .to_string();
        }
        let dest = hex(&mut self.rng);
        let usual = self.accounts[account].usual_usd;
        let mut at = self.clock;
        let action = self.tx_action(TransactionKind::Login, None, None);
        self.plan(at, account, &device, Scenario::AtoDelayed, action);
        for (kind, to) in [
            (TransactionKind::PasswordChange, None),
            (TransactionKind::AddressAdd, Some(dest.clone())),
        ] {
            at += self.rng.gen_range(MINUTE..30 * MINUTE);
            let action = self.tx_action(kind, None, to);
            self.plan(at, account, &device, Scenario::AtoDelayed, action);
        }
        at += self.rng.gen_range(DAY..4 * DAY);
        let action = self.tx_action(TransactionKind::Login, None, None);
        self.plan(at, account, &device, Scenario::AtoDelayed, action);
        for _ in 0..self.rng.gen_range(1..=2) {
            at += self.rng.gen_range(5 * MINUTE..2 * HOUR);
            let usd = usual * self.rng.gen_range(1.0..6.0);
            let action = self.tx_action(TransactionKind::Withdrawal, Some(usd), Some(dest.clone()));
            self.plan(at, account, &device, Scenario::AtoDelayed, action);
        }
        self.next_event_now()
    }

    /// A trip abroad: the IP country changes for a day or more, often on a new device; card
    /// payments, logins and trades there.
    fn start_trip(&mut self) -> SimEvent {
        let account = self.pick_account();
        let home = self.accounts[account].country;
        let abroad = loop {
            let c = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())].0;
            if c != home {
                break c;
            }
        };
        let mut device = if self.rng.gen_bool(0.4) {
            let d = Self::device_for(&mut self.rng, abroad); // travel phone, hotel laptop
            self.accounts[account].devices.push(d.clone());
            d
        } else {
            self.accounts[account].devices[0].clone()
        };
        device.ip_country = abroad.to_string();
        device.ip_address = format!(
            "192.0.{}.{}",
            self.rng.gen_range(0..255),
            self.rng.gen_range(1..255)
        );
        self.login_then_follow_ups(
            account,
            device,
            Scenario::Traveller,
            10 * MINUTE..4 * HOUR,
            3..9,
        )
    }

    /// A login on `device` now, then a number drawn from `follow_ups` of events of ordinary
    /// activity on it, the first after a delay drawn from `first`.
    fn login_then_follow_ups(
        &mut self,
        account: usize,
        device: Device,
        scenario: Scenario,
        first: std::ops::Range<i64>,
        follow_ups: std::ops::Range<u8>,
    ) -> SimEvent {
        let mut t = self.tx(account, device.clone(), TransactionKind::Login, self.clock);
        t.session_age_s = 0;
        let later = self.clock + self.rng.gen_range(first);
        let remaining = self.rng.gen_range(follow_ups);
        self.schedule(
            later,
            Step::FollowUp {
                account,
                device,
                remaining,
                scenario,
            },
        );
        SimEvent {
            event: Event::Transaction(t),
            scenario,
        }
    }

    /// A family member logs in to their own account on a device the household shares.
    fn start_household(&mut self) -> SimEvent {
        let account = self.pick_account();
        let other = self.pick_account();
        let device = self.accounts[other].devices[0].clone();
        if other != account {
            self.shared_devices.insert(device.fingerprint_hash.clone());
            if !self.accounts[account]
                .devices
                .iter()
                .any(|d| d.fingerprint_hash == device.fingerprint_hash)
            {
                self.accounts[account].devices.push(device.clone());
            }
        }
        self.login_then_follow_ups(account, device, Scenario::Household, MINUTE..2 * HOUR, 1..4)
    }

    /// One event of an established customer's history: a login on its device, or a payment to
    /// one of its payees, before the scenarios start.
    fn warmup_event(&mut self, at: i64, account: usize, payee: Option<String>) -> SimEvent {
        let device = self.accounts[account].devices[0].clone();
        let usual = self.accounts[account].usual_usd;
        let action = match payee {
            None => self.tx_action(TransactionKind::Login, None, None),
            Some(dest) => {
                let kind = if self.rng.gen_bool(0.6) {
                    TransactionKind::Withdrawal
                } else {
                    TransactionKind::TransferOut
                };
                let usd = lognormal(&mut self.rng, usual, 0.9);
                self.tx_action(kind, Some(usd), Some(dest))
            }
        };
        self.emit(
            at,
            Planned {
                account,
                device,
                scenario: Scenario::Warmup,
                action,
            },
        )
    }

    /// A new customer opens an account on their own device and verifies with their own
    /// document; a deposit and trades follow over the next hours, and often a first withdrawal
    /// to a new address (their own wallet elsewhere) within hours or days.
    fn start_new_customer(&mut self) -> SimEvent {
        let (country, _) = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())];
        let device = Self::device_for(&mut self.rng, country);
        let account = self.open_account("cust", device.clone());
        let country = self.accounts[account].country;
        let mut device = device;
        device.ip_country = country.to_string();
        if self.rng.gen_bool(0.08) {
            // An expat or a VPN user: onboarding from an IP in another country.
            device.ip_country = COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())]
                .0
                .to_string();
        }
        self.accounts[account].devices = vec![device.clone()];
        let usual = self.accounts[account].usual_usd;
        let mut at = self.clock + self.rng.gen_range(2 * MINUTE..2 * HOUR);
        let action = self.tx_action(TransactionKind::Deposit, Some(usual * 2.0), None);
        self.plan(at, account, &device, Scenario::NewCustomer, action);
        for _ in 0..self.rng.gen_range(1..=4) {
            at += self.rng.gen_range(10 * MINUTE..12 * HOUR);
            let kind = if self.rng.gen_bool(0.3) {
                TransactionKind::Login
            } else {
                TransactionKind::Trade
            };
            let usd =
                (kind == TransactionKind::Trade).then(|| lognormal(&mut self.rng, usual, 0.9));
            let action = self.tx_action(kind, usd, None);
            self.plan(at, account, &device, Scenario::NewCustomer, action);
        }
        if self.rng.gen_bool(0.5) {
            at += self.rng.gen_range(HOUR..3 * DAY);
            let wallet = hex(&mut self.rng);
            let usd = lognormal(&mut self.rng, usual * 1.5, 0.7);
            let action = self.tx_action(TransactionKind::Withdrawal, Some(usd), Some(wallet));
            self.plan(at, account, &device, Scenario::NewCustomer, action);
        }
        let a = &self.accounts[account];
        let (id, c, r) = (a.id.clone(), a.country, a.region);
        let s = self.capture(id, c, r, device, CaptureMode::Human);
        SimEvent {
            event: Event::CaptureSession(s),
            scenario: Scenario::NewCustomer,
        }
    }

    /// Salary arrives; larger than usual payouts to known addresses follow, sometimes a large
    /// first payment to a new address (rent, a car) that is what it seems.
    fn start_salary_day(&mut self) -> SimEvent {
        let account = self.pick_account();
        let device = self.accounts[account].devices[0].clone();
        let usual = self.accounts[account].usual_usd;
        let mut at = self.clock;
        let salary = usual * self.rng.gen_range(5.0..20.0);
        let action = self.tx_action(TransactionKind::Deposit, Some(salary), None);
        self.plan(at, account, &device, Scenario::SalaryDay, action);
        for _ in 0..self.rng.gen_range(1..=3) {
            at += self.rng.gen_range(10 * MINUTE..8 * HOUR);
            let known = self.accounts[account].known_dests.clone();
            let (dest, usd) = if self.rng.gen_bool(0.25) || known.is_empty() {
                (hex(&mut self.rng), usual * self.rng.gen_range(8.0..30.0))
            } else {
                (
                    known[self.rng.gen_range(0..known.len())].clone(),
                    usual * self.rng.gen_range(2.0..6.0),
                )
            };
            let action = self.tx_action(TransactionKind::TransferOut, Some(usd), Some(dest));
            self.plan(at, account, &device, Scenario::SalaryDay, action);
        }
        self.next_event_now()
    }

    fn emit(&mut self, time: i64, p: Planned) -> SimEvent {
        let Planned {
            account,
            device,
            scenario,
            action,
        } = p;
        match action {
            Action::Tx {
                kind,
                usd,
                dest,
                session_age_s,
                channel,
            } => {
                let mut t = self.tx(account, device, kind, time);
                t.session_age_s = if kind == TransactionKind::Login {
                    0
                } else {
                    session_age_s
                };
                t.channel = if channel == Channel::App && t.device.platform == Platform::Web {
                    Channel::Web
                } else {
                    channel
                };
                if let Some(usd) = usd {
                    t.amount = Some(self.amount(usd));
                }
                if let Some(dest) = dest {
                    let remember = !scenario.is_fraud() || !self.is_customer(account);
                    t.destination = Some(self.destination(account, dest, remember));
                }
                SimEvent {
                    event: Event::Transaction(t),
                    scenario,
                }
            }
            Action::Capture { mode, document } => {
                let a = &self.accounts[account];
                let (id, c, r) = (a.id.clone(), a.country, a.region);
                let mut s = self.capture(id, c, r, device, mode);
                s.event_time = time;
                if let (Some(doc), Some(d)) = (document, s.document.as_mut()) {
                    d.doc_hash = doc;
                }
                SimEvent {
                    event: Event::CaptureSession(s),
                    scenario,
                }
            }
        }
    }

    fn run_step(&mut self, at: i64, step: Step) -> SimEvent {
        let time = at.max(self.clock);
        self.clock = time;
        match step {
            Step::Planned(p) => self.emit(time, p),
            Step::FollowUp {
                account,
                device,
                remaining,
                scenario,
            } => {
                let roll = self.rng.gen_range(0..10);
                let kind = if scenario == Scenario::Traveller {
                    match roll {
                        0..=2 => TransactionKind::Login,
                        3..=7 => TransactionKind::CardPayment,
                        _ => TransactionKind::Trade,
                    }
                } else {
                    match (roll, scenario == Scenario::NewPhone) {
                        (0..=3, _) => TransactionKind::Login,
                        (4..=5, _) => TransactionKind::Trade,
                        (6, true) => TransactionKind::PasswordChange,
                        (7, true) => TransactionKind::MfaChange,
                        (6..=7, false) => TransactionKind::CardPayment,
                        _ => TransactionKind::Withdrawal,
                    }
                };
                let mut t = self.tx(account, device.clone(), kind, time);
                let mut s = scenario;
                self.legit_details(account, &mut t, &mut s);
                if remaining > 1 {
                    let later = time + self.rng.gen_range(MINUTE..8 * HOUR);
                    self.schedule(
                        later,
                        Step::FollowUp {
                            account,
                            device,
                            remaining: remaining - 1,
                            scenario,
                        },
                    );
                }
                SimEvent {
                    event: Event::Transaction(t),
                    scenario,
                }
            }
            Step::AtoFast {
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
                if kind == TransactionKind::AddressAdd {
                    // The address the drain will go to, whitelisted first.
                    t.destination = Some(self.destination(account, dest.clone(), false));
                }
                if stage >= 3 {
                    // Drain: larger than usual, to a destination the account never used.
                    let usd =
                        self.accounts[account].usual_usd * lognormal(&mut self.rng, 10.0, 0.8);
                    t.amount = Some(self.amount(usd));
                    t.destination = Some(self.destination(account, dest.clone(), false));
                }
                let last_stage = 3 + self.rng.gen_range(0..3);
                if stage < last_stage {
                    let next = time + self.rng.gen_range(20_000..1_200_000);
                    self.schedule(
                        next,
                        Step::AtoFast {
                            account,
                            device,
                            stage: stage + 1,
                            dest,
                        },
                    );
                }
                SimEvent {
                    event: Event::Transaction(t),
                    scenario: Scenario::AtoFast,
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
mod ending_at_tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_stream_moved_to_end_now_ends_near_now_and_is_otherwise_the_same() {
        let n = 20_000;
        let end = 1_800_000_000_000;
        let fixed: Vec<_> = Simulator::new(SimConfig::for_events(n, 7))
            .take(n as usize)
            .collect();
        let moved: Vec<_> = Simulator::new(SimConfig::for_events(n, 7).ending_at(n, end))
            .take(n as usize)
            .collect();
        let shift = SimConfig::for_events(n, 7).ending_at(n, end).start_ms
            - SimConfig::for_events(n, 7).start_ms;
        for (a, b) in fixed.iter().zip(&moved) {
            assert_eq!(a.event.event_id(), b.event.event_id());
            assert_eq!(a.event.event_time() + shift, b.event.event_time());
        }
        let last = moved.iter().map(|e| e.event.event_time()).max().unwrap();
        let first = moved.iter().map(|e| e.event.event_time()).min().unwrap();
        assert!(
            (last - end).abs() < 3_600_000,
            "last event {} min from the end",
            (last - end) / 60_000
        );
        assert!(end - first <= (n as i64) * 2_000 + WARMUP_MS + 3_600_000);
    }

    #[test]
    fn a_stream_finishing_its_journeys_at_the_end_ends_exactly_there() {
        let (n, end) = (5_000u64, 1_800_000_000_000);
        let cfg = SimConfig::for_events(n, 9)
            .with_warmup(WARMUP_MS)
            .finishing_at(n, end);
        let mut sim = Simulator::new(cfg);
        let mut last = sim
            .by_ref()
            .take(n as usize)
            .map(|e| e.event.event_time())
            .max()
            .unwrap();
        assert!(last < end, "the cut comes before the journeys finish");
        while let Some(e) = sim.next_planned() {
            last = last.max(e.event.event_time());
        }
        assert_eq!(last, end);
    }

    #[test]
    fn customers_start_with_history_and_opened_accounts_without() {
        let n = 20_000;
        let cfg = SimConfig::for_events(n, 7).with_warmup(WARMUP_MS);
        let start = cfg.start_ms;
        let events: Vec<_> = Simulator::new(cfg.clone()).take(n as usize).collect();
        let warm: Vec<_> = events
            .iter()
            .filter(|e| e.scenario == Scenario::Warmup)
            .collect();
        // Warm-up first, in time order, inside the span before the start.
        assert!(
            warm.len() >= cfg.accounts * 2,
            "{} warm-up events",
            warm.len()
        );
        assert!(events[..warm.len()]
            .iter()
            .all(|e| e.scenario == Scenario::Warmup));
        assert!(warm
            .windows(2)
            .all(|w| w[0].event.event_time() <= w[1].event.event_time()));
        assert!(warm
            .iter()
            .all(|e| (start - WARMUP_MS..start).contains(&e.event.event_time())));
        let warm_accounts: HashSet<&str> = warm.iter().map(|e| e.event.account_id()).collect();
        assert_eq!(
            warm_accounts.len(),
            cfg.accounts,
            "every customer has history"
        );
        // Payments to known payees only; accounts opened later (rings, mules, bots, new
        // customers) have no history.
        for e in &warm {
            if let Event::Transaction(t) = &e.event {
                assert!(t.destination.as_ref().is_none_or(|d| !d.first_seen));
            }
        }
        let opened: HashSet<&str> = events
            .iter()
            .filter(|e| {
                matches!(
                    e.scenario,
                    Scenario::NewCustomer | Scenario::Mule | Scenario::Ring
                )
            })
            .map(|e| e.event.account_id())
            .collect();
        assert!(!opened.is_empty());
        assert!(opened.is_disjoint(&warm_accounts));
        let cold: Vec<_> = Simulator::new(cfg.with_warmup(0)).take(1000).collect();
        assert!(cold.iter().all(|e| e.scenario != Scenario::Warmup));
        assert!(cold.iter().all(|e| e.event.event_time() >= start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn same_seed_same_stream_in_time_order_and_valid() {
        let a: Vec<_> = Simulator::new(SimConfig::for_events(20_000, 7))
            .take(20_000)
            .collect();
        let b: Vec<_> = Simulator::new(SimConfig::for_events(20_000, 7))
            .take(20_000)
            .collect();
        let mut last = 0;
        let mut ids = HashSet::new();
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
        // (Warm-up history is off by default: see the warm-up test.)
        for s in Scenario::ALL.into_iter().filter(|s| *s != Scenario::Warmup) {
            assert!(
                a.iter().any(|e| e.scenario == s),
                "no {s:?} in 20 000 events"
            );
        }
    }

    #[test]
    fn seeds_draw_their_own_family_rates() {
        let (a, b) = (FamilyRates::for_seed(1), FamilyRates::for_seed(2));
        assert_ne!(a, b);
        assert_eq!(a, FamilyRates::for_seed(1));
        let d = FamilyRates::default();
        assert!(a.ring >= d.ring * 0.6 && a.ring <= d.ring * 1.4);
    }

    /// After a cut, `next_planned` finishes the journeys under way (in time order, starting
    /// none): every slow takeover that signed in reaches its payouts.
    #[test]
    fn finishing_journeys_completes_every_takeover_and_starts_none() {
        let mut sim = Simulator::new(SimConfig::for_events(4_000, 5));
        let mut events: Vec<SimEvent> = sim.by_ref().take(4_000).collect();
        let cut = events.len();
        let last = events.iter().map(|e| e.event.event_time()).max().unwrap();
        let mut t = last;
        while let Some(e) = sim.next_planned() {
            assert!(
                e.event.event_time() >= t,
                "finished steps come in time order"
            );
            t = e.event.event_time();
            events.push(e);
        }
        assert!(events.len() > cut, "a 4 000-event stream ends mid-journey");
        assert!(sim.next_planned().is_none());
        let mut slow: HashMap<&str, (usize, usize)> = HashMap::new();
        for e in events.iter().filter(|e| e.scenario == Scenario::AtoSlow) {
            if let Event::Transaction(t) = &e.event {
                let v = slow.entry(&t.account_id).or_default();
                match t.kind {
                    TransactionKind::Login => v.0 += 1,
                    TransactionKind::Withdrawal | TransactionKind::TransferOut => v.1 += 1,
                    _ => {}
                }
            }
        }
        assert!(!slow.is_empty());
        for (account, (logins, payouts)) in slow {
            assert!(
                logins >= 1 && payouts >= 1,
                "{account}: {logins} logins, {payouts} payouts"
            );
        }
        // Starting none: every finished step continues an account already seen before the cut
        // (rings and mules open their next accounts as the journey goes on).
        let before: HashSet<&str> = events[..cut].iter().map(|e| e.event.account_id()).collect();
        for e in events[cut..].iter() {
            if !matches!(e.scenario, Scenario::Ring | Scenario::Mule) {
                assert!(
                    before.contains(e.event.account_id()),
                    "{:?} started after the cut",
                    e.scenario
                );
            }
        }
    }

    fn stream(n: usize, seed: u64) -> Vec<SimEvent> {
        Simulator::new(SimConfig::for_events(n as u64, seed))
            .take(n)
            .collect()
    }

    /// What makes each family what its documentation says it is.
    #[test]
    fn families_carry_their_defining_traits() {
        let events = stream(60_000, 3);
        let of = |s: Scenario| events.iter().filter(move |e| e.scenario == s);
        // Rings: one document across many accounts, payouts to one address per ring.
        let mut doc_accounts: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in of(Scenario::Ring) {
            if let Event::CaptureSession(c) = &e.event {
                doc_accounts
                    .entry(&c.document.as_ref().unwrap().doc_hash)
                    .or_default()
                    .insert(&c.account_id);
            }
        }
        // (A ring started near the end of the stream has opened only some of its accounts.)
        assert!(doc_accounts.values().any(|a| a.len() >= 5));
        assert!(doc_accounts.values().all(|a| a.len() <= 25));
        // Mules and scams: payout addresses collecting from several accounts.
        for family in [Scenario::Mule, Scenario::Scam] {
            let mut fan_in: HashMap<&str, HashSet<&str>> = HashMap::new();
            for e in of(family) {
                if let Event::Transaction(t) = &e.event {
                    if let Some(d) = &t.destination {
                        fan_in
                            .entry(&d.address_hash)
                            .or_default()
                            .insert(&t.account_id);
                    }
                }
            }
            let max = fan_in.values().map(|a| a.len()).max().unwrap_or(0);
            assert!(max >= 3, "{family:?}: largest fan-in {max}");
        }
        // Scams: the customer's own device, a payment far above their usual.
        let scams: Vec<_> = of(Scenario::Scam)
            .filter_map(|e| match &e.event {
                Event::Transaction(t) if t.kind == TransactionKind::TransferOut => Some(t),
                _ => None,
            })
            .collect();
        assert!(!scams.is_empty());
        assert!(scams
            .iter()
            .all(|t| !t.device.emulator && t.session_age_s >= 1_200));
        // Injection attacks: human timing, and most show an injection-channel signal.
        let inj: Vec<_> = of(Scenario::Injection)
            .map(|e| match &e.event {
                Event::CaptureSession(c) => c,
                _ => panic!("injection is a capture session"),
            })
            .collect();
        let signalled = inj
            .iter()
            .filter(|c| {
                c.injection.virtual_camera
                    || c.injection.injection_detected
                    || c.injection.screen_replay_score >= 0.55
                    || c.device.emulator
                    || c.steps[2].duration_ms < 1_500
            })
            .count();
        let share = signalled as f64 / inj.len() as f64;
        assert!(
            (0.7..0.99).contains(&share),
            "signalled injection share {share}"
        );
        // Travellers: an IP country other than the account's.
        assert!(of(Scenario::Traveller).all(|e| match &e.event {
            Event::Transaction(t) => t.device.ip_country != t.country,
            Event::CaptureSession(c) => c.device.ip_country != c.country,
        }));
        // Logins start sessions, whoever logs in (no session-age artifact).
        assert!(events.iter().all(|e| match &e.event {
            Event::Transaction(t) if t.kind == TransactionKind::Login => t.session_age_s == 0,
            _ => true,
        }));
        // Delayed takeovers: payouts at least a day after the credential change.
        let mut changed: HashMap<&str, i64> = HashMap::new();
        for e in of(Scenario::AtoDelayed) {
            if let Event::Transaction(t) = &e.event {
                if t.kind == TransactionKind::PasswordChange {
                    changed.insert(&t.account_id, t.event_time);
                } else if t.kind == TransactionKind::Withdrawal {
                    let c = changed[t.account_id.as_str()];
                    assert!(t.event_time - c >= DAY - 30 * MINUTE);
                }
            }
        }
    }
}
