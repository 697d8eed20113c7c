//! What a process holds, read from `/proc`: resident memory (`VmRSS` of
//! `/proc/PID/status`) and open file descriptors (entries of `/proc/PID/fd`),
//! sampled over a run per process, and the leak check that compares a
//! process's early samples with its late ones. A restarted process is a new
//! series: it is only ever compared to itself. Reads, never signals.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub fds: u64,
}

/// Reads `pid`'s resident memory and open descriptor count.
pub fn usage(pid: u32) -> Result<Usage> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read status of {pid}"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("list fds of {pid}"))?.count();
    Ok(Usage { rss_bytes: rss_kib * 1024, fds: fds as u64 })
}

/// `pid`'s open descriptors by what they are: TCP sockets by state and
/// port (`tcp ESTABLISHED on :5000`, `tcp CLOSE_WAIT to :5001`), `socket`
/// (unix and others), `pipe`, `file`, or the `anon_inode` kind: where a leak is.
pub fn fd_kinds(pid: u32) -> Result<BTreeMap<String, u64>> {
    let tcp = tcp_sockets(pid);
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("list fds of {pid}"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        let target = target.to_string_lossy();
        let kind = match target.split_once(':') {
            Some(("anon_inode", what)) => format!("anon_inode:{what}"),
            Some(("socket", inode)) => {
                let inode = inode.trim_matches(['[', ']']).parse::<u64>().unwrap_or_default();
                tcp.get(&inode).cloned().unwrap_or_else(|| "socket".to_owned())
            }
            Some(("pipe", _)) => "pipe".to_owned(),
            _ => "file".to_owned(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    Ok(kinds)
}

/// Ports a Shoal node listens on: a socket on one of them is an accepted connection.
const SERVER_PORTS: [u16; 3] = [5000, 5001, 9090];

/// TCP sockets in `pid`'s network namespace by inode, described by state and port.
fn tcp_sockets(pid: u32) -> BTreeMap<u64, String> {
    let mut sockets = BTreeMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let port = |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap_or(""), 16).ok();
            let (Some(local_port), Some(remote_port), Ok(inode)) = (port(local), port(remote), inode.parse::<u64>())
            else {
                continue;
            };
            let role = if SERVER_PORTS.contains(&local_port) {
                format!("on :{local_port}")
            } else {
                format!("to :{remote_port}")
            };
            sockets.insert(inode, format!("tcp {} {role}", tcp_state(state)));
        }
    }
    sockets
}

fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "OTHER",
    }
}

/// The samples of one process (one PID of one node).
#[derive(Debug, Clone)]
pub struct Series {
    pub node: usize,
    pub pid: u32,
    /// (time since the run started, reading)
    pub samples: Vec<(Duration, Usage)>,
}

/// How much a process grew from the first to the last third of its samples
/// after warm-up: the median of the last third minus that of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    pub rss_bytes: i64,
    pub fds: i64,
    /// Samples compared (after dropping the warm-up).
    pub samples: usize,
}

impl Series {
    /// The growth after dropping `warm_up` samples, or `None` when fewer than
    /// `min_samples` remain (a short-lived process says nothing about leaks).
    pub fn growth(&self, warm_up: usize, min_samples: usize) -> Option<Growth> {
        let kept = self.samples.get(warm_up..)?;
        if kept.len() < min_samples.max(3) {
            return None;
        }
        let third = kept.len() / 3;
        let (first, last) = (&kept[..third], &kept[kept.len() - third..]);
        let median = |part: &[(Duration, Usage)], f: fn(&Usage) -> u64| {
            let mut values: Vec<u64> = part.iter().map(|(_, u)| f(u)).collect();
            values.sort_unstable();
            values[values.len() / 2] as i64
        };
        Some(Growth {
            rss_bytes: median(last, |u| u.rss_bytes) - median(first, |u| u.rss_bytes),
            fds: median(last, |u| u.fds) - median(first, |u| u.fds),
            samples: kept.len(),
        })
    }

    /// The median of a reading in each of `parts` equal slices of the samples: the trajectory.
    pub fn medians(&self, parts: usize, f: fn(&Usage) -> u64) -> Vec<u64> {
        let size = self.samples.len().div_ceil(parts.max(1)).max(1);
        self.samples
            .chunks(size)
            .map(|chunk| {
                let mut values: Vec<u64> = chunk.iter().map(|(_, u)| f(u)).collect();
                values.sort_unstable();
                values[values.len() / 2]
            })
            .collect()
    }

    /// (min, max) of a reading over every sample.
    pub fn range(&self, f: fn(&Usage) -> u64) -> Option<(u64, u64)> {
        let values = self.samples.iter().map(|(_, u)| f(u));
        Some((values.clone().min()?, values.max()?))
    }
}

/// Series of every sampled process, in order of first appearance.
#[derive(Debug, Default)]
pub struct Sampler {
    series: Vec<Series>,
}

impl Sampler {
    /// Reads `pid` (node `node`) and appends the reading to its series.
    pub fn sample(&mut self, node: usize, pid: u32, at: Duration) -> Result<Usage> {
        let reading = usage(pid).with_context(|| format!("sample node {node}'s Shoal (pid {pid})"))?;
        match self.series.iter_mut().find(|s| s.pid == pid && s.node == node) {
            Some(series) => series.samples.push((at, reading)),
            None => self.series.push(Series { node, pid, samples: vec![(at, reading)] }),
        }
        Ok(reading)
    }

    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// (min, max) of a reading over every process of node `node`.
    pub fn node_range(&self, node: usize, f: fn(&Usage) -> u64) -> Option<(u64, u64)> {
        let ranges = self.series.iter().filter(|s| s.node == node).filter_map(|s| s.range(f));
        ranges.reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[(u64, u64)]) -> Series {
        let samples = values
            .iter()
            .enumerate()
            .map(|(i, &(mib, fds))| (Duration::from_secs(i as u64), Usage { rss_bytes: mib << 20, fds }))
            .collect();
        Series { node: 1, pid: 1, samples }
    }

    #[test]
    fn growth_compares_medians_of_the_first_and_last_third_after_warm_up() {
        // Warm-up at 1 MiB, then 10, 10, 50 (a spike), 10, 11, 12, 20, 21, 22.
        let s = series(&[(1, 1), (10, 5), (10, 5), (50, 90), (10, 5), (11, 6), (12, 6), (20, 9), (21, 9), (22, 9)]);
        let growth = s.growth(1, 6);
        assert_eq!(growth, Some(Growth { rss_bytes: 11 << 20, fds: 4, samples: 9 }));
    }

    #[test]
    fn a_short_series_has_no_growth() {
        let s = series(&[(1, 1), (2, 2), (3, 3)]);
        assert_eq!(s.growth(1, 3), None);
        assert_eq!(s.growth(5, 1), None);
    }

    #[test]
    fn medians_follow_the_trajectory() {
        let s = series(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
        assert_eq!(s.medians(2, |u| u.fds), vec![2, 5]);
        assert_eq!(s.medians(10, |u| u.fds), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn our_own_descriptors_are_read_by_kind() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let kinds = fd_kinds(std::process::id()).unwrap();
        assert!(kinds.get("tcp LISTEN to :0").is_some_and(|n| *n >= 1), "{kinds:?}");
        drop(listener);
    }

    #[test]
    fn ranges_cover_every_sample() {
        let s = series(&[(3, 7), (1, 9), (2, 8)]);
        assert_eq!(s.range(|u| u.rss_bytes), Some((1 << 20, 3 << 20)));
        assert_eq!(s.range(|u| u.fds), Some((7, 9)));
    }
}
