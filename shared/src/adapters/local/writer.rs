//! Group commit: one thread owns the SQLite write connection and commits many writes in one
//! transaction.
//!
//! Callers hand a write (a closure over the connection) to the writer through a channel and
//! wait for its answer. The writer takes every write queued at that moment (up to
//! [`MAX_BATCH`]), opens one `BEGIN IMMEDIATE` transaction, runs each write inside its own
//! savepoint (a write that fails is rolled back alone, the others stand) and commits once.
//! A write that can only fail before it changes anything skips the savepoint
//! ([`Writer::write_checked`]: the store's appends and job updates).
//! Only after the commit has returned does any caller get its answer, so an answer still
//! means "durable"; with `synchronous=FULL` the whole batch costs one fsync instead of one
//! per write. Under no load a batch is a single write and nothing waits for company: the
//! latency of a lone write is unchanged.
//!
//! When no write has come for [`IDLE`], the writer runs its idle chores (the store's
//! [`Chores`]: returning free pages to the file system) in short steps, each of which
//! yields to any write that arrives.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::ports::{StoreError, StoreResult};

/// Most writes committed in one transaction. Bounds the latency a write can add to the
/// others of its batch and the size of the WAL growth per commit.
pub const MAX_BATCH: usize = 256;

/// How long the writer waits without a write before it runs its idle chores.
pub const IDLE: Duration = Duration::from_millis(100);

/// Work for the writer when writes pause: one short step per call, on the write connection
/// outside any transaction; `true` while there is more to do.
pub type Chores = fn(&Connection) -> bool;

/// A write queued for the writer thread.
trait Write: Send {
    /// Run the write on the open transaction; `true` when it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Whether the write runs without a savepoint of its own (see [`Writer::write_checked`]).
    fn checked(&self) -> bool;
    /// Answer the caller once the batch's fate is known (`committed` is the commit's result).
    fn answer(self: Box<Self>, committed: &StoreResult<()>);
}

/// Told a write's final result on the writer thread, in commit order, before its caller.
type Hook<T> = Box<dyn FnOnce(&StoreResult<T>) + Send>;

struct Pending<T, F> {
    work: Option<F>,
    checked: bool,
    result: Option<StoreResult<T>>,
    hook: Option<Hook<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Write for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn checked(&self) -> bool {
        self.checked
    }

    fn answer(self: Box<Self>, committed: &StoreResult<()>) {
        let result = match (self.result, committed) {
            (Some(Ok(_)), Err(e)) => Err(e.clone()),
            (Some(r), _) => r,
            (None, Err(e)) => Err(e.clone()),
            (None, Ok(())) => Err(StoreError::unavailable("write was never run")),
        };
        if let Some(hook) = self.hook {
            hook(&result);
        }
        // The caller may have given up waiting (its task was dropped); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// The handle writes are sent through. Cheap to clone; the thread stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Box<dyn Write>>,
}

impl Writer {
    /// Start the writer thread over `conn`, which it owns from now on; `chores` run when
    /// writes pause.
    pub fn start(
        conn: Connection,
        sql_err: fn(rusqlite::Error) -> StoreError,
        chores: Option<Chores>,
    ) -> StoreResult<Self> {
        let (queue, inbox) = mpsc::channel::<Box<dyn Write>>();
        thread::Builder::new()
            .name("crane-sqlite-writer".into())
            .spawn(move || writer_loop(conn, inbox, sql_err, chores))
            .map_err(|e| {
                StoreError::unavailable_from(format!("cannot start the writer thread: {e}"), e)
            })?;
        Ok(Self { queue })
    }

    /// Run `f` in the next batch and answer after that batch has committed. `f` runs inside
    /// an open transaction: it must not begin or commit one itself.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_then(f, None).await
    }

