//! Response bodies and the one mapping from failures to OCI error JSON.

use std::io;

use bytes::Bytes;
use futures::TryStreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use crate::content::BlobStream;

/// Every response body Shoal sends.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn stream(blob: BlobStream) -> Body {
    StreamBody::new(blob.map_ok(Frame::data)).boxed_unsync()
}

/// The distribution-spec error codes Shoal answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    ManifestUnknown,
    NameInvalid,
    DigestInvalid,
    RangeInvalid,
    Unsupported,
    Unavailable,
    TooManyRequests,
    Denied,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::Unsupported => "UNSUPPORTED",
            Self::Unavailable => "UNAVAILABLE",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Denied => "DENIED",
        }
    }
}

/// An OCI error response: `{"errors":[{"code","message","detail"}]}`.
/// HEAD responses carry the headers but no body.
pub fn oci_error(status: StatusCode, code: ErrorCode, message: &str, head: bool) -> Response<Body> {
    let json = serde_json::json!({ "errors": [{ "code": code.as_str(), "message": message, "detail": null }] });
    let text = json.to_string();
    let builder =
        Response::builder().status(status).header(CONTENT_TYPE, "application/json").header(CONTENT_LENGTH, text.len());
    let body = if head { empty() } else { full(text) };
    builder.body(body).unwrap_or_else(|_| fallback(status))
}

/// A bare response for the impossible case of invalid header values.
pub fn fallback(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// A plain-text response (health endpoints, metrics).
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(full(body))
        .unwrap_or_else(|_| fallback(status))
}
