//! Keeps the DHT in step with the content index.
//!
//! Owns: applying containerd events to the index, advertising the keys that
//! appear and withdrawing the ones that disappear, and re-advertising every
//! key before its provider records expire. Bulk work runs with bounded
//! concurrency, never one key at a time.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::content::{ContentEvent, ContentIndex, KeyChanges};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::oci::Key;
use crate::routing::Router;

/// How and how often keys are advertised.
#[derive(Debug, Clone)]
pub struct AdvertiserConfig {
    /// Every key is advertised again this often (well inside the provider TTL).
    pub readvertise_interval: Duration,
    /// Advertisements in flight at once.
    pub concurrency: usize,
}

/// Drives the index from containerd events and the DHT from the index.
pub struct Advertiser {
    index: ContentIndex,
    router: Arc<dyn Router>,
    metrics: Metrics,
    health: Health,
    config: AdvertiserConfig,
}

impl Advertiser {
    pub fn new(
        index: ContentIndex,
        router: Arc<dyn Router>,
        metrics: Metrics,
        health: Health,
        config: AdvertiserConfig,
    ) -> Self {
        Self { index, router, metrics, health, config }
    }

    /// Runs until `token` is cancelled or the event source closes.
    pub async fn run(self, mut events: mpsc::Receiver<ContentEvent>, token: CancellationToken) {
        let period = self.config.readvertise_interval.max(Duration::from_secs(1));
        let mut readvertise = tokio::time::interval_at(Instant::now() + period, period);
        readvertise.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = readvertise.tick() => self.refresh_all().await,
            }
        }
    }

    async fn handle(&self, event: ContentEvent) {
        tracing::debug!(?event, "content event");
        let changes = match event {
            ContentEvent::Connected => {
                self.metrics.set_containerd_connected(true);
                self.rescan().await
            }
            ContentEvent::Disconnected => {
                self.metrics.set_containerd_connected(false);
                return;
            }
            ContentEvent::ImageChanged { name } => match self.index.refresh_image(&name).await {
                Ok(changes) => changes,
                Err(error) => {
                    tracing::warn!(%name, %error, "cannot index an image");
                    return;
                }
            },
            ContentEvent::ImageDeleted { name } => self.index.remove_image(&name),
            ContentEvent::ContentDeleted { digest } => self.index.remove_blob(&digest),
        };
        self.apply(changes).await;
    }

    /// Rebuilds the index from containerd; marks local content servable.
    async fn rescan(&self) -> KeyChanges {
        match self.index.rescan().await {
            Ok(changes) => {
                self.health.set_content_indexed();
                tracing::info!(images = self.index.image_count(), keys = self.index.keys().len(), "content indexed");
                changes
            }
            Err(error) => {
                tracing::warn!(%error, "cannot index containerd content");
                KeyChanges::default()
            }
        }
    }

    /// Reconciles with containerd (repairing any missed event), then
    /// re-advertises every key.
    async fn refresh_all(&self) {
        let changes = self.rescan().await;
        self.withdraw(changes.removed).await;
        self.provide(self.index.keys()).await;
    }

    async fn apply(&self, changes: KeyChanges) {
        if changes.is_empty() {
            return;
        }
        tracing::debug!(added = changes.added.len(), removed = changes.removed.len(), "content changed");
        self.withdraw(changes.removed).await;
        self.provide(changes.added).await;
    }

    async fn provide(&self, keys: Vec<Key>) {
        self.metrics.set_advertised_keys(self.index.keys().len());
        let failed = futures::stream::iter(keys)
            .map(|key| async move { self.router.provide(&key).await })
            .buffer_unordered(self.config.concurrency.max(1))
            .filter(|result| std::future::ready(result.is_err()))
            .count()
            .await;
        self.metrics.advertise_failed(failed as u64);
        if failed > 0 {
            tracing::warn!(failed, "some keys could not be advertised; they are retried at the next re-advertisement");
        }
    }

    async fn withdraw(&self, keys: Vec<Key>) {
        self.metrics.set_advertised_keys(self.index.keys().len());
        futures::stream::iter(keys)
            .map(|key| async move {
                if let Err(error) = self.router.withdraw(&key).await {
                    tracing::debug!(%key, %error, "withdraw failed");
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect::<()>()
            .await;
    }
}
