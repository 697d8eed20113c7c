//! The TCP transport (noise, yamux), with every outgoing connection on a
//! fresh ephemeral port, and the private-network handshake before noise
//! when the network has a pre-shared key; and, for simulations, the memory
//! transport behind TCP-shaped addresses (see [`build_memory`]).
//!
//! libp2p-tcp reuses the listen port for dials by default (a hole-punching
//! aid Shoal does not need). With every node on the same port that is
//! harmful: two nodes dialling each other at once produce one TCP
//! simultaneous open that neither side can negotiate, and on loopback a dial
//! from `0.0.0.0:P` to `127.0.0.1:P` connects to itself. Dialling from a
//! fresh port avoids both.

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::memory::MemoryTransportError;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, MemoryTransport, PortUse, TransportError, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PnetConfig;
use libp2p::{Multiaddr, PeerId, Transport, noise, tcp, yamux};

use super::SwarmKey;
use super::addresses::tcp_socket_addr;

/// The longest a connection may take from dial or accept to a negotiated
/// muxer. A frozen or blackholed peer otherwise holds a dial (and any
/// Kademlia query waiting on it) open until TCP gives up, minutes later.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3);

/// The shape libp2p's `SwarmBuilder::with_other_transport` accepts.
type BuildResult = Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>>;

/// TCP (+ pnet with a key) + noise + yamux, dialling from fresh ports.
/// With a key, a peer without the same key fails the first negotiation
/// after the pnet handshake, before noise or any protocol runs.
pub(super) fn build(keypair: &Keypair, key: Option<SwarmKey>) -> BuildResult {
    let tcp = FreshPortDials(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)));
    match key {
        Some(key) => secure(tcp.and_then(move |socket, _| PnetConfig::new(key.psk()).handshake(socket)), keypair),
        None => secure(tcp, keypair),
    }
}

/// Noise and yamux over `transport`.
fn secure<T>(transport: T, keypair: &Keypair) -> BuildResult
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let transport = transport
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    Ok(transport)
}

/// Passes everything through, except that dials never reuse the listen port.
struct FreshPortDials<T>(T);

impl<T: Transport + Unpin> Transport for FreshPortDials<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(addr, DialOpts { port_use: PortUse::New, ..opts })
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// libp2p's in-process memory transport (noise, yamux), for simulations of
/// many nodes in one process: no socket is opened.
pub(super) fn build_memory(keypair: &Keypair) -> BuildResult {
    let transport = TcpShapedMemory(MemoryTransport::default())
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    Ok(transport)
}

/// The memory transport behind TCP-shaped addresses: `/ip4/a.b.c.d/tcp/p`
/// is memory port `(a.b.c.d << 16) | p`, both ways. The rest of the router
/// (address book, endpoint rule, bootstrap) sees the same addresses as over
/// TCP, so a simulated node behaves like a real one.
struct TcpShapedMemory(MemoryTransport);

/// The memory port standing for an IPv4 TCP address, if `addr` is one.
fn memory_port(addr: &Multiaddr) -> Option<u64> {
    let socket = tcp_socket_addr(addr)?;
    let IpAddr::V4(ip) = socket.ip() else { return None };
    let port = (u64::from(u32::from(ip)) << 16) | u64::from(socket.port());
    (port != 0).then_some(port)
}

/// The TCP-shaped address of a memory address (any other address is kept).
fn tcp_shaped(addr: Multiaddr) -> Multiaddr {
    match addr.iter().next() {
        Some(Protocol::Memory(port)) => {
            let ip = Ipv4Addr::from(u32::try_from(port >> 16).unwrap_or(u32::MAX));
            let tcp_port = u16::try_from(port & 0xffff).unwrap_or(0);
            Multiaddr::empty().with(Protocol::Ip4(ip)).with(Protocol::Tcp(tcp_port))
        }
        _ => addr,
    }
}

fn to_memory(addr: Multiaddr) -> Result<Multiaddr, TransportError<MemoryTransportError>> {
    match memory_port(&addr) {
        Some(port) => Ok(Multiaddr::empty().with(Protocol::Memory(port))),
        None => Err(TransportError::MultiaddrNotSupported(addr)),
    }
}

impl Transport for TcpShapedMemory {
    type Output = <MemoryTransport as Transport>::Output;
    type Error = MemoryTransportError;
    type ListenerUpgrade = <MemoryTransport as Transport>::ListenerUpgrade;
    type Dial = <MemoryTransport as Transport>::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, to_memory(addr)?)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(to_memory(addr)?, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx).map(|event| match event {
            TransportEvent::NewAddress { listener_id, listen_addr } => {
                TransportEvent::NewAddress { listener_id, listen_addr: tcp_shaped(listen_addr) }
            }
            TransportEvent::AddressExpired { listener_id, listen_addr } => {
                TransportEvent::AddressExpired { listener_id, listen_addr: tcp_shaped(listen_addr) }
            }
            TransportEvent::Incoming { listener_id, upgrade, local_addr, send_back_addr } => TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr: tcp_shaped(local_addr),
                send_back_addr: tcp_shaped(send_back_addr),
            },
            other => other,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn tcp_shaped_addresses_map_to_memory_ports_and_back() {
        let addr: Multiaddr = "/ip4/127.1.3.232/tcp/4001".parse().unwrap();
        let memory = to_memory(addr.clone()).unwrap();
        assert!(matches!(memory.iter().next(), Some(Protocol::Memory(_))));
        assert_eq!(tcp_shaped(memory), addr);
        assert!(to_memory("/ip6/::1/tcp/4001".parse().unwrap()).is_err());
        assert!(to_memory("/memory/5".parse().unwrap()).is_err());
    }
}
