//! [`App::process_jobs`]: a run's jobs processed together, the next level run in place.

use std::time::{Duration, Instant};

use super::*;
use crate::app::{JobsReport, WaveLimits};

/// Time enough for every level.
fn inline() -> WaveLimits {
    WaveLimits {
        inline_until: Some(Instant::now() + Duration::from_secs(3600)),
        resume: false,
    }
}

/// [`inline`], for jobs delivered again.
fn resuming() -> WaveLimits {
    WaveLimits {
        resume: true,
        ..inline()
    }
}

/// Create a run of `steps` and take the jobs the reactor would send for it.
async fn created(h: &Harness) -> (RunKey, Vec<StepJob>) {
    let created = h
        .app
        .create_run(&ctx(), "test", None)
        .await
        .expect("created");
    let jobs = dispatched(h.take_effects());
    (RunKey::new("default", &created.run.run_id), jobs)
}

fn dispatched(effects: Vec<Effect>) -> Vec<StepJob> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Dispatch { job, .. } => Some(job),
            _ => None,
        })
        .collect()
}

/// The log as (type, step) pairs.
async fn log(h: &Harness, key: &RunKey) -> Vec<(String, String)> {
    h.app
        .run_events(key)
        .await
        .expect("events")
        .iter()
        .map(|e| {
            (
                e.event.type_name().to_owned(),
                e.event.step_id().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn ids(jobs: &[(StepJob, u64)]) -> Vec<(&str, u32, u64)> {
    jobs.iter()
        .map(|(j, d)| (j.step_id.as_str(), j.attempt, *d))
        .collect()
}

#[tokio::test]
async fn given_the_first_level_when_processed_together_then_the_worker_runs_the_next_level_itself()
{
    let h = harness(seed_dag(), "");
    let (key, jobs) = created(&h).await;
    assert_eq!(jobs.len(), 3);

    let report = h.app.process_jobs(&jobs, inline()).await.expect("jobs run");

    assert_eq!(report.results, vec![JobResult::Done; 3]);
    assert!(report.send.is_empty(), "{:?}", ids(&report.send));
    let run = h.app.get_run(&key).await.expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    assert!(run
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Completed && s.attempts == 1));
    assert_eq!(report.state.map(|s| s.status), Some(RunStatus::Completed));
    // Claims of a level together; its outcomes together with the next level's claim.
    let events = h.app.run_events(&key).await.expect("events");
    let at = |ty: &str, step: &str| {
        events
            .iter()
            .find(|e| e.event.type_name() == ty && e.event.step_id() == Some(step))
            .map(|e| (e.seq, e.at))
            .expect("event")
    };
    // The events of one append are a microsecond apart (each has its own instant).
    let us = |n: i64| chrono::Duration::microseconds(n);
    let (seq1, t1) = at("StepStarted", "s1");
    let (seq3, t3) = at("StepStarted", "s3");
    assert_eq!(
        (seq3 - seq1, t3),
        (2, t1 + us(2)),
        "level 0 claimed in one append"
    );
    let (done3, t_done3) = at("StepCompleted", "s3");
    let (start4, t_start4) = at("StepStarted", "s4");
    assert_eq!(start4, done3 + 1);
    assert_eq!(
        t_start4,
        t_done3 + us(1),
        "s4 claimed in the append of level 0's outcomes"
    );
    // Time travel to an event of an append shows the run as of exactly that event.
    let (done1, t_done1) = at("StepCompleted", "s1");
    let then = h.app.get_run_at(&key, t_done1).await.expect("run then");
    assert_eq!(then.last_seq, done1);
    let completed: Vec<&str> = then
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(
        completed,
        ["s1"],
        "as of s1's outcome, before s2's and s3's"
    );
    // Nothing was left to the reactor: the claims and outcomes do not wake it.
    let unseen: Vec<&str> = report.unseen.iter().map(|r| r.event.type_name()).collect();
    assert!(unseen.contains(&"StepStarted"), "{unseen:?}");
    assert!(
        !unseen.contains(&"RunCompleted"),
        "the run's end changes its status: the reactor sees it ({unseen:?})"
    );
}

#[tokio::test]
async fn given_no_time_to_run_more_when_a_level_completes_then_the_next_level_is_sent() {
    let h = harness(seed_dag(), "");
    let (key, jobs) = created(&h).await;

    let report = h
        .app
        .process_jobs(&jobs, WaveLimits::default())
        .await
        .expect("jobs run");

    assert_eq!(ids(&report.send), vec![("s4", 1, 0)]);
    let run = h.app.get_run(&key).await.expect("run");
    assert_eq!(run.status, RunStatus::Running);
    let sent: Vec<StepJob> = report.send.into_iter().map(|(j, _)| j).collect();
    let last = h.app.process_jobs(&sent, inline()).await.expect("s4 runs");
    assert!(last.send.is_empty());
    assert_eq!(
        h.app.get_run(&key).await.expect("run").status,
        RunStatus::Completed
    );
}

#[tokio::test]
async fn given_duplicate_jobs_when_processed_then_each_step_runs_once_and_a_late_copy_finds_nothing(
) {
    let h = harness(seed_dag(), "");
    let (key, jobs) = created(&h).await;
    let twice: Vec<StepJob> = jobs.iter().chain(&jobs).cloned().collect();

    let report = h
        .app
        .process_jobs(&twice, inline())
        .await
        .expect("jobs run");
    assert_eq!(report.results, vec![JobResult::Done; 6]);
    let late = h.app.process_jobs(&jobs, inline()).await.expect("jobs run");

    assert_eq!(late.results, vec![JobResult::Done; 3]);
    assert!(late.send.is_empty() && late.unseen.is_empty());
    let started = log(&h, &key)
        .await
        .into_iter()
        .filter(|(ty, _)| ty == "StepStarted")
        .count();
    assert_eq!(started, 4, "one claim per step");
    assert_eq!(h.todos.count("default").await.expect("count"), 1);
}

#[tokio::test]
async fn given_a_worker_that_lost_what_it_had_to_send_when_its_message_comes_back_then_the_run_resumes(
) {
    let h = harness(seed_dag(), "");
    let (key, jobs) = created(&h).await;
    // The worker appended level 0's outcomes, then stopped before sending s4.
    let lost = h
        .app
        .process_jobs(&jobs, WaveLimits::default())
        .await
        .expect("jobs run");
    assert_eq!(ids(&lost.send), vec![("s4", 1, 0)]);

    // Its message is delivered again: the steps are done, so only a resume finds s4.
    let again = h.app.process_jobs(&jobs, inline()).await.expect("jobs run");
    assert_eq!(
        h.app.get_run(&key).await.expect("run").status,
        RunStatus::Running,
        "a first delivery does not resume: {:?}",
        ids(&again.send)
    );
    let resumed = h
        .app
        .process_jobs(&jobs, resuming())
        .await
        .expect("jobs run");

    assert_eq!(resumed.results, vec![JobResult::Done; 3]);
    let run = h.app.get_run(&key).await.expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    assert!(run.steps.iter().all(|s| s.attempts == 1));
}

#[tokio::test]
async fn given_a_worker_that_stopped_inside_a_tool_when_its_message_comes_back_after_the_lease_then_the_step_runs_again(
) {
    let h = harness(seed_dag(), "");
    let (key, jobs) = created(&h).await;
    h.app
        .process_jobs(&jobs, WaveLimits::default())
        .await
        .expect("level 0 runs");
    // s4 claimed under a lease of 1 ms by a worker that died with it.
    let s4 = StepJob {
        step_id: "s4".into(),
        ..jobs[0].clone()
    };
    let state = h.app.load_state(&key).await.expect("load").expect("run");
    let claim = match engine::claim(&state, "s4", 1, h.app.now(), &h.app.settings.retry, 1, None) {
        engine::Claim::Start { events, .. } => events,
        other => panic!("{other:?}"),
    };
    h.app.commit(&state, claim).await.expect("claimed");
    tokio::time::sleep(Duration::from_millis(5)).await;

    let resumed = h
        .app
        .process_jobs(&jobs, resuming())
        .await
        .expect("jobs run");

    assert!(resumed.send.is_empty(), "{:?}", ids(&resumed.send));
    let run = h.app.get_run(&key).await.expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    let s4 = run.steps.iter().find(|s| s.id == s4.step_id).expect("s4");
    assert_eq!(s4.attempts, 2, "attempt 1 was lost with its worker");
    assert_eq!(h.todos.count("default").await.expect("count"), 1);
}

#[tokio::test]
async fn given_a_flaky_tool_when_processed_then_the_worker_sends_its_retry_with_the_backoff() {
    let mut h = harness(
        vec![step("s1", "calculator", json!({"expression": "6*7"}), &[])],
        "calculator=flaky:1",
    );
    h.app.settings.retry.base_ms = 1_000;
    let (key, jobs) = created(&h).await;

    let report: JobsReport = h.app.process_jobs(&jobs, inline()).await.expect("job runs");

    assert_eq!(report.results, vec![JobResult::Done]);
    assert_eq!(ids(&report.send), vec![("s1", 2, 1_000)]);
    let retry: Vec<StepJob> = report.send.into_iter().map(|(j, _)| j).collect();
    // Delivered before its backoff is over, it waits again.
    let early = h
        .app
        .process_jobs(&retry, inline())
        .await
        .expect("job runs");
    assert!(matches!(early.results[..], [JobResult::RetryAt(_)]));
    let types: Vec<String> = log(&h, &key).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(types.last().map(String::as_str), Some("StepAttemptFailed"));
}

#[tokio::test]
async fn given_jobs_of_two_runs_when_handed_in_together_then_they_are_refused() {
    let h = harness(seed_dag(), "");
    let (_, a) = created(&h).await;
    let (_, b) = created(&h).await;
    let mixed = vec![a[0].clone(), b[0].clone()];
    assert!(h.app.process_jobs(&mixed, inline()).await.is_err());
    let none = h.app.process_jobs(&[], inline()).await.expect("nothing");
    assert!(none.results.is_empty() && none.state.is_none());
}
