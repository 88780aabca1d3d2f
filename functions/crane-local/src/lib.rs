//! Crane's local runtime: every function in one process. The same axum router the API
//! Lambdas serve, the same worker, reaction and compensation code, fed by a durable job
//! table in the embedded SQLite store instead of SQS, Streams and Step Functions.
//!
//! HTTP is served by [`server`], which bounds how long a client may take and how many
//! connections it may hold.
//!
//! With API keys configured (`CRANE_API_KEYS`, `CRANE_API_KEYS_FILE`) every request needs
//! one, and `SIGHUP` rereads them, so a key removed from the file is refused from then on.
//! Without keys every request is the default tenant (development), which is allowed only
//! on a loopback address unless `--insecure-no-auth` says otherwise.
//!
//! The step jobs of one run taken together run as one wave ([`App::process_jobs`]): their
//! claims in one append, their outcomes and the next level's claims in another, and the
//! next levels in place, as the cloud step worker does.
//!
//! A `kill -9` loses nothing: jobs are written in the same transaction as the events that
//! create them, a wave's jobs are finished only once it ends (what it leaves for later
//! queued first), and on start every interrupted job resumes, with every unfinished step
//! of its run.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use crane::adapters::local::{JobKind, LeasedJob, SqliteStore};
use crane::app::{App, JobResult, WaveLimits};
use crane::config::{ApiKeys, Config};
use crane::domain::RunKey;
use crane::http::KeyRing;
use crane::ports::StepDispatcher as _;
use crane::ports::SystemClock;
use crane::prometheus::{Metrics, ObservedBreakers};
use crane::tools::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn};

pub mod metrics;
pub mod process;
pub mod server;

use server::Limits;

/// How long a local job stays leased. Leases only live in this process's memory (every job
/// found at start-up is free, and resumes its run), so this just bounds how long a stuck
/// job is left alone.
const JOB_LEASE_MS: i64 = 10 * 60 * 1000;
/// Longest the dispatcher sleeps without looking for due jobs.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a wave may go on running a run's next levels in place: well inside the lease
/// of the jobs it started from, so nobody takes them again meanwhile.
const INLINE_FOR: Duration = Duration::from_secs(9 * 60);
/// How long shutdown waits for in-flight jobs before leaving them to the next start.
const DRAIN: Duration = Duration::from_secs(10);

/// Build the application over the embedded store at `config.db`.
pub fn build(config: &Config) -> anyhow::Result<(Arc<App>, SqliteStore)> {
    build_observed(config, Arc::new(Metrics::new()))
}

