//! Which nodes pull an image that has too few holders: a pure decision each
//! node takes alone, from what its router tells it.
//!
//! Every node that lacks the image ranks itself among the nodes it knows
//! that lack it too (itself and its connected peers), by rendezvous hashing
//! of (image, node name): the same order on every node with the same view.
//! If the image is `d` holders short, the first `d` in that order pull, with
//! two limits that keep the upstream and the holders from being swamped:
//! an image no node holds yet is seeded by one node (the only pull from the
//! upstream; the rest pull from peers in later rounds), and each holder
//! feeds at most [`FAN_OUT`] new ones a round, so an image pinned on every
//! node of a large cluster spreads 1, 9, 81, ... nodes a round instead of
//! every node pulling at once. When views differ (large clusters, churn) or
//! a pull outlasts a round, and a round passes without new holders, the cut
//! widens (twice, four times, ...), so the image always gets there; and since
//! every node re-counts holders before each round, it stops.

use sha2::{Digest as _, Sha256};

use crate::oci::TagRef;
use crate::routing::PeerName;

/// The widening of the cut stops doubling after this many stuck rounds.
const MAX_WIDENING: u32 = 8;
/// New holders one holder feeds in a round. A pull fetches a few layers at
/// once, and a holder uploads at most `--max-concurrent-uploads` (32) blobs
/// at a time before it turns peers away.
pub const FAN_OUT: usize = 8;

/// What one node knows about one image at the start of a round.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub image: &'a TagRef,
    pub me: &'a PeerName,
    pub held_here: bool,
    /// Live nodes other than this one that provide the image.
    pub holders: usize,
    /// Nodes that should hold it; `None` is every node.
    pub target: Option<usize>,
    /// Connected peers that do not hold it (this node excluded).
    pub contenders: &'a [PeerName],
    /// Rounds in a row that ended short of the target with no new holder.
    pub stuck_rounds: u32,
}

/// What this node does about the image this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// This node holds it already.
    Held,
    /// Enough other nodes hold it.
    Satisfied,
    /// This node is among those that should pull it now.
    Pull,
    /// Others come first; this node is `rank` in line for `slots` places.
    Wait { rank: usize, slots: usize },
}

pub fn decide(situation: &Situation<'_>) -> Decision {
    if situation.held_here {
        return Decision::Held;
    }
    let deficit = match situation.target {
        // Every node: this one and each connected peer without it.
        None => situation.contenders.len() + 1,
        Some(target) => target.saturating_sub(situation.holders),
    };
    if deficit == 0 {
        return Decision::Satisfied;
    }
    let now = match situation.holders {
        0 => 1,
        holders => deficit.min(holders.saturating_mul(FAN_OUT)),
    };
    let slots = now.saturating_mul(1 << situation.stuck_rounds.min(MAX_WIDENING));
    let rank = rank_of(situation.image, situation.me, situation.contenders);
    if rank < slots { Decision::Pull } else { Decision::Wait { rank, slots } }
}

/// This node's place among itself and `others`, best score first.
fn rank_of(image: &TagRef, me: &PeerName, others: &[PeerName]) -> usize {
    let mine = score(image, me);
    others.iter().filter(|other| *other != me && score(image, other) > mine).count()
}

