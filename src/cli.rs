//! The command line: one clap derive tree where every flag is also a
//! `SHOAL_*` environment variable, turned once into the small per-component
//! config structs that the library takes. The library never sees clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::RunConfig;
use crate::configure::{ConfigureConfig, MirrorTarget, Upstream};
use crate::mirror::{HedgePolicy, PeerTimeouts};
use crate::oci::Registry;
use crate::registry::server::ServerLimits;
use crate::replication::{PinnedImage, PopularityConfig, ReplicationConfig};
use crate::routing::p2p::{BootstrapPeer, ConnectionConfig};

#[derive(Debug, Parser)]
#[command(name = "shoal", version, about = "Peer-to-peer container image mirror for Kubernetes nodes")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mirror: advertise local containerd content and serve pulls.
    Run(Box<RunArgs>),
    /// Point containerd at Shoal by writing hosts.toml files.
    Configure(ConfigureArgs),
    /// Restore the containerd configuration that `configure` replaced.
    Cleanup(CleanupArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's env-filter syntax (e.g. `info,shoal=debug`).
    #[arg(long, env = "SHOAL_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 3s, 10m)"))
}

/// An upstream registry given as a URL or a bare host, as containerd names it in `ns`.
fn registry(s: &str) -> Result<Registry, String> {
    let upstream: Upstream = s.parse().map_err(|e| format!("{e}"))?;
    upstream.host().parse().map_err(|e| format!("{e}"))
}

/// A byte count: a plain number, or with a unit (`K`, `M`, `G` and their
/// `KiB`/`MiB`/`GiB` forms are powers of 1024; `KB`/`MB`/`GB` of 1000).
fn byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{s:?} is not a size (use e.g. 500M, 1GiB, 10MB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} (use K, M, G, KiB, MiB, GiB, KB, MB, GB)")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{s:?} is too large"))
}

/// Peers asked for their hot list each replication round.
const GOSSIP_FANOUT: usize = 3;

