//! containerd event envelopes as they come off the event stream: decoding
//! never panics, and only events of the watched namespace are translated.
#![no_main]

use containerd_client::types::Envelope;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shoal::content::{ContentEvent, decode_event_envelope};

const NAMESPACE: &str = "k8s.io";

fuzz_target!(|data: &[u8]| {
    let Some(event) = decode_event_envelope(data, NAMESPACE) else { return };
    let envelope = Envelope::decode(data).unwrap_or_else(|e| panic!("translated an undecodable envelope: {e}"));
    assert_eq!(envelope.namespace, NAMESPACE, "events of other namespaces are ignored");
    assert!(decode_event_envelope(data, "other").is_none());
    match event {
        ContentEvent::ContentDeleted { digest } => assert_eq!(digest.to_string().len(), 71),
        ContentEvent::ImageChanged { .. } | ContentEvent::ImageDeleted { .. } => {}
        other => panic!("an envelope cannot mean {other:?}"),
    }
});
