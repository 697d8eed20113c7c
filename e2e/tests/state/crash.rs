//! Crash safety on the real binary: `kill -9` at random points (during
//! start-up, recovery, the reconcile, advertising) in a bounded loop while
//! containerd's content changes between runs. The state file is never set
//! aside, the identity never changes once persisted, and the last run ends
//! with an index and an advertised set that match containerd exactly.
//!
//! A real containerd and `shoal` on 127.0.4.41; nothing leaves loopback.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::binary::{ShoalNode, eventually, free_port_on, ip, peer_request};
use crate::seed::{SeededImage, layers, seed_image};
use crate::seeder::seeder;
use anyhow::{Result, ensure};
use http::StatusCode;
use shoal::content::contract::Seeder;
use shoal::metrics::Metrics;
use shoal::oci::Key;
use shoal::state::State;
use shoal_e2e::containerd::Containerd;
use tokio_util::task::TaskTracker;

/// Kills in the loop (each run lives at most `MAX_LIFETIME`).
const KILLS: usize = 10;
const MAX_LIFETIME: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_never_corrupts_the_state() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("shoal-crash-").tempdir()?;
    let containerd = Containerd::start_temporary().await?;
    let seeder = seeder(&containerd, "k8s.io").await?;
    let mut images: Vec<SeededImage> = Vec::new();
    for i in 0..6 {
        images
            .push(seed_image(&seeder, &format!("registry.test/app-{i}:v1"), &layers(&format!("{i}"), 3, 2000)).await?);
    }
    let data_dir = dir.path().join("data");
    let mut node = ShoalNode::new(41, free_port_on(&[ip(41)])?, dir.path())?;
    node.data_dir = Some(data_dir.clone());
    node.containerd = Some((containerd.socket(), containerd.content_dir()));

    // A fixed seed repeats a failure; SHOAL_CRASH_SEED tries other kill points.
    let seed = std::env::var("SHOAL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(41);
    println!("kill points from seed {seed}");
    let mut rng = SplitMix(seed);
    let mut identity: Option<String> = None;
    let mut next_image = images.len();
    for kill in 0..KILLS {
        node.start(&[])?;
        tokio::time::sleep(MAX_LIFETIME.mul_f64(rng.fraction())).await;
        node.kill9()?;
        if let (Some(name), Some(mode)) =
            (node.log_field("state loaded", "name"), node.log_field("state loaded", "mode"))
        {
            ensure!(mode != "rebuilt", "run {kill} found the state unusable:\n{}", node.log_tail());
            match &identity {
                Some(first) => ensure!(*first == name, "run {kill} changed identity"),
                None => identity = Some(name),
            }
        }
        // containerd changes while the node is down: an image goes, or one comes.
        if rng.fraction() < 0.5 && images.len() > 2 {
            let gone = images.remove(rng.below(images.len()));
            seeder.delete_image(&gone.name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            for digest in gone.digests() {
                seeder.delete_blob(&digest).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        } else {
            let name = format!("registry.test/app-{next_image}:v1");
            images.push(seed_image(&seeder, &name, &layers(&format!("{next_image}"), 3, 2000)).await?);
            next_image += 1;
        }
    }

    node.start(&[])?;
    let (name, mode) = node.identity_and_mode().await?;
    assert_eq!(mode, "recovered");
    if let Some(first) = identity {
        assert_eq!(name, first, "one identity across every kill");
    }
    assert!(!data_dir.join("state.redb.corrupt").exists(), "nothing was ever set aside");
    let keys: BTreeSet<_> = images.iter().flat_map(SeededImage::keys).collect();
    eventually("the node advertises exactly containerd's keys", || async {
        node.metric("shoal_advertised_keys").await == Some(keys.len() as f64)
    })
    .await?;
    for image in &images {
        let served = peer_request(&node, "app", &image.layers[0].to_string()).await;
        assert!(matches!(served, Some((StatusCode::OK, _))), "{} is served", image.name);
    }
    assert!(node.terminate().await?.success());

    // CRI adds digest-named records for the same images; the keys are what must match.
    let (_state, loaded) = State::open(Some(&data_dir), &TaskTracker::new(), &Metrics::new()?)?;
    let mut persisted = BTreeSet::new();
    for image in &loaded.images {
        persisted.extend(image.blobs.iter().map(|b| Key::Digest(b.digest)));
        persisted.extend(image.tag.clone().map(Key::Tag));
    }
    assert_eq!(persisted, keys, "the persisted index matches containerd");
    Ok(())
}

/// A small seeded generator (splitmix64): the kill points repeat for a seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.fraction() * n as f64) as usize % n.max(1)
    }
}
