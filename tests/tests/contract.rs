//! The adapter contract suite (`crane_tests::contract`), run against both backends:
//! `sqlite::*` on the embedded store, `aws::*` on DynamoDB Local / moto (their endpoints
//! come from `./scripts/test`; without them the `aws` cases fail, they never skip).
//! Plus AWS-only checks of the stored item shapes the template and stream reactor rely on.

use anyhow::{Context, Result};
use crane_tests::contract::{self, DispatchProbe, SagaProbe, Stores};
use crane_tests::logs::init_logs;

/// One test per case and backend: `<suite>::sqlite::<case>` and `<suite>::aws::<case>`.
macro_rules! contract_suite {
    ($suite:ident, sqlite: $local:expr, aws: $aws:expr, port: $port:ident, [$($case:ident),* $(,)?]) => {
        mod $suite {
            use super::*;

            mod sqlite {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() -> Result<()> {
                        init_logs();
                        let fixture = $local;
                        contract::$suite::$case(fixture.$port.clone()).await
                    }
                )*
            }

            mod aws {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() -> Result<()> {
                        init_logs();
                        let fixture = $aws;
                        contract::$suite::$case(fixture.$port.clone()).await
                    }
                )*
            }
        }
    };
}

contract_suite!(events, sqlite: Stores::sqlite()?, aws: Stores::dynamodb().await?, port: events, [
    given_an_empty_log_when_events_are_appended_then_they_load_in_order_and_unchanged,
    given_an_event_at_a_seq_when_another_is_appended_at_that_seq_then_it_conflicts,
    given_a_failed_run_whose_saga_appends_after_its_end_when_loaded_then_the_whole_log_comes_back,
    given_a_batch_overlapping_the_log_when_appended_then_none_of_it_is_written,
    given_a_log_at_two_when_seq_five_is_appended_then_the_gap_is_refused,
    given_sixteen_writers_racing_on_one_run_when_each_retries_on_conflict_then_the_log_has_no_gaps_or_duplicates,
    given_one_run_id_in_two_tenants_when_loaded_then_each_tenant_sees_its_own_log,
    given_a_step_waiting_for_approval_when_eight_deciders_race_then_exactly_one_decision_is_written,
    given_appends_and_lost_races_when_the_store_offers_a_current_state_then_it_is_the_fold_of_the_log,
]);

contract_suite!(views, sqlite: Stores::sqlite()?, aws: Stores::dynamodb().await?, port: views, [
    given_a_view_when_put_then_get_returns_it,
    given_a_view_when_an_older_or_equal_one_is_put_then_it_is_ignored,
    given_many_runs_when_listed_in_pages_then_newest_first_without_duplicates_or_gaps,
    given_runs_of_several_statuses_when_listed_by_status_then_only_that_status_comes_newest_first,
    given_a_cursor_the_store_did_not_issue_when_listing_then_it_is_invalid,
    given_a_cursor_of_one_tenant_when_another_lists_with_it_then_it_shows_none_of_the_first_tenants_runs,
]);

/// The embedded store keeps breakers in memory besides the table: racing writers and
/// readers never see a version go back, and what it serves is what the table holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_keeps_breakers_at_hand_and_in_step_with_the_table() -> Result<()> {
    use std::sync::Arc;

    use crane::adapters::local::SqliteStore;
    use crane::ports::{BreakerStore, StoreError};

    init_logs();
    let db = contract::TempDb::new();
    let store = Arc::new(SqliteStore::open(&db.0)?);
    let writers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut done = 0;
            // A stale copy would make every write conflict: fail instead of spinning.
            for _ in 0..1_000 {
                if done == 10 {
                    return Ok(());
                }
                let seen = store.get("calculator").await?;
                let version = seen.map_or(0, |b| b.version);
                let state = serde_json::json!({"writer": w, "after": version});
                match store.put("calculator", version, &state).await {
                    Ok(()) => done += 1,
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
            anyhow::bail!("writer {w}: 1,000 tries for 10 writes; the breaker served is stale")
        })
    });
    let writers: Vec<_> = writers.collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut last = 0;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while last < 80 {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "version {last} after 60 s, not 80"
                    );
                    let version = store.get("calculator").await?.map_or(0, |b| b.version);
                    anyhow::ensure!(version >= last, "went back from {last} to {version}");
                    last = version;
                    tokio::task::yield_now().await;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await??;
    }
    let served = store.get("calculator").await?.context("a breaker")?;
    assert_eq!(served.version, 80, "8 writers x 10 committed writes");
    let (state, version): (String, i64) = rusqlite::Connection::open(&db.0)?.query_row(
        "SELECT state, version FROM breakers WHERE tool = 'calculator'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!(
        (
            serde_json::from_str::<serde_json::Value>(&state)?,
            version as u64
        ),
        (served.state.clone(), served.version),
        "served as the table holds it"
    );
    drop(store);
    let reopened = SqliteStore::open(&db.0)?;
    assert_eq!(reopened.get("calculator").await?, Some(served));
    assert_eq!(reopened.get("never-written").await?, None);
    Ok(())
}

/// The embedded store's rows, as `adapters::local::sqlite::events` documents them: one row
/// per append while a run is in flight, one deflated row once it has finished, a finished
/// run's view deflated; and rows written before compaction existed (one per event, plain
/// text) still read and compact.
mod sqlite_shapes {
    use crane::adapters::local::SqliteStore;
    use crane::domain::{fold, EventRecord, RunKey, RunState, RunStatus, Todo, TodoChange};
    use crane::ports::{EventStore as _, ListQuery, Outbox, RunViewStore as _};
    use crane_tests::contract::{events::a_run_in_appends, TempDb};
    use crane_tests::names::unique;
    use rusqlite::{params, Connection};

    use super::*;

