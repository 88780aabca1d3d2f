//! `crane-bench`: drive a Crane runtime over HTTP and report runs accepted per second,
//! runs completed per second and the latency from POST to `completed`.
//!
//! By default it starts `crane-local` in this process on 127.0.0.1:0 over a fresh
//! database (release build recommended); `--url` measures a server that is already up.
//!
//! ```text
//! cargo run --release -p crane-bench -- --runs 1000 --concurrency 32
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use crane::config::Config;
use crane::domain::RunStatus;
use serde::Deserialize;

/// The same allocator as the `crane-local` binary, set up the same way
/// ([`crane_local::process::run`]), since the runtime runs in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: &str =
    "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result";

#[derive(Debug, Parser)]
#[command(name = "crane-bench")]
struct Args {
    /// Runs to submit.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// POSTs in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The prompt of every run.
    #[arg(long, default_value = SEED)]
    prompt: String,
    /// Closed loop: each of the `concurrency` clients waits for its run to finish before
    /// submitting the next (latency without a backlog). Default: open loop, submit all.
    #[arg(long)]
    closed: bool,
    /// Fixed-rate open loop: submit this many runs per second, on schedule whatever the
    /// server's answers, for `--duration` seconds (`--runs` and `--concurrency` are then
    /// ignored). Latency counts from each run's scheduled send time, so a server that
    /// falls behind cannot hide it (no coordinated omission).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: Option<u32>,
    /// Seconds to submit for in `--rate` mode.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    duration: u64,
    /// Measure this server instead of starting one in process.
    #[arg(long)]
    url: Option<String>,
    /// Give up waiting for completion after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

struct Submitted {
    run_id: String,
    sent_at: DateTime<Utc>,
}

/// The one field of a `201 Created` answer the bench reads. Parsing only what it needs
/// keeps the client's share of the two cores small (a run's view can hold many KB of
/// outputs), so that what is measured is the server.
#[derive(Deserialize)]
struct Created {
    run_id: String,
}

/// The fields of a run's view the bench reads (the rest is skipped unparsed).
#[derive(Deserialize)]
struct RunRead {
    status: RunStatus,
    finished_at: Option<DateTime<Utc>>,
}

/// The part of an error answer the bench reports.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorCode,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

/// The body of every POST, encoded once: `{"prompt": ...}`.
fn post_body(prompt: &str) -> anyhow::Result<bytes::Bytes> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        prompt: &'a str,
    }
    Ok(serde_json::to_vec(&Body { prompt })?.into())
}

/// POST one run; its id if the answer is `201 Created`, else why not.
async fn post_run(
    http: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
) -> Result<String, Rejection> {
    let r = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Rejection::of(&e))?;
    if r.status() != reqwest::StatusCode::CREATED {
        let status = r.status().as_u16();
        // Crane's errors name themselves: `{"error": {"code": ...}}`.
        let code = r
            .json::<ErrorAnswer>()
            .await
            .map(|a| format!(" {}", a.error.code))
            .unwrap_or_default();
        return Err(Rejection(format!("HTTP {status}{code}")));
    }
    r.json::<Created>()
        .await
        .map(|c| c.run_id)
        .map_err(|e| Rejection::of(&e))
}

/// Why a POST did not create a run, in few enough words to count alike ones together.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rejection(String);

impl Rejection {
    /// A transport failure: connecting apart (so that the many of a port shortage count
    /// as one), by its most specific cause, as the `crane` CLI says it.
    fn of(e: &reqwest::Error) -> Self {
        if e.is_connect() {
            return Self("could not connect".to_owned());
        }
        Self(format!("request failed: {}", crane_cli::client::reason(e)))
    }
}

/// The POSTs that created no run, counted by [`Rejection`].
#[derive(Default)]
struct Rejections(std::collections::BTreeMap<Rejection, usize>);

impl Rejections {
    fn add(&mut self, why: Rejection) {
        *self.0.entry(why).or_default() += 1;
    }

