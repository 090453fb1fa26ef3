//! Process-wide interning of model names, versions and input names, so verdicts can refer to
//! them without allocating per event. Each distinct string is stored once, however often a
//! model is reloaded.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Returns a `'static` copy of `s`, shared with every earlier call for an equal string.
pub fn intern(s: &str) -> &'static str {
    static SET: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = SET
        .get_or_init(Default::default)
        .lock()
        .expect("intern set poisoned");
    if let Some(existing) = set.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}
