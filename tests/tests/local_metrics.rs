//! `GET /metrics` on the local runtime: after runs complete, the Prometheus text carries
//! the expected series with plausible values; it is guarded like every other route.

use std::collections::HashMap;

use crane::config::ApiKeys;
use crane::tools::Faults;
use crane_tests::local::LocalServer;

const SEED: &str =
    "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result";

/// The samples of a Prometheus text page: `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &LocalServer, key: Option<&str>) -> (u16, String, String) {
    let mut req = server.http.get(server.url("/metrics"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("scrape");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.text().await.expect("body"))
}

fn value(s: &HashMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", sorted(s)))
}

fn sorted(s: &HashMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut v: Vec<_> = s.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

#[tokio::test]
async fn given_completed_runs_when_scraped_then_runs_steps_breakers_queue_and_http_series_are_there(
) {
    let server = LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=flaky:1").expect("faults");
    })
    .await;
    for _ in 0..2 {
        let run = server.run_prompt(SEED).await;
        assert_eq!(run["status"], "completed", "{run:#}");
    }
    let (status, ct, text) = scrape(&server, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let s = samples(&text);
    assert_eq!(value(&s, "crane_runs_created_total"), 2.0);
    assert_eq!(value(&s, r#"crane_runs_total{status="completed"}"#), 2.0);
    // Two calculator steps per run, each failing once (flaky:1) then succeeding.
    assert_eq!(
        value(&s, r#"crane_step_attempts_total{tool="calculator"}"#),
        8.0
    );
    assert_eq!(
        value(
            &s,
            r#"crane_step_attempt_failures_total{tool="calculator"}"#
        ),
        4.0
    );
    assert_eq!(
        value(&s, r#"crane_step_retries_total{tool="calculator"}"#),
        4.0
    );
    assert_eq!(
        value(&s, r#"crane_step_latency_seconds_count{tool="calculator"}"#),
        4.0
    );
    assert_eq!(
        value(&s, r#"crane_step_latency_seconds_count{tool="todo"}"#),
        4.0
    );
    let todo_secs = value(&s, r#"crane_step_latency_seconds_sum{tool="todo"}"#);
    assert!(
        (0.0..60.0).contains(&todo_secs),
        "plausible seconds: {todo_secs}"
    );
    assert_eq!(
        value(
            &s,
            r#"crane_step_latency_seconds_bucket{tool="todo",le="+Inf"}"#
        ),
        4.0
    );
    assert_eq!(
        value(
            &s,
            r#"crane_breaker_state{tool="calculator",state="closed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&s, r#"crane_breaker_state{tool="calculator",state="open"}"#),
        0.0
    );
    assert_eq!(value(&s, "crane_job_queue_depth"), 0.0, "everything ran");
    assert_eq!(value(&s, "crane_job_queue_lag_seconds"), 0.0);
    assert_eq!(value(&s, "crane_watchers"), 0.0);
    // HTTP durations by route template, never by raw URL.
    let created =
        r#"crane_http_request_duration_seconds_count{method="POST",route="/runs",status="201"}"#;
    assert_eq!(value(&s, created), 2.0);
    assert!(
        value(
            &s,
            r#"crane_http_request_duration_seconds_count{method="GET",route="/runs/{id}",status="200"}"#
        ) >= 2.0
    );
    assert!(
        !text.contains("route=\"/runs/0") && !text.contains("route=\"/runs/1"),
        "a run id leaked into a route label"
    );
    let (status, _) = server.get("/no/such/route").await;
    assert_eq!(status, 404);
    let (_, _, text) = scrape(&server, None).await;
    assert!(
        text.contains(r#"route="unmatched",status="404""#),
        "the fallback is one series: {text}"
    );
}

#[tokio::test]
async fn given_a_failing_tool_when_its_breaker_opens_then_the_transition_and_state_are_counted() {
    let server = LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=fail").expect("faults");
        c.settings.breaker.failure_threshold = 1;
        c.settings.retry.max_retries = 0;
    })
    .await;
    let run = server.run_prompt("calculate 2+3").await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let (_, _, text) = scrape(&server, None).await;
    let s = samples(&text);
    assert_eq!(
        value(
            &s,
            r#"crane_breaker_transitions_total{tool="calculator",from="closed",to="open"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&s, r#"crane_breaker_state{tool="calculator",state="open"}"#),
        1.0
    );
    assert_eq!(value(&s, r#"crane_runs_total{status="failed"}"#), 1.0);
}

#[tokio::test]
async fn given_api_keys_when_scraping_then_a_key_is_needed() {
    let key = "metrics-key-0123456789abcdef";
    let server = LocalServer::start_with(|c| {
        c.http.api_keys = ApiKeys {
            inline: vec![(key.to_owned(), "ops".to_owned())],
            file: None,
        };
    })
    .await;
    let (status, _, body) = scrape(&server, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = scrape(&server, Some(key)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("crane_runs_created_total 0"), "{body}");
}
