//! The durable job queue (the outbox): step and compensation jobs, leased by the local
//! runtime's workers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::queue::JobQueue;
use super::{decode, encode, poisoned, sql_err, table_exists, SqliteStore};
use crate::domain::{Effect, RunKey, StepJob};

use crate::ports::{StepDispatcher, StoreResult};

/// A job in the local queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Run one attempt of a step.
    Step {
        /// The step, its run and its attempt.
        job: StepJob,
    },
    /// Run the saga that undoes a run's completed steps.
    Compensate {
        /// The run to compensate.
        key: RunKey,
        /// The run's correlation id, carried into the saga's logs.
        correlation_id: String,
        /// The saga attempt (1 unless an operator asked for a retry).
        #[serde(default = "first_saga")]
        attempt: u32,
    },
}

fn first_saga() -> u32 {
    1
}

impl JobKind {
    fn dedupe(&self) -> String {
        match self {
            JobKind::Step { job } => format!(
                "step:{}/{}/{}/{}",
                job.tenant, job.run_id, job.step_id, job.attempt
            ),
            JobKind::Compensate { key, attempt, .. } if *attempt <= 1 => {
                format!("compensate:{key}")
            }
            JobKind::Compensate { key, attempt, .. } => format!("compensate:{key}#{attempt}"),
        }
    }

    pub(super) fn from_effect(effect: &Effect) -> (JobKind, u64) {
        match effect {
            Effect::Dispatch { job, delay_ms } => (JobKind::Step { job: job.clone() }, *delay_ms),
            Effect::Compensate {
                key,
                correlation_id,
                attempt,
            } => (
                JobKind::Compensate {
                    key: key.clone(),
                    correlation_id: correlation_id.clone(),
                    attempt: *attempt,
                },
                0,
            ),
        }
    }
}

/// A job taken from the queue; it stays leased until completed or rescheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    /// The job's handle in this process, to finish or reschedule it.
    pub id: i64,
    /// What the job does.
    pub kind: JobKind,
}

impl SqliteStore {
    /// Lease up to `limit` due jobs for `lease_ms` (and with a step job every other ready
    /// job of its run): taken from the queue in memory, writing nothing.
    pub async fn lease_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_ms: i64,
    ) -> StoreResult<Vec<LeasedJob>> {
        Ok(self.queue.lock().map_err(|_| poisoned())?.lease(
            now.timestamp_millis(),
            limit,
            lease_ms,
        ))
    }

    /// The job is done: remove it.
    pub async fn finish_job(&self, id: i64) -> StoreResult<()> {
        self.finish_jobs(vec![id]).await
    }

    /// The jobs are done: remove them, in one write.
    pub async fn finish_jobs(&self, ids: Vec<i64>) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let queue = self.queue.clone();
        let keys = queue.lock().map_err(|_| poisoned())?.keys(&ids);
        if keys.is_empty() {
            return Ok(());
        }
        let hook_ids = ids;
        self.writer
            .write_checked(
                move |conn| {
                    let mut stmt = conn
                        .prepare_cached("DELETE FROM job_queue WHERE dedupe = ?1")
                        .map_err(sql_err)?;
                    for key in &keys {
                        stmt.execute(params![key]).map_err(sql_err)?;
                    }
                    Ok(())
                },
                Some(Box::new(move |written: &StoreResult<()>| {
                    if let (Ok(()), Ok(mut queue)) = (written, queue.lock()) {
                        queue.finished(&hook_ids);
                    }
                })),
            )
            .await
    }

    /// Run the job again at `due`, held by nobody.
    pub async fn reschedule_job(&self, id: i64, due: DateTime<Utc>) -> StoreResult<()> {
        let due_ms = due.timestamp_millis();
        let queue = self.queue.clone();
        let Some(key) = queue.lock().map_err(|_| poisoned())?.keys(&[id]).pop() else {
            return Ok(());
        };
        self.writer
            .write_checked(
                move |conn| {
                    conn.prepare_cached("UPDATE job_queue SET due_at = ?1 WHERE dedupe = ?2")
                        .map_err(sql_err)?
                        .execute(params![due_ms, key])
                        .map_err(sql_err)?;
                    Ok(())
                },
                Some(Box::new(move |written: &StoreResult<()>| {
                    if let (Ok(()), Ok(mut queue)) = (written, queue.lock()) {
                        queue.rescheduled(id, due_ms);
                    }
                })),
            )
            .await?;
        self.jobs_ready.notify_one();
        Ok(())
    }

    /// When the next job can be taken (due, and not held by a live lease), if any is
    /// queued.
    pub async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let at = self.queue.lock().map_err(|_| poisoned())?.next_ready();
        Ok(at.and_then(DateTime::from_timestamp_millis))
    }

    /// The jobs queued when this store was opened. Leases live in memory, so the process
    /// that wrote the database before may have held any of them when it stopped: whoever
    /// takes one of them resumes its whole run (some may be done by the time this is
    /// called).
    pub fn inherited_jobs(&self) -> Vec<i64> {
        self.queue
            .lock()
            .map(|q| q.loaded().to_vec())
            .unwrap_or_default()
    }

    /// The job queue at `now`: how many jobs are queued (due, delayed or leased), and how
    /// long the oldest due job nobody holds has waited past its due time (zero if none).
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<(u64, std::time::Duration)> {
        let now_ms = now.timestamp_millis();
        let (count, oldest) = self.queue.lock().map_err(|_| poisoned())?.stats(now_ms);
        let lag_ms = oldest.map_or(0, |due| now_ms.saturating_sub(due).max(0));
        Ok((
            u64::try_from(count).unwrap_or(u64::MAX),
            std::time::Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)),
        ))
    }

    /// Number of jobs queued (for health and tests).
    pub async fn pending_jobs(&self) -> StoreResult<u64> {
        let n = self.queue.lock().map_err(|_| poisoned())?.len();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// Jobs to insert, encoded by the caller off the writer thread: each row's dedupe key,
/// payload and due time, and the jobs themselves for the queue in memory.
pub(super) struct NewJobs {
    rows: Vec<(String, String, i64)>,
    kinds: Vec<Option<JobKind>>,
}

/// The jobs an insert committed: `(index in its NewJobs, due)`.
pub(super) type Queued = Vec<(usize, i64)>;

impl NewJobs {
    pub(super) fn of(jobs: Vec<(JobKind, u64)>) -> StoreResult<Self> {
        let now_ms = Utc::now().timestamp_millis();
        let mut rows = Vec::with_capacity(jobs.len());
        let mut kinds = Vec::with_capacity(jobs.len());
        for (kind, delay) in jobs {
            let due = now_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX / 2));
            rows.push((kind.dedupe(), encode(&kind)?, due));
            kinds.push(Some(kind));
        }
        Ok(Self { rows, kinds })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Split into what the transaction writes and what its hook hands to the queue.
    pub(super) fn split(self) -> (Vec<(String, String, i64)>, JobsToQueue) {
        let keys = self.rows.iter().map(|(key, _, _)| key.clone()).collect();
        (
            self.rows,
            JobsToQueue {
                keys,
                kinds: self.kinds,
            },
        )
    }
}