fn default_concurrency() -> usize {
    crate::advertiser::AdvertiserConfig::default_concurrency()
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the registry mirror API (containerd and peers connect here).
    #[arg(long, env = "SHOAL_REGISTRY_ADDR", default_value = "0.0.0.0:5000")]
    pub registry_addr: SocketAddr,
    /// Address of the libp2p router.
    #[arg(long, env = "SHOAL_ROUTER_ADDR", default_value = "0.0.0.0:5001")]
    pub router_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "SHOAL_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// containerd's gRPC socket.
    #[arg(long, env = "SHOAL_CONTAINERD_SOCK", default_value = "/run/containerd/containerd.sock")]
    pub containerd_sock: PathBuf,
    /// containerd namespace whose images are advertised.
    #[arg(long, env = "SHOAL_CONTAINERD_NAMESPACE", default_value = "k8s.io")]
    pub containerd_namespace: String,
    /// containerd's content directory; blobs are read from disk when it is readable.
    #[arg(long, env = "SHOAL_CONTAINERD_CONTENT_PATH")]
    pub containerd_content_path: Option<PathBuf>,
    /// Directory for persistent state (identity, known peers, the advertised index) and spooled
    /// downloads. Without it the node starts cold every time.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Peers to bootstrap from: comma-separated multiaddrs, with or without /p2p/<peer id>.
    #[arg(long, env = "SHOAL_BOOTSTRAP_PEERS", value_delimiter = ',')]
    pub bootstrap_peers: Vec<BootstrapPeer>,
    /// A DNS name (e.g. a headless Service) whose every A/AAAA record is a peer.
    #[arg(long, env = "SHOAL_BOOTSTRAP_DNS")]
    pub bootstrap_dns: Option<String>,
    /// Upstream registries to serve, comma-separated (e.g. https://docker.io); empty serves all.
    #[arg(long, env = "SHOAL_MIRRORED_REGISTRIES", value_delimiter = ',', value_parser = registry)]
    pub mirrored_registries: Vec<Registry>,
    /// A libp2p swarm key file (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits): only nodes with the
    /// same key join the peer network, and the registry then serves only this node and connected peers.
    #[arg(long, env = "SHOAL_P2P_PSK_FILE")]
    pub p2p_psk_file: Option<PathBuf>,
    /// How often every connected peer is pinged; a peer that misses pings is taken out of selection.
    #[arg(long, env = "SHOAL_P2P_PING_INTERVAL", default_value = "2s", value_parser = duration)]
    pub p2p_ping_interval: Duration,
    /// How long a peer connection without traffic stays open (each costs memory and pings).
    #[arg(long, env = "SHOAL_P2P_IDLE_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub p2p_idle_timeout: Duration,
    /// Registries whose images are never advertised nor served to peers, comma-separated (e.g.
    /// registry.corp.example); content any of their images references stays on the node.
    #[arg(long, env = "SHOAL_PRIVATE_REGISTRIES", value_delimiter = ',', value_parser = registry)]
    pub private_registries: Vec<Registry>,
    /// Longest a provider lookup may take.
    #[arg(long, env = "SHOAL_RESOLVE_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub resolve_timeout: Duration,
    /// When every provider found so far has failed or is excluded, how long to wait for another before answering 404.
    #[arg(long, env = "SHOAL_LOOKUP_PATIENCE", default_value = "300ms", value_parser = duration)]
    pub lookup_patience: Duration,
    /// Longest a TCP connect to a peer may take.
    #[arg(long, env = "SHOAL_PEER_CONNECT_TIMEOUT", default_value = "250ms", value_parser = duration)]
    pub peer_connect_timeout: Duration,
    /// Longest a peer may take to send response headers.
    #[arg(long, env = "SHOAL_PEER_HEADER_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub peer_header_timeout: Duration,
    /// Shortest header timeout: with enough history a peer gets 4x the 99th percentile of recent times to headers, between this and --peer-header-timeout.
    #[arg(long, env = "SHOAL_PEER_HEADER_TIMEOUT_FLOOR", default_value = "250ms", value_parser = duration)]
    pub peer_header_timeout_floor: Duration,
    /// Longest a peer's response body may stall before the next peer takes over.
    #[arg(long, env = "SHOAL_PEER_STALL_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub peer_stall_timeout: Duration,
    /// Peers tried for one request, hedges included, before answering 404.
    #[arg(long, env = "SHOAL_MAX_PEER_ATTEMPTS", default_value_t = 4)]
    pub max_peer_attempts: usize,
    /// Pass large blobs straight through (hashed on the way) from a peer after this many of its blobs were verified: about twice as fast for large layers, but a trusted peer that turns corrupt fails that one pull (the retry succeeds). 0 always verifies before sending.
    #[arg(long, env = "SHOAL_STREAM_AFTER_VERIFIED", default_value_t = 3)]
    pub stream_after_verified: u32,
    /// Hedge when a peer is slower to answer than this percentile of recent fetches (0 turns hedging off).
    #[arg(long, env = "SHOAL_HEDGE_PERCENTILE", default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub hedge_percentile: u8,
    /// The shortest wait before hedging (also the wait until there is history).
    #[arg(long, env = "SHOAL_HEDGE_FLOOR", default_value = "50ms", value_parser = duration)]
    pub hedge_floor: Duration,
    /// Blob bodies served to other nodes at once; more are turned away with 429 (0: no limit).
    #[arg(long, env = "SHOAL_MAX_CONCURRENT_UPLOADS", default_value_t = 32)]
    pub max_concurrent_uploads: usize,
    /// Upload bandwidth to other nodes per second, e.g. 200MiB [default: no limit].
    #[arg(long, env = "SHOAL_UPLOAD_RATE", value_parser = byte_size)]
    pub upload_rate: Option<u64>,
    /// How long other nodes keep this node's provider records.
    #[arg(long, env = "SHOAL_PROVIDER_TTL", default_value = "10m", value_parser = duration)]
    pub provider_ttl: Duration,
    /// How often every key is advertised again (must be shorter than the TTL).
    #[arg(long, env = "SHOAL_READVERTISE_INTERVAL", default_value = "5m", value_parser = duration)]
    pub readvertise_interval: Duration,
    /// Advertisement batches in flight at once [default: 2 per CPU].
    #[arg(long, env = "SHOAL_ADVERTISE_CONCURRENCY")]
    pub advertise_concurrency: Option<usize>,
    /// Keys advertised in one batch.
    #[arg(long, env = "SHOAL_ADVERTISE_BATCH_SIZE", default_value_t = crate::advertiser::AdvertiserConfig::DEFAULT_BATCH_SIZE)]
    pub advertise_batch_size: usize,
    /// Images to keep warm, comma-separated: registry/repository:tag, optionally =R for its own replica count.
    #[arg(long, env = "SHOAL_PIN_IMAGES", value_delimiter = ',')]
    pub pin_images: Vec<PinnedImage>,
    /// A file of images to keep warm, one per line (`image [R]`, `#` comments), re-read every round.
    #[arg(long, env = "SHOAL_PIN_IMAGES_FILE")]
    pub pin_images_file: Option<PathBuf>,
    /// Nodes that should hold each pinned image [default: every node].
    #[arg(long, env = "SHOAL_REPLICAS", value_parser = clap::value_parser!(u64).range(1..))]
    pub replicas: Option<u64>,
    /// Time between replication rounds.
    #[arg(long, env = "SHOAL_REPLICATION_INTERVAL", default_value = "1m", value_parser = duration)]
    pub replication_interval: Duration,
    /// Longest a replication pull may take.
    #[arg(long, env = "SHOAL_REPLICATION_PULL_TIMEOUT", default_value = "15m", value_parser = duration)]
    pub replication_pull_timeout: Duration,
    /// Nodes that should hold each popular image (0 turns popular replication off).
    #[arg(long, env = "SHOAL_POPULAR_REPLICAS", default_value_t = 3)]
    pub popular_replicas: usize,
    /// Peer pulls from one node within --popular-window that make an image popular.
    #[arg(long, env = "SHOAL_POPULAR_THRESHOLD", default_value_t = 10)]
    pub popular_threshold: usize,
    /// How far back peer pulls count towards popularity.
    #[arg(long, env = "SHOAL_POPULAR_WINDOW", default_value = "10m", value_parser = duration)]
    pub popular_window: Duration,
    /// Bytes of popular images one node may pull per hour, e.g. 10GiB.
    #[arg(long, env = "SHOAL_REPLICATION_BUDGET", default_value = "10GiB", value_parser = byte_size)]
    pub replication_budget: u64,
    /// Longest a shutdown waits for in-flight transfers.
    #[arg(long, env = "SHOAL_DRAIN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Longest a client may take to send request headers; also closes idle keep-alive connections.
    #[arg(long, env = "SHOAL_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Longest a response may wait for its client to take a byte before the connection is closed
    /// (frees the slots a hung client holds).
    #[arg(long, env = "SHOAL_SEND_STALL_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub send_stall_timeout: Duration,
    /// Largest request line plus headers, e.g. 64KiB; larger gets 431.
    #[arg(long, env = "SHOAL_MAX_HEADER_BYTES", default_value = "64KiB", value_parser = byte_size)]
    pub max_header_bytes: u64,
    /// Longest request URL (path and query) on the registry address; longer gets 414.
    #[arg(long, env = "SHOAL_MAX_URL_BYTES", default_value_t = crate::registry::RegistryConfig::DEFAULT_MAX_URL_BYTES)]
    pub max_url_bytes: usize,
    /// Open connections per listener; more are closed right after accept.
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS", default_value_t = ServerLimits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Requests answered at once per listener (until the body ends); more get 503 at once.
    #[arg(long, env = "SHOAL_MAX_IN_FLIGHT_REQUESTS", default_value_t = ServerLimits::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight_requests: usize,
}

