//! Turns: the order in which overlapping batches use the store.
//!
//! With more than one batch's store call in flight (`--store-in-flight`), two things must still
//! happen in batch order for the features to be what one call at a time gives:
//! - **reads**: batch N+1's first round trip (its events written, its entities read) reaches
//!   Redis only once batch N's has been answered, so N+1 reads N's events of the same accounts;
//! - **evaluate**: batch N+1's features are computed after batch N's, so a redelivery of one of
//!   N's events in N+1 finds the first features N gave it (the store's memo of recent first
//!   features, before N's follow-up write lands).
//!
//! Everything else overlaps: batch N's feature computation and follow-up writes with batch
//! N+1's round trip. A [`Turn`] is taken synchronously where batches are still in order (the
//! enrich stage's `start`), then awaited in whatever order the calls run. A turn dropped
//! before it was released (a call abandoned at the store deadline, a degraded batch) releases
//! itself, so later batches never wait for a batch that will not come.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Default)]
struct Phase {
    /// The turn whose phase runs now.
    current: u64,
    /// Turns dropped before their phase came: skipped when it does.
    abandoned: BTreeSet<u64>,
}

impl Phase {
    fn release(&mut self, n: u64) {
        if self.current == n {
            self.current += 1;
            while self.abandoned.remove(&self.current) {
                self.current += 1;
            }
        } else if n > self.current {
            self.abandoned.insert(n);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    reads: Phase,
    evaluate: Phase,
}

/// Hands out [`Turn`]s in the order [`Turns::take`] is called.
#[derive(Debug, Clone)]
pub struct Turns {
    state: Arc<watch::Sender<State>>,
    next: Arc<AtomicU64>,
}

impl Default for Turns {
    fn default() -> Self {
        Turns {
            state: Arc::new(watch::Sender::new(State::default())),
            next: Arc::default(),
        }
    }
}

impl Turns {
    /// The next turn (call in batch order).
    pub fn take(&self) -> Turn {
        Turn {
            n: self.next.fetch_add(1, Ordering::SeqCst),
            state: self.state.clone(),
            reads_released: AtomicBool::new(false),
            evaluate_released: AtomicBool::new(false),
            waited_ns: AtomicU64::new(0),
            waiting_since: Default::default(),
        }
    }
}

/// One batch's place in the order (see the module notes).
#[derive(Debug)]
pub struct Turn {
    n: u64,
    state: Arc<watch::Sender<State>>,
    reads_released: AtomicBool,
    evaluate_released: AtomicBool,
    /// Time spent waiting in [`Turn::reads`] and [`Turn::evaluate`], ns (waits that ended).
    waited_ns: AtomicU64,
    /// When the wait going on now began.
    waiting_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Turn {
    /// Time this turn has spent waiting for earlier batches so far: not the store's time (the
    /// caller leaves it out when it sizes calls from how long they took).
    pub fn waited(&self) -> std::time::Duration {
        let ongoing = self
            .waiting_since
            .lock()
            .expect("turn poisoned")
            .map(|t| t.elapsed())
            .unwrap_or_default();
        std::time::Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed)) + ongoing
    }

    async fn wait(&self, ready: impl Fn(&State) -> bool) {
        if ready(&self.state.borrow()) {
            return;
        }
        let started = std::time::Instant::now();
        *self.waiting_since.lock().expect("turn poisoned") = Some(started);
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = rx.wait_for(|s| ready(s)).await;
        *self.waiting_since.lock().expect("turn poisoned") = None;
        self.waited_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Waits until every earlier batch's first round trip was answered (or abandoned).
    pub async fn reads(&self) {
        let n = self.n;
        self.wait(|s| s.reads.current >= n).await;
    }

    /// This batch's first round trip was answered: the next batch may send its own.
    pub fn release_reads(&self) {
        if !self.reads_released.swap(true, Ordering::SeqCst) {
            self.state.send_modify(|s| s.reads.release(self.n));
        }
    }

    /// Waits until every earlier batch's features were computed (or abandoned).
    pub async fn evaluate(&self) {
        let n = self.n;
        self.wait(|s| s.evaluate.current >= n).await;
    }

    /// This batch's features are computed: the next batch may compute its own.
    pub fn release_evaluate(&self) {
        if !self.evaluate_released.swap(true, Ordering::SeqCst) {
            self.state.send_modify(|s| s.evaluate.release(self.n));
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release_reads();
        self.release_evaluate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn finishes<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn phases_run_in_the_order_turns_were_taken_and_dropped_turns_are_skipped() {
        let turns = Turns::default();
        let (a, b, c, d) = (turns.take(), turns.take(), turns.take(), turns.take());
        assert!(finishes(a.reads()).await);
        assert!(!finishes(b.reads()).await, "b waits for a's reads");
        a.release_reads();
        assert!(finishes(b.reads()).await);
        assert!(!finishes(b.evaluate()).await, "b's evaluate waits for a's");
        a.release_evaluate();
        assert!(finishes(b.evaluate()).await);
        // c is abandoned before its turn: once b releases, d goes.
        drop(c);
        assert!(!finishes(d.reads()).await, "d still waits for b");
        b.release_reads();
        assert!(finishes(d.reads()).await, "c was skipped");
        assert!(!finishes(d.evaluate()).await);
        // Dropping b releases what it still holds.
        drop(b);
        assert!(finishes(d.evaluate()).await);
        // Releasing twice is a no-op.
        d.release_reads();
        d.release_reads();
        let e = turns.take();
        assert!(finishes(e.reads()).await);
        assert!(!finishes(e.evaluate()).await, "d's evaluate is still held");
    }

    #[tokio::test]
    async fn a_waiting_turn_wakes_when_the_earlier_one_releases() {
        let turns = Turns::default();
        let (a, b) = (turns.take(), turns.take());
        let waiter = tokio::spawn(async move {
            b.reads().await;
            b.evaluate().await;
            b.waited()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert!(waited >= Duration::from_millis(20), "waited {waited:?}");
        let c = turns.take();
        c.reads().await;
        assert_eq!(c.waited(), Duration::ZERO, "its turn at once: no wait");
    }
}
