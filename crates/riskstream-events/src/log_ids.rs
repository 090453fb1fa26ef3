//! Identifiers in logs and errors. Account ids, device fingerprints, IP addresses — and store
//! keys, which carry them — are written through [`Id`], which prints a pseudonym: `id:` and 8
//! hex digits of a keyed hash (SipHash, its key drawn when the process starts), so one process's
//! lines about the same account can be matched without showing who it is, and the pseudonym
//! cannot be reversed by hashing candidate ids. `--log-identifiers` (debugging) turns the raw
//! values back on, process-wide, with [`log_raw_identifiers`].

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static RAW: AtomicBool = AtomicBool::new(false);

/// Print identifiers as they are (true) or as pseudonyms (false, the default).
pub fn log_raw_identifiers(raw: bool) {
    RAW.store(raw, Ordering::Relaxed);
}

fn key() -> &'static RandomState {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

/// An identifier as logs show it: its pseudonym, or itself with `--log-identifiers`.
#[derive(Clone, Copy)]
pub struct Id<'a>(pub &'a str);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if RAW.load(Ordering::Relaxed) {
            f.write_str(self.0)
        } else {
            write!(f, "id:{:08x}", key().hash_one(self.0) as u32)
        }
    }
}

impl fmt::Debug for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A URL with its password (the part of the user info after `:`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match user_info(url) {
        Some(UserInfo {
            scheme, user, rest, ..
        }) => {
            let hidden = match user {
                Some(user) => format!("{user}:***"),
                None => "***".to_string(), // redis://password@host: all of it is the secret
            };
            format!("{scheme}://{hidden}@{rest}")
        }
        None => url.to_string(),
    }
}

/// A URL's parts around its user info: `scheme://[user:]secret@rest`.
struct UserInfo<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    secret: &'a str,
    /// The host(s) and path: several hosts (redis+cluster://h:p,h:p) may follow one user info.
    rest: &'a str,
}

fn user_info(url: &str) -> Option<UserInfo<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let authority = &after[..after.find('/').unwrap_or(after.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, secret) = match userinfo.split_once(':') {
        Some((u, p)) => (Some(u), p),
        None => (None, userinfo),
    };
    Some(UserInfo {
        scheme,
        user,
        secret,
        rest: &after[userinfo.len() + 1..],
    })
}

/// `message` with the password of `url` (see [`redact_url`]) and `url` itself hidden: for
/// errors of libraries that print the URL they were given.
pub fn scrub(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    // A secret of 1–3 characters would mangle every message; the URL replacement covers it.
    if let Some(info) = user_info(url).filter(|i| i.secret.len() >= 4) {
        out = out.replace(info.secret, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_pseudonyms_unless_raw_ones_are_asked_for() {
        let a = Id("acct-12345").to_string();
        assert!(a.starts_with("id:") && a.len() == 11, "{a}");
        assert!(!a.contains("12345"));
        assert_eq!(
            Id("acct-12345").to_string(),
            a,
            "the same id, the same pseudonym"
        );
        assert_ne!(Id("acct-12346").to_string(), a);
        assert_eq!(format!("{:?}", Id("acct-12345")), a);
        log_raw_identifiers(true);
        assert_eq!(Id("acct-12345").to_string(), "acct-12345");
        log_raw_identifiers(false);
        assert_eq!(Id("acct-12345").to_string(), a);
    }

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact_url("redis://app:s3cret@redis:6379/0"),
            "redis://app:***@redis:6379/0"
        );
        assert_eq!(redact_url("redis://s3cret@redis/"), "redis://***@redis/");
        let url = "http://user:s3cret@registry:8081/schemas/ids/1";
        let said = scrub(&format!("GET {url}: refused; auth s3cret"), url);
        assert!(!said.contains("s3cret"), "{said}");
        assert!(
            said.contains("http://user:***@registry:8081/schemas/ids/1"),
            "{said}"
        );
        assert_eq!(
            scrub("no secret here", "http://registry:8081/"),
            "no secret here"
        );
    }
}
