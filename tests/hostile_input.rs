//! Hostile input against a real registry listener on loopback: slow and
//! oversized request heads, long URLs, too many connections, too many
//! requests at once, and garbage bytes. Each is refused fast (or cut), the
//! refusal is counted, and the node keeps serving everyone else.
//!
//! Raw TCP clients speak the bytes an attacker would; every read is bounded
//! by a generous guard so a regression fails instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;
#[path = "support/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use images::{add_image, layer_bytes};
use node::{NodeOptions, TestNode, blob_path, get, request};
use shoal::mirror::MIRRORED_HEADER;
use shoal::registry::UploadLimits;
use shoal::registry::server::ServerLimits;
use shoal::routing::memory::MemoryNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wait::eventually;

/// Bound on waiting for the server to answer or close: failure, not timing.
const GUARD: Duration = Duration::from_secs(15);

async fn node_with(server: ServerLimits, options: NodeOptions) -> TestNode {
    TestNode::start_with(&MemoryNetwork::new(), "target", NodeOptions { server, ..options }).await
}

fn limits(tune: impl FnOnce(&mut ServerLimits)) -> ServerLimits {
    let mut limits = ServerLimits::default();
    tune(&mut limits);
    limits
}

/// Reads until the server closes the connection; what it sent before that.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(GUARD, stream.read(&mut buf)).await.expect("the server closes the connection") {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` (from a task, so a server that stops reading cannot block
/// us) and returns whatever came back before the server closed.
async fn exchange(addr: SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(GUARD, reader.read(&mut buf)).await.expect("the server answers or closes") {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    writing.abort();
    received
}

/// The status code of the first response in `received`, if any.
fn status_of(received: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(received.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

#[tokio::test]
async fn a_slowloris_client_is_cut_after_the_header_timeout() {
    let node = node_with(limits(|l| l.header_read_timeout = Duration::from_millis(200)), NodeOptions::default()).await;
    let stream = TcpStream::connect(node.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // One header line every 50 ms, never the blank line that ends the head.
    let trickle = tokio::spawn(async move {
        if writer.write_all(b"GET /v2/ HTTP/1.1\r\nHost: shoal\r\n").await.is_err() {
            return;
        }
        for i in 0..400 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(GUARD, reader.read(&mut buf)).await.expect("the slow client is cut");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer, got {read:?}");
    trickle.abort();

    let mut idle = TcpStream::connect(node.addr).await.unwrap();
    assert!(read_until_closed(&mut idle).await.is_empty(), "a silent connection is cut too");
    assert_eq!(get(&node.url("/v2/")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_headers_get_431_or_a_close() {
    let node = node_with(limits(|l| l.max_header_bytes = 16 << 10), NodeOptions::default()).await;
    let big = "a".repeat(64 << 10);
    let received =
        exchange(node.addr, format!("GET /v2/ HTTP/1.1\r\nHost: shoal\r\nX-Big: {big}\r\n\r\n").into()).await;
    let status = status_of(&received);
    assert!(matches!(status, None | Some(431)), "got {:?}", String::from_utf8_lossy(&received));

    let fits = "a".repeat(8 << 10);
    let received = exchange(
        node.addr,
        format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n").into(),
    )
    .await;
    assert_eq!(status_of(&received), Some(200), "a head within the limit is served");
}

#[tokio::test]
async fn a_long_url_gets_414_with_oci_error_json() {
    let node = node_with(ServerLimits::default(), NodeOptions { max_url_bytes: 1000, ..NodeOptions::default() }).await;
    let long = node.url(&format!("/v2/{}/manifests/v1?ns=registry.test", "a/".repeat(600)));
    let reply = get(&long).await;
    assert_eq!(reply.status, StatusCode::URI_TOO_LONG);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.error_code(), "NAME_INVALID");
    assert_eq!(node.metric(r#"shoal_requests_rejected_total{listener="registry",reason="url_too_long"}"#), 1);

    let head = request(http::Method::HEAD, &long, &[]).await;
    assert_eq!((head.status, head.body.len()), (StatusCode::URI_TOO_LONG, 0));
    let short_but_bad = get(&node.url("/v2/UPPER/manifests/v1")).await;
    assert_eq!(short_but_bad.status, StatusCode::BAD_REQUEST, "within the limit the path is parsed as usual");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let server = limits(|l| {
        l.max_connections = 2;
        l.header_read_timeout = Duration::from_secs(60);
    });
    let node = node_with(server, NodeOptions::default()).await;
    let open = r#"shoal_connections_open{listener="registry"}"#;
    let first = TcpStream::connect(node.addr).await.unwrap();
    let second = TcpStream::connect(node.addr).await.unwrap();
    eventually("both connections are held", || node.metric(open) == 2).await;

    let mut third = TcpStream::connect(node.addr).await.unwrap();
    let _ = third.write_all(b"GET /v2/ HTTP/1.1\r\nHost: shoal\r\n\r\n").await;
    assert!(read_until_closed(&mut third).await.is_empty(), "closed without an answer");
    assert_eq!(node.metric(r#"shoal_connections_rejected_total{listener="registry"}"#), 1);

    drop(first);
    eventually("a slot is freed", || node.metric(open) == 1).await;
    assert_eq!(get(&node.url("/v2/")).await.status, StatusCode::OK);
    drop(second);
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_503_at_once_while_others_are_held() {
    let uploads = UploadLimits { max_concurrent: None, bytes_per_second: Some(1) };
    let node = node_with(limits(|l| l.max_in_flight = 1), NodeOptions { uploads, ..NodeOptions::default() }).await;
    let image = add_image(&node.store, "registry.test/team/app:v1", &[layer_bytes(1, 1_000_000)]);
    node.sync().await;
    // A peer's upload paced at 1 B/s holds the one slot until it is aborted.
    let url = node.url(&blob_path(&image.layers[0].0));
    let held = tokio::spawn(async move { request(http::Method::GET, &url, &[(MIRRORED_HEADER, "true")]).await });
    eventually("the slow request is in flight", || node.metric("shoal_uploads_in_flight") == 1).await;

    let refused = tokio::time::timeout(GUARD, get(&node.url("/v2/"))).await.expect("refused at once, never queued");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "TOOMANYREQUESTS");
    assert_eq!(refused.header("retry-after"), "1");
    assert_eq!(node.metric(r#"shoal_requests_rejected_total{listener="registry",reason="in_flight_limit"}"#), 1);
    assert_eq!(get(&node.url("/healthz")).await.status, StatusCode::OK, "probes are never refused");

    held.abort();
    eventually("the slot is freed", || node.metric("shoal_uploads_in_flight") == 0).await;
    assert_eq!(get(&node.url("/v2/")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_its_upload_slot_freed() {
    let uploads = UploadLimits { max_concurrent: Some(1), bytes_per_second: None };
    let server = limits(|l| l.send_stall_timeout = Duration::from_millis(300));
    let node = node_with(server, NodeOptions { uploads, ..NodeOptions::default() }).await;
    // Far more than the socket buffers of both ends hold.
    let image = add_image(&node.store, "registry.test/team/app:v1", &[layer_bytes(1, 32 << 20)]);
    node.sync().await;
    let path = blob_path(&image.layers[0].0);

    // A peer asks for the blob, then reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hung = socket.connect(node.addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: shoal\r\n{MIRRORED_HEADER}: true\r\n\r\n");
    hung.write_all(head.as_bytes()).await.unwrap();
    eventually("the upload is in flight", || node.metric("shoal_uploads_in_flight") == 1).await;

    let stalled = r#"shoal_connections_stalled_total{listener="registry"}"#;
    wait::eventually_within("the hung client is cut", GUARD, || node.metric(stalled) == 1).await;
    eventually("its upload slot is freed", || node.metric("shoal_uploads_in_flight") == 0).await;
    let received = read_until_closed(&mut hung).await;
    assert!(received.len() < 32 << 20, "the response was cut short ({} bytes)", received.len());

    let next = request(http::Method::GET, &node.url(&path), &[(MIRRORED_HEADER, "true")]).await;
    assert_eq!(next.status, StatusCode::OK, "the next peer gets the slot");
    assert_eq!(next.body.len(), 32 << 20);
    assert_eq!(node.metric(stalled), 1, "a client that reads is never cut");
}

/// Panics anywhere in this test binary (a connection task included).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Requests that break the protocol or the API in ways a fuzzer or a broken
/// client would.
fn invalid_requests() -> Vec<Vec<u8>> {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let lines = [
        "GARBAGE\r\n\r\n".to_owned(),
        "GET\r\n\r\n".to_owned(),
        "GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_owned(),
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_owned(),
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_owned(),
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_owned(),
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzz\r\n".to_owned(),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_owned(),
        "POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_owned(),
        "GET /v2/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        "GET /v2/team/app/blobs/sha256:zz HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        "GET /v2/%ff%00/manifests/%00 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        format!("GET /v2/team/app/blobs/{digest}?ns=bad/host HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("GET /v2/team/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=9-1\r\n\r\n"),
        format!("GET /v2/team/app/manifests/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,2-3\r\n\r\n"),
    ];
    let mut requests: Vec<Vec<u8>> = lines.into_iter().map(String::into_bytes).collect();
    requests.push(b"GET /v2/ HTTP/1.1\r\nHost: \xff\xfe\r\nX: \x00\x01\r\n\r\n".to_vec());
    requests
}

/// Deterministic pseudo-random byte strings (xorshift), some starting like HTTP.
fn random_inputs(count: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let len = (next() % 512) as usize + 1;
            let mut bytes: Vec<u8> = if i % 2 == 0 { b"GET /v2/".to_vec() } else { Vec::new() };
            bytes.extend((0..len).map(|_| next() as u8));
            bytes.extend_from_slice(b"\r\n\r\n");
            bytes
        })
        .collect()
}

#[tokio::test]
async fn garbage_and_invalid_requests_get_4xx_and_never_panic() {
    count_panics();
    let node = node_with(limits(|l| l.header_read_timeout = Duration::from_millis(200)), NodeOptions::default()).await;
    for input in invalid_requests().into_iter().chain(random_inputs(64)) {
        let received = exchange(node.addr, input.clone()).await;
        if let Some(status) = status_of(&received) {
            assert!((400..500).contains(&status), "{status} for {:?}", String::from_utf8_lossy(&input));
        }
    }
    assert_eq!(get(&node.url("/v2/")).await.status, StatusCode::OK, "still serving");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}
