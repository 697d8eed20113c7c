//! Shoal: a peer-to-peer container image mirror for Kubernetes nodes.
//!
//! Each node advertises the content of its local containerd on a Kademlia DHT
//! and serves containerd's registry mirror requests: from local content first,
//! then from a peer that has the digest, else with a fast 404 so containerd
//! falls back to the upstream registry. See `docs/ARCHITECTURE.md`.
//!
//! # Layout
//! - [`oci`]: domain types parsed at the edge (digests, names, ranges, paths). Pure.
//! - [`content`]: the containerd content store behind a trait, and the index of what this node holds.
//! - [`routing`]: the DHT behind a trait; `routing::p2p` is the only libp2p user.
//! - [`advertiser`]: keeps the DHT in step with the content index.
//! - [`mirror`]: fetching from peers: weighted peer choice, timeouts, verification.
//! - [`registry`]: the HTTP face: the pull-only distribution API and health endpoints.
//! - [`replication`]: keeping named images warm on R nodes and spreading popular ones.
//! - [`health`]: readiness and liveness.
//! - [`metrics`]: every Prometheus metric, in one registry passed in.
//! - [`app`]: wiring, and shutdown through one token and one task tracker.
//! - [`cli`]: the clap tree, turned into per-component configs.
//! - [`configure`]: `shoal configure` / `shoal cleanup`: containerd hosts.toml files and their backup.

pub mod advertiser;
pub mod app;
pub mod cli;
pub mod configure;
pub mod content;
pub mod health;
pub mod metrics;
pub mod mirror;
pub mod oci;
pub mod registry;
pub mod replication;
pub mod routing;
pub mod state;
