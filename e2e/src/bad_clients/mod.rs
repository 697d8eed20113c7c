//! Misbehaving clients of a registry port, for load tests: slowloris
//! connections (headers sent a byte at a time), garbage bytes, oversized
//! headers, invalid paths, digests and ranges, bursts of short-lived
//! connections, and requests for digests nobody holds. They speak raw TCP so
//! that they can send what no HTTP library would.
//!
//! Every client is a bounded task: it stops at its operation cap or when its
//! token is cancelled, each operation has a timeout, and the slowloris
//! connections are bounded in number. Each task returns a [`Tally`] of what
//! the server did; judging it is the test's business. Loopback targets only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::load::SplitMix64;

mod requests;
use requests::invalid_requests;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one exchange: a server that neither answers nor closes by then hangs.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes read while looking for the status line.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// A slowloris connection sends one header byte this often ...
const SLOW_BYTE_EVERY: Duration = Duration::from_secs(1);
/// ... and gives up (closes) after this long, unless the server closes first.
const SLOW_LIFETIME: Duration = Duration::from_secs(45);
/// Connections opened (and mostly dropped unanswered) per short-lived burst.
const BURST: usize = 16;
/// Oversized header values, cycled: past any sane limit, bounded all the same.
const OVERSIZED: [usize; 3] = [64 * 1024, 512 * 1024, 2 * 1024 * 1024];
/// Server errors kept verbatim per kind.
const KEPT_ERRORS: usize = 5;

/// What the clients send to, and what they may ask for.
#[derive(Debug, Clone)]
pub struct BadClientConfig {
    /// Registry ports to misbehave against (loopback).
    pub targets: Vec<SocketAddr>,
    /// A repository and one of its blobs that the targets can serve: ranges are asked of it.
    pub repository: String,
    pub known_blob: String,
    /// The upstream registry host sent as `?ns=` (a loopback `host:port`).
    pub ns: String,
    /// Concurrent slowloris connections per target.
    pub slowloris_per_target: usize,
    /// Most operations (requests, connections or bursts) per client task.
    pub max_ops: u64,
    /// Pause between two operations of one client.
    pub pace: Duration,
    pub seed: u64,
}

/// The kinds of misbehaviour, one task per kind and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Slowloris,
    Garbage,
    OversizedHeaders,
    InvalidRequests,
    ShortLived,
    UnknownDigests,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Slowloris,
        Kind::Garbage,
        Kind::OversizedHeaders,
        Kind::InvalidRequests,
        Kind::ShortLived,
        Kind::UnknownDigests,
    ];
}

/// What one client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Requests sent (a slowloris connection or a burst connection counts as one).
    pub requests: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connections the server closed (or reset) without a status line.
    pub closed: u64,
    /// Connections refused (the node was down).
    pub refused: u64,
    /// Exchanges with neither an answer nor a close within the timeout.
    pub hung: u64,
    /// Slowloris connections still open when their lifetime ran out.
    pub held_to_lifetime: u64,
    /// The first few requests answered with 5xx.
    pub server_errors: Vec<String>,
}

impl Tally {
    pub fn server_error_count(&self) -> u64 {
        self.statuses.iter().filter(|(code, _)| **code >= 500).map(|(_, n)| n).sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        for (code, n) in &other.statuses {
            *self.statuses.entry(*code).or_default() += n;
        }
        self.closed += other.closed;
        self.refused += other.refused;
        self.hung += other.hung;
        self.held_to_lifetime += other.held_to_lifetime;
        let room = KEPT_ERRORS.saturating_sub(self.server_errors.len());
        self.server_errors.extend(other.server_errors.iter().take(room).cloned());
    }

    fn record(&mut self, outcome: Outcome, what: &str) {
        self.requests += 1;
        match outcome {
            Outcome::Status(code) => {
                *self.statuses.entry(code).or_default() += 1;
                if code >= 500 && self.server_errors.len() < KEPT_ERRORS {
                    self.server_errors.push(format!("{code} for {what}"));
                }
            }
            Outcome::Closed => self.closed += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Hung => self.hung += 1,
        }
    }
}

/// How one exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Closed,
    Refused,
    Hung,
}

