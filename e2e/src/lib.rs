//! End-to-end harness for Shoal: real containerd daemons, a real registry and
//! Shoal nodes on loopback addresses, driven through the CRI API and `ctr`.
//!
//! # Layout
//! - [`cluster`]: N nodes on 127.0.0.1..N plus the upstream registry on 127.0.0.200:5000; the entry point.
//! - [`node`]: one node: containerd (+ Shoal), its hosts.toml written by `shoal::configure`.
//! - [`containerd`], [`registry`], [`shoal`]: the three kinds of process, each behind a guard.
//! - [`cri`], [`ctr`]: pulls, imports, listing and removal, each with a timeout.
//! - [`image`]: deterministic OCI test images, pushed with skopeo or archived for import.
//! - [`iptables`]: fault injection and per-node source addresses in chains of our own.
//! - [`metrics`]: scraping and reading a Shoal node's Prometheus counters.
//! - [`prometheus`]: a real Prometheus scraping the nodes, queried through its HTTP API.
//! - [`shim`]: a corrupting proxy in front of a node's registry; [`probe`]: a bare DHT node that sees providers.
//! - [`load`]: what the load tests share (a verified pull cycle, byte accounting, a seeded PRNG).
//! - [`resources`]: a process's resident memory and open fds from /proc, sampled, and the leak check.
//! - [`bad_clients`]: misbehaving HTTP clients (slowloris, garbage, oversized headers, ...) as bounded tasks.
//! - [`scenario`]: what the scenario tests share (a cluster, images, timed pulls, where bytes came from).
//! - [`process`], [`wait`], [`http`]: process guards, bounded polling, a small HTTP client.
//! - [`demo`]: the scenario behind `shoal-e2e demo`.
//! - [`bench`]: `shoal-e2e bench`, Shoal measured beside nginx and the upstream registry.
//!
//! Everything needs root (containerd, iptables) and uses loopback only. Every
//! process is killed by PID when its guard drops, also when a test panics;
//! the run directory and firewall chains are removed likewise.

pub mod bad_clients;
pub mod bench;
pub mod cluster;
pub mod containerd;
pub mod cri;
pub mod ctr;
pub mod demo;
pub mod http;
pub mod image;
pub mod iptables;
pub mod load;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod resources;
pub mod scenario;
pub mod shim;
pub mod shoal;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions, Leftovers};
pub use image::{Arch, BuiltImage, Compression, ImageSpec};
pub use node::Node;
