//! [`ImagePuller`] for a node's containerd: pulls through the CRI
//! ImageService (`PullImage`, what the kubelet calls), so containerd's own
//! registry configuration routes the pull through Shoal (`hosts.toml`:
//! mirrors first, upstream last); pins with a containerd lease and labels.
//!
//! Pinning: a lease (`shoal.pinned`, no expiry) references the target
//! (manifest or index) of every pinned image; containerd's garbage collector
//! follows the `containerd.io/gc.ref.*` labels from there to configs and
//! layers, so the content survives even if the image record is removed.
//! Every record of a pinned image is also labelled
//! `io.cri-containerd.pinned=pinned`, which CRI reports to the kubelet as a
//! pinned image that its image GC leaves alone (containerd 1.7+; older
//! versions ignore it), and `shoal.io/pinned=true` so Shoal can find and
//! release its own pins.
//!
//! Boundary: with `content::containerd`, the only module that imports
//! containerd-client, k8s-cri or tonic.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest, DeleteResourceRequest, Image, ListImagesRequest, ListResourcesRequest, Resource,
    UpdateImageRequest,
};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, PullImageRequest};
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::puller::{ImagePuller, PullError};
use crate::oci::TagRef;

/// The lease that holds pinned content.
pub const LEASE_ID: &str = "shoal.pinned";
/// The label CRI turns into `Image.pinned` for the kubelet.
pub const CRI_PINNED_LABEL: &str = "io.cri-containerd.pinned";
/// Marks the records Shoal pinned, so it releases only its own.
pub const SHOAL_PINNED_LABEL: &str = "shoal.io/pinned";
/// Bound on every call but the pull itself.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Where the runtime is and how long a pull may take.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// containerd's socket, which also serves CRI.
    pub socket: PathBuf,
    /// The namespace CRI uses (`k8s.io`), for leases and image records.
    pub namespace: String,
    pub pull_timeout: Duration,
}

/// Pulls and pins through a node's containerd.
pub struct CriPuller {
    config: CriConfig,
}

impl CriPuller {
    pub fn new(config: CriConfig) -> Self {
        Self { config }
    }

    async fn channel(&self) -> Result<Channel, PullError> {
        let connect = containerd_client::connect(&self.config.socket);
        match tokio::time::timeout(CALL_TIMEOUT, connect).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => Err(PullError::Unavailable(format!("{}: {error}", self.config.socket.display()))),
            Err(_) => Err(PullError::Unavailable(format!("{}: no answer", self.config.socket.display()))),
        }
    }

    /// `message` with the containerd namespace header.
    fn request<T>(&self, message: T) -> Result<Request<T>, PullError> {
        let mut request = Request::new(message);
        let namespace = self.config.namespace.parse().map_err(|_| PullError::Pin("invalid namespace".into()))?;
        request.metadata_mut().insert(NAMESPACE_HEADER, namespace);
        Ok(request)
    }
}

/// Awaits a containerd call with [`CALL_TIMEOUT`].
async fn call<T>(
    what: &str,
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("{what}: no answer within {CALL_TIMEOUT:?}"))),
    }
}

fn pin_error(what: &str) -> impl Fn(tonic::Status) -> PullError + '_ {
    move |status| PullError::Pin(format!("{what}: {}: {}", status.code(), status.message()))
}