/// The smallest `--max-header-bytes`: room for a pull request line and ordinary headers.
const MIN_HEADER_BYTES: u64 = 1024;

/// A flag combination that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("--readvertise-interval ({interval:?}) must be shorter than --provider-ttl ({ttl:?})")]
    ReadvertiseNotBeforeExpiry { interval: Duration, ttl: Duration },
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--{flag} must be at least {min:?}")]
    TooShort { flag: &'static str, min: Duration },
    #[error("--max-header-bytes must be at least {MIN_HEADER_BYTES}")]
    HeaderBytesTooSmall,
    #[error("--header-read-timeout must be longer than zero")]
    NoHeaderTime,
    #[error("--send-stall-timeout must be longer than zero")]
    NoSendStallTime,
}

impl RunArgs {
    /// Checks the flags together and turns them into the components' configs.
    pub fn into_config(self) -> Result<RunConfig, UsageError> {
        if self.readvertise_interval >= self.provider_ttl {
            return Err(UsageError::ReadvertiseNotBeforeExpiry {
                interval: self.readvertise_interval,
                ttl: self.provider_ttl,
            });
        }
        if self.max_peer_attempts == 0 {
            return Err(UsageError::Zero("max-peer-attempts"));
        }
        let advertise_concurrency = self.advertise_concurrency.unwrap_or_else(default_concurrency);
        if advertise_concurrency == 0 {
            return Err(UsageError::Zero("advertise-concurrency"));
        }
        if self.advertise_batch_size == 0 {
            return Err(UsageError::Zero("advertise-batch-size"));
        }
        if self.popular_threshold == 0 {
            return Err(UsageError::Zero("popular-threshold"));
        }
        if self.p2p_ping_interval < ConnectionConfig::MIN_PING_INTERVAL {
            return Err(UsageError::TooShort { flag: "p2p-ping-interval", min: ConnectionConfig::MIN_PING_INTERVAL });
        }
        if self.p2p_idle_timeout < ConnectionConfig::MIN_IDLE_TIMEOUT {
            return Err(UsageError::TooShort { flag: "p2p-idle-timeout", min: ConnectionConfig::MIN_IDLE_TIMEOUT });
        }
        let server = self.server_limits()?;
        Ok(RunConfig {
            registry_addr: self.registry_addr,
            router_addr: self.router_addr,
            metrics_addr: self.metrics_addr,
            containerd: crate::content::ContainerdConfig {
                socket: self.containerd_sock,
                namespace: self.containerd_namespace,
                content_path: self.containerd_content_path,
            },
            data_dir: self.data_dir,
            bootstrap_peers: self.bootstrap_peers,
            bootstrap_dns: self.bootstrap_dns,
            p2p_psk_file: self.p2p_psk_file,
            connections: ConnectionConfig {
                ping_interval: self.p2p_ping_interval,
                idle_timeout: self.p2p_idle_timeout,
            },
            private_registries: self.private_registries,
            registry: crate::registry::RegistryConfig {
                mirrored: self.mirrored_registries,
                uploads: crate::registry::UploadLimits {
                    max_concurrent: (self.max_concurrent_uploads > 0).then_some(self.max_concurrent_uploads),
                    bytes_per_second: self.upload_rate.filter(|rate| *rate > 0),
                },
                popularity: PopularityConfig { window: self.popular_window, threshold: self.popular_threshold },
                // Set by `app` once the swarm key is read: it needs the router.
                access: crate::registry::AccessPolicy::open(),
                max_url_bytes: self.max_url_bytes,
            },
            server,
            replication: ReplicationConfig {
                pinned: self.pin_images,
                pinned_file: self.pin_images_file,
                replicas: self.replicas.map(|r| usize::try_from(r).unwrap_or(usize::MAX)),
                interval: self.replication_interval,
                popular_replicas: self.popular_replicas,
                budget_bytes_per_hour: self.replication_budget,
                gossip_fanout: GOSSIP_FANOUT,
            },
            replication_pull_timeout: self.replication_pull_timeout,
            resolve_timeout: self.resolve_timeout,
            peer_timeouts: PeerTimeouts {
                connect: self.peer_connect_timeout,
                headers: self.peer_header_timeout,
                headers_floor: self.peer_header_timeout_floor,
                stall: self.peer_stall_timeout,
            },
            lookup_patience: self.lookup_patience,
            max_peer_attempts: self.max_peer_attempts,
            stream_after_verified: self.stream_after_verified,
            hedge: HedgePolicy {
                quantile: f64::from(self.hedge_percentile) / 100.0,
                floor: self.hedge_floor,
                enabled: self.hedge_percentile > 0,
            },
            provider_ttl: self.provider_ttl,
            advertiser: crate::advertiser::AdvertiserConfig {
                readvertise_interval: self.readvertise_interval,
                concurrency: advertise_concurrency,
                batch_size: self.advertise_batch_size,
            },
            drain_timeout: self.drain_timeout,
        })
    }