/// Spawns one client per kind and target onto `set`; each returns its kind
/// and tally when it hits its cap or `token` is cancelled.
pub fn spawn(config: &BadClientConfig, token: &CancellationToken, set: &mut JoinSet<(Kind, Tally)>) {
    for (t, target) in config.targets.iter().enumerate() {
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            let client = Client {
                target: *target,
                config: config.clone(),
                rng: SplitMix64::new(config.seed ^ (((t as u64) << 32) | k as u64)),
                token: token.clone(),
            };
            set.spawn(async move { (kind, client.run(kind).await) });
        }
    }
}

struct Client {
    target: SocketAddr,
    config: BadClientConfig,
    rng: SplitMix64,
    token: CancellationToken,
}

impl Client {
    async fn run(mut self, kind: Kind) -> Tally {
        if kind == Kind::Slowloris {
            return self.slowloris().await;
        }
        let mut tally = Tally::default();
        let mut pace = tokio::time::interval(self.config.pace);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for _ in 0..self.config.max_ops {
            tokio::select! {
                () = self.token.cancelled() => break,
                _ = pace.tick() => {}
            }
            match kind {
                Kind::Garbage => self.garbage(&mut tally).await,
                Kind::OversizedHeaders => self.oversized(&mut tally).await,
                Kind::InvalidRequests => self.invalid(&mut tally).await,
                Kind::ShortLived => self.short_lived(&mut tally).await,
                Kind::UnknownDigests => self.unknown_digest(&mut tally).await,
                Kind::Slowloris => {}
            }
        }
        tally
    }

    /// Random bytes, sometimes after a plausible request line, then a
    /// half-close: the server must answer 400 or close, never hang.
    async fn garbage(&mut self, tally: &mut Tally) {
        let len = 1 + self.rng.below(4096);
        let mut bytes = match self.rng.below(3) {
            0 => b"GET /v2/ HTTP/1.1\r\nHost: x\r\n".to_vec(),
            1 => b"GET /v2/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: -1\r\n\r\nzz\r\n".to_vec(),
            _ => Vec::new(),
        };
        bytes.extend(self.rng.bytes(len));
        let outcome = exchange(self.target, &bytes, true).await;
        tally.record(outcome, &format!("{len} garbage bytes"));
    }