    /// A finished POST task: its run goes to `submitted`, else its reason is counted here.
    fn tally(
        &mut self,
        done: Result<Result<Submitted, Rejection>, tokio::task::JoinError>,
        submitted: &mut Vec<Submitted>,
    ) {
        match done {
            Ok(Ok(s)) => submitted.push(s),
            Ok(Err(why)) => self.add(why),
            Err(e) => self.add(Rejection(format!("task failed: {e}"))),
        }
    }

    fn total(&self) -> usize {
        self.0.values().sum()
    }
}

/// `3 rejected: HTTP 503 1, could not connect 2` (or `0 rejected`).
impl std::fmt::Display for Rejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rejected", self.total())?;
        for (i, (why, n)) in self.0.iter().enumerate() {
            write!(f, "{}{} {n}", if i == 0 { ": " } else { ", " }, why.0)?;
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    crane_local::process::run(bench())?
}

async fn bench() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 || args.concurrency == 0 {
        bail!("--runs and --concurrency must be at least 1");
    }
    let (base, _server) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let db = std::env::temp_dir().join(format!("crane-bench-{}.db", uuid::Uuid::new_v4()));
            let mut config = Config::from_env().context("reading configuration")?;
            config.db = db;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(crane_local::run(listener, config, async move {
                let _ = rx.await;
            }));
            (format!("http://{addr}"), Some((tx, task)))
        }
    };
    // Every connection opened is kept for reuse. At a fixed rate the client opens as many
    // as there are POSTs in flight; closing all but `concurrency` of them after each
    // answer left ~20,000 sockets in TIME_WAIT after one `--rate 10000` run, and the next
    // run found no local port to connect from (a fifth of its POSTs failed).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    wait_healthy(&http, &base).await?;

    // Phase 1: submit every run, `concurrency` POSTs in flight (or on a fixed schedule).
    let body = post_body(&args.prompt)?;
    let runs_url = format!("{base}/runs");
    let started = Instant::now();
    let mut submitted: Vec<Submitted> = Vec::with_capacity(args.runs);
    let mut rejected = Rejections::default();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0usize;
    if let Some(rate) = args.rate {
        let (s, r) = submit_at_rate(&http, &runs_url, &body, rate, args.duration).await;
        submitted = s;
        rejected = r;
        next = args.runs;
    }
    while next < args.runs || !in_flight.is_empty() {
        while next < args.runs && in_flight.len() < args.concurrency {
            let (http, base, url, body, closed) = (
                http.clone(),
                base.clone(),
                runs_url.clone(),
                body.clone(),
                args.closed,
            );
            in_flight.spawn(async move {
                let sent_at = Utc::now();
                let run_id = post_run(&http, &url, body).await?;
                if closed {
                    wait_finished(&http, &base, &run_id).await;
                }
                Ok(Submitted { run_id, sent_at })
            });
            next += 1;
        }
        if let Some(done) = in_flight.join_next().await {
            rejected.tally(done, &mut submitted);
        }
    }
    let accept_secs = started.elapsed().as_secs_f64();
    if submitted.is_empty() {
        bail!("no run was accepted ({rejected}): nothing to measure");
    }

    // Phase 2: wait for every accepted run to finish; read its finish time.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut latencies_ms = Vec::with_capacity(submitted.len());
    let mut last_finish: Option<DateTime<Utc>> = None;
    let mut not_completed = 0usize;
    let first_sent = submitted.iter().map(|s| s.sent_at).min();
    for s in &submitted {
        let run = loop {
            let run: RunRead = http
                .get(format!("{base}/runs/{}", s.run_id))
                .send()
                .await?
                .json()
                .await?;
            if run.status.is_finished() {
                break run;
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for run {} ({})",
                    s.run_id,
                    run.status.as_str()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if run.status != RunStatus::Completed {
            not_completed += 1;
            continue;
        }
        let finished = run
            .finished_at
            .context("a completed run without finished_at")?;
        latencies_ms.push((finished - s.sent_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        last_finish = last_finish.max(Some(finished));
    }
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    let complete_secs = match (first_sent, last_finish) {
        (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(1) as f64 / 1e6,
        _ => f64::NAN,
    };
    let pct = |p: f64| -> f64 {
        if latencies_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (latencies_ms.len() - 1) as f64).round() as usize;
        latencies_ms[i.min(latencies_ms.len() - 1)]
    };
    match args.rate {
        Some(rate) => println!(
            "crane-bench: {rate} runs/s for {} s of {:?} (fixed-rate open loop), against {}",
            args.duration, args.prompt, base
        ),
        None => println!(
            "crane-bench: {} runs of {:?}, {} in flight ({}), against {}",
            args.runs,
            args.prompt,
            args.concurrency,
            if args.closed {
                "closed loop"
            } else {
                "open loop"
            },
            base
        ),
    }
    println!(
        "  accepted:   {} ({}) in {:.2} s = {:.1} runs/s",
        submitted.len(),
        rejected,
        accept_secs,
        submitted.len() as f64 / accept_secs
    );
    println!(
        "  completed:  {} ({} ended otherwise) in {:.2} s = {:.1} runs/s",
        latencies_ms.len(),
        not_completed,
        complete_secs,
        latencies_ms.len() as f64 / complete_secs
    );
    println!(
        "  POST -> completed latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0)
    );
    if let Some((tx, task)) = _server {
        let _ = tx.send(());
        let _ = task.await;
    }
    Ok(())
}

/// Submit `rate` runs per second for `duration` seconds, each POST on its own schedule
/// (never waiting for earlier answers). Each run's clock starts at its scheduled time.
async fn submit_at_rate(
    http: &reqwest::Client,
    url: &str,
    body: &bytes::Bytes,
    rate: u32,
    duration: u64,
) -> (Vec<Submitted>, Rejections) {
    let total = u64::from(rate) * duration;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now();
    let wall_start = Utc::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        let offset = period.mul_f64(i as f64);
        tokio::time::sleep_until(start + offset).await;
        let sent_at = wall_start
            + chrono::Duration::from_std(offset).unwrap_or_else(|_| chrono::Duration::zero());
        let (http, url, body) = (http.clone(), url.to_owned(), body.clone());
        posts.spawn(async move {
            let run_id = post_run(&http, &url, body).await?;
            Ok(Submitted { run_id, sent_at })
        });
    }
    let mut submitted = Vec::with_capacity(total as usize);
    let mut rejected = Rejections::default();
    while let Some(done) = posts.join_next().await {
        rejected.tally(done, &mut submitted);
    }
    (submitted, rejected)
}

/// Poll a run until it leaves `pending`/`running` (closed-loop mode), for at most 60 s.
async fn wait_finished(http: &reqwest::Client, base: &str, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let finished = match http.get(format!("{base}/runs/{run_id}")).send().await {
            Ok(r) => r
                .json::<RunRead>()
                .await
                .is_ok_and(|run| run.status.is_finished()),
            Err(_) => false,
        };
        if finished {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{base} did not become healthy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_rejections_when_shown_then_each_reason_is_counted_once_in_order() {
        let mut r = Rejections::default();
        assert_eq!(r.to_string(), "0 rejected");
        r.add(Rejection("could not connect".into()));
        r.add(Rejection("HTTP 503".into()));
        r.add(Rejection("could not connect".into()));
        assert_eq!(r.total(), 3);
        assert_eq!(r.to_string(), "3 rejected: HTTP 503 1, could not connect 2");
    }

    #[tokio::test]
    async fn given_no_server_when_posting_then_the_rejection_says_it_could_not_connect() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/runs");
        let why = post_run(&http, &url, post_body("calculate 1+1").expect("body"))
            .await
            .expect_err("nothing listens there");
        assert_eq!(why, Rejection("could not connect".into()));
    }
}