    /// The listeners' limits, checked.
    fn server_limits(&self) -> Result<ServerLimits, UsageError> {
        for (value, flag) in [
            (self.max_url_bytes, "max-url-bytes"),
            (self.max_connections, "max-connections"),
            (self.max_in_flight_requests, "max-in-flight-requests"),
        ] {
            if value == 0 {
                return Err(UsageError::Zero(flag));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(UsageError::HeaderBytesTooSmall);
        }
        if self.header_read_timeout.is_zero() {
            return Err(UsageError::NoHeaderTime);
        }
        if self.send_stall_timeout.is_zero() {
            return Err(UsageError::NoSendStallTime);
        }
        Ok(ServerLimits {
            header_read_timeout: self.header_read_timeout,
            send_stall_timeout: self.send_stall_timeout,
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight_requests,
        })
    }
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// containerd's registry config_path.
    #[arg(long, env = "SHOAL_CONTAINERD_CONFIG_PATH", default_value = "/etc/containerd/certs.d")]
    pub containerd_config_path: PathBuf,
    /// Shoal mirror URLs, in the order containerd should try them (e.g. http://127.0.0.1:5000).
    #[arg(long, env = "SHOAL_MIRROR_TARGETS", value_delimiter = ',', required = true)]
    pub mirror_targets: Vec<MirrorTarget>,
    /// Upstream registries to mirror (e.g. https://docker.io); empty configures `_default` for all.
    #[arg(long, env = "SHOAL_MIRRORED_REGISTRIES", value_delimiter = ',')]
    pub mirrored_registries: Vec<Upstream>,
    /// Keep the existing hosts after Shoal's.
    #[arg(long, env = "SHOAL_PREPEND_EXISTING")]
    pub prepend_existing: bool,
}

impl ConfigureArgs {
    pub fn into_config(self) -> ConfigureConfig {
        ConfigureConfig {
            config_path: self.containerd_config_path,
            mirror_targets: self.mirror_targets,
            upstreams: self.mirrored_registries,
            prepend_existing: self.prepend_existing,
        }
    }
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// containerd's registry config_path.
    #[arg(long, env = "SHOAL_CONTAINERD_CONFIG_PATH", default_value = "/etc/containerd/certs.d")]
    pub containerd_config_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_become_configs() {
        let cli = Cli::try_parse_from([
            "shoal",
            "run",
            "--bootstrap-peers",
            "/ip4/127.0.0.1/tcp/5001,/ip4/127.0.0.2/tcp/5001",
            "--mirrored-registries",
            "https://docker.io,http://127.0.0.200:5000",
            "--resolve-timeout",
            "250ms",
        ]);
        let Ok(Cli { command: Command::Run(args), .. }) = cli else { panic!("{cli:?}") };
        let config = args.into_config().map_err(|e| e.to_string());
        let Ok(config) = config else { panic!("{config:?}") };
        assert_eq!(config.bootstrap_peers.len(), 2);
        let mirrored: Vec<String> = config.registry.mirrored.iter().map(ToString::to_string).collect();
        assert_eq!(mirrored, ["docker.io", "127.0.0.200:5000"]);
        assert_eq!(config.resolve_timeout, Duration::from_millis(250));
        assert!(config.replication.pinned.is_empty());
        assert_eq!(config.replication.replicas, None);
        assert_eq!(config.registry.uploads.max_concurrent, Some(32));
    }

