//! The fixed-rate mode of `crane-bench`, run as a user would: the binary against its own
//! in-process runtime. Only counts are asserted (never durations: the machine may be
//! loaded).

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crane-bench"))
        .args(args)
        .env("CRANE_LOG", "error")
        .env("RUST_LOG", "error")
        .output()
        .expect("crane-bench runs")
}

#[test]
fn given_a_rate_and_a_duration_when_run_then_rate_times_duration_runs_are_sent_and_complete() {
    let out = bench(&[
        "--rate",
        "4",
        "--duration",
        "2",
        "--prompt",
        "calculate 2+3 then calculate 1+1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 runs/s for 2 s") && stdout.contains("fixed-rate open loop"),
        "{stdout}"
    );
    assert!(stdout.contains("accepted:   8 (0 rejected)"), "{stdout}");
    assert!(
        stdout.contains("completed:  8 (0 ended otherwise)"),
        "{stdout}"
    );
}

#[test]
fn given_a_rate_of_zero_when_run_then_it_is_a_usage_error() {
    let out = bench(&["--rate", "0"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rate"), "{stderr}");
}

#[test]
fn given_a_prompt_the_server_refuses_when_run_then_it_fails_saying_why() {
    let out = bench(&["--runs", "3", "--prompt", "sing a song"]);
    assert!(!out.status.success(), "nothing was measured");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no run was accepted (3 rejected: HTTP 422 prompt_not_understood 3)"),
        "{stderr}"
    );
}
