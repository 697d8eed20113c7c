//! Joining the network: which peers to dial first, and when to try again.
//!
//! Owns: parsing configured bootstrap peers (`/ip4/10.0.0.5/tcp/5001`, with
//! or without `/p2p/<peer id>`, or a `/dns*` name), resolving them and the
//! optional headless-Service DNS name to socket addresses, and a task that
//! dials them with backoff until this node has a peer, then re-checks slowly
//! while it has none. Does not drive the swarm: it sends `Dial` commands.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;

use super::client::{Command, P2pRouter, Shared};

/// First retry delay while no peer was ever reached; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Once a peer was reached: how often to check, and re-bootstrap if alone.
const RECHECK_INTERVAL: Duration = Duration::from_secs(60);
/// A DNS answer slower than this counts as no answer for this round.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured bootstrap peer: where it listens, and who it is if known.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapPeer {
    host: Host,
    port: u16,
    peer_id: Option<PeerId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Dns(String),
}

/// Why a bootstrap peer could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapPeerError {
    #[error("bootstrap peer {input:?} is not a multiaddr ({reason}); expected e.g. /ip4/10.0.0.5/tcp/5001")]
    NotMultiaddr { input: String, reason: String },
    #[error(
        "bootstrap peer {input:?} must be /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port> with an optional /p2p/<peer id>"
    )]
    Shape { input: String },
}

impl FromStr for BootstrapPeer {
    type Err = BootstrapPeerError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let addr: Multiaddr = input.parse().map_err(|e: libp2p::multiaddr::Error| {
            BootstrapPeerError::NotMultiaddr { input: input.to_owned(), reason: e.to_string() }
        })?;
        let shape = || BootstrapPeerError::Shape { input: input.to_owned() };
        let mut parts = addr.iter();
        let host = match parts.next().ok_or_else(shape)? {
            Protocol::Ip4(ip) => Host::Ip(ip.into()),
            Protocol::Ip6(ip) => Host::Ip(ip.into()),
            Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name) => Host::Dns(name.into_owned()),
            _ => return Err(shape()),
        };
        let port = match parts.next() {
            Some(Protocol::Tcp(port)) if port != 0 => port,
            _ => return Err(shape()),
        };
        let peer_id = match parts.next() {
            None => None,
            Some(Protocol::P2p(peer_id)) => Some(peer_id),
            Some(_) => return Err(shape()),
        };
        if parts.next().is_some() {
            return Err(shape());
        }
        Ok(Self { host, port, peer_id })
    }
}

impl fmt::Display for BootstrapPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V4(ip)) => write!(f, "/ip4/{ip}")?,
            Host::Ip(IpAddr::V6(ip)) => write!(f, "/ip6/{ip}")?,
            Host::Dns(name) => write!(f, "/dns/{name}")?,
        }
        write!(f, "/tcp/{}", self.port)?;
        if let Some(peer_id) = &self.peer_id {
            write!(f, "/p2p/{peer_id}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BootstrapPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// One address to dial, with the peer expected there if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) peer_id: Option<PeerId>,
}

/// Everything the bootstrap task needs to know.
pub(super) struct BootstrapPlan {
    pub(super) peers: Vec<BootstrapPeer>,
    /// A name whose every A/AAAA record is a peer, dialled at `router_port`.
    pub(super) dns: Option<String>,
    pub(super) router_port: u16,
    /// This node's own listen address, never dialled.
    pub(super) listen: SocketAddr,
}

impl BootstrapPlan {
    pub(super) fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.dns.is_none()
    }

    async fn resolve(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for peer in &self.peers {
            match &peer.host {
                Host::Ip(ip) => targets.push(Target { addr: SocketAddr::new(*ip, peer.port), peer_id: peer.peer_id }),
                Host::Dns(name) => targets.extend(
                    lookup(name, peer.port).await.into_iter().map(|addr| Target { addr, peer_id: peer.peer_id }),
                ),
            }
        }
        if let Some(name) = &self.dns {
            let found = lookup(name, self.router_port).await;
            targets.extend(found.into_iter().map(|addr| Target { addr, peer_id: None }));
        }
        targets.retain(|t| t.addr != self.listen);
        targets.dedup();
        targets
    }
}

async fn lookup(name: &str, port: u16) -> Vec<SocketAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            tracing::warn!(%name, error = %e, "bootstrap name does not resolve");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(%name, "bootstrap name resolution timed out");
            Vec::new()
        }
    }
}

