//! The state of this node's connections to its peers, as the router sees
//! them: who is connected, since when, the last ping round trip, and the
//! peer's registry endpoint when it is known.
//!
//! Owns: a bounded table that a router feeds with [`LinkEvent`]s, and the
//! observers that learn of every event synchronously, on the router's own
//! task. That is what lets a closed connection take a peer out of selection
//! at once, before any request pays for it. Knows nothing of libp2p
//! (`routing::p2p` and the in-memory fake feed it). Observers must be quick
//! and must never block or call back into the router.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::PeerName;

/// Most peers remembered; beyond it the longest-disconnected entry goes.
const MAX_LINKS: usize = 16_384;

/// A change in the connection to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The first connection to `peer` opened, or its endpoint became known.
    Up { peer: PeerName, endpoint: Option<SocketAddr> },
    /// The last connection to `peer` closed: the peer went away, or closed it.
    Down { peer: PeerName },
    /// This node closed the last connection to `peer` for being idle: the
    /// peer is no longer connected, but that says nothing about its health.
    Idle { peer: PeerName },
    /// A ping over the connection came back after `rtt`.
    Rtt { peer: PeerName, rtt: Duration },
    /// A ping over the connection timed out or failed.
    PingFailed { peer: PeerName },
}

impl LinkEvent {
    pub fn peer(&self) -> &PeerName {
        match self {
            Self::Up { peer, .. }
            | Self::Down { peer }
            | Self::Idle { peer }
            | Self::Rtt { peer, .. }
            | Self::PingFailed { peer } => peer,
        }
    }
}

/// What is known about the connection to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub connected: bool,
    /// When `connected` last changed.
    pub since: Instant,
    pub rtt: Option<Duration>,
    /// Pings failed in a row since the last good one.
    pub ping_failures: u32,
    /// The peer's registry endpoint, once it announced one.
    pub endpoint: Option<SocketAddr>,
}

type Observer = Arc<dyn Fn(&LinkEvent, &Link) + Send + Sync>;