    /// [`Self::write`], calling `hook` with the write's final result (`Ok` only once it
    /// is committed) on the writer thread, in commit order, before the caller hears it.
    /// What the hook keeps therefore follows the database exactly, never ahead of it and
    /// never out of order.
    pub async fn write_then<T, F>(&self, f: F, hook: Option<Hook<T>>) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send(f, hook, false).await
    }

    /// [`Self::write_then`] for a write that fails only before it changes anything (it
    /// reads first, a conflict is found then, and what it writes after cannot conflict):
    /// it runs without a savepoint, which saves SQLite copying every page it touches. If
    /// it fails after changing rows all the same, its whole batch is rolled back and every
    /// write of the batch answers the error.
    pub async fn write_checked<T, F>(&self, f: F, hook: Option<Hook<T>>) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send(f, hook, true).await
    }

    async fn send<T, F>(&self, f: F, hook: Option<Hook<T>>, checked: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            work: Some(f),
            checked,
            result: None,
            hook,
            reply,
        };
        self.queue
            .send(Box::new(pending))
            .map_err(|_| StoreError::unavailable("the sqlite writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("the sqlite writer dropped a write"))?
    }
}

fn writer_loop(
    conn: Connection,
    inbox: mpsc::Receiver<Box<dyn Write>>,
    sql_err: fn(rusqlite::Error) -> StoreError,
    chores: Option<Chores>,
) {
    let mut batch: Vec<Box<dyn Write>> = Vec::with_capacity(MAX_BATCH);
    // Whether writes came since the chores last ran out of work: an idle writer with
    // nothing to tidy blocks without waking up.
    let mut untidy = false;
    loop {
        let first = match chores {
            Some(chores) if untidy => match inbox.recv_timeout(IDLE) {
                Ok(write) => write,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => match tidy(&conn, chores, &inbox) {
                    Some(write) => write,
                    None => {
                        untidy = false;
                        continue;
                    }
                },
            },
            _ => match inbox.recv() {
                Ok(write) => write,
                Err(_) => break,
            },
        };
        untidy = true;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch, sql_err);
        for write in batch.drain(..) {
            write.answer(&committed);
        }
    }
}

/// Run `chores` step by step until they are done (`None`) or a write arrives (returned).
fn tidy(
    conn: &Connection,
    chores: Chores,
    inbox: &mpsc::Receiver<Box<dyn Write>>,
) -> Option<Box<dyn Write>> {
    while chores(conn) {
        if let Ok(write) = inbox.try_recv() {
            return Some(write);
        }
    }
    inbox.try_recv().ok()
}

