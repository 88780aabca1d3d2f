//! The `crane` binary against a `crane-local` started in process on `127.0.0.1:0`: every
//! command, both output modes of `--follow` (plain lines into a pipe, the live frame on a
//! pseudo-terminal), the JSON output, and the exit statuses (0 completed, 1 any other end
//! or a refusal, 2 usage and connection errors), each error on one line.

use std::process::Output;
use std::time::Duration;

use crane::config::Config;
use crane::tools::faults::Faults;
use crane_tests::local::LocalServer;
use serde_json::Value;

const SEED: &str = "calculate 2+3 and calculate 10*5 then add a todo with the result";

/// Run `crane ARGS` against `url` with `env`, and wait for it (at most a minute).
async fn crane_at(url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crane"));
    cmd.args(args)
        .env("CRANE_URL", url)
        .env_remove("CRANE_API_KEY")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("crane finished within a minute")
        .expect("crane ran")
}

async fn crane(server: &LocalServer, args: &[&str]) -> Output {
    crane_at(&server.base, &[], args).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Exit status `expected` and, for a failure, exactly one line on stderr.
fn assert_exit(o: &Output, expected: i32) {
    assert_eq!(
        code(o),
        expected,
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    if expected != 0 {
        let err = stderr(o);
        assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
        assert!(err.starts_with("crane: "), "{err:?}");
    }
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

async fn faulty(faults: &str) -> LocalServer {
    let faults = Faults::parse(faults).expect("faults");
    LocalServer::start_with(|c: &mut Config| c.faults = faults).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_pipe_when_a_run_is_followed_then_each_step_change_is_a_plain_line_and_completion_exits_0(
) {
    let server = faulty("calculator=delay:50ms").await;
    let out = crane(&server, &["run", SEED, "--follow"]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b'),
        "no terminal escapes in a pipe: {text:?}"
    );
    for expected in [
        "run created: \"calculate 2+3 and calculate 10*5 then add a todo with the result\"",
        "run planned by the pattern planner: 3 steps",
        "s3 todo add \"{{s2}}\" (after s1, s2)",
        "s1 calculator 2+3: running (attempt 1)",
        "s1 calculator 2+3: completed → 5",
        "s2 calculator 10*5: completed → 50",
        "s3 todo add \"{{s2}}\": completed → todo",
        "run completed: result todo",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("run completed")),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_flaky_tool_behind_a_breaker_when_followed_then_attempts_retries_and_breaker_refusals_are_shown(
) {
    let server = LocalServer::start_with(|c| {
        c.faults = Faults::parse("calculator=flaky:3").expect("faults");
        c.settings.retry.max_retries = 3;
        c.settings.breaker.failure_threshold = 3;
        c.settings.breaker.open_ms = 300;
        c.settings.breaker.half_open_successes = 2;
    })
    .await;
    let out = crane(&server, &["run", "calculate 1+2", "--follow"]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    for expected in [
        "s1 calculator 1+2: attempt 1 failed: ",
        "; retry in ",
        "s1 calculator 1+2: running (attempt 3)",
        "s1 calculator 1+2: held by the circuit breaker: calculator temporarily unavailable (circuit breaker open); asks again at ",
        "s1 calculator 1+2: running (attempt 4)",
        "s1 calculator 1+2: completed → 3",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_step_that_fails_after_a_todo_was_added_when_followed_then_the_compensation_is_shown_and_it_exits_1(
) {
    let server = faulty("calculator=fail_permanent").await;
    let out = crane(
        &server,
        &[
            "run",
            "add a todo to buy milk then calculate 2+3",
            "--follow",
        ],
    )
    .await;
    assert_exit(&out, 1);
    let text = stdout(&out);
    for expected in [
        "s1 todo add \"buy milk\": completed",
        "s2 calculator 2+3: attempt 1 failed: ",
        "run failed: step s2 (calculator) failed",
        "run compensating: undoing s1",
        "s1 todo add \"buy milk\": undone",
        "run compensated",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(server.todos().await.is_empty(), "the todo was undone");

    // A failure with nothing to undo ends at `failed`, also exit 1.
    let out = crane(&server, &["run", "calculate 2+3", "--follow"]).await;
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("run failed: step s1 (calculator) failed"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_json_when_a_run_is_followed_then_the_final_run_is_printed_and_events_are_json_lines()
{
    let server = LocalServer::start_with(|_| {}).await;
    let out = crane(&server, &["run", SEED, "--follow", "--json"]).await;
    assert_exit(&out, 0);
    let run = json(&out);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["steps"].as_array().map(Vec::len), Some(3));
    let id = run["run_id"].as_str().expect("run_id").to_owned();

    // Without --follow: the created run as JSON, or just its id.
    let out = crane(&server, &["run", "calculate 1+1", "--json"]).await;
    assert_exit(&out, 0);
    assert!(json(&out)["run_id"].is_string());
    let out = crane(&server, &["run", "calculate", "1+1"]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim().len(), 36, "a run id: {}", stdout(&out));

    for args in [
        &["events", &id, "--json"][..],
        &["events", &id, "--follow", "--json"],
    ] {
        let out = crane(&server, args).await;
        assert_exit(&out, 0);
        let events: Vec<Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{args:?}"
        );
        assert_eq!(
            events.last().map(|e| e["type"].clone()),
            Some("RunCompleted".into())
        );
    }

    let out = crane(&server, &["events", &id]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("run completed: result todo"),
        "{}",
        stdout(&out)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_finished_run_when_read_then_get_at_runs_todos_tools_and_health_show_it() {
    let server = LocalServer::start_with(|_| {}).await;
    let run = server.run_prompt(SEED).await;
    let id = run["run_id"].as_str().expect("id");
    let created = run["created_at"].as_str().expect("created_at");

    let out = crane(&server, &["get", id]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("run {id} · completed · 3 steps")),
        "{text}"
    );
    assert!(text.contains("✓ s2  calculator  10*5"), "{text}");
    assert!(text.contains("run completed in "), "{text}");

    // Time travel: at creation nothing had run; before it, the run did not exist.
    let out = crane(&server, &["get", id, "--at", created, "--json"]).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["status"], "pending");
    let out = crane(&server, &["get", id, "--at", "2000-01-01T00:00:00Z"]).await;
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("(404 not_found)"), "{}", stderr(&out));

    server.run_prompt("calculate 1+1").await;
    let out = crane(&server, &["runs", "--status", "completed", "--limit", "1"]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("completed") && stdout(&out).contains("calculate 1+1"));
    assert!(
        stderr(&out).starts_with("more: crane runs --cursor "),
        "{}",
        stderr(&out)
    );
    let out = crane(&server, &["runs", "--json"]).await;
    assert_eq!(json(&out)["runs"].as_array().map(Vec::len), Some(2));
    let out = crane(&server, &["runs", "--status", "bogus"]).await;
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("422 invalid_status"),
        "{}",
        stderr(&out)
    );

    let out = crane(&server, &["todos"]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim(), "1  [ ]  50");

    let out = crane(&server, &["tools"]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("calculator  breaker closed"),
        "{}",
        stdout(&out)
    );
    assert!(json(&crane(&server, &["tools", "--json"]).await)["tools"].is_array());

    let out = crane(&server, &["health"]).await;
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("ok · version"), "{}", stdout(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_run_in_progress_when_cancelled_then_following_it_ends_cancelled_with_exit_1() {
    let server = faulty("calculator=delay:1s").await;
    let run = server
        .create_run("add a todo to pack then calculate 2+3")
        .await;
    let id = run["run_id"].as_str().expect("id");
    server
        .wait_until(id, Duration::from_secs(30), |r| {
            r["steps"][1]["status"] == "running"
        })
        .await;

    let out = crane(&server, &["cancel", id]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!("cancel requested: run {id} is ")),
        "{}",
        stdout(&out)
    );

    let out = crane(&server, &["events", id, "--follow"]).await;
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("run cancel requested"), "{text}");
    assert!(text.trim_end().ends_with("run cancelled"), "{text}");

    let out = crane(&server, &["cancel", id]).await;
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("(409 run_finished)"),
        "{}",
        stderr(&out)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_step_not_waiting_for_approval_when_approving_then_the_409_is_one_line_and_exit_1()
{
    let server = LocalServer::start_with(|_| {}).await;
    let run = server.run_prompt("calculate 2+3").await;
    let id = run["run_id"].as_str().expect("id");
    for verb in ["approve", "reject"] {
        let out = crane(&server, &[verb, id, "s1", "--comment", "looks fine"]).await;
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("(409 not_waiting_approval)"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            stderr(&out).trim_end().lines().count(),
            1,
            "{}",
            stderr(&out)
        );
    }
    let out = crane(&server, &["approve", id, "s9"]).await;
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("(404 not_found)"), "{}", stderr(&out));
    let out = crane(&server, &["get", "no-such-run"]).await;
    assert_exit(&out, 1);
    let out = crane(&server, &["events", "no-such-run", "--follow"]).await;
    assert_exit(&out, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_no_server_or_bad_arguments_when_run_then_one_line_and_exit_2() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    for args in [
        &["health"][..],
        &["run", SEED, "--follow"],
        &["events", "x", "--follow"],
    ] {
        let out = crane_at(&closed, &[], args).await;
        assert_exit(&out, 2);
        assert!(
            stderr(&out).starts_with("crane: cannot reach http://127.0.0.1:"),
            "{}",
            stderr(&out)
        );
    }
    for args in [
        &["get"][..],
        &["frobnicate"],
        &["runs", "--limit", "500"],
        &["get", "x", "--at", "yesterday"],
        &[],
    ] {
        let out = crane_at(&closed, &[], args).await;
        assert_exit(&out, 2);
        assert!(
            stderr(&out).trim_end().ends_with("(crane --help)"),
            "{}",
            stderr(&out)
        );
    }
    let out = crane_at("localhost:3000", &[], &["health"]).await;
    assert_exit(&out, 2);
    let out = crane_at(&closed, &[], &["--help"]).await;
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("CRANE_URL"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_api_keys_when_called_then_crane_api_key_is_sent_as_bearer_and_a_missing_key_exits_2()
{
    const KEY: &str = "cli-key-0123456789abcdef";
    let server = LocalServer::start_with(|c| {
        c.http.api_keys.inline = vec![(KEY.into(), "acme".into())];
    })
    .await;
    let out = crane(&server, &["runs"]).await;
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("401 unauthorized") && stderr(&out).contains("CRANE_API_KEY"));
    assert!(!stderr(&out).contains(KEY));
    let out = crane_at(
        &server.base,
        &[("CRANE_API_KEY", KEY)],
        &["run", "calculate 2+3", "--follow"],
    )
    .await;
    assert_exit(&out, 0);
    let out = crane_at(&server.base, &[], &["--api-key", KEY, "runs", "--json"]).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["runs"][0]["tenant"], "acme");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_shell_when_completions_are_asked_then_a_script_is_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = crane_at("http://127.0.0.1:9", &[], &["completions", shell]).await;
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("crane"), "{shell}");
        assert!(stdout(&out).contains("approve"), "{shell}");
    }
}

/// The live frame needs a terminal: `script` (util-linux) gives the command one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_terminal_when_a_run_is_followed_then_step_lines_are_redrawn_in_place() {
    // Never skipped: without `script` the test fails and says what to install.
    assert!(
        std::process::Command::new("script")
            .arg("--version")
            .output()
            .is_ok(),
        "this test needs `script` to open a pseudo-terminal: install util-linux \
         (Debian: `apt-get install bsdutils`)"
    );
    // Long enough steps for several redraws while they run, even on a loaded machine.
    let server = faulty("calculator=delay:1s").await;
    let command = format!("'{}' run '{SEED}' --follow", env!("CARGO_BIN_EXE_crane"));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env("CRANE_URL", &server.base)
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("finished")
    .expect("script ran");
    assert_exit(&out, 0);
    let screen = stdout(&out);
    assert!(
        screen.contains("\x1b[4F"),
        "the frame moves back up over its 4 lines: {screen:?}"
    );
    assert!(
        screen.contains("\x1b[32m✓\x1b[0m s1  calculator  2+3"),
        "{screen:?}"
    );
    assert!(
        SPINNER
            .iter()
            .any(|s| screen.contains(&format!("{s}\x1b[0m s1"))),
        "a spinner while the calculator runs: {screen:?}"
    );
    assert!(
        screen.contains("run \x1b[32mcompleted\x1b[0m in "),
        "{screen:?}"
    );
    assert!(
        !screen.contains("run created:"),
        "no plain lines on a terminal"
    );
    server.stop().await;
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
