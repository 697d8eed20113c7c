//! The one task that owns the libp2p swarm.
//!
//! Owns: the swarm, the replies owed to callers (provides by query id,
//! lookups in flight), the address book, and the published peer count.
//! Runs until the cancellation token fires or every handle is gone. Unknown
//! or uninteresting events are logged at debug and ignored; nothing here
//! panics on what the network sends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, QueryId, RecordKey};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{PeerId, Swarm, identify, ping};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::addresses::{AddressBook, tcp_multiaddr, tcp_socket_addr};
use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::bootstrap::Target;
use super::bulk::{Bulk, record_key};
use super::client::{Command, RouterStats, Shared};
use super::known;
use super::lookups::Lookups;
use super::shun::Shunned;
use super::store::ProviderStore;
use crate::oci::Key;
use crate::routing::{Error, LinkEvent, Peer, PeerName};

/// How often lookups are checked against their deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// Pings failed in a row before a peer is taken out of routing (as it is
/// excluded from selection: see `mirror::health`).
const PING_FAILURES_TO_SHUN: u32 = 2;

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    book: AddressBook,
    lookups: Lookups<QueryId>,
    provides: HashMap<QueryId, (Key, oneshot::Sender<Result<(), Error>>)>,
    /// Connected peers whose identify arrived (forgotten when the last
    /// connection closes): one without a known endpoint announced none usable.
    identified: HashSet<PeerId>,
    /// Whether the first Kademlia bootstrap (self-lookup) was started.
    bootstrapped: bool,
    bulk: Bulk,
    shunned: Shunned,
    /// Dial every provider a lookup finds, not only those without a known
    /// address: in a private network a registry serves connected peers only.
    connect_providers: bool,
    stats: RouterStats,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
        book: AddressBook,
        bulk: Bulk,
    ) -> Self {
        let lookups = Lookups::new(*swarm.local_peer_id());
        Self {
            swarm,
            commands,
            shared,
            book,
            lookups,
            provides: HashMap::new(),
            identified: HashSet::new(),
            bootstrapped: false,
            bulk,
            shunned: Shunned::default(),
            connect_providers: false,
            stats: RouterStats::default(),
        }
    }

    /// Connects to every provider found (see `connect_providers`).
    pub(super) fn connecting_to_providers(mut self, connect: bool) -> Self {
        self.connect_providers = connect;
        self
    }

    pub(super) async fn run(mut self, token: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = sweep.tick() => {}
            }
            self.end_lookups();
            let now = Instant::now();
            self.bulk.on_tick(&mut self.swarm, now);
            self.shunned.expire(&mut self.swarm, now);
        }
        // Dropping the pending replies tells waiting callers the router is gone.
        self.shared.set_closed();
        tracing::debug!("p2p router stopped");
    }

    fn kad(&mut self) -> &mut kad::Behaviour<ProviderStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Provide { key, reply } => self.start_providing(key, reply),
            Command::ProvideMany { keys, reply } => self.bulk.start(&mut self.swarm, keys, reply),
            Command::Withdraw { key, reply } => {
                self.kad().stop_providing(&record_key(&key));
                let _ = reply.send(());
            }
            Command::Lookup { key, limit, deadline, results } => self.start_lookup(&key, limit, deadline, results),
            Command::Dial { targets } => targets.into_iter().for_each(|t| self.dial_target(t)),
            Command::KnownPeers { reply } => {
                let _ = reply.send(known::list(&mut self.swarm, self.book.rule()));
            }
            Command::DialKnown { peers } => known::dial(&mut self.swarm, self.book.rule(), peers),
            Command::Unresponsive { peer } => self.shun(peer, "the mirror found it unresponsive"),
            Command::Recovered { peer } => self.redial(peer),
            Command::Stats { reply } => {
                let stats =
                    RouterStats { store: self.kad().store_mut().stats(), bulk: self.bulk.stats(), ..self.stats };
                let _ = reply.send(stats);
            }
        }
    }

    fn start_providing(&mut self, key: Key, reply: oneshot::Sender<Result<(), Error>>) {
        match self.kad().start_providing(record_key(&key)) {
            Ok(query) => {
                self.provides.insert(query, (key, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Provide { key, reason: format!("the local record store refused: {e}") }));
            }
        }
    }

    /// Answers from records peers sent us first, then asks the network.
    fn start_lookup(&mut self, key: &Key, limit: usize, deadline: Instant, results: mpsc::UnboundedSender<Peer>) {
        let key = record_key(key);
        let stored = self.stored_providers(&key);
        let query = self.kad().get_providers(key);
        self.lookups.start(query, limit, deadline, results);
        let to_dial = self.lookups.found(query, stored.iter().copied(), &self.book);
        self.dial_providers(to_dial);
        self.connect(stored);
    }

    /// Unexpired providers of `key` in the local store, learning their addresses.
    fn stored_providers(&mut self, key: &RecordKey) -> Vec<PeerId> {
        let now = std::time::Instant::now();
        let records = self.kad().store_mut().providers(key);
        let live = records.into_iter().filter(|r| !r.is_expired(now));
        live.map(|record| {
            self.book.learn_from_record(record.provider, &record.addresses);
            record.provider
        })
        .collect()
    }

    fn dial_providers(&mut self, peers: Vec<PeerId>) {
        for peer in peers {
            let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
            match self.swarm.dial(opts) {
                Ok(()) => {}
                // Identified already without a usable address: nothing to wait for.
                Err(DialError::DialPeerConditionFalse(_)) if self.identified.contains(&peer) => {
                    self.lookups.unreachable(peer);
                }
                // Connected but not identified yet, or a dial is under way:
                // identify, the dial's failure or the connection's end settles it.
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot dial provider");
                    self.lookups.unreachable(peer);
                }
            }
        }
    }

    /// Opens a connection to each of `providers` not connected yet, when
    /// `connect_providers` is set. A failed dial only costs the fetch a 403.
    fn connect(&mut self, providers: impl IntoIterator<Item = PeerId>) {
        if !self.connect_providers {
            return;
        }
        let local = *self.swarm.local_peer_id();
        for peer in providers {
            if peer == local || self.swarm.is_connected(&peer) {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(self.book.addresses(&peer))
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "not dialling provider");
            }
        }
    }

    fn dial_target(&mut self, target: Target) {
        let addr = tcp_multiaddr(target.addr);
        let opts = match target.peer_id {
            Some(peer) => {
                self.kad().add_address(&peer, addr.clone());
                DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build()
            }
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(target = %target.addr, error = %e, "cannot dial bootstrap peer");
        }
    }

    /// Takes an unresponsive peer out of routing (see `shun`).
    fn shun(&mut self, peer: PeerId, why: &str) {
        if self.shunned.contains(&peer) {
            return;
        }
        tracing::debug!(%peer, why, "taking an unresponsive peer out of routing");
        self.shunned.shun(&mut self.swarm, peer, Instant::now());
        self.lookups.unreachable(peer);
    }

    /// A shunned peer answers again: back into the routing table, and dialled.
    fn redial(&mut self, peer: PeerId) {
        if !self.shunned.lift(&mut self.swarm, peer) && self.swarm.is_connected(&peer) {
            return;
        }
        let addrs = self.book.addresses(&peer);
        if addrs.is_empty() {
            return;
        }
        for addr in &addrs {
            self.kad().add_address(&peer, addr.clone());
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::DisconnectedAndNotDialing).build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %error, "cannot redial a recovered peer");
        }
    }

    fn end_lookups(&mut self) {
        for ended in self.lookups.take_ended(Instant::now()) {
            if ended.query_running
                && let Some(mut query) = self.kad().query_mut(&ended.id)
            {
                query.finish();
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Announce(event)) => self.bulk.on_event(&mut self.swarm, event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                self.on_identified(peer_id, info);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                if let Some(socket) = tcp_socket_addr(&address) {
                    self.shared.add_listen_addr(socket);
                }
                // Provider records carry external addresses only: announce
                // every concrete listen address peers could use.
                if self.book.rule().is_usable(&address) {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping(event),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                if let Some(remote) = tcp_socket_addr(endpoint.get_remote_address()) {
                    self.shared.peer_ips().connected(peer_id, connection_id, remote.ip());
                }
                self.shared.set_connected(self.swarm.connected_peers().count());
                if num_established.get() == 1 {
                    let endpoint = self.book.endpoint(&peer_id);
                    self.shared.links.record(LinkEvent::Up { peer: peer_name(&peer_id), endpoint });
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                self.shared.peer_ips().disconnected(peer_id, connection_id);
                self.shared.set_connected(self.swarm.connected_peers().count());
                if num_established == 0 {
                    tracing::debug!(peer = %peer_id, ?cause, "last connection to peer closed");
                    self.identified.remove(&peer_id);
                    self.lookups.unreachable(peer_id);
                    let peer = peer_name(&peer_id);
                    // Closed here for being idle (or on purpose): not a health signal.
                    let idle = matches!(cause, None | Some(libp2p::swarm::ConnectionError::KeepAliveTimeout));
                    self.shared.links.record(if idle { LinkEvent::Idle { peer } } else { LinkEvent::Down { peer } });
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                tracing::debug!(%peer, %error, "dial failed");
                if !self.swarm.is_connected(&peer) {
                    self.lookups.unreachable(peer);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "p2p no longer listening");
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "p2p listener error"),
            SwarmEvent::ListenerClosed { reason: Err(error), .. } => tracing::error!(%error, "p2p listener closed"),
            other => tracing::debug!(event = ?other, "swarm event ignored"),
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        if self.swarm.is_connected(&peer) {
            self.identified.insert(peer);
        }
        self.book.learn_from_identify(peer, &info.listen_addrs);
        let announced = info.listen_addrs.iter().filter_map(tcp_socket_addr).map(|s| s.ip());
        self.shared.peer_ips().announced(peer, announced.filter(|ip| !ip.is_unspecified()));
        self.lookups.resolved(peer, &self.book);
        if let Some(endpoint) = self.book.endpoint(&peer)
            && self.swarm.is_connected(&peer)
        {
            self.shared.links.record(LinkEvent::Up { peer: peer_name(&peer), endpoint: Some(endpoint) });
        }
        // A shunned peer stays out of the routing table until its shun lifts.
        if !info.protocols.contains(&KAD_PROTOCOL) || self.shunned.contains(&peer) {
            return;
        }
        let rule = self.book.rule();
        for addr in info.listen_addrs.into_iter().filter(|a| rule.is_usable(a)) {
            self.kad().add_address(&peer, addr);
        }
        if !self.bootstrapped {
            self.bootstrapped = self.kad().bootstrap().is_ok();
        }
    }

    /// Ping results feed peer health; a peer that does not speak ping says
    /// nothing about its health.
    fn on_ping(&mut self, event: ping::Event) {
        let peer = peer_name(&event.peer);
        match event.result {
            Ok(rtt) => self.shared.links.record(LinkEvent::Rtt { peer, rtt }),
            Err(ping::Failure::Unsupported) => {}
            Err(error) => {
                tracing::debug!(%peer, %error, "ping failed");
                self.shared.links.record(LinkEvent::PingFailed { peer: peer.clone() });
                if self.shared.links.get(&peer).is_some_and(|link| link.ping_failures >= PING_FAILURES_TO_SHUN) {
                    self.shun(event.peer, "its pings went unanswered");
                }
            }
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        if let kad::Event::RoutingUpdated { peer, .. } = &event
            && self.shunned.contains(peer)
        {
            // Re-added by traffic that was in flight when it was shunned.
            self.kad().remove_peer(peer);
            return;
        }
        let kad::Event::OutboundQueryProgressed { id, result, step, stats } = event else {
            tracing::debug!(?event, "kademlia event ignored");
            return;
        };
        match result {
            kad::QueryResult::StartProviding(outcome) => {
                tracing::debug!(?stats, "provide query ended");
                // The record is stored locally either way. A query that timed
                // out may not have sent it to any peer, so the key counts as
                // not advertised and the advertiser tries it again later.
                if let Some((key, reply)) = self.provides.remove(&id) {
                    let result = outcome.map(drop).map_err(|e| {
                        tracing::debug!(%key, error = %e, "provider announcement timed out");
                        Error::Provide { key, reason: format!("no peer was reached in time: {e}") }
                    });
                    let _ = reply.send(result);
                }
            }
            kad::QueryResult::GetProviders(outcome) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = outcome {
                    let to_dial = self.lookups.found(id, providers.iter().copied(), &self.book);
                    self.dial_providers(to_dial);
                    self.connect(providers);
                }
                if step.last {
                    self.stats.lookup_ended(stats.num_requests());
                    self.lookups.query_finished(id);
                }
            }
            kad::QueryResult::Bootstrap(Ok(kad::BootstrapOk { num_remaining: 0, .. })) => {
                self.bulk.set_bootstrapped(&mut self.swarm);
            }
            kad::QueryResult::GetClosestPeers(outcome) if self.bulk.owns_query(&id) => {
                self.bulk.on_closest_peers(&mut self.swarm, id, outcome);
            }
            other => tracing::debug!(result = ?other, "kademlia query progressed"),
        }
    }
}

fn peer_name(peer: &PeerId) -> PeerName {
    PeerName::new(peer.to_string())
}
