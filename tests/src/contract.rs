//! The adapter contract suite: one async test function per behaviour of a port, written
//! against `Arc<dyn Port>` and run (by `tests/contract.rs`) against the embedded SQLite
//! adapters and against the AWS adapters on DynamoDB Local and moto.
//!
//! Every case makes its own tenants, runs and keys, so cases never see each other's data.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use crane::adapters::aws::{aws_sdk_sqs, SqsDispatcher};
use crane::adapters::local::{JobKind, SqliteStore};
use crane::domain::{
    fold, Event, EventRecord, Plan, PlanStep, PlannerInfo, RunKey, RunState, RunStatus, StepJob,
    Todo, TodoChange,
};
use crane::ports::{
    BreakerStore, EventStore, IdempotencyStore, Outbox, RunViewStore, StepDispatcher, TodoStore,
};
use serde_json::{json, Value};

use crate::aws;
use crate::names::unique;

/// 2026-01-01T00:00:00Z plus `secs` seconds and `micros` microseconds.
pub fn at(secs: i64, micros: i64) -> DateTime<Utc> {
    let base = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    base + chrono::Duration::seconds(secs) + chrono::Duration::microseconds(micros)
}

/// A SQLite file under the temp dir, removed (with its WAL files) on drop.
pub struct TempDb(pub PathBuf);

impl TempDb {
    pub fn new() -> Self {
        TempDb(std::env::temp_dir().join(format!("{}.db", unique("crane-contract"))))
    }
}

impl Default for TempDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The five store ports of one backend.
pub struct Stores {
    pub events: Arc<dyn EventStore>,
    pub views: Arc<dyn RunViewStore>,
    pub todos: Arc<dyn TodoStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub breakers: Arc<dyn BreakerStore>,
    /// Declared last: dropped after the stores above, so the file outlives them.
    _db: Option<TempDb>,
}

impl Stores {
    /// The embedded SQLite store on a fresh temp file.
    pub fn sqlite() -> Result<Stores> {
        let db = TempDb::new();
        let store = Arc::new(SqliteStore::open(&db.0).context("opening SQLite")?);
        Ok(Stores {
            events: store.clone(),
            views: store.clone(),
            todos: store.clone(),
            idempotency: store.clone(),
            breakers: store,
            _db: Some(db),
        })
    }

    /// The DynamoDB stores on fresh tables in DynamoDB Local.
    pub async fn dynamodb() -> Result<Stores> {
        let store = Arc::new(aws::fresh_dynamo_store().await?);
        Ok(Stores {
            events: store.clone(),
            views: store.clone(),
            todos: store.clone(),
            idempotency: store.clone(),
            breakers: store,
            _db: None,
        })
    }
}

// ---- events --------------------------------------------------------------------------

pub mod events {
    use super::*;
    use crane::ports::StoreError;

    fn created(key: &RunKey, secs: i64) -> EventRecord {
        EventRecord::new(
            1,
            at(secs, 0),
            Event::RunCreated {
                tenant: key.tenant.clone(),
                prompt: "calculate 2+3 and add a todo to buy milk".into(),
                correlation_id: unique("corr"),
                idempotency_key: None,
            },
        )
    }

    fn planned(seq: u64) -> EventRecord {
        EventRecord::new(
            seq,
            at(1, 250),
            Event::PlanGenerated {
                planner: PlannerInfo {
                    name: "pattern".into(),
                    ..PlannerInfo::default()
                },
                plan: Plan {
                    steps: vec![
                        PlanStep {
                            id: "s1".into(),
                            tool: "calculator".into(),
                            input: json!({"expression": "2+3"}),
                            depends_on: vec![],
                            requires_approval: false,
                        },
                        PlanStep {
                            id: "s2".into(),
                            tool: "todo".into(),
                            input: json!({"action": "add", "title": "buy milk {{s1}}"}),
                            depends_on: vec!["s1".into()],
                            requires_approval: false,
                        },
                    ],
                }
                .into(),
            },
        )
    }

    fn started(seq: u64, step: &str, attempt: u32) -> EventRecord {
        EventRecord::new(
            seq,
            at(2, seq as i64),
            Event::StepStarted {
                step_id: step.into(),
                attempt,
                lease_ms: 30_000,
            },
        )
    }

    fn completed(seq: u64, step: &str, output: Value) -> EventRecord {
        EventRecord::new(
            seq,
            at(3, seq as i64),
            Event::StepCompleted {
                step_id: step.into(),
                attempt: 1,
                output: output.into(),
                duration_ms: 7,
            },
        )
    }

    /// A run of two steps to its end, as the appends that write it: planned, the first
    /// step, its outcome with the second started, the second's outcome with the end.
    pub fn a_run_in_appends(key: &RunKey) -> Vec<Vec<EventRecord>> {
        vec![
            vec![created(key, 0), planned(2)],
            vec![started(3, "s1", 1)],
            vec![completed(4, "s1", json!(5)), started(5, "s2", 1)],
            vec![
                completed(6, "s2", json!({"id": 1, "title": "buy milk 5"})),
                EventRecord::new(7, at(4, 0), Event::RunCompleted { result: json!(5) }),
            ],
        ]
    }

    /// What an append hands over besides the events (ignored by DynamoDB).
    fn view_of(key: &RunKey, log: &[EventRecord]) -> Result<RunState> {
        fold(&key.run_id, log).context("folding the test log")
    }

    async fn append(
        store: &dyn EventStore,
        key: &RunKey,
        log: &[EventRecord],
        new: &[EventRecord],
    ) -> Result<(), StoreError> {
        let mut all = log.to_vec();
        all.extend_from_slice(new);
        let view = fold(&key.run_id, &all).map_err(|e| StoreError::Invalid(e.to_string()))?;
        store
            .append(
                key,
                new,
                Outbox {
                    view: &view,
                    effects: &[],
                    wake: true,
                },
            )
            .await
    }

    fn new_run() -> RunKey {
        RunKey::new(unique("tenant"), crane::domain::new_run_id())
    }

    pub async fn given_an_empty_log_when_events_are_appended_then_they_load_in_order_and_unchanged(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        assert_eq!(store.load(&key).await?, vec![], "a run without events");

        let mut log = vec![created(&key, 0), planned(2)];
        append(&*store, &key, &[], &log).await?;
        let batches = vec![
            vec![started(3, "s1", 1)],
            vec![
                completed(4, "s1", json!(5)),
                started(5, "s2", 1),
                completed(
                    6,
                    "s2",
                    json!({"id": 1, "title": "buy milk 5 ✓", "ratio": 3.5, "huge": 1e200,
                           "tiny": 2.5e-300, "nested": {"list": [1, "a", null, true, {}], "empty": ""}}),
                ),
            ],
            vec![EventRecord::new(
                7,
                at(4, 0),
                Event::RunCompleted {
                    result: json!(null),
                },
            )],
            vec![EventRecord::new(8, at(5, 0), Event::RunCompensated {})],
        ];
        for batch in batches {
            append(&*store, &key, &log, &batch).await?;
            log.extend(batch);
        }

        let loaded = store.load(&key).await?;
        assert_eq!(
            loaded, log,
            "the log reads back exactly as written, in order"
        );
        let seqs: Vec<u64> = loaded.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        view_of(&key, &loaded)?;
        Ok(())
    }

