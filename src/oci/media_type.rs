//! Media types of the documents Shoal walks and serves.

use std::fmt;

/// A media type such as `application/vnd.oci.image.manifest.v1+json`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MediaType(String);

impl MediaType {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// What a blob is served as when its own type does not matter.
    pub const OCTET_STREAM: &str = "application/octet-stream";

    /// Parses a media type, rejecting anything that is not `type/subtype`
    /// made of RFC 6838 characters (parameters are not accepted).
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, subtype) = s.split_once('/')?;
        let token = |t: &str| {
            !t.is_empty() && t.len() <= 127 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        (token(kind) && token(subtype)).then(|| Self(s.to_owned()))
    }

    pub fn from_static(s: &'static str) -> Self {
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An image index or Docker manifest list: it names other manifests.
    pub fn is_index(&self) -> bool {
        self.0 == Self::OCI_INDEX || self.0 == Self::DOCKER_LIST
    }

    /// A single-platform image manifest: it names a config and layers.
    pub fn is_image_manifest(&self) -> bool {
        self.0 == Self::OCI_MANIFEST || self.0 == Self::DOCKER_MANIFEST
    }

    /// Anything served on the `manifests` endpoint.
    pub fn is_manifest(&self) -> bool {
        self.is_index() || self.is_image_manifest()
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_manifest_kinds() {
        let index = MediaType::from_static(MediaType::DOCKER_LIST);
        assert!(index.is_index() && index.is_manifest() && !index.is_image_manifest());
        let manifest = MediaType::from_static(MediaType::OCI_MANIFEST);
        assert!(manifest.is_image_manifest() && !manifest.is_index());
        assert!(!MediaType::from_static(MediaType::OCTET_STREAM).is_manifest());
    }

    #[test]
    fn rejects_malformed_types() {
        for s in ["", "json", "a/", "/b", "a/b; charset=utf-8", "a/b/c", "a b/c"] {
            assert!(MediaType::parse(s).is_none(), "{s:?}");
        }
        assert!(MediaType::parse(MediaType::OCI_INDEX).is_some());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Some(media_type) = MediaType::parse(&s) {
                prop_assert_eq!(media_type.as_str(), s.as_str());
            }
        }
    }
}
