//! The relay never speaks HTTP/2. The `h2` crate is in the build only because awc (the CLI's and
//! the load generator's HTTP client) depends on it; actix-web is built without its `http2` feature,
//! so no listener answers HTTP/2, and the clients are pinned to HTTP/1.1. deny.toml's ignore of
//! RUSTSEC-2026-0258 (h2) rests on these tests.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app;

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4), then an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[actix_rt::test]
async fn an_http2_prior_knowledge_preface_is_answered_as_http1_and_never_as_http2() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    let mut answer = Vec::new();
    // The relay answers and closes; read until it does (bounded, so a hang fails the test).
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the relay closes the connection")
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 400"),
        "an HTTP/2 preface must get an HTTP/1.1 400 (an HTTP/2 server answers with a SETTINGS frame), got {text:?}"
    );
}

#[actix_rt::test]
async fn an_upgrade_to_h2c_is_not_taken() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let request = format!(
        "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        app.port
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut head))
        .await
        .expect("the relay answers")
        .unwrap();
    let text = String::from_utf8_lossy(&head[..n]);
    assert!(
        !text.starts_with("HTTP/1.1 101"),
        "h2c upgrade was accepted: {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 "),
        "not an HTTP/1.1 answer: {text:?}"
    );
}
