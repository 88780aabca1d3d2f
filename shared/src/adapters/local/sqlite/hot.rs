//! The state of runs in flight and of the runs that finished last, kept in memory so an
//! append need not fold the log and a read need not touch the database.

use std::collections::{HashMap, VecDeque};

use super::shrink_if_sparse;
use crate::domain::{RunKey, RunState};

/// Most runs whose state is kept in memory. Beyond it an arbitrary one is dropped (it is
/// folded from the log when next needed), so memory stays flat however many runs pass.
const HOT_RUNS: usize = 4_096;

/// Most finished runs kept in memory, the last to finish: a client waiting for its run
/// (`Prefer: wait`, polling, a stream) reads it right after it finishes.
const RECENT_RUNS: usize = 1_024;

/// The state of runs in flight, and of the last runs to finish, as of their last append
/// through this store (the log stays the truth: a run missing here is folded from it).
/// Updated on the writer thread after each commit, in commit order, so it is never ahead
/// of or behind what this store wrote; a process must be the only writer of its database
/// file (as `crane-local` is).
#[derive(Default)]
pub(super) struct HotRuns {
    states: HashMap<RunKey, RunState>,
    recent: HashMap<RunKey, RunState>,
    /// The keys of `recent`, oldest first (a key may also be listed for a run that has
    /// since left `recent`; it is skipped).
    finished_order: VecDeque<RunKey>,
}

impl HotRuns {
    /// The run's state as of its last append, if kept.
    pub(super) fn get(&self, key: &RunKey) -> Option<&RunState> {
        self.states.get(key).or_else(|| self.recent.get(key))
    }

    /// `view` was just committed (called on the writer thread, in commit order).
    pub(super) fn committed(&mut self, key: &RunKey, view: RunState) {
        if view.status.is_finished() {
            if self.states.remove(key).is_some() {
                shrink_if_sparse(&mut self.states);
            }
            if self.recent.insert(key.clone(), view).is_none() {
                self.finished_order.push_back(key.clone());
            }
            while self.recent.len() > RECENT_RUNS {
                let Some(oldest) = self.finished_order.pop_front() else {
                    break;
                };
                self.recent.remove(&oldest);
            }
            return;
        }
        self.recent.remove(key);
        if self.states.len() >= HOT_RUNS && !self.states.contains_key(key) {
            if let Some(evicted) = self.states.keys().next().cloned() {
                self.states.remove(&evicted);
            }
        }
        self.states.insert(key.clone(), view);
    }

    /// The run's view was written whole (`RunViewStore::put`): what is kept of it no longer
    /// says what a read must answer.
    pub(super) fn forget(&mut self, key: &RunKey) {
        self.states.remove(key);
        self.recent.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fold, Event, EventRecord, RunStatus};

    fn state(run: &str, status: RunStatus) -> RunState {
        let created = Event::RunCreated {
            tenant: "t".into(),
            prompt: "p".into(),
            correlation_id: "c".into(),
            idempotency_key: None,
        };
        let mut s = fold(run, &[EventRecord::new(1, chrono::Utc::now(), created)])
            .expect("a created run folds");
        s.status = status;
        s
    }

    #[test]
    fn given_runs_that_finish_when_more_than_kept_then_the_last_to_finish_stay() {
        let mut hot = HotRuns::default();
        let n = RECENT_RUNS + 10;
        for i in 0..n {
            let key = RunKey::new("t", format!("r{i}"));
            hot.committed(&key, state(&key.run_id, RunStatus::Running));
            hot.committed(&key, state(&key.run_id, RunStatus::Completed));
        }
        assert!(
            hot.states.is_empty(),
            "finished runs leave the runs in flight"
        );
        assert_eq!(hot.recent.len(), RECENT_RUNS);
        assert!(
            hot.get(&RunKey::new("t", "r0")).is_none(),
            "the first to finish went"
        );
        let last = RunKey::new("t", format!("r{}", n - 1));
        assert_eq!(hot.get(&last).map(|s| s.status), Some(RunStatus::Completed));
    }

    #[test]
    fn given_a_finished_run_appended_to_again_when_read_then_its_last_state_answers() {
        let mut hot = HotRuns::default();
        let key = RunKey::new("t", "r");
        hot.committed(&key, state("r", RunStatus::Failed));
        hot.committed(&key, state("r", RunStatus::Compensating));
        assert_eq!(
            hot.get(&key).map(|s| s.status),
            Some(RunStatus::Compensating)
        );
        hot.committed(&key, state("r", RunStatus::Compensated));
        assert_eq!(
            hot.get(&key).map(|s| s.status),
            Some(RunStatus::Compensated)
        );
        hot.forget(&key);
        assert!(hot.get(&key).is_none());
    }
}
