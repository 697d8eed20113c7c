//! h. An image is deleted on node 1: Shoal withdraws its digests at once
//! (node 1 answers 404 to every forwarded request for them, and advertises
//! nothing), pulls on other nodes keep succeeding, and once the provider
//! records' TTL has passed (6 s here) the DHT no longer names node 1, so no
//! node chooses it: its not-found counter and the puller's failures stay put.
//!
//! A DHT probe in the test process (a bare router on 127.0.0.99) observes the
//! records' expiry, so the test waits for a condition, not for a sleep.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use http::Method;
use shoal::mirror::MIRRORED_HEADER;
use shoal::oci::Key;
use shoal_e2e::http as client;
use shoal_e2e::probe::DhtProbe;
use shoal_e2e::registry::REGISTRY_ADDR;
use shoal_e2e::scenario::{KIB, MIB, Scenario, ensure_within};
use shoal_e2e::shoal::REGISTRY_PORT;
use shoal_e2e::wait::poll_until;
use shoal_e2e::{BuiltImage, ClusterOptions, ImageSpec};

use crate::support::blob_bytes;

const TTL: Duration = Duration::from_secs(6);
/// Outside the nodes' addresses (127.0.0.1 ..= 127.0.0.10).
const PROBE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(30);
/// The TTL plus a generous margin for the records' last refresh.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(40);
const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_a_deleted_image_is_withdrawn_and_its_holder_stops_being_chosen() -> Result<()> {
    let args = ["--provider-ttl", "6s", "--readvertise-interval", "2s"].map(str::to_owned).to_vec();
    let mut s = Scenario::start("h", &ClusterOptions { shoal_args: args, ..ClusterOptions::with_shoal(4) }).await?;
    let image = s.push(&ImageSpec::multi_arch("e2e/h", "v1", &[4 * KIB, 256 * KIB, MIB])).await?;
    s.pull(1, &image).await?;
    s.wait_servable(2, &image).await?;
    s.pull(2, &image).await?;
    s.stop_upstream()?;

    let probe = DhtProbe::join(PROBE_IP, s.cluster.node(2)?.ip, TTL).await?;
    let keys: Vec<Key> = image.pulled_digests()?.iter().map(|d| d.parse()).collect::<Result<_, _>>()?;
    let node1 = SocketAddr::from((s.cluster.node(1)?.ip, REGISTRY_PORT));
    poll_until("the DHT to name node 1 for every digest", WITHDRAW_TIMEOUT, || async {
        Ok(dht_names(&probe, &keys, node1).await.iter().all(|named| *named).then_some(()))
    })
    .await?;

    s.cluster.node(1)?.cri().remove(&s.reference(&image)).await?;
    let not_found_before = s.metrics(1).await?.peer_requests("not_found");
    poll_until("node 1 to refuse every deleted digest to peers", WITHDRAW_TIMEOUT, || async {
        Ok(node_refuses_all(&s, 1, &image).await?.then_some(()))
    })
    .await?;
    let withdrawn_at = Instant::now();
    let metrics = s.metrics(1).await?;
    let refused = metrics.peer_requests("not_found") - not_found_before;
    ensure!(
        refused >= keys.len() as f64,
        "node 1 counted {refused} not-found peer requests for {} digests",
        keys.len()
    );
    // The advertised-keys gauge is refreshed about once a second.
    poll_until("node 1's advertised-keys gauge to reach 0", WITHDRAW_TIMEOUT, || async {
        Ok((s.metrics(1).await?.value("shoal_advertised_keys") == Some(0.0)).then_some(()))
    })
    .await?;

    // Node 1's records are still alive: node 3 may try it, gets a 404, and moves on.
    let needed = image.host_platform()?.blob_bytes() as f64;
    let elapsed = s.pull(3, &image).await?;
    ensure_within(elapsed, BOUND, "node 3's pull right after the deletion")?;
    let node3 = s.metrics(3).await?;
    ensure!(blob_bytes(&node3, "peer") >= needed, "node 3 did not get the image from peers: {node3:?}");
    eprintln!("[scenario h] node 3 asked node 1 and got 404 {} times", node3.fetch_failures("not_found"));

    poll_until("the DHT to forget node 1 once the TTL has passed", EXPIRY_TIMEOUT, || async {
        let named = dht_names(&probe, &keys, node1).await;
        let expired = withdrawn_at.elapsed() >= TTL && !named.iter().any(|named| *named);
        Ok(expired.then_some(()))
    })
    .await?;
    s.report("the DHT forgot node 1 after the withdrawal", withdrawn_at.elapsed());

    let node1_before = s.metrics(1).await?;
    let node4_before = s.metrics(4).await?;
    let elapsed = s.pull(4, &image).await?;
    ensure_within(elapsed, BOUND, "node 4's pull after the TTL")?;
    let node1_after = s.metrics(1).await?;
    let node4_after = s.metrics(4).await?;
    for result in ["not_found", "served"] {
        let asked = node1_after.peer_requests(result) - node1_before.peer_requests(result);
        ensure!(asked == 0.0, "node 1 was still chosen after the TTL: {asked} more `{result}` peer requests");
    }
    let failures = node4_after.all_fetch_failures() - node4_before.all_fetch_failures();
    ensure!(failures == 0.0, "node 4 had {failures} failed peer attempts: it still tried node 1");
    ensure!(blob_bytes(&node4_after, "peer") >= needed, "node 4 did not get the image from peers");
    s.verify_content(4, &image)?;
    drop(probe);
    s.finish().await
}

/// For each key, whether the DHT names `endpoint` as one of its providers.
async fn dht_names(probe: &DhtProbe, keys: &[Key], endpoint: SocketAddr) -> Vec<bool> {
    let mut named = Vec::new();
    for key in keys {
        named.push(probe.providers(key).await.contains(&endpoint));
    }
    named
}

/// Whether node `node` answers 404 to a forwarded GET of every digest a pull of `image` fetches.
async fn node_refuses_all(s: &Scenario, node: usize, image: &BuiltImage) -> Result<bool> {
    let base = format!("http://{}:{REGISTRY_PORT}/v2/{}", s.cluster.node(node)?.ip, image.spec.repository);
    let platform = image.host_platform()?;
    let manifests = [&image.top, &platform.manifest].map(|d| format!("{base}/manifests/{}", d.digest));
    let blobs = platform.blobs().into_iter().map(|d| format!("{base}/blobs/{}", d.digest));
    for url in manifests.into_iter().chain(blobs) {
        let url = format!("{url}?ns={REGISTRY_ADDR}");
        let response = client::request(Method::GET, &url, &[(MIRRORED_HEADER, "true")], Duration::from_secs(5)).await?;
        if response.status != http::StatusCode::NOT_FOUND {
            return Ok(false);
        }
    }
    Ok(true)
}
