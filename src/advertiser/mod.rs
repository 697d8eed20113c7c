//! Keeps the DHT and the state file in step with the content index.
//!
//! Owns: applying containerd events to the index, persisting each applied
//! change (one state transaction per change, written before anything is
//! announced), and feeding the keys that appear and disappear to the
//! advertisement pipeline. At start-up with persisted state it restores the
//! index and queues the persisted keys at once ([`Advertiser::recover`]); the
//! first rescan then reconciles: only the difference is announced or
//! withdrawn.
//!
//! # Layout
//! - `plan`: per-key bookkeeping: what is wanted, queued, due, failed.
//! - `pipeline`: the task that hands batches to the router with bounded
//!   concurrency, retries with backoff and spreads re-advertisements.
//!
//! Never waits for the DHT while handling an event: a long re-advertisement
//! runs in the pipeline beside the event loop.

mod pipeline;
mod plan;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::content::{ContentEvent, ContentIndex, IndexedImage, KeyChanges};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::routing::Router;
use crate::state::{ImageUpdate, State};
use pipeline::{Limits, Pipeline, PipelineHandle};
use plan::{Plan, Urgency};

/// How and how often keys are advertised.
#[derive(Debug, Clone)]
pub struct AdvertiserConfig {
    /// Every key is advertised again about this often (well inside the
    /// provider TTL), each at its own jittered time; containerd is rescanned
    /// at this interval too, to repair any missed event.
    pub readvertise_interval: Duration,
    /// Batches handed to the router at once.
    pub concurrency: usize,
    /// Keys in one batch.
    pub batch_size: usize,
}

impl AdvertiserConfig {
    /// Keys per batch unless configured.
    pub const DEFAULT_BATCH_SIZE: usize = 256;

    /// Batches in flight unless configured: two per CPU.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from) * 2
    }
}

/// Drives the index from containerd events, and the state and the DHT from the index.
pub struct Advertiser {
    index: ContentIndex,
    state: State,
    metrics: Metrics,
    health: Health,
    readvertise_interval: Duration,
    pipeline: Pipeline,
    handle: PipelineHandle,
}

impl Advertiser {
    pub fn new(
        index: ContentIndex,
        router: Arc<dyn Router>,
        state: State,
        metrics: Metrics,
        health: Health,
        config: AdvertiserConfig,
    ) -> Self {
        let plan = Plan::new(config.readvertise_interval);
        let limits = Limits { concurrency: config.concurrency, batch_size: config.batch_size };
        let (pipeline, handle) = Pipeline::new(plan, router, metrics.clone(), limits);
        let readvertise_interval = config.readvertise_interval.max(Duration::from_secs(1));
        Self { index, state, metrics, health, readvertise_interval, pipeline, handle }
    }

    /// Recovery: restores the index from persisted images so local content is
    /// served at once, and queues every persisted key to be advertised as
    /// soon as the pipeline runs. Returns the number of keys queued.
    pub fn recover(&mut self, images: Vec<IndexedImage>) -> usize {
        if images.is_empty() {
            return 0;
        }
        self.index.restore(images);
        let keys = self.index.keys();
        self.health.set_content_indexed();
        tracing::info!(images = self.index.image_count(), keys = keys.len(), "recovered the index from the state file");
        let count = keys.len();
        self.pipeline.seed(keys);
        count
    }

    /// Runs until `token` is cancelled or the event source closes.
    pub async fn run(self, events: mpsc::Receiver<ContentEvent>, token: CancellationToken) {
        let Self { index, state, metrics, health, readvertise_interval, pipeline, handle } = self;
        let events_loop = EventLoop { index, state, metrics, health, handle };
        // The pipeline ends with the token, or when the event loop drops its handle.
        tokio::join!(pipeline.run(token.clone()), events_loop.run(events, readvertise_interval, token));
    }
}

struct EventLoop {
    index: ContentIndex,
    state: State,
    metrics: Metrics,
    health: Health,
    handle: PipelineHandle,
}

impl EventLoop {
    async fn run(self, mut events: mpsc::Receiver<ContentEvent>, repair_interval: Duration, token: CancellationToken) {
        let mut repair = tokio::time::interval_at(Instant::now() + repair_interval, repair_interval);
        repair.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = repair.tick() => self.rescan().await,
            }
        }
    }

    async fn handle(&self, event: ContentEvent) {
        tracing::debug!(?event, "content event");
        match event {
            ContentEvent::Connected => {
                self.metrics.set_containerd_connected(true);
                self.rescan().await;
            }
            ContentEvent::Disconnected => self.metrics.set_containerd_connected(false),
            ContentEvent::ImageChanged { name } => match self.index.refresh_image(&name).await {
                Ok(changes) => {
                    let update = match self.index.image(&name) {
                        Some(image) => ImageUpdate::Put(image),
                        None => ImageUpdate::Remove(name),
                    };
                    self.commit(update, changes).await;
                }
                Err(error) => tracing::warn!(%name, %error, "cannot index an image"),
            },
            ContentEvent::ImageDeleted { name } => {
                let changes = self.index.remove_image(&name);
                self.commit(ImageUpdate::Remove(name), changes).await;
            }
            ContentEvent::ContentDeleted { digest } => {
                let changes = self.index.remove_blob(&digest);
                if !changes.is_empty() {
                    self.commit(ImageUpdate::Replace(self.index.images()), changes).await;
                }
            }
        }
    }

    /// Rebuilds the index from containerd and reconciles: persists the new
    /// index, then withdraws what disappeared and advertises what appeared.
    async fn rescan(&self) {
        match self.index.rescan().await {
            Ok(changes) => {
                self.health.set_content_indexed();
                tracing::info!(
                    images = self.index.image_count(),
                    keys = self.index.keys().len(),
                    added = changes.added.len(),
                    removed = changes.removed.len(),
                    "content indexed"
                );
                self.commit(ImageUpdate::Replace(self.index.images()), changes).await;
            }
            Err(error) => tracing::warn!(%error, "cannot index containerd content"),
        }
    }

    /// Persists `update` (one transaction), then queues the key changes. A
    /// failed write is logged and counted; the index in memory stays right,
    /// and the next rescan rewrites the file.
    async fn commit(&self, update: ImageUpdate, changes: KeyChanges) {
        let _ = self.state.update_images(update).await;
        if !changes.is_empty() {
            tracing::debug!(added = changes.added.len(), removed = changes.removed.len(), "content changed");
        }
        self.handle.withdraw(changes.removed).await;
        self.handle.advertise(changes.added, Urgency::Urgent).await;
    }
}