    /// A run that fails is finished (the embedded store compacts its log then), yet its
    /// saga appends after that, and a compensation that failed can be retried later: every
    /// event still loads, in order, and the log's end is still enforced.
    pub async fn given_a_failed_run_whose_saga_appends_after_its_end_when_loaded_then_the_whole_log_comes_back(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        let mut log = vec![created(&key, 0), planned(2)];
        append(&*store, &key, &[], &log).await?;
        let failed = |seq: u64| {
            EventRecord::new(
                seq,
                at(3, seq as i64),
                Event::RunFailed {
                    error: "s2: boom".into(),
                    step_id: Some("s2".into()),
                },
            )
        };
        let batches = vec![
            vec![started(3, "s1", 1), started(4, "s2", 1)],
            vec![
                completed(5, "s1", json!({"id": 7, "title": "ünïcode ✓"})),
                EventRecord::new(
                    6,
                    at(3, 0),
                    Event::StepFailed {
                        step_id: "s2".into(),
                        attempt: 1,
                        error: "boom".into(),
                    },
                ),
                failed(7),
            ],
            vec![EventRecord::new(
                8,
                at(4, 0),
                Event::CompensationStarted {
                    steps: vec!["s1".into()],
                },
            )],
            vec![
                EventRecord::new(
                    9,
                    at(5, 0),
                    Event::StepCompensationFailed {
                        step_id: "s1".into(),
                        error: "undo refused".into(),
                        attempts: 3,
                    },
                ),
                EventRecord::new(
                    10,
                    at(5, 1),
                    Event::RunCompensationFailed {
                        step_id: "s1".into(),
                        error: "undo refused".into(),
                    },
                ),
            ],
        ];
        for batch in batches {
            append(&*store, &key, &log, &batch).await?;
            log.extend(batch);
            assert_eq!(store.load(&key).await?, log, "after seq {}", log.len());
        }

        let view = view_of(&key, &log)?;
        for stale in [vec![failed(7)], vec![failed(10)], vec![failed(12)]] {
            let outbox = Outbox {
                view: &view,
                effects: &[],
                wake: true,
            };
            let result = store.append(&key, &stale, outbox).await;
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "{stale:?}: {result:?}"
            );
        }
        let retried = vec![
            EventRecord::new(
                11,
                at(6, 0),
                Event::CompensationRetryRequested {
                    attempt: 1,
                    reason: Some("fixed the tool".into()),
                },
            ),
            EventRecord::new(
                12,
                at(6, 1),
                Event::StepCompensated {
                    step_id: "s1".into(),
                    attempts: 1,
                },
            ),
            EventRecord::new(13, at(6, 2), Event::RunCompensated {}),
        ];
        append(&*store, &key, &log, &retried).await?;
        log.extend(retried);
        assert_eq!(store.load(&key).await?, log);
        assert_eq!(view_of(&key, &log)?.status, RunStatus::Compensated);
        Ok(())
    }

    pub async fn given_an_event_at_a_seq_when_another_is_appended_at_that_seq_then_it_conflicts(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        let first = vec![created(&key, 0)];
        append(&*store, &key, &[], &first).await?;

        let rival = vec![created(&key, 9)];
        let again = append(&*store, &key, &[], &rival).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

        let mut log = first.clone();
        let next = vec![planned(2), started(3, "s1", 1)];
        append(&*store, &key, &log, &next).await?;
        log.extend(next);
        let stale = append(&*store, &key, &log[..2], &[started(3, "s1", 2)]).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");

        assert_eq!(store.load(&key).await?, log, "the log is unchanged");
        Ok(())
    }

    pub async fn given_a_batch_overlapping_the_log_when_appended_then_none_of_it_is_written(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        let mut log = vec![created(&key, 0), planned(2)];
        append(&*store, &key, &[], &log).await?;
        // Another writer takes seq 3 first.
        let theirs = vec![started(3, "s1", 1)];
        append(&*store, &key, &log, &theirs).await?;

        let ours = vec![
            started(3, "s2", 1),
            completed(4, "s2", json!(1)),
            started(5, "s1", 2),
        ];
        let result = append(&*store, &key, &log, &ours).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

        log.extend(theirs);
        assert_eq!(
            store.load(&key).await?,
            log,
            "nothing of the refused batch was written"
        );
        Ok(())
    }

    pub async fn given_a_log_at_two_when_seq_five_is_appended_then_the_gap_is_refused(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        let mut log = vec![created(&key, 0), planned(2)];
        append(&*store, &key, &[], &log).await?;

        for gap in [
            vec![started(5, "s1", 1)],
            vec![started(5, "s1", 1), started(6, "s2", 1)],
            vec![started(4, "s1", 1)],
        ] {
            let result = store
                .append(
                    &key,
                    &gap,
                    Outbox {
                        view: &view_of(&key, &log)?,
                        effects: &[],
                        wake: true,
                    },
                )
                .await;
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "{gap:?}: {result:?}"
            );
        }
        assert_eq!(
            store.load(&key).await?,
            log,
            "no event of a gapped append was written"
        );

        let next = vec![started(3, "s1", 1)];
        append(&*store, &key, &log, &next).await?;
        log.extend(next);
        assert_eq!(store.load(&key).await?, log);
        Ok(())
    }

    pub async fn given_sixteen_writers_racing_on_one_run_when_each_retries_on_conflict_then_the_log_has_no_gaps_or_duplicates(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        const WRITERS: u32 = 16;
        const EACH: u32 = 4;
        let key = new_run();
        let first = vec![created(&key, 0), planned(2)];
        append(&*store, &key, &[], &first).await?;

        let tasks = (0..WRITERS).map(|w| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let mut conflicts = 0u32;
                for attempt in 1..=EACH {
                    loop {
                        let log = store.load(&key).await?;
                        let seq = log.last().map_or(1, |e| e.seq + 1);
                        let mine = [started(seq, &format!("w{w}"), attempt)];
                        match append(&*store, &key, &log, &mine).await {
                            Ok(()) => break,
                            Err(StoreError::Conflict(_)) => conflicts += 1,
                            Err(e) => bail!("writer {w}: {e}"),
                        }
                        if conflicts > 10_000 {
                            bail!("writer {w} never got through");
                        }
                    }
                }
                Ok::<u32, anyhow::Error>(conflicts)
            })
        });
        for result in futures::future::join_all(tasks).await {
            result??;
        }

        let log = store.load(&key).await?;
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        let total = u64::from(WRITERS * EACH) + 2;
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "no gaps, no duplicates"
        );
        let mut seen = HashSet::new();
        for rec in &log[2..] {
            let Event::StepStarted {
                step_id, attempt, ..
            } = &rec.event
            else {
                bail!("unexpected event {rec:?}");
            };
            assert!(
                seen.insert((step_id.clone(), *attempt)),
                "{step_id}/{attempt} twice"
            );
        }
        assert_eq!(
            seen.len(),
            (WRITERS * EACH) as usize,
            "every writer's every event, once"
        );
        Ok(())
    }

    /// s2 of [`planned`] held for approval since `seq`.
    fn approval_requested(seq: u64) -> EventRecord {
        EventRecord::new(
            seq,
            at(4, seq as i64),
            Event::ApprovalRequested {
                step_id: "s2".into(),
                input: json!({"action": "add", "title": "buy milk 5"}),
                approver: "t".into(),
                expires_at: at(86_404, 0),
            },
        )
    }

    pub async fn given_a_step_waiting_for_approval_when_eight_deciders_race_then_exactly_one_decision_is_written(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        use crane::engine::approval::{decide, Decision, Refusal};
        let key = new_run();
        let mut first = vec![created(&key, 0), planned(2)];
        first.extend([
            started(3, "s1", 1),
            completed(4, "s1", json!(5)),
            approval_requested(5),
        ]);
        append(&*store, &key, &[], &first).await?;
        let waiting = fold(&key.run_id, &store.load(&key).await?)?;
        assert_eq!(waiting.awaiting_approval, ["s2"], "the approval folds back");

        let tasks = (0..8u32).map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let decision = if i % 2 == 0 {
                    Decision::Approve
                } else {
                    Decision::Reject
                };
                for _ in 0..1_000 {
                    let log = store.load(&key).await?;
                    let state = fold(&key.run_id, &log)?;
                    let events = match decide(&state, "s2", decision, &key.tenant, None) {
                        Ok(events) => events,
                        Err(Refusal::AlreadyDecided { .. }) => return Ok(false),
                        Err(other) => bail!("decider {i}: {other}"),
                    };
                    let at = log.last().map_or(at(5, 0), |e| e.at);
                    let new = EventRecord::batch(state.last_seq, at, events);
                    match append(&*store, &key, &log, &new).await {
                        Ok(()) => return Ok(true),
                        Err(crane::ports::StoreError::Conflict(_)) => continue,
                        Err(e) => bail!("decider {i}: {e}"),
                    }
                }
                bail!("decider {i} never got through")
            })
        });
        let mut written = 0;
        for result in futures::future::join_all(tasks).await {
            if result?? {
                written += 1;
            }
        }
        assert_eq!(
            written, 1,
            "exactly one decider wrote; the others were refused"
        );
        let log = store.load(&key).await?;
        let decisions = log
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::StepApproved { .. } | Event::StepRejected { .. }
                )
            })
            .count();
        assert_eq!(decisions, 1, "{log:#?}");
        let state = fold(&key.run_id, &log)?;
        assert!(state.awaiting_approval.is_empty());
        Ok(())
    }

    /// What the store offers as a run's current state, checked against the fold of its log:
    /// a store may offer nothing (fold the log), never something else.
    async fn offered_state_is_the_fold(
        store: &dyn EventStore,
        key: &RunKey,
        when: &str,
    ) -> Result<Option<RunState>> {
        let offered = store.current_state(key).await;
        if let Some(state) = &offered {
            let log = store.load(key).await?;
            assert_eq!(
                state,
                &view_of(key, &log)?,
                "{when}: offered state is the fold"
            );
        }
        Ok(offered)
    }

    pub async fn given_appends_and_lost_races_when_the_store_offers_a_current_state_then_it_is_the_fold_of_the_log(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        assert_eq!(store.current_state(&key).await, None, "an unknown run");
        let mut log = vec![created(&key, 0), planned(2)];
        append(&*store, &key, &[], &log).await?;
        offered_state_is_the_fold(&*store, &key, "after creation").await?;

        let next = vec![started(3, "s1", 1)];
        append(&*store, &key, &log, &next).await?;
        log.extend(next);
        offered_state_is_the_fold(&*store, &key, "after a claim").await?;

        // A writer that lost a race must not leave its belief behind.
        let lost = append(&*store, &key, &log[..2], &[started(3, "s2", 1)]).await;
        assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
        offered_state_is_the_fold(&*store, &key, "after a lost race").await?;

        let end = vec![
            completed(4, "s1", json!(5)),
            EventRecord::new(5, at(4, 0), Event::RunCompleted { result: json!(5) }),
        ];
        append(&*store, &key, &log, &end).await?;
        offered_state_is_the_fold(&*store, &key, "after the run finished").await?;
        Ok(())
    }

    /// Embedded store only (not a contract: the DynamoDB store keeps nothing in memory):
    /// a run in flight is at hand after each append, a finished one is not.
    pub async fn given_a_run_when_appended_then_its_state_is_at_hand_in_flight_and_as_it_ended(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let key = new_run();
        let log = vec![created(&key, 0), planned(2), started(3, "s1", 1)];
        append(&*store, &key, &[], &log).await?;
        let at_hand = offered_state_is_the_fold(&*store, &key, "in flight").await?;
        assert!(at_hand.is_some(), "a run in flight is kept at hand");
        let end = vec![
            completed(4, "s1", json!(5)),
            EventRecord::new(5, at(4, 0), Event::RunCompleted { result: json!(5) }),
        ];
        append(&*store, &key, &log, &end).await?;
        let finished = offered_state_is_the_fold(&*store, &key, "just finished").await?;
        assert_eq!(
            finished.map(|s| s.status),
            Some(RunStatus::Completed),
            "the last runs to finish stay at hand, as they ended"
        );
        Ok(())
    }

    pub async fn given_one_run_id_in_two_tenants_when_loaded_then_each_tenant_sees_its_own_log(
        store: Arc<dyn EventStore>,
    ) -> Result<()> {
        let run_id = crane::domain::new_run_id();
        let a = RunKey::new(unique("tenant-a"), &run_id);
        let b = RunKey::new(unique("tenant-b"), &run_id);
        let log_a = vec![created(&a, 0), planned(2)];
        let log_b = vec![created(&b, 5)];
        append(&*store, &a, &[], &log_a).await?;
        append(&*store, &b, &[], &log_b).await?;
        assert_eq!(store.load(&a).await?, log_a);
        assert_eq!(store.load(&b).await?, log_b);
        Ok(())
    }
}

