//! Watching containerd for image and content changes.
//!
//! Owns: the event subscription, its confirmation, the translation of event
//! envelopes into [`ContentEvent`]s, and reconnecting with backoff. Does not
//! rescan anything itself: `Connected` tells the consumer to.
//!
//! containerd's Subscribe call answers only when the first event arrives, and
//! an event published before the subscription is registered is lost. So a
//! session subscribes, then publishes a probe event (with a nonce) on a topic
//! of our own until the probe comes back through the subscription: only then
//! is the subscription known to be live and `Connected` sent. Events seen
//! before the probe are dropped; the consumer's rescan after `Connected`
//! covers them.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use containerd_client::events::ContentDelete;
use containerd_client::services::v1::{ImageCreate, ImageDelete, ImageUpdate, PublishRequest, SubscribeRequest};
use containerd_client::types::Envelope;
use prost::{Message, Name};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Streaming;

use super::client::{self, Client};
use crate::content::{ContentEvent, Error};

/// The topics whose events change what this node holds.
const TOPICS: [&str; 4] = ["/images/create", "/images/update", "/images/delete", "/content/delete"];

/// Our own topic for confirming that a subscription is live.
const PROBE_TOPIC: &str = "/shoal/watch-probe";
/// The type URL of probe payloads (the value is the nonce).
const PROBE_TYPE: &str = "shoal.WatchProbe";
/// How often the probe is published until it comes back.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a session may take to confirm its subscription.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until `events` is closed: subscribe, confirm, forward, and on any
/// failure report `Disconnected` (once per lost subscription) and retry.
pub(super) async fn watch(client: &Client, events: mpsc::Sender<ContentEvent>) {
    let mut backoff = Backoff::default();
    let mut failed_attempts = 0u32;
    loop {
        let outcome = tokio::select! {
            outcome = session(client, &events) => outcome,
            () = events.closed() => return,
        };
        match outcome {
            Outcome::ReceiverClosed => return,
            Outcome::NotConnected(error) => {
                // Warn once per outage, not on every retry.
                if failed_attempts == 0 {
                    tracing::warn!(%error, "cannot subscribe to containerd events, retrying");
                } else {
                    tracing::debug!(%error, attempt = failed_attempts + 1, "containerd event subscription failed");
                }
                failed_attempts = failed_attempts.saturating_add(1);
            }
            Outcome::Lost(error) => {
                tracing::warn!(%error, "containerd event subscription lost, reconnecting");
                backoff = Backoff::default();
                failed_attempts = 0;
                if events.send(ContentEvent::Disconnected).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = events.closed() => return,
        }
    }
}

/// How one session ended.
enum Outcome {
    ReceiverClosed,
    /// The subscription was never confirmed.
    NotConnected(Error),
    /// The subscription was confirmed (and `Connected` sent), then lost.
    Lost(Error),
}

async fn session(client: &Client, events: &mpsc::Sender<ContentEvent>) -> Outcome {
    let mut subscription = match subscribe_confirmed(client).await {
        Ok(subscription) => subscription,
        Err(error) => return Outcome::NotConnected(error),
    };
    if events.send(ContentEvent::Connected).await.is_err() {
        return Outcome::ReceiverClosed;
    }
    loop {
        let envelope = match subscription.message().await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return Outcome::Lost(Error::Unavailable("containerd closed the event stream".to_owned())),
            Err(status) => return Outcome::Lost(client::status_error("event stream", &status)),
        };
        let Some(event) = translate(&envelope, client.namespace()) else {
            continue;
        };
        if events.send(event).await.is_err() {
            return Outcome::ReceiverClosed;
        }
    }
}

