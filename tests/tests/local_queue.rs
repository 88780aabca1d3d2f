//! The embedded store's job queue: kept in memory with its leases, the `job_queue` table its
//! durable copy. What an append or a dispatch commits is queued, what a refused append
//! carried is not, and a reopened store finds every job the table holds, free to take.

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use crane::adapters::local::{JobKind, SqliteStore};
use crane::domain::{fold, Effect, EventRecord, RunKey, RunState, StepJob};
use crane::ports::{EventStore as _, Outbox, StepDispatcher as _, StoreError};
use crane_tests::contract::{events::a_run_in_appends, TempDb};
use crane_tests::logs::init_logs;
use crane_tests::names::unique;
use rusqlite::{params, Connection};

fn job(run_id: &str, step: &str, attempt: u32) -> StepJob {
    StepJob {
        tenant: "t".into(),
        run_id: run_id.into(),
        step_id: step.into(),
        attempt,
        correlation_id: "c".into(),
    }
}

fn steps_of(kinds: &[JobKind]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = kinds
        .iter()
        .filter_map(|k| match k {
            JobKind::Step { job } => Some((job.step_id.clone(), job.attempt)),
            JobKind::Compensate { .. } => None,
        })
        .collect();
    out.sort();
    out
}

/// (key, due_at) of every row of the `job_queue` table, by key.
fn job_rows(db: &TempDb) -> Result<Vec<(String, i64)>> {
    let conn = Connection::open(&db.0)?;
    let mut stmt = conn.prepare("SELECT dedupe, due_at FROM job_queue ORDER BY dedupe")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

async fn lease_all(store: &SqliteStore) -> Result<Vec<crane::adapters::local::LeasedJob>> {
    Ok(store.lease_jobs(Utc::now(), 100, 60_000).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_jobs_leased_when_the_store_is_reopened_then_every_job_is_free_inherited_and_nothing_else_is(
) -> Result<()> {
    init_logs();
    let db = TempDb::new();
    let run = unique("run");
    {
        let store = SqliteStore::open(&db.0)?;
        assert!(
            store.inherited_jobs().is_empty(),
            "a new database inherits nothing"
        );
        store
            .dispatch(&[(job(&run, "s1", 1), 0), (job(&run, "s2", 1), 0)])
            .await?;
        store.dispatch(&[(job(&run, "s3", 1), 3_600_000)]).await?;
        assert_eq!(store.pending_jobs().await?, 3);
        let leased = lease_all(&store).await?;
        assert_eq!(
            steps_of(&leased.iter().map(|j| j.kind.clone()).collect::<Vec<_>>()),
            vec![("s1".into(), 1), ("s2".into(), 1)],
            "only due jobs are taken"
        );
        assert!(
            lease_all(&store).await?.is_empty(),
            "held jobs are not taken twice"
        );
        let s1 = leased
            .iter()
            .find(|j| matches!(&j.kind, JobKind::Step { job } if job.step_id == "s1"))
            .context("s1 leased")?;
        store.finish_job(s1.id).await?;
        assert_eq!(store.pending_jobs().await?, 2);
        let keys: Vec<String> = job_rows(&db)?.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![format!("step:t/{run}/s2/1"), format!("step:t/{run}/s3/1")],
            "the table follows: s1 is deleted, held s2 is kept as it was"
        );
    }
    let store = SqliteStore::open(&db.0)?;
    assert_eq!(
        store.inherited_jobs().len(),
        2,
        "every job found at start-up may have been held"
    );
    let again = lease_all(&store).await?;
    assert_eq!(
        steps_of(&again.iter().map(|j| j.kind.clone()).collect::<Vec<_>>()),
        vec![("s2".into(), 1)],
        "the job held by the stopped process is free at once; the delayed one still waits"
    );
    store.finish_job(again[0].id).await?;
    let next = store.next_due().await?.context("s3 is still queued")?;
    assert!(
        next > Utc::now() + Duration::minutes(50),
        "the delayed job keeps its due time: {next}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_job_queued_again_when_earlier_or_later_then_it_moves_only_earlier_in_memory_and_table(
) -> Result<()> {
    init_logs();
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0)?;
    let run = unique("run");
    store.dispatch(&[(job(&run, "s1", 1), 3_600_000)]).await?;
    let first_due = store.next_due().await?.context("queued")?;
    store.dispatch(&[(job(&run, "s1", 1), 7_200_000)]).await?;
    assert_eq!(
        store.next_due().await?,
        Some(first_due),
        "a later time moves nothing"
    );
    assert_eq!(store.pending_jobs().await?, 1, "one job per step attempt");
    store.dispatch(&[(job(&run, "s1", 1), 0)]).await?;
    let leased = lease_all(&store).await?;
    assert_eq!(leased.len(), 1, "an earlier time makes the job due now");
    let rows = job_rows(&db)?;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].1 <= Utc::now().timestamp_millis(),
        "the table has the earlier time too"
    );
    // Queued again while held: its holder keeps it.
    store.dispatch(&[(job(&run, "s1", 1), 0)]).await?;
    assert!(lease_all(&store).await?.is_empty());
    // Rescheduled by its holder: free again at the new time, here and after a restart.
    let later = Utc::now() + Duration::minutes(30);
    store.reschedule_job(leased[0].id, later).await?;
    assert!(lease_all(&store).await?.is_empty());
    let due = store.next_due().await?.context("still queued")?;
    assert_eq!(due.timestamp_millis(), later.timestamp_millis());
    drop(store);
    let reopened = SqliteStore::open(&db.0)?;
    assert_eq!(
        reopened.next_due().await?.map(|d| d.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    Ok(())
}

async fn append(
    store: &SqliteStore,
    key: &RunKey,
    events: &[EventRecord],
    view: &RunState,
    effects: &[Effect],
) -> Result<(), StoreError> {
    store
        .append(
            key,
            events,
            Outbox {
                view,
                effects,
                wake: false,
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_appends_with_effects_when_one_is_refused_then_only_committed_ones_queue_jobs(
) -> Result<()> {
    init_logs();
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0)?;
    let key = RunKey::new("t", unique("run"));
    let appends = a_run_in_appends(&key);
    let first = &appends[0];
    let view = fold(&key.run_id, first)?;
    let dispatch = |attempt| {
        [Effect::Dispatch {
            job: job(&key.run_id, "s1", attempt),
            delay_ms: 0,
        }]
    };
    append(&store, &key, first, &view, &dispatch(1)).await?;
    assert_eq!(store.pending_jobs().await?, 1);
    // The same seqs again: refused, and its job (another attempt) is not queued.
    let refused = append(&store, &key, first, &view, &dispatch(2)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.pending_jobs().await?,
        1,
        "memory has only the committed job"
    );
    assert_eq!(job_rows(&db)?.len(), 1, "and so has the table");
    let leased = lease_all(&store).await?;
    assert_eq!(
        steps_of(&leased.iter().map(|j| j.kind.clone()).collect::<Vec<_>>()),
        vec![("s1".into(), 1)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_database_from_an_earlier_version_when_opened_then_its_jobs_move_over_leases_gone(
) -> Result<()> {
    init_logs();
    let db = TempDb::new();
    let run = unique("run");
    drop(SqliteStore::open(&db.0)?);
    {
        // As an earlier version left it: its `jobs` table with a lease written, its due
        // index, and a row this version cannot read.
        let conn = Connection::open(&db.0)?;
        conn.execute_batch(
            "CREATE TABLE jobs (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, dedupe TEXT NOT NULL UNIQUE,
                 payload TEXT NOT NULL, due_at INTEGER NOT NULL, lease_until INTEGER);
             CREATE INDEX jobs_due ON jobs (due_at);",
        )?;
        let far = Utc::now().timestamp_millis() + 3_600_000;
        for step in ["s1", "s2"] {
            let kind = JobKind::Step {
                job: job(&run, step, 1),
            };
            conn.execute(
                "INSERT INTO jobs (dedupe, payload, due_at, lease_until) VALUES (?1, ?2, 0, ?3)",
                params![
                    format!("step:t/{run}/{step}/1"),
                    serde_json::to_string(&kind)?,
                    far
                ],
            )?;
        }
        conn.execute(
            "INSERT INTO jobs (dedupe, payload, due_at) VALUES ('x', '{\"kind\":\"unknown\"}', 0)",
            [],
        )?;
    }
    let store = SqliteStore::open(&db.0)?;
    let leased = lease_all(&store).await?;
    assert_eq!(
        steps_of(&leased.iter().map(|j| j.kind.clone()).collect::<Vec<_>>()),
        vec![("s1".into(), 1), ("s2".into(), 1)],
        "leases left by an earlier process do not hold the jobs back"
    );
    assert_eq!(store.inherited_jobs().len(), 2);
    assert_eq!(
        job_rows(&db)?.len(),
        3,
        "the unreadable row is kept, not run"
    );
    let old: i64 = Connection::open(&db.0)?.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('jobs', 'jobs_due')",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(old, 0, "the earlier table and its index are gone");
    assert_eq!(
        store.pending_jobs().await?,
        2,
        "only jobs that decode are queued"
    );
    // Finishing a moved job deletes its row.
    store.finish_job(leased[0].id).await?;
    assert_eq!(job_rows(&db)?.len(), 2);
    Ok(())
}
