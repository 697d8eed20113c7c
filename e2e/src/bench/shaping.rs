//! Bandwidth shaping of the upstream registry's replies with `tc`: an `htb`
//! root qdisc on `lo` without a default class (unclassified traffic passes
//! directly, unshaped), one class (never limiting by itself) holding a `tbf`,
//! and a u32 filter that sends only packets from 127.0.0.200 port 5000 into
//! it. (`prio` would be the usual root, but this kernel lacks it.) Installed only if
//! `lo` has no root qdisc of its own (else it aborts); removed on drop, also
//! on failure.

use std::process::Command;

use anyhow::{Context, Result, bail};

const DEV: &str = "lo";
const HANDLE: &str = "1:";
const CLASS: &str = "1:1";

/// The shaping, in place until dropped.
pub struct Shaping {
    rate: String,
}

impl Shaping {
    /// Shapes replies from `ip:port` on `lo` to `rate` (a tc rate, e.g. `1gbit`).
    pub fn install(rate: &str, ip: std::net::Ipv4Addr, port: u16) -> Result<Self> {
        let current = root_qdisc()?;
        if !current.starts_with("qdisc noqueue") {
            bail!("lo already has a root qdisc ({current}); not touching it");
        }
        // No `default` class: unclassified traffic bypasses the classes at full speed.
        tc(&["qdisc", "add", "dev", DEV, "root", "handle", HANDLE, "htb"])?;
        let shaping = Self { rate: rate.to_owned() };
        tc(&["class", "add", "dev", DEV, "parent", HANDLE, "classid", CLASS, "htb", "rate", "100gbit"])?;
        tc(&[
            "qdisc", "add", "dev", DEV, "parent", CLASS, "handle", "10:", "tbf", "rate", rate, "burst", "1mb",
            "latency", "100ms",
        ])?;
        let src = format!("{ip}/32");
        let sport = port.to_string();
        tc(&[
            "filter", "add", "dev", DEV, "parent", HANDLE, "protocol", "ip", "prio", "1", "u32", "match", "ip", "src",
            &src, "match", "ip", "sport", &sport, "0xffff", "flowid", CLASS,
        ])?;
        Ok(shaping)
    }

    pub fn rate(&self) -> &str {
        &self.rate
    }
}

impl Drop for Shaping {
    fn drop(&mut self) {
        // Only our own root qdisc is removed (with its band, tbf and filter).
        match root_qdisc() {
            Ok(current) if current.starts_with("qdisc htb 1:") => {
                if let Err(err) = tc(&["qdisc", "del", "dev", DEV, "root", "handle", HANDLE]) {
                    eprintln!("could not remove the shaping on lo: {err:#}");
                }
            }
            Ok(current) => eprintln!("lo's root qdisc is no longer ours ({current}); left alone"),
            Err(err) => eprintln!("could not read lo's qdiscs: {err:#}"),
        }
    }
}

/// The first line of `tc qdisc show dev lo` (the root qdisc).
fn root_qdisc() -> Result<String> {
    let output = tc(&["qdisc", "show", "dev", DEV])?;
    Ok(output.lines().find(|l| l.contains(" root ")).unwrap_or("").trim().to_owned())
}

fn tc(args: &[&str]) -> Result<String> {
    let output = Command::new("tc").args(args).output().context("run tc (is iproute2 installed?)")?;
    if !output.status.success() {
        bail!("tc {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
