//! Needs root. Checks of the harness itself: the firewall's faults and its
//! cleanup, teardown after a panic, and importing an image without a registry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::iptables::{Firewall, chain_exists};
use shoal_e2e::process::processes_mentioning;
use shoal_e2e::{Cluster, ClusterOptions, ImageSpec, image};
use tokio::net::{TcpListener, TcpStream};

const FIREWALL_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

async fn connect(port: u16, timeout: Duration) -> Result<std::io::Result<TcpStream>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, TcpStream::connect((FIREWALL_IP, port))).await
}

#[tokio::test]
async fn firewall_refuses_blackholes_and_removes_its_chains() -> Result<()> {
    let listener = TcpListener::bind((FIREWALL_IP, 0)).await?;
    let port = listener.local_addr()?.port();
    let accept = tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    ensure!(matches!(connect(port, Duration::from_secs(2)).await, Ok(Ok(_))), "no connection before any fault");

    let firewall = Firewall::new()?;
    let chain = firewall.chain().to_owned();
    firewall.refuse(FIREWALL_IP, port)?;
    let refused = connect(port, Duration::from_secs(2)).await;
    ensure!(matches!(refused, Ok(Err(ref e)) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{refused:?}");

    firewall.clear_faults()?;
    firewall.blackhole(FIREWALL_IP, port)?;
    ensure!(connect(port, Duration::from_millis(500)).await.is_err(), "a blackholed connect must time out");

    firewall.clear_faults()?;
    ensure!(matches!(connect(port, Duration::from_secs(2)).await, Ok(Ok(_))), "no connection after clearing");
    ensure!(chain_exists(&chain), "chain {chain} missing while the firewall lives");
    drop(firewall);
    ensure!(!chain_exists(&chain), "chain {chain} left behind");
    accept.abort();
    Ok(())
}

#[test]
fn a_panic_mid_test_leaves_no_process_chain_or_directory() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let cluster = Cluster::start(&ClusterOptions { nodes: 2, ..ClusterOptions::default() }).await.unwrap();
            let pids: Vec<u32> =
                cluster.nodes().iter().flat_map(|n| n.pids()).chain(cluster.registry().unwrap().pid()).collect();
            tx.send((cluster.run_dir().to_path_buf(), cluster.firewall().chain().to_owned(), pids)).unwrap();
            panic!("deliberate panic with a running cluster");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let (run_dir, chain, pids) = rx.recv().unwrap();
    assert_eq!(pids.len(), 3, "two containerds and a registry were running");
    let needle = run_dir.to_string_lossy().into_owned();
    assert!(processes_mentioning(&needle).is_empty(), "{:?}", processes_mentioning(&needle));
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} survived");
    }
    assert!(!chain_exists(&chain), "chain {chain} survived");
    assert!(!run_dir.exists(), "{} survived", run_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_imports_into_one_node_without_any_registry() -> Result<()> {
    let cluster = Cluster::start(&ClusterOptions { nodes: 1, registry: false, ..ClusterOptions::default() }).await?;
    let dir = tempfile::tempdir()?;
    let built = image::build(&ImageSpec::multi_arch("e2e/imported", "v1", &[8 * 1024, 512 * 1024]), dir.path())?;
    let name = built.reference(cluster.registry_host());
    let node = cluster.node(1)?;
    node.import(&built, &name, Duration::from_secs(60)).await?;

    ensure!(node.cri().has_image(&name).await?, "CRI does not list {name}");
    let content = node.ctr().content_digests().await?;
    for digest in built.pulled_digests()? {
        ensure!(content.contains(&digest), "{digest} is not in the content store");
    }
    node.cri().remove(&name).await?;
    ensure!(!node.ctr().image_names().await?.contains(&name), "{name} still listed");
    cluster.shutdown().await?.ensure_clean()
}
