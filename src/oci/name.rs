//! Registry hosts, repository names, tags and references, validated against
//! the OCI distribution-spec grammar.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Why a name, tag or reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} does not match the distribution-spec grammar")]
    BadRepository(String),
    #[error("repository name is longer than {max} characters", max = Repository::MAX_LEN)]
    RepositoryTooLong,
    #[error("tag {0:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    BadTag(String),
    #[error("registry host {0:?} is not a valid host[:port]")]
    BadRegistry(String),
    #[error("image name {0:?} has no tag")]
    MissingTag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A registry host with an optional port, e.g. `docker.io` or `127.0.0.1:5000`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry(String);

impl Registry {
    const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Registry {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::BadRegistry(clip(s));
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(bad());
        }
        let (host, port) = split_host_port(s).ok_or_else(bad)?;
        if let Some(port) = port
            && (port.is_empty()
                || port.len() > 5
                || !port.bytes().all(|b| b.is_ascii_digit())
                || port.parse::<u16>().is_err())
        {
            return Err(bad());
        }
        let valid_host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty() && host.split('.').all(is_host_label)
        };
        if !valid_host {
            return Err(bad());
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

/// Splits `host[:port]`, keeping a bracketed IPv6 host intact.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        };
    }
    Some(match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    })
}

fn is_host_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A repository name such as `library/nginx`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository(String);

impl Repository {
    /// Clients commonly cap `host/name` at 255 characters; the name alone can
    /// never be longer than that.
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Repository {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > Self::MAX_LEN {
            return Err(NameError::RepositoryTooLong);
        }
        if s.is_empty() || !s.split('/').all(is_path_component) {
            return Err(NameError::BadRepository(clip(s)));
        }
        Ok(Self(s.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    while i < bytes.len() {
        let run_start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false; // empty alphanumeric run: leading, trailing or doubled separator
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[sep_start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid || i == bytes.len() {
            return false;
        }
    }
    false
}

/// A tag such as `v1.2.3`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let first_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || bytes.len() > Self::MAX_LEN {
            return Err(NameError::BadTag(clip(s)));
        }
        Ok(Self(s.to_owned()))
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') { Ok(Self::Digest(s.parse()?)) } else { Ok(Self::Tag(s.parse()?)) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => f.write_str(tag.as_str()),
            Self::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

/// A fully qualified tag, `registry/repository:tag`: the unit that is
/// advertised for tags and that tag lookups ask the DHT for.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagRef {
    pub registry: Registry,
    pub repository: Repository,
    pub tag: Tag,
}

impl TagRef {
    /// Parses a containerd image name. Names pinned by digest
    /// (`repo@sha256:...`) or consisting only of a digest carry no tag and
    /// yield `Ok(None)`: they are not advertised as tags.
    pub fn from_image_name(name: &str) -> Result<Option<Self>, NameError> {
        if name.contains('@') || name.parse::<Digest>().is_ok() {
            return Ok(None);
        }
        name.parse().map(Some)
    }
}

impl FromStr for TagRef {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (registry, rest) = s.split_once('/').ok_or_else(|| NameError::BadRepository(clip(s)))?;
        let (repository, tag) = rest.rsplit_once(':').ok_or_else(|| NameError::MissingTag(clip(s)))?;
        Ok(Self { registry: registry.parse()?, repository: repository.parse()?, tag: tag.parse()? })
    }
}

impl fmt::Display for TagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    )*};
}
display_as_str!(Registry, Repository, Tag);

impl fmt::Debug for TagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_repositories() {
        for name in ["nginx", "library/nginx", "a/b/c", "my-app", "my__app", "my.app", "a--b", "0/1"] {
            assert!(name.parse::<Repository>().is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_traversal_and_bad_characters() {
        for name in
            ["", "..", "a/../b", "../etc", "a/", "/a", "a//b", "A", "a b", "a___b", "a-", "-a", "a.-b", "a%2fb", "a\0"]
        {
            assert!(name.parse::<Repository>().is_err(), "{name:?}");
        }
        assert_eq!("a".repeat(256).parse::<Repository>(), Err(NameError::RepositoryTooLong));
    }

    #[test]
    fn tags_follow_the_grammar() {
        assert!("v1.2.3-rc_1".parse::<Tag>().is_ok());
        assert!("_x".parse::<Tag>().is_ok());
        for tag in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(tag.parse::<Tag>().is_err(), "{tag:?}");
        }
    }

    #[test]
    fn registries_allow_ports_and_ipv6() {
        for host in ["docker.io", "127.0.0.1:5000", "registry.test", "[::1]:5000", "[::1]", "localhost"] {
            assert!(host.parse::<Registry>().is_ok(), "{host}");
        }
        for host in ["", "a:", "a:99999", "a:b", "-a.com", "a..b", "[::1", "a/b", "a b"] {
            assert!(host.parse::<Registry>().is_err(), "{host:?}");
        }
    }

    #[test]
    fn tag_refs_come_from_image_names() {
        let tag = TagRef::from_image_name("127.0.0.1:5000/team/app:v1").ok().flatten();
        assert_eq!(tag.map(|t| t.to_string()).as_deref(), Some("127.0.0.1:5000/team/app:v1"));
        assert_eq!(
            TagRef::from_image_name(
                "docker.io/library/nginx@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            Ok(None)
        );
        assert_eq!(
            TagRef::from_image_name("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            Ok(None)
        );
        assert!(TagRef::from_image_name("docker.io/library/nginx").is_err());
    }

    proptest! {
        #[test]
        fn grammar_conforming_repositories_parse(name in "[a-z0-9]{1,8}(([._]|__|-{1,3})[a-z0-9]{1,8}){0,3}(/[a-z0-9]{1,8}(([._]|-{1,2})[a-z0-9]{1,8}){0,2}){0,4}") {
            prop_assert_eq!(name.parse::<Repository>().map(|r| r.to_string()), Ok(name));
        }

        #[test]
        fn repositories_never_contain_dot_dot_or_empty_components(name in "[a-z0-9./_-]{0,40}") {
            if let Ok(repo) = name.parse::<Repository>() {
                prop_assert!(!repo.as_str().contains(".."));
                prop_assert!(!repo.as_str().split('/').any(str::is_empty));
            }
        }

        #[test]
        fn tag_refs_round_trip(reg in "[a-z]{1,10}(\\.[a-z]{1,5})?(:[1-9][0-9]{0,3})?", repo in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}", tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
            let text = format!("{reg}/{repo}:{tag}");
            let parsed: TagRef = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = s.parse::<Repository>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Registry>();
            let _ = s.parse::<Reference>();
            let _ = TagRef::from_image_name(&s);
        }
    }
}
