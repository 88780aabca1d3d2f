//! Identity and tenant isolation on the local runtime, end to end over HTTP: API keys fix
//! the tenant, bad credentials get a 401 (never a 500), revoked keys stop working, and no
//! tenant can see or touch another's runs, events, todos, cursors or idempotency keys.

use std::time::Duration;

use crane::config::Config;
use crane_tests::local::{test_config, Caller, LocalServer};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const KEY_A: &str = "key-a-0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef";

fn two_tenants(c: &mut Config) {
    c.http.api_keys.inline = vec![
        (KEY_A.into(), "tenant-a".into()),
        (KEY_B.into(), "tenant-b".into()),
    ];
}

fn id(run: &Value) -> String {
    run["run_id"].as_str().expect("run_id").to_owned()
}

async fn status(caller: &Caller, method: Method, path: &str) -> (u16, Value) {
    let r = caller.request(method, path).send().await.expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_keyed(caller: &Caller, idem: &str, prompt: &str) -> (u16, Value, bool) {
    let r = caller
        .request(Method::POST, "/runs")
        .header("idempotency-key", idem)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .expect("sent");
    let replayed = r.headers().contains_key("idempotent-replayed");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null), replayed)
}

#[tokio::test]
async fn given_two_tenants_when_each_works_then_neither_can_see_or_touch_the_others_data() {
    let server = LocalServer::start_with(two_tenants).await;
    let (a, b) = (server.caller(KEY_A), server.caller(KEY_B));

    // Runs, events, time travel and cancel: another tenant's run is a 404.
    let (created, run_a, _) = post_keyed(&a, "same-key", "add a todo to buy milk").await;
    assert_eq!(created, 201, "{run_a}");
    let run_a = a.wait_settled(&id(&run_a)).await;
    assert_eq!(run_a["status"], "completed", "{run_a}");
    let ra = id(&run_a);
    let at = urlencode(run_a["updated_at"].as_str().expect("updated_at"));
    for (method, path) in [
        (Method::GET, format!("/runs/{ra}")),
        (Method::GET, format!("/runs/{ra}?at={at}")),
        (Method::GET, format!("/runs/{ra}/events")),
        (Method::POST, format!("/runs/{ra}/cancel")),
    ] {
        let (s, body) = status(&b, method.clone(), &path).await;
        assert_eq!(s, 404, "B {method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        // A's own completed run: found (a cancel of a finished run is a 409).
        let (s, _) = status(&a, method.clone(), &path).await;
        assert!(s == 200 || s == 409, "A {method} {path}: {s}");
    }

    // Idempotency keys: the same key from B creates B's own run.
    let (s, run_b, replayed) = post_keyed(&b, "same-key", "add a todo to buy milk").await;
    assert_eq!((s, replayed), (201, false), "{run_b}");
    assert_ne!(id(&run_b), ra);
    b.wait_settled(&id(&run_b)).await;

    // Listing and cursors: each sees only its own runs; A's cursor shows B nothing of A's.
    a.run_prompt("calculate 1+1").await;
    let (_, page) = a.get("/runs?limit=1").await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("A has a second page")
        .to_owned();
    let (_, all_a) = a.get("/runs").await;
    let ids_a: Vec<Value> = all_a["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].clone())
        .collect();
    assert_eq!(ids_a.len(), 2);
    let (_, all_b) = b.get("/runs").await;
    assert_eq!(all_b["runs"].as_array().map(Vec::len), Some(1), "{all_b}");
    assert_eq!(all_b["runs"][0]["run_id"], json!(id(&run_b)));
    let (s, borrowed) = b.get(&format!("/runs?cursor={}", urlencode(&cursor))).await;
    let leaked = borrowed["runs"]
        .as_array()
        .is_some_and(|runs| runs.iter().any(|r| ids_a.contains(&r["run_id"])));
    assert!(!leaked && s < 500, "B with A's cursor: {s} {borrowed}");

    // Todos and their ids: each tenant has its own list; B completing A's todo id fails
    // and its saga undoes only B's own work.
    let todo_a = a.todos().await;
    assert_eq!(todo_a.len(), 1);
    let todo_id = todo_a[0]["id"].clone();
    assert_eq!(b.todos().await.len(), 1);
    let attack = b
        .run_prompt(&format!(
            "add a todo to buy bread then complete todo {todo_id} then complete todo 999"
        ))
        .await;
    assert!(
        matches!(attack["status"].as_str(), Some("compensated" | "failed")),
        "{attack}"
    );
    let after = a.todos().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], todo_id);
    assert_eq!(
        after[0]["done"], todo_a[0]["done"],
        "A's todo untouched: {after:?}"
    );
    let b_titles: Vec<Value> = b.todos().await.iter().map(|t| t["title"].clone()).collect();
    assert!(
        !b_titles.contains(&json!("buy bread")),
        "B's saga undid its add: {b_titles:?}"
    );
    server.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn given_bad_or_missing_credentials_when_calling_then_401_with_www_authenticate_never_500() {
    let server = LocalServer::start_with(two_tenants).await;
    let long = format!("Bearer {}", "k".repeat(10 * 1024));
    let cases: Vec<(&str, Option<HeaderValue>)> = vec![
        ("missing", None),
        ("no scheme", Some(HeaderValue::from_static(KEY_A))),
        ("scheme only", Some(HeaderValue::from_static("Bearer"))),
        ("empty token", Some(HeaderValue::from_static("Bearer "))),
        (
            "other scheme",
            Some(HeaderValue::from_static("Basic a2V5OnNlY3JldA==")),
        ),
        (
            "unknown key",
            Some(HeaderValue::from_static("Bearer key-c-0123456789abcdef")),
        ),
        (
            "prefix of a key",
            Some(HeaderValue::from_static("Bearer key-a-0123456789abcde")),
        ),
        (
            "10 KB token",
            Some(HeaderValue::from_str(&long).expect("ascii")),
        ),
        (
            "non-ASCII",
            Some(HeaderValue::from_bytes(b"Bearer key-a-0123456789abcd\xc3\xa9").expect("bytes")),
        ),
    ];
    for (case, header) in cases {
        for (method, path) in [(Method::GET, "/runs"), (Method::POST, "/runs")] {
            let mut req = server
                .http
                .request(method.clone(), server.url(path))
                .json(&json!({"prompt": "calculate 1+1"}));
            if let Some(h) = &header {
                req = req.header(AUTHORIZATION, h.clone());
            }
            let r = req.send().await.expect("sent");
            assert_eq!(r.status().as_u16(), 401, "{case}: {method} {path}");
            assert_eq!(
                r.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{case}"
            );
            let body: Value = r.json().await.expect("JSON body");
            assert_eq!(body["error"]["code"], "unauthorized", "{case}");
            assert!(
                !body.to_string().contains("0123456789abcd"),
                "{case}: {body}"
            );
        }
    }
    // Health and the API description need no key; a good key in lower case scheme works.
    assert_eq!(server.get("/health").await.0, 200);
    assert_eq!(server.get("/openapi.json").await.0, 200);
    let r = server
        .http
        .get(server.url("/runs"))
        .header(AUTHORIZATION, format!("bearer {KEY_A}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test]
async fn given_a_keys_file_when_a_key_is_removed_then_it_is_refused_after_sighup_and_after_restart()
{
    let file = std::env::temp_dir().join(format!("crane-keys-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, format!("{KEY_A}=tenant-a\n{KEY_B}=tenant-b\n")).expect("write");
    let mut config = test_config();
    config.http.api_keys.file = Some(file.clone());
    let db = config.db.clone();
    let server = LocalServer::start(config.clone()).await;
    let (a, b) = (server.caller(KEY_A), server.caller(KEY_B));
    assert_eq!(a.get("/runs").await.0, 200);
    std::fs::write(&file, format!("{KEY_B}=tenant-b\n")).expect("rewrite");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a.get("/runs").await.0 != 401 {
        assert!(std::time::Instant::now() < deadline, "key A still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.get("/runs").await.0, 200);
    server.stop().await;

    let restarted = LocalServer::start(Config { db, ..config }).await;
    assert_eq!(restarted.caller(KEY_A).get("/runs").await.0, 401);
    assert_eq!(restarted.caller(KEY_B).get("/runs").await.0, 200);
    restarted.stop().await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn given_no_keys_when_listening_beyond_loopback_then_it_refuses_unless_insecure_is_asked() {
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let refused = crane_local::run(listener, test_config(), async {}).await;
    let err = format!("{:#}", refused.expect_err("refused"));
    assert!(err.contains("--insecure-no-auth"), "{err}");

    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let mut config = test_config();
    config.http.insecure_no_auth = true;
    crane_local::run(listener, config, async {})
        .await
        .expect("serves when told to");

    // Loopback without keys: development mode, everyone is the default tenant.
    let server = LocalServer::start_with(|_| {}).await;
    let run = server.run_prompt("calculate 2+3").await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["tenant"].as_str().unwrap_or("default"), "default");
    server.stop().await;
}

#[tokio::test]
async fn given_tenant_a_flooding_beyond_its_rate_when_tenant_b_works_then_only_a_gets_429_and_b_completes(
) {
    let server = LocalServer::start_with(|c| {
        two_tenants(c);
        c.http.tenant_rate_per_s = 20.0;
        c.http.tenant_burst = 20;
    })
    .await;
    let (a, b) = (server.caller(KEY_A), server.caller(KEY_B));
    let flood = tokio::spawn(async move {
        let sends = (0..300).map(|_| {
            let a = a.clone();
            async move {
                let r = a
                    .request(Method::POST, "/runs")
                    .json(&json!({"prompt": "calculate 1+1"}))
                    .send()
                    .await
                    .expect("sent");
                let retry = r.headers().get("retry-after").cloned();
                (r.status().as_u16(), retry)
            }
        });
        futures::future::join_all(sends).await
    });
    let mut b_runs = Vec::new();
    for i in 0..5 {
        let (s, run) = b
            .post("/runs", json!({"prompt": format!("calculate {i}+1")}))
            .await;
        assert_eq!(s, 201, "B is never limited by A's flood: {run}");
        b_runs.push(id(&run));
    }
    for run_id in &b_runs {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (s, run) = b.get(&format!("/runs/{run_id}")).await;
            assert_eq!(s, 200, "{run}");
            if run["status"] == "completed" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "B's run stuck: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let answers = flood.await.expect("flood");
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert!((20..300).contains(&created), "A: {created} created");
    assert!(!limited.is_empty(), "A was limited");
    assert!(limited
        .iter()
        .all(|(_, retry)| retry.as_ref().is_some_and(|v| v != "0")));
    assert_eq!(created + limited.len(), 300, "only 201 or 429");
    server.stop().await;
}