/// [`build`], counting into `metrics`: every committed append and breaker change.
pub fn build_observed(
    config: &Config,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Arc<App>, SqliteStore)> {
    let planner = crane::planner::select::planner_from_env().context("choosing the planner")?;
    let store = SqliteStore::open_with(&config.db, config.sync)
        .with_context(|| format!("opening the database {}", config.db.display()))?;
    // Each watcher (long-poll, stream, `Prefer: wait`) holds a connection: half of them
    // stay for everything else.
    store
        .notifier()
        .set_max_watchers(config.http.max_connections / 2);
    store.observe(metrics.clone());
    let shared = Arc::new(store.clone());
    let registry = Registry::new(shared.clone()).with_faults(&config.faults);
    let mut settings = config.settings.clone();
    settings.void_leases_before = Some(Utc::now());
    let app = App {
        events: shared.clone(),
        views: shared.clone(),
        todos: shared.clone(),
        idempotency: shared.clone(),
        breakers: Arc::new(ObservedBreakers::new(shared, metrics)),
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
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let keys = key_ring(&config, addr)?;
    let metrics = Arc::new(Metrics::new());
    let (app, store) = build_observed(&config, metrics.clone())?;
    let released = store.inherited_jobs();
    let queued = store.pending_jobs().await?;
    info!(
        addr = %addr,
        db = %config.db.display(),
        resumed_jobs = released.len(),
        queued_jobs = queued,
        faults = config.faults.rules().len(),
        api_keys = keys.as_ref().map_or(0, KeyRing::len),
        "crane-local started"
    );
    let reloader = keys
        .clone()
        .map(|ring| tokio::spawn(reload_on_hangup(config.http.api_keys.clone(), ring)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let extra = metrics::routes(metrics.clone(), store.clone());
    let notifier = store.notifier();
    let dispatcher = tokio::spawn(dispatch_loop(
        app.clone(),
        store,
        config.workers,
        Resumed::of(released),
        stop_rx,
    ));
    let router =
        crane::http::router_extended(app, &config.http.local_edge(addr, keys), extra).layer(
            axum::middleware::from_fn_with_state(metrics, crane::prometheus::track_http),
        );
    server::serve(listener, router, Limits::from(&config.http), async move {
        shutdown.await;
        info!("shutting down");
        // Long-polls answer and streams end now rather than hold the drain up.
        notifier.close();
        let _ = stop_tx.send(true);
    })
    .await;
    match dispatcher.await {
        Ok(()) => {}
        Err(e) => error!(error = %e, "dispatcher task failed"),
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    info!("stopped");
    Ok(())
}

/// The API keys to check, or `None` for development mode (one tenant, no credentials),
/// which is refused on an address other machines can reach unless explicitly allowed.
fn key_ring(config: &Config, addr: std::net::SocketAddr) -> anyhow::Result<Option<KeyRing>> {
    if config.http.api_keys.configured() {
        let pairs = config
            .http
            .api_keys
            .load()
            .context("reading the API keys")?;
        return Ok(Some(KeyRing::new(&pairs)));
    }
    if !addr.ip().is_loopback() && !config.http.insecure_no_auth {
        anyhow::bail!(
            "no API keys are configured and {addr} is not a loopback address: set \
             CRANE_API_KEYS or CRANE_API_KEYS_FILE, or pass --insecure-no-auth to serve \
             every caller as the default tenant"
        );
    }
    warn!(
        addr = %addr,
        "no API keys configured: development mode, every request is the default tenant"
    );
    Ok(None)
}

/// Reread the API keys on every `SIGHUP`; a file that cannot be read keeps the old keys.
async fn reload_on_hangup(keys: ApiKeys, ring: KeyRing) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP: API keys will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            reload(&keys, &ring);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (keys, ring);
        std::future::pending::<()>().await;
    }
}

/// Replace the accepted keys with those configured now.
pub fn reload(keys: &ApiKeys, ring: &KeyRing) {
    match keys.load() {
        Ok(pairs) => {
            ring.replace(&pairs);
            info!(api_keys = pairs.len(), "API keys reloaded");
        }
        Err(e) => warn!(error = %e, "API keys not reloaded; the previous keys stay"),
    }
}

/// Jobs whose holder may have stopped part-way (queued when the store was opened, or whose
/// run failed with an error): whoever takes one next also resumes every unfinished step of its run, since
/// steps a wave took on itself have no job of their own (see [`App::process_jobs`]).
#[derive(Clone, Default)]
struct Resumed(Arc<std::sync::Mutex<HashSet<i64>>>);

impl Resumed {
    fn of(ids: Vec<i64>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(ids.into_iter().collect())))
    }

    fn mark(&self, ids: impl IntoIterator<Item = i64>) {
        if let Ok(mut set) = self.0.lock() {
            set.extend(ids);
        }
    }

    /// Whether any of `ids` was marked, forgetting them.
    fn take(&self, ids: impl IntoIterator<Item = i64>) -> bool {
        let Ok(mut set) = self.0.lock() else {
            return true;
        };
        if set.is_empty() {
            return false;
        }
        let mut any = false;
        for id in ids {
            any |= set.remove(&id);
        }
        any
    }
}

/// The leased jobs as units of work: the step jobs of one run together (a level, run as one
/// wave), each other job alone; in lease order.
fn batches(jobs: Vec<LeasedJob>) -> Vec<Vec<LeasedJob>> {
    let mut out: Vec<Vec<LeasedJob>> = Vec::new();
    let mut by_run: HashMap<RunKey, usize> = HashMap::new();
    for job in jobs {
        match &job.kind {
            JobKind::Step { job: step } => match by_run.get(&step.key()) {
                Some(&i) => out[i].push(job),
                None => {
                    by_run.insert(step.key(), out.len());
                    out.push(vec![job]);
                }
            },
            JobKind::Compensate { .. } => out.push(vec![job]),
        }
    }
    out
}

