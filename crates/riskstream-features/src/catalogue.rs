//! The feature catalogue: every feature the store computes, defined once (name, entity,
//! window, group, meaning). `riskstream features` prints it; the README table is its output.

use std::sync::LazyLock;

/// One feature.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    pub name: &'static str,
    /// What the feature is about: account, device, ip, document, account x device, ...
    pub entity: &'static str,
    /// The look-back window, `-` for none.
    pub window: &'static str,
    /// The feature group: the unit the store reports missing in degraded mode.
    pub group: &'static str,
    pub meaning: &'static str,
}

pub const MINUTE_MS: i64 = 60 * 1000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest window any windowed feature looks back over.
pub const LONGEST_WINDOW_MS: i64 = 7 * DAY_MS;
/// "Time since" features report this many seconds when the store holds no earlier event.
pub const NEVER_SECS: f32 = 30.0 * 86_400.0;
/// A vendor check failed when liveness or face match is below this.
pub const FAILED_CHECK_BELOW: f64 = 0.5;
/// Graph features skip a device / IP / document linked to more accounts than this (a shared
/// public IP must not explode the work or make everyone look linked).
pub const GRAPH_FANOUT_LIMIT: usize = 50;

/// Velocity windows: (suffix, length).
pub const WINDOWS: [(&str, i64); 4] = [
    ("10m", 10 * MINUTE_MS),
    ("1h", HOUR_MS),
    ("24h", DAY_MS),
    ("7d", 7 * DAY_MS),
];
/// Money-moving transaction kinds with velocity features (`money_out` = any of the other three).
pub const MONEY_KINDS: [&str; 4] = ["money_out", "transfer_out", "withdrawal", "card_payment"];
/// Per window: 4 money kinds x (count, usd, usd_max), then logins and credential changes.
pub const VELOCITY_PER_WINDOW: usize = MONEY_KINDS.len() * 3 + 2;
pub const N_VELOCITY: usize = WINDOWS.len() * VELOCITY_PER_WINDOW;

/// Index of a money velocity feature; `stat`: 0 count, 1 usd sum, 2 usd max.
pub const fn velocity(window: usize, kind: usize, stat: usize) -> usize {
    window * VELOCITY_PER_WINDOW + kind * 3 + stat
}
pub const fn logins(window: usize) -> usize {
    window * VELOCITY_PER_WINDOW + 12
}
pub const fn credential_changes(window: usize) -> usize {
    window * VELOCITY_PER_WINDOW + 13
}

// Indices of the non-velocity features, in `FIXED` order.
pub const SECS_SINCE_LOGIN: usize = N_VELOCITY;
pub const SECS_SINCE_PASSWORD_CHANGE: usize = N_VELOCITY + 1;
pub const SECS_SINCE_MFA_CHANGE: usize = N_VELOCITY + 2;
pub const DEVICE_IS_NEW: usize = N_VELOCITY + 3;
pub const DESTINATION_IS_NEW: usize = N_VELOCITY + 4;
pub const DISTINCT_DEVICES: usize = N_VELOCITY + 5;
/// distinct devices, IPs, countries in 24h then 7d: `DISTINCT_WINDOWED + 2 * what + w` (w: 0 = 24h, 1 = 7d).
pub const DISTINCT_WINDOWED: usize = N_VELOCITY + 6;
pub const DEVICE_AGE: usize = N_VELOCITY + 12;
pub const DEVICE_ACCOUNTS: usize = N_VELOCITY + 13;
pub const DEVICE_SESSIONS_24H: usize = N_VELOCITY + 14;
pub const DEVICE_FAILED_24H: usize = N_VELOCITY + 15;
pub const DEVICE_FAILED_7D: usize = N_VELOCITY + 16;
pub const IP_ACCOUNTS: usize = N_VELOCITY + 17;
pub const DOCUMENT_ACCOUNTS: usize = N_VELOCITY + 18;
pub const ACCOUNT_LABELLED: usize = N_VELOCITY + 19;
pub const GRAPH_LINKED: usize = N_VELOCITY + 20;
pub const GRAPH_FRAUD_1HOP: usize = N_VELOCITY + 21;
pub const GRAPH_FRAUD_2HOP: usize = N_VELOCITY + 22;
pub const ACCOUNT_AGE: usize = N_VELOCITY + 23;
pub const DOCUMENT_ACCOUNTS_24H: usize = N_VELOCITY + 24;
pub const DESTINATION_ACCOUNTS: usize = N_VELOCITY + 25;
pub const DESTINATION_ACCOUNTS_24H: usize = N_VELOCITY + 26;
pub const DEVICE_TENURE: usize = N_VELOCITY + 27;
pub const DEVICE_AFTER_FIRST: usize = N_VELOCITY + 28;
pub const DEST_TENURE: usize = N_VELOCITY + 29;
pub const GRAPH_CLUSTER: usize = N_VELOCITY + 30;
/// The cluster walk visits at most this many devices, documents and payout addresses per event.
pub const CLUSTER_MAX_ENTITIES: usize = 100;

