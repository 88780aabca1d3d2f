//! `kill -9` of the `crane-local` process under load, then a restart on the same database:
//! every accepted run completes, no todo is lost and none is doubled; an attempt cut short
//! by a crash does not use up a retry, so even repeated crashes fail no run. And the
//! process that answers is the one that was started (a start puts the allocator's
//! load-time settings in place by starting the program again in place).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const RUNS: usize = 40;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

const FAULTS: &str = "todo.add=delay:300ms,calculator=delay:300ms";

fn spawn(db: &std::path::Path, port: u16) -> Child {
    spawn_with(db, port, FAULTS)
}

/// `crane-local` on `db` at `port`, logging warnings (to the test's output with `TEST_LOG`).
fn crane_local(db: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crane-local"));
    command
        .args(["--addr", &format!("127.0.0.1:{port}"), "--db"])
        .arg(db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    command
}

/// Remove the database `db` and its WAL files.
fn remove_db(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

fn spawn_with(db: &std::path::Path, port: u16, faults: &str) -> Child {
    crane_local(db, port)
        .env("CRANE_FAULTS", faults)
        .env("CRANE_RETRY_BASE_MS", "50")
        .spawn()
        .expect("start crane-local")
}

/// `GET url` as JSON; panics on a transport or decoding error.
async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("crane-local at {base} did not become healthy");
}

#[tokio::test]
async fn given_runs_in_flight_when_the_process_is_killed_and_restarted_then_every_accepted_run_completes_exactly_once(
) {
    let db = std::env::temp_dir().join(format!("crane-kill-{}.db", uuid::Uuid::new_v4()));
    let http = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(&db, port);
    wait_healthy(&http, &base).await;

    // Submit every run concurrently; remember the ones accepted.
    let accepted = submit(
        &http,
        &base,
        RUNS,
        |i| format!("add a todo to pack box {i} then calculate {i}*2"),
        |i| format!("pack box {i}"),
    )
    .await;
    assert_eq!(
        accepted.len(),
        RUNS,
        "every run is accepted before the kill"
    );

    // Let work get under way, then kill -9 in the middle of it: wait until some step is
    // running (no run can finish in under 600 ms: two 300 ms steps in sequence).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = get_json(&http, format!("{base}/runs?status=running&limit=1")).await;
        if page["runs"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no run started running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(&db, port);
    wait_healthy(&http, &base).await;

    wait_all_completed(&http, &base, accepted.keys(), Duration::from_secs(60)).await;

    // Steps that were running at the kill were resumed as a new attempt.
    let mut resumed = 0;
    for id in accepted.keys() {
        let run: Value = get_json(&http, format!("{base}/runs/{id}")).await;
        resumed += run["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["attempts"].as_u64() > Some(1))
            .count();
    }
    assert!(
        resumed > 0,
        "the kill should have interrupted running steps"
    );

    let titles = todo_titles(&http, &base).await;
    let mut expected: Vec<String> = accepted.values().cloned().collect();
    expected.sort();
    assert_eq!(titles, expected, "no todo lost, none doubled");

    let _ = child.kill();
    let _ = child.wait();
    remove_db(&db);
}

/// Wait until every run in `ids` is `completed`; panics if one ends otherwise or `within`
/// passes first.
async fn wait_all_completed(
    http: &reqwest::Client,
    base: &str,
    ids: impl Iterator<Item = &String>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut unfinished: Vec<String> = ids.cloned().collect();
    while !unfinished.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in unfinished {
            let run: Value = get_json(http, format!("{base}/runs/{id}")).await;
            match run["status"].as_str() {
                Some("completed") => {}
                Some("pending" | "running") => still.push(id),
                other => panic!("run {id} ended {other:?} after the restart: {run:#}"),
            }
        }
        unfinished = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        unfinished.is_empty(),
        "runs never completed after the restart: {unfinished:?}"
    );
}

/// Submit `n` runs of `prompt(i)` concurrently; the accepted ones, by id, with `label(i)`.
async fn submit(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    prompt: impl Fn(usize) -> String,
    label: impl Fn(usize) -> String,
) -> HashMap<String, String> {
    let posts = (0..n).map(|i| {
        let http = http.clone();
        let url = format!("{base}/runs");
        let (prompt, label) = (prompt(i), label(i));
        async move {
            let r = http
                .post(url)
                .json(&json!({"prompt": prompt}))
                .send()
                .await
                .ok()?;
            (r.status().as_u16() == 201).then_some(())?;
            let body: Value = r.json().await.ok()?;
            Some((body["run_id"].as_str()?.to_owned(), label))
        }
    });
    futures::future::join_all(posts)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every todo title of the default tenant, sorted (paging through `GET /todos`).
async fn todo_titles(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut titles = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{base}/todos?limit=500"),
            Some(c) => format!("{base}/todos?limit=500&cursor={c}"),
        };
        let page: Value = get_json(http, url).await;
        titles.extend(
            page["todos"]
                .as_array()
                .expect("todos")
                .iter()
                .filter_map(|t| t["title"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    titles.sort();
    titles
}

#[tokio::test]
async fn given_repeated_kills_in_quick_succession_when_restarted_then_no_run_fails_and_each_todo_exists_once(
) {
    const KILLED_RUNS: usize = 150;
    const KILLS: usize = 4;
    // Each add takes 500 ms: every kill lands while adds are running.
    let faults = "todo.add=delay:500ms";
    let db = std::env::temp_dir().join(format!("crane-kills-{}.db", uuid::Uuid::new_v4()));
    let http = reqwest::Client::new();
    let port = free_port();
    let mut base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_with(&db, port, faults);
    wait_healthy(&http, &base).await;
    let accepted = submit(
        &http,
        &base,
        KILLED_RUNS,
        |i| format!("add a todo to ship crate {i}"),
        |i| format!("ship crate {i}"),
    )
    .await;
    assert_eq!(accepted.len(), KILLED_RUNS, "every run is accepted");

    // Kill, restart, let the restart pick its work up again, kill again...
    let started = Instant::now();
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let port = free_port();
        base = format!("http://127.0.0.1:{port}");
        child = spawn_with(&db, port, faults);
        if kill + 1 < KILLS {
            wait_healthy(&http, &base).await;
        }
    }
    let kills_took = started.elapsed();
    wait_healthy(&http, &base).await;

    wait_all_completed(&http, &base, accepted.keys(), Duration::from_secs(120)).await;

    // Interrupted attempts are recorded as such, and used up no retry.
    let mut interrupted = 0;
    for id in accepted.keys() {
        let run: Value = get_json(&http, format!("{base}/runs/{id}")).await;
        for step in run["steps"].as_array().expect("steps") {
            let interruptions = step["interruptions"].as_u64().unwrap_or(0);
            interrupted += interruptions;
            assert_eq!(
                step["attempts"].as_u64(),
                Some(interruptions + 1),
                "only interruptions preceded the one attempt that ran: {step:#}"
            );
        }
    }
    assert!(
        interrupted > 0,
        "the kills ({kills_took:?}) should have interrupted running adds"
    );

    let mut expected: Vec<String> = accepted.values().cloned().collect();
    expected.sort();
    assert_eq!(
        todo_titles(&http, &base).await,
        expected,
        "no todo lost, none doubled"
    );

    let _ = child.kill();
    let _ = child.wait();
    remove_db(&db);
}

/// `crane-local` holding todo deletes for approval, approvals expiring after `timeout_ms`.
fn spawn_holding_deletes(db: &std::path::Path, port: u16, timeout_ms: u64) -> Child {
    crane_local(db, port)
        .env("CRANE_APPROVAL", "todo.delete")
        .env("CRANE_APPROVAL_TIMEOUT_MS", timeout_ms.to_string())
        .env("CRANE_RETRY_BASE_MS", "50")
        .spawn()
        .expect("start crane-local")
}

/// POST a run, then poll it until `done` holds (or panic after a generous deadline).
async fn run_until(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = get_json(http, format!("{base}/runs/{id}")).await;
        if done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "{what}: {run:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn post_run(http: &reqwest::Client, base: &str, prompt: &str) -> String {
    let created: Value = http
        .post(format!("{base}/runs"))
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .expect("POST /runs")
        .json()
        .await
        .expect("json");
    created["run_id"].as_str().expect("run_id").to_owned()
}

fn step_status(run: &Value, id: &str) -> Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == id))
        .map(|s| s["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn given_steps_waiting_for_approval_when_the_process_is_killed_then_the_wait_its_expiry_and_a_later_approval_survive(
) {
    let db = std::env::temp_dir().join(format!("crane-kill-approval-{}.db", uuid::Uuid::new_v4()));
    let http = reqwest::Client::new();

    // Life 1 (approvals expire after 2 s): run B waits to delete "buy tea" after adding eggs.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_holding_deletes(&db, port, 2_000);
    wait_healthy(&http, &base).await;
    for title in ["buy milk", "buy tea"] {
        let id = post_run(&http, &base, &format!("add a todo to {title}")).await;
        run_until(&http, &base, &id, "seeding", |r| r["status"] == "completed").await;
    }
    let b = post_run(
        &http,
        &base,
        "add a todo to buy eggs and delete the todo 'buy tea'",
    )
    .await;
    // (On a very slow machine its 2 s may pass before the kill; it then expires in life 1.)
    run_until(&http, &base, &b, "B to wait", |r| {
        step_status(r, "s2") == "waiting_approval"
            || ["failed", "compensating", "compensated"]
                .contains(&r["status"].as_str().unwrap_or(""))
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // Life 2: B's expiry timer survived the kill and rejects it; run A starts waiting.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_holding_deletes(&db, port, 600_000);
    wait_healthy(&http, &base).await;
    let run = run_until(&http, &base, &b, "B to expire and be compensated", |r| {
        r["status"] == "compensated"
    })
    .await;
    assert_eq!(step_status(&run, "s2"), "failed", "{run:#}");
    assert_eq!(step_status(&run, "s1"), "compensated", "{run:#}");
    let a = post_run(&http, &base, "delete the todo 'buy milk'").await;
    run_until(&http, &base, &a, "A to wait", |r| {
        r["awaiting_approval"] == json!(["s1"])
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // Life 3: A still waits, nothing ran; approving it runs it.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_holding_deletes(&db, port, 600_000);
    wait_healthy(&http, &base).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = get_json(&http, format!("{base}/runs/{a}")).await;
    assert_eq!(step_status(&run, "s1"), "waiting_approval", "{run:#}");
    assert_eq!(run["steps"][0]["attempts"], 0);
    assert_eq!(todo_titles(&http, &base).await, ["buy milk", "buy tea"]);
    let approved = http
        .post(format!("{base}/runs/{a}/steps/s1/approve"))
        .send()
        .await
        .expect("approve");
    assert_eq!(approved.status().as_u16(), 200);
    run_until(&http, &base, &a, "A to complete", |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(todo_titles(&http, &base).await, ["buy tea"]);

    let _ = child.kill();
    let _ = child.wait();
    remove_db(&db);
}

/// The environment and arguments `pid` was started with (its last `exec`).
#[cfg(target_os = "linux")]
fn exec_strings(pid: u32, what: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{what}"))
        .expect("read /proc")
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_start_when_serving_then_the_same_process_runs_with_the_allocators_load_settings_unless_the_operator_set_them(
) {
    let http = reqwest::Client::new();
    for (operator, expected) in [
        (
            None,
            [
                "MALLOC_ARENA_MAX=1",
                "MIMALLOC_PAGE_RECLAIM_ON_FREE=-1",
                "MIMALLOC_PURGE_DELAY=0",
            ],
        ),
        (
            Some("2"),
            [
                "MALLOC_ARENA_MAX=2",
                "MIMALLOC_PAGE_RECLAIM_ON_FREE=2",
                "MIMALLOC_PURGE_DELAY=2",
            ],
        ),
    ] {
        let db = std::env::temp_dir().join(format!("crane-start-{}.db", uuid::Uuid::new_v4()));
        let port = free_port();
        let mut start = crane_local(&db, port);
        start.env_remove("GLIBC_TUNABLES");
        for name in [
            "MALLOC_ARENA_MAX",
            "MIMALLOC_PAGE_RECLAIM_ON_FREE",
            "MIMALLOC_PURGE_DELAY",
        ] {
            match operator {
                Some(value) => start.env(name, value),
                None => start.env_remove(name),
            };
        }
        let mut child = start.spawn().expect("start crane-local");
        // The child we started is the process that serves: started again in place.
        wait_healthy(&http, &format!("http://127.0.0.1:{port}")).await;
        assert!(child.try_wait().expect("wait").is_none(), "still running");
        let env = exec_strings(child.id(), "environ");
        let mut settings: Vec<&String> = env
            .iter()
            .filter(|v| {
                [
                    "MIMALLOC_PAGE_RECLAIM_ON_FREE=",
                    "MALLOC_ARENA_MAX=",
                    "MIMALLOC_PURGE_DELAY=",
                ]
                .iter()
                .any(|name| v.starts_with(name))
            })
            .collect();
        settings.sort();
        assert_eq!(settings, expected, "{operator:?}");
        let args = exec_strings(child.id(), "cmdline");
        assert_eq!(
            args.get(1..3),
            Some(&["--addr".to_owned(), format!("127.0.0.1:{port}")][..])
        );
        child.kill().expect("kill");
        child.wait().expect("reap");
        remove_db(&db);
    }
}
