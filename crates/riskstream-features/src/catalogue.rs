//! The feature catalogue: every feature the store computes, defined once.

/// One feature the store computes.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    pub name: &'static str,
    pub entity: &'static str,
    pub window: &'static str,
    pub meaning: &'static str,
}

pub const HOUR_MS: i64 = 60 * 60 * 1000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest window any feature looks back over.
pub const LONGEST_WINDOW_MS: i64 = DAY_MS;

/// The store's features, in the order of [`StoreFeatures::values`].
pub const STORE_FEATURES: [FeatureDef; 10] = [
    FeatureDef { name: "acct_money_out_count_1h", entity: "account", window: "1h", meaning: "Money-out transactions (transfer, withdrawal, card payment) in the hour before the event." },
    FeatureDef { name: "acct_money_out_count_24h", entity: "account", window: "24h", meaning: "Money-out transactions in the 24 hours before the event." },
    FeatureDef { name: "acct_money_out_usd_1h", entity: "account", window: "1h", meaning: "Sum of money-out notional value, USD, in the hour before the event." },
    FeatureDef { name: "acct_money_out_usd_24h", entity: "account", window: "24h", meaning: "Sum of money-out notional value, USD, in the 24 hours before the event." },
    FeatureDef { name: "acct_credential_changes_24h", entity: "account", window: "24h", meaning: "Password, MFA, e-mail, API-key and payout-address changes in the 24 hours before the event." },
    FeatureDef { name: "acct_logins_24h", entity: "account", window: "24h", meaning: "Logins in the 24 hours before the event." },
    FeatureDef { name: "acct_distinct_devices", entity: "account", window: "all (TTL 30d)", meaning: "Distinct device fingerprints seen on the account before the event." },
    FeatureDef { name: "acct_device_is_new", entity: "account x device", window: "all (TTL 30d)", meaning: "1 if the event's device was never seen on the account before the event, else 0." },
    FeatureDef { name: "device_distinct_accounts", entity: "device", window: "all (TTL 30d)", meaning: "Distinct accounts seen on the event's device before the event." },
    FeatureDef { name: "device_capture_sessions_24h", entity: "device", window: "24h", meaning: "Capture sessions on the event's device in the 24 hours before the event." },
];

/// Number of store features.
pub const N_STORE_FEATURES: usize = STORE_FEATURES.len();

/// The store's features for one event, in [`STORE_FEATURES`] order.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreFeatures {
    pub values: [f32; N_STORE_FEATURES],
}

impl StoreFeatures {
    /// Builds features from the raw integers both stores compute (sums in cents).
    pub(crate) fn from_raw(raw: [i64; N_STORE_FEATURES]) -> Self {
        let mut values = [0f32; N_STORE_FEATURES];
        for (i, v) in raw.iter().enumerate() {
            values[i] = *v as f32;
        }
        // USD sums are kept in cents by the stores.
        values[2] /= 100.0;
        values[3] /= 100.0;
        StoreFeatures { values }
    }

    pub fn get(&self, name: &str) -> Option<f32> {
        STORE_FEATURES.iter().position(|f| f.name == name).map(|i| self.values[i])
    }
}
