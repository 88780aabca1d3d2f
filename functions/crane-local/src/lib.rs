//! Crane's local runtime: every function in one process. The same axum router the API
//! Lambdas serve, the same worker, reaction and compensation code, fed by a durable job
//! table in the embedded SQLite store instead of SQS, Streams and Step Functions.
//!
//! HTTP is served by [`server`], which bounds how long a client may take and how many
//! connections it may hold.
//!
//! A `kill -9` loses nothing: jobs are written in the same transaction as the events that
//! create them, and on start every interrupted job resumes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use crane::adapters::local::{JobKind, LeasedJob, SqliteStore};
use crane::app::{App, JobResult};
use crane::config::Config;
use crane::ports::SystemClock;
use crane::tools::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn};

pub mod server;

use server::Limits;

/// How long a local job stays leased. Leases only matter within one process (every lease
/// is released at start-up), so this just bounds how long a stuck job is left alone.
const JOB_LEASE_MS: i64 = 10 * 60 * 1000;
/// Longest the dispatcher sleeps without looking for due jobs.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long shutdown waits for in-flight jobs before leaving them to the next start.
const DRAIN: Duration = Duration::from_secs(10);

/// Build the application over the embedded store at `config.db`.
pub fn build(config: &Config) -> anyhow::Result<(Arc<App>, SqliteStore)> {
    let planner = crane::planner::select::planner_from_env().context("choosing the planner")?;
    let store = SqliteStore::open(&config.db)
        .with_context(|| format!("opening the database {}", config.db.display()))?;
    let shared = Arc::new(store.clone());
    let registry = Registry::new(shared.clone()).with_faults(&config.faults);
    let mut settings = config.settings;
    settings.void_leases_before = Some(Utc::now());
    let app = App {
        events: shared.clone(),
        views: shared.clone(),
        todos: shared.clone(),
        idempotency: shared.clone(),
        breakers: shared,
        registry,
        planner,
        clock: Arc::new(SystemClock),
        settings,
    };
    Ok((Arc::new(app), store))
}

/// Serve the API on `listener` and run the workers until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (app, store) = build(&config)?;
    let released = store.release_all_leases().await?;
    let queued = store.pending_jobs().await?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    info!(
        addr = %addr,
        db = %config.db.display(),
        resumed_jobs = released,
        queued_jobs = queued,
        faults = config.faults.rules().len(),
        "crane-local started"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatcher = tokio::spawn(dispatch_loop(app.clone(), store, config.workers, stop_rx));
    let router = crane::http::router_with(app, &config.http.local_edge(addr));
    server::serve(listener, router, Limits::from(&config.http), async move {
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    })
    .await;
    match dispatcher.await {
        Ok(()) => {}
        Err(e) => error!(error = %e, "dispatcher task failed"),
    }
    info!("stopped");
    Ok(())
}

/// Take due jobs from the store and run them, at most `workers` at a time.
async fn dispatch_loop(
    app: Arc<App>,
    store: SqliteStore,
    workers: usize,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(workers));
    let wake = store.jobs_ready();
    loop {
        if *stop.borrow() {
            break;
        }
        let free = permits.available_permits();
        let jobs = if free == 0 {
            Vec::new()
        } else {
            match store
                .lease_jobs(Utc::now(), free.min(256), JOB_LEASE_MS)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    warn!(error = %e, "could not take jobs");
                    Vec::new()
                }
            }
        };
        let took = jobs.len();
        for job in jobs {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (app, store, wake) = (app.clone(), store.clone(), wake.clone());
            tokio::spawn(async move {
                run_job(&app, &store, job).await;
                drop(permit);
                wake.notify_one();
            });
        }
        if took > 0 && took == free {
            continue;
        }
        let sleep = match store.next_due().await {
            Ok(Some(due)) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        if sleep.is_zero() && took == 0 {
            // Due jobs exist but none could be leased: wait for a worker to free up.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => {}
        }
    }
    // Let in-flight jobs finish; anything still running is resumed on the next start.
    let all = u32::try_from(workers).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        warn!("shutdown: some jobs were still running; they resume on the next start");
    }
}

async fn run_job(app: &App, store: &SqliteStore, job: LeasedJob) {
    let result = match &job.kind {
        JobKind::Step { job } => app.process_job(job).await,
        JobKind::Compensate { key, .. } => app.compensate_run(key).await,
    };
    let next = match result {
        Ok(JobResult::Done) => store.finish_job(job.id).await,
        Ok(JobResult::RetryAt(at)) => store.reschedule_job(job.id, at).await,
        Err(e) => {
            warn!(error = %e, job = ?job.kind, "job failed; retrying in 1 s");
            store
                .reschedule_job(job.id, Utc::now() + chrono::Duration::seconds(1))
                .await
        }
    };
    if let Err(e) = next {
        error!(error = %e, "could not update the job table");
    }
}
