//! Active replication: keeping the images an operator names warm on at
//! least R nodes, and spreading popular images to more nodes, by making this
//! node's container runtime pull them through the normal path (Shoal's
//! mirror first, so peers serve them, and the upstream registry last).
//!
//! Owns: the replication rounds (`round`): which images to consider
//! (`pins`, and peers' hot lists via `gossip`), counting live holders
//! through the router, the pull decision (`plan`, rendezvous hashing so the
//! right number of nodes pull, not all of them), the bandwidth budget for
//! popular pulls (`popular`), and pinning (`puller`, `cri`). Counting peer
//! requests per tag (`Popularity`) lives here too; the registry records
//! into it and serves the hot list.
//!
//! Does not fetch content itself: the runtime does, through `registry` and
//! `mirror`, exactly like a pull the kubelet starts.

pub mod cri;
pub mod gossip;
pub mod pins;
pub mod plan;
pub mod popular;
pub mod puller;
mod round;
pub mod size;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::content::ContentIndex;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::oci::TagRef;
use crate::routing::{PeerName, Router};
pub use cri::{CriConfig, CriPuller};
pub use pins::PinnedImage;
pub use popular::{HotImage, HotList, Popularity, PopularityConfig};
pub use puller::{ImagePuller, PullError};

/// What to keep warm, and how hard to try.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Images named on the command line.
    pub pinned: Vec<PinnedImage>,
    /// A file of images (e.g. a mounted ConfigMap), re-read every round.
    pub pinned_file: Option<PathBuf>,
    /// Nodes that should hold each pinned image; `None` is every node.
    pub replicas: Option<usize>,
    /// Time between rounds.
    pub interval: Duration,
    /// Nodes that should hold each popular image; 0 turns it off.
    pub popular_replicas: usize,
    /// Bytes of popular images this node may pull per hour.
    pub budget_bytes_per_hour: u64,
    /// Peers asked for their hot list each round.
    pub gossip_fanout: usize,
}

impl ReplicationConfig {
    /// Whether there is anything to do at all.
    pub fn is_active(&self) -> bool {
        !self.pinned.is_empty() || self.pinned_file.is_some() || self.popular_replicas > 0
    }
}

/// What one round did with each image it considered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// Held here already.
    pub held: Vec<TagRef>,
    /// Enough other nodes hold it.
    pub satisfied: Vec<TagRef>,
    /// Other nodes are first in line to pull it.
    pub waiting: Vec<TagRef>,
    /// Pulled this round.
    pub pulled: Vec<TagRef>,
    /// The pull failed.
    pub failed: Vec<TagRef>,
    /// Popular, but its size is over what is left of the budget (or unknown).
    pub over_budget: Vec<TagRef>,
}

/// Runs replication rounds for one node. Cheap to share.
pub struct Replicator {
    me: PeerName,
    router: Arc<dyn Router>,
    index: ContentIndex,
    puller: Arc<dyn ImagePuller>,
    gossip: gossip::Gossip,
    metrics: Metrics,
    config: ReplicationConfig,
    /// A std mutex: never held across `.await`.
    state: Mutex<State>,
}

struct State {
    progress: HashMap<TagRef, plan::Progress>,
    budget: popular::Budget,
}

impl Replicator {
    /// `me` is this node's name as peers see it.
    pub fn new(
        me: PeerName,
        router: Arc<dyn Router>,
        index: ContentIndex,
        puller: Arc<dyn ImagePuller>,
        metrics: Metrics,
        config: ReplicationConfig,
    ) -> Self {
        let state = State { progress: HashMap::new(), budget: popular::Budget::new(config.budget_bytes_per_hour) };
        Self { me, router, index, puller, gossip: gossip::Gossip::default(), metrics, config, state: Mutex::new(state) }
    }

    /// Runs a round every interval (with ±10 % jitter so nodes do not act in
    /// lockstep) while the node is ready, until `token` is cancelled. A pull
    /// in progress is abandoned on cancel; the runtime finishes or drops it.
    pub async fn run(self, health: Health, token: CancellationToken) {
        loop {
            let jitter = self.config.interval.mul_f64(rand::random_range(0.9..1.1));
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep_until(Instant::now() + jitter) => {}
            }
            if !health.is_ready() {
                tracing::debug!("replication round skipped: node not ready");
                continue;
            }
            tokio::select! {
                () = token.cancelled() => return,
                report = self.round() => tracing::debug!(?report, "replication round done"),
            }
        }
    }
}
