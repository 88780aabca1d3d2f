//! Helpers for end-to-end tests of the local runtime: start `crane-local` in process on
//! `127.0.0.1:0` over a fresh database, and drive it over HTTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crane::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::logs::init_logs;
use crate::names::unique;

/// A fresh database path under the system temp dir.
pub fn temp_db() -> PathBuf {
    std::env::temp_dir().join(format!("{}.db", unique("crane-test")))
}

/// A running local runtime.
pub struct LocalServer {
    pub base: String,
    pub db: PathBuf,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Test defaults: fast retries so failures settle in milliseconds.
pub fn test_config() -> Config {
    let defaults = Config::default();
    let mut settings = defaults.settings;
    settings.retry.base_ms = 20;
    settings.compensation_retry.base_ms = 20;
    Config {
        db: temp_db(),
        settings,
        ..defaults
    }
}

impl LocalServer {
    pub async fn start(config: Config) -> LocalServer {
        init_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let db = config.db.clone();
        let task = tokio::spawn(crane_local::run(listener, config, async move {
            let _ = rx.await;
        }));
        let server = LocalServer {
            base: format!("http://{addr}"),
            db,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        };
        server.wait_healthy().await;
        server
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> LocalServer {
        let mut c = test_config();
        tweak(&mut c);
        LocalServer::start(c).await
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("crane-local did not become healthy at {}", self.base);
    }

    /// The address the server listens on (`127.0.0.1:port`).
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Open a raw TCP connection to the server.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr()).await.expect("connect")
    }

    /// Send `request` as raw bytes on a new connection and read the answer until the server
    /// closes it (send `Connection: close`) or `within` passes.
    pub async fn raw(&self, request: &[u8], within: Duration) -> RawReply {
        let mut stream = self.connect().await;
        stream.write_all(request).await.expect("write");
        RawReply::read(&mut stream, within).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A client presenting `key` as `Authorization: Bearer`.
    pub fn caller(&self, key: &str) -> Caller {
        Caller {
            base: self.base.clone(),
            http: self.http.clone(),
            key: Some(key.to_owned()),
        }
    }

    /// A client presenting no credentials (development mode).
    pub fn anonymous(&self) -> Caller {
        Caller {
            base: self.base.clone(),
            http: self.http.clone(),
            key: None,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.anonymous().get(path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.anonymous().post(path, body).await
    }

    /// `POST /runs`; panics unless it is created.
    pub async fn create_run(&self, prompt: &str) -> Value {
        self.anonymous().create_run(prompt).await
    }

    /// Poll `GET /runs/{id}` until `done(run)` holds, or panic after `within`.
    pub async fn wait_until(
        &self,
        run_id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.anonymous().wait_until(run_id, within, done).await
    }

    /// Wait until the run reaches one of the statuses where nothing more happens.
    pub async fn wait_settled(&self, run_id: &str) -> Value {
        self.anonymous().wait_settled(run_id).await
    }

    /// [`LocalServer::wait_settled`], waiting at most `within`.
    pub async fn wait_settled_within(&self, run_id: &str, within: Duration) -> Value {
        self.anonymous().wait_settled_within(run_id, within).await
    }

    /// Run a prompt to its end.
    pub async fn run_prompt(&self, prompt: &str) -> Value {
        self.anonymous().run_prompt(prompt).await
    }

    pub async fn todos(&self) -> Vec<Value> {
        self.anonymous().todos().await
    }

    /// Graceful shutdown; waits for the server task.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("crane-local did not stop cleanly: {other:?}"),
            }
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A client of a running server, presenting an API key or none.
#[derive(Clone)]
pub struct Caller {
    pub base: String,
    pub http: reqwest::Client,
    key: Option<String>,
}

impl Caller {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request to `path` with this caller's credentials.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST /runs`; panics unless it is created.
    pub async fn create_run(&self, prompt: &str) -> Value {
        let (status, body) = self
            .post("/runs", serde_json::json!({"prompt": prompt}))
            .await;
        assert_eq!(status, 201, "POST /runs {prompt:?} -> {body}");
        body
    }

    /// Poll `GET /runs/{id}` until `done(run)` holds, or panic after `within`.
    pub async fn wait_until(
        &self,
        run_id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (status, run) = self.get(&format!("/runs/{run_id}")).await;
            if status == 200 && done(&run) {
                return run;
            }
            last = run;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {run_id} did not reach the expected state in {within:?}; last seen: {last:#}");
    }

    /// Wait until the run reaches one of the statuses where nothing more happens.
    pub async fn wait_settled(&self, run_id: &str) -> Value {
        self.wait_settled_within(run_id, Duration::from_secs(30))
            .await
    }

    /// [`Caller::wait_settled`], waiting at most `within`. A `failed` run that still
    /// has completed steps to undo is not settled: its saga is about to start.
    pub async fn wait_settled_within(&self, run_id: &str, within: Duration) -> Value {
        self.wait_until(run_id, within, |r| match r["status"].as_str() {
            Some("completed" | "compensated" | "compensation_failed" | "cancelled") => true,
            Some("failed") => !awaits_compensation(r),
            _ => false,
        })
        .await
    }

    /// Run a prompt to its end.
    pub async fn run_prompt(&self, prompt: &str) -> Value {
        let created = self.create_run(prompt).await;
        let id = created["run_id"].as_str().expect("run_id").to_owned();
        self.wait_settled(&id).await
    }

    pub async fn todos(&self) -> Vec<Value> {
        let (_, body) = self.get("/todos").await;
        body["todos"].as_array().cloned().unwrap_or_default()
    }
}

/// Whether a run view has a completed step with a compensation (a todo change), which a
/// saga will undo.
pub fn awaits_compensation(run: &Value) -> bool {
    let plan = run["plan"]["steps"].as_array().cloned().unwrap_or_default();
    run["steps"].as_array().is_some_and(|steps| {
        steps.iter().any(|s| {
            s["status"] == "completed"
                && plan.iter().any(|p| {
                    p["id"] == s["id"]
                        && p["tool"] == "todo"
                        && matches!(
                            p["input"]["action"].as_str(),
                            Some("add" | "complete" | "delete" | "reopen")
                        )
                })
        })
    })
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    /// The status code, 0 if no status line arrived.
    pub status: u16,
    /// Everything read.
    pub text: String,
    /// The JSON body, `Null` if it is not JSON.
    pub body: Value,
    /// The server closed the connection (rather than `within` passing).
    pub closed: bool,
}

impl RawReply {
    /// Read from `stream` until the server closes it or `within` passes.
    pub async fn read(stream: &mut TcpStream, within: Duration) -> RawReply {
        Self::read_until(stream, within, |_| false).await
    }

    /// Read one whole response (with a `Content-Length`) from a kept-alive `stream`, or what
    /// arrived until the server closed it or `within` passed.
    pub async fn read_response(stream: &mut TcpStream, within: Duration) -> RawReply {
        Self::read_until(stream, within, |buf| {
            let text = String::from_utf8_lossy(buf);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                return false;
            };
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            length.is_some_and(|n| body.len() >= n)
        })
        .await
    }

    async fn read_until(
        stream: &mut TcpStream,
        within: Duration,
        complete: impl Fn(&[u8]) -> bool,
    ) -> RawReply {
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0_u8; 4096];
        let closed = loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if complete(&buf) {
                        break false;
                    }
                }
                Err(_) => break false,
            }
        };
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or(Value::Null);
        RawReply {
            status,
            text,
            body,
            closed,
        }
    }
}
