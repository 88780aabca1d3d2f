//! The HTTP/1.1 server of the local runtime: hyper connections under limits, so a slow or
//! silent client is dropped and cannot starve the others.
//!
//! - A request's head must be complete within the header timeout of its first byte (of
//!   the connection's opening, for the first request): partial headers are cut off.
//! - A request body must arrive within the body timeout (the router's deadline, 408).
//! - A connection with no request under way and no bytes moving for the idle timeout is
//!   closed (this also drops a client that stops reading a response).
//! - A request is under way until its handler answers, however long that takes (a
//!   long-poll waits up to 20 s, `Prefer: wait` up to 25 s). An event stream
//!   (`text/event-stream`) is under way until its body ends: never idle, never evicted,
//!   but closed when no bytes have moved for [`STREAM_STALL`] (it sends a keep-alive every
//!   15 s, so only a client that stopped reading stalls it).
//! - At most `max_connections` are open; at the limit, the connection idle the longest is
//!   closed to admit the new one, so a flood of silent connections cannot lock out
//!   `/health`. Connections all busy with requests make new ones wait in the backlog.
//!
//! On shutdown the server stops accepting, lets requests under way finish (keep-alive
//! connections close after their response) and gives up on stragglers after a drain period.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::Response;
use axum::Router;
use crane::config::HttpConfig;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// How long shutdown waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);
/// An event stream is closed when no bytes have moved for this long (or the idle timeout,
/// if longer): three of its keep-alive intervals.
pub const STREAM_STALL: Duration = Duration::from_secs(45);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connection limits (from [`HttpConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl From<&HttpConfig> for Limits {
    fn from(c: &HttpConfig) -> Self {
        Self {
            header_timeout: Duration::from_millis(c.header_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            max_connections: c.max_connections.max(1),
        }
    }
}

/// What one connection is doing, shared by its I/O, its requests and its watchdog.
struct Conn {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_io: AtomicU64,
    /// Milliseconds since `epoch` + 1 when the head of the next request began; 0 if none
    /// is arriving.
    head_since: AtomicU64,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Event streams being sent (answered, body still open).
    streaming: AtomicUsize,
    /// Told to close (evicted to admit a new connection).
    close: Notify,
}

impl Conn {
    fn new(epoch: Instant) -> Self {
        let now = ms_since(epoch);
        Self {
            epoch,
            last_io: AtomicU64::new(now),
            // A new connection is expected to send a request: its header clock runs.
            head_since: AtomicU64::new(now + 1),
            in_flight: AtomicUsize::new(0),
            streaming: AtomicUsize::new(0),
            close: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        ms_since(self.epoch)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// Whether nothing is being answered or streamed (the connection may be evicted).
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.streaming.load(Ordering::Acquire) == 0
    }

    /// Why the connection must close now, or when to look again.
    fn check(&self, limits: &Limits) -> Result<Instant, &'static str> {
        let now = self.now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The handler's own limits and the body deadline apply; look again later.
            return Ok(self.epoch + Duration::from_millis(now) + limits.idle_timeout);
        }
        if self.streaming.load(Ordering::Acquire) > 0 {
            let stall = as_ms(limits.idle_timeout.max(STREAM_STALL));
            let stalled_at = self.last_io.load(Ordering::Relaxed) + stall;
            if now >= stalled_at {
                return Err("event stream stalled");
            }
            return Ok(self.epoch + Duration::from_millis(stalled_at));
        }
        let idle_until = self.last_io.load(Ordering::Relaxed) + as_ms(limits.idle_timeout);
        let mut next = idle_until;
        if now >= idle_until {
            return Err("idle timeout");
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != 0 {
            let head_until = head - 1 + as_ms(limits.header_timeout);
            if now >= head_until {
                return Err("header timeout");
            }
            next = next.min(head_until);
        }
        Ok(self.epoch + Duration::from_millis(next))
    }
}

fn ms_since(epoch: Instant) -> u64 {
    as_ms(epoch.elapsed())
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Marks a request under way for as long as it is being answered.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn enter(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_since.store(0, Ordering::Release);
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks an event stream under way for as long as its body is open.
struct Streaming(Arc<Conn>);

impl Streaming {
    fn enter(conn: Arc<Conn>) -> Self {
        conn.streaming.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.streaming.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked as streaming until it ends.
struct StreamBody {
    inner: Body,
    _streaming: Streaming,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn is_event_stream(resp: &Response<Body>) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A TCP stream that records its traffic on its [`Conn`].
struct Tracked {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The open connections, for eviction.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn add(&self, conn: Arc<Conn>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tell the connection idle the longest to close; false if every one is busy.
    fn evict_idlest(&self) -> bool {
        let open = self.lock();
        let idlest = open
            .values()
            .filter(|c| c.is_idle())
            .min_by_key(|c| c.last_io.load(Ordering::Relaxed));
        match idlest {
            Some(conn) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serve `router` on `listener` under `limits` until `shutdown` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let epoch = Instant::now();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let evicted = registry.evict_idlest();
                debug!(%peer, evicted, "connection limit reached");
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let conn = Arc::new(Conn::new(epoch));
        let id = registry.add(conn.clone());
        let (router, registry, drain) = (router.clone(), registry.clone(), drain_rx.clone());
        tasks.spawn(async move {
            serve_connection(stream, conn, router, limits, drain).await;
            registry.remove(id);
            drop(permit);
        });
    }
    info!(connections = tasks.len(), "no longer accepting connections");
    let _ = drain_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            connections = tasks.len(),
            "shutdown: closing connections still busy"
        );
        tasks.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    router: Router,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Tracked {
        stream,
        conn: conn.clone(),
    });
    let requests = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let conn = requests.clone();
        let guard = InFlight::enter(conn.clone());
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await;
            let resp = resp.map(|resp| {
                if is_event_stream(&resp) {
                    let streaming = Streaming::enter(conn);
                    resp.map(|inner| {
                        Body::new(StreamBody {
                            inner,
                            _streaming: streaming,
                        })
                    })
                } else {
                    resp
                }
            });
            drop(guard);
            resp
        }
    });
    let connection = http1::Builder::new()
        // The watchdog below enforces the header timeout from the first byte.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = *drain.borrow();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        let wake = match conn.check(&limits) {
            Ok(at) => at,
            Err(reason) => {
                debug!(reason, "closing connection");
                return;
            }
        };
        tokio::select! {
            done = connection.as_mut() => {
                if let Err(e) = done {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {}
            () = conn.close.notified() => {
                debug!("closing an idle connection to admit a new one");
                return;
            }
            changed = drain.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