// ---- run views -----------------------------------------------------------------------

pub mod views {
    use super::*;
    use crane::ports::{ListQuery, StoreError};

    /// Runs in flight listed as they are now, whoever wrote their views: the AWS reactor
    /// writes a view when a run is created and when it settles, the embedded store when
    /// its status changes. One run is started and two of its steps have moved since its
    /// view was last written; another waits. Listed by status, and all together, each
    /// comes as the fold of its log.
    pub async fn given_runs_whose_steps_moved_since_their_views_were_written_when_listed_then_each_is_as_its_log_says(
        events: Arc<dyn EventStore>,
        views: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        let runs = runs_in_flight(&*events, &*views).await?;
        listed_as_their_logs_say(&*views, &runs).await
    }

    /// Two runs of one tenant written as in
    /// [`given_runs_whose_steps_moved_since_their_views_were_written_when_listed_then_each_is_as_its_log_says`].
    pub struct RunsInFlight {
        pub tenant: String,
        /// Created and nothing more.
        pub waiting: RunState,
        /// Started, with two of its steps moved since its status last changed.
        pub started: RunState,
    }

    /// Write the runs of [`RunsInFlight`]: each view put when its run is created (as the
    /// AWS reactor does), the rest appended.
    pub async fn runs_in_flight(
        events: &dyn EventStore,
        views: &dyn RunViewStore,
    ) -> Result<RunsInFlight> {
        let tenant = unique("tenant");
        let waiting = RunKey::new(&tenant, "run-a");
        let started = RunKey::new(&tenant, "run-b");
        let created = |key: &RunKey, secs: i64| {
            EventRecord::new(
                1,
                at(secs, 0),
                Event::RunCreated {
                    tenant: key.tenant.clone(),
                    prompt: "calculate 2+3 then calculate 1+1".into(),
                    correlation_id: unique("corr"),
                    idempotency_key: None,
                },
            )
        };
        let plan = EventRecord::new(
            2,
            at(5, 0),
            Event::PlanGenerated {
                planner: PlannerInfo {
                    name: "pattern".into(),
                    ..PlannerInfo::default()
                },
                plan: Plan {
                    steps: ["s1", "s2"]
                        .iter()
                        .enumerate()
                        .map(|(i, id)| PlanStep {
                            id: (*id).into(),
                            tool: "calculator".into(),
                            input: json!({"expression": "1+1"}),
                            depends_on: if i == 0 { vec![] } else { vec!["s1".into()] },
                            requires_approval: false,
                        })
                        .collect(),
                }
                .into(),
            },
        );
        let started_step = |seq: u64, step: &str| {
            EventRecord::new(
                seq,
                at(6, seq as i64),
                Event::StepStarted {
                    step_id: step.into(),
                    attempt: 1,
                    lease_ms: 30_000,
                },
            )
        };
        let completed = EventRecord::new(
            4,
            at(7, 0),
            Event::StepCompleted {
                step_id: "s1".into(),
                attempt: 1,
                output: json!(2).into(),
                duration_ms: 1,
            },
        );
        let mut logs = Vec::new();
        for (key, appends) in [
            (&waiting, vec![vec![created(&waiting, 1)]]),
            (
                &started,
                vec![
                    vec![created(&started, 2)],
                    vec![plan.clone(), started_step(3, "s1")],
                    vec![completed.clone(), started_step(5, "s2")],
                ],
            ),
        ] {
            let mut log: Vec<EventRecord> = Vec::new();
            for (i, new) in appends.into_iter().enumerate() {
                log.extend(new.iter().cloned());
                let state = fold(&key.run_id, &log)?;
                events
                    .append(
                        key,
                        &new,
                        Outbox {
                            view: &state,
                            effects: &[],
                            wake: i == 0,
                        },
                    )
                    .await?;
                if i == 0 {
                    // What the reactor writes on AWS when the run is created.
                    views.put(&state).await?;
                }
            }
            logs.push(fold(&key.run_id, &log)?);
        }
        let (waiting, started) = (logs[0].clone(), logs[1].clone());
        assert_eq!(started.status, RunStatus::Running);
        assert_eq!(started.last_seq, 5);
        Ok(RunsInFlight {
            tenant,
            waiting,
            started,
        })
    }

