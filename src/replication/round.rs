//! One replication round: pinned images first (always), then popular
//! images from peers' hot lists (within the budget), each decided by
//! `plan` from the live holders the router reports; then pins are brought
//! in line with the pinned list.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use rand::seq::SliceRandom;

use super::plan::{Decision, Situation, decide};
use super::{PinnedImage, Replicator, RoundReport, pins};
use crate::oci::{Key, TagRef};
use crate::routing::PeerName;

/// Most providers counted per image: the DHT keeps at most 20 per key, so a
/// target above that is treated as "as many as can be seen".
const LOOKUP_LIMIT: usize = 20;

/// A popular image as peers describe it.
struct Popular {
    image: TagRef,
    bytes: Option<u64>,
}

/// Whether a pull is mandatory (pinned) or discretionary (popular).
enum Why {
    Pinned,
    Popular { bytes: Option<u64> },
}

impl Replicator {
    /// Runs one round and reports what happened to each image.
    pub async fn round(&self) -> RoundReport {
        let mut report = RoundReport::default();
        let pinned = pins::load(&self.config.pinned, self.config.pinned_file.as_deref());
        for pin in &pinned {
            let target = pin.replicas.or(self.config.replicas);
            self.consider(&pin.image, target, Why::Pinned, &mut report).await;
        }
        if self.config.popular_replicas > 0 {
            let pinned_names: HashSet<&TagRef> = pinned.iter().map(|p| &p.image).collect();
            for popular in self.popular().await.into_iter().filter(|p| !pinned_names.contains(&p.image)) {
                let why = Why::Popular { bytes: popular.bytes };
                self.consider(&popular.image, Some(self.config.popular_replicas), why, &mut report).await;
            }
        }
        self.pin(&pinned).await;
        self.metrics.set_replication_images(&[
            ("held", report.held.len()),
            ("satisfied", report.satisfied.len()),
            ("waiting", report.waiting.len()),
            ("pulled", report.pulled.len()),
            ("failed", report.failed.len()),
            ("over_budget", report.over_budget.len()),
        ]);
        report
    }

    async fn consider(&self, image: &TagRef, target: Option<usize>, why: Why, report: &mut RoundReport) {
        let held_here = self.index.tag(image).is_some();
        let holders = if held_here { HashSet::new() } else { self.live_holders(image).await };
        let contenders: Vec<PeerName> =
            self.router.links().connected().into_iter().filter(|p| !holders.contains(p) && *p != self.me).collect();
        let stuck_rounds = {
            let mut state = self.lock_state();
            let progress = state.progress.entry(image.clone()).or_default();
            progress.observe(holders.len(), !held_here && target.is_none_or(|t| holders.len() < t));
            progress.stuck_rounds
        };
        let situation = Situation {
            image,
            me: &self.me,
            held_here,
            holders: holders.len(),
            target,
            contenders: &contenders,
            stuck_rounds,
        };
        match decide(&situation) {
            Decision::Held => report.held.push(image.clone()),
            Decision::Satisfied => report.satisfied.push(image.clone()),
            Decision::Wait { rank, slots } => {
                tracing::debug!(%image, rank, slots, holders = holders.len(), "others pull first");
                report.waiting.push(image.clone());
            }
            Decision::Pull => {
                if let Why::Popular { bytes } = why
                    && !self.spend(bytes)
                {
                    tracing::info!(%image, ?bytes, "popular image over the replication budget");
                    report.over_budget.push(image.clone());
                    return;
                }
                self.pull(image, holders.len(), report).await;
            }
        }
    }

    async fn pull(&self, image: &TagRef, holders: usize, report: &mut RoundReport) {
        tracing::info!(%image, holders, "replicating: pulling through the local mirror");
        match self.puller.pull(image).await {
            Ok(()) => {
                self.metrics.replication_pulled(true);
                report.pulled.push(image.clone());
            }
            Err(error) => {
                tracing::warn!(%image, %error, "replication pull failed");
                self.metrics.replication_pulled(false);
                report.failed.push(image.clone());
            }
        }
    }

    /// Nodes other than this one that provide `image`'s tag, leaving out
    /// peers whose connection is known to be down (their records linger).
    async fn live_holders(&self, image: &TagRef) -> HashSet<PeerName> {
        let links = self.router.links();
        let providers: Vec<_> = self.router.lookup(&Key::Tag(image.clone()), LOOKUP_LIMIT).collect().await;
        providers
            .into_iter()
            .filter(|p| p.name != self.me && links.get(&p.name).is_none_or(|link| link.connected))
            .map(|p| p.name)
            .collect()
    }

    /// Whether the budget allows pulling `bytes` of popular content now. An
    /// image of unknown size is not pulled: the budget could not bound it.
    fn spend(&self, bytes: Option<u64>) -> bool {
        bytes.is_some_and(|bytes| self.lock_state().budget.try_spend(bytes))
    }

    /// Hot lists from a few random connected peers, merged.
    async fn popular(&self) -> Vec<Popular> {
        let links = self.router.links();
        let mut endpoints: Vec<_> = links.connected().iter().filter_map(|peer| links.get(peer)?.endpoint).collect();
        endpoints.shuffle(&mut rand::rng());
        endpoints.truncate(self.config.gossip_fanout);
        let lists = futures::future::join_all(endpoints.iter().map(|e| self.gossip.hot_list(*e))).await;
        let mut merged: HashMap<TagRef, Option<u64>> = HashMap::new();
        for (endpoint, list) in endpoints.iter().zip(lists) {
            match list {
                Ok(list) => {
                    for hot in list.images {
                        match hot.image.parse::<TagRef>() {
                            Ok(image) => {
                                let bytes = merged.entry(image).or_default();
                                *bytes = (*bytes).max(hot.bytes);
                            }
                            Err(error) => tracing::debug!(%endpoint, %error, "ignoring a bad hot list entry"),
                        }
                    }
                }
                Err(error) => tracing::debug!(%endpoint, %error, "no hot list from peer"),
            }
        }
        let mut popular: Vec<Popular> = merged.into_iter().map(|(image, bytes)| Popular { image, bytes }).collect();
        popular.sort_by(|a, b| a.image.cmp(&b.image));
        popular
    }

    /// Protects the pinned images that are present; releases earlier pins.
    async fn pin(&self, pinned: &[PinnedImage]) {
        let images: Vec<TagRef> = pinned.iter().map(|p| p.image.clone()).collect();
        if let Err(error) = self.puller.pin(&images).await {
            tracing::warn!(%error, "cannot pin images");
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, super::State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