const fn fixed(
    name: &'static str,
    entity: &'static str,
    window: &'static str,
    group: &'static str,
    meaning: &'static str,
) -> FeatureDef {
    FeatureDef {
        name,
        entity,
        window,
        group,
        meaning,
    }
}

const FIXED: [FeatureDef; 31] = [
    fixed("acct_secs_since_login", "account", "7d", "account", "Seconds since the account's previous login (30 days if none in the last 7 days)."),
    fixed("acct_secs_since_password_change", "account", "30d", "account", "Seconds since the account's previous password change (30 days if none is known)."),
    fixed("acct_secs_since_mfa_change", "account", "30d", "account", "Seconds since the account's previous MFA change (30 days if none is known)."),
    fixed("acct_device_is_new", "account x device", "30d", "account", "1 if the event's device was never seen on the account before the event."),
    fixed("acct_destination_is_new", "account x destination", "30d", "account", "1 if the transaction's destination address was never used by the account before (0 without a destination)."),
    fixed("acct_distinct_devices", "account", "30d", "account", "Distinct device fingerprints seen on the account before the event."),
    fixed("acct_distinct_devices_24h", "account", "24h", "account", "Distinct devices the account used in the 24 hours before the event."),
    fixed("acct_distinct_devices_7d", "account", "7d", "account", "Distinct devices the account used in the 7 days before the event."),
    fixed("acct_distinct_ips_24h", "account", "24h", "account", "Distinct IP addresses the account used in the 24 hours before the event."),
    fixed("acct_distinct_ips_7d", "account", "7d", "account", "Distinct IP addresses the account used in the 7 days before the event."),
    fixed("acct_distinct_countries_24h", "account", "24h", "account", "Distinct IP countries the account used in the 24 hours before the event."),
    fixed("acct_distinct_countries_7d", "account", "7d", "account", "Distinct IP countries the account used in the 7 days before the event."),
    fixed("device_first_seen_age_s", "device", "30d", "device", "Seconds since the device was first seen on any account (0 if this is its first event)."),
    fixed("device_distinct_accounts", "device", "30d", "device", "Distinct accounts seen on the event's device before the event (including this one, if seen before)."),
    fixed("device_capture_sessions_24h", "device", "24h", "device", "Capture sessions on the event's device in the 24 hours before the event."),
    fixed("device_failed_checks_24h", "device", "24h", "device", "Capture sessions on the device whose vendor liveness or face match was below 0.5, in the 24 hours before the event."),
    fixed("device_failed_checks_7d", "device", "7d", "device", "As device_failed_checks_24h, over 7 days."),
    fixed("ip_distinct_accounts", "ip", "30d", "ip", "Distinct accounts seen on the event's IP address before the event (0 without an IP)."),
    fixed("document_distinct_accounts", "document", "30d", "document", "Distinct accounts that presented the capture's document before the event (0 without a document)."),
    fixed("acct_labelled_fraud", "account", "label", "graph", "1 if the account itself carries a confirmed-fraud / ATO / chargeback / bot label."),
    fixed("graph_linked_accounts", "account -> device/ip/document -> account", "30d", "graph", "Other accounts sharing the event's device, IP or document (entities with more than 50 accounts are skipped)."),
    fixed("graph_fraud_accounts_1hop", "account -> entity -> account", "label", "graph", "Labelled accounts sharing the event's device, IP or document."),
    fixed("graph_fraud_accounts_2hop", "account -> entity -> account -> entity -> account", "label", "graph", "Labelled accounts two hops away through the event's device, IP or document (and not one hop away)."),
    fixed("acct_age_s", "account", "30d", "account", "Seconds since the account's first event the store holds (0 for its first event; the store forgets an account idle for 30 days)."),
    fixed("document_accounts_24h", "document", "24h", "document", "Accounts that first presented the capture's document in the 24 hours before the event (0 without a document): a document reused across fresh accounts."),
    fixed("dest_distinct_accounts", "destination", "30d", "destination", "Distinct accounts that paid (or added to their address book) the transaction's destination address before the event (fan-in; 0 without a destination)."),
    fixed("dest_accounts_24h", "destination", "24h", "destination", "Accounts that first paid the transaction's destination address in the 24 hours before the event (0 without a destination): mule collectors, scam addresses."),
    fixed("acct_device_tenure_s", "account x device", "30d", "account", "Seconds since the event's device was first seen on the account (0 if this is its first event there)."),
    fixed("acct_device_after_first_s", "account x device", "30d", "account", "Seconds between the account's first event the store holds and the first use of the event's device on it (0 for the device the account started on): a device added to an established account."),
    fixed("acct_dest_tenure_s", "account x destination", "30d", "account", "Seconds since the account first paid the transaction's destination (0 for its first payment there; 30 days without a destination): a payee taken up within the day."),
    fixed("graph_cluster_accounts", "account -> device/document/destination -> account -> device/document/destination -> account", "30d", "graph", "Accounts in the event's cluster as of the event, without labels: the other accounts on the event's own device, document and payout address, and the accounts on those accounts' devices, documents and payout addresses (two hops; IPs do not link; at most 100 entities visited, entities with more than 50 accounts skipped)."),
];

