//! The state of runs in flight and of the runs that finished last, kept in memory so an
//! append need not fold the log and a read need not touch the database.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::shrink_if_sparse;
use crate::domain::{Output, RunKey, RunState};

/// Most runs whose state is kept in memory. Beyond it an arbitrary one is dropped (it is
/// folded from the log when next needed), so memory stays flat however many runs pass.
const HOT_RUNS: usize = 4_096;

/// Most finished runs kept in memory, the last to finish: a client waiting for its run
/// (`Prefer: wait`, polling, a stream) reads it right after it finishes.
const RECENT_RUNS: usize = 1_024;

/// Most memory the finished runs kept may hold, as [`approx_bytes`] estimates it: a run's
/// state is a few kilobytes, but its steps' outputs may be up to 64 KB of JSON each, and
/// several times that in memory. Bounded by count alone, `crane-local` held ~125 MiB after
/// runs of the seed prompt (each holding a list of 100 todos), ~37 MiB after runs of the
/// calculator prompt; runs with large outputs could have kept gigabytes.
const RECENT_BYTES: usize = 32 << 20;

/// The state of runs in flight, and of the last runs to finish, as of their last append
/// through this store (the log stays the truth: a run missing here is folded from it).
/// Updated on the writer thread after each commit, in commit order, so it is never ahead
/// of or behind what this store wrote; a process must be the only writer of its database
/// file (as `crane-local` is).
#[derive(Default)]
pub(super) struct HotRuns {
    states: HashMap<RunKey, RunState>,
    /// Finished runs, each with its [`approx_bytes`].
    recent: HashMap<RunKey, (RunState, usize)>,
    /// The sum of `recent`'s sizes.
    recent_bytes: usize,
    /// The keys of `recent`, oldest first (a key may also be listed for a run that has
    /// since left `recent`; it is skipped).
    finished_order: VecDeque<RunKey>,
}

impl HotRuns {
    /// The run's state as of its last append, if kept.
    pub(super) fn get(&self, key: &RunKey) -> Option<&RunState> {
        self.states
            .get(key)
            .or_else(|| self.recent.get(key).map(|(state, _)| state))
    }

    /// `view` was just committed (called on the writer thread, in commit order).
    pub(super) fn committed(&mut self, key: &RunKey, view: RunState) {
        if view.status.is_finished() {
            if self.states.remove(key).is_some() {
                shrink_if_sparse(&mut self.states);
            }
            let bytes = approx_bytes(&view);
            self.recent_bytes += bytes;
            match self.recent.insert(key.clone(), (view, bytes)) {
                Some((_, was)) => self.recent_bytes -= was,
                None => self.finished_order.push_back(key.clone()),
            }
            // The run just kept stays even alone over the budget: it is the one a client
            // is about to read.
            while self.recent.len() > RECENT_RUNS
                || (self.recent_bytes > RECENT_BYTES && self.recent.len() > 1)
            {
                let Some(oldest) = self.finished_order.pop_front() else {
                    break;
                };
                if &oldest == key {
                    self.finished_order.push_back(oldest);
                    continue;
                }
                self.forget_recent(&oldest);
            }
            return;
        }
        self.forget_recent(key);
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
        self.forget_recent(key);
    }

    fn forget_recent(&mut self, key: &RunKey) {
        if let Some((_, bytes)) = self.recent.remove(key) {
            self.recent_bytes -= bytes;
        }
    }
}

/// Roughly the memory a run's state holds: a fixed share for the run and each step, plus
/// what grows with the run, its prompt, its steps' outputs (their JSON text) and its
/// result.
fn approx_bytes(state: &RunState) -> usize {
    const RUN: usize = 1_024;
    const STEP: usize = 512;
    let outputs: usize = state
        .steps
        .iter()
        .filter_map(|step| step.output.as_ref())
        .map(Output::len)
        .sum();
    RUN + state.prompt.len()
        + state.steps.len() * STEP
        + outputs
        + state.result.as_ref().map_or(0, value_bytes)
}

