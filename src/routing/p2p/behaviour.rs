//! The libp2p protocols a Shoal node speaks, and their settings.
//!
//! Owns: Kademlia (server mode, Shoal's own protocol name, provider TTL, no
//! automatic provider republication: the advertiser re-provides on its own
//! schedule), batched provider announcements (`announce`), identify (to
//! learn the addresses peers announce) and ping (to keep connections alive
//! and notice dead ones). Does not drive the swarm.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, allow_block_list, identify, kad, ping, request_response};

use super::announce::{ANNOUNCE_PROTOCOL, AnnounceCodec};
use super::store::ProviderStore;
use super::{ConnectionConfig, P2pConfig};

/// Kademlia protocol name: Shoal nodes form a DHT of their own.
pub(super) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/kad/1.0.0");
/// The protocol version sent in identify.
const IDENTIFY_VERSION: &str = "/shoal/id/1.0.0";
/// Keys (local and remote) the record store holds: a node with many images
/// advertises tens of thousands of digests, and stores others' records too.
const MAX_STORED_KEYS: usize = 100_000;
/// How long one Kademlia query may run before it reports a timeout.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Peers kept per routing-table bucket. Larger than Kademlia's usual 20 so
/// that a node of a cluster of up to about a hundred nodes knows every other
/// node, which lets it advertise in batches (see `bulk`).
pub(super) const KBUCKET_SIZE: usize = 64;
/// How long an announcement may wait for its answer.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping unanswered for this long counts as failed (a round trip inside a
/// cluster takes milliseconds).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Field order matters: the derive asks each field in turn whether to accept
/// a connection and stops at the first denial, so a behaviour that can deny
/// (`blocked`) comes first. After a behaviour that already accepted it (and
/// recorded the connection), a denial leaves that record behind: a phantom
/// connection that request-response would send announcements to, and that
/// trips its consistency check when the peer's last real connection closes.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    /// Denies connections to and from shunned peers (see `shun`).
    pub(super) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(super) kad: kad::Behaviour<ProviderStore>,
    pub(super) announce: request_response::Behaviour<AnnounceCodec>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
}

impl Behaviour {
    /// Pings every connected peer each `ping_interval` (see `ConnectionConfig`)
    /// and refreshes the routing table each `table_refresh` (see `P2pConfig`).
    pub(super) fn new(
        keypair: &Keypair,
        provider_ttl: Duration,
        ping_interval: Duration,
        table_refresh: Duration,
    ) -> Self {
        let local = keypair.public().to_peer_id();
        let store = ProviderStore::new(local, MAX_STORED_KEYS);
        let mut kad = kad::Behaviour::with_config(local, store, kad_config(provider_ttl, table_refresh));
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(identify::Config::new(IDENTIFY_VERSION.into(), keypair.public()));
        let announce = request_response::Behaviour::new(
            [(ANNOUNCE_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(ANNOUNCE_TIMEOUT),
        );
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(ping_interval.max(ConnectionConfig::MIN_PING_INTERVAL))
                .with_timeout(PING_TIMEOUT),
        );
        Self { blocked: allow_block_list::Behaviour::default(), kad, announce, identify, ping }
    }
}

fn kad_config(provider_ttl: Duration, table_refresh: Duration) -> kad::Config {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config
        .set_provider_record_ttl(Some(provider_ttl))
        .set_provider_publication_interval(None)
        .set_record_ttl(Some(provider_ttl))
        .set_publication_interval(None)
        .set_replication_interval(None)
        .set_query_timeout(QUERY_TIMEOUT)
        .set_periodic_bootstrap_interval(Some(table_refresh.max(P2pConfig::MIN_TABLE_REFRESH)));
    if let Some(size) = std::num::NonZeroUsize::new(KBUCKET_SIZE) {
        config.set_kbucket_size(size);
    }
    config
}
