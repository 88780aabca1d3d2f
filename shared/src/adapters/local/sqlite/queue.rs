//! The job queue in memory: which jobs are queued, when each is due and who holds it.
//!
//! The `job_queue` table stays the durable copy of what is queued and when (a job is inserted
//! with the append that creates it and deleted once done), and this copy follows it on the
//! writer thread, in commit order, like the state of runs in flight. Leases live here
//! only: taking due jobs writes nothing, and asking when the next job is due scans
//! nothing. A process that stops loses its leases with it, so every job found at start-up
//! may have been held part-way (see [`JobQueue::loaded`]). As for the rest of the store's
//! memory, this process must be the only writer of its database file.

use std::collections::{BTreeSet, HashMap};

use super::jobs::{JobKind, LeasedJob};
use super::shrink_if_sparse;
use crate::domain::RunKey;

/// One queued job.
struct Queued {
    /// Its key in the table (one job per step attempt, one per saga).
    dedupe: String,
    due: i64,
    /// Held until then (milliseconds since the epoch), by this process.
    lease_until: Option<i64>,
    kind: JobKind,
}

impl Queued {
    /// When the job can be taken: when it is due, or when its holder's lease runs out.
    fn ready_at(&self) -> i64 {
        self.lease_until.map_or(self.due, |l| l.max(self.due))
    }
}

/// The queued jobs by id (this process's handle on them, not stored), by key, and in the
/// order they can be taken.
#[derive(Default)]
pub(super) struct JobQueue {
    jobs: HashMap<i64, Queued>,
    by_dedupe: HashMap<String, i64>,
    last_id: i64,
    /// `(ready_at, id)` of every job.
    order: BTreeSet<(i64, i64)>,
    /// The step jobs of each run.
    by_run: HashMap<RunKey, Vec<i64>>,
    /// The ids queued when the store was opened.
    loaded: Vec<i64>,
}

impl JobQueue {
    /// The queue as the table holds it at start-up (`(dedupe, due, kind)` rows): no job is
    /// held.
    pub(super) fn from_rows(rows: impl IntoIterator<Item = (String, i64, JobKind)>) -> Self {
        let mut queue = Self::default();
        for (dedupe, due, kind) in rows {
            queue.queued(dedupe, due, kind);
        }
        queue.loaded = queue.jobs.keys().copied().collect();
        queue.loaded.sort_unstable();
        queue
    }

    /// The ids of the jobs queued when the store was opened: any of them may have been held
    /// by the previous process when it stopped.
    pub(super) fn loaded(&self) -> &[i64] {
        &self.loaded
    }

    /// The job keyed `dedupe` was committed as due at `due` (inserted, or its due time
    /// moved): a job already queued keeps its id, its holder and what it does. Its id.
    pub(super) fn queued(&mut self, dedupe: String, due: i64, kind: JobKind) -> i64 {
        if let Some(&id) = self.by_dedupe.get(&dedupe) {
            if let Some(job) = self.jobs.get_mut(&id) {
                self.order.remove(&(job.ready_at(), id));
                job.due = due;
                self.order.insert((job.ready_at(), id));
            }
            return id;
        }
        self.last_id += 1;
        let id = self.last_id;
        if let JobKind::Step { job } = &kind {
            self.by_run.entry(job.key()).or_default().push(id);
        }
        let job = Queued {
            dedupe: dedupe.clone(),
            due,
            lease_until: None,
            kind,
        };
        self.order.insert((job.ready_at(), id));
        self.jobs.insert(id, job);
        self.by_dedupe.insert(dedupe, id);
        id
    }

