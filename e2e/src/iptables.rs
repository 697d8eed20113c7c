//! Fault injection and source addressing with iptables, confined to chains of
//! our own named `SHOAL-E2E-<pid>-<n>` (filter and nat tables), hooked only for
//! loopback traffic and removed on drop. Chains left by a killed earlier run
//! (whose PID is gone) are removed when a new firewall is made.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

const PREFIX: &str = "SHOAL-E2E-";

/// Where our chains are hooked in: (table, built-in chain, interface match).
const HOOKS: [(&str, &str, &str); 3] =
    [("filter", "OUTPUT", "-o"), ("filter", "INPUT", "-i"), ("nat", "POSTROUTING", "-o")];

/// Our chains; removed (with their hooks) when dropped.
pub struct Firewall {
    chain: String,
}

impl Firewall {
    /// Creates the chains for this process and hooks them into loopback traffic.
    pub fn new() -> Result<Self> {
        remove_stale_chains();
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let chain = format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        remove_chain(&chain);
        let firewall = Self { chain };
        for table in ["filter", "nat"] {
            iptables(&["-t", table, "-N", &firewall.chain])?;
        }
        for (table, builtin, interface) in HOOKS {
            iptables(&["-t", table, "-I", builtin, interface, "lo", "-j", &firewall.chain])?;
        }
        Ok(firewall)
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Drops packets to `ip:port` (a blackhole: connections time out).
    pub fn blackhole(&self, ip: Ipv4Addr, port: u16) -> Result<()> {
        self.filter_rule(ip, port, &["-j", "DROP"])
    }

    /// Refuses connections to `ip:port` at once with a TCP reset.
    pub fn refuse(&self, ip: Ipv4Addr, port: u16) -> Result<()> {
        self.filter_rule(ip, port, &["-j", "REJECT", "--reject-with", "tcp-reset"])
    }

    /// Removes every fault rule (source addressing stays).
    pub fn clear_faults(&self) -> Result<()> {
        iptables(&["-t", "filter", "-F", &self.chain])
    }

    /// Gives traffic to `destination` from processes running as group `gid`
    /// the source address `source`, so that a server's log names the node.
    pub fn source_address_for_group(&self, gid: u32, destination: Ipv4Addr, source: Ipv4Addr) -> Result<()> {
        let (gid, destination, source) = (gid.to_string(), destination.to_string(), source.to_string());
        iptables(&[
            "-t",
            "nat",
            "-A",
            &self.chain,
            "-p",
            "tcp",
            "-d",
            &destination,
            "-m",
            "owner",
            "--gid-owner",
            &gid,
            "-j",
            "SNAT",
            "--to-source",
            &source,
        ])
    }

    fn filter_rule(&self, ip: Ipv4Addr, port: u16, target: &[&str]) -> Result<()> {
        let (ip, port) = (ip.to_string(), port.to_string());
        let mut args = vec!["-t", "filter", "-A", &self.chain, "-p", "tcp", "-d", &ip, "--dport", &port];
        args.extend_from_slice(target);
        iptables(&args)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}

/// Whether any rule or chain of the named chain remains in any table.
pub fn chain_exists(chain: &str) -> bool {
    ["filter", "nat"].iter().any(|table| {
        Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).contains(chain))
            .unwrap_or(false)
    })
}

/// Unhooks, flushes and deletes `chain` in every table; ignores what is absent.
fn remove_chain(chain: &str) {
    for (table, builtin, interface) in HOOKS {
        while iptables(&["-t", table, "-D", builtin, interface, "lo", "-j", chain]).is_ok() {}
    }
    for table in ["filter", "nat"] {
        let _ = iptables(&["-t", table, "-F", chain]);
        let _ = iptables(&["-t", table, "-X", chain]);
    }
}

/// Removes chains of earlier runs whose process is gone.
fn remove_stale_chains() {
    let Ok(out) = Command::new("iptables").args(["-w", "-t", "filter", "-S"]).output() else { return };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let nat = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output();
    let nat_listing = nat.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for line in listing.lines().chain(nat_listing.lines()) {
        let Some(chain) = line.strip_prefix("-N ") else { continue };
        let pid = chain.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_chain(chain);
        }
    }
}

fn iptables(args: &[&str]) -> Result<()> {
    let output = Command::new("iptables").arg("-w").args(args).output().context("run iptables")?;
    if !output.status.success() {
        bail!("iptables {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
