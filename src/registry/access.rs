//! Who may use this node's registry, and which requests are peer-facing.
//!
//! Owns: the rule that tells this host's own clients (containerd) from
//! everyone else by the connection's addresses, and the access policy of a
//! private network: only this host and connected, authenticated peers are
//! served. Knows nothing of libp2p: the router's view of connected peers
//! comes in as a plain function of an IP address.
//!
//! Local means the connection comes from this host: its source IP is the IP
//! it was sent to (a host talking to itself over any of its addresses), or
//! `127.0.0.1` / `::1`, where Linux sources loopback connections from unless
//! the client binds another address. Other `127.0.0.0/8` sources are not
//! local: tests use them to stand for other hosts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How long a client that is not (yet) a connected peer may wait to become one.
pub const PEER_GRACE: Duration = Duration::from_secs(1);
/// How often the peer check is repeated meanwhile.
const PEER_POLL: Duration = Duration::from_millis(10);

/// The two ends of the connection a request came on; the server puts it in
/// every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address.
    pub remote: SocketAddr,
    /// The address of this node the client connected to.
    pub local: SocketAddr,
}

impl ClientAddr {
    /// Whether the client is on this host (see the module docs).
    pub fn is_local(&self) -> bool {
        let remote = self.remote.ip().to_canonical();
        remote == self.local.ip().to_canonical()
            || remote == IpAddr::V4(Ipv4Addr::LOCALHOST)
            || remote == IpAddr::V6(Ipv6Addr::LOCALHOST)
    }
}

type PeerCheck = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Which clients are served at all. Cheap to clone.
#[derive(Clone, Default)]
pub struct AccessPolicy {
    /// `None`: anyone (an open network). `Some`: this host, and clients
    /// whose IP the check says belongs to a connected peer.
    peers_only: Option<PeerCheck>,
}

impl AccessPolicy {
    /// Every client is served (the default, for a network without a key).
    pub fn open() -> Self {
        Self::default()
    }

    /// Only this host and the IPs for which `is_peer` holds are served.
    pub fn peers_only(is_peer: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Self { peers_only: Some(Arc::new(is_peer)) }
    }

    /// Whether a request from `client` is served. A request whose
    /// connection is unknown is refused unless the policy is open.
    ///
    /// A peer may send its request while its libp2p connection to this node
    /// is still being set up (it dials every provider it fetches from), so
    /// an unknown IP is given [`PEER_GRACE`] to become a connected peer's.
    pub async fn admits(&self, client: Option<&ClientAddr>) -> bool {
        let Some(is_peer) = &self.peers_only else { return true };
        let Some(client) = client else { return false };
        if client.is_local() {
            return true;
        }
        let ip = client.remote.ip().to_canonical();
        let deadline = Instant::now() + PEER_GRACE;
        loop {
            if is_peer(ip) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(PEER_POLL).await;
        }
    }
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.peers_only.is_some() { "peers-only" } else { "open" };
        f.debug_tuple("AccessPolicy").field(&mode).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn client(remote: &str, local: &str) -> ClientAddr {
        ClientAddr { remote: remote.parse().unwrap(), local: local.parse().unwrap() }
    }

    fn only_peer_10_0_0_2() -> AccessPolicy {
        AccessPolicy::peers_only(|ip| ip == IpAddr::from([10, 0, 0, 2]))
    }

    #[test]
    fn this_host_is_local_over_loopback_or_its_own_address() {
        assert!(client("127.0.0.1:40000", "127.0.0.1:5000").is_local());
        assert!(client("127.0.0.1:40000", "10.0.0.1:5000").is_local());
        assert!(client("[::1]:40000", "[::1]:5000").is_local());
        assert!(client("10.0.0.1:40000", "10.0.0.1:5000").is_local());
        assert!(client("[::ffff:10.0.0.1]:40000", "10.0.0.1:5000").is_local());
    }

    #[test]
    fn other_hosts_and_other_loopback_sources_are_not_local() {
        assert!(!client("10.0.0.2:40000", "10.0.0.1:5000").is_local());
        assert!(!client("127.0.7.9:40000", "127.0.7.1:5000").is_local());
        assert!(!client("[fd00::2]:40000", "[fd00::1]:5000").is_local());
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_policy_admits_everyone_even_unknown_connections() {
        let open = AccessPolicy::open();
        assert!(open.admits(Some(&client("192.0.2.1:1", "10.0.0.1:5000"))).await);
        assert!(open.admits(None).await);
    }

    #[tokio::test(start_paused = true)]
    async fn peers_only_admits_this_host_and_connected_peers() {
        let policy = only_peer_10_0_0_2();
        assert!(policy.admits(Some(&client("127.0.0.1:1", "10.0.0.1:5000"))).await, "containerd");
        assert!(policy.admits(Some(&client("10.0.0.1:1", "10.0.0.1:5000"))).await, "this host by its own address");
        assert!(policy.admits(Some(&client("10.0.0.2:1", "10.0.0.1:5000"))).await, "a connected peer");
        assert!(policy.admits(Some(&client("[::ffff:10.0.0.2]:1", "10.0.0.1:5000"))).await, "IPv4-mapped");
        let started = Instant::now();
        assert!(!policy.admits(Some(&client("10.0.0.3:1", "10.0.0.1:5000"))).await, "not a peer");
        assert!(started.elapsed() >= PEER_GRACE, "refused once the grace is over");
        assert!(!policy.admits(None).await, "an unknown connection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_whose_connection_completes_within_the_grace_is_admitted() {
        let connected_at = Instant::now() + PEER_GRACE / 2;
        let policy = AccessPolicy::peers_only(move |_| Instant::now() >= connected_at);
        assert!(policy.admits(Some(&client("10.0.0.4:1", "10.0.0.1:5000"))).await);
        let late = Instant::now() + PEER_GRACE * 2;
        let policy = AccessPolicy::peers_only(move |_| Instant::now() >= late);
        assert!(!policy.admits(Some(&client("10.0.0.4:1", "10.0.0.1:5000"))).await);
    }
}
