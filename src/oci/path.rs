//! Distribution API paths: the pull-only subset Shoal serves.

use super::digest::{Digest, DigestError};
use super::name::{NameError, Reference, Repository};

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistributionPath {
    /// `/v2/` (and `/v2`): the API version check.
    ApiBase,
    /// `/v2/<name>/manifests/<tag|digest>`
    Manifest { repository: Repository, reference: Reference },
    /// `/v2/<name>/blobs/<digest>`
    Blob { repository: Repository, digest: Digest },
}

/// Manifest or blob, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    Manifest,
    Blob,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Blob => "blob",
        }
    }
}

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not a route of the pull API (pushes, catalog, tags list, ...).
    #[error("no such route")]
    NotFound,
    #[error(transparent)]
    Name(NameError),
    #[error(transparent)]
    Digest(DigestError),
}

impl From<NameError> for PathError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Digest(d) => Self::Digest(d),
            other => Self::Name(other),
        }
    }
}

impl DistributionPath {
    /// Longest path worth looking at: name, separator words and a digest.
    const MAX_LEN: usize = 4 + Repository::MAX_LEN + "/manifests/".len() + Digest::STRING_LEN;

    /// Parses the path part of a request URI (no query string).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path == "/v2/" || path == "/v2" {
            return Ok(Self::ApiBase);
        }
        if path.len() > Self::MAX_LEN {
            return Err(PathError::Name(NameError::RepositoryTooLong));
        }
        let rest = path.strip_prefix("/v2/").ok_or(PathError::NotFound)?;
        let mut parts = rest.rsplitn(3, '/');
        let (Some(reference), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PathError::NotFound);
        };
        match kind {
            "manifests" => Ok(Self::Manifest { repository: name.parse()?, reference: reference.parse()? }),
            "blobs" => {
                Ok(Self::Blob { repository: name.parse()?, digest: reference.parse().map_err(PathError::Digest)? })
            }
            _ => Err(PathError::NotFound),
        }
    }

    pub fn kind(&self) -> Option<PathKind> {
        match self {
            Self::ApiBase => None,
            Self::Manifest { .. } => Some(PathKind::Manifest),
            Self::Blob { .. } => Some(PathKind::Blob),
        }
    }

    /// The URI path that names this resource, for forwarding to a peer.
    pub fn to_uri_path(&self) -> String {
        match self {
            Self::ApiBase => "/v2/".to_owned(),
            Self::Manifest { repository, reference } => format!("/v2/{repository}/manifests/{reference}"),
            Self::Blob { repository, digest } => format!("/v2/{repository}/blobs/{digest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_pull_routes() {
        assert_eq!(DistributionPath::parse("/v2/"), Ok(DistributionPath::ApiBase));
        let manifest = DistributionPath::parse("/v2/library/nginx/manifests/1.25");
        assert!(matches!(manifest, Ok(DistributionPath::Manifest { reference: Reference::Tag(_), .. })));
        let by_digest = DistributionPath::parse(&format!("/v2/a/b/c/manifests/{D}"));
        assert!(matches!(by_digest, Ok(DistributionPath::Manifest { reference: Reference::Digest(_), .. })));
        let blob = DistributionPath::parse(&format!("/v2/nginx/blobs/{D}"));
        assert!(matches!(blob, Ok(DistributionPath::Blob { .. })));
    }

    #[test]
    fn rejects_everything_else() {
        for path in ["/", "/v1/", "/v2/_catalog", "/v2/nginx/tags/list", "/v2/nginx/blobs/uploads/", "/v2/manifests/x"]
        {
            assert_eq!(DistributionPath::parse(path), Err(PathError::NotFound), "{path}");
        }
        assert!(matches!(DistributionPath::parse("/v2/../x/manifests/v1"), Err(PathError::Name(_))));
        assert!(matches!(DistributionPath::parse("/v2/x/blobs/v1"), Err(PathError::Digest(_))));
        assert!(matches!(DistributionPath::parse("/v2/x/blobs/md5:abc"), Err(PathError::Digest(_))));
        assert!(matches!(DistributionPath::parse("/v2/x/manifests/sha1:abc"), Err(PathError::Digest(_))));
        assert!(matches!(DistributionPath::parse("/v2/x/manifests/-bad"), Err(PathError::Name(_))));
    }

    proptest! {
        #[test]
        fn uri_path_round_trips(repo in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,3}", tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
            let path = format!("/v2/{repo}/manifests/{tag}");
            let parsed = DistributionPath::parse(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.to_uri_path(), path);
        }

        #[test]
        fn parse_never_panics(s in "/v2/\\PC{0,400}") {
            let _ = DistributionPath::parse(&s);
        }
    }
}