/// One transaction for the whole batch, one savepoint per write but checked ones.
fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Write>],
    sql_err: fn(rusqlite::Error) -> StoreError,
) -> StoreResult<()> {
    // Prepared once and reused: parsing these five statements again for every write was
    // a tenth of the writer's time.
    let run = |sql: &str| -> StoreResult<()> {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(|_| ())
            .map_err(sql_err)
    };
    run("BEGIN IMMEDIATE")?;
    let outcome = (|| {
        for write in batch.iter_mut() {
            if write.checked() {
                let before = conn.total_changes();
                if !write.run(conn) && conn.total_changes() != before {
                    return Err(StoreError::unavailable(
                        "a write failed after changing rows: its batch is rolled back",
                    ));
                }
                continue;
            }
            run("SAVEPOINT write")?;
            if !write.run(conn) {
                run("ROLLBACK TO write")?;
            }
            run("RELEASE write")?;
        }
        run("COMMIT")
    })();
    if outcome.is_err() && !conn.is_autocommit() {
        // The transaction is still open (a savepoint or the commit itself failed): undo it
        // all, so every write of the batch reports the failure and none of it is kept.
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql_err(e: rusqlite::Error) -> StoreError {
        StoreError::unavailable(e.to_string())
    }

    fn writer() -> (Writer, tempfile_path::Path) {
        writer_with(None)
    }

    fn writer_with(chores: Option<Chores>) -> (Writer, tempfile_path::Path) {
        let path = tempfile_path::Path::new();
        let conn = Connection::open(&path.0).expect("open");
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .expect("schema");
        (Writer::start(conn, sql_err, chores).expect("start"), path)
    }

    mod tempfile_path {
        pub struct Path(pub std::path::PathBuf);
        impl Path {
            pub fn new() -> Self {
                Self(std::env::temp_dir().join(format!("crane-writer-{}.db", uuid::Uuid::new_v4())))
            }
        }
        impl Drop for Path {
            fn drop(&mut self) {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
                }
            }
        }
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .expect("open")
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_many_concurrent_writes_when_batched_then_each_is_answered_after_its_commit() {
        let (writer, path) = writer();
        let tasks: Vec<_> = (0..500)
            .map(|k| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(move |c| {
                            c.execute("INSERT INTO t (k) VALUES (?1)", [k])
                                .map_err(sql_err)
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("join"), Ok(1));
        }
        // Every answered write is visible to a fresh connection: it was committed first.
        assert_eq!(count(&path.0), 500);
    }

    #[tokio::test]
    async fn given_a_failing_write_in_a_batch_then_only_it_is_undone() {
        let (writer, path) = writer();
        let ok = writer.write(|c| {
            c.execute("INSERT INTO t (k) VALUES (1)", [])
                .map_err(sql_err)
        });
        // Writes one row, then fails: its row must not survive.
        let bad = writer.write(|c| {
            c.execute("INSERT INTO t (k) VALUES (2)", [])
                .map_err(sql_err)?;
            c.execute("INSERT INTO t (k) VALUES (1)", [])
                .map_err(sql_err)
        });
        let also_ok = writer.write(|c| {
            c.execute("INSERT INTO t (k) VALUES (3)", [])
                .map_err(sql_err)
        });
        let (ok, bad, also_ok) = tokio::join!(ok, bad, also_ok);
        assert_eq!(ok, Ok(1));
        assert!(bad.is_err(), "the duplicate key must fail: {bad:?}");
        assert_eq!(also_ok, Ok(1));
        assert_eq!(keys(&path), vec![1, 3]);
    }

    fn keys(path: &tempfile_path::Path) -> Vec<i64> {
        Connection::open(&path.0)
            .expect("open")
            .prepare("SELECT k FROM t ORDER BY k")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn insert(c: &Connection, k: i64) -> StoreResult<usize> {
        c.execute("INSERT INTO t (k) VALUES (?1)", [k])
            .map_err(sql_err)
    }

    #[tokio::test]
    async fn given_a_checked_write_that_fails_before_changing_anything_then_the_others_stand() {
        let (writer, path) = writer();
        let ok = writer.write(|c| insert(c, 1));
        let refused = writer.write_checked(
            |c| {
                let n: i64 = c
                    .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .map_err(sql_err)?;
                Err::<usize, _>(StoreError::Conflict(format!("{n} rows: refused")))
            },
            None,
        );
        let checked_ok = writer.write_checked(|c| insert(c, 2), None);
        let (ok, refused, checked_ok) = tokio::join!(ok, refused, checked_ok);
        assert_eq!(ok, Ok(1));
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(checked_ok, Ok(1));
        assert_eq!(keys(&path), vec![1, 2]);
    }

    #[tokio::test]
    async fn given_a_checked_write_that_fails_after_changing_rows_then_its_whole_batch_is_undone() {
        let (writer, path) = writer();
        // Hold the writer in a batch of its own until the next three writes are queued, so
        // that they make one batch.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let mut first = Box::pin(writer.write(move |c| {
            let _ = started_tx.send(());
            let _ = go_rx.recv_timeout(Duration::from_secs(60));
            insert(c, 1)
        }));
        assert!(futures::poll!(&mut first).is_pending());
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .expect("join")
            .expect("the first write runs");
        let mut ok = Box::pin(writer.write(|c| insert(c, 10)));
        let mut bad = Box::pin(writer.write_checked(
            |c| {
                insert(c, 11)?;
                Err::<usize, _>(StoreError::Invalid("fails after writing".into()))
            },
            None,
        ));
        let mut after = Box::pin(writer.write(|c| insert(c, 12)));
        assert!(futures::poll!(&mut ok).is_pending());
        assert!(futures::poll!(&mut bad).is_pending());
        assert!(futures::poll!(&mut after).is_pending());
        go_tx.send(()).expect("the first write waits");
        let (first, ok, bad, after) = tokio::join!(first, ok, bad, after);
        assert_eq!(first, Ok(1), "the batch before stands");
        assert!(ok.is_err(), "rolled back with its batch: {ok:?}");
        assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
        assert!(after.is_err(), "rolled back with its batch: {after:?}");
        assert_eq!(keys(&path), vec![1], "nothing of the batch is kept");
        assert_eq!(
            writer.write(|c| insert(c, 13)).await,
            Ok(1),
            "the writer goes on"
        );
        assert_eq!(keys(&path), vec![1, 13]);
    }

    #[tokio::test]
    async fn given_a_write_that_ends_the_transaction_then_its_batch_fails_and_the_writer_recovers()
    {
        let (writer, path) = writer();
        // A write must not commit by itself; if one does, the savepoint release fails and
        // the caller hears about it instead of getting a false "durable".
        let rogue = writer
            .write(|c| c.execute_batch("COMMIT").map_err(sql_err))
            .await;
        assert!(rogue.is_err(), "{rogue:?}");
        let after = writer
            .write(|c| {
                c.execute("INSERT INTO t (k) VALUES (7)", [])
                    .map_err(sql_err)
            })
            .await;
        assert_eq!(after, Ok(1));
        assert_eq!(count(&path.0), 1);
    }

    /// Steps the chore below has taken; it has work for five steps after each write.
    static CHORE_STEPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn five_step_chore(conn: &Connection) -> bool {
        use std::sync::atomic::Ordering;
        // Outside any transaction, on the write connection: it may write.
        assert!(conn.is_autocommit());
        let done = CHORE_STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        !done.is_multiple_of(5)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_chores_when_writes_pause_then_they_run_to_the_end_once_per_pause() {
        use std::sync::atomic::Ordering;
        let (writer, _path) = writer_with(Some(five_step_chore));
        let wait_for = |n: usize| async move {
            for _ in 0..200 {
                if CHORE_STEPS.load(Ordering::SeqCst) >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        tokio::time::sleep(IDLE * 3).await;
        assert_eq!(
            CHORE_STEPS.load(Ordering::SeqCst),
            0,
            "no write, nothing to tidy"
        );
        for round in 1..=2 {
            writer
                .write(move |c| {
                    c.execute("INSERT INTO t (k) VALUES (?1)", [round])
                        .map_err(sql_err)
                })
                .await
                .expect("write");
            wait_for(5 * round).await;
            tokio::time::sleep(IDLE * 3).await;
            assert_eq!(
                CHORE_STEPS.load(Ordering::SeqCst),
                5 * round,
                "round {round}: the chore ran to its end once, then the writer slept"
            );
        }
    }

    /// Steps of a slow chore: ten steps of 100 ms after each write.
    static SLOW_STEPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn slow_chore(_: &Connection) -> bool {
        std::thread::sleep(Duration::from_millis(100));
        let done = SLOW_STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        !done.is_multiple_of(10)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_a_write_during_chores_then_it_is_served_between_two_steps() {
        use std::sync::atomic::Ordering;
        let (writer, path) = writer_with(Some(slow_chore));
        let insert = |k: i64| {
            writer.write(move |c| {
                c.execute("INSERT INTO t (k) VALUES (?1)", [k])
                    .map_err(sql_err)
            })
        };
        insert(1).await.expect("first write");
        for _ in 0..400 {
            if SLOW_STEPS.load(Ordering::SeqCst) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(SLOW_STEPS.load(Ordering::SeqCst) >= 1, "the chores began");
        insert(2).await.expect("a write during the chores");
        let steps = SLOW_STEPS.load(Ordering::SeqCst);
        assert!(
            steps < 10,
            "answered after {steps} of the 10 steps, not after all of them"
        );
        assert_eq!(count(&path.0), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_hooks_when_writes_commit_then_each_sees_its_result_in_commit_order() {
        let (writer, _path) = writer();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..200i64)
            .map(|k| {
                let (writer, seen) = (writer.clone(), seen.clone());
                tokio::spawn(async move {
                    let hook: Hook<i64> = Box::new(move |r: &StoreResult<i64>| {
                        seen.lock().expect("lock").push(r.clone());
                    });
                    writer
                        .write_then(
                            move |c| {
                                // Even keys fail; odd ones return the row count so far, which
                                // grows by one per committed write.
                                if k % 2 == 0 {
                                    return Err(StoreError::Conflict(format!("{k}")));
                                }
                                c.execute("INSERT INTO t (k) VALUES (?1)", [k])
                                    .map_err(sql_err)?;
                                c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                                    .map_err(sql_err)
                            },
                            Some(hook),
                        )
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").ok();
        }
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 200, "every write's hook ran once");
        let counts: Vec<i64> = seen
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(counts, (1..=100).collect::<Vec<_>>(), "in commit order");
    }
}