/// Number of store features.
pub const N_STORE_FEATURES: usize = N_VELOCITY + FIXED.len();

/// Feature groups, for degraded verdicts.
pub const GROUPS: [&str; 7] = [
    "velocity",
    "account",
    "device",
    "ip",
    "document",
    "destination",
    "graph",
];

static CATALOGUE: LazyLock<Vec<FeatureDef>> = LazyLock::new(|| {
    // Built once per process; the generated names and meanings live as long as it does.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let velocity_def = |name: String, window: &'static str, meaning: String| FeatureDef {
        name: leak(name),
        entity: "account",
        window,
        group: "velocity",
        meaning: leak(meaning),
    };
    let mut out = Vec::with_capacity(N_STORE_FEATURES);
    for (w, (suffix, _)) in WINDOWS.iter().enumerate() {
        for (k, kind) in MONEY_KINDS.iter().enumerate() {
            let what = if k == 0 {
                "money-out transactions (transfer out, withdrawal, card payment)".to_string()
            } else {
                kind.replace('_', " ") + " transactions"
            };
            for (stat, label) in ["count", "usd", "usd_max"].iter().enumerate() {
                let meaning = match stat {
                    0 => format!("Number of {what} in the {suffix} before the event."),
                    1 => format!("Sum of the notional USD of {what} in the {suffix} before the event."),
                    _ => format!("Largest notional USD of one of the {what} in the {suffix} before the event."),
                };
                debug_assert_eq!(out.len(), velocity(w, k, stat));
                out.push(velocity_def(
                    format!("acct_{kind}_{label}_{suffix}"),
                    suffix,
                    meaning,
                ));
            }
        }
        out.push(velocity_def(
            format!("acct_logins_{suffix}"),
            suffix,
            format!("Logins in the {suffix} before the event."),
        ));
        out.push(velocity_def(
            format!("acct_credential_changes_{suffix}"),
            suffix,
            format!("Password, MFA, e-mail, API-key and payout-address changes in the {suffix} before the event."),
        ));
    }
    out.extend_from_slice(&FIXED);
    assert_eq!(out.len(), N_STORE_FEATURES);
    out
});

/// The store's features, in [`StoreFeatures::values`] order.
pub fn store_features() -> &'static [FeatureDef] {
    &CATALOGUE
}

/// The store's features for one event, in [`store_features`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreFeatures {
    pub values: [f32; N_STORE_FEATURES],
}

impl Default for StoreFeatures {
    fn default() -> Self {
        StoreFeatures {
            values: [0.0; N_STORE_FEATURES],
        }
    }
}

impl StoreFeatures {
    pub fn get(&self, name: &str) -> Option<f32> {
        store_features()
            .iter()
            .position(|f| f.name == name)
            .map(|i| self.values[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_indices_match() {
        let names: Vec<_> = store_features().iter().map(|f| f.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), N_STORE_FEATURES);
        assert_eq!(names[velocity(1, 0, 0)], "acct_money_out_count_1h");
        assert_eq!(names[velocity(2, 0, 1)], "acct_money_out_usd_24h");
        assert_eq!(names[velocity(3, 2, 2)], "acct_withdrawal_usd_max_7d");
        assert_eq!(names[logins(2)], "acct_logins_24h");
        assert_eq!(names[credential_changes(0)], "acct_credential_changes_10m");
        assert_eq!(
            names[DISTINCT_WINDOWED + 2 * 2 + 1],
            "acct_distinct_countries_7d"
        );
        assert_eq!(names[GRAPH_FRAUD_2HOP], "graph_fraud_accounts_2hop");
        assert_eq!(names[DOCUMENT_ACCOUNTS], "document_distinct_accounts");
        for f in store_features() {
            assert!(
                GROUPS.contains(&f.group),
                "{} has unknown group {}",
                f.name,
                f.group
            );
        }
    }
}