/// The rendezvous score of `node` for `image`.
fn score(image: &TagRef, node: &PeerName) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(image.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(node.as_str().as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Whether rounds make progress for one image: counts rounds that end
/// short of the target without a new holder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    last_holders: Option<usize>,
    pub stuck_rounds: u32,
}

impl Progress {
    /// Records this round's holder count and whether it was short.
    pub fn observe(&mut self, holders: usize, short: bool) {
        let grew = self.last_holders.is_none_or(|last| holders > last);
        self.stuck_rounds = if !short || grew { 0 } else { self.stuck_rounds.saturating_add(1) };
        self.last_holders = Some(holders);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn image() -> TagRef {
        "registry.test/team/app:v1".parse().unwrap()
    }

    fn names(n: usize) -> Vec<PeerName> {
        (0..n).map(|i| PeerName::new(format!("node-{i}"))).collect()
    }

    /// Which of `nodes` pull when `holders` others hold it, each node seeing
    /// all the others.
    fn pullers(nodes: &[PeerName], holders: usize, target: Option<usize>, stuck: u32) -> Vec<PeerName> {
        let image = image();
        nodes
            .iter()
            .filter(|me| {
                let situation = Situation {
                    image: &image,
                    me,
                    held_here: false,
                    holders,
                    target,
                    contenders: nodes,
                    stuck_rounds: stuck,
                };
                decide(&situation) == Decision::Pull
            })
            .cloned()
            .collect()
    }

    #[test]
    fn exactly_the_deficit_pull_when_every_node_sees_the_same_peers() {
        let nodes = names(10);
        assert_eq!(pullers(&nodes, 1, Some(3), 0).len(), 2);
        assert_eq!(pullers(&nodes, 2, Some(9), 0).len(), 7);
        assert!(pullers(&nodes, 3, Some(3), 0).is_empty());
        assert!(pullers(&nodes, 5, Some(3), 0).is_empty());
    }

    #[test]
    fn one_node_seeds_a_new_image_and_each_holder_feeds_at_most_fan_out() {
        let nodes = names(200);
        let seed = pullers(&nodes, 0, Some(3), 0);
        assert_eq!(seed.len(), 1, "one pull from the upstream");
        assert_eq!(pullers(&nodes, 0, None, 0), seed, "the same seed, whatever the target");
        assert_eq!(pullers(&nodes, 1, None, 0).len(), FAN_OUT);
        assert_eq!(pullers(&nodes, 3, None, 0).len(), 3 * FAN_OUT);
        assert_eq!(pullers(&nodes, 30, None, 0).len(), 200, "every node once enough hold it");
        assert_eq!(pullers(&nodes, 1, Some(4), 0).len(), 3, "never more than the deficit");
    }

    #[test]
    fn the_same_nodes_are_chosen_every_round_and_other_images_spread() {
        let nodes = names(20);
        assert_eq!(pullers(&nodes, 0, Some(2), 0), pullers(&nodes, 0, Some(2), 0));
        let other: TagRef = "registry.test/team/other:v1".parse().unwrap();
        let spread = (0..20)
            .map(|i| format!("registry.test/team/app-{i}:v1").parse::<TagRef>().unwrap())
            .chain([other])
            .map(|image| nodes.iter().position(|me| rank_of(&image, me, &nodes) == 0).unwrap())
            .collect::<std::collections::HashSet<_>>();
        assert!(spread.len() > 5, "first choices spread over nodes: {spread:?}");
    }

    #[test]
    fn stuck_rounds_widen_the_cut() {
        let nodes = names(16);
        assert_eq!(pullers(&nodes, 0, Some(1), 1).len(), 2);
        assert_eq!(pullers(&nodes, 0, Some(1), 3).len(), 8);
        assert_eq!(pullers(&nodes, 0, Some(1), 100).len(), 16);
        assert_eq!(pullers(&nodes, 0, None, 2).len(), 4, "seeding widens too");
    }

    #[test]
    fn every_node_pulls_without_a_target_and_holders_never_pull() {
        let nodes = names(4);
        assert_eq!(pullers(&nodes, 1, None, 0).len(), 4);
        let image = image();
        let held = Situation {
            image: &image,
            me: &nodes[0],
            held_here: true,
            holders: 0,
            target: None,
            contenders: &nodes,
            stuck_rounds: 0,
        };
        assert_eq!(decide(&held), Decision::Held);
    }

    #[test]
    fn progress_counts_only_rounds_short_without_new_holders() {
        let mut progress = Progress::default();
        progress.observe(1, true);
        assert_eq!(progress.stuck_rounds, 0, "the first round is a baseline");
        progress.observe(1, true);
        progress.observe(1, true);
        assert_eq!(progress.stuck_rounds, 2);
        progress.observe(2, true);
        assert_eq!(progress.stuck_rounds, 0, "a new holder is progress");
        progress.observe(2, true);
        progress.observe(3, false);
        assert_eq!(progress.stuck_rounds, 0, "satisfied");
    }
}
