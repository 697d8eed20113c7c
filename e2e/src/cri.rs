//! The kubelet's path to images: the CRI image service over containerd's unix
//! socket. A CRI pull fetches inside the daemon and reads `certs.d`, exactly
//! as on a real node. Every call is bounded by a timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{Image, ImageSpec, ListImagesRequest, PullImageRequest, RemoveImageRequest};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::wait::with_timeout;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A CRI image service client for one containerd.
#[derive(Clone)]
pub struct Cri {
    client: ImageServiceClient<Channel>,
}

/// A finished pull: what CRI answered and how long it took.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image_ref: String,
    pub elapsed: Duration,
}

impl Cri {
    /// Connects to `socket` (containerd's gRPC socket).
    pub async fn connect(socket: &Path) -> Result<Self> {
        let socket: PathBuf = socket.to_path_buf();
        let endpoint = Endpoint::try_from("http://[::]:50051")?.connect_timeout(CALL_TIMEOUT);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }));
        let channel = with_timeout("connect to the CRI socket", CALL_TIMEOUT, async { Ok(connect.await?) }).await?;
        Ok(Self { client: ImageServiceClient::new(channel) })
    }

    /// Pulls `image` (e.g. `127.0.0.200:5000/e2e/app:v1`) within `timeout`.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<Pulled> {
        let start = Instant::now();
        let request = PullImageRequest { image: Some(spec(image)), auth: None, sandbox_config: None };
        let mut client = self.client.clone();
        let response = with_timeout(&format!("CRI pull of {image}"), timeout, async {
            client.pull_image(request).await.with_context(|| format!("CRI pull of {image}"))
        })
        .await?;
        Ok(Pulled { image_ref: response.into_inner().image_ref, elapsed: start.elapsed() })
    }

    /// Removes `image` (a name or an image id).
    pub async fn remove(&self, image: &str) -> Result<()> {
        let request = RemoveImageRequest { image: Some(spec(image)) };
        let mut client = self.client.clone();
        with_timeout(&format!("CRI remove of {image}"), CALL_TIMEOUT, async {
            client.remove_image(request).await.with_context(|| format!("CRI remove of {image}"))
        })
        .await?;
        Ok(())
    }

    /// Every image CRI knows.
    pub async fn list(&self) -> Result<Vec<Image>> {
        let mut client = self.client.clone();
        let response = with_timeout("CRI list images", CALL_TIMEOUT, async {
            client.list_images(ListImagesRequest { filter: None }).await.context("CRI list images")
        })
        .await?;
        Ok(response.into_inner().images)
    }

    /// Whether an image carries the tag `image`.
    pub async fn has_image(&self, image: &str) -> Result<bool> {
        Ok(self.list().await?.iter().any(|i| i.repo_tags.iter().any(|tag| tag == image)))
    }
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec { image: image.to_owned(), ..Default::default() }
}
