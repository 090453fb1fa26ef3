//! Outage write-back: the events scored while the feature store did not answer are kept (their
//! store facts, in a bounded queue) and recorded in the store once it answers again, a chunk
//! before each later batch's own call. Their times are earlier than the later events', so later
//! velocity, device and graph features count them: an attacker's withdrawals during an outage
//! do not vanish from the features of what follows.
//!
//! Bounded by events (`--store-writeback-max`): past the bound the oldest are dropped, counted
//! and logged. Kept in the worker's memory only: a worker that stops or crashes before the
//! store is back loses its queue (those events were scored and committed; their updates are
//! then missing as before). A chunk the store refuses while the batch after it is served (a
//! record the store cannot take, rather than an outage) is dropped, not retried forever.

use std::collections::VecDeque;
use std::sync::Mutex;

use riskstream_features::{EventFacts, OwnedFacts};

use crate::metrics as m;

/// The queue of events waiting to be recorded.
#[derive(Debug)]
pub struct WriteBack {
    queue: Mutex<VecDeque<OwnedFacts>>,
    max: usize,
}

impl WriteBack {
    /// A queue of at most `max` events (0: off, nothing is kept).
    pub fn new(max: usize) -> Self {
        metrics::gauge!(m::STORE_WRITEBACK_PENDING).set(0.0);
        WriteBack {
            queue: Mutex::default(),
            max,
        }
    }

    /// Keeps `facts` (scored without the store) to record later; past the bound the oldest
    /// go.
    pub fn keep(&self, facts: &[EventFacts<'_>]) {
        if self.max == 0 || facts.is_empty() {
            return;
        }
        let mut q = self.queue.lock().expect("write-back lock");
        q.extend(facts.iter().map(OwnedFacts::of));
        self.bound(q);
    }

    /// Takes up to `n` of the oldest kept events out of the queue.
    pub fn take(&self, n: usize) -> Vec<OwnedFacts> {
        let mut q = self.queue.lock().expect("write-back lock");
        let n = n.min(q.len());
        let out = q.drain(..n).collect();
        metrics::gauge!(m::STORE_WRITEBACK_PENDING).set(q.len() as f64);
        out
    }

    /// Puts events back at the front (their recording failed; they stay the oldest). Past the
    /// bound (events kept meanwhile) the oldest go.
    pub fn put_back(&self, events: Vec<OwnedFacts>) {
        let mut q = self.queue.lock().expect("write-back lock");
        for e in events.into_iter().rev() {
            q.push_front(e);
        }
        self.bound(q);
    }

    /// Drops the oldest events past the bound.
    fn bound(&self, mut q: std::sync::MutexGuard<'_, VecDeque<OwnedFacts>>) {
        let over = q.len().saturating_sub(self.max);
        q.drain(..over);
        let len = q.len();
        drop(q);
        if over > 0 {
            dropped(over, "the write-back queue is full");
        }
        metrics::gauge!(m::STORE_WRITEBACK_PENDING).set(len as f64);
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().expect("write-back lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts and logs events whose store updates are given up.
pub(crate) fn dropped(n: usize, why: &str) {
    metrics::counter!(m::STORE_WRITEBACK, "outcome" => "dropped").increment(n as u64);
    tracing::warn!(
        events = n,
        why,
        "store updates of events scored during a store outage dropped; later features undercount them"
    );
}

/// Counts events recorded after an outage.
pub(crate) fn recorded(n: usize) {
    metrics::counter!(m::STORE_WRITEBACK, "outcome" => "recorded").increment(n as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskstream_features::FactKind;

    fn facts(id: &str) -> EventFacts<'_> {
        EventFacts {
            event_id: id,
            account_id: "acct",
            device_id: "dev",
            ip: "",
            country: "FR",
            document: "",
            destination: "addr",
            event_time: 42,
            kind: FactKind::CaptureSession {
                failed_check: false,
            },
        }
    }

    fn ids(events: &[OwnedFacts]) -> Vec<String> {
        events
            .iter()
            .map(|e| e.facts().event_id.to_string())
            .collect()
    }

    #[test]
    fn keeps_the_newest_up_to_the_bound_oldest_first() {
        let w = WriteBack::new(3);
        w.keep(&[facts("a"), facts("b")]);
        w.keep(&[facts("c"), facts("d")]);
        assert_eq!(w.len(), 3, "the oldest went");
        let first = w.take(2);
        assert_eq!(ids(&first), ["b", "c"]);
        assert_eq!(first[0].facts(), facts("b"), "every field kept");
        // A failed recording goes back in front; with the queue refilled meanwhile, the
        // oldest go.
        w.keep(&[facts("e"), facts("f")]);
        w.put_back(first);
        assert_eq!(ids(&w.take(10)), ["d", "e", "f"]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_bound_of_zero_keeps_nothing() {
        let w = WriteBack::new(0);
        w.keep(&[facts("a")]);
        assert!(w.is_empty());
    }
}
