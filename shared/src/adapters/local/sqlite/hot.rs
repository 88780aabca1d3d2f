//! The state of runs in flight, kept in memory so an append need not fold the log.

use std::collections::HashMap;

use crate::domain::{RunKey, RunState};

/// Most runs whose state is kept in memory. Beyond it an arbitrary one is dropped (it is
/// folded from the log when next needed), so memory stays flat however many runs pass.
const HOT_RUNS: usize = 16_384;

/// The state of runs in flight as of their last append through this store (the log stays
/// the truth: a run missing here is folded from it). Updated on the writer thread after
/// each commit, in commit order, so it is never ahead of or behind what this store wrote;
/// a process must be the only writer of its database file (as `crane-local` is). Finished
/// runs leave the cache.
#[derive(Default)]
pub(super) struct HotRuns {
    pub(super) states: HashMap<RunKey, RunState>,
}

impl HotRuns {
    /// `view` was just committed (called on the writer thread, in commit order).
    pub(super) fn committed(&mut self, key: &RunKey, view: RunState) {
        if view.status.is_finished() {
            self.states.remove(key);
            return;
        }
        if self.states.len() >= HOT_RUNS && !self.states.contains_key(key) {
            if let Some(evicted) = self.states.keys().next().cloned() {
                self.states.remove(&evicted);
            }
        }
        self.states.insert(key.clone(), view);
    }
}
