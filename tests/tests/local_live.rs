//! Watching runs on the local runtime over HTTP: the events long-poll, the Server-Sent
//! Events stream (a watcher joining mid-run, one reconnecting with `Last-Event-ID`) and
//! `Prefer: wait` on `POST /runs` and `GET /runs/{id}`.

use std::time::{Duration, Instant};

use crane::tools::Faults;
use crane_tests::local::LocalServer;
use serde_json::{json, Value};

const SEED: &str =
    "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result";
/// Generous bound for anything that should happen "soon" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A server whose steps take a while, so a watcher can join while a run is under way.
async fn slow_server() -> LocalServer {
    LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=delay:300ms,todo=delay:300ms").expect("faults");
    })
    .await
}

fn seqs(events: &Value) -> Vec<u64> {
    events["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["seq"].as_u64()).collect())
        .unwrap_or_default()
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Read a whole SSE response (until the server ends it, or `PATIENCE`): its events.
async fn read_sse(mut resp: reqwest::Response) -> Vec<Sse> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Err(e)) => panic!("stream broke: {e}"),
            Ok(Ok(None)) => break,
            Err(_) => panic!("the stream did not end within {PATIENCE:?}: {text}"),
        }
    }
    parse_sse(&text)
}

fn parse_sse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut ev = Sse {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut any = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                ev.id = Some(v.trim().to_owned());
                any = true;
            } else if let Some(v) = line.strip_prefix("event:") {
                ev.event = Some(v.trim().to_owned());
                any = true;
            } else if let Some(v) = line.strip_prefix("data:") {
                ev.data.push_str(v.trim_start());
                any = true;
            }
        }
        if any {
            out.push(ev);
        }
    }
    out
}