/// Subscribes, then publishes probes until one comes back.
async fn subscribe_confirmed(client: &Client) -> Result<Streaming<Envelope>, Error> {
    let nonce = probe_nonce();
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    let filters = subscription_filters(client.namespace());
    let mut events_client = client.events()?;
    // Polled first (biased) so the Subscribe request is on its way before any probe.
    let mut subscribe = pin!(events_client.subscribe(SubscribeRequest { filters }));
    let mut probe_timer = tokio::time::interval(PROBE_INTERVAL);
    let mut subscription = loop {
        tokio::select! {
            biased;
            response = &mut subscribe => {
                break response.map_err(|status| client::status_error("subscribe", &status))?.into_inner();
            }
            _ = probe_timer.tick() => publish_probe(client, &nonce).await?,
            () = tokio::time::sleep_until(deadline) => return Err(not_confirmed()),
        }
    };
    loop {
        tokio::select! {
            biased;
            message = subscription.message() => match message {
                Ok(Some(envelope)) if is_probe(&envelope, &nonce) => return Ok(subscription),
                Ok(Some(_early)) => {}
                Ok(None) => return Err(Error::Unavailable("containerd closed the event stream".to_owned())),
                Err(status) => return Err(client::status_error("event stream", &status)),
            },
            _ = probe_timer.tick() => publish_probe(client, &nonce).await?,
            () = tokio::time::sleep_until(deadline) => return Err(not_confirmed()),
        }
    }
}

fn not_confirmed() -> Error {
    Error::Unavailable(format!("event subscription not confirmed within {CONFIRM_TIMEOUT:?}"))
}

async fn publish_probe(client: &Client, nonce: &str) -> Result<(), Error> {
    let event = prost_types::Any { type_url: PROBE_TYPE.to_owned(), value: nonce.as_bytes().to_vec() };
    let request = client.request(PublishRequest { topic: PROBE_TOPIC.to_owned(), event: Some(event) })?;
    let mut events_client = client.events()?;
    client::call("publish watch probe", events_client.publish(request)).await?;
    Ok(())
}

/// A nonce unique to this process and session.
fn probe_nonce() -> String {
    static SESSIONS: AtomicU64 = AtomicU64::new(0);
    let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{session}-{nanos}", std::process::id())
}

fn is_probe(envelope: &Envelope, nonce: &str) -> bool {
    envelope.topic == PROBE_TOPIC
        && envelope.event.as_ref().is_some_and(|any| any.type_url == PROBE_TYPE && any.value == nonce.as_bytes())
}

/// containerd filters: one per topic, each also matching our namespace (the
/// terms of one filter are ANDed, separate filters ORed).
fn subscription_filters(namespace: &str) -> Vec<String> {
    let namespace = quote(namespace);
    TOPICS.iter().chain([&PROBE_TOPIC]).map(|topic| format!("namespace=={namespace},topic=={}", quote(topic))).collect()
}

/// A double-quoted filter string literal.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Decodes one protobuf `Envelope` as it arrives on the event stream and
/// translates it: `None` for undecodable bytes and for events we do not care
/// about. Pure; the fuzz target `containerd_event` drives it.
pub fn decode_event_envelope(bytes: &[u8], namespace: &str) -> Option<ContentEvent> {
    let envelope = Envelope::decode(bytes).ok()?;
    translate(&envelope, namespace)
}

/// Translates one envelope, `None` for events we do not care about.
fn translate(envelope: &Envelope, namespace: &str) -> Option<ContentEvent> {
    if envelope.namespace != namespace {
        return None;
    }
    let any = envelope.event.as_ref()?;
    // containerd sends bare type URLs (`containerd.events.ContentDelete`);
    // accept a `type.googleapis.com/`-style prefix too.
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    let bytes = any.value.as_slice();
    let event = if type_name == ImageCreate::full_name() {
        ImageCreate::decode(bytes).map(|e| ContentEvent::ImageChanged { name: e.name })
    } else if type_name == ImageUpdate::full_name() {
        ImageUpdate::decode(bytes).map(|e| ContentEvent::ImageChanged { name: e.name })
    } else if type_name == ImageDelete::full_name() {
        ImageDelete::decode(bytes).map(|e| ContentEvent::ImageDeleted { name: e.name })
    } else if type_name == ContentDelete::full_name() {
        return content_deleted(bytes);
    } else {
        return None;
    };
    event.map_err(|error| tracing::warn!(topic = %envelope.topic, %error, "undecodable containerd event")).ok()
}

fn content_deleted(bytes: &[u8]) -> Option<ContentEvent> {
    let event = ContentDelete::decode(bytes)
        .map_err(|error| tracing::warn!(%error, "undecodable containerd content delete event"))
        .ok()?;
    match event.digest.parse() {
        Ok(digest) => Some(ContentEvent::ContentDeleted { digest }),
        Err(error) => {
            tracing::warn!(digest = %event.digest.chars().take(80).collect::<String>(), %error, "skipping content delete event");
            None
        }
    }
}

/// Exponential backoff between reconnect attempts: 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests;
