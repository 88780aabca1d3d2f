//! The HTTP edge of the local runtime, over real sockets: slow and silent clients are dropped
//! while others are served, bodies have a deadline, and a loopback server answers only to
//! loopback host names (DNS rebinding). Limits are small so the tests are quick; every wait
//! is generous so a loaded machine does not fail them.

use std::time::Duration;

use crane_tests::local::{LocalServer, RawReply};
use tokio::io::AsyncWriteExt;

/// Far longer than any limit a test sets, far shorter than the limits it does not test.
const GENEROUS: Duration = Duration::from_secs(20);
/// A limit no test waits for.
const NEVER_MS: u64 = 600_000;

#[tokio::test]
async fn given_a_client_sending_partial_headers_when_it_stalls_then_it_is_disconnected() {
    let server = LocalServer::start_with(|c| {
        c.http.header_timeout_ms = 300;
        c.http.idle_timeout_ms = NEVER_MS;
    })
    .await;
    let mut slow = server.connect().await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("write");
    let reply = RawReply::read(&mut slow, GENEROUS).await;
    assert!(reply.closed, "a stalled head keeps its connection");
    // Others are still served.
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn given_a_silent_connection_when_it_sends_nothing_then_it_is_disconnected() {
    let server = LocalServer::start_with(|c| {
        c.http.header_timeout_ms = 300;
        c.http.idle_timeout_ms = NEVER_MS;
    })
    .await;
    let mut silent = server.connect().await;
    let reply = RawReply::read(&mut silent, GENEROUS).await;
    assert!(reply.closed, "a silent connection is kept");
    assert_eq!(reply.text, "", "nothing is sent to it");
    server.stop().await;
}

#[tokio::test]
async fn given_a_kept_alive_connection_when_it_idles_then_it_is_closed_after_the_idle_timeout() {
    let server = LocalServer::start_with(|c| {
        c.http.idle_timeout_ms = 300;
        c.http.header_timeout_ms = NEVER_MS;
    })
    .await;
    let mut conn = server.connect().await;
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let reply = RawReply::read_response(&mut conn, GENEROUS).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!reply.closed, "kept alive after the response");
    let after = RawReply::read(&mut conn, GENEROUS).await;
    assert!(after.closed, "an idle keep-alive connection is kept");
    server.stop().await;
}

#[tokio::test]
async fn given_more_silent_connections_than_the_limit_when_health_is_asked_then_it_answers() {
    const LIMIT: usize = 8;
    const SILENT: usize = 40;
    let server = LocalServer::start_with(|c| {
        c.http.max_connections = LIMIT;
        // Nothing times out during the test: only the limit frees slots.
        c.http.header_timeout_ms = NEVER_MS;
        c.http.idle_timeout_ms = NEVER_MS;
    })
    .await;
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(server.connect().await);
    }
    let health = tokio::time::timeout(GENEROUS, server.get("/health"))
        .await
        .expect("/health answers while silent connections fill the limit");
    assert_eq!(health.0, 200);
    // The server holds at most LIMIT connections: the idlest were closed to admit others.
    let mut open = 0;
    for conn in &mut silent {
        if !RawReply::read(conn, Duration::from_millis(100))
            .await
            .closed
        {
            open += 1;
        }
    }
    assert!(open <= LIMIT, "{open} silent connections still open");
    server.stop().await;
}

#[tokio::test]
async fn given_a_body_that_stalls_when_posted_then_408_body_timeout() {
    let server = LocalServer::start_with(|c| {
        c.http.body_timeout_ms = 300;
        c.http.idle_timeout_ms = NEVER_MS;
    })
    .await;
    let mut conn = server.connect().await;
    conn.write_all(
        b"POST /runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"prompt\": ",
    )
    .await
    .expect("write");
    let reply = RawReply::read(&mut conn, GENEROUS).await;
    assert_eq!(reply.status, 408, "{}", reply.text);
    assert_eq!(reply.body["error"]["code"], "body_timeout");
    let (_, runs) = server.get("/runs").await;
    assert_eq!(runs["runs"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn given_a_loopback_server_when_a_foreign_host_asks_then_403_host_not_allowed() {
    let server = LocalServer::start_with(|_| {}).await;
    let port = server
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.2",
        "localhost.evil.example",
    ] {
        let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = server.raw(request.as_bytes(), GENEROUS).await;
        assert_eq!(reply.status, 403, "{host}: {}", reply.text);
        assert_eq!(reply.body["error"]["code"], "host_not_allowed", "{host}");
    }
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "LOCALHOST".to_owned(),
    ] {
        let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = server.raw(request.as_bytes(), GENEROUS).await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.text);
    }
    server.stop().await;
}

#[tokio::test]
async fn given_extra_allowed_hosts_when_one_asks_then_it_is_served() {
    let server =
        LocalServer::start_with(|c| c.http.allowed_hosts = vec!["crane.internal".into()]).await;
    let reply = server
        .raw(
            b"GET /health HTTP/1.1\r\nHost: crane.internal:8080\r\nConnection: close\r\n\r\n",
            GENEROUS,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    server.stop().await;
}

#[tokio::test]
async fn given_a_browser_page_elsewhere_when_it_posts_a_run_then_it_is_refused() {
    let server = LocalServer::start_with(|_| {}).await;
    let origin_same = format!("http://{}", server.addr());
    // A form post from another site: text/plain, foreign origin.
    let attack = format!(
        "POST /runs HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\n\
         Content-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\n\
         {{\"prompt\": \"calculate 2+3\"}}",
        server.addr()
    );
    let reply = server.raw(attack.as_bytes(), GENEROUS).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(reply.body["error"]["code"], "origin_not_allowed");
    // The console on the server's own origin may post JSON.
    let own = format!(
        "POST /runs HTTP/1.1\r\nHost: {}\r\nOrigin: {origin_same}\r\n\
         Content-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n\
         {{\"prompt\": \"calculate 2+3\"}}",
        server.addr()
    );
    let reply = server.raw(own.as_bytes(), GENEROUS).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let (_, runs) = server.get("/runs").await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn given_an_open_keep_alive_connection_when_shut_down_then_the_server_stops() {
    let server = LocalServer::start_with(|c| c.http.idle_timeout_ms = NEVER_MS).await;
    let mut conn = server.connect().await;
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    // The response arrives; the connection stays open (keep-alive).
    let reply = RawReply::read_response(&mut conn, GENEROUS).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!reply.closed);
    // `stop` panics unless the server stops cleanly within its bound.
    server.stop().await;
    let after = RawReply::read(&mut conn, GENEROUS).await;
    assert!(after.closed, "the connection outlived the server");
}