    /// `runs` listed by status and all together, each as the fold of its log.
    pub async fn listed_as_their_logs_say(
        views: &dyn RunViewStore,
        runs: &RunsInFlight,
    ) -> Result<()> {
        let (tenant, waiting_now, started_now) =
            (&runs.tenant, runs.waiting.clone(), runs.started.clone());
        let running = all_pages(views, tenant, Some(RunStatus::Running), 1).await?;
        assert_eq!(
            running,
            vec![started_now.clone()],
            "listed as running, steps as they are"
        );
        let pending = all_pages(views, tenant, Some(RunStatus::Pending), 1).await?;
        assert_eq!(pending, vec![waiting_now.clone()]);
        let all = all_pages(views, tenant, None, 5).await?;
        assert_eq!(all, vec![started_now, waiting_now]);
        Ok(())
    }

    /// A view of a run created at `created`, with `status` and `last_seq`.
    pub fn view(
        tenant: &str,
        run_id: &str,
        created: DateTime<Utc>,
        status: RunStatus,
        last_seq: u64,
    ) -> Result<RunState> {
        let rec = EventRecord::new(
            1,
            created,
            Event::RunCreated {
                tenant: tenant.into(),
                prompt: format!("prompt of {run_id}"),
                correlation_id: unique("corr"),
                idempotency_key: None,
            },
        );
        let mut v = fold(run_id, &[rec]).context("folding RunCreated")?;
        v.status = status;
        v.last_seq = last_seq;
        Ok(v)
    }

    /// All pages of a listing, checking that every page but the last is full.
    pub async fn all_pages(
        store: &dyn RunViewStore,
        tenant: &str,
        status: Option<RunStatus>,
        limit: usize,
    ) -> Result<Vec<RunState>> {
        let mut items = Vec::new();
        let mut cursor = None;
        for _ in 0..100 {
            let page = store
                .list(
                    tenant,
                    &ListQuery {
                        status,
                        limit,
                        cursor: cursor.take(),
                    },
                )
                .await?;
            assert!(page.items.len() <= limit);
            let full = page.items.len() == limit;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => {
                    assert!(full, "a page with a next cursor is full");
                    cursor = Some(c);
                }
                None => return Ok(items),
            }
        }
        bail!("listing never ended")
    }

    fn ids(views: &[RunState]) -> Vec<String> {
        views.iter().map(|v| v.run_id.clone()).collect()
    }

    pub async fn given_a_view_when_put_then_get_returns_it(
        store: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let v = view(
            &tenant,
            &crane::domain::new_run_id(),
            at(10, 123_456),
            RunStatus::Running,
            3,
        )?;
        let key = RunKey::new(&tenant, &v.run_id);
        assert_eq!(store.get(&key).await?, None);
        assert!(store.put(&v).await?, "a new view is written");
        assert_eq!(store.get(&key).await?, Some(v.clone()));
        assert_eq!(
            store.get(&RunKey::new(unique("other"), &v.run_id)).await?,
            None,
            "views are per tenant"
        );
        // A finished run's view, which a store may keep in another form, reads back the same.
        let done = view(&tenant, &v.run_id, v.created_at, RunStatus::Completed, 4)?;
        assert!(store.put(&done).await?);
        assert_eq!(store.get(&key).await?, Some(done));
        Ok(())
    }

    pub async fn given_a_view_when_an_older_or_equal_one_is_put_then_it_is_ignored(
        store: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let run_id = crane::domain::new_run_id();
        let key = RunKey::new(&tenant, &run_id);
        let v5 = view(&tenant, &run_id, at(0, 0), RunStatus::Running, 5)?;
        assert!(store.put(&v5).await?);

        let v3 = view(&tenant, &run_id, at(0, 0), RunStatus::Pending, 3)?;
        assert!(!store.put(&v3).await?, "an older view is ignored");
        let mut other5 = view(&tenant, &run_id, at(0, 0), RunStatus::Failed, 5)?;
        other5.error = Some("replayed".into());
        assert!(
            !store.put(&other5).await?,
            "a view at the same seq is ignored"
        );
        assert_eq!(store.get(&key).await?, Some(v5));

        let v6 = view(&tenant, &run_id, at(0, 0), RunStatus::Completed, 6)?;
        assert!(store.put(&v6).await?, "a newer view replaces it");
        assert_eq!(store.get(&key).await?, Some(v6));
        Ok(())
    }

    pub async fn given_many_runs_when_listed_in_pages_then_newest_first_without_duplicates_or_gaps(
        store: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let mut expected = Vec::new();
        for i in 0..11i64 {
            // Runs 9 and 10 share their creation time: the run id breaks the tie.
            let created = at(i.min(9) * 60, i.min(9) * 7);
            let v = view(
                &tenant,
                &crane::domain::new_run_id(),
                created,
                RunStatus::Running,
                2,
            )?;
            assert!(store.put(&v).await?);
            expected.push(v);
        }
        // Another tenant's runs never show up.
        store
            .put(&view(
                &unique("other"),
                &crane::domain::new_run_id(),
                at(99_999, 0),
                RunStatus::Running,
                2,
            )?)
            .await?;
        expected.sort_by(|a, b| (b.created_at, &b.run_id).cmp(&(a.created_at, &a.run_id)));

        for limit in [1, 4, 11, 50] {
            let listed = all_pages(&*store, &tenant, None, limit).await?;
            assert_eq!(ids(&listed), ids(&expected), "limit {limit}");
        }
        assert_eq!(
            all_pages(&*store, &unique("nobody"), None, 5).await?,
            vec![]
        );
        Ok(())
    }

    pub async fn given_a_cursor_of_one_tenant_when_another_lists_with_it_then_it_shows_none_of_the_first_tenants_runs(
        store: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        let (a, b) = (unique("tenant-a"), unique("tenant-b"));
        let mut runs_a = Vec::new();
        for i in 0..3i64 {
            let v = view(
                &a,
                &crane::domain::new_run_id(),
                at(i * 60, 0),
                RunStatus::Running,
                2,
            )?;
            assert!(store.put(&v).await?);
            runs_a.push(v.run_id);
        }
        let run_b = view(
            &b,
            &crane::domain::new_run_id(),
            at(30, 0),
            RunStatus::Running,
            2,
        )?;
        assert!(store.put(&run_b).await?);
        let first = store
            .list(
                &a,
                &ListQuery {
                    status: None,
                    limit: 1,
                    cursor: None,
                },
            )
            .await?;
        let cursor = first.next_cursor.context("tenant A has a second page")?;
        match store
            .list(
                &b,
                &ListQuery {
                    status: None,
                    limit: 10,
                    cursor: Some(cursor),
                },
            )
            .await
        {
            Ok(page) => {
                let leaked: Vec<&RunState> = page
                    .items
                    .iter()
                    .filter(|v| runs_a.contains(&v.run_id))
                    .collect();
                assert!(
                    leaked.is_empty(),
                    "B saw A's runs through A's cursor: {leaked:?}"
                );
                assert!(page.items.iter().all(|v| v.tenant == b));
            }
            Err(e) => assert!(
                matches!(e, crane::ports::StoreError::Invalid(_)),
                "a foreign cursor is refused as invalid, not {e}"
            ),
        }
        Ok(())
    }

    pub async fn given_runs_of_several_statuses_when_listed_by_status_then_only_that_status_comes_newest_first(
        store: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let statuses = [RunStatus::Completed, RunStatus::Running, RunStatus::Failed];
        let mut all = Vec::new();
        for i in 0..9i64 {
            let v = view(
                &tenant,
                &crane::domain::new_run_id(),
                at(i, 0),
                statuses[i as usize % 3],
                4,
            )?;
            store.put(&v).await?;
            all.push(v);
        }
        let newest_first = |status: RunStatus, all: &[RunState]| {
            let mut v: Vec<RunState> = all.iter().filter(|v| v.status == status).cloned().collect();
            v.sort_by(|a, b| (b.created_at, &b.run_id).cmp(&(a.created_at, &a.run_id)));
            ids(&v)
        };
        for status in statuses {
            let listed = all_pages(&*store, &tenant, Some(status), 2).await?;
            assert_eq!(ids(&listed), newest_first(status, &all), "{status:?}");
        }
        assert_eq!(
            all_pages(&*store, &tenant, Some(RunStatus::Cancelled), 2).await?,
            vec![]
        );

        // A run that moves from running to completed moves between the listings.
        let moved = all[1].clone();
        let mut done = moved.clone();
        done.status = RunStatus::Completed;
        done.last_seq = 9;
        assert!(store.put(&done).await?);
        all[1] = done;
        let running = ids(&all_pages(&*store, &tenant, Some(RunStatus::Running), 2).await?);
        assert!(!running.contains(&moved.run_id));
        assert_eq!(running, newest_first(RunStatus::Running, &all));
        let completed = ids(&all_pages(&*store, &tenant, Some(RunStatus::Completed), 10).await?);
        assert_eq!(completed, newest_first(RunStatus::Completed, &all));
        assert!(completed.contains(&moved.run_id));
        Ok(())
    }

    pub async fn given_a_cursor_the_store_did_not_issue_when_listing_then_it_is_invalid(
        store: Arc<dyn RunViewStore>,
    ) -> Result<()> {
        use base64_url::encode as b64;
        let tenant = unique("tenant");
        store
            .put(&view(
                &tenant,
                &crane::domain::new_run_id(),
                at(0, 0),
                RunStatus::Running,
                1,
            )?)
            .await?;
        for cursor in [
            "not a cursor!".to_owned(),
            b64(b"{\"x\": 1}"),
            b64(b"[]"),
            b64(b"garbage"),
        ] {
            for status in [None, Some(RunStatus::Running)] {
                let result = store
                    .list(
                        &tenant,
                        &ListQuery {
                            status,
                            limit: 5,
                            cursor: Some(cursor.clone()),
                        },
                    )
                    .await;
                assert!(
                    matches!(result, Err(StoreError::Invalid(_))),
                    "{cursor}: {result:?}"
                );
            }
        }
        Ok(())
    }

    /// Minimal base64url (no padding) so the suite needs no extra dependency.
    pub(super) mod base64_url {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

        pub fn encode(bytes: &[u8]) -> String {
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            out
        }
    }
}

