//! The advertisement pipeline: one task that takes keys from the [`Plan`]
//! in batches and hands them to the router, with a bounded number of
//! batches in flight.
//!
//! Owns: the plan, dispatching, recording outcomes, and the pipeline's
//! metrics. Callers talk to it through a [`PipelineHandle`] (a bounded
//! channel of key sets), so whoever feeds it never waits for the DHT.
//! Ends when the token is cancelled or every handle is gone; batches in
//! flight are then dropped (shutdown stops providing at once).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::plan::{Action, Plan, Urgency};
use crate::metrics::Metrics;
use crate::oci::Key;
use crate::routing::Router;

/// Requests queued for the pipeline before senders wait.
const INBOX_CAPACITY: usize = 64;
/// How often the gauges are refreshed.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// How much the pipeline does at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Batches (or withdrawals) in flight at once.
    pub(super) concurrency: usize,
    /// Keys handed to the router in one call.
    pub(super) batch_size: usize,
}

enum Request {
    Advertise(Vec<Key>, Urgency),
    Withdraw(Vec<Key>),
}

/// Feeds the pipeline. Cheap to clone.
#[derive(Clone)]
pub(super) struct PipelineHandle {
    inbox: mpsc::Sender<Request>,
}

impl PipelineHandle {
    pub(super) async fn advertise(&self, keys: Vec<Key>, urgency: Urgency) {
        if !keys.is_empty() {
            let _ = self.inbox.send(Request::Advertise(keys, urgency)).await;
        }
    }

    pub(super) async fn withdraw(&self, keys: Vec<Key>) {
        if !keys.is_empty() {
            let _ = self.inbox.send(Request::Withdraw(keys)).await;
        }
    }
}

/// What came back from the router.
enum Landed {
    Provided { keys: Vec<Key>, failed: Vec<bool>, elapsed: Duration },
    Withdrawn { keys: Vec<Key> },
}

pub(super) struct Pipeline {
    plan: Plan,
    router: Arc<dyn Router>,
    metrics: Metrics,
    limits: Limits,
    inbox: mpsc::Receiver<Request>,
}

impl Pipeline {
    pub(super) fn new(plan: Plan, router: Arc<dyn Router>, metrics: Metrics, limits: Limits) -> (Self, PipelineHandle) {
        let (sender, inbox) = mpsc::channel(INBOX_CAPACITY);
        let limits = Limits { concurrency: limits.concurrency.max(1), batch_size: limits.batch_size.max(1) };
        (Self { plan, router, metrics, limits, inbox }, PipelineHandle { inbox: sender })
    }

    /// Queues `keys` before the pipeline runs (the persisted keys at recovery).
    pub(super) fn seed(&mut self, keys: Vec<Key>) {
        self.plan.advertise(keys, Urgency::Background);
    }

    pub(super) async fn run(mut self, token: CancellationToken) {
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Landed>> = FuturesUnordered::new();
        let mut gauges = tokio::time::interval(METRICS_INTERVAL);
        gauges.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.dispatch(&mut in_flight);
            let next_due = self.plan.next_due();
            tokio::select! {
                biased;
                () = token.cancelled() => break,
                request = self.inbox.recv() => match request {
                    Some(request) => self.accept(request),
                    None => break,
                },
                Some(landed) = in_flight.next(), if !in_flight.is_empty() => self.land(landed),
                () = sleep_until_some(next_due) => self.plan.release_due(Instant::now()),
                _ = gauges.tick() => self.publish_counts(),
            }
        }
        self.publish_counts();
    }

    fn accept(&mut self, request: Request) {
        match request {
            Request::Advertise(keys, urgency) => self.plan.advertise(keys, urgency),
            Request::Withdraw(keys) => self.plan.withdraw(keys),
        }
    }

    /// Starts batches while there is room and work.
    fn dispatch(&mut self, in_flight: &mut FuturesUnordered<BoxFuture<'static, Landed>>) {
        while in_flight.len() < self.limits.concurrency && self.plan.has_queued() {
            let (provide, withdraw) = self.plan.take(self.limits.batch_size);
            if !withdraw.is_empty() {
                in_flight.push(Box::pin(withdraw_all(self.router.clone(), withdraw)));
            }
            if !provide.is_empty() {
                in_flight.push(Box::pin(provide_batch(self.router.clone(), provide)));
            }
        }
    }

    fn land(&mut self, landed: Landed) {
        let now = Instant::now();
        match landed {
            Landed::Provided { keys, failed, elapsed } => {
                let failures = failed.iter().filter(|f| **f).count();
                self.metrics.observe_advertise_batch(elapsed, keys.len() - failures);
                if failures > 0 {
                    self.metrics.advertise_failed(failures as u64);
                    tracing::debug!(failures, batch = keys.len(), "some keys could not be advertised; retrying later");
                }
                for (key, failed) in keys.into_iter().zip(failed) {
                    self.plan.finish(key, Action::Provide, !failed, now);
                }
            }
            Landed::Withdrawn { keys } => {
                for key in keys {
                    self.metrics.withdrew();
                    self.plan.finish(key, Action::Withdraw, true, now);
                }
            }
        }
    }

    fn publish_counts(&self) {
        let counts = self.plan.counts();
        self.metrics.set_advertise_pending(counts.pending);
        self.metrics.set_advertise_failed_keys(counts.failed);
        self.metrics.set_advertised_keys(counts.advertised);
    }
}

async fn provide_batch(router: Arc<dyn Router>, keys: Vec<Key>) -> Landed {
    let started = Instant::now();
    let results = router.provide_many(&keys).await;
    let mut failed: Vec<bool> = results.iter().map(Result::is_err).collect();
    // A router that answered for fewer keys than asked failed the rest.
    failed.resize(keys.len(), true);
    if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
        tracing::debug!(%error, "advertisement failed");
    }
    Landed::Provided { keys, failed, elapsed: started.elapsed() }
}

async fn withdraw_all(router: Arc<dyn Router>, keys: Vec<Key>) -> Landed {
    for key in &keys {
        if let Err(error) = router.withdraw(key).await {
            tracing::debug!(%key, %error, "withdraw failed");
        }
    }
    Landed::Withdrawn { keys }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
