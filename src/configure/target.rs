//! The two kinds of URL `shoal configure` accepts: a Shoal mirror target
//! (always with an explicit `http://` or `https://`) and an upstream registry
//! (scheme optional, https by default). Both are reduced to `scheme://host[:port]`.

use std::fmt;
use std::str::FromStr;

use crate::oci::Registry;

/// Why a mirror target or upstream URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {input:?} is not valid: {reason}")]
pub struct UrlError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

/// `http` or `https`: the only schemes containerd speaks to a registry host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A URL reduced to scheme and authority; no user info, path, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BaseUrl {
    scheme: Scheme,
    host: Registry,
}

impl BaseUrl {
    fn parse(what: &'static str, input: &str, default_scheme: Option<Scheme>) -> Result<Self, UrlError> {
        let fail = |reason| UrlError { what, input: input.chars().take(200).collect(), reason };
        let trimmed = input.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Scheme::Http, rest),
                "https" => (Scheme::Https, rest),
                _ => return Err(fail("the scheme must be http or https")),
            },
            None => (default_scheme.ok_or_else(|| fail("it needs an http:// or https:// scheme"))?, trimmed),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err(fail("it has no host"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(fail("only scheme://host[:port] is allowed, without a path, query or fragment"));
        }
        if authority.contains('@') {
            return Err(fail("user info (user@host) is not allowed"));
        }
        let host = authority.parse::<Registry>().map_err(|_| fail("the host[:port] is not valid"))?;
        Ok(Self { scheme, host })
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host.as_str())
    }
}

/// The URL of a Shoal registry mirror, e.g. `http://127.0.0.1:5000`, written
/// as a `[host."..."]` table in containerd's `hosts.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MirrorTarget(BaseUrl);

impl MirrorTarget {
    /// The normalised URL, `scheme://host[:port]`.
    pub fn url(&self) -> String {
        self.0.to_string()
    }
}

impl FromStr for MirrorTarget {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BaseUrl::parse("mirror target", s, None).map(Self)
    }
}

impl fmt::Display for MirrorTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An upstream registry whose pulls go through the mirror targets, e.g.
/// `https://docker.io` or `http://127.0.0.200:5000` (https when no scheme).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream(BaseUrl);

impl Upstream {
    /// `host[:port]` as containerd names the registry: the `certs.d` directory name.
    pub fn host(&self) -> &str {
        self.0.host.as_str()
    }

    /// The normalised URL, `scheme://host[:port]`.
    pub fn url(&self) -> String {
        self.0.to_string()
    }

    /// The `server` of the hosts.toml: the URL, except that Docker Hub's API
    /// lives at `registry-1.docker.io` (containerd's own default for `docker.io`).
    pub fn server(&self) -> String {
        match (self.0.scheme, self.host()) {
            (Scheme::Https, "docker.io") => "https://registry-1.docker.io".to_owned(),
            _ => self.url(),
        }
    }
}

impl FromStr for Upstream {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BaseUrl::parse("upstream registry", s, Some(Scheme::Https)).map(Self)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn mirror_target_keeps_scheme_host_and_port() {
        let target: MirrorTarget = "http://127.0.0.1:5000".parse().unwrap();
        assert_eq!(target.url(), "http://127.0.0.1:5000");
        let target: MirrorTarget = "HTTPS://Mirror.Example.test/".parse().unwrap();
        assert_eq!(target.to_string(), "https://mirror.example.test");
    }

    #[test]
    fn mirror_target_needs_a_scheme() {
        let err = "127.0.0.1:5000".parse::<MirrorTarget>().unwrap_err();
        assert!(err.to_string().contains("needs an http:// or https:// scheme"), "{err}");
    }

    #[test]
    fn mirror_target_rejects_everything_but_scheme_and_authority() {
        for bad in [
            "ftp://127.0.0.1:5000",
            "http://",
            "http://127.0.0.1:5000/v2",
            "http://127.0.0.1:5000?x=1",
            "http://user@127.0.0.1:5000",
            "http://127.0.0.1:99999",
            "http://bad_host:5000",
            "",
        ] {
            assert!(bad.parse::<MirrorTarget>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn upstream_defaults_to_https() {
        let upstream: Upstream = "ghcr.io".parse().unwrap();
        assert_eq!(upstream.url(), "https://ghcr.io");
        assert_eq!(upstream.host(), "ghcr.io");
        assert_eq!(upstream.server(), "https://ghcr.io");
    }

    #[test]
    fn upstream_host_keeps_the_port() {
        let upstream: Upstream = "http://127.0.0.200:5000".parse().unwrap();
        assert_eq!(upstream.host(), "127.0.0.200:5000");
        assert_eq!(upstream.url(), "http://127.0.0.200:5000");
    }

    #[test]
    fn docker_hub_server_is_registry_1() {
        let upstream: Upstream = "https://docker.io".parse().unwrap();
        assert_eq!(upstream.host(), "docker.io");
        assert_eq!(upstream.server(), "https://registry-1.docker.io");
    }

    #[test]
    fn upstream_error_names_the_input() {
        let err = "https://reg.test/path".parse::<Upstream>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("upstream registry") && text.contains("reg.test/path"), "{text}");
    }
}