// ---- todos ---------------------------------------------------------------------------

pub mod todos {
    use super::*;
    use crane::ports::{Page, StoreError, TodoError, TodoQuery};

    fn add(title: &str) -> TodoChange {
        TodoChange::Add {
            title: title.into(),
        }
    }

    /// Every todo of `tenant`, read in pages of `limit`, checking each page on the way:
    /// at most `limit` todos, a next cursor exactly when more follow (so never an empty
    /// last page after a full one).
    async fn pages_of(store: &dyn TodoStore, tenant: &str, limit: usize) -> Result<Vec<Todo>> {
        let mut all: Vec<Todo> = Vec::new();
        let mut query = TodoQuery::first(limit);
        for _ in 0..1000 {
            let Page { items, next_cursor } = store.list(tenant, &query).await?;
            assert!(
                items.len() <= limit,
                "a page of {} over {limit}",
                items.len()
            );
            all.extend(items.iter().cloned());
            match next_cursor {
                Some(c) => {
                    assert_eq!(items.len(), limit, "a page with a next cursor is full");
                    query.cursor = Some(c);
                }
                None => return Ok(all),
            }
        }
        bail!("listing {tenant} in pages of {limit} never ended")
    }

    /// Every todo of `tenant`, by id.
    async fn all_todos(store: &dyn TodoStore, tenant: &str) -> Result<Vec<Todo>> {
        pages_of(store, tenant, TodoQuery::MAX_LIMIT).await
    }

    pub async fn given_a_todo_when_completed_reopened_deleted_and_restored_then_each_change_shows(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let t0 = at(0, 0);
        let added = store
            .apply(&tenant, "run1/s1", &add("buy milk"), t0)
            .await?;
        assert_eq!(added.id, 1, "ids start at 1 per tenant");
        assert_eq!(
            (
                added.title.as_str(),
                added.done,
                added.created_at,
                added.completed_at
            ),
            ("buy milk", false, t0, None)
        );
        assert_eq!(store.get(&tenant, 1).await?, Some(added.clone()));
        assert_eq!(store.count(&tenant).await?, 1);

        let t1 = at(60, 5);
        let done = store
            .apply(&tenant, "run2/s1", &TodoChange::Complete { id: 1 }, t1)
            .await?;
        assert_eq!(
            done,
            Todo {
                done: true,
                completed_at: Some(t1),
                ..added.clone()
            }
        );
        assert_eq!(store.get(&tenant, 1).await?, Some(done.clone()));

        let reopened = store
            .apply(
                &tenant,
                "run2/s1:undo",
                &TodoChange::Reopen { id: 1 },
                at(120, 0),
            )
            .await?;
        assert_eq!(
            reopened,
            Todo {
                done: false,
                completed_at: None,
                ..added.clone()
            }
        );

        let deleted = store
            .apply(
                &tenant,
                "run3/s1",
                &TodoChange::Delete { id: 1 },
                at(180, 0),
            )
            .await?;
        assert_eq!(deleted, reopened, "a delete returns the todo it removed");
        assert_eq!(store.get(&tenant, 1).await?, None);
        assert_eq!(all_todos(&*store, &tenant).await?, vec![]);
        assert_eq!(store.count(&tenant).await?, 0, "a delete is counted");
        let again = store
            .apply(
                &tenant,
                "run4/s1",
                &TodoChange::Delete { id: 1 },
                at(190, 0),
            )
            .await;
        assert_eq!(again, Err(TodoError::NotFound(1)));

        let restored = store
            .apply(
                &tenant,
                "run3/s1:undo",
                &TodoChange::Restore {
                    todo: deleted.clone(),
                },
                at(240, 0),
            )
            .await?;
        assert_eq!(restored, deleted);
        assert_eq!(all_todos(&*store, &tenant).await?, vec![deleted.clone()]);
        assert_eq!(store.count(&tenant).await?, 1, "a restore is counted");
        // Restoring a todo that is there (another run's undo, say) overwrites it: one todo.
        store
            .apply(
                &tenant,
                "run6/s1:undo",
                &TodoChange::Restore { todo: deleted },
                at(250, 0),
            )
            .await?;
        assert_eq!(store.count(&tenant).await?, 1, "a todo is counted once");

        let next = store
            .apply(&tenant, "run5/s1", &add("next"), at(300, 0))
            .await?;
        assert_eq!(next.id, 2, "a restore does not reuse or reset ids");
        assert_eq!(store.count(&tenant).await?, 2);
        assert_eq!(all_todos(&*store, &tenant).await?.len(), 2);
        Ok(())
    }

