//! What the benchmark reads about a process from `/proc/<pid>`: resident
//! memory (VmRSS, VmHWM), CPU time, and resetting the peak (`clear_refs`).
//! Also the machine facts reported beside the numbers. Reads only.

use std::fs;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Memory of one process, in KiB as the kernel reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read status of {pid}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} for {pid}"))?;
        let value = line.split_whitespace().nth(1).with_context(|| format!("bad {name} line: {line}"))?;
        Ok(value.parse()?)
    };
    Ok(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}

/// Resets the peak resident set size (VmHWM) of `pid` to its current RSS.
pub fn reset_peak(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("reset the peak RSS of {pid}"))
}

/// User + system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read stat of {pid}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(") ").context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

/// USER_HZ: /proc reports CPU time in these ticks, 100 on every Linux ABI.
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// Runs `work` while sampling the VmRSS of `pids` every 50 ms; returns its
/// output and the largest RSS seen per pid (KiB).
pub async fn sample_rss_while<T>(pids: &[u32], work: impl Future<Output = T>) -> (T, Vec<u64>) {
    let mut peaks = vec![0u64; pids.len()];
    let sample = |peaks: &mut Vec<u64>| {
        for (peak, pid) in peaks.iter_mut().zip(pids) {
            if let Ok(memory) = memory(*pid) {
                *peak = (*peak).max(memory.rss_kib);
            }
        }
    };
    sample(&mut peaks);
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let output = loop {
        tokio::select! {
            output = &mut work => break output,
            _ = ticker.tick() => sample(&mut peaks),
        }
    };
    sample(&mut peaks);
    (output, peaks)
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_mib: u64,
    /// `/proc/loadavg` when the run started and when it ended.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn now() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            memory_mib: memory_kib / 1024,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        }
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_own_memory_and_cpu() {
        let me = std::process::id();
        let memory = memory(me).unwrap();
        assert!(memory.rss_kib > 0 && memory.hwm_kib >= memory.rss_kib);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        let (value, peaks) = sample_rss_while(&[me], async { 7 }).await;
        assert_eq!(value, 7);
        assert!(peaks[0] > 0);
    }
}
