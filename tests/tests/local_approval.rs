//! Human approval end to end on the local runtime: a port-0 server with
//! `CRANE_APPROVAL=todo.delete`, driven over HTTP.

use std::time::Duration;

use crane::config::Config;
use crane::engine::approval::ApprovalPolicy;
use crane_tests::local::{Caller, LocalServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn hold_deletes(c: &mut Config) {
    c.settings.approval = ApprovalPolicy::parse(["todo.delete"]).expect("policy");
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {run:#}"))
}

fn id(run: &Value) -> String {
    run["run_id"].as_str().expect("run_id").to_owned()
}

async fn events(server: &LocalServer, id: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/runs/{id}/events")).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Add a todo titled `title` through a run of its own.
async fn seed_todo(server: &LocalServer, title: &str) {
    let run = server.run_prompt(&format!("add a todo to {title}")).await;
    assert_eq!(run["status"], "completed", "{run:#}");
}

fn titles(todos: &[Value]) -> Vec<String> {
    todos
        .iter()
        .filter_map(|t| t["title"].as_str().map(str::to_owned))
        .collect()
}

/// Create `prompt`'s run and wait until `held` waits for approval.
async fn until_waiting(server: &LocalServer, prompt: &str, held: &str) -> Value {
    let created = server.create_run(prompt).await;
    let plan_step = created["plan"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == held))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(plan_step["requires_approval"], true, "{created:#}");
    server
        .wait_until(&id(&created), WAIT, |r| {
            step(r, held)["status"] == "waiting_approval"
        })
        .await
}

/// With "buy milk" on the list, a run that adds "buy eggs" (s1, completed) and waits for
/// approval to delete "buy milk" (s2): its id.
async fn eggs_added_milk_delete_held(server: &LocalServer) -> String {
    seed_todo(server, "buy milk").await;
    let run = until_waiting(
        server,
        "add a todo to buy eggs and delete the todo 'buy milk'",
        "s2",
    )
    .await;
    let id = id(&run);
    server
        .wait_until(&id, WAIT, |r| step(r, "s1")["status"] == "completed")
        .await;
    id
}

#[tokio::test]
async fn given_a_delete_that_needs_approval_when_approved_then_it_runs_only_then_and_the_run_completes(
) {
    let server = LocalServer::start_with(hold_deletes).await;
    seed_todo(&server, "buy milk").await;
    let run = until_waiting(
        &server,
        "calculate 2+3 and delete the todo 'buy milk'",
        "s2",
    )
    .await;
    let id = id(&run);
    assert_eq!(run["awaiting_approval"], json!(["s2"]));
    assert_eq!(step(&run, "s2")["approval"]["approver"], "default");
    // The independent step is not held.
    let run = server
        .wait_until(&id, WAIT, |r| step(r, "s1")["status"] == "completed")
        .await;
    assert_eq!(run["status"], "running");
    // Held: no worker has seen it, the todo is still there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = events(&server, &id).await;
    assert!(
        !log.iter()
            .any(|e| e["type"] == "StepStarted" && e["data"]["step_id"] == "s2"),
        "{:?}",
        types(&log)
    );
    assert_eq!(titles(&server.todos().await), vec!["buy milk".to_string()]);
    let waiting_at = log
        .iter()
        .find(|e| e["type"] == "ApprovalRequested")
        .map(|e| e["at"].as_str().unwrap_or_default().to_owned())
        .expect("ApprovalRequested");

    let (status, body) = server
        .post(
            &format!("/runs/{id}/steps/s2/approve"),
            json!({"comment": "yes, that one"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["awaiting_approval"], json!([]));
    let run = server.wait_settled(&id).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    let approval = &step(&run, "s2")["approval"];
    assert_eq!(approval["decision"], "approved");
    assert_eq!(approval["comment"], "yes, that one");
    assert!(server.todos().await.is_empty(), "deleted after approval");
    let log = types(&events(&server, &id).await);
    let pos = |t: &str| log.iter().position(|x| x == t).unwrap_or(usize::MAX);
    assert!(pos("ApprovalRequested") < pos("StepApproved"), "{log:?}");
    assert!(pos("StepApproved") < log.len(), "{log:?}");
    // Time travel shows the step waiting.
    let (status, then) = server
        .get(&format!("/runs/{id}?at={}", waiting_at.replace('+', "%2B")))
        .await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(step(&then, "s2")["status"], "waiting_approval");
    assert_eq!(then["awaiting_approval"], json!(["s2"]));
    server.stop().await;
}

#[tokio::test]
async fn given_a_waiting_delete_when_rejected_then_it_never_runs_and_completed_steps_are_compensated(
) {
    let server = LocalServer::start_with(hold_deletes).await;
    let id = eggs_added_milk_delete_held(&server).await;
    let (status, body) = server
        .post(
            &format!("/runs/{id}/steps/s2/reject"),
            json!({"comment": "keep the milk"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = server.wait_settled(&id).await;
    assert_eq!(run["status"], "compensated", "{run:#}");
    assert_eq!(step(&run, "s1")["status"], "compensated");
    assert_eq!(step(&run, "s2")["status"], "failed");
    assert_eq!(step(&run, "s2")["attempts"], 0);
    assert_eq!(step(&run, "s2")["approval"]["decision"], "rejected");
    assert!(run["error"]
        .as_str()
        .is_some_and(|e| e.contains("keep the milk")));
    assert_eq!(
        titles(&server.todos().await),
        vec!["buy milk".to_string()],
        "the eggs were undone, the milk never deleted"
    );
    server.stop().await;
}

#[tokio::test]
async fn given_nobody_decides_when_the_approval_expires_then_it_is_a_rejection() {
    let server = LocalServer::start_with(|c| {
        hold_deletes(c);
        c.settings.approval_timeout_ms = 400;
    })
    .await;
    seed_todo(&server, "buy milk").await;
    let created = server
        .create_run("add a todo to buy eggs and delete the todo 'buy milk'")
        .await;
    let id = id(&created);
    let run = server.wait_settled_within(&id, WAIT).await;
    assert_eq!(run["status"], "compensated", "{run:#}");
    assert_eq!(step(&run, "s2")["approval"]["decision"], "expired");
    assert!(step(&run, "s2")["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("approval expired")));
    let log = events(&server, &id).await;
    let rejected = log
        .iter()
        .find(|e| e["type"] == "StepRejected")
        .expect("StepRejected");
    assert_eq!(rejected["data"]["expired"], true);
    assert_eq!(titles(&server.todos().await), vec!["buy milk".to_string()]);
    let (status, err) = server
        .post(&format!("/runs/{id}/steps/s2/approve"), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("already_decided"))
    );
    server.stop().await;
}

#[tokio::test]
async fn given_a_decided_step_when_decided_again_or_concurrently_then_exactly_one_decision_counts()
{
    let server = LocalServer::start_with(hold_deletes).await;
    seed_todo(&server, "a").await;
    seed_todo(&server, "b").await;

    // Sequential: the second decision is refused.
    let run = until_waiting(&server, "delete the todo 'a'", "s1").await;
    let first = id(&run);
    let (status, _) = server
        .post(&format!("/runs/{first}/steps/s1/approve"), json!({}))
        .await;
    assert_eq!(status, 200);
    for verb in ["approve", "reject"] {
        let (status, err) = server
            .post(&format!("/runs/{first}/steps/s1/{verb}"), json!({}))
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("already_decided")),
            "{err}"
        );
    }
    assert_eq!(server.wait_settled(&first).await["status"], "completed");

    // Concurrent approve and reject: one 200, one 409, and the log has one decision.
    let run = until_waiting(&server, "delete the todo 'b'", "s1").await;
    let second = id(&run);
    let caller: Caller = server.anonymous();
    let (approve_path, reject_path) = (
        format!("/runs/{second}/steps/s1/approve"),
        format!("/runs/{second}/steps/s1/reject"),
    );
    let approve = caller.post(&approve_path, json!({}));
    let reject = caller.post(&reject_path, json!({}));
    let ((a, _), (r, _)) = tokio::join!(approve, reject);
    let mut statuses = [a, r];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let run = server.wait_settled(&second).await;
    let log = types(&events(&server, &second).await);
    let decisions = log
        .iter()
        .filter(|t| *t == "StepApproved" || *t == "StepRejected")
        .count();
    assert_eq!(decisions, 1, "{log:?}");
    let expected = if a == 200 { "completed" } else { "failed" };
    assert_eq!(run["status"], expected, "{run:#}");

    // Not waiting, unknown step, unknown run, bad bodies.
    let (status, err) = server
        .post(&format!("/runs/{first}/steps/s9/approve"), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, err) = server
        .post(
            "/runs/0190c3a0-0000-7000-8000-000000000000/steps/s1/approve",
            json!({}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, err) = server
        .post(
            &format!("/runs/{first}/steps/s1/reject"),
            json!({"comment": 3}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_comment"))
    );
    let long = "x".repeat(1001);
    let (status, err) = server
        .post(
            &format!("/runs/{first}/steps/s1/reject"),
            json!({"comment": long}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("comment_too_long"))
    );
    let calc = server.run_prompt("calculate 1+1").await;
    let (status, err) = server
        .post(&format!("/runs/{}/steps/s1/approve", id(&calc)), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("not_waiting_approval")),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn given_a_step_waiting_for_approval_when_the_run_is_cancelled_then_it_is_skipped_and_completed_steps_undone(
) {
    let server = LocalServer::start_with(hold_deletes).await;
    let id = eggs_added_milk_delete_held(&server).await;
    let (status, body) = server.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let run = server.wait_settled(&id).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(step(&run, "s2")["status"], "skipped");
    assert_eq!(step(&run, "s1")["status"], "compensated");
    assert_eq!(run["awaiting_approval"], json!([]));
    assert_eq!(titles(&server.todos().await), vec!["buy milk".to_string()]);
    let (status, err) = server
        .post(&format!("/runs/{id}/steps/s2/approve"), json!({}))
        .await;
    assert_eq!(status, 409, "{err}");
    server.stop().await;
}

#[tokio::test]
async fn given_another_tenants_waiting_step_when_decided_then_it_is_not_found() {
    const KEY_A: &str = "key-a-0123456789abcdef";
    const KEY_B: &str = "key-b-0123456789abcdef";
    let server = LocalServer::start_with(|c| {
        hold_deletes(c);
        c.http.api_keys.inline = vec![
            (KEY_A.into(), "tenant-a".into()),
            (KEY_B.into(), "tenant-b".into()),
        ];
    })
    .await;
    let a = server.caller(KEY_A);
    let b = server.caller(KEY_B);
    let run = a.run_prompt("add a todo to buy milk").await;
    assert_eq!(run["status"], "completed");
    let created = a.create_run("delete the todo 'buy milk'").await;
    let id = id(&created);
    a.wait_until(&id, WAIT, |r| step(r, "s1")["status"] == "waiting_approval")
        .await;
    for verb in ["approve", "reject"] {
        let (status, err) = b
            .post(&format!("/runs/{id}/steps/s1/{verb}"), json!({}))
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }
    let (status, body) = a
        .post(&format!("/runs/{id}/steps/s1/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["steps"][0]["approval"]["decided_by"], "tenant-a");
    server.stop().await;
}
