//! Popular content: which images other nodes have been pulling from this
//! one lately, the list of them this node tells its peers about, and the
//! bandwidth budget that bounds how much popular content a node pulls on
//! its own initiative.
//!
//! Owns: counting peer requests for tags served from local content (each
//! pull from a peer starts with one), over a sliding window, bounded in the
//! number of tags; the wire format of the hot list (`GET
//! /shoal/v1/popular`); and the budget, a token bucket in bytes per hour.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::oci::TagRef;

/// Tags tracked at most; the one whose last request is oldest goes first.
const MAX_TAGS: usize = 1024;
/// Request times kept per tag: enough to tell popular from not.
const MAX_PER_TAG: usize = 4096;

/// When an image counts as popular.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PopularityConfig {
    /// How far back peer requests count.
    pub window: Duration,
    /// Peer pulls within the window that make an image popular.
    pub threshold: usize,
}

impl Default for PopularityConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(10 * 60), threshold: 10 }
    }
}

/// Recent peer requests per tag. Cheap to clone; clones share counts.
#[derive(Clone)]
pub struct Popularity {
    config: PopularityConfig,
    /// A std mutex: updates are short and never cross `.await`.
    requests: Arc<Mutex<HashMap<TagRef, VecDeque<Instant>>>>,
}

impl Popularity {
    pub fn new(config: PopularityConfig) -> Self {
        Self { config, requests: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TagRef, VecDeque<Instant>>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A peer asked this node for `tag` and was served.
    pub fn record(&self, tag: &TagRef) {
        self.record_at(tag, Instant::now());
    }

    fn record_at(&self, tag: &TagRef, now: Instant) {
        let mut requests = self.lock();
        if !requests.contains_key(tag) && requests.len() >= MAX_TAGS {
            let stalest = requests.iter().min_by_key(|(_, times)| times.back().copied()).map(|(t, _)| t.clone());
            if let Some(stalest) = stalest {
                requests.remove(&stalest);
            }
        }
        let times = requests.entry(tag.clone()).or_default();
        if times.len() == MAX_PER_TAG {
            times.pop_front();
        }
        times.push_back(now);
    }

    /// Tags requested at least `threshold` times within the window, most
    /// requested first.
    pub fn hot(&self) -> Vec<(TagRef, usize)> {
        self.hot_at(Instant::now())
    }

    fn hot_at(&self, now: Instant) -> Vec<(TagRef, usize)> {
        let mut requests = self.lock();
        requests.retain(|_, times| {
            while times.front().is_some_and(|t| now.saturating_duration_since(*t) > self.config.window) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let mut hot: Vec<(TagRef, usize)> = requests
            .iter()
            .filter(|(_, times)| times.len() >= self.config.threshold)
            .map(|(tag, times)| (tag.clone(), times.len()))
            .collect();
        hot.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hot
    }
}

/// One entry of a node's hot list, as sent to peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HotImage {
    /// `registry/repository:tag`.
    pub image: String,
    /// Peer pulls within the window.
    pub requests: usize,
    /// The image's size as the serving node holds it, if known.
    pub bytes: Option<u64>,
}

/// The body of `GET /shoal/v1/popular`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HotList {
    pub images: Vec<HotImage>,
}

/// How many bytes of popular content this node may pull per hour.
#[derive(Debug)]
pub struct Budget {
    per_hour: f64,
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    /// Starts full: a node may use one hour's budget at once.
    pub fn new(bytes_per_hour: u64) -> Self {
        let per_hour = bytes_per_hour as f64;
        Self { per_hour, tokens: per_hour, refilled: Instant::now() }
    }

    /// Spends `bytes` if the budget allows it now.
    pub fn try_spend(&mut self, bytes: u64) -> bool {
        self.try_spend_at(bytes, Instant::now())
    }

    fn try_spend_at(&mut self, bytes: u64, now: Instant) -> bool {
        let hours = now.saturating_duration_since(self.refilled).as_secs_f64() / 3600.0;
        self.tokens = (self.tokens + hours * self.per_hour).min(self.per_hour);
        self.refilled = now;
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tag(name: &str) -> TagRef {
        format!("registry.test/team/{name}:v1").parse().unwrap()
    }

    #[test]
    fn images_requested_often_within_the_window_are_hot() {
        let popularity = Popularity::new(PopularityConfig { window: Duration::from_secs(60), threshold: 3 });
        let start = Instant::now();
        for i in 0..4 {
            popularity.record_at(&tag("app"), start + Duration::from_secs(i));
        }
        for i in 0..2 {
            popularity.record_at(&tag("db"), start + Duration::from_secs(i));
        }
        assert_eq!(popularity.hot_at(start + Duration::from_secs(5)), vec![(tag("app"), 4)]);
        // Two of app's requests age out of the window.
        assert!(popularity.hot_at(start + Duration::from_secs(62)).is_empty());
    }

    #[test]
    fn tracking_is_bounded() {
        let popularity = Popularity::new(PopularityConfig { window: Duration::from_secs(60), threshold: 1 });
        let start = Instant::now();
        for i in 0..=MAX_TAGS {
            popularity.record_at(&tag(&format!("app-{i}")), start + Duration::from_millis(i as u64));
        }
        assert_eq!(popularity.lock().len(), MAX_TAGS);
        assert!(!popularity.lock().contains_key(&tag("app-0")), "the stalest tag left");
        for _ in 0..MAX_PER_TAG + 5 {
            popularity.record_at(&tag("busy"), start);
        }
        assert_eq!(popularity.lock()[&tag("busy")].len(), MAX_PER_TAG);
    }

    #[test]
    fn the_budget_refills_over_the_hour_and_never_beyond_it() {
        let start = Instant::now();
        let mut budget = Budget { per_hour: 1000.0, tokens: 1000.0, refilled: start };
        assert!(budget.try_spend_at(800, start));
        assert!(!budget.try_spend_at(300, start));
        assert!(budget.try_spend_at(300, start + Duration::from_secs(360)), "a tenth of an hour adds 100");
        assert!(!budget.try_spend_at(1001, start + Duration::from_secs(100 * 3600)), "capped at one hour's worth");
    }

    #[test]
    fn the_hot_list_round_trips_as_json() {
        let list = HotList { images: vec![HotImage { image: tag("app").to_string(), requests: 12, bytes: Some(9) }] };
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<HotList>(&text).unwrap(), list);
    }
}