/// The jobs of an insert, waiting for its commit to join the queue in memory.
pub(super) struct JobsToQueue {
    keys: Vec<String>,
    kinds: Vec<Option<JobKind>>,
}

impl JobsToQueue {
    /// The insert committed `queued`: put them in `queue`.
    pub(super) fn committed(mut self, queued: &Queued, queue: &mut JobQueue) {
        for &(i, due) in queued {
            let kind = self.kinds.get_mut(i).and_then(Option::take);
            if let (Some(kind), Some(key)) = (kind, self.keys.get_mut(i)) {
                queue.queued(std::mem::take(key), due, kind);
            }
        }
    }
}

/// Insert `rows` (see [`NewJobs`]): a job queued again (same dedupe key) is due at the
/// earlier of the two times (an approved step's job replaces its expiry timer, due much
/// later); otherwise nothing changes. Returns the rows inserted or moved.
pub(super) fn insert_jobs(tx: &Connection, rows: &[(String, String, i64)]) -> StoreResult<Queued> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO job_queue (dedupe, payload, due_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (dedupe) DO UPDATE SET due_at = excluded.due_at
             WHERE excluded.due_at < job_queue.due_at
             RETURNING due_at",
        )
        .map_err(sql_err)?;
    let mut queued = Vec::with_capacity(rows.len());
    for (i, (dedupe, payload, due)) in rows.iter().enumerate() {
        let mut returned = stmt.query(params![dedupe, payload, due]).map_err(sql_err)?;
        while let Some(row) = returned.next().map_err(sql_err)? {
            queued.push((i, row.get(0).map_err(sql_err)?));
        }
    }
    Ok(queued)
}

/// Every queued job, for the queue in memory at start-up; a row that does not decode is
/// left in the table and said.
pub(super) fn load_queue(conn: &Connection) -> StoreResult<JobQueue> {
    let mut stmt = conn
        .prepare("SELECT dedupe, due_at, payload FROM job_queue")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sql_err)?;
    let mut jobs = Vec::new();
    for row in rows {
        let (key, due, payload) = row.map_err(sql_err)?;
        match decode::<JobKind>(&payload) {
            Ok(kind) => jobs.push((key, due, kind)),
            Err(e) => {
                tracing::error!(job = %key, error = %e, "a queued job does not decode: left in the table, not run")
            }
        }
    }
    Ok(JobQueue::from_rows(jobs))
}

/// Move the jobs of a database written by an earlier version (the `jobs` table: a rowid,
/// a unique index, a due index and a lease column per job) to `job_queue` (one row per
/// key), in one transaction.
pub(super) fn migrate_jobs(conn: &Connection) -> StoreResult<()> {
    if table_exists(conn, "jobs")? {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR IGNORE INTO job_queue (dedupe, payload, due_at)
                 SELECT dedupe, payload, due_at FROM jobs;
             DROP TABLE jobs;
             COMMIT;",
        )
        .map_err(sql_err)?;
    }
    Ok(())
}

#[async_trait]
impl StepDispatcher for SqliteStore {
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        let jobs: Vec<(JobKind, u64)> = jobs
            .iter()
            .map(|(j, d)| (JobKind::Step { job: j.clone() }, *d))
            .collect();

        let (rows, to_queue) = NewJobs::of(jobs)?.split();
        let queue = self.queue.clone();
        self.writer
            .write_checked(
                move |tx| insert_jobs(tx, &rows),
                Some(Box::new(move |written: &StoreResult<Queued>| {
                    if let (Ok(queued), Ok(mut queue)) = (written, queue.lock()) {
                        to_queue.committed(queued, &mut queue);
                    }
                })),
            )
            .await?;
        self.jobs_ready.notify_one();
        Ok(())
    }
}
