//! Persistent state on the real binary: restarts with SIGTERM and `kill -9`,
//! a corrupt state file, cold starts, the reconcile of changes made while a
//! node was down (seen from the DHT), and `kill -9` at random points.
//!
//! Each test starts its own containerd (the harness's launcher, in a
//! temporary directory) and `shoal` processes on 127.0.4.N with ports of
//! their own, so these tests run beside the cluster scenarios (127.0.0.N).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod crash;
mod reconcile;
mod restart;
mod seed;
#[allow(dead_code)] // `store` is for the contract tests
#[path = "../content_contract/seeder.rs"]
mod seeder;