    /// One header far past any sane size.
    async fn oversized(&mut self, tally: &mut Tally) {
        let size = OVERSIZED[self.rng.below(OVERSIZED.len())];
        let request =
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(size));
        let outcome = exchange(self.target, request.as_bytes(), false).await;
        tally.record(outcome, &format!("a {size}-byte header"));
    }

    /// A request with an invalid path, digest, method, query or range.
    async fn invalid(&mut self, tally: &mut Tally) {
        let requests = invalid_requests(&self.config);
        let (head, range) = &requests[self.rng.below(requests.len())];
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        let request = format!("{head} HTTP/1.1\r\nHost: x\r\n{range}Connection: close\r\n\r\n");
        let outcome = exchange(self.target, request.as_bytes(), false).await;
        tally.record(outcome, format!("{head} {range}").trim());
    }

    /// A burst of connections that close at once, or send a request and
    /// close without reading; then one request that must still be answered.
    async fn short_lived(&mut self, tally: &mut Tally) {
        for i in 0..BURST {
            let Ok(Ok(mut stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.target)).await
            else {
                tally.record(Outcome::Refused, "a short-lived connection");
                return;
            };
            if i % 2 == 1 {
                let _ = stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
            }
            tally.requests += 1;
        }
        let outcome = exchange(self.target, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false).await;
        tally.record(outcome, "GET /v2/ after a burst");
    }

    /// A blob or manifest by a digest nobody holds, or an unknown tag.
    async fn unknown_digest(&mut self, tally: &mut Tally) {
        let (repository, ns, digest) = (&self.config.repository, &self.config.ns, self.rng.digest());
        let path = match self.rng.below(3) {
            0 => format!("/v2/{repository}/blobs/{digest}?ns={ns}"),
            1 => format!("/v2/{repository}/manifests/{digest}?ns={ns}"),
            _ => format!("/v2/{repository}/manifests/no-such-tag-{}?ns={ns}", self.rng.next_u64()),
        };
        let method = if self.rng.below(2) == 0 { "GET" } else { "HEAD" };
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let outcome = exchange(self.target, request.as_bytes(), false).await;
        tally.record(outcome, &format!("{method} {path}"));
    }

    /// `slowloris_per_target` connections that each send a request line and
    /// then one header byte a second, reopened when they end.
    async fn slowloris(&self) -> Tally {
        let connections = (0..self.config.slowloris_per_target).map(|_| self.slow_connections());
        let mut total = Tally::default();
        for tally in futures::future::join_all(connections).await {
            total.merge(&tally);
        }
        total
    }

    async fn slow_connections(&self) -> Tally {
        let mut tally = Tally::default();
        let mut pace = tokio::time::interval(self.config.pace.max(SLOW_BYTE_EVERY));
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for _ in 0..self.config.max_ops {
            tokio::select! {
                () = self.token.cancelled() => break,
                _ = pace.tick() => {}
            }
            let Some(outcome) = self.one_slow_connection().await else { break };
            match outcome {
                Some(outcome) => tally.record(outcome, "a slowloris connection"),
                None => {
                    tally.requests += 1;
                    tally.held_to_lifetime += 1;
                }
            }
        }
        tally
    }

    /// `None` when cancelled; `Some(None)` when held open for the whole lifetime.
    async fn one_slow_connection(&self) -> Option<Option<Outcome>> {
        let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.target)).await else {
            return Some(Some(Outcome::Refused));
        };
        let (mut reader, mut writer) = stream.into_split();
        if writer.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").await.is_err() {
            return Some(Some(Outcome::Closed));
        }
        let header = b"X-Slowloris: ".iter().chain(std::iter::repeat(&b'a'));
        let mut header = header.copied();
        let end = Instant::now() + SLOW_LIFETIME;
        let mut tick = tokio::time::interval(SLOW_BYTE_EVERY);
        let mut buffer = vec![0; 1024];
        let mut received = Vec::new();
        loop {
            tokio::select! {
                () = self.token.cancelled() => return None,
                () = tokio::time::sleep_until(end) => return Some(None),
                read = reader.read(&mut buffer) => match read {
                    Ok(n) if n > 0 => {
                        received.extend_from_slice(&buffer[..n]);
                        if let Some(code) = status_code(&received) {
                            return Some(Some(Outcome::Status(code)));
                        }
                    }
                    _ => return Some(Some(Outcome::Closed)),
                },
                _ = tick.tick() => {
                    let byte = [header.next().unwrap_or(b'a')];
                    if writer.write_all(&byte).await.is_err() {
                        return Some(Some(Outcome::Closed));
                    }
                }
            }
        }
    }
}

/// Connects, sends `request` (then half-closes if `half_close`), and reads
/// until the status line, a close, or the timeout.
async fn exchange(target: SocketAddr, request: &[u8], half_close: bool) -> Outcome {
    let Ok(Ok(mut stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await else {
        return Outcome::Refused;
    };
    let exchange = async {
        // A server may answer and close before it read everything (oversized
        // headers): a failed write still leaves its answer to read.
        let _ = stream.write_all(request).await;
        if half_close {
            let _ = stream.shutdown().await;
        }
        read_status(&mut stream).await
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await.unwrap_or(Outcome::Hung)
}

async fn read_status(stream: &mut TcpStream) -> Outcome {
    let mut received = Vec::new();
    let mut buffer = vec![0; 4096];
    while received.len() < MAX_RESPONSE_HEAD {
        match stream.read(&mut buffer).await {
            Ok(n) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
        if let Some(code) = status_code(&received) {
            return Outcome::Status(code);
        }
    }
    status_code(&received).map_or(Outcome::Closed, Outcome::Status)
}

/// The status code of a complete `HTTP/1.x NNN ...` line at the start of `received`.
fn status_code(received: &[u8]) -> Option<u16> {
    let line_end = received.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&received[..line_end]).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_only_when_complete() {
        assert_eq!(status_code(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(status_code(b"HTTP/1.1 40"), None);
        assert_eq!(status_code(b"garbage\r\n"), None);
    }

    #[test]
    fn tallies_merge_and_keep_a_few_server_errors() {
        let mut a = Tally::default();
        a.record(Outcome::Status(404), "x");
        a.record(Outcome::Status(500), "y");
        let mut b = Tally::default();
        b.record(Outcome::Hung, "z");
        b.record(Outcome::Status(404), "w");
        a.merge(&b);
        assert_eq!((a.requests, a.hung, a.statuses.get(&404).copied()), (4, 1, Some(2)));
        assert_eq!((a.server_error_count(), a.server_errors.clone()), (1, vec!["500 for y".to_owned()]));
    }
}