#[tokio::test]
async fn given_a_running_run_when_long_polling_after_its_last_event_then_the_next_event_arrives_before_the_wait_ends(
) {
    let server = slow_server().await;
    let run = server.create_run(SEED).await;
    let id = run["run_id"].as_str().expect("run id");
    let mut after = 0;
    let mut types = Vec::new();
    let started = Instant::now();
    // Follow the run event by event, as a client would; each poll may wait 20 s.
    loop {
        assert!(
            started.elapsed() < PATIENCE * 2,
            "run never settled: {types:?}"
        );
        let (status, page) = server
            .get(&format!("/runs/{id}/events?after={after}&wait=20"))
            .await;
        assert_eq!(status, 200, "{page}");
        let got = seqs(&page);
        if got.is_empty() {
            break; // settled: an empty answer at once, no more events
        }
        assert!(
            got.iter().all(|s| *s > after),
            "only events after {after}: {got:?}"
        );
        assert_eq!(got[0], after + 1, "no gap");
        after = *got.last().expect("non-empty");
        for e in page["events"].as_array().expect("events") {
            types.push(e["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(types.first().map(String::as_str), Some("RunCreated"));
    assert_eq!(
        types.last().map(String::as_str),
        Some("RunCompleted"),
        "{types:?}"
    );
    let (_, all) = server.get(&format!("/runs/{id}/events")).await;
    assert_eq!(seqs(&all).len() as u64, after, "every event was seen once");
}

#[tokio::test]
async fn given_a_settled_run_when_long_polling_past_its_end_then_it_answers_at_once_empty() {
    let server = LocalServer::start_with(|_| {}).await;
    let run = server.run_prompt("calculate 2+3").await;
    let id = run["run_id"].as_str().expect("run id");
    let (_, all) = server.get(&format!("/runs/{id}/events")).await;
    let last = *seqs(&all).last().expect("events");
    let (status, page) = server
        .get(&format!("/runs/{id}/events?after={last}&wait=20"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["events"], json!([]));
    let (status, page) = server.get(&format!("/runs/{id}/events?after=2")).await;
    assert_eq!(status, 200);
    assert_eq!(
        seqs(&page),
        (3..=last).collect::<Vec<_>>(),
        "after alone filters"
    );
}

#[tokio::test]
async fn given_bad_after_or_wait_when_long_polling_then_400_with_a_json_error() {
    let server = LocalServer::start_with(|_| {}).await;
    let run = server.create_run("calculate 1+1").await;
    let id = run["run_id"].as_str().expect("run id");
    for (query, code) in [
        ("after=-1", "invalid_after"),
        ("after=x", "invalid_after"),
        ("after=99999999999999999999", "invalid_after"),
        ("wait=21", "invalid_wait"),
        ("wait=-1", "invalid_wait"),
        ("wait=1.5", "invalid_wait"),
        ("wait=", "invalid_wait"),
    ] {
        let (status, body) = server.get(&format!("/runs/{id}/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    let (status, _) = server
        .get("/runs/0190c3a0-0000-7000-8000-000000000000/events?wait=5")
        .await;
    assert_eq!(status, 404, "an unknown run is a 404 at once");
}

#[tokio::test]
async fn given_a_watcher_joining_mid_run_when_streaming_then_it_gets_every_event_once_and_the_stream_ends(
) {
    let server = slow_server().await;
    let run = server.create_run(SEED).await;
    let id = run["run_id"].as_str().expect("run id");
    // Join once a step has started.
    server
        .wait_until(id, PATIENCE, |r| {
            r["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x["status"] != "pending"))
        })
        .await;
    let resp = server
        .http
        .get(server.url(&format!("/runs/{id}/stream")))
        .send()
        .await
        .expect("connect");
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let events = read_sse(resp).await;
    let (_, log) = server.get(&format!("/runs/{id}/events")).await;
    let log = log["events"].as_array().expect("events").clone();
    assert_eq!(
        events.len(),
        log.len(),
        "one SSE event per run event: {events:#?}"
    );
    for (sse, rec) in events.iter().zip(&log) {
        assert_eq!(sse.id.as_deref(), Some(rec["seq"].to_string().as_str()));
        assert_eq!(sse.event.as_deref(), rec["type"].as_str());
        let data: Value = serde_json::from_str(&sse.data).expect("data is JSON");
        assert_eq!(&data, rec, "data is the event as GET .../events shows it");
    }
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("RunCompleted")
    );
}

#[tokio::test]
async fn given_a_last_event_id_when_reconnecting_then_the_stream_resumes_after_it() {
    let server = slow_server().await;
    let run = server.create_run(SEED).await;
    let id = run["run_id"].as_str().expect("run id");
    let settled = server.wait_settled(id).await;
    assert_eq!(settled["status"], "completed");
    let (_, log) = server.get(&format!("/runs/{id}/events")).await;
    let all = seqs(&log);
    let resp = server
        .http
        .get(server.url(&format!("/runs/{id}/stream")))
        .header("Last-Event-ID", "4")
        .send()
        .await
        .expect("connect");
    assert_eq!(resp.status(), 200);
    let ids: Vec<u64> = read_sse(resp)
        .await
        .iter()
        .filter_map(|e| e.id.as_deref().and_then(|i| i.parse().ok()))
        .collect();
    assert_eq!(
        ids,
        all.iter().copied().filter(|s| *s > 4).collect::<Vec<_>>()
    );
    // A browser's first connection says where to start with ?after=.
    let resp = server
        .http
        .get(server.url(&format!("/runs/{id}/stream?after=2")))
        .send()
        .await
        .expect("connect");
    let first = read_sse(resp).await;
    assert_eq!(first.first().and_then(|e| e.id.as_deref()), Some("3"));
    // A bad Last-Event-ID is a JSON 400, and an unknown run a JSON 404.
    let resp = server
        .http
        .get(server.url(&format!("/runs/{id}/stream")))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .expect("connect");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_last_event_id");
    let (status, _) = server
        .get("/runs/0190c3a0-0000-7000-8000-000000000000/stream")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn given_prefer_wait_when_creating_a_run_then_the_answer_is_the_settled_run() {
    let server = LocalServer::start_with(|_| {}).await;
    let resp = server
        .http
        .post(server.url("/runs"))
        .header("Prefer", "wait=25")
        .json(&json!({"prompt": SEED}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()
            .get("preference-applied")
            .and_then(|v| v.to_str().ok()),
        Some("wait=25")
    );
    assert!(resp.headers().get("location").is_some());
    let run: Value = resp.json().await.expect("json");
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["result"]["title"], "50", "{run:#}");
}

#[tokio::test]
async fn given_prefer_wait_shorter_than_the_run_when_creating_then_202_with_the_run_as_it_is() {
    let server = LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=delay:3s").expect("faults");
    })
    .await;
    let resp = server
        .http
        .post(server.url("/runs"))
        .header("Prefer", "respond-async, wait=1")
        .json(&json!({"prompt": "calculate 2+3"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    assert!(resp.headers().get("preference-applied").is_none());
    let run: Value = resp.json().await.expect("json");
    assert!(
        run["status"] == "pending" || run["status"] == "running",
        "{run:#}"
    );
    // GET with Prefer: wait answers once it has settled (the step takes 3 s).
    let id = run["run_id"].as_str().expect("run id");
    let mut settled = None;
    for _ in 0..4 {
        let resp = server
            .http
            .get(server.url(&format!("/runs/{id}")))
            .header("Prefer", "wait=20")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        let applied = resp.headers().get("preference-applied").is_some();
        let run: Value = resp.json().await.expect("json");
        if applied {
            settled = Some(run);
            break;
        }
    }
    let run = settled.expect("settled within a few waits");
    assert_eq!(run["status"], "completed");
}

#[tokio::test]
async fn given_a_malformed_prefer_wait_then_400_and_other_preferences_are_ignored() {
    let server = LocalServer::start_with(|_| {}).await;
    let resp = server
        .http
        .post(server.url("/runs"))
        .header("Prefer", "wait=soon")
        .json(&json!({"prompt": "calculate 2+3"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_prefer");
    let resp = server
        .http
        .post(server.url("/runs"))
        .header("Prefer", "return=minimal")
        .json(&json!({"prompt": "calculate 2+3"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201, "no wait preference: answered at once");
    assert!(resp.headers().get("preference-applied").is_none());
}

#[tokio::test]
async fn given_an_open_stream_when_the_server_shuts_down_then_the_stream_ends_cleanly() {
    let server = LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=delay:20s").expect("faults");
    })
    .await;
    let run = server.create_run("calculate 2+3").await;
    let id = run["run_id"].as_str().expect("run id").to_owned();
    let resp = server
        .http
        .get(server.url(&format!("/runs/{id}/stream")))
        .send()
        .await
        .expect("connect");
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move {
        let mut resp = resp;
        let mut text = String::new();
        loop {
            match tokio::time::timeout(PATIENCE, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) => return Ok(text),
                Ok(Err(e)) => return Err(format!("stream broke: {e}; got {text}")),
                Err(_) => return Err(format!("stream never ended; got {text}")),
            }
        }
    });
    // Let the stream deliver what exists, then stop the server mid-run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let text = reader.await.expect("reader").expect("ended cleanly");
    assert!(text.contains("event: RunCreated"), "{text}");
    assert!(
        !text.contains("RunCompleted"),
        "the run had not finished: {text}"
    );
}

#[tokio::test]
async fn given_short_idle_and_header_timeouts_when_a_long_poll_and_a_stream_outlast_them_then_both_are_answered(
) {
    let server = LocalServer::start_with(|c| {
        c.http.idle_timeout_ms = 500;
        c.http.header_timeout_ms = 500;
        c.faults = Faults::parse("calculator=delay:2500ms").expect("faults");
    })
    .await;
    let run = server.create_run("calculate 2+3").await;
    let id = run["run_id"].as_str().expect("run id").to_owned();
    let stream = {
        let (http, url) = (
            server.http.clone(),
            server.url(&format!("/runs/{id}/stream")),
        );
        tokio::spawn(async move {
            let resp = http.get(url).send().await.expect("connect");
            assert_eq!(resp.status(), 200);
            read_sse(resp).await
        })
    };
    // StepStarted is seq 3; the next event comes when the 2.5 s tool call ends, long after
    // the connection's idle timeout.
    let (status, page) = server
        .get(&format!("/runs/{id}/events?after=3&wait=20"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        !seqs(&page).is_empty(),
        "answered with the next event: {page}"
    );
    let events = stream.await.expect("stream task");
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("RunCompleted"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn given_the_connection_cap_when_a_new_client_comes_then_an_idle_connection_is_evicted_never_a_stream(
) {
    let server = LocalServer::start_with(|c| {
        c.http.max_connections = 2;
        c.faults = Faults::parse("calculator=delay:1500ms").expect("faults");
    })
    .await;
    let run = server.create_run("calculate 2+3").await;
    let id = run["run_id"].as_str().expect("run id").to_owned();
    // Connection 1: an event stream (its own client, so it holds its own connection).
    let stream = {
        let url = server.url(&format!("/runs/{id}/stream"));
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .get(url)
                .send()
                .await
                .expect("connect");
            assert_eq!(resp.status(), 200);
            read_sse(resp).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Connection 2: silent. Connection 3 must evict it, not the stream.
    let _silent = server.connect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = server
        .raw(
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            PATIENCE,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = stream.await.expect("stream task");
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("RunCompleted"),
        "the stream survived: {events:#?}"
    );
}

#[tokio::test]
async fn given_a_watcher_that_drops_mid_run_when_it_reconnects_with_last_event_id_then_it_misses_and_repeats_nothing(
) {
    let server = slow_server().await;
    let run = server.create_run(SEED).await;
    let id = run["run_id"].as_str().expect("run id").to_owned();
    let url = server.url(&format!("/runs/{id}/stream"));
    // First connection: read until three events have arrived, then hang up.
    let mut resp = server.http.get(&url).send().await.expect("connect");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while parse_sse(&text).len() < 3 || !text.ends_with("\n\n") {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the first connection ended early: {other:?} after {text}"),
        }
    }
    drop(resp);
    let first: Vec<u64> = parse_sse(&text)
        .iter()
        .filter_map(|e| e.id.as_deref().and_then(|i| i.parse().ok()))
        .collect();
    let last = *first.last().expect("an event");
    // Second connection, as EventSource reconnects: from the last id seen to the end.
    let resp = server
        .http
        .get(&url)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .expect("reconnect");
    assert_eq!(resp.status(), 200);
    let second: Vec<u64> = read_sse(resp)
        .await
        .iter()
        .filter_map(|e| e.id.as_deref().and_then(|i| i.parse().ok()))
        .collect();
    let (_, log) = server.get(&format!("/runs/{id}/events")).await;
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(all, seqs(&log), "first {first:?} then {second:?}");
}
