//! An OCI image layout on disk: `oci-layout`, `index.json` and content-
//! addressed blobs under `blobs/sha256/`, each written once while hashed.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What a manifest or index says about a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// A writer that hashes and counts what passes through.
pub struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), len: 0 }
    }

    /// `(sha256:<hex>, length, inner writer)`
    pub fn finish(self) -> (String, u64, W) {
        (format!("sha256:{}", hex::encode(self.hasher.finalize())), self.len, self.inner)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An OCI image layout directory being written.
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("create layout {}", dir.display()))?;
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, descriptor: &Descriptor) -> PathBuf {
        self.dir.join("blobs/sha256").join(descriptor.hex())
    }

    /// Stores `data` as a blob.
    pub fn write_blob(&self, media_type: &str, data: &[u8]) -> Result<Descriptor> {
        Ok(self.write_blob_with(media_type, |out| out.write_all(data))?.0)
    }

    /// Stores what `write` produces as a blob, streaming; also returns `write`'s result.
    pub fn write_blob_with<T>(
        &self,
        media_type: &str,
        write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> Result<(Descriptor, T)> {
        let tmp = self.dir.join("blobs/sha256").join(format!(".tmp-{}", std::process::id()));
        let mut out = Hashing::new(BufWriter::with_capacity(1 << 20, File::create(&tmp)?));
        let extra = write(&mut out).with_context(|| format!("write blob {}", tmp.display()))?;
        let (digest, size, buffered) = out.finish();
        buffered.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        let descriptor = Descriptor { media_type: media_type.to_owned(), digest, size };
        fs::rename(&tmp, self.blob_path(&descriptor))?;
        Ok((descriptor, extra))
    }

    /// Writes `index.json` naming `top` with `annotations`.
    pub fn write_index_json(&self, top: &Descriptor, annotations: &[(&str, &str)]) -> Result<()> {
        fs::write(self.dir.join("index.json"), index_json(top, annotations).to_string())?;
        Ok(())
    }
}

/// An `index.json` listing only `top`, with `annotations` on it.
pub fn index_json(top: &Descriptor, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect();
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": top.size,
            "annotations": annotations,
        }],
    })
}