    #[test]
    fn replication_and_upload_flags_become_configs() {
        let cli = Cli::try_parse_from([
            "shoal",
            "run",
            "--pin-images",
            "registry.test/team/app:v1,registry.test/team/db:v3=2",
            "--replicas",
            "3",
            "--max-concurrent-uploads",
            "0",
            "--upload-rate",
            "100MiB",
            "--hedge-percentile",
            "0",
        ]);
        let Ok(Cli { command: Command::Run(args), .. }) = cli else { panic!("{cli:?}") };
        let config = args.into_config().map_err(|e| e.to_string());
        let Ok(config) = config else { panic!("{config:?}") };
        let replicas: Vec<Option<usize>> = config.replication.pinned.iter().map(|p| p.replicas).collect();
        assert_eq!(replicas, [None, Some(2)]);
        assert_eq!(config.replication.replicas, Some(3));
        assert_eq!(config.registry.uploads.max_concurrent, None, "0 means no limit");
        assert_eq!(config.registry.uploads.bytes_per_second, Some(100 << 20));
        assert!(!config.hedge.enabled);
        assert!(Cli::try_parse_from(["shoal", "run", "--replicas", "0"]).is_err());
        assert!(Cli::try_parse_from(["shoal", "run", "--pin-images", "nginx"]).is_err());
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(byte_size("512"), Ok(512));
        assert_eq!(byte_size("100M"), Ok(100 << 20));
        assert_eq!(byte_size("2GiB"), Ok(2 << 30));
        assert_eq!(byte_size("10MB"), Ok(10_000_000));
        assert!(byte_size("ten").is_err());
        assert!(byte_size("1TB").is_err());
        assert!(byte_size("99999999999999G").is_err());
    }

