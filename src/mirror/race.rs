//! The header race: one request's attempts until some peer sends response
//! headers, with hedging.
//!
//! The first peer is asked; if it has not answered within the hedge
//! deadline, the next peer is asked too, and so on while the attempt budget
//! lasts. The first attempt to deliver headers wins; the others are dropped,
//! which closes their connections. A failed attempt makes room for the next
//! peer at once. Only the winner goes on to the body phase, so exactly one
//! peer ever writes into a spool.
//!
//! Owns: the concurrency of attempts and the hedge timer. Generic over where
//! peers come from ([`AttemptSource`]) and what an attempt is, so the logic
//! is tested with scripted futures under `tokio::time::pause()`.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::client::FetchError;
use crate::routing::Peer;

/// Where a race gets its peers, and where it reports what happened.
pub(super) trait AttemptSource {
    /// Whether the attempt budget allows another attempt.
    fn can_start(&self) -> bool;
    /// The next untried peer (waiting for the router if need be), counted
    /// against the budget; `None` when there is none.
    fn next(&mut self) -> impl Future<Output = Option<Peer>>;
    fn failed(&mut self, peer: &Peer, error: &FetchError);
    /// A hedge was started.
    fn hedged(&mut self);
    /// `peer` lost to a later attempt after `silent_for` without headers.
    fn outrun(&mut self, peer: &Peer, silent_for: Duration);
}

/// The attempt that delivered headers first.
pub(super) struct Winner {
    pub peer: Peer,
    pub started: Instant,
    /// Time from its start to its headers.
    pub latency: Duration,
    /// Whether it was started as a hedge.
    pub hedged: bool,
}

/// A winner and what its attempt returned.
pub(super) struct Won<T> {
    pub winner: Winner,
    pub value: T,
}

struct Done<T> {
    peer: Peer,
    started: Instant,
    hedged: bool,
    result: Result<T, FetchError>,
}

enum Step<T> {
    Done(Done<T>),
    HedgeDue,
}

/// Runs attempts made by `start` until one returns `Ok`, hedging after
/// `hedge_after` (no hedging when `None`). `None` when the source runs out.
pub(super) async fn race<S, T, F, Fut>(source: &mut S, hedge_after: Option<Duration>, start: F) -> Option<Won<T>>
where
    S: AttemptSource,
    F: Fn(Peer) -> Fut,
    Fut: Future<Output = Result<T, FetchError>>,
{
    let mut running = FuturesUnordered::new();
    // Peers in flight with their start times (the futures are opaque).
    let mut in_flight: Vec<(Peer, Instant)> = Vec::new();
    let mut hedge_at: Option<Instant> = None;
    let launch = |peer: Peer, hedged: bool| {
        let attempt = start(peer.clone());
        let started = Instant::now();
        async move { Done { peer, started, hedged, result: attempt.await } }
    };
    loop {
        if running.is_empty() {
            if !source.can_start() {
                return None;
            }
            let peer = source.next().await?;
            in_flight.push((peer.clone(), Instant::now()));
            running.push(launch(peer, false));
            hedge_at = hedge_after.map(|after| Instant::now() + after);
            continue;
        }
        let step = match hedge_at.filter(|_| source.can_start()) {
            Some(at) => tokio::select! {
                Some(done) = running.next() => Step::Done(done),
                () = tokio::time::sleep_until(at) => Step::HedgeDue,
            },
            None => match running.next().await {
                Some(done) => Step::Done(done),
                None => continue,
            },
        };
        let done = match step {
            Step::Done(done) => done,
            Step::HedgeDue => {
                hedge_at = None;
                // A candidate may still be on its way from the router: take
                // whichever comes first, a peer to hedge with or a result.
                let next = tokio::select! {
                    biased;
                    Some(done) = running.next() => Err(done),
                    peer = source.next() => Ok(peer),
                };
                match next {
                    Ok(Some(peer)) => {
                        source.hedged();
                        in_flight.push((peer.clone(), Instant::now()));
                        running.push(launch(peer, true));
                        hedge_at = hedge_after.map(|after| Instant::now() + after);
                        continue;
                    }
                    Ok(None) => continue,
                    Err(done) => done,
                }
            }
        };
        in_flight.retain(|(peer, _)| peer.name != done.peer.name);
        match done.result {
            Ok(value) => {
                for (loser, started) in in_flight.iter().filter(|(_, started)| *started < done.started) {
                    source.outrun(loser, started.elapsed());
                }
                let latency = done.started.elapsed();
                let winner = Winner { peer: done.peer, started: done.started, latency, hedged: done.hedged };
                return Some(Won { winner, value });
            }
            Err(error) => source.failed(&done.peer, &error),
        }
    }
}

#[cfg(test)]
#[path = "race/tests.rs"]
mod tests;