/// When to try again: backoff until the first peer, then a slow re-check.
#[derive(Debug)]
struct Schedule {
    backoff: Duration,
    ever_connected: bool,
}

impl Schedule {
    fn new() -> Self {
        Self { backoff: FIRST_BACKOFF, ever_connected: false }
    }

    fn next_delay(&mut self, connected: bool) -> Duration {
        self.ever_connected |= connected;
        if self.ever_connected {
            return RECHECK_INTERVAL;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }
}

/// Dials the plan's targets whenever this node has no peer, until cancelled.
pub(super) async fn run(plan: BootstrapPlan, router: P2pRouter, shared: Arc<Shared>, token: CancellationToken) {
    let mut schedule = Schedule::new();
    loop {
        let connected = shared.connected() > 0;
        if !connected {
            let targets = tokio::select! {
                () = token.cancelled() => return,
                targets = plan.resolve() => targets,
            };
            let targets: Vec<Target> = targets.into_iter().filter(|t| !shared.is_own_address(t.addr)).collect();
            shared.set_alone(targets.is_empty());
            tracing::debug!(count = targets.len(), "dialling bootstrap peers");
            if !targets.is_empty() && router.send(Command::Dial { targets }).await.is_err() {
                return;
            }
        }
        let delay = schedule.next_delay(connected);
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn parses_addresses_with_and_without_a_peer_id() {
        let plain: BootstrapPeer = "/ip4/10.0.0.5/tcp/5001".parse().unwrap();
        assert_eq!(plain.host, Host::Ip("10.0.0.5".parse().unwrap()));
        assert_eq!((plain.port, plain.peer_id), (5001, None));

        let with_id: BootstrapPeer = format!("/ip6/fd00::5/tcp/5001/p2p/{PEER}").parse().unwrap();
        assert_eq!(with_id.peer_id, Some(PEER.parse().unwrap()));
        assert_eq!(with_id.to_string(), format!("/ip6/fd00::5/tcp/5001/p2p/{PEER}"));

        let named: BootstrapPeer = "/dns4/shoal.kube-system.svc/tcp/5001".parse().unwrap();
        assert_eq!(named.host, Host::Dns("shoal.kube-system.svc".into()));
    }

    #[test]
    fn rejects_other_shapes_with_a_clear_error() {
        for bad in ["", "/ip4/10.0.0.5", "/ip4/10.0.0.5/udp/5001", "/ip4/10.0.0.5/tcp/0", "/tcp/5001/ip4/10.0.0.5"] {
            let err = bad.parse::<BootstrapPeer>().unwrap_err();
            assert!(matches!(err, BootstrapPeerError::Shape { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        let extra = format!("/ip4/10.0.0.5/tcp/5001/p2p/{PEER}/tcp/1");
        assert!(matches!(extra.parse::<BootstrapPeer>(), Err(BootstrapPeerError::Shape { .. })));
        for bad in ["10.0.0.5:5001", "/ip4/10.0.0.500/tcp/5001"] {
            let err = bad.parse::<BootstrapPeer>().unwrap_err();
            assert!(matches!(err, BootstrapPeerError::NotMultiaddr { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn backs_off_until_connected_then_rechecks_slowly() {
        let mut schedule = Schedule::new();
        let delays: Vec<Duration> = (0..9).map(|_| schedule.next_delay(false)).collect();
        assert_eq!(delays[0], FIRST_BACKOFF);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(delays[8], MAX_BACKOFF);
        assert_eq!(schedule.next_delay(true), RECHECK_INTERVAL);
        assert_eq!(schedule.next_delay(false), RECHECK_INTERVAL, "lost peers are looked for slowly");
    }

    #[tokio::test]
    async fn resolves_static_peers_and_skips_the_own_listen_address() {
        let plan = BootstrapPlan {
            peers: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap(), "/ip4/127.0.0.2/tcp/4001".parse().unwrap()],
            dns: Some("localhost".into()),
            router_port: 4002,
            listen: "127.0.0.1:4001".parse().unwrap(),
        };
        let targets = plan.resolve().await;
        assert_eq!(targets[0], Target { addr: "127.0.0.2:4001".parse().unwrap(), peer_id: None });
        assert!(targets[1..].iter().all(|t| t.addr.port() == 4002 && t.addr.ip().is_loopback()), "{targets:?}");
        assert!(targets.len() >= 2, "localhost resolves to at least one address: {targets:?}");
    }
}
