//! The background task that probes excluded peers back in.
//!
//! Owns: waking when a probe is due (or when the table changed), sending
//! `GET /v2/` to each due peer with the client's connect and header
//! timeouts, a few at a time, and reporting results to [`PeerScores`],
//! which sets the next backoff, and to the router, which routes through a
//! peer that answers again. No request ever waits on a probe: an
//! excluded peer is simply not chosen until its probe succeeds.

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::client::PeerClient;
use super::select::PeerScores;
use crate::metrics::Metrics;
use crate::routing::Router;

/// Probes in flight at once.
const CONCURRENCY: usize = 8;

pub(super) async fn run(
    scores: Arc<PeerScores>,
    client: PeerClient,
    router: Arc<dyn Router>,
    metrics: Metrics,
    token: CancellationToken,
) {
    loop {
        metrics.set_peers_excluded(scores.excluded_count());
        let due = scores.take_due_probes();
        if !due.is_empty() {
            let probes = futures::stream::iter(due)
                .map(|(peer, endpoint)| {
                    let client = &client;
                    async move { (peer, client.probe(endpoint).await) }
                })
                .buffer_unordered(CONCURRENCY);
            let results = tokio::select! {
                () = token.cancelled() => return,
                results = probes.collect::<Vec<_>>() => results,
            };
            for (peer, ok) in results {
                tracing::debug!(%peer, ok, "probed an excluded peer");
                metrics.peer_probed(ok);
                scores.probe_result(&peer, ok);
                if ok {
                    router.peer_recovered(&peer);
                }
            }
            continue;
        }
        let next = scores.next_probe_at();
        tokio::select! {
            () = token.cancelled() => return,
            () = scores.changed() => {}
            () = sleep_until(next) => {}
        }
    }
}

/// Sleeps until `at`, or for ever when nothing is scheduled.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
