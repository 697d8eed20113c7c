//! The invalid requests a bad client cycles through: paths that escape or
//! are empty, malformed and unsupported digests, methods Shoal does not
//! serve, broken `ns` queries, and ranges no server can satisfy as asked.

use super::BadClientConfig;

/// Request heads (method and target) with an optional `Range` value.
pub(super) fn invalid_requests(config: &BadClientConfig) -> Vec<(String, Option<&'static str>)> {
    let (repo, blob, ns) = (&config.repository, &config.known_blob, &config.ns);
    let long = "a/".repeat(4000);
    let mut requests: Vec<(String, Option<&'static str>)> = [
        "GET /v2/../../etc/passwd".to_owned(),
        format!("GET /v2/{repo}/blobs/sha256:zz?ns={ns}"),
        format!("GET /v2/{repo}/blobs/md5:0123456789abcdef?ns={ns}"),
        format!("GET /v2/{repo}/blobs/sha256:{}?ns={ns}", "0".repeat(63)),
        format!("GET /v2/{repo}/blobs/sha256:{}?ns={ns}", "A".repeat(64)),
        format!("GET /v2//blobs/{blob}?ns={ns}"),
        format!("GET /v2/{repo}/manifests/?ns={ns}"),
        format!("GET /v2/%ff%00/manifests/v1?ns={ns}"),
        format!("GET /v2/{long}manifests/v1?ns={ns}"),
        format!("GET /v2/{repo}/tags/list?ns={ns}"),
        format!("HEAD /v2/{repo}/manifests/v1?ns=%zz"),
        format!("GET /v2/{repo}/manifests/v1?ns=&ns=&ns="),
        format!("POST /v2/{repo}/blobs/uploads/?ns={ns}"),
        format!("DELETE /v2/{repo}/manifests/v1?ns={ns}"),
        "OPTIONS *".to_owned(),
        "GET http://127.0.0.1:5000/v2/".to_owned(),
    ]
    .into_iter()
    .map(|head| (head, None))
    .collect();
    let ranges = ["bytes=abc", "bytes=5-1", "bytes=0-1,4-5", "bytes=99999999999-", "bytes=-0", "bytes=", "items=0-1"];
    let ranged = ranges.iter().map(|r| (format!("GET /v2/{repo}/blobs/{blob}?ns={ns}"), Some(*r)));
    requests.extend(ranged);
    requests.push((
        format!("GET /v2/{repo}/blobs/{blob}?ns={ns}"),
        Some("bytes=18446744073709551615-18446744073709551616"),
    ));
    requests
}
