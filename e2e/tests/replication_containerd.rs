//! The CRI puller against a real containerd daemon (started by the test, on
//! its own root and socket): a CRI `PullImage` goes through containerd's
//! hosts.toml to a real Shoal registry node on loopback, whose mirror fetches
//! the image from a peer; nothing answers at the upstream address, so the
//! image can only come from the peer. Then pinning: the lease keeps the
//! content through containerd's garbage collection, and the labels are set
//! and released.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/node.rs"]
mod node;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{DeleteImageRequest, InfoRequest, ListImagesRequest, ListResourcesRequest};
use node::TestNode;
use shoal::content::Descriptor;
use shoal::oci::{Digest, MediaType, TagRef};
use shoal::replication::cri::{CRI_PINNED_LABEL, LEASE_ID, SHOAL_PINNED_LABEL};
use shoal::replication::{CriConfig, CriPuller, ImagePuller};
use shoal::routing::memory::MemoryNetwork;
use shoal_e2e::containerd::Containerd;
use tonic::Request;
use tonic::transport::Channel;

const IMAGE: &str = "registry.test/team/app:v1";
/// Where hosts.toml says the upstream is: nothing listens there.
const UPSTREAM: &str = "http://127.0.5.250:5000";

/// An uncompressed tar holding one file.
fn tar_with_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[148..156].copy_from_slice(b"        ");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

/// Stores a one-layer image containerd can unpack; returns the manifest digest.
fn add_runnable_image(store: &shoal::content::memory::MemoryStore) -> Digest {
    let layer = Bytes::from(tar_with_file("hello.txt", b"kept warm by shoal\n"));
    let layer_digest = store.add_blob(layer.clone());
    let config = Bytes::from(
        serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [layer_digest.to_string()] },
        })
        .to_string(),
    );
    let config_digest = store.add_blob(config.clone());
    let manifest = Bytes::from(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len() }],
        })
        .to_string(),
    );
    let digest = store.add_blob(manifest.clone());
    let target =
        Descriptor { digest, media_type: MediaType::from_static(MediaType::OCI_MANIFEST), size: manifest.len() as u64 };
    store.put_image(IMAGE, target);
    digest
}

fn namespaced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("containerd-namespace", "k8s.io".parse().unwrap());
    request
}

async fn images_with_target(channel: &Channel, digest: &Digest) -> Vec<(String, HashMap<String, String>)> {
    let listed = ImagesClient::new(channel.clone())
        .list(namespaced(ListImagesRequest { filters: Vec::new() }))
        .await
        .unwrap()
        .into_inner()
        .images;
    listed
        .into_iter()
        .filter(|i| i.target.as_ref().is_some_and(|t| t.digest == digest.to_string()))
        .map(|i| (i.name, i.labels))
        .collect()
}

async fn lease_resources(channel: &Channel) -> Vec<String> {
    let request = namespaced(ListResourcesRequest { id: LEASE_ID.to_owned() });
    match LeasesClient::new(channel.clone()).list_resources(request).await {
        Ok(response) => response.into_inner().resources.into_iter().map(|r| r.id).collect(),
        Err(status) if status.code() == tonic::Code::NotFound => Vec::new(),
        Err(status) => panic!("list lease resources: {status}"),
    }
}

async fn content_exists(channel: &Channel, digest: &Digest) -> bool {
    let request = namespaced(InfoRequest { digest: digest.to_string() });
    ContentClient::new(channel.clone()).info(request).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_pull_goes_through_shoal_to_a_peer_and_pins_survive_gc() -> anyhow::Result<()> {
    let daemon = Containerd::start_temporary().await?;
    let network = MemoryNetwork::new();
    let holder = TestNode::start(&network, "holder").await;
    let manifest = add_runnable_image(&holder.store);
    holder.sync().await;
    let local = TestNode::start(&network, "local").await;

    let hosts_dir = daemon.certs_dir().join("registry.test");
    std::fs::create_dir_all(&hosts_dir)?;
    let hosts = format!(
        "server = \"{UPSTREAM}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        local.addr
    );
    std::fs::write(hosts_dir.join("hosts.toml"), hosts)?;

    let puller = CriPuller::new(CriConfig {
        socket: daemon.socket(),
        namespace: "k8s.io".into(),
        pull_timeout: Duration::from_secs(60),
    });
    let image: TagRef = IMAGE.parse()?;
    puller.pull(&image).await?;

    let channel = containerd_client::connect(daemon.socket()).await?;
    let records = images_with_target(&channel, &manifest).await;
    assert!(records.iter().any(|(name, _)| name == IMAGE), "{records:?}");
    assert_eq!(
        local.metric(r#"shoal_requests_total{kind="blob",registry="registry.test",source="peer"}"#),
        2,
        "config and layer came from the peer through the local mirror"
    );
    assert_eq!(holder.metric(r#"shoal_peer_requests_total{kind="blob",result="served"}"#), 2);

    puller.pin(std::slice::from_ref(&image)).await?;
    assert_eq!(lease_resources(&channel).await, vec![manifest.to_string()]);
    let records = images_with_target(&channel, &manifest).await;
    assert!(records.len() >= 2, "CRI adds records by digest too: {records:?}");
    for (name, labels) in &records {
        assert_eq!(labels.get(CRI_PINNED_LABEL).map(String::as_str), Some("pinned"), "{name}");
        assert_eq!(labels.get(SHOAL_PINNED_LABEL).map(String::as_str), Some("true"), "{name}");
    }
    puller.pin(std::slice::from_ref(&image)).await?;
    assert_eq!(lease_resources(&channel).await.len(), 1, "pinning again changes nothing");

    // Every record goes, with synchronous garbage collection: the lease alone keeps the content.
    for (name, _) in &records {
        let delete = DeleteImageRequest { name: name.clone(), sync: true, target: None };
        ImagesClient::new(channel.clone()).delete(namespaced(delete)).await?;
    }
    assert!(content_exists(&channel, &manifest).await, "the pinned manifest survived GC");

    puller.pull(&image).await?;
    puller.pin(&[]).await?;
    assert!(lease_resources(&channel).await.is_empty(), "released");
    for (name, labels) in images_with_target(&channel, &manifest).await {
        assert!(!labels.contains_key(CRI_PINNED_LABEL) && !labels.contains_key(SHOAL_PINNED_LABEL), "{name}");
    }
    Ok(())
}