    #[test]
    fn bad_flags_are_rejected_with_a_message() {
        let err = Cli::try_parse_from(["shoal", "run", "--resolve-timeout", "soon"]).map(|_| ());
        assert!(err.is_err_and(|e| e.to_string().contains("500ms")));
        let cli = Cli::try_parse_from(["shoal", "run", "--readvertise-interval", "20m"]);
        let Ok(Cli { command: Command::Run(args), .. }) = cli else { panic!("{cli:?}") };
        assert!(matches!(args.into_config(), Err(UsageError::ReadvertiseNotBeforeExpiry { .. })));
        let cli = Cli::try_parse_from(["shoal", "run", "--advertise-batch-size", "0"]);
        let Ok(Cli { command: Command::Run(args), .. }) = cli else { panic!("{cli:?}") };
        assert!(matches!(args.into_config(), Err(UsageError::Zero("advertise-batch-size"))));
    }

    /// `shoal run` with `flags`, turned into its config.
    fn parse(flags: &[&str]) -> Result<RunConfig, UsageError> {
        let cli = Cli::try_parse_from(["shoal", "run"].iter().chain(flags));
        let Ok(Cli { command: Command::Run(args), .. }) = cli else { panic!("{cli:?}") };
        args.into_config()
    }

    #[test]
    fn peer_connection_flags_become_configs_and_are_checked() {
        let defaults = parse(&[]).map_err(|e| e.to_string());
        let Ok(defaults) = defaults else { panic!("{defaults:?}") };
        assert_eq!(defaults.connections, ConnectionConfig::default());
        let tuned = parse(&["--p2p-ping-interval", "10s", "--p2p-idle-timeout", "30s"]).map_err(|e| e.to_string());
        let Ok(tuned) = tuned else { panic!("{tuned:?}") };
        let expected =
            ConnectionConfig { ping_interval: Duration::from_secs(10), idle_timeout: Duration::from_secs(30) };
        assert_eq!(tuned.connections, expected);
        assert!(matches!(
            parse(&["--p2p-ping-interval", "10ms"]),
            Err(UsageError::TooShort { flag: "p2p-ping-interval", .. })
        ));
        assert!(matches!(
            parse(&["--p2p-idle-timeout", "0s"]),
            Err(UsageError::TooShort { flag: "p2p-idle-timeout", .. })
        ));
    }

    #[test]
    fn listener_limits_become_configs_and_are_checked() {
        let defaults = parse(&[]).map_err(|e| e.to_string());
        let Ok(defaults) = defaults else { panic!("{defaults:?}") };
        assert_eq!(defaults.server, ServerLimits::default());
        assert_eq!(defaults.registry.max_url_bytes, 4096);
        let flags = ["--header-read-timeout", "200ms", "--max-header-bytes", "16KiB", "--max-url-bytes", "1000"];
        let more = ["--max-connections", "8", "--max-in-flight-requests", "4", "--send-stall-timeout", "2m"];
        let tuned = parse(&[&flags[..], &more[..]].concat());
        let Ok(tuned) = tuned.map_err(|e| e.to_string()) else { panic!("tuned flags rejected") };
        let expected = ServerLimits {
            header_read_timeout: Duration::from_millis(200),
            max_header_bytes: 16 << 10,
            send_stall_timeout: Duration::from_secs(120),
            max_connections: 8,
            max_in_flight: 4,
        };
        assert_eq!((tuned.server, tuned.registry.max_url_bytes), (expected, 1000));
        assert!(matches!(parse(&["--max-connections", "0"]), Err(UsageError::Zero("max-connections"))));
        assert!(matches!(parse(&["--max-header-bytes", "100"]), Err(UsageError::HeaderBytesTooSmall)));
        assert!(matches!(parse(&["--header-read-timeout", "0s"]), Err(UsageError::NoHeaderTime)));
        assert!(matches!(parse(&["--send-stall-timeout", "0s"]), Err(UsageError::NoSendStallTime)));
    }
}
