//! Noticing a client that stopped taking its response.
//!
//! Owns: [`StallGuard`], an I/O wrapper that notes since when a write has
//! been waiting for the client to make room, and [`Stall`], its watcher,
//! which resolves once one write has waited longer than a limit. Knows
//! nothing of HTTP: `server` races each connection against its watcher.
//!
//! hyper has no write timeout. A client that stops reading (a hung or
//! frozen peer, a paused VM) leaves its response waiting forever, holding
//! an upload slot and an in-flight slot until the kernel gives up on the
//! socket: 15 minutes or more, and never while the client still answers
//! with a zero window. An idle keep-alive connection writes nothing, so it
//! never counts as stalled (the header read timeout closes those).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// `Waiting::since_ms` when no write waits.
const NOT_WAITING: u64 = u64::MAX;

/// Since when a write has been waiting, shared by the guard and its watcher.
struct Waiting {
    epoch: Instant,
    /// Milliseconds after `epoch`, or [`NOT_WAITING`].
    since_ms: AtomicU64,
}

impl Waiting {
    fn since(&self) -> Option<Instant> {
        match self.since_ms.load(Ordering::Relaxed) {
            NOT_WAITING => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }

    /// Records how a write ended: waiting starts at the first `Pending`
    /// and ends with any progress.
    fn note<T>(&self, poll: &Poll<T>) {
        match poll {
            Poll::Pending => {
                let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1);
                let _ = self.since_ms.compare_exchange(NOT_WAITING, ms, Ordering::Relaxed, Ordering::Relaxed);
            }
            Poll::Ready(_) => self.since_ms.store(NOT_WAITING, Ordering::Relaxed),
        }
    }
}

/// An I/O stream whose writes are watched by a [`Stall`].
pub struct StallGuard<T> {
    inner: T,
    waiting: Arc<Waiting>,
}

impl<T> StallGuard<T> {
    /// Wraps `inner`; the returned watcher tells when its writes stall.
    pub fn new(inner: T) -> (Self, Stall) {
        let waiting = Arc::new(Waiting { epoch: Instant::now(), since_ms: AtomicU64::new(NOT_WAITING) });
        (Self { inner, waiting: waiting.clone() }, Stall { waiting })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.waiting.note(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.waiting.note(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.waiting.note(&poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.waiting.note(&poll);
        poll
    }
}

/// Watches one [`StallGuard`].
pub struct Stall {
    waiting: Arc<Waiting>,
}

impl Stall {
    /// Resolves once a write has waited for the client for `limit` (noticed
    /// within twice that).
    pub async fn stalled(&self, limit: Duration) {
        loop {
            let now = Instant::now();
            let check_at = match self.waiting.since() {
                Some(since) if now >= since + limit => return,
                Some(since) => since + limit,
                None => now + limit,
            };
            tokio::time::sleep_until(check_at).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_write_the_reader_never_takes_stalls_after_the_limit() {
        let (client, server) = tokio::io::duplex(64);
        let (mut guarded, stall) = StallGuard::new(server);
        let started = Instant::now();
        let writer = tokio::spawn(async move { guarded.write_all(&[7; 1024]).await });
        stall.stalled(LIMIT).await;
        let waited = started.elapsed();
        assert!(waited >= LIMIT && waited <= 2 * LIMIT, "noticed after {waited:?}");
        assert!(!writer.is_finished(), "the write is still waiting");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_progress_and_idle_connections_never_stall() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut guarded, stall) = StallGuard::new(server);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            // A slow reader: 16 bytes every 10 s, far slower than the writer.
            while total < 1024 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                total += client.read(&mut buf).await.unwrap();
            }
            client
        });
        tokio::select! {
            () = stall.stalled(LIMIT) => panic!("a slow but steady reader is not stalled"),
            written = guarded.write_all(&[7; 1024]) => written.unwrap(),
        }
        let _client = reader.await.unwrap();
        tokio::select! {
            () = stall.stalled(LIMIT) => panic!("an idle connection is not stalled"),
            () = tokio::time::sleep(10 * LIMIT) => {}
        }
    }
}