    pub async fn given_one_effect_key_when_applied_twice_then_there_is_one_todo_and_one_result(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        assert_eq!(store.recorded(&tenant, "run1/s1").await?, None);
        let first = store
            .apply(&tenant, "run1/s1", &add("buy milk"), at(0, 0))
            .await?;
        let second = store
            .apply(&tenant, "run1/s1", &add("buy milk"), at(5, 0))
            .await?;
        assert_eq!(second, first, "the same key returns the first result");
        let other_change = store
            .apply(
                &tenant,
                "run1/s1",
                &TodoChange::Delete { id: first.id },
                at(6, 0),
            )
            .await?;
        assert_eq!(
            other_change, first,
            "whatever the change, a used key changes nothing"
        );
        assert_eq!(all_todos(&*store, &tenant).await?, vec![first.clone()]);
        assert_eq!(
            store.count(&tenant).await?,
            1,
            "a replayed key counts nothing"
        );
        assert_eq!(store.recorded(&tenant, "run1/s1").await?, Some(first));
        Ok(())
    }

    pub async fn given_no_such_todo_when_it_is_changed_then_not_found_and_nothing_is_recorded(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        for (key, change) in [
            ("r/complete", TodoChange::Complete { id: 999 }),
            ("r/reopen", TodoChange::Reopen { id: 999 }),
            ("r/delete", TodoChange::Delete { id: 999 }),
        ] {
            assert_eq!(
                store.apply(&tenant, key, &change, at(0, 0)).await,
                Err(TodoError::NotFound(999))
            );
            assert_eq!(
                store.recorded(&tenant, key).await?,
                None,
                "a failed change records nothing"
            );
        }
        assert_eq!(store.get(&tenant, 999).await?, None);
        assert_eq!(
            store.count(&tenant).await?,
            0,
            "a failed delete counts nothing"
        );
        Ok(())
    }

    pub async fn given_two_tenants_when_each_adds_todos_then_ids_and_lists_are_separate(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let (a, b) = (unique("tenant-a"), unique("tenant-b"));
        let ta = store.apply(&a, "run/s1", &add("a's"), at(0, 0)).await?;
        let tb = store.apply(&b, "run/s1", &add("b's"), at(0, 0)).await?;
        assert_eq!((ta.id, tb.id), (1, 1), "each tenant counts its own ids");
        assert_eq!(
            tb.title, "b's",
            "the same effect key in another tenant is another effect"
        );
        assert_eq!(all_todos(&*store, &a).await?, vec![ta.clone()]);
        assert_eq!(all_todos(&*store, &b).await?, vec![tb]);
        let completed_b = store
            .apply(&b, "run/s2", &TodoChange::Complete { id: 1 }, at(1, 0))
            .await?;
        assert!(completed_b.done);
        assert_eq!(store.get(&a, 1).await?, Some(ta), "a's todo 1 is untouched");
        Ok(())
    }

    pub async fn given_twelve_todos_when_listed_then_they_come_in_id_order(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        for i in 1..=12 {
            store
                .apply(
                    &tenant,
                    &format!("run/s{i}"),
                    &add(&format!("todo {i}")),
                    at(i, 0),
                )
                .await?;
        }
        let ids: Vec<u64> = all_todos(&*store, &tenant)
            .await?
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, (1..=12).collect::<Vec<_>>());
        Ok(())
    }

    pub async fn given_concurrent_adds_with_distinct_keys_when_applied_then_every_todo_gets_its_own_id(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let tasks = (0..16).map(|i| {
            let (store, tenant) = (store.clone(), tenant.clone());
            tokio::spawn(async move {
                store
                    .apply(
                        &tenant,
                        &format!("run{i}/s1"),
                        &add(&format!("todo {i}")),
                        at(i, 0),
                    )
                    .await
            })
        });
        let mut ids = HashSet::new();
        for result in futures::future::join_all(tasks).await {
            assert!(ids.insert(result??.id), "ids are distinct");
        }
        assert_eq!(ids.len(), 16);
        let listed: HashSet<u64> = all_todos(&*store, &tenant)
            .await?
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, ids);
        Ok(())
    }

    pub async fn given_concurrent_applies_with_one_key_when_they_race_then_exactly_one_todo_is_added(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let tasks = (0..8).map(|i| {
            let (store, tenant) = (store.clone(), tenant.clone());
            tokio::spawn(
                async move { store.apply(&tenant, "run/s1", &add("once"), at(i, 0)).await },
            )
        });
        let results = futures::future::join_all(tasks).await;
        let mut todos = Vec::new();
        for result in results {
            todos.push(result??);
        }
        assert!(
            todos.windows(2).all(|w| w[0] == w[1]),
            "every racer got the same todo: {todos:?}"
        );
        assert_eq!(all_todos(&*store, &tenant).await?, vec![todos[0].clone()]);
        Ok(())
    }

    pub async fn given_todos_with_gaps_when_listed_in_small_pages_then_each_comes_once_in_id_order(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        for i in 1..=13 {
            store
                .apply(
                    &tenant,
                    &format!("run/s{i}"),
                    &add(&format!("todo {i}")),
                    at(i, 0),
                )
                .await?;
        }
        for id in [1, 6, 7, 13] {
            store
                .apply(
                    &tenant,
                    &format!("run/d{id}"),
                    &TodoChange::Delete { id },
                    at(20, 0),
                )
                .await?;
        }
        let expected: Vec<u64> = vec![2, 3, 4, 5, 8, 9, 10, 11, 12];
        for limit in [1, 2, 3, 4, 9, 10, TodoQuery::MAX_LIMIT] {
            let ids: Vec<u64> = pages_of(&*store, &tenant, limit)
                .await?
                .iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(ids, expected, "pages of {limit}");
        }
        assert_eq!(
            store.count(&tenant).await?,
            9,
            "the count skips deleted todos"
        );
        let first = store.list(&tenant, &TodoQuery::first(4)).await?;
        assert_eq!(
            first.items.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        Ok(())
    }

    pub async fn given_todo_changes_when_counted_and_listed_then_only_the_tenants_todos_are_seen(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        let (a, b, empty) = (unique("tenant-a"), unique("tenant-b"), unique("tenant-c"));
        for i in 1..=5 {
            store
                .apply(&a, &format!("run/s{i}"), &add("a"), at(i, 0))
                .await?;
        }
        store.apply(&b, "run/s1", &add("b"), at(0, 0)).await?;
        // Effect records and the id counter live beside the todos; none of them is a todo.
        store
            .apply(&a, "run/c1", &TodoChange::Complete { id: 2 }, at(9, 0))
            .await?;
        assert_eq!(store.count(&a).await?, 5);
        assert_eq!(store.count(&b).await?, 1);
        assert_eq!(store.count(&empty).await?, 0);
        let page = store.list(&empty, &TodoQuery::first(10)).await?;
        assert_eq!((page.items.len(), page.next_cursor), (0, None));
        // A cursor names a position, not a tenant: another tenant's cursor still lists
        // only the caller's own todos.
        let a_page = store.list(&a, &TodoQuery::first(2)).await?;
        let cursor = a_page.next_cursor.context("a has more than 2 todos")?;
        let b_after = store
            .list(
                &b,
                &TodoQuery {
                    limit: 10,
                    cursor: Some(cursor),
                },
            )
            .await?;
        assert!(b_after.items.is_empty(), "{:?}", b_after.items);
        assert_eq!(all_todos(&*store, &b).await?.len(), 1);
        Ok(())
    }

    pub async fn given_a_cursor_the_store_did_not_issue_when_listing_todos_then_it_is_invalid(
        store: Arc<dyn TodoStore>,
    ) -> Result<()> {
        use super::views::base64_url::encode as b64;
        let tenant = unique("tenant");
        store.apply(&tenant, "run/s1", &add("x"), at(0, 0)).await?;
        for cursor in [
            String::new(),
            "not a cursor!".to_owned(),
            b64(b"{\"x\": 1}"),
            b64(b"{\"todo_after\": 0}"),
            b64(b"{\"todo_after\": \"1\"}"),
            b64(b"{\"created_at\": \"2026-01-01T00:00:00Z\", \"run_id\": \"r\"}"),
            b64(b"[]"),
            b64(b"garbage"),
        ] {
            let result = store
                .list(
                    &tenant,
                    &TodoQuery {
                        limit: 5,
                        cursor: Some(cursor.clone()),
                    },
                )
                .await;
            assert!(
                matches!(result, Err(StoreError::Invalid(_))),
                "{cursor:?}: {result:?}"
            );
        }
        Ok(())
    }
}

