//! Limits on what this node uploads to other nodes: how many blob bodies it
//! streams to peers at once, and optionally how many bytes per second.
//!
//! Owns: the upload slots (a semaphore tried without waiting: a saturated
//! node answers at once with a retryable status instead of queueing, so the
//! asking node picks another peer) and the shared token bucket that paces
//! upload bodies. Applies to requests carrying `shoal-mirrored` only; this
//! node's own containerd is never limited.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::content::BlobStream;
use crate::metrics::InFlight;

/// What a node uploads at most. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadLimits {
    /// Blob bodies streamed to peers at once.
    pub max_concurrent: Option<usize>,
    /// Upload bytes per second, over all uploads together.
    pub bytes_per_second: Option<u64>,
}

/// How long a busy answer asks the peer to stay away.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The node's upload slots and pacing. Cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    slots: Option<Arc<Semaphore>>,
    pacer: Option<Arc<Pacer>>,
}

/// A held upload slot; the slot frees when the upload's body is dropped.
pub struct UploadPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Uploads {
    pub fn new(limits: UploadLimits) -> Self {
        Self {
            slots: limits.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            pacer: limits.bytes_per_second.filter(|rate| *rate > 0).map(|rate| Arc::new(Pacer::new(rate))),
        }
    }

    /// A slot for one more upload, or `None` when every slot is taken.
    pub fn try_start(&self) -> Option<UploadPermit> {
        match &self.slots {
            None => Some(UploadPermit { _slot: None }),
            Some(slots) => slots.clone().try_acquire_owned().ok().map(|slot| UploadPermit { _slot: Some(slot) }),
        }
    }

    /// `stream`, paced by the upload rate, holding `permit` and `in_flight`
    /// until the body ends or is dropped (the peer went away).
    pub fn body(&self, stream: BlobStream, permit: UploadPermit, in_flight: InFlight) -> BlobStream {
        let pacer = self.pacer.clone();
        let held = (permit, in_flight);
        Box::pin(stream.then(move |chunk| {
            let _held = &held;
            let pacer = pacer.clone();
            async move {
                if let (Some(pacer), Ok(bytes)) = (&pacer, &chunk) {
                    pacer.take(bytes.len() as u64).await;
                }
                chunk
            }
        }))
    }
}

/// A token bucket shared by every upload. A chunk goes out as soon as the
/// bucket is not in debt and may take it into debt (so chunks of any size
/// work); later chunks wait until the debt is paid off. The aggregate rate
/// holds however many uploads run, and a wait that is cancelled (the peer
/// went away) takes nothing.
pub struct Pacer {
    rate: f64,
    burst: f64,
    /// (tokens, last refill); a std mutex, never held across `.await`.
    state: Mutex<(f64, Instant)>,
}

impl Pacer {
    /// A bucket refilled at `rate` bytes per second that holds a tenth of a
    /// second's worth (at least 64 KiB).
    pub fn new(rate: u64) -> Self {
        let rate = rate as f64;
        let burst = (rate / 10.0).max(64.0 * 1024.0);
        Self { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Waits until the bucket is out of debt, then takes `bytes`.
    pub async fn take(&self, bytes: u64) {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let refill = now.saturating_duration_since(state.1).as_secs_f64() * self.rate;
                state.0 = (state.0 + refill).min(self.burst);
                state.1 = now;
                if state.0 >= 0.0 {
                    state.0 -= bytes as f64;
                    return;
                }
                Duration::from_secs_f64(-state.0 / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use bytes::Bytes;
    use futures::TryStreamExt;

    #[test]
    fn slots_run_out_and_come_back_when_a_permit_drops() {
        let uploads = Uploads::new(UploadLimits { max_concurrent: Some(2), bytes_per_second: None });
        let first = uploads.try_start().unwrap();
        let _second = uploads.try_start().unwrap();
        assert!(uploads.try_start().is_none());
        drop(first);
        assert!(uploads.try_start().is_some());
    }

    #[test]
    fn no_limit_never_refuses() {
        let uploads = Uploads::new(UploadLimits::default());
        let permits: Vec<_> = (0..1000).map(|_| uploads.try_start()).collect();
        assert!(permits.iter().all(Option::is_some));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_holds_the_aggregate_rate() {
        let pacer = Arc::new(Pacer::new(1 << 20));
        let started = Instant::now();
        let senders = (0..4).map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    pacer.take(256 << 10).await;
                }
            })
        });
        futures::future::join_all(senders).await;
        // 10 MiB at 1 MiB/s, less the initial burst (0.1 MiB) and the last
        // chunk (0.25 MiB, sent as soon as the debt before it was paid).
        let took = started.elapsed().as_secs_f64();
        assert!((9.6..=9.7).contains(&took), "{took}");
    }

    #[tokio::test]
    async fn a_body_holds_its_slot_until_dropped() {
        let uploads = Uploads::new(UploadLimits { max_concurrent: Some(1), bytes_per_second: Some(1 << 30) });
        let metrics = Metrics::new().unwrap();
        let permit = uploads.try_start().unwrap();
        let chunks = vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        let body = uploads.body(Box::pin(futures::stream::iter(chunks)), permit, metrics.uploading());
        assert!(uploads.try_start().is_none(), "busy while the body lives");
        let bytes: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"abcd");
        assert!(uploads.try_start().is_some(), "free once the body is done");
    }
}