    /// (seq, type, SQLite type of the body) of `key`'s event rows, in order.
    fn event_rows(db: &TempDb, key: &RunKey) -> Result<Vec<(i64, String, String)>> {
        let conn = Connection::open(&db.0)?;
        let mut stmt = conn.prepare(
            "SELECT seq, type, typeof(body) FROM events WHERE tenant = ?1 AND run_id = ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![key.tenant, key.run_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// (SQLite type, length) of the body of `key`'s view.
    fn view_body(db: &TempDb, key: &RunKey) -> Result<(String, i64)> {
        Ok(Connection::open(&db.0)?.query_row(
            "SELECT typeof(body), length(body) FROM runs WHERE tenant = ?1 AND run_id = ?2",
            params![key.tenant, key.run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    async fn append(
        store: &SqliteStore,
        key: &RunKey,
        log: &mut Vec<EventRecord>,
        batch: &[EventRecord],
    ) -> Result<RunState> {
        log.extend_from_slice(batch);
        let view = fold(&key.run_id, log)?;
        let outbox = Outbox {
            view: &view,
            effects: &[],
            wake: true,
        };
        store.append(key, batch, outbox).await?;
        Ok(view)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_a_run_just_finished_when_read_then_memory_answers_until_a_view_is_put_whole(
    ) -> Result<()> {
        init_logs();
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0)?;
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let mut log = Vec::new();
        let mut ended = None;
        for batch in a_run_in_appends(&key) {
            ended = Some(append(&store, &key, &mut log, &batch).await?);
        }
        let ended = ended.context("the run's appends")?;
        assert_eq!(store.get(&key).await?, Some(ended.clone()));
        // A reopened store has nothing in memory: the same answer, from the log.
        let reopened = SqliteStore::open(&db.0)?;
        assert_eq!(reopened.get(&key).await?, Some(ended.clone()));
        // A view put whole (the cloud's projection; no local path does it) is what reads
        // answer from then on, on the store that held the run in memory.
        let mut put = ended.clone();
        put.last_seq += 1;
        put.status = RunStatus::Compensated;
        assert!(store.put(&put).await?);
        assert_eq!(store.get(&key).await?, Some(put.clone()));
        let query = ListQuery {
            limit: 10,
            ..ListQuery::default()
        };
        let listed = store.list(&key.tenant, &query).await?;
        assert_eq!(listed.items, vec![put]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_a_run_appended_to_its_end_when_its_rows_are_read_raw_then_its_log_is_one_deflated_row_and_its_view_is_read_from_it(
    ) -> Result<()> {
        init_logs();
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0)?;
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let appends = a_run_in_appends(&key);
        let (last, in_flight) = appends.split_last().context("appends")?;
        let mut log = Vec::new();
        for batch in in_flight {
            append(&store, &key, &mut log, batch).await?;
        }
        assert_eq!(
            event_rows(&db, &key)?,
            vec![
                (2, "PlanGenerated".into(), "text".into()),
                (3, "StepStarted".into(), "text".into()),
                (5, "StepStarted".into(), "text".into()),
            ],
            "in flight: a text row per append, keyed by its last event"
        );
        assert_eq!(
            view_body(&db, &key)?,
            ("blob".into(), 0),
            "a view written by an append is read from the log, not kept twice"
        );
        assert_eq!(store.load(&key).await?, log);

        let view = append(&store, &key, &mut log, last).await?;
        assert_eq!(view.status, RunStatus::Completed);
        assert_eq!(
            event_rows(&db, &key)?,
            vec![(7, "RunCompleted".into(), "blob".into())],
            "finished: the whole log in one deflated row"
        );
        assert_eq!(
            view_body(&db, &key)?,
            ("blob".into(), 0),
            "still read from the log"
        );
        assert_eq!(store.load(&key).await?, log, "the log reads back unchanged");
        assert_eq!(store.get(&key).await?, Some(view.clone()));

        // A reopened store (nothing in memory) reads the same.
        drop(store);
        let store = SqliteStore::open(&db.0)?;
        assert_eq!(store.load(&key).await?, log);
        assert_eq!(store.get(&key).await?, Some(view));
        Ok(())
    }

    fn pragma(db: &TempDb, name: &str) -> Result<i64> {
        Ok(Connection::open(&db.0)?.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
    }

    /// A burst of runs in flight takes pages that their compaction frees; once writes
    /// pause, the writer returns them to the file system, so the file holds what the
    /// finished runs keep.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_many_runs_in_flight_that_finish_when_writes_pause_then_the_free_pages_are_returned(
    ) -> Result<()> {
        init_logs();
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0)?;
        assert_eq!(
            pragma(&db, "auto_vacuum")?,
            2,
            "a new database is INCREMENTAL"
        );
        let tenant = unique("tenant");
        let runs: Vec<(RunKey, Vec<Vec<EventRecord>>)> = (0..600)
            .map(|_| {
                let key = RunKey::new(&tenant, crane::domain::new_run_id());
                let appends = a_run_in_appends(&key);
                (key, appends)
            })
            .collect();
        let mut logs = vec![Vec::new(); runs.len()];
        let last = runs[0].1.len() - 1;
        for i in 0..last {
            for ((key, appends), log) in runs.iter().zip(logs.iter_mut()) {
                append(&store, key, log, &appends[i]).await?;
            }
        }
        // Nothing was deleted yet, so nothing is free: the file is as large as the runs in
        // flight made it.
        let in_flight_pages = pragma(&db, "page_count")?;
        for ((key, appends), log) in runs.iter().zip(logs.iter_mut()) {
            append(&store, key, log, &appends[last]).await?;
        }
        let mut free = pragma(&db, "freelist_count")?;
        for _ in 0..200 {
            if free <= 64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            free = pragma(&db, "freelist_count")?;
        }
        assert!(free <= 64, "{free} free pages left after the pause");
        let pages = pragma(&db, "page_count")?;
        assert!(
            pages < in_flight_pages,
            "the file shrank from {in_flight_pages} pages (runs in flight) to {pages} (finished)"
        );
        for ((key, _), log) in runs.iter().zip(&logs).step_by(97) {
            assert_eq!(&store.load(key).await?, log);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_rows_written_one_per_event_before_compaction_when_read_and_finished_then_they_load_and_compact(
    ) -> Result<()> {
        init_logs();
        let db = TempDb::new();
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let appends = a_run_in_appends(&key);
        let (last, in_flight) = appends.split_last().context("appends")?;
        let mut log: Vec<EventRecord> = in_flight.concat();
        let before = fold(&key.run_id, &log)?;
        // Earlier versions rewrote a run's view only when its status changed: this one was
        // written when the run started and trails its log.
        let trailing = fold(&key.run_id, &log[..3])?;
        assert_eq!(
            (trailing.status, trailing.last_seq),
            (RunStatus::Running, 3)
        );
        // Open once for the schema, then write the rows as earlier versions did.
        drop(SqliteStore::open(&db.0)?);
        {
            let conn = Connection::open(&db.0)?;
            for e in &log {
                conn.execute(
                    "INSERT INTO events (tenant, run_id, seq, type, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key.tenant, key.run_id, e.seq as i64, e.event.type_name(), serde_json::to_string(e)?],
                )?;
            }
            conn.execute(
                "INSERT INTO runs (tenant, run_id, status, created_at, last_seq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.tenant, key.run_id, trailing.status.as_str(), trailing.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), trailing.last_seq as i64, serde_json::to_string(&trailing)?],
            )?;
        }
        let store = SqliteStore::open(&db.0)?;
        assert_eq!(store.load(&key).await?, log);
        assert_eq!(store.get(&key).await?, Some(trailing), "the row as written");
        let query = ListQuery {
            limit: 10,
            ..ListQuery::default()
        };
        let listed = store.list(&key.tenant, &query).await?;
        assert_eq!(
            listed.items,
            vec![before],
            "listed as its log says (in flight, the log is folded)"
        );

        let view = append(&store, &key, &mut log, last).await?;
        assert_eq!(
            event_rows(&db, &key)?,
            vec![(7, "RunCompleted".into(), "blob".into())]
        );
        assert_eq!(store.load(&key).await?, log);
        assert_eq!(store.get(&key).await?, Some(view));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_todos_written_before_counts_were_kept_when_opened_then_each_tenant_is_counted(
    ) -> Result<()> {
        use crane::ports::TodoStore as _;
        init_logs();
        let db = TempDb::new();
        let (a, b) = (unique("tenant-a"), unique("tenant-b"));
        let store = SqliteStore::open(&db.0)?;
        for (tenant, n) in [(&a, 3), (&b, 2)] {
            for i in 0..n {
                let add = TodoChange::Add {
                    title: format!("todo {i}"),
                };
                store
                    .apply(tenant, &format!("run/s{i}"), &add, chrono::Utc::now())
                    .await?;
            }
        }
        drop(store);
        // As an earlier version left it: todos, and no table of counts.
        Connection::open(&db.0)?.execute_batch("DROP TABLE todo_counts")?;
        let store = SqliteStore::open(&db.0)?;
        assert_eq!((store.count(&a).await?, store.count(&b).await?), (3, 2));
        store
            .apply(
                &a,
                "run/d",
                &TodoChange::Delete { id: 1 },
                chrono::Utc::now(),
            )
            .await?;
        assert_eq!(store.count(&a).await?, 2, "and kept from then on");
        drop(store);
        let store = SqliteStore::open(&db.0)?;
        assert_eq!(
            (store.count(&a).await?, store.count(&b).await?),
            (2, 2),
            "a database with counts keeps them as they are"
        );
        Ok(())
    }

    /// The first `limit` todos of `tenant` and whether more follow, read from the table.
    fn first_todos(db: &TempDb, tenant: &str, limit: usize) -> Result<(Vec<Todo>, bool)> {
        let conn = Connection::open(&db.0)?;
        let mut stmt =
            conn.prepare("SELECT body FROM todos WHERE tenant = ?1 ORDER BY id LIMIT ?2")?;
        let mut rows = stmt
            .query_map(params![tenant, limit as i64 + 1], |r| r.get::<_, String>(0))?
            .map(|b| Ok(serde_json::from_str::<Todo>(&b?)?))
            .collect::<Result<Vec<Todo>>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_any_change_to_todos_when_the_first_page_is_listed_again_then_it_is_the_tables(
    ) -> Result<()> {
        use crane::ports::{TodoQuery, TodoStore};
        init_logs();
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0)?;
        // The todo just after a page is what says that more follow: deleting the last one
        // moves the page.
        let edge = unique("tenant-edge");
        for i in 1..=3 {
            let add = TodoChange::Add {
                title: format!("todo {i}"),
            };
            store
                .apply(&edge, &format!("run/{i}"), &add, chrono::Utc::now())
                .await?;
        }
        let two = TodoQuery::first(2);
        let first_two = || TodoStore::list(&store, &edge, &two);
        assert!(first_two().await?.next_cursor.is_some());
        let delete = TodoChange::Delete { id: 3 };
        store
            .apply(&edge, "run/d3", &delete, chrono::Utc::now())
            .await?;
        let page = first_two().await?;
        assert_eq!(page.items.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(page.next_cursor, None, "nothing follows now");

        let tenants = [unique("tenant-a"), unique("tenant-b")];
        let mut deleted: Vec<(usize, Todo)> = Vec::new();
        // A fixed pseudo-random walk: adds outnumber the rest, so pages fill and overflow.
        let mut x: u64 = 7;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for step in 0..400 {
            let which = next(2) as usize;
            let tenant = &tenants[which];
            let count = store.count(tenant).await?;
            let mut id = 1 + next(count.max(1) + 2);
            // Half the changes fall on the last todo of a page or the first after it.
            let ids: Vec<u64> = first_todos(&db, tenant, 110)?
                .0
                .iter()
                .map(|t| t.id)
                .collect();
            if next(2) == 0 {
                let end = [1, 3, 10, 100][next(4) as usize] - 1 + next(2) as usize;
                id = ids.get(end).copied().unwrap_or(id);
            }
            let change = match next(8) {
                0 => TodoChange::Complete { id },
                1 => TodoChange::Reopen { id },
                2 => TodoChange::Delete { id },
                3 => match deleted.iter().position(|(t, _)| *t == which) {
                    Some(i) => TodoChange::Restore {
                        todo: deleted.remove(i).1,
                    },
                    None => TodoChange::Complete { id },
                },
                _ => TodoChange::Add {
                    title: format!("todo {step}"),
                },
            };
            let applied = store
                .apply(tenant, &format!("run/{step}"), &change, chrono::Utc::now())
                .await;
            if let (TodoChange::Delete { .. }, Ok(todo)) = (&change, &applied) {
                deleted.push((which, todo.clone()));
            }
            for tenant in &tenants {
                for limit in [1, 3, 10, 100] {
                    let page = TodoStore::list(&store, tenant, &TodoQuery::first(limit)).await?;
                    let (rows, more) = first_todos(&db, tenant, limit)?;
                    assert_eq!(
                        (&page.items, page.next_cursor.is_some()),
                        (&rows, more),
                        "step {step} ({change:?}), limit {limit}"
                    );
                }
            }
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_lists_racing_changes_when_all_is_done_then_the_first_page_is_the_tables(
    ) -> Result<()> {
        use crane::ports::{TodoQuery, TodoStore};
        init_logs();
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0)?;
        let tenant = unique("tenant");
        for round in 0..300 {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..8u64 {
                let (writer, who) = (store.clone(), tenant.clone());
                tasks.spawn(async move {
                    let change = match i % 4 {
                        0 => TodoChange::Delete {
                            id: 1 + (round * 3 + i) % 5,
                        },
                        1 => TodoChange::Complete { id: 1 + i },
                        _ => TodoChange::Add {
                            title: format!("{round}/{i}"),
                        },
                    };
                    let _ = writer
                        .apply(&who, &format!("r{round}/{i}"), &change, chrono::Utc::now())
                        .await;
                });
                let (reader, who) = (store.clone(), tenant.clone());
                tasks.spawn(async move {
                    for limit in [2, 5] {
                        let _ = TodoStore::list(&reader, &who, &TodoQuery::first(limit)).await;
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done?;
            }
            for limit in [2, 5] {
                let page = TodoStore::list(&store, &tenant, &TodoQuery::first(limit)).await?;
                let (rows, more) = first_todos(&db, &tenant, limit)?;
                assert_eq!(
                    (&page.items, page.next_cursor.is_some()),
                    (&rows, more),
                    "round {round}, limit {limit}"
                );
            }
        }
        Ok(())
    }
}

/// Runs in flight listed as their logs say: needs the event log and the views together.
mod views_in_flight {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() -> Result<()> {
        init_logs();
        let stores = Stores::sqlite()?;
        contract::views::given_runs_whose_steps_moved_since_their_views_were_written_when_listed_then_each_is_as_its_log_says(
            stores.events.clone(),
            stores.views.clone(),
        )
        .await
    }

    /// The embedded store writes a view row only when its run's status changes, keeps the
    /// state of runs in flight in memory, and reads a view from the log; after a restart
    /// (nothing in memory) runs are still listed as their logs say. (Views written by
    /// earlier versions, which trail their logs, are `sqlite_shapes`' concern.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_after_a_restart() -> Result<()> {
        use crane::adapters::local::SqliteStore;
        use crane::domain::RunKey;
        use crane::ports::RunViewStore as _;

        init_logs();
        let db = contract::TempDb::new();
        let runs = {
            let store = SqliteStore::open(&db.0)?;
            contract::views::runs_in_flight(&store, &store).await?
        };
        let store = SqliteStore::open(&db.0)?;
        let key = RunKey::new(&runs.tenant, &runs.started.run_id);
        assert_eq!(
            store.get(&key).await?.map(|v| v.last_seq),
            Some(5),
            "the view row was last written when the run started, two events ago, yet reads as the log"
        );
        contract::views::listed_as_their_logs_say(&store, &runs).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn aws() -> Result<()> {
        init_logs();
        let stores = Stores::dynamodb().await?;
        contract::views::given_runs_whose_steps_moved_since_their_views_were_written_when_listed_then_each_is_as_its_log_says(
            stores.events.clone(),
            stores.views.clone(),
        )
        .await
    }
}

contract_suite!(todos, sqlite: Stores::sqlite()?, aws: Stores::dynamodb().await?, port: todos, [
    given_a_todo_when_completed_reopened_deleted_and_restored_then_each_change_shows,
    given_one_effect_key_when_applied_twice_then_there_is_one_todo_and_one_result,
    given_no_such_todo_when_it_is_changed_then_not_found_and_nothing_is_recorded,
    given_two_tenants_when_each_adds_todos_then_ids_and_lists_are_separate,
    given_twelve_todos_when_listed_then_they_come_in_id_order,
    given_concurrent_adds_with_distinct_keys_when_applied_then_every_todo_gets_its_own_id,
    given_concurrent_applies_with_one_key_when_they_race_then_exactly_one_todo_is_added,
    given_todos_with_gaps_when_listed_in_small_pages_then_each_comes_once_in_id_order,
    given_todo_changes_when_counted_and_listed_then_only_the_tenants_todos_are_seen,
    given_a_cursor_the_store_did_not_issue_when_listing_todos_then_it_is_invalid,
]);

contract_suite!(idempotency, sqlite: Stores::sqlite()?, aws: Stores::dynamodb().await?, port: idempotency, [
    given_a_claimed_key_when_claimed_again_then_the_first_binding_wins,
    given_a_key_when_looked_up_then_only_a_claimed_binding_is_found,
    given_racing_claims_of_one_key_when_they_settle_then_all_see_one_binding,
]);

contract_suite!(breakers, sqlite: Stores::sqlite()?, aws: Stores::dynamodb().await?, port: breakers, [
    given_versions_when_compare_and_set_then_only_the_expected_version_wins,
    given_racing_writers_at_one_version_when_they_put_then_exactly_one_wins,
]);

/// Dispatch cases take the whole probe (dispatcher + inbox).
macro_rules! dispatch_suite {
    ($($case:ident),* $(,)?) => {
        mod dispatch {
            use super::*;

            mod sqlite {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() -> Result<()> {
                        init_logs();
                        contract::dispatch::$case(DispatchProbe::sqlite()?).await
                    }
                )*
            }

            mod aws {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() -> Result<()> {
                        init_logs();
                        contract::dispatch::$case(DispatchProbe::sqs().await?).await
                    }
                )*
            }
        }
    };
}

dispatch_suite!(
    given_25_jobs_some_delayed_when_dispatched_then_all_arrive_and_the_delayed_ones_later,
    given_no_jobs_when_dispatched_then_nothing_arrives,
);

/// The saga starter has no embedded counterpart (locally the saga is a job in the outbox).
mod saga {
    use super::*;

    mod aws {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn given_a_run_when_its_saga_is_started_twice_then_one_execution_is_named_after_the_run(
        ) -> Result<()> {
            init_logs();
            contract::saga::given_a_run_when_its_saga_is_started_twice_then_one_execution_is_named_after_the_run(
                SagaProbe::step_functions().await?,
            )
            .await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn given_a_retry_request_when_its_saga_is_started_then_a_second_execution_runs_under_the_attempts_name(
        ) -> Result<()> {
            init_logs();
            contract::saga::given_a_retry_request_when_its_saga_is_started_then_a_second_execution_runs_under_the_attempts_name(
                SagaProbe::step_functions().await?,
            )
            .await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn given_a_missing_state_machine_when_a_saga_is_started_then_it_is_an_error(
        ) -> Result<()> {
            init_logs();
            contract::saga::given_a_missing_state_machine_when_a_saga_is_started_then_it_is_an_error(
                SagaProbe::step_functions().await?,
            )
            .await
        }
    }
}

/// What the SAM template, the stream reactor and the console rely on beyond the ports.
mod aws_shapes {
    use std::collections::HashMap;

    use crane::adapters::aws::aws_sdk_dynamodb::types::{
        AttributeValue, ProjectionType, StreamViewType, TimeToLiveStatus,
    };
    use crane::adapters::aws::{provision, stream, DynamoStore, SqsDispatcher};
    use crane::domain::{Event, EventRecord, RunKey, RunStatus, StepJob};
    use crane::ports::{EventStore, ListQuery, Outbox, RunViewStore, StepDispatcher, StoreError};
    use crane_tests::cloud::RequestLog;
    use crane_tests::contract::{
        at,
        views::{all_pages, view},
    };
    use crane_tests::names::unique;
    use crane_tests::{aws, clients};

    use super::*;

    fn s(item: &HashMap<String, AttributeValue>, name: &str) -> String {
        match item.get(name) {
            Some(AttributeValue::S(v)) => v.clone(),
            other => panic!("{name}: expected S, got {other:?}"),
        }
    }

    /// A body as the store writes it: DEFLATE-compressed JSON.
    fn deflated(v: &impl serde::Serialize) -> Result<AttributeValue> {
        use std::io::Write as _;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&serde_json::to_vec(v)?)?;
        Ok(AttributeValue::B(z.finish()?.into()))
    }

    fn n(item: &HashMap<String, AttributeValue>, name: &str) -> String {
        match item.get(name) {
            Some(AttributeValue::N(v)) => v.clone(),
            other => panic!("{name}: expected N, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_an_appended_event_when_its_item_is_read_raw_then_it_has_the_documented_shape_and_decodes_as_a_stream_image(
    ) -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        let store = DynamoStore::new(client.clone(), names.clone());
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let rec = EventRecord::new(
            1,
            at(0, 42),
            Event::RunCreated {
                tenant: key.tenant.clone(),
                prompt: "calculate 2+3".into(),
                correlation_id: "corr".into(),
                idempotency_key: Some("idem".into()),
            },
        );
        let view = crane::domain::fold(&key.run_id, std::slice::from_ref(&rec))?;
        store
            .append(
                &key,
                std::slice::from_ref(&rec),
                Outbox {
                    view: &view,
                    effects: &[],
                    wake: true,
                },
            )
            .await?;

        let item = client
            .get_item()
            .table_name(&names.events)
            .key(
                "pk",
                AttributeValue::S(format!("{}#{}", key.tenant, key.run_id)),
            )
            .key("seq", AttributeValue::N("1".into()))
            .consistent_read(true)
            .send()
            .await?
            .item
            .context("the event item")?;
        assert_eq!(s(&item, "tenant"), key.tenant);
        assert_eq!(s(&item, "run_id"), key.run_id);
        assert_eq!(s(&item, "type"), "RunCreated");
        assert_eq!(s(&item, "at"), "2026-01-01T00:00:00.000042Z");
        assert_eq!(n(&item, "version"), "1");
        let Some(AttributeValue::M(data)) = item.get("data") else {
            panic!("data is a map: {item:?}");
        };
        assert_eq!(s(data, "prompt"), "calculate 2+3");

        assert_eq!(s(&item, "wake"), "1", "the append woke the reactor");
        assert!(!item.contains_key("more") && !item.contains_key("last"));
        assert_eq!(stream::decode_new_image(item)?, (key, vec![rec]));
        Ok(())
    }

    /// A run's first event, and a state to hand over as the outbox's view (ignored by
    /// DynamoDB).
    fn first_event(key: &RunKey) -> Result<(EventRecord, crane::domain::RunState)> {
        let rec = EventRecord::new(
            1,
            at(0, 0),
            Event::RunCreated {
                tenant: key.tenant.clone(),
                prompt: "calculate 2+3".into(),
                correlation_id: "corr".into(),
                idempotency_key: None,
            },
        );
        let view = crane::domain::fold(&key.run_id, std::slice::from_ref(&rec))?;
        Ok((rec, view))
    }

    fn started(seq: u64) -> EventRecord {
        EventRecord::new(
            seq,
            at(1, seq as i64),
            Event::StepStarted {
                step_id: format!("s{seq}"),
                attempt: 1,
                lease_ms: 30_000,
            },
        )
    }

    fn completed(seq: u64, output: serde_json::Value) -> EventRecord {
        EventRecord::new(
            seq,
            at(2, seq as i64),
            Event::StepCompleted {
                step_id: format!("s{seq}"),
                attempt: 1,
                output: output.into(),
                duration_ms: 4,
            },
        )
    }

    async fn append_to(
        store: &DynamoStore,
        key: &RunKey,
        view: &crane::domain::RunState,
        events: &[EventRecord],
        wake: bool,
    ) -> Result<(), StoreError> {
        store
            .append(
                key,
                events,
                Outbox {
                    view,
                    effects: &[],
                    wake,
                },
            )
            .await
    }

    /// The run's items as stored, in key order.
    async fn raw_items(
        client: &crane::adapters::aws::aws_sdk_dynamodb::Client,
        table: &str,
        key: &RunKey,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        Ok(client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("{}#{}", key.tenant, key.run_id)),
            )
            .consistent_read(true)
            .send()
            .await?
            .items
            .unwrap_or_default())
    }

    /// (operation, requests, capacity units) of the DynamoDB requests in `log`.
    fn dynamodb_requests(log: &RequestLog) -> Vec<(String, u64, f64)> {
        log.snapshot()
            .into_iter()
            .filter(|((service, _), _)| service == "DynamoDB")
            .map(|((_, op), s)| (op, s.requests, s.capacity_units))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_store_that_read_the_log_when_it_appends_several_events_then_it_sends_one_put_of_one_item(
    ) -> Result<()> {
        init_logs();
        let (admin, names) = aws::fresh_tables().await?;
        let log = RequestLog::default();
        let client = clients::dynamodb(&aws::endpoint(aws::DYNAMODB_ENDPOINT_VAR)?, Some(&log));
        let store = DynamoStore::new(client, names.clone());
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let (first, view) = first_event(&key)?;
        append_to(&store, &key, &view, &[first.clone(), started(2)], true).await?;
        assert_eq!(
            dynamodb_requests(&log),
            [("PutItem".to_owned(), 1, 1.0)],
            "a new run: one put, no read"
        );

        let mut log_so_far = store.load(&key).await?;
        log.reset();
        let next = [completed(3, serde_json::json!(5)), started(4), started(5)];
        append_to(&store, &key, &view, &next, false).await?;
        assert_eq!(
            dynamodb_requests(&log),
            [("PutItem".to_owned(), 1, 1.0)],
            "after a load: one put of 1 WRU, no transaction, no tail read"
        );
        log_so_far.extend(next);
        assert_eq!(store.load(&key).await?, log_so_far);

        let items = raw_items(&admin, &names.events, &key).await?;
        assert_eq!(items.len(), 2, "one item per append: {items:?}");
        assert_eq!(n(&items[0], "seq"), "1");
        assert_eq!(n(&items[0], "last"), "2");
        assert_eq!(s(&items[0], "wake"), "1");
        assert_eq!(n(&items[1], "seq"), "3");
        assert_eq!(n(&items[1], "last"), "5");
        assert!(!items[1].contains_key("wake"), "not marked: {:?}", items[1]);
        let Some(AttributeValue::L(more)) = items[1].get("more") else {
            panic!("more is a list: {:?}", items[1]);
        };
        assert_eq!(more.len(), 2);
        let (k, events) = stream::decode_new_image(items[1].clone())?;
        assert_eq!((k, events), (key, log_so_far[2..].to_vec()));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_store_that_never_read_the_log_when_it_appends_off_the_tail_then_it_reads_the_tail_and_refuses(
    ) -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        let writer = DynamoStore::new(client.clone(), names.clone());
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let (first, view) = first_event(&key)?;
        let mut log = vec![first, started(2), started(3)];
        append_to(&writer, &key, &view, &log, true).await?;

        // A cold store (another process) knows no tail: it reads it before refusing or
        // writing. Seq 2 has no item of its own (it is inside item 1..=3).
        let request_log = RequestLog::default();
        let cold = DynamoStore::new(
            clients::dynamodb(
                &aws::endpoint(aws::DYNAMODB_ENDPOINT_VAR)?,
                Some(&request_log),
            ),
            names.clone(),
        );
        for (what, events) in [
            ("inside an item", vec![started(2)]),
            ("at the last seq", vec![started(3), started(4)]),
            ("a gap", vec![started(5)]),
        ] {
            let result = append_to(&cold, &key, &view, &events, true).await;
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "{what}: {result:?}"
            );
        }
        assert!(
            dynamodb_requests(&request_log)
                .iter()
                .all(|(op, _, _)| op == "Query"),
            "nothing refused was written: {:?}",
            dynamodb_requests(&request_log)
        );
        append_to(&cold, &key, &view, &[started(4)], true).await?;
        log.push(started(4));

        // The writer's tail (3) is stale now: its put at 4 meets the cold store's item.
        let stale = append_to(&writer, &key, &view, &[started(4)], true).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        // Past what it knows, it reads the tail again.
        append_to(&writer, &key, &view, &[started(5)], true).await?;
        log.push(started(5));
        assert_eq!(writer.load(&key).await?, log);
        assert_eq!(cold.load(&key).await?, log);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_an_append_too_large_for_one_item_when_written_then_each_event_gets_an_item_and_the_log_reads_back(
    ) -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        let store = DynamoStore::new(client.clone(), names.clone());
        let key = RunKey::new(unique("tenant"), crane::domain::new_run_id());
        let (first, view) = first_event(&key)?;
        let mut log = vec![first.clone()];
        append_to(&store, &key, &view, &log, true).await?;

        // Six step outputs of 64 KB: over the 350 KB of one item.
        let output = serde_json::json!("x".repeat(64 * 1024));
        let large: Vec<EventRecord> = (2..=7).map(|seq| completed(seq, output.clone())).collect();
        append_to(&store, &key, &view, &large, true).await?;
        log.extend(large);
        let small = vec![started(8), started(9)];
        append_to(&store, &key, &view, &small, false).await?;
        log.extend(small);

        let items = raw_items(&client, &names.events, &key).await?;
        let seqs: Vec<String> = items.iter().map(|i| n(i, "seq")).collect();
        assert_eq!(seqs, ["1", "2", "3", "4", "5", "6", "7", "8"]);
        for item in &items[1..7] {
            assert_eq!(
                s(item, "wake"),
                "1",
                "every item of a woken append is marked"
            );
            assert!(!item.contains_key("more"));
        }
        assert_eq!(n(&items[7], "last"), "9");
        assert_eq!(
            store.load(&key).await?,
            log,
            "both kinds of items read back"
        );

        // Another process appends 10; this store still believes the log ends at 9, so its
        // large append at 10 goes to the transaction, whose put at 10 fails: nothing of it
        // is written.
        let other = DynamoStore::new(client, names);
        append_to(&other, &key, &view, &[started(10)], true).await?;
        log.push(started(10));
        let late: Vec<EventRecord> = (10..=15)
            .map(|seq| completed(seq, output.clone()))
            .collect();
        let result = append_to(&store, &key, &view, &late, true).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
        assert_eq!(other.load(&key).await?, log);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_view_when_its_item_is_read_raw_then_the_index_keys_are_set() -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        let store = DynamoStore::new(client.clone(), names.clone());
        let tenant = unique("tenant");
        let v = view(&tenant, "run-1", at(5, 7), RunStatus::Compensating, 4)?;
        store.put(&v).await?;
        let item = client
            .get_item()
            .table_name(&names.runs)
            .key("pk", AttributeValue::S(format!("{tenant}#run-1")))
            .send()
            .await?
            .item
            .context("the view item")?;
        assert_eq!(s(&item, "status"), "compensating");
        assert_eq!(s(&item, "tenant"), tenant);
        assert!(
            !item.contains_key("tenant_status"),
            "no second index key is written"
        );
        assert_eq!(s(&item, "created_sk"), "2026-01-01T00:00:05.000007Z#run-1");
        assert_eq!(n(&item, "last_seq"), "4");
        assert!(
            !item.contains_key("body"),
            "the plain body is no longer written"
        );
        let Some(AttributeValue::B(z)) = item.get("body_z") else {
            panic!("body_z: expected B, got {:?}", item.get("body_z"));
        };
        let json = {
            use std::io::Read as _;
            let mut json = Vec::new();
            flate2::read::DeflateDecoder::new(z.as_ref()).read_to_end(&mut json)?;
            json
        };
        assert!(z.as_ref().len() < json.len(), "compressed");
        let body: crane::domain::RunState = serde_json::from_slice(&json)?;
        assert_eq!(body, v);
        Ok(())
    }

    /// The reactor writes a view when a run is created and when it settles, not while
    /// its steps run: listing folds the log of a run whose view says it is in flight, so
    /// a started run is listed as running (and not as pending), with its steps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_run_started_since_its_view_was_written_when_listed_then_it_is_running(
    ) -> Result<()> {
        init_logs();
        let store = aws::fresh_dynamo_store().await?;
        let tenant = unique("tenant");
        let waiting = RunKey::new(&tenant, "run-a");
        let started = RunKey::new(&tenant, "run-b");
        let mut pending = Vec::new();
        for key in [&waiting, &started] {
            let (created, view) = first_event(key)?;
            append_to(&store, key, &view, std::slice::from_ref(&created), true).await?;
            assert!(store.put(&view).await?);
            pending.push((created, view));
        }
        let plan = EventRecord::new(
            2,
            at(1, 0),
            Event::PlanGenerated {
                planner: crane::domain::PlannerInfo {
                    name: "pattern".into(),
                    ..Default::default()
                },
                plan: crane::domain::Plan {
                    steps: vec![crane::domain::PlanStep {
                        id: "s1".into(),
                        tool: "calculator".into(),
                        input: serde_json::json!({"expression": "2+3"}),
                        depends_on: vec![],
                        requires_approval: false,
                    }],
                }
                .into(),
            },
        );
        let claim = EventRecord::new(
            3,
            at(1, 5),
            Event::StepStarted {
                step_id: "s1".into(),
                attempt: 1,
                lease_ms: 30_000,
            },
        );
        let log = [pending[1].0.clone(), plan.clone(), claim.clone()];
        let running = crane::domain::fold(&started.run_id, &log)?;
        assert_eq!(running.status, RunStatus::Running);
        append_to(&store, &started, &running, &[plan, claim], false).await?;
        // The view still says where the run was created.
        assert_eq!(store.get(&started).await?, Some(pending[1].1.clone()));

        let listed = all_pages(&store, &tenant, Some(RunStatus::Running), 1).await?;
        assert_eq!(listed, vec![running.clone()]);
        let listed = all_pages(&store, &tenant, Some(RunStatus::Pending), 1).await?;
        assert_eq!(listed, vec![pending[0].1.clone()]);
        let listed = all_pages(&store, &tenant, None, 1).await?;
        assert_eq!(listed, vec![running, pending[0].1.clone()]);
        Ok(())
    }

    /// Views written before bodies were compressed hold plain JSON in `body`: they are
    /// still read, by `get` and by listing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_view_written_with_a_plain_body_when_read_and_listed_then_it_is_found(
    ) -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        let store = DynamoStore::new(client.clone(), names.clone());
        let tenant = unique("tenant");
        let old = view(&tenant, "run-old", at(5, 0), RunStatus::Completed, 4)?;
        let new = view(&tenant, "run-new", at(6, 0), RunStatus::Completed, 4)?;
        store.put(&new).await?;
        let item: HashMap<String, AttributeValue> = [
            ("pk", format!("{tenant}#run-old")),
            ("tenant", tenant.clone()),
            ("run_id", "run-old".to_owned()),
            ("status", "completed".to_owned()),
            (
                "created_sk",
                "2026-01-01T00:00:05.000000Z#run-old".to_owned(),
            ),
            ("body", serde_json::to_string(&old)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
        .chain([("last_seq".to_owned(), AttributeValue::N("4".into()))])
        .collect();
        client
            .put_item()
            .table_name(&names.runs)
            .set_item(Some(item))
            .send()
            .await?;
        assert_eq!(
            store.get(&RunKey::new(&tenant, "run-old")).await?,
            Some(old.clone())
        );
        let listed = all_pages(&store, &tenant, Some(RunStatus::Completed), 1).await?;
        assert_eq!(listed, vec![new, old]);
        Ok(())
    }

    /// Index items only: what `put` writes to `by_created` is the keys and `status`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_run_view_when_put_again_then_the_index_is_written_only_when_the_status_changes(
    ) -> Result<()> {
        init_logs();
        let (_, names) = aws::fresh_tables().await?;
        let capacity = aws::PutCapacity::default();
        let store = DynamoStore::new(capacity.client()?, names);
        let tenant = unique("tenant");
        let run_id = crane::domain::new_run_id();
        let mut v = view(&tenant, &run_id, at(0, 0), RunStatus::Pending, 1)?;
        // A body that stays over 1 KB compressed keeps the table's share visible: 2,000
        // characters of a pseudo-random text.
        let mut x: u32 = 7;
        v.prompt = (0..2_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b'a' + u8::try_from((x >> 16) % 26).expect("below 26"))
            })
            .collect();
        let mut at_seq = |status: RunStatus, seq: u64| {
            v.status = status;
            v.last_seq = seq;
            v.clone()
        };
        for state in [
            at_seq(RunStatus::Pending, 1),
            at_seq(RunStatus::Pending, 2),
            at_seq(RunStatus::Running, 3),
            at_seq(RunStatus::Running, 4),
            at_seq(RunStatus::Completed, 5),
        ] {
            assert!(store.put(&state).await?);
        }
        let index: Vec<f64> = capacity
            .take("by_created")
            .into_iter()
            .map(|(table, index)| {
                assert!(
                    table >= 2.0,
                    "the >1 KB compressed body is written to the table"
                );
                index
            })
            .collect();
        assert_eq!(
            index,
            [1.0, 0.0, 1.0, 0.0, 1.0],
            "index WRU of: insert, same status, new status, same status, new status"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_thirty_runs_of_which_every_seventh_completed_when_listed_by_status_in_pages_of_two_then_each_match_comes_once_newest_first(
    ) -> Result<()> {
        init_logs();
        let store = aws::fresh_dynamo_store().await?;
        let tenant = unique("tenant");
        let mut completed = Vec::new();
        let mut running = Vec::new();
        for i in 0..30i64 {
            let status = if i % 7 == 0 {
                RunStatus::Completed
            } else {
                RunStatus::Running
            };
            let v = view(
                &tenant,
                &crane::domain::new_run_id(),
                at(i * 60, 0),
                status,
                2,
            )?;
            assert!(store.put(&v).await?);
            match status {
                RunStatus::Completed => completed.push(v.run_id),
                _ => running.push(v.run_id),
            }
        }
        completed.reverse();
        running.reverse();
        let ids = |runs: Vec<crane::domain::RunState>| -> Vec<String> {
            runs.into_iter().map(|v| v.run_id).collect()
        };
        // Runs 28, 21, 14, 7, 0: the matches sit far apart in the index.
        for limit in [1, 2, 3, 5, 6] {
            let listed = all_pages(&store, &tenant, Some(RunStatus::Completed), limit).await?;
            assert_eq!(ids(listed), completed, "completed, limit {limit}");
        }
        let listed = all_pages(&store, &tenant, Some(RunStatus::Running), 4).await?;
        assert_eq!(ids(listed), running, "running, limit 4");

        let first = store
            .list(
                &tenant,
                &ListQuery {
                    status: Some(RunStatus::Completed),
                    limit: 2,
                    cursor: None,
                },
            )
            .await?;
        let cursor = first
            .next_cursor
            .context("five completed runs fill more than one page of two")?;
        for status in [Some(RunStatus::Running), None] {
            let result = store
                .list(
                    &tenant,
                    &ListQuery {
                        status,
                        limit: 2,
                        cursor: Some(cursor.clone()),
                    },
                )
                .await;
            assert!(
                matches!(result, Err(StoreError::Invalid(_))),
                "a completed listing's cursor used for {status:?}: {result:?}"
            );
        }
        Ok(())
    }

    /// 130 runs: more than one `BatchGetItem` and one filtered `Query` (100 index items)
    /// hold. The three completed ones are the oldest, so a completed listing finds
    /// nothing in its first `Query` and must read on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_more_runs_than_one_request_holds_when_listed_then_all_come_newest_first_and_sparse_old_matches_are_found(
    ) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        init_logs();
        let store = aws::fresh_dynamo_store().await?;
        let tenant = unique("tenant");
        let mut runs: Vec<crane::domain::RunState> = (0..130i64)
            .map(|i| {
                let status = if [0, 5, 17].contains(&i) {
                    RunStatus::Completed
                } else {
                    RunStatus::Failed
                };
                view(&tenant, &crane::domain::new_run_id(), at(i, 0), status, 2)
            })
            .collect::<Result<_>>()?;
        futures::stream::iter(runs.iter().map(|v| store.put(v)))
            .buffer_unordered(16)
            .try_collect::<Vec<bool>>()
            .await?;
        runs.reverse();
        for status in [None, Some(RunStatus::Failed), Some(RunStatus::Completed)] {
            let want: Vec<&crane::domain::RunState> = runs
                .iter()
                .filter(|v| status.is_none_or(|s| s == v.status))
                .collect();
            let page = store
                .list(
                    &tenant,
                    &ListQuery {
                        status,
                        limit: 200,
                        cursor: None,
                    },
                )
                .await?;
            assert_eq!(
                page.items.iter().collect::<Vec<_>>(),
                want,
                "{status:?}: in order, bodies whole"
            );
            assert_eq!(page.next_cursor, None);
        }
        let want: Vec<&str> = runs
            .iter()
            .filter(|v| v.status == RunStatus::Completed)
            .map(|v| v.run_id.as_str())
            .collect();
        for limit in [1, 2] {
            let listed = all_pages(&store, &tenant, Some(RunStatus::Completed), limit).await?;
            let got: Vec<&str> = listed.iter().map(|v| v.run_id.as_str()).collect();
            assert_eq!(got, want, "completed, limit {limit}");
        }
        Ok(())
    }

    /// The index trails the table in DynamoDB: a run it still shows in a status its view
    /// has left is not listed under that status.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_an_index_entry_whose_status_the_view_has_left_when_listed_by_that_status_then_the_run_is_left_out(
    ) -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        let store = DynamoStore::new(client.clone(), names.clone());
        let tenant = unique("tenant");
        let mut runs = Vec::new();
        for i in 0..3i64 {
            let v = view(
                &tenant,
                &format!("run-{i}"),
                at(i, 0),
                RunStatus::Running,
                2,
            )?;
            assert!(store.put(&v).await?);
            runs.push(v);
        }
        // Run 1's view says completed while its index item still says running.
        let mut done = runs[1].clone();
        done.status = RunStatus::Completed;
        client
            .update_item()
            .table_name(&names.runs)
            .key("pk", AttributeValue::S(format!("{tenant}#run-1")))
            .update_expression("SET body_z = :body")
            .expression_attribute_values(":body", deflated(&done)?)
            .send()
            .await?;
        let listed = all_pages(&store, &tenant, Some(RunStatus::Running), 1).await?;
        let ids: Vec<&str> = listed.iter().map(|v| v.run_id.as_str()).collect();
        assert_eq!(ids, ["run-2", "run-0"]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_provisioned_tables_when_described_then_stream_indexes_and_ttl_are_as_documented(
    ) -> Result<()> {
        init_logs();
        let (client, names) = aws::fresh_tables().await?;
        // Provisioning again is harmless.
        provision::create_tables(&client, &names).await?;

        let events = client
            .describe_table()
            .table_name(&names.events)
            .send()
            .await?
            .table
            .context("events")?;
        let stream = events.stream_specification.context("a stream")?;
        assert!(stream.stream_enabled);
        assert_eq!(stream.stream_view_type, Some(StreamViewType::NewImage));

        let runs = client
            .describe_table()
            .table_name(&names.runs)
            .send()
            .await?
            .table
            .context("runs")?;
        // One lean index: its keys and `status`, never the body.
        let [index] = runs.global_secondary_indexes() else {
            panic!("one GSI: {:?}", runs.global_secondary_indexes());
        };
        assert_eq!(index.index_name(), Some("by_created"));
        let keys: Vec<&str> = index
            .key_schema()
            .iter()
            .map(|k| k.attribute_name())
            .collect();
        assert_eq!(keys, ["tenant", "created_sk"]);
        let projection = index.projection().context("a projection")?;
        assert_eq!(projection.projection_type(), Some(&ProjectionType::Include));
        assert_eq!(projection.non_key_attributes(), ["status"]);

        let ttl = client
            .describe_time_to_live()
            .table_name(&names.idempotency)
            .send()
            .await?
            .time_to_live_description
            .context("ttl")?;
        assert_eq!(ttl.attribute_name(), Some("expires_at"));
        assert!(matches!(
            ttl.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_missing_tables_when_the_store_is_used_then_it_is_unavailable() -> Result<()> {
        init_logs();
        let store = DynamoStore::new(
            aws::dynamodb_client()?,
            crane::adapters::aws::TableNames::with_prefix(&unique("missing")),
        );
        let result = store.load(&RunKey::new("t", "r")).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "{result:?}"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn given_a_missing_queue_when_dispatching_then_it_is_unavailable() -> Result<()> {
        init_logs();
        let sqs = aws::sqs_client()?;
        let url = format!(
            "{}/{}/{}",
            aws::endpoint(aws::MOTO_ENDPOINT_VAR)?,
            aws::ACCOUNT,
            unique("missing")
        );
        let dispatcher = SqsDispatcher::new(sqs, url);
        let job = StepJob {
            tenant: "t".into(),
            run_id: "r".into(),
            step_id: "s".into(),
            attempt: 1,
            correlation_id: "c".into(),
        };
        let result = dispatcher.dispatch(&[(job, 0)]).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "{result:?}"
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_runs_in_flight_and_just_finished_at_hand() -> Result<()> {
    init_logs();
    let fixture = Stores::sqlite()?;
    contract::events::given_a_run_when_appended_then_its_state_is_at_hand_in_flight_and_as_it_ended(
        fixture.events.clone(),
    )
    .await
}
