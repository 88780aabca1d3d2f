//! Reopening a todo end to end: prompts posted to the local runtime over HTTP (port 0, a
//! fresh SQLite database each), planned by the pattern planner, run by the todo tool and
//! read back through `GET /todos`.

use crane::tools::Faults;
use crane_tests::local::LocalServer;
use serde_json::Value;

/// The todo with `id` as `GET /todos` lists it.
async fn todo(server: &LocalServer, id: u64) -> Value {
    server
        .todos()
        .await
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no todo {id}"))
}

/// The action of the first step of a run's plan.
fn first_action(run: &Value) -> &str {
    run["plan"]["steps"][0]["input"]["action"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn given_a_completed_todo_when_reopened_then_it_is_listed_as_not_done() {
    let server = LocalServer::start_with(|_| {}).await;
    let run = server.run_prompt("add a todo to buy milk").await;
    assert_eq!(run["status"], "completed", "{run:#}");
    let run = server.run_prompt("complete todo 1").await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(todo(&server, 1).await["done"], true);

    let run = server.run_prompt("reopen todo 1").await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(first_action(&run), "reopen");
    assert_eq!(run["result"]["done"], false, "{run:#}");
    let reopened = todo(&server, 1).await;
    assert_eq!(
        (reopened["title"].as_str(), reopened["done"].as_bool()),
        (Some("buy milk"), Some(false))
    );

    // The other phrasing, after completing it again.
    server.run_prompt("mark todo 1 as done").await;
    assert_eq!(todo(&server, 1).await["done"], true);
    let run = server.run_prompt("mark 'buy milk' as not done").await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(first_action(&run), "reopen");
    assert_eq!(todo(&server, 1).await["done"], false);
    server.stop().await;
}

#[tokio::test]
async fn given_a_missing_todo_when_reopened_then_the_run_fails_like_completing_it() {
    let server = LocalServer::start_with(|_| {}).await;
    for prompt in ["complete todo 9", "reopen todo 9"] {
        let run = server.run_prompt(prompt).await;
        assert_eq!(run["status"], "failed", "{prompt}: {run:#}");
        let s1 = run["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["id"] == "s1"))
            .unwrap_or_else(|| panic!("no step s1 in {run:#}"));
        assert_eq!(s1["error"], "todo 9 not found", "{prompt}: {run:#}");
        assert_eq!(
            s1["attempts"], 1,
            "{prompt}: permanent errors are not retried"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn given_a_reopen_before_a_failure_when_the_run_is_compensated_then_the_todo_is_done_again() {
    let server = LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=fail_permanent").expect("faults");
    })
    .await;
    server.run_prompt("add a todo to buy milk").await;
    server.run_prompt("complete todo 1").await;
    let run = server.run_prompt("reopen todo 1 then calculate 2+2").await;
    assert_eq!(run["status"], "compensated", "{run:#}");
    assert_eq!(
        todo(&server, 1).await["done"],
        true,
        "the compensation of reopen completes the todo again"
    );
    server.stop().await;
}
