//! The durable job queue (the outbox): step and compensation jobs, leased by the local
//! runtime's workers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::{decode, encode, sql_err, SqliteStore};
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
    /// The job's row id, to finish or reschedule it.
    pub id: i64,
    /// What the job does.
    pub kind: JobKind,
}

impl SqliteStore {
    /// Lease up to `limit` due jobs for `lease_ms`.
    pub async fn lease_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_ms: i64,
    ) -> StoreResult<Vec<LeasedJob>> {
        let now_ms = now.timestamp_millis();
        self.write(move |tx| {
            let rows: Vec<(i64, String)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, payload FROM jobs
                         WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
                         ORDER BY due_at, id LIMIT ?2",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![now_ms, limit as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)?
            };
            let mut out = Vec::with_capacity(rows.len());
            for (id, payload) in rows {
                tx.prepare_cached("UPDATE jobs SET lease_until = ?1 WHERE id = ?2")
                    .map_err(sql_err)?
                    .execute(params![now_ms + lease_ms, id])
                    .map_err(sql_err)?;
                out.push(LeasedJob {
                    id,
                    kind: decode(&payload)?,
                });
            }
            Ok(out)
        })
        .await
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
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached("DELETE FROM jobs WHERE id = ?1")
                .map_err(sql_err)?;
            for id in &ids {
                stmt.execute(params![id]).map_err(sql_err)?;
            }
            Ok(())
        })
        .await
    }

    /// Run the job again at `due`.
    pub async fn reschedule_job(&self, id: i64, due: DateTime<Utc>) -> StoreResult<()> {
        let due_ms = due.timestamp_millis();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE jobs SET due_at = ?1, lease_until = NULL WHERE id = ?2")
                .map_err(sql_err)?
                .execute(params![due_ms, id])
                .map_err(sql_err)?;
            Ok(())
        })
        .await?;
        self.jobs_ready.notify_one();
        Ok(())
    }

    /// When the earliest job not currently leased is due.
    pub async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(|conn| {
            let ms: Option<i64> = conn
                .prepare_cached("SELECT MIN(COALESCE(MAX(due_at, lease_until), due_at)) FROM jobs")
                .map_err(sql_err)?
                .query_row([], |r| r.get(0))
                .map_err(sql_err)?;
            Ok(ms.and_then(DateTime::from_timestamp_millis))
        })
        .await
    }

    /// Release every lease: called at start-up, when no worker of a previous process can
    /// still hold one, so interrupted jobs resume at once.
    /// Returns the ids of the jobs released: a worker taking one of them again knows its
    /// previous holder stopped part-way.
    pub async fn release_all_leases(&self) -> StoreResult<Vec<i64>> {
        self.write(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE jobs SET lease_until = NULL WHERE lease_until IS NOT NULL RETURNING id",
                )
                .map_err(sql_err)?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))
                .map_err(sql_err)?;
            ids.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
        .await
    }

    /// The job queue at `now`: how many jobs are queued (due, delayed or leased), and how
    /// long the oldest due job nobody holds has waited past its due time (zero if none).
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<(u64, std::time::Duration)> {
        let now_ms = now.timestamp_millis();
        self.read(move |conn| {
            let (count, oldest): (i64, Option<i64>) = conn
                .query_row(
                    "SELECT COUNT(*), MIN(CASE WHEN due_at <= ?1
                         AND (lease_until IS NULL OR lease_until <= ?1) THEN due_at END)
                     FROM jobs",
                    params![now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql_err)?;
            let lag_ms = oldest.map_or(0, |due| now_ms.saturating_sub(due).max(0));
            Ok((
                u64::try_from(count).unwrap_or(0),
                std::time::Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)),
            ))
        })
        .await
    }

    /// Number of jobs queued (for health and tests).
    pub async fn pending_jobs(&self) -> StoreResult<u64> {
        self.read(|conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM jobs")
                .map_err(sql_err)?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(sql_err)
        })
        .await
    }
}

/// Jobs as rows (dedupe key, payload, due time), encoded by the caller, off the writer
/// thread.
pub(super) fn job_rows(jobs: &[(JobKind, u64)]) -> StoreResult<Vec<(String, String, i64)>> {
    let now_ms = Utc::now().timestamp_millis();
    jobs.iter()
        .map(|(kind, delay)| {
            let due = now_ms.saturating_add(i64::try_from(*delay).unwrap_or(i64::MAX / 2));
            Ok((kind.dedupe(), encode(kind)?, due))
        })
        .collect()
}

pub(super) fn insert_jobs(tx: &Connection, rows: &[(String, String, i64)]) -> StoreResult<()> {
    let mut stmt = tx
        // A job queued again is due at the earlier of the two times (an approved step's
        // job replaces its expiry timer, due much later); otherwise nothing changes.
        .prepare_cached(
            "INSERT INTO jobs (dedupe, payload, due_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (dedupe) DO UPDATE SET due_at = excluded.due_at
             WHERE excluded.due_at < jobs.due_at",
        )
        .map_err(sql_err)?;
    for (dedupe, payload, due) in rows {
        stmt.execute(params![dedupe, payload, due])
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

        let rows = job_rows(&jobs)?;
        self.write(move |tx| insert_jobs(tx, &rows)).await?;
        self.jobs_ready.notify_one();
        Ok(())
    }
}
