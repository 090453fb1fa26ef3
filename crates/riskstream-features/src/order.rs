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
use std::time::{Duration, Instant};

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

/// The two phases a turn orders: [`Turn::reads`] and [`Turn::evaluate`].
#[derive(Debug, Clone, Copy)]
enum Which {
    Reads = 0,
    Evaluate = 1,
}

/// Where each phase stands, indexed by [`Which`].
type State = [Phase; 2];

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
            released: Default::default(),
            waits: Default::default(),
        }
    }
}

/// Time a turn spent waiting for earlier batches.
#[derive(Debug, Default)]
struct Waits {
    /// Waits that ended.
    done: Duration,
    /// When the wait going on now began.
    since: Option<Instant>,
}

/// One batch's place in the order (see the module notes).
#[derive(Debug)]
pub struct Turn {
    n: u64,
    state: Arc<watch::Sender<State>>,
    /// Phases this turn released, indexed by [`Which`].
    released: [AtomicBool; 2],
    waits: std::sync::Mutex<Waits>,
}

impl Turn {
    /// Time this turn has spent waiting for earlier batches so far: not the store's time (the
    /// caller leaves it out when it sizes calls from how long they took).
    pub fn waited(&self) -> Duration {
        let w = self.waits.lock().expect("turn poisoned");
        w.done + w.since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Waits until every earlier batch has released `which` (or was abandoned).
    async fn wait(&self, which: Which) {
        let ready = |s: &State| s[which as usize].current >= self.n;
        if ready(&self.state.borrow()) {
            return;
        }
        let started = Instant::now();
        self.waits.lock().expect("turn poisoned").since = Some(started);
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = self.state.subscribe().wait_for(ready).await;
        let mut w = self.waits.lock().expect("turn poisoned");
        w.since = None;
        w.done += started.elapsed();
    }

    /// Lets the next batch's `which` go (once; later calls do nothing).
    fn release(&self, which: Which) {
        if !self.released[which as usize].swap(true, Ordering::SeqCst) {
            self.state
                .send_modify(|s| s[which as usize].release(self.n));
        }
    }

    /// Waits until every earlier batch's first round trip was answered (or abandoned).
    pub async fn reads(&self) {
        self.wait(Which::Reads).await;
    }

    /// This batch's first round trip was answered: the next batch may send its own.
    pub fn release_reads(&self) {
        self.release(Which::Reads);
    }

    /// Waits until every earlier batch's features were computed (or abandoned).
    pub async fn evaluate(&self) {
        self.wait(Which::Evaluate).await;
    }

    /// This batch's features are computed: the next batch may compute its own.
    pub fn release_evaluate(&self) {
        self.release(Which::Evaluate);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release(Which::Reads);
        self.release(Which::Evaluate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