/// Take due jobs from the store and run them, at most `workers` at a time.
async fn dispatch_loop(
    app: Arc<App>,
    store: SqliteStore,
    workers: usize,
    resumed: Resumed,
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
        for batch in batches(jobs) {
            // A run's level comes whole and may outnumber the workers: it takes them all.
            let n = u32::try_from(batch.len().min(workers)).unwrap_or(u32::MAX);
            let Ok(permit) = permits.clone().acquire_many_owned(n).await else {
                break;
            };
            let (app, store, wake, resumed) =
                (app.clone(), store.clone(), wake.clone(), resumed.clone());
            tokio::spawn(async move {
                run_batch(&app, &store, &resumed, batch).await;
                drop(permit);
                wake.notify_one();
            });
        }
        if took > 0 && took >= free {
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

/// Run one unit of [`batches`]: a run's step jobs as one wave, or a saga.
async fn run_batch(app: &App, store: &SqliteStore, resumed: &Resumed, batch: Vec<LeasedJob>) {
    let mut steps = Vec::with_capacity(batch.len());
    for job in &batch {
        match &job.kind {
            JobKind::Step { job } => steps.push(job.clone()),
            // `batches` puts each saga in a batch of its own.
            JobKind::Compensate { key, .. } => return run_saga(app, store, job.id, key).await,
        }
    }
    let limits = WaveLimits {
        // The next levels run here while the jobs' lease leaves time for them.
        inline_until: Some(Instant::now() + INLINE_FOR),
        resume: resumed.take(batch.iter().map(|j| j.id)),
    };
    let report = match app.process_jobs(&steps, limits).await {
        Ok(report) => report,
        Err(e) => {
            warn!(error = %e, run = %steps[0].key(), "jobs failed; retrying in 1 s");
            return retry_later(store, resumed, &batch).await;
        }
    };
    // What the wave left for later is made durable before its jobs are finished.
    if !report.send.is_empty() {
        if let Err(e) = store.dispatch(&report.send).await {
            error!(error = %e, "could not queue the jobs a wave left; retrying in 1 s");
            return retry_later(store, resumed, &batch).await;
        }
    }
    let mut done = Vec::with_capacity(batch.len());
    for (job, result) in batch.iter().zip(&report.results) {
        match result {
            JobResult::Done => done.push(job.id),
            JobResult::RetryAt(at) => {
                if let Err(e) = store.reschedule_job(job.id, *at).await {
                    error!(error = %e, "could not update the job table");
                }
            }
        }
    }
    if let Err(e) = store.finish_jobs(done).await {
        error!(error = %e, "could not update the job table");
    }
}

/// Run `batch` again in a second, resuming its run: a wave that stopped part-way may hold
/// steps that have no job of their own.
async fn retry_later(store: &SqliteStore, resumed: &Resumed, batch: &[LeasedJob]) {
    resumed.mark(batch.iter().map(|j| j.id));
    let at = Utc::now() + chrono::Duration::seconds(1);
    for job in batch {
        if let Err(e) = store.reschedule_job(job.id, at).await {
            error!(error = %e, "could not update the job table");
        }
    }
}

/// Run the saga of `key`, queued as job `id`.
async fn run_saga(app: &App, store: &SqliteStore, id: i64, key: &RunKey) {
    let next = match app.compensate_run(key).await {
        Ok(JobResult::Done) => store.finish_job(id).await,
        Ok(JobResult::RetryAt(at)) => store.reschedule_job(id, at).await,
        Err(e) => {
            warn!(error = %e, run = %key, "saga failed; retrying in 1 s");
            store
                .reschedule_job(id, Utc::now() + chrono::Duration::seconds(1))
                .await
        }
    };
    if let Err(e) = next {
        error!(error = %e, "could not update the job table");
    }
}

#[cfg(test)]
mod tests {
    use crane::domain::StepJob;

    use super::*;

    fn step(id: i64, run: &str, step: &str) -> LeasedJob {
        LeasedJob {
            id,
            kind: JobKind::Step {
                job: StepJob {
                    tenant: "t".into(),
                    run_id: run.into(),
                    step_id: step.into(),
                    attempt: 1,
                    correlation_id: "c".into(),
                },
            },
        }
    }

    fn saga(id: i64, run: &str) -> LeasedJob {
        LeasedJob {
            id,
            kind: JobKind::Compensate {
                key: RunKey::new("t", run),
                correlation_id: "c".into(),
                attempt: 1,
            },
        }
    }

    #[test]
    fn given_leased_jobs_of_several_runs_when_batched_then_each_runs_steps_go_together_and_sagas_alone(
    ) {
        let jobs = vec![
            step(1, "a", "s1"),
            step(2, "b", "s1"),
            saga(3, "a"),
            step(4, "a", "s2"),
            saga(5, "c"),
            step(6, "b", "s2"),
        ];
        let ids: Vec<Vec<i64>> = batches(jobs)
            .iter()
            .map(|b| b.iter().map(|j| j.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 4], vec![2, 6], vec![3], vec![5]]);
    }

    #[test]
    fn given_released_jobs_when_taken_then_a_batch_holding_one_resumes_once() {
        let resumed = Resumed::of(vec![7]);
        assert!(!resumed.take([1, 2]));
        assert!(resumed.take([6, 7]));
        assert!(!resumed.take([7]), "forgotten once taken");
        resumed.mark([9]);
        assert!(resumed.take([9]));
    }
}