// ---- idempotency keys ----------------------------------------------------------------

pub mod idempotency {
    use super::*;
    use crane::ports::IdempotencyRecord;

    fn record(run: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            run_id: run.into(),
            request_hash: format!("hash-of-{run}"),
        }
    }

    pub async fn given_a_claimed_key_when_claimed_again_then_the_first_binding_wins(
        store: Arc<dyn IdempotencyStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let first = record("run-1");
        assert_eq!(
            store.claim(&tenant, "key-1", &first, at(0, 0)).await?,
            first
        );
        assert_eq!(
            store
                .claim(&tenant, "key-1", &record("run-2"), at(10, 0))
                .await?,
            first
        );
        let other_key = record("run-3");
        assert_eq!(
            store.claim(&tenant, "key-2", &other_key, at(10, 0)).await?,
            other_key
        );
        let other_tenant = record("run-4");
        assert_eq!(
            store
                .claim(&unique("tenant"), "key-1", &other_tenant, at(10, 0))
                .await?,
            other_tenant
        );
        Ok(())
    }

    pub async fn given_a_key_when_looked_up_then_only_a_claimed_binding_is_found(
        store: Arc<dyn IdempotencyStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        assert_eq!(store.lookup(&tenant, "key-1", at(0, 0)).await?, None);
        let first = record("run-1");
        store.claim(&tenant, "key-1", &first, at(0, 0)).await?;
        assert_eq!(
            store.lookup(&tenant, "key-1", at(10, 0)).await?,
            Some(first)
        );
        assert_eq!(
            store.lookup(&unique("tenant"), "key-1", at(10, 0)).await?,
            None
        );
        assert_eq!(store.lookup(&tenant, "key-2", at(10, 0)).await?, None);
        Ok(())
    }

    pub async fn given_racing_claims_of_one_key_when_they_settle_then_all_see_one_binding(
        store: Arc<dyn IdempotencyStore>,
    ) -> Result<()> {
        let tenant = unique("tenant");
        let tasks = (0..8).map(|i| {
            let (store, tenant) = (store.clone(), tenant.clone());
            tokio::spawn(async move {
                store
                    .claim(&tenant, "key", &record(&format!("run-{i}")), at(0, 0))
                    .await
            })
        });
        let mut bound = Vec::new();
        for result in futures::future::join_all(tasks).await {
            bound.push(result??);
        }
        assert!(bound.windows(2).all(|w| w[0] == w[1]), "{bound:?}");
        Ok(())
    }
}

// ---- circuit breakers ----------------------------------------------------------------

pub mod breakers {
    use super::*;
    use crane::ports::StoreError;

    pub async fn given_versions_when_compare_and_set_then_only_the_expected_version_wins(
        store: Arc<dyn BreakerStore>,
    ) -> Result<()> {
        let tool = unique("tool");
        assert_eq!(store.get(&tool).await?, None);
        let open = json!({"state": "open", "failures": 5, "opened_at": "2026-01-01T00:00:00Z", "nested": {"x": [1.5]}});
        store.put(&tool, 0, &open).await?;
        let stored = store.get(&tool).await?.context("stored")?;
        assert_eq!((stored.version, &stored.state), (1, &open));

        let again = store.put(&tool, 0, &json!({"state": "closed"})).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

        let half = json!({"state": "half_open", "successes": 0});
        store.put(&tool, 1, &half).await?;
        let stale = store.put(&tool, 1, &json!({"state": "closed"})).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        let ahead = store.put(&tool, 7, &json!({"state": "closed"})).await;
        assert!(matches!(ahead, Err(StoreError::Conflict(_))), "{ahead:?}");

        let stored = store.get(&tool).await?.context("stored")?;
        assert_eq!((stored.version, stored.state), (2, half));
        assert_eq!(
            store.get(&unique("tool")).await?,
            None,
            "breakers are per tool"
        );
        Ok(())
    }

    pub async fn given_racing_writers_at_one_version_when_they_put_then_exactly_one_wins(
        store: Arc<dyn BreakerStore>,
    ) -> Result<()> {
        let tool = unique("tool");
        store.put(&tool, 0, &json!({"state": "closed"})).await?;
        let tasks = (0..8).map(|i| {
            let (store, tool) = (store.clone(), tool.clone());
            tokio::spawn(async move { store.put(&tool, 1, &json!({"writer": i})).await })
        });
        let mut wins = 0;
        for result in futures::future::join_all(tasks).await {
            match result? {
                Ok(()) => wins += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => bail!("unexpected: {e}"),
            }
        }
        assert_eq!(wins, 1);
        assert_eq!(store.get(&tool).await?.context("stored")?.version, 2);
        Ok(())
    }
}

// ---- step dispatch -------------------------------------------------------------------

/// Where dispatched jobs can be received from.
pub enum Inbox {
    /// The embedded store's job table.
    Sqlite(Arc<SqliteStore>),
    /// An SQS queue.
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
}

impl Inbox {
    /// The jobs visible now (waiting up to a second on SQS), removed from the queue.
    pub async fn receive(&self) -> Result<Vec<StepJob>> {
        match self {
            Inbox::Sqlite(store) => {
                let mut jobs = Vec::new();
                for leased in store.lease_jobs(Utc::now(), 100, 60_000).await? {
                    store.finish_job(leased.id).await?;
                    match leased.kind {
                        JobKind::Step { job } => jobs.push(job),
                        other => bail!("unexpected job {other:?}"),
                    }
                }
                if jobs.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(jobs)
            }
            Inbox::Sqs { client, queue_url } => {
                let out = client
                    .receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .context("ReceiveMessage")?;
                let mut jobs = Vec::new();
                for message in out.messages.unwrap_or_default() {
                    let body = message.body().context("a message without body")?;
                    jobs.extend(
                        crane::entrypoints::sqs::decode_body(body)
                            .with_context(|| format!("not a step job: {body}"))?,
                    );
                    if let Some(handle) = message.receipt_handle() {
                        client
                            .delete_message()
                            .queue_url(queue_url)
                            .receipt_handle(handle)
                            .send()
                            .await
                            .context("DeleteMessage")?;
                    }
                }
                Ok(jobs)
            }
        }
    }
}

