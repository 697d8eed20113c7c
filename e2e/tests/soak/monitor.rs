//! Watches every Shoal process of the soak: checks that it is still running
//! (none may die but the ones the churn kills), samples its resident memory
//! and open descriptors, and now and then scrapes its request and byte
//! counters, per process (a restarted process starts its counters at zero).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use shoal_e2e::Cluster;
use shoal_e2e::resources::{Sampler, fd_kinds};
use tokio::time::Instant;

/// One process's counters: at its first and at its last scrape.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: f64,
    bytes: f64,
}

pub struct Monitor {
    start: Instant,
    nodes: usize,
    pub sampler: Sampler,
    /// By PID: (first, last) scrape.
    counters: BTreeMap<u32, (Totals, Totals)>,
    pub scrape_failures: u64,
    /// By PID: open descriptors by kind at the first and at the latest sample with `fd_kinds`.
    pub fd_kinds: BTreeMap<u32, (FdKinds, FdKinds)>,
}

type FdKinds = BTreeMap<String, u64>;

impl Monitor {
    pub fn new(nodes: usize) -> Self {
        let sampler = Sampler::default();
        Self {
            start: Instant::now(),
            nodes,
            sampler,
            counters: BTreeMap::new(),
            scrape_failures: 0,
            fd_kinds: BTreeMap::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Samples every running Shoal; scrapes its metrics too if `scrape`.
    /// Fails if a Shoal the churn did not kill has exited.
    pub async fn sample(&mut self, cluster: &mut Cluster, scrape: bool) -> Result<()> {
        let at = self.elapsed();
        for node in 1..=self.nodes {
            let Ok(shoal) = cluster.node_mut(node)?.shoal() else { continue };
            let Some(pid) = shoal.pid() else { continue };
            shoal.process().ensure_running()?;
            self.sampler.sample(node, pid, at)?;
            if !scrape {
                continue;
            }
            if let Ok(kinds) = fd_kinds(pid) {
                let first = self.fd_kinds.get(&pid).map_or_else(|| kinds.clone(), |(first, _)| first.clone());
                self.fd_kinds.insert(pid, (first, kinds));
            }
            match shoal.metrics().await {
                Ok(metrics) => {
                    let now = Totals {
                        requests: metrics.sum("shoal_requests_total", &[]),
                        bytes: metrics.sum("shoal_bytes_served_total", &[]),
                    };
                    self.counters.entry(pid).or_insert((now, now)).1 = now;
                }
                Err(err) => {
                    self.scrape_failures += 1;
                    eprintln!("[soak] scrape of node {node} failed: {err:#}");
                }
            }
        }
        Ok(())
    }

    /// (registry requests, response body bytes) Shoal counted, over every process.
    pub fn shoal_totals(&self) -> (u64, u64) {
        let (requests, bytes) = self.counters.values().fold((0.0, 0.0), |(r, b), (first, last)| {
            (r + last.requests - first.requests, b + last.bytes - first.bytes)
        });
        (requests as u64, bytes as u64)
    }
}
