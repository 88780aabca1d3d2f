//! The embedded store's reading connections, each owned by a thread of its own for the
//! store's life, which takes the next read from one queue shared by all of them.
//!
//! Reads went through tokio's blocking pool before: its threads come and go (one is
//! started whenever none is idle and ends after 10 s without work), and each new thread
//! began its own heaps in both allocators (mimalloc's for Rust, glibc's arenas for SQLite),
//! so the process's memory moved with how many had come and gone. A fixed set of threads
//! keeps that flat, and a read waits for any idle connection, not for one picked in turn.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::ports::{StoreError, StoreResult};

/// A read, run on one of the connections.
type Read = Box<dyn FnOnce(&Connection) + Send>;

/// The queue of reads in front of the reading threads. Cheap to clone; the threads end
/// once the last clone is dropped (after the reads already queued).
#[derive(Clone)]
pub(crate) struct Readers {
    queue: Sender<Read>,
}

impl Readers {
    /// Starts one thread per connection.
    pub(crate) fn start(connections: Vec<Connection>) -> StoreResult<Self> {
        let (queue, inbox) = mpsc::channel::<Read>();
        let inbox = Arc::new(Mutex::new(inbox));
        for (i, conn) in connections.into_iter().enumerate() {
            let inbox = inbox.clone();
            thread::Builder::new()
                .name(format!("crane-sqlite-r{i}"))
                .spawn(move || reader_loop(&conn, &inbox))
                .map_err(|e| {
                    StoreError::unavailable_from(format!("cannot start a reader thread: {e}"), e)
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `f` on the first connection free and answers what it returns.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Box::new(move |conn: &Connection| {
                // The caller may have gone (its request was cancelled): nothing to tell.
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| gone())?;
        // No answer: the read panicked (its thread goes on with the next one).
        answer.await.map_err(|_| {
            StoreError::unavailable("a read of the embedded store failed without an answer")
        })?
    }
}

/// A reader thread's whole life: the next read, until the queue is closed.
fn reader_loop(conn: &Connection, inbox: &Mutex<Receiver<Read>>) {
    loop {
        // The lock is held only while waiting for the next read, never while running it.
        let next = match inbox.lock() {
            Ok(inbox) => inbox.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match next {
            // A read that panics loses its answer, not the connection: under the blocking
            // pool the panic ended only that task, and here a thread lost would be lost for
            // the store's life. The connection holds no state between reads.
            Ok(read) => {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| read(conn)));
            }
            Err(mpsc::RecvError) => return,
        }
    }
}

fn gone() -> StoreError {
    StoreError::unavailable("the store's reader threads have stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers(n: usize) -> Readers {
        let conns = (0..n)
            .map(|_| Connection::open_in_memory().expect("opens"))
            .collect();
        Readers::start(conns).expect("starts")
    }

    #[tokio::test]
    async fn given_reads_when_run_then_each_answers_its_own_result() {
        let r = readers(2);
        let answers = futures::future::join_all((0..50i64).map(|i| {
            r.read(move |c| {
                c.query_row("SELECT ?1 * 2", [i], |row| row.get::<_, i64>(0))
                    .map_err(|e| StoreError::unavailable(e.to_string()))
            })
        }))
        .await;
        let got: Vec<i64> = answers.into_iter().map(|a| a.expect("read")).collect();
        assert_eq!(got, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn given_a_read_that_fails_when_run_then_its_error_is_answered_and_others_go_on() {
        let r = readers(1);
        let err = r
            .read(|_| Err::<(), _>(StoreError::Conflict("no".into())))
            .await
            .expect_err("fails");
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m == "no"),
            "{err:?}"
        );
        assert_eq!(r.read(|_| Ok(7)).await.expect("reads"), 7);
    }

    #[tokio::test]
    async fn given_a_read_that_panics_when_run_then_it_answers_an_error_and_its_connection_stays() {
        let r = readers(1);
        let err = r
            .read(|_| -> StoreResult<()> { panic!("a bug in a read") })
            .await
            .expect_err("no answer");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert_eq!(
            r.read(|_| Ok(7))
                .await
                .expect("the one connection still reads"),
            7
        );
    }

    #[tokio::test]
    async fn given_one_read_holding_a_connection_when_another_comes_then_a_free_one_takes_it() {
        let r = readers(2);
        let (started, is_started) = oneshot::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow = tokio::spawn({
            let r = r.clone();
            async move {
                r.read(move |_| {
                    let _ = started.send(());
                    released.recv().ok();
                    Ok(1)
                })
                .await
            }
        });
        is_started.await.expect("the slow read starts");
        // Answers while the first read still holds its connection (on one connection it
        // would wait for the release, which comes only after).
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), r.read(|_| Ok(2)))
            .await
            .expect("a second read waited for the first one's connection");
        assert_eq!(second.expect("reads"), 2);
        release.send(()).expect("the slow read waits");
        assert_eq!(slow.await.expect("joins").expect("reads"), 1);
    }

    #[test]
    fn given_the_queue_closed_when_a_reader_waits_then_it_runs_what_is_queued_and_ends() {
        let (queue, inbox) = mpsc::channel::<Read>();
        let (ran, runs) = mpsc::channel::<i32>();
        for i in 0..3 {
            let ran = ran.clone();
            queue
                .send(Box::new(move |_: &Connection| ran.send(i).expect("told")))
                .expect("queued");
        }
        drop(queue);
        let (ended, has_ended) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let conn = Connection::open_in_memory().expect("opens");
            reader_loop(&conn, &Mutex::new(inbox));
            let _ = ended.send(());
        });
        has_ended
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the reader ends once its queue is closed");
        drop(ran);
        assert_eq!(runs.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