/// A dispatcher and where its jobs arrive.
pub struct DispatchProbe {
    pub dispatcher: Arc<dyn StepDispatcher>,
    pub inbox: Inbox,
    _db: Option<TempDb>,
}

impl DispatchProbe {
    pub fn sqlite() -> Result<DispatchProbe> {
        let db = TempDb::new();
        let store = Arc::new(SqliteStore::open(&db.0)?);
        Ok(DispatchProbe {
            dispatcher: store.clone(),
            inbox: Inbox::Sqlite(store),
            _db: Some(db),
        })
    }

    pub async fn sqs() -> Result<DispatchProbe> {
        let client = aws::sqs_client()?;
        let queue_url = aws::fresh_queue(&client).await?;
        Ok(DispatchProbe {
            dispatcher: Arc::new(SqsDispatcher::new(client.clone(), queue_url.clone())),
            inbox: Inbox::Sqs { client, queue_url },
            _db: None,
        })
    }
}

pub mod dispatch {
    use super::*;

    fn job(run_id: &str, i: usize) -> StepJob {
        StepJob {
            tenant: "acme".into(),
            run_id: run_id.into(),
            step_id: format!("s{i}"),
            attempt: 1,
            correlation_id: format!("corr-{i}"),
        }
    }

    /// Receive until `want` jobs have come or `deadline` passes.
    async fn receive_until(
        inbox: &Inbox,
        got: &mut HashSet<StepJob>,
        want: usize,
        deadline: Instant,
    ) -> Result<()> {
        while got.len() < want && Instant::now() < deadline {
            got.extend(inbox.receive().await?);
        }
        Ok(())
    }

    pub async fn given_25_jobs_some_delayed_when_dispatched_then_all_arrive_and_the_delayed_ones_later(
        probe: DispatchProbe,
    ) -> Result<()> {
        const DELAY_MS: u64 = 6_000;
        let run_id = unique("run");
        let jobs: Vec<(StepJob, u64)> = (0..25)
            .map(|i| (job(&run_id, i), if i % 5 == 4 { DELAY_MS } else { 0 }))
            .collect();
        let now: HashSet<StepJob> = jobs
            .iter()
            .filter(|(_, d)| *d == 0)
            .map(|(j, _)| j.clone())
            .collect();
        let later: HashSet<StepJob> = jobs
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(j, _)| j.clone())
            .collect();
        assert_eq!((now.len(), later.len()), (20, 5));

        let sent = Instant::now();
        probe.dispatcher.dispatch(&jobs).await?;
        let mut got = HashSet::new();
        receive_until(
            &probe.inbox,
            &mut got,
            now.len(),
            sent + Duration::from_secs(5),
        )
        .await?;
        // One more receive, still well inside the delay: the delayed jobs must not show yet.
        got.extend(probe.inbox.receive().await?);
        let early = sent.elapsed();
        assert!(
            early < Duration::from_millis(DELAY_MS),
            "the machine is too slow for this check ({early:?})"
        );
        assert_eq!(got, now, "exactly the undelayed jobs arrive first");

        receive_until(
            &probe.inbox,
            &mut got,
            jobs.len(),
            sent + Duration::from_secs(30),
        )
        .await?;
        assert!(
            sent.elapsed() >= Duration::from_millis(DELAY_MS - 1_000),
            "delayed jobs waited"
        );
        let all: HashSet<StepJob> = now.union(&later).cloned().collect();
        assert_eq!(got, all, "every job arrives");
        Ok(())
    }

    pub async fn given_no_jobs_when_dispatched_then_nothing_arrives(
        probe: DispatchProbe,
    ) -> Result<()> {
        probe.dispatcher.dispatch(&[]).await?;
        assert_eq!(probe.inbox.receive().await?, vec![]);
        Ok(())
    }
}

// ---- saga starter --------------------------------------------------------------------

/// A saga starter on a fresh `Pass` state machine in moto, and a client to inspect it.
pub struct SagaProbe {
    pub starter: Arc<dyn crane::ports::SagaStarter>,
    pub sfn: crane::adapters::aws::aws_sdk_sfn::Client,
    pub state_machine_arn: String,
}

impl SagaProbe {
    pub async fn step_functions() -> Result<SagaProbe> {
        let sfn = aws::sfn_client()?;
        let state_machine_arn = aws::pass_state_machine(&sfn).await?;
        Ok(SagaProbe {
            starter: Arc::new(crane::adapters::aws::SfnSagaStarter::new(
                sfn.clone(),
                state_machine_arn.clone(),
            )),
            sfn,
            state_machine_arn,
        })
    }
}

pub mod saga {
    use super::*;
    use crane::ports::StoreError;

    pub async fn given_a_run_when_its_saga_is_started_twice_then_one_execution_is_named_after_the_run(
        probe: SagaProbe,
    ) -> Result<()> {
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        probe.starter.start(&key, "corr-1", 1).await?;
        probe.starter.start(&key, "corr-1", 1).await?;
        // Another input under the same name: Step Functions answers ExecutionAlreadyExists.
        probe.starter.start(&key, "corr-2", 1).await?;

        let executions = probe
            .sfn
            .list_executions()
            .state_machine_arn(&probe.state_machine_arn)
            .send()
            .await
            .context("ListExecutions")?
            .executions;
        assert_eq!(executions.len(), 1, "{executions:?}");
        assert_eq!(executions[0].name, key.run_id);
        let described = probe
            .sfn
            .describe_execution()
            .execution_arn(&executions[0].execution_arn)
            .send()
            .await
            .context("DescribeExecution")?;
        let input: Value = serde_json::from_str(described.input().context("no input")?)?;
        assert_eq!(
            input,
            json!({"tenant": key.tenant, "run_id": key.run_id, "correlation_id": "corr-1"})
        );
        Ok(())
    }

    pub async fn given_a_retry_request_when_its_saga_is_started_then_a_second_execution_runs_under_the_attempts_name(
        probe: SagaProbe,
    ) -> Result<()> {
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        probe.starter.start(&key, "corr-1", 1).await?;
        // The first saga crashed; an operator asked for attempt 2 (twice, by mistake).
        probe.starter.start(&key, "corr-1", 2).await?;
        probe.starter.start(&key, "corr-1", 2).await?;

        let mut names: Vec<String> = probe
            .sfn
            .list_executions()
            .state_machine_arn(&probe.state_machine_arn)
            .send()
            .await
            .context("ListExecutions")?
            .executions
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![key.run_id.clone(), format!("{}-saga-2", key.run_id)]
        );
        Ok(())
    }

    pub async fn given_a_missing_state_machine_when_a_saga_is_started_then_it_is_an_error(
        probe: SagaProbe,
    ) -> Result<()> {
        let missing = crane::adapters::aws::SfnSagaStarter::new(
            probe.sfn.clone(),
            format!("{}-missing", probe.state_machine_arn),
        );
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let result = crane::ports::SagaStarter::start(&missing, &key, "corr", 1).await;
        assert!(
            matches!(
                result,
                Err(StoreError::Unavailable { .. } | StoreError::Invalid(_))
            ),
            "{result:?}"
        );
        Ok(())
    }
}