/// The link table and its observers. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct Links {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// std mutexes: held only for map updates, never across `.await`, and
    /// never while an observer runs.
    table: Mutex<HashMap<PeerName, Link>>,
    observers: Mutex<Vec<Observer>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("peers", &lock(&self.inner.table).len()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Links {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `observer` with every later event for a known peer, and the
    /// peer's link after the event, on the router's task.
    pub fn observe(&self, observer: impl Fn(&LinkEvent, &Link) + Send + Sync + 'static) {
        lock(&self.inner.observers).push(Arc::new(observer));
    }

    /// The link to `peer`, if this node was ever connected to it.
    pub fn get(&self, peer: &PeerName) -> Option<Link> {
        lock(&self.inner.table).get(peer).cloned()
    }

    /// The peers connected now, sorted by name.
    pub fn connected(&self) -> Vec<PeerName> {
        let mut peers: Vec<PeerName> =
            lock(&self.inner.table).iter().filter(|(_, link)| link.connected).map(|(name, _)| name.clone()).collect();
        peers.sort();
        peers
    }

    /// Every known link, sorted by peer name.
    pub fn snapshot(&self) -> Vec<(PeerName, Link)> {
        let mut links: Vec<(PeerName, Link)> =
            lock(&self.inner.table).iter().map(|(name, link)| (name.clone(), link.clone())).collect();
        links.sort_by(|a, b| a.0.cmp(&b.0));
        links
    }

    /// Applies `event` to the table, then tells every observer.
    pub fn record(&self, event: LinkEvent) {
        let Some(link) = self.apply(&event, Instant::now()) else { return };
        let observers: Vec<Observer> = lock(&self.inner.observers).clone();
        for observer in observers {
            observer(&event, &link);
        }
    }

    /// The peer's link after `event`; `None` for an unknown peer's
    /// non-`Up` event, which is ignored.
    fn apply(&self, event: &LinkEvent, now: Instant) -> Option<Link> {
        let mut table = lock(&self.inner.table);
        if !table.contains_key(event.peer()) {
            if !matches!(event, LinkEvent::Up { .. }) {
                return None;
            }
            make_room(&mut table);
        }
        let link = table.entry(event.peer().clone()).or_insert_with(|| Link {
            connected: false,
            since: now,
            rtt: None,
            ping_failures: 0,
            endpoint: None,
        });
        match event {
            LinkEvent::Up { endpoint, .. } => {
                if !link.connected {
                    link.connected = true;
                    link.since = now;
                    link.ping_failures = 0;
                }
                if endpoint.is_some() {
                    link.endpoint = *endpoint;
                }
            }
            LinkEvent::Down { .. } | LinkEvent::Idle { .. } => {
                if link.connected {
                    link.connected = false;
                    link.since = now;
                }
            }
            LinkEvent::Rtt { rtt, .. } => {
                link.rtt = Some(*rtt);
                link.ping_failures = 0;
            }
            LinkEvent::PingFailed { .. } => link.ping_failures = link.ping_failures.saturating_add(1),
        }
        Some(link.clone())
    }
}

/// Drops the longest-disconnected peer when the table is full.
fn make_room(table: &mut HashMap<PeerName, Link>) {
    if table.len() < MAX_LINKS {
        return;
    }
    let oldest = table.iter().filter(|(_, link)| !link.connected).min_by_key(|(_, link)| link.since);
    if let Some(name) = oldest.map(|(name, _)| name.clone()) {
        table.remove(&name);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn name(n: u8) -> PeerName {
        PeerName::new(format!("peer-{n}"))
    }

    #[test]
    fn up_down_and_pings_are_tracked_per_peer() {
        let links = Links::new();
        let endpoint: SocketAddr = "127.0.5.1:5000".parse().unwrap();
        links.record(LinkEvent::Up { peer: name(1), endpoint: None });
        links.record(LinkEvent::Up { peer: name(1), endpoint: Some(endpoint) });
        links.record(LinkEvent::Rtt { peer: name(1), rtt: Duration::from_millis(3) });
        links.record(LinkEvent::PingFailed { peer: name(1) });
        let link = links.get(&name(1)).unwrap();
        assert!(link.connected);
        assert_eq!((link.endpoint, link.rtt, link.ping_failures), (Some(endpoint), Some(Duration::from_millis(3)), 1));
        assert_eq!(links.connected(), vec![name(1)]);

        links.record(LinkEvent::Down { peer: name(1) });
        assert!(!links.get(&name(1)).unwrap().connected);
        assert!(links.connected().is_empty());
        assert_eq!(links.get(&name(1)).unwrap().endpoint, Some(endpoint), "the endpoint is remembered");
    }

    #[test]
    fn events_for_unknown_peers_other_than_up_are_ignored() {
        let links = Links::new();
        links.record(LinkEvent::Down { peer: name(2) });
        links.record(LinkEvent::Rtt { peer: name(2), rtt: Duration::from_millis(1) });
        assert!(links.get(&name(2)).is_none());
    }

    #[test]
    fn observers_see_every_event_in_order() {
        let links = Links::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        links.observe(move |event, link| sink.lock().unwrap().push((event.clone(), link.connected)));
        links.record(LinkEvent::Up { peer: name(3), endpoint: None });
        links.record(LinkEvent::Down { peer: name(3) });
        links.record(LinkEvent::Down { peer: name(4) });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "an unknown peer's event is not passed on");
        assert_eq!(seen[1], (LinkEvent::Down { peer: name(3) }, false));
    }

    #[test]
    fn the_table_is_bounded_by_dropping_the_longest_disconnected() {
        let mut table = HashMap::new();
        let start = Instant::now();
        for i in 0..MAX_LINKS {
            let link = Link {
                connected: i != 7,
                since: start + Duration::from_secs(i as u64),
                rtt: None,
                ping_failures: 0,
                endpoint: None,
            };
            table.insert(PeerName::new(format!("p{i}")), link);
        }
        make_room(&mut table);
        assert_eq!(table.len(), MAX_LINKS - 1);
        assert!(!table.contains_key(&PeerName::new("p7")));
    }
}