#[async_trait]
impl ImagePuller for CriPuller {
    async fn pull(&self, image: &TagRef) -> Result<(), PullError> {
        let mut client = ImageServiceClient::new(self.channel().await?);
        let request = PullImageRequest {
            image: Some(ImageSpec { image: image.to_string(), ..ImageSpec::default() }),
            auth: None,
            sandbox_config: None,
        };
        let limit = self.config.pull_timeout;
        match tokio::time::timeout(limit, client.pull_image(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(PullError::Pull { image: image.to_string(), reason: status.message().to_owned() }),
            Err(_) => Err(PullError::Timeout { image: image.to_string(), limit }),
        }
    }

    async fn pin(&self, images: &[TagRef]) -> Result<(), PullError> {
        let channel = self.channel().await?;
        let mut records = ImagesClient::new(channel.clone());
        let mut leases = LeasesClient::new(channel);
        let all = call("list images", records.list(self.request(ListImagesRequest { filters: Vec::new() })?))
            .await
            .map_err(pin_error("list images"))?
            .images;
        let targets = pinned_targets(&all, images);
        if !targets.is_empty() {
            self.ensure_lease(&mut leases).await?;
        }
        self.sync_lease(&mut leases, &targets).await?;
        // Every record of a pinned image (CRI adds repo@digest and
        // sha256:<config> records with the same target) is labelled; records
        // Shoal labelled before and that are no longer pinned are released.
        for record in &all {
            let target = record.target.as_ref().map(|t| t.digest.as_str()).unwrap_or_default();
            let pinned = targets.contains(target);
            if pinned != is_labelled(record) {
                self.label(&mut records, record, pinned).await?;
            }
        }
        Ok(())
    }
}

impl CriPuller {
    async fn ensure_lease(&self, leases: &mut LeasesClient<Channel>) -> Result<(), PullError> {
        let create = CreateRequest { id: LEASE_ID.to_owned(), labels: HashMap::new() };
        match call("create lease", leases.create(self.request(create)?)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(pin_error("create lease")(status)),
        }
    }

    /// Makes the lease reference exactly `targets`.
    async fn sync_lease(&self, leases: &mut LeasesClient<Channel>, targets: &HashSet<String>) -> Result<(), PullError> {
        let listed = ListResourcesRequest { id: LEASE_ID.to_owned() };
        let resources = match call("list lease resources", leases.list_resources(self.request(listed)?)).await {
            Ok(response) => response.resources,
            // No lease yet: nothing was ever pinned.
            Err(status) if status.code() == Code::NotFound => Vec::new(),
            Err(status) => return Err(pin_error("list lease resources")(status)),
        };
        let held: HashSet<String> = resources.into_iter().filter(|r| r.r#type == "content").map(|r| r.id).collect();
        for digest in targets.difference(&held) {
            let add = AddResourceRequest { id: LEASE_ID.to_owned(), resource: Some(content(digest)) };
            call("add lease resource", leases.add_resource(self.request(add)?))
                .await
                .map_err(pin_error("add lease resource"))?;
        }
        for digest in held.difference(targets) {
            let delete = DeleteResourceRequest { id: LEASE_ID.to_owned(), resource: Some(content(digest)) };
            call("delete lease resource", leases.delete_resource(self.request(delete)?))
                .await
                .map_err(pin_error("delete lease resource"))?;
        }
        Ok(())
    }

    async fn label(&self, records: &mut ImagesClient<Channel>, record: &Image, pinned: bool) -> Result<(), PullError> {
        let mut image = record.clone();
        if pinned {
            image.labels.insert(CRI_PINNED_LABEL.to_owned(), "pinned".to_owned());
            image.labels.insert(SHOAL_PINNED_LABEL.to_owned(), "true".to_owned());
        } else {
            image.labels.remove(CRI_PINNED_LABEL);
            image.labels.remove(SHOAL_PINNED_LABEL);
        }
        let paths = vec![format!("labels.{CRI_PINNED_LABEL}"), format!("labels.{SHOAL_PINNED_LABEL}")];
        let update = UpdateImageRequest {
            image: Some(image),
            update_mask: Some(prost_types::FieldMask { paths }),
            source_date_epoch: None,
        };
        match call("label image", records.update(self.request(update)?)).await {
            Ok(_) => Ok(()),
            // Deleted since it was listed: nothing to pin or release.
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(pin_error("label image")(status)),
        }
    }
}

/// The targets of the records named in `images`.
fn pinned_targets(all: &[Image], images: &[TagRef]) -> HashSet<String> {
    let names: HashSet<String> = images.iter().map(ToString::to_string).collect();
    all.iter().filter(|r| names.contains(&r.name)).filter_map(|r| r.target.as_ref().map(|t| t.digest.clone())).collect()
}

fn is_labelled(record: &Image) -> bool {
    record.labels.get(SHOAL_PINNED_LABEL).is_some_and(|v| v == "true")
}

fn content(digest: &str) -> Resource {
    Resource { id: digest.to_owned(), r#type: "content".to_owned() }
}
