//! Changes a real containerd's content through its own gRPC API (content
//! Write and Delete, images Create/Update/Delete), so the content-store
//! contract can run against a daemon without `ctr` or image archives; and a
//! Shoal `ContainerdStore` pointed at a harness daemon.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteContentRequest, DeleteImageRequest, Image, ListStatusesRequest, UpdateImageRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as RawDescriptor;
use shoal::content::contract::{SeedError, Seeder};
use shoal::content::{ContainerdConfig, ContainerdStore, Descriptor};
use shoal::oci::Digest;
use tonic::transport::Channel;
use tonic::{Code, Request};

use shoal_e2e::containerd::Containerd;

/// Write chunk size, well under containerd's 16 MiB message limit.
const WRITE_CHUNK: usize = 1024 * 1024;

/// A Shoal store for `daemon` in `namespace`, reading blobs from its content
/// directory if `from_disk` (else only through gRPC).
pub fn store(daemon: &Containerd, namespace: &str, from_disk: bool) -> ContainerdStore {
    ContainerdStore::new(ContainerdConfig {
        socket: daemon.socket(),
        namespace: namespace.to_owned(),
        content_path: from_disk.then(|| daemon.content_dir()),
    })
}

/// A seeder for `daemon` in `namespace`.
pub async fn seeder(daemon: &Containerd, namespace: &str) -> anyhow::Result<ContainerdSeeder> {
    let channel = containerd_client::connect(daemon.socket()).await?;
    Ok(ContainerdSeeder { channel, namespace: namespace.to_owned() })
}

/// Changes a daemon's content in one namespace through containerd's API.
pub struct ContainerdSeeder {
    channel: Channel,
    namespace: String,
}

impl ContainerdSeeder {
    fn request<T>(&self, message: T) -> Result<Request<T>, SeedError> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("containerd-namespace", self.namespace.parse()?);
        Ok(request)
    }

    fn image(name: &str, target: &Descriptor) -> Image {
        Image {
            name: name.to_owned(),
            labels: HashMap::new(),
            target: Some(RawDescriptor {
                media_type: target.media_type.to_string(),
                digest: target.digest.to_string(),
                size: target.size as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        }
    }
}

/// The write messages for `data`: chunks, then a commit that labels the blob
/// as a GC root so containerd keeps it although no image references it.
fn write_requests(data: &Bytes, digest: &Digest) -> Vec<WriteContentRequest> {
    let base = WriteContentRequest {
        action: WriteAction::Write as i32,
        r#ref: format!("shoal-test-{}", digest.hex()),
        total: data.len() as i64,
        expected: digest.to_string(),
        ..Default::default()
    };
    let mut requests: Vec<WriteContentRequest> = data
        .chunks(WRITE_CHUNK)
        .enumerate()
        .map(|(i, chunk)| WriteContentRequest {
            offset: (i * WRITE_CHUNK) as i64,
            data: chunk.to_vec(),
            ..base.clone()
        })
        .collect();
    let labels = HashMap::from([("containerd.io/gc.root".to_owned(), "2024-01-01T00:00:00Z".to_owned())]);
    requests.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        offset: data.len() as i64,
        labels,
        ..base
    });
    requests
}

#[async_trait]
impl Seeder for ContainerdSeeder {
    async fn add_blob(&self, data: Bytes) -> Result<Digest, SeedError> {
        let digest = Digest::of(&data);
        let requests = tokio_stream::iter(write_requests(&data, &digest));
        let mut responses = match ContentClient::new(self.channel.clone()).write(self.request(requests)?).await {
            Ok(responses) => responses.into_inner(),
            Err(status) if status.code() == Code::AlreadyExists => return Ok(digest),
            Err(status) => return Err(status.into()),
        };
        let mut committed = None;
        loop {
            match responses.message().await {
                Ok(Some(response)) => committed = Some(response.digest),
                Ok(None) => break,
                Err(status) if status.code() == Code::AlreadyExists => return Ok(digest),
                Err(status) => return Err(status.into()),
            }
        }
        match committed {
            Some(committed) if committed == digest.to_string() => Ok(digest),
            other => Err(format!("containerd committed {other:?}, expected {digest}").into()),
        }
    }

    async fn put_image(&self, name: &str, target: Descriptor) -> Result<(), SeedError> {
        let image = Self::image(name, &target);
        let mut images = ImagesClient::new(self.channel.clone());
        let create = CreateImageRequest { image: Some(image.clone()), source_date_epoch: None };
        match images.create(self.request(create)?).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let update = UpdateImageRequest { image: Some(image), update_mask: None, source_date_epoch: None };
                images.update(self.request(update)?).await?;
                Ok(())
            }
            Err(status) => Err(status.into()),
        }
    }

    async fn delete_image(&self, name: &str) -> Result<(), SeedError> {
        let request = DeleteImageRequest { name: name.to_owned(), sync: false, target: None };
        ImagesClient::new(self.channel.clone()).delete(self.request(request)?).await?;
        Ok(())
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), SeedError> {
        let request = DeleteContentRequest { digest: digest.to_string() };
        ContentClient::new(self.channel.clone()).delete(self.request(request)?).await?;
        Ok(())
    }

    /// Writes `prefix` and ends the write stream without a commit: containerd
    /// keeps the ingest for a later resume, as after an interrupted pull.
    async fn start_ingest(&self, reference: &str, prefix: Bytes, expected: Digest) -> Result<(), SeedError> {
        let write = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.to_owned(),
            total: i64::try_from(prefix.len())? * 2,
            expected: expected.to_string(),
            offset: 0,
            data: prefix.to_vec(),
            ..Default::default()
        };
        let requests = tokio_stream::iter(vec![write]);
        let mut responses = ContentClient::new(self.channel.clone()).write(self.request(requests)?).await?.into_inner();
        while responses.message().await?.is_some() {}
        Ok(())
    }

    async fn ingests(&self) -> Result<Vec<String>, SeedError> {
        let request = ListStatusesRequest { filters: Vec::new() };
        let statuses = ContentClient::new(self.channel.clone()).list_statuses(self.request(request)?).await?;
        Ok(statuses.into_inner().statuses.into_iter().map(|status| status.r#ref).collect())
    }
}
