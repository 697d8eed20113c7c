//! OCI domain types, parsed at the edge.
//!
//! Owns: digests, registry hosts, repository names, tags, references, media
//! types, byte ranges and distribution API paths. Everything here is pure: no
//! I/O, no async, no knowledge of HTTP status codes. Every other module may
//! depend on `oci`; `oci` depends on nothing else in the crate.

mod digest;
mod key;
mod media_type;
mod name;
mod path;
mod range;

pub use digest::{Digest, DigestError};
pub use key::Key;
pub use media_type::MediaType;
pub use name::{NameError, Reference, Registry, Repository, Tag, TagRef};
pub use path::{DistributionPath, PathError, PathKind};
pub use range::{ByteRange, RangeError, ResolvedRange};