    /// The table keys of the jobs `ids` still queued.
    pub(super) fn keys(&self, ids: &[i64]) -> Vec<String> {
        ids.iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|job| job.dedupe.clone())
            .collect()
    }

    /// Job `id` was committed as due at `due`, held by nobody.
    pub(super) fn rescheduled(&mut self, id: i64, due: i64) {
        if let Some(job) = self.jobs.get_mut(&id) {
            self.order.remove(&(job.ready_at(), id));
            job.due = due;
            job.lease_until = None;
            self.order.insert((job.ready_at(), id));
        }
    }

    /// The jobs were deleted.
    pub(super) fn finished(&mut self, ids: &[i64]) {
        for id in ids {
            if let Some(job) = self.jobs.remove(id) {
                self.order.remove(&(job.ready_at(), *id));
                self.by_dedupe.remove(&job.dedupe);
                if let JobKind::Step { job } = &job.kind {
                    let key = job.key();
                    if let Some(ids) = self.by_run.get_mut(&key) {
                        ids.retain(|other| other != id);
                        if ids.is_empty() {
                            self.by_run.remove(&key);
                        }
                    }
                }
            }
        }
        shrink_if_sparse(&mut self.jobs);
        shrink_if_sparse(&mut self.by_dedupe);
        shrink_if_sparse(&mut self.by_run);
    }

    /// Take jobs ready at `now` (due, and held by nobody or by a lease that ran out),
    /// earliest first, holding each until `now + lease_ms`: up to `limit`, except that a
    /// step job comes with every other ready step job of its run (a level is run as one
    /// wave; split, its parts would race each other for the run).
    pub(super) fn lease(&mut self, now: i64, limit: usize, lease_ms: i64) -> Vec<LeasedJob> {
        let until = now.saturating_add(lease_ms);
        let mut out: Vec<LeasedJob> = Vec::new();
        while out.len() < limit {
            let Some(&(at, id)) = self.order.first() else {
                break;
            };
            if at > now {
                break;
            }
            // The earliest first, so that each turn takes it whatever the index says.
            let siblings = match self.jobs.get(&id).map(|j| &j.kind) {
                Some(JobKind::Step { job }) => self.by_run.get(&job.key()).cloned(),
                _ => None,
            };
            let others = siblings.into_iter().flatten().filter(|other| *other != id);
            for id in std::iter::once(id).chain(others.collect::<Vec<_>>()) {
                if let Some(job) = self.take(id, now, until) {
                    out.push(job);
                }
            }
            if !self.jobs.contains_key(&id) {
                // Not queued although ordered: drop the stray entry rather than spin on it.
                self.order.remove(&(at, id));
            }
        }
        out
    }

    /// Hold job `id` until `until` if it is ready at `now`.
    fn take(&mut self, id: i64, now: i64, until: i64) -> Option<LeasedJob> {
        let job = self.jobs.get_mut(&id)?;
        let at = job.ready_at();
        if at > now {
            return None;
        }
        self.order.remove(&(at, id));
        job.lease_until = Some(until);
        self.order.insert((job.ready_at(), id));
        Some(LeasedJob {
            id,
            kind: job.kind.clone(),
        })
    }

    /// When the next job can be taken, if any is queued.
    pub(super) fn next_ready(&self) -> Option<i64> {
        self.order.first().map(|(at, _)| *at)
    }

    /// How many jobs are queued, and the due time of the earliest one ready at `now` that
    /// nobody holds.
    pub(super) fn stats(&self, now: i64) -> (usize, Option<i64>) {
        let oldest = self
            .order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, id)| self.jobs.get(id))
            .map(|job| job.due)
            .min();
        (self.jobs.len(), oldest)
    }

    /// How many jobs are queued.
    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunKey;

    fn step(run: &str, step: &str) -> JobKind {
        JobKind::Step {
            job: crate::domain::StepJob {
                tenant: "t".into(),
                run_id: run.into(),
                step_id: step.into(),
                attempt: 1,
                correlation_id: "c".into(),
            },
        }
    }

    fn saga(run: &str) -> JobKind {
        JobKind::Compensate {
            key: RunKey::new("t", run),
            correlation_id: "c".into(),
            attempt: 1,
        }
    }

    /// The table key of the `n`th job queued (ids are handed out from 1, in order).
    fn key(n: i64) -> String {
        format!("job-{n}")
    }

    fn ids(jobs: &[LeasedJob]) -> Vec<i64> {
        jobs.iter().map(|j| j.id).collect()
    }

    #[test]
    fn given_jobs_due_at_different_times_when_leased_then_only_due_ones_come_earliest_first() {
        let mut q = JobQueue::default();
        q.queued(key(1), 300, saga("a"));
        q.queued(key(2), 100, saga("b"));
        q.queued(key(3), 200, saga("c"));
        q.queued(key(4), 900, saga("d"));
        assert_eq!(q.next_ready(), Some(100));
        assert_eq!(ids(&q.lease(300, 10, 1_000)), vec![2, 3, 1]);
        assert_eq!(
            q.lease(300, 10, 1_000).len(),
            0,
            "held jobs are not taken twice"
        );
        assert_eq!(q.next_ready(), Some(900), "the next is the one not yet due");
        assert_eq!(q.lease(900, 10, 1_000)[0].kind, saga("d"));
    }

    #[test]
    fn given_a_limit_when_leased_then_no_more_than_it_are_taken() {
        let mut q = JobQueue::default();
        for id in 1..=5 {
            q.queued(key(id), 0, saga("a"));
        }
        assert_eq!(ids(&q.lease(0, 2, 10)), vec![1, 2]);
        assert_eq!(ids(&q.lease(0, 0, 10)), Vec::<i64>::new());
        assert_eq!(ids(&q.lease(0, 10, 10)), vec![3, 4, 5]);
    }

    #[test]
    fn given_a_run_with_several_ready_steps_when_leased_then_they_come_together_past_the_limit() {
        let mut q = JobQueue::default();
        q.queued(key(1), 0, step("a", "s1"));
        q.queued(key(2), 0, step("b", "s1"));
        q.queued(key(3), 5, step("a", "s2"));
        q.queued(key(4), 900, step("a", "s3"));
        q.queued(key(5), 0, saga("a"));
        let taken = q.lease(10, 1, 1_000);
        assert_eq!(
            ids(&taken),
            vec![1, 3],
            "run a's ready steps, not its delayed one"
        );
        assert_eq!(ids(&q.lease(10, 1, 1_000)), vec![2]);
        assert_eq!(ids(&q.lease(10, 5, 1_000)), vec![5], "a saga comes alone");
        q.finished(&[1, 3]);
        assert_eq!(ids(&q.lease(900, 5, 1_000)), vec![4]);
        q.finished(&[2, 4, 5]);
        assert!(q.by_run.is_empty(), "nothing is kept for runs with no job");
    }

    #[test]
    fn given_an_ordered_id_with_no_job_when_leased_then_it_is_dropped_not_spun_on() {
        let mut q = JobQueue::default();
        q.queued(key(1), 5, step("a", "s1"));
        q.order.insert((0, 99));
        assert_eq!(ids(&q.lease(10, 5, 1_000)), vec![1]);
        assert!(!q.order.iter().any(|(_, id)| *id == 99));
    }

    #[test]
    fn given_a_lease_that_ran_out_when_leased_again_then_the_job_comes_back() {
        let mut q = JobQueue::default();
        q.queued(key(1), 0, saga("a"));
        assert_eq!(ids(&q.lease(0, 10, 50)), vec![1]);
        assert_eq!(
            q.next_ready(),
            Some(50),
            "ready again when the lease runs out"
        );
        assert!(q.lease(49, 10, 50).is_empty());
        assert_eq!(ids(&q.lease(50, 10, 50)), vec![1]);
    }

    #[test]
    fn given_a_held_job_queued_again_earlier_when_leased_then_its_holder_keeps_it() {
        let mut q = JobQueue::default();
        q.queued(key(1), 500, saga("a"));
        assert!(q.lease(0, 10, 1_000).is_empty());
        q.queued(key(1), 10, saga("other"));
        let taken = q.lease(10, 10, 1_000);
        assert_eq!(ids(&taken), vec![1]);
        assert_eq!(
            taken[0].kind,
            saga("a"),
            "a job queued again keeps what it does"
        );
        q.queued(key(1), 0, saga("a"));
        assert!(q.lease(20, 10, 1_000).is_empty(), "still held");
        assert_eq!(q.next_ready(), Some(1_010));
    }

    #[test]
    fn given_held_jobs_when_rescheduled_or_finished_then_the_queue_follows() {
        let mut q = JobQueue::default();
        q.queued(key(1), 0, saga("a"));
        q.queued(key(2), 0, saga("b"));
        assert_eq!(q.lease(0, 10, 1_000).len(), 2);
        q.rescheduled(1, 40);
        q.finished(&[2, 99]);
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.next_ready(),
            Some(40),
            "a rescheduled job is held by nobody"
        );
        assert_eq!(ids(&q.lease(40, 10, 1_000)), vec![1]);
        q.finished(&[1]);
        assert_eq!((q.len(), q.next_ready()), (0, None));
        q.rescheduled(1, 0);
        assert_eq!(q.len(), 0, "a job no longer queued is not brought back");
    }

    #[test]
    fn given_jobs_due_held_and_delayed_when_counted_then_the_oldest_waiting_is_one_nobody_holds() {
        let mut q = JobQueue::default();
        q.queued(key(1), 10, saga("a"));
        assert_eq!(q.lease(10, 1, 1_000).len(), 1);
        q.queued(key(2), 20, saga("b"));
        q.queued(key(3), 30, saga("c"));
        q.queued(key(4), 5_000, saga("d"));
        assert_eq!(q.stats(100), (4, Some(20)));
        assert_eq!(q.stats(15), (4, None));
    }

    #[test]
    fn given_rows_at_start_up_when_loaded_then_all_are_queued_unheld_and_named() {
        let q = JobQueue::from_rows([(key(7), 0, saga("a")), (key(3), 50, saga("b"))]);
        assert_eq!(q.loaded(), &[1, 2]);
        assert_eq!(q.keys(&[2, 1, 9]), vec![key(3), key(7)]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_ready(), Some(0));
    }
}
