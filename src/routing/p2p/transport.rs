//! The TCP transport (noise, yamux), with every outgoing connection on a
//! fresh ephemeral port, and the private-network handshake before noise
//! when the network has a pre-shared key.
//!
//! libp2p-tcp reuses the listen port for dials by default (a hole-punching
//! aid Shoal does not need). With every node on the same port that is
//! harmful: two nodes dialling each other at once produce one TCP
//! simultaneous open that neither side can negotiate, and on loopback a dial
//! from `0.0.0.0:P` to `127.0.0.1:P` connects to itself. Dialling from a
//! fresh port avoids both.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::identity::Keypair;
use libp2p::pnet::PnetConfig;
use libp2p::{Multiaddr, PeerId, Transport, noise, tcp, yamux};

use super::SwarmKey;

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
