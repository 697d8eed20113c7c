use super::*;
use crate::oci::Digest;

fn envelope<T: Message + Name>(namespace: &str, topic: &str, event: &T) -> Envelope {
    Envelope {
        timestamp: None,
        namespace: namespace.to_owned(),
        topic: topic.to_owned(),
        event: Some(prost_types::Any { type_url: T::full_name(), value: event.encode_to_vec() }),
    }
}

#[test]
fn filters_match_each_topic_in_the_namespace() {
    assert_eq!(
        subscription_filters("k8s.io"),
        [
            r#"namespace=="k8s.io",topic=="/images/create""#,
            r#"namespace=="k8s.io",topic=="/images/update""#,
            r#"namespace=="k8s.io",topic=="/images/delete""#,
            r#"namespace=="k8s.io",topic=="/content/delete""#,
            r#"namespace=="k8s.io",topic=="/shoal/watch-probe""#,
        ]
    );
    assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
}

#[test]
fn translates_image_events() {
    let name = "registry.test/app:v1".to_owned();
    let changed = Some(ContentEvent::ImageChanged { name: name.clone() });
    let create = ImageCreate { name: name.clone(), labels: Default::default() };
    assert_eq!(translate(&envelope("ns", "/images/create", &create), "ns"), changed);
    let update = ImageUpdate { name: name.clone(), labels: Default::default() };
    assert_eq!(translate(&envelope("ns", "/images/update", &update), "ns"), changed);
    let delete = ImageDelete { name: name.clone() };
    assert_eq!(translate(&envelope("ns", "/images/delete", &delete), "ns"), Some(ContentEvent::ImageDeleted { name }));
}

#[test]
fn translates_content_deletes_with_valid_digests_only() {
    let digest = Digest::of(b"blob");
    let event = ContentDelete { digest: digest.to_string() };
    assert_eq!(
        translate(&envelope("ns", "/content/delete", &event), "ns"),
        Some(ContentEvent::ContentDeleted { digest })
    );
    let bad = ContentDelete { digest: "md5:abc".to_owned() };
    assert_eq!(translate(&envelope("ns", "/content/delete", &bad), "ns"), None);
}

#[test]
fn ignores_other_namespaces_unknown_types_and_garbage() {
    let create = ImageCreate { name: "x".to_owned(), labels: Default::default() };
    assert_eq!(translate(&envelope("other", "/images/create", &create), "ns"), None);
    let unknown = ContentDelete { digest: Digest::of(b"x").to_string() };
    let mut wrong_type = envelope("ns", "/content/delete", &unknown);
    if let Some(any) = wrong_type.event.as_mut() {
        any.type_url = "containerd.events.ContentCreate".to_owned();
    }
    assert_eq!(translate(&wrong_type, "ns"), None);
    let mut garbage = envelope("ns", "/images/create", &create);
    if let Some(any) = garbage.event.as_mut() {
        any.value = vec![0xff, 0xff, 0xff];
    }
    assert_eq!(translate(&garbage, "ns"), None);
}

#[test]
fn accepts_prefixed_type_urls() {
    let mut prefixed = envelope("ns", "/images/delete", &ImageDelete { name: "x".to_owned() });
    if let Some(any) = prefixed.event.as_mut() {
        any.type_url = format!("type.googleapis.com/{}", ImageDelete::full_name());
    }
    assert_eq!(translate(&prefixed, "ns"), Some(ContentEvent::ImageDeleted { name: "x".to_owned() }));
}

#[test]
fn recognises_only_our_own_probe() {
    let probe = |value: &str| Envelope {
        timestamp: None,
        namespace: "ns".to_owned(),
        topic: PROBE_TOPIC.to_owned(),
        event: Some(prost_types::Any { type_url: PROBE_TYPE.to_owned(), value: value.as_bytes().to_vec() }),
    };
    assert!(is_probe(&probe("n1"), "n1"));
    assert!(!is_probe(&probe("n2"), "n1"));
    assert_eq!(translate(&probe("n1"), "ns"), None);
    assert_ne!(probe_nonce(), probe_nonce());
}

#[test]
fn backoff_doubles_up_to_five_seconds() {
    let mut backoff = Backoff::default();
    let delays: Vec<u64> = (0..9).map(|_| backoff.next_delay().as_millis() as u64).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
}
