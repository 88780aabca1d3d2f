//! In-process signals of committed appends, per run: the embedded stores publish the last
//! sequence number of every append after its commit, and watchers of that run wake.
//!
//! Invariant: a watch taken before a watcher reads the log never misses an append that
//! commits after the read (the watch's channel marks every later publish as unseen), and a
//! run nobody watches costs one map lookup per append. Channels of runs nobody watches any
//! more are dropped on a later publish or, in bulk, when the map has doubled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::domain::{EventRecord, RunKey, RunState};
use crate::ports::{AppendSignals, LogWatch, WatchError};

/// Told of every append an embedded store commits, after the commit (the local runtime's
/// Prometheus metrics). Called on the writer's task: keep it quick and never block.
pub trait AppendObserver: Send + Sync {
    /// `records` were appended to `key`'s log; `view` is the run after them.
    fn appended(&self, key: &RunKey, records: &[EventRecord], view: &RunState);
}

/// Default number of watches open at once.
pub const DEFAULT_MAX_WATCHERS: usize = 256;

/// Per-run append signals (see the module doc). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RunNotifier {
    runs: Mutex<Runs>,
    open: Arc<AtomicUsize>,
    max_watchers: AtomicUsize,
}

#[derive(Debug)]
struct Runs {
    /// Set by [`RunNotifier::close`]: no more signals.
    closed: bool,
    channels: HashMap<RunKey, watch::Sender<u64>>,
    /// Prune channels nobody watches when the map reaches this size.
    prune_at: usize,
}

const MIN_PRUNE: usize = 64;

impl Default for RunNotifier {
    fn default() -> Self {
        Self {
            runs: Mutex::new(Runs {
                closed: false,
                channels: HashMap::new(),
                prune_at: MIN_PRUNE,
            }),
            open: Arc::new(AtomicUsize::new(0)),
            max_watchers: AtomicUsize::new(DEFAULT_MAX_WATCHERS),
        }
    }
}

impl RunNotifier {
    /// Allow at most `n` watches at once (at least 1).
    pub fn set_max_watchers(&self, n: usize) {
        self.max_watchers.store(n.max(1), Ordering::Relaxed);
    }

    /// Watches open now.
    pub fn watchers(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// An append up to `last_seq` was committed to `key`'s log: wake its watchers.
    pub fn publish(&self, key: &RunKey, last_seq: u64) {
        let mut runs = self.lock();
        let Some(tx) = runs.channels.get(key) else {
            return;
        };
        if tx.receiver_count() == 0 {
            runs.channels.remove(key);
        } else {
            tx.send_replace(last_seq);
        }
    }

    /// The process is shutting down: every watch ends (`changed` answers `false`), now
    /// and for watches taken later, so long-polls answer and streams close instead of
    /// holding the shutdown up; clients resume elsewhere with `after` / `Last-Event-ID`.
    pub fn close(&self) {
        let mut runs = self.lock();
        runs.closed = true;
        runs.channels.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AppendSignals for RunNotifier {
    fn watch(&self, key: &RunKey) -> Result<Box<dyn LogWatch>, WatchError> {
        let max = self.max_watchers.load(Ordering::Relaxed);
        let reserved = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(WatchError::TooManyWatchers(max));
        }
        let slot = Slot(self.open.clone());
        let mut runs = self.lock();
        if runs.closed {
            // A channel whose sender is gone: the watch ends at once.
            let rx = watch::channel(0).1;
            return Ok(Box::new(Watch { rx, _slot: slot }));
        }
        if runs.channels.len() >= runs.prune_at {
            runs.channels.retain(|_, tx| tx.receiver_count() > 0);
            runs.prune_at = (runs.channels.len() * 2).max(MIN_PRUNE);
        }
        let rx = runs
            .channels
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Ok(Box::new(Watch { rx, _slot: slot }))
    }
}

/// Gives back a watcher slot when the watch ends.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Watch {
    rx: watch::Receiver<u64>,
    _slot: Slot,
}

#[async_trait]
impl LogWatch for Watch {
    async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(run: &str) -> RunKey {
        RunKey::new("t", run)
    }

    #[tokio::test]
    async fn given_a_watch_when_its_run_is_appended_to_then_it_wakes() {
        let n = RunNotifier::default();
        let mut w = n.watch(&key("a")).expect("watch");
        n.publish(&key("b"), 3);
        let early = tokio::time::timeout(Duration::from_millis(20), w.changed()).await;
        assert!(early.is_err(), "another run's append does not wake it");
        n.publish(&key("a"), 4);
        assert!(tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("woken"));
    }

    #[tokio::test]
    async fn given_an_append_before_the_wait_when_waiting_then_it_is_not_missed() {
        let n = RunNotifier::default();
        let mut w = n.watch(&key("a")).expect("watch");
        n.publish(&key("a"), 2);
        assert!(tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the earlier publish counts"));
    }

    #[tokio::test]
    async fn given_watches_when_the_notifier_closes_then_they_end_and_new_ones_end_at_once() {
        let n = RunNotifier::default();
        let mut w = n.watch(&key("a")).expect("watch");
        n.close();
        assert!(!w.changed().await, "an open watch ends");
        let mut late = n.watch(&key("a")).expect("watch");
        assert!(
            !late.changed().await,
            "a watch taken after close ends at once"
        );
    }

    #[test]
    fn given_the_watcher_cap_when_exceeded_then_the_watch_is_refused_until_one_ends() {
        let n = RunNotifier::default();
        n.set_max_watchers(2);
        let a = n.watch(&key("a")).expect("first");
        let _b = n.watch(&key("a")).expect("second");
        assert!(matches!(
            n.watch(&key("c")),
            Err(WatchError::TooManyWatchers(2))
        ));
        drop(a);
        assert_eq!(n.watchers(), 1);
        assert!(n.watch(&key("c")).is_ok());
    }

    #[test]
    fn given_many_runs_nobody_watches_when_watched_again_then_old_channels_are_pruned() {
        let n = RunNotifier::default();
        n.set_max_watchers(10_000);
        for i in 0..1_000 {
            drop(n.watch(&key(&format!("r{i}"))).expect("watch"));
        }
        assert!(n.lock().channels.len() <= MIN_PRUNE * 2);
    }
}