/// Roughly the memory a JSON value holds: a node for each value, its text, and for an
/// object its map's nodes (a B-tree whose nodes hold up to 11 members each, keys and
/// values in place) and its keys' text.
fn value_bytes(value: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    const MAP_NODE: usize = 11 * (std::mem::size_of::<String>() + NODE) + 16;
    match value {
        Value::String(s) => NODE + s.len(),
        Value::Array(items) => NODE + items.iter().map(value_bytes).sum::<usize>(),
        Value::Object(members) => {
            // A value in a map is held in the map's node, not in a node of its own.
            let held: usize = members
                .iter()
                .map(|(k, v)| k.len() + value_bytes(v) - NODE)
                .sum();
            NODE + members.len().div_ceil(11) * MAP_NODE + held
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => NODE,
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

    fn finished_with(run: &str, result: Value) -> RunState {
        let mut s = state(run, RunStatus::Completed);
        s.result = Some(result);
        s
    }

    #[test]
    fn given_finished_runs_with_large_results_when_over_the_byte_budget_then_the_oldest_go() {
        let mut hot = HotRuns::default();
        let big = || Value::String("x".repeat(1 << 20));
        let n = RECENT_BYTES / (1 << 20) + 8;
        for i in 0..n {
            let key = RunKey::new("t", format!("r{i}"));
            hot.committed(&key, finished_with(&key.run_id, big()));
            assert!(
                hot.recent_bytes <= RECENT_BYTES,
                "over the budget after run {i}"
            );
            let sum: usize = hot.recent.values().map(|(_, b)| b).sum();
            assert_eq!(hot.recent_bytes, sum, "the total follows the runs kept");
        }
        assert!(
            hot.recent.len() < RECENT_BYTES / (1 << 20),
            "{}",
            hot.recent.len()
        );
        assert!(
            hot.get(&RunKey::new("t", "r0")).is_none(),
            "the first to finish went"
        );
        let last = RunKey::new("t", format!("r{}", n - 1));
        assert!(hot.get(&last).is_some(), "the last to finish stays");
    }

    #[test]
    fn given_one_run_larger_than_the_budget_when_it_finishes_then_it_alone_is_kept() {
        let mut hot = HotRuns::default();
        let small = RunKey::new("t", "small");
        hot.committed(&small, finished_with("small", Value::Null));
        let huge = RunKey::new("t", "huge");
        let big = Value::String("x".repeat(RECENT_BYTES + 1));
        hot.committed(&huge, finished_with("huge", big));
        assert!(hot.get(&huge).is_some(), "a client is about to read it");
        assert!(hot.get(&small).is_none());
        assert_eq!(hot.recent.len(), 1);
        // A size leaves with its run (here a state not finished takes it out of them).
        hot.committed(&huge, state("huge", RunStatus::Running));
        assert_eq!((hot.recent.len(), hot.recent_bytes), (0, 0));
    }

    #[test]
    fn given_json_values_when_sized_then_text_members_and_map_nodes_count() {
        let node = std::mem::size_of::<Value>();
        let map_node = 11 * (std::mem::size_of::<String>() + node) + 16;
        assert_eq!(value_bytes(&Value::Null), node);
        assert_eq!(value_bytes(&serde_json::json!("abcd")), node + 4);
        assert_eq!(
            value_bytes(&serde_json::json!([1, "ab"])),
            node + node + (node + 2)
        );
        assert_eq!(
            value_bytes(&serde_json::json!({"key": "v"})),
            node + map_node + 3 + 1
        );
        let twelve: serde_json::Map<String, Value> =
            (0..12).map(|i| (format!("k{i:02}"), Value::Null)).collect();
        assert_eq!(
            value_bytes(&Value::Object(twelve)),
            node + 2 * map_node + 12 * 3,
            "a twelfth member needs a second node"
        );
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
