//! Turns containerd's image records into our domain types.
//!
//! Owns: parsing descriptors (digest, media type, size) and skipping records
//! that do not parse. Pure: no I/O. A bad record is logged and skipped, never
//! a panic and never a failure of the whole listing.

use containerd_client::services::v1::Image;
use containerd_client::types::Descriptor as RawDescriptor;

use crate::content::{Descriptor, ImageRecord};
use crate::oci::{Digest, MediaType};

/// Why an image record was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RecordError {
    #[error("image record has no target")]
    NoTarget,
    #[error("target digest {0:?} is not a sha256 digest")]
    BadDigest(String),
    #[error("target media type {0:?} is malformed")]
    BadMediaType(String),
    #[error("target size {0} is negative")]
    NegativeSize(i64),
}

/// The record for `image`, or `None` (with a warning) if it does not parse.
pub(super) fn image_record(image: Image) -> Option<ImageRecord> {
    match image.target.as_ref().ok_or(RecordError::NoTarget).and_then(descriptor) {
        Ok(target) => Some(ImageRecord { name: image.name, target }),
        Err(error) => {
            tracing::warn!(image = %image.name, %error, "skipping containerd image record");
            None
        }
    }
}

/// Parses a containerd descriptor into a [`Descriptor`].
pub(super) fn descriptor(raw: &RawDescriptor) -> Result<Descriptor, RecordError> {
    let digest: Digest = raw.digest.parse().map_err(|_| RecordError::BadDigest(bounded(&raw.digest)))?;
    let media_type =
        MediaType::parse(&raw.media_type).ok_or_else(|| RecordError::BadMediaType(bounded(&raw.media_type)))?;
    let size = u64::try_from(raw.size).map_err(|_| RecordError::NegativeSize(raw.size))?;
    Ok(Descriptor { digest, media_type, size })
}

/// Keeps log lines bounded when a record is hostile.
fn bounded(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn raw(digest: &str, media_type: &str, size: i64) -> RawDescriptor {
        RawDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size,
            annotations: Default::default(),
        }
    }

    fn image(name: &str, target: Option<RawDescriptor>) -> Image {
        Image { name: name.to_owned(), labels: Default::default(), target, created_at: None, updated_at: None }
    }

    #[test]
    fn maps_a_valid_target() {
        let digest = Digest::of(b"manifest");
        let record = image_record(image("registry.test/app:v1", Some(raw(&digest.to_string(), MANIFEST, 42))));
        let expected = Descriptor { digest, media_type: MediaType::from_static(MANIFEST), size: 42 };
        assert_eq!(record, Some(ImageRecord { name: "registry.test/app:v1".to_owned(), target: expected }));
    }

    #[test]
    fn rejects_bad_digest_media_type_and_size() {
        let digest = Digest::of(b"x").to_string();
        assert!(matches!(descriptor(&raw("sha512:abc", MANIFEST, 1)), Err(RecordError::BadDigest(_))));
        assert!(matches!(descriptor(&raw(&digest, "not a type", 1)), Err(RecordError::BadMediaType(_))));
        assert_eq!(descriptor(&raw(&digest, MANIFEST, -1)), Err(RecordError::NegativeSize(-1)));
    }

    #[test]
    fn skips_records_that_do_not_parse() {
        assert_eq!(image_record(image("no-target", None)), None);
        assert_eq!(image_record(image("bad", Some(raw("sha256:zz", MANIFEST, 1)))), None);
    }
}
