//! Fake peers that follow one shared script: the Nth request to reach any
//! of them gets the Nth reply (hang, serve, or cut off at a byte offset),
//! whichever peer it lands on. That makes hedging and resume scenarios
//! deterministic although the mirror picks peers at random.
//!
//! Speaks raw HTTP/1.1 over TCP so it can see exactly what the mirror does:
//! each request's `Range`, and when a hung request's connection is closed
//! (a cancelled hedge loser). Loopback only.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Reads the request and never answers, until the client closes.
    Hang,
    /// The blob (or the asked range of it), then the connection stays open.
    Serve,
    /// Headers for the full answer, the bytes up to this offset of the blob,
    /// then the connection closes.
    CutAt(usize),
    /// The blob (or the asked range of it) with one byte in the middle flipped.
    Corrupt,
}

/// A request as a scripted peer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub peer: String,
    pub reply: Reply,
    /// The start of `Range: bytes=N-`, if sent.
    pub range_start: Option<usize>,
}

/// The replies in order (then `Serve` for ever) and what was seen.
pub struct Script {
    blob: Bytes,
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    hung_closed: AtomicUsize,
}

impl Script {
    pub fn new(blob: Bytes, replies: &[Reply]) -> Arc<Self> {
        Arc::new(Self {
            blob,
            replies: Mutex::new(replies.iter().copied().collect()),
            seen: Mutex::new(Vec::new()),
            hung_closed: AtomicUsize::new(0),
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Hung requests whose connection the client has closed.
    pub fn hung_closed(&self) -> usize {
        self.hung_closed.load(Ordering::SeqCst)
    }

    fn next(&self, peer: &str, range_start: Option<usize>) -> Reply {
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or(Reply::Serve);
        self.seen.lock().unwrap().push(Seen { peer: peer.to_owned(), reply, range_start });
        reply
    }
}

/// Starts a scripted peer named `name` on 127.0.0.1 and returns its endpoint.
pub async fn scripted_peer(name: &str, script: Arc<Script>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, name.clone(), script.clone()));
        }
    });
    addr
}

async fn serve(mut stream: TcpStream, name: String, script: Arc<Script>) {
    let mut buffer = Vec::new();
    while let Some(head) = read_head(&mut stream, &mut buffer).await {
        let range_start = range_start(&head);
        match script.next(&name, range_start) {
            Reply::Hang => {
                // Wait for the client to give up: EOF or an error.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                script.hung_closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Reply::Serve => {
                if write_answer(&mut stream, &script.blob, range_start, None).await.is_err() {
                    return;
                }
            }
            Reply::Corrupt => {
                let mut corrupt = script.blob.to_vec();
                let middle = corrupt.len() / 2;
                corrupt[middle] ^= 0xff;
                if write_answer(&mut stream, &Bytes::from(corrupt), range_start, None).await.is_err() {
                    return;
                }
            }
            Reply::CutAt(cut) => {
                let _ = write_answer(&mut stream, &script.blob, range_start, Some(cut)).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Reads one request head (up to the blank line); `None` at EOF.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn range_start(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("range") {
            return None;
        }
        value.trim().strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
    })
}

/// The answer for `range_start..`, with only the bytes before `cut` sent.
async fn write_answer(
    stream: &mut TcpStream,
    blob: &Bytes,
    range_start: Option<usize>,
    cut: Option<usize>,
) -> std::io::Result<()> {
    let start = range_start.unwrap_or(0);
    let total = blob.len();
    let head = match range_start {
        None => format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {total}\r\n\r\n"),
        Some(start) => format!(
            "HTTP/1.1 206 Partial Content\r\ncontent-type: application/octet-stream\r\n\
             content-length: {}\r\ncontent-range: bytes {start}-{}/{total}\r\n\r\n",
            total - start,
            total - 1
        ),
    };
    stream.write_all(head.as_bytes()).await?;
    let end = cut.unwrap_or(total).clamp(start, total);
    stream.write_all(&blob[start..end]).await?;
    stream.flush().await
}
