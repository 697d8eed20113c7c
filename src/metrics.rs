//! Every Prometheus metric Shoal exports, registered in one registry that is
//! passed around (never a global), and the text encoder for `/metrics`.
//!
//! Owns: metric names, labels and buckets. Domain code records through the
//! small methods here; label values come from closed enums, and the one
//! open-ended label (`registry`) is capped so cardinality stays bounded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::oci::PathKind;

/// Where the bytes of a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// This node's containerd.
    Local,
    /// Another Shoal node.
    Peer,
    /// Nobody: answered 404 so containerd falls back to the upstream.
    Miss,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Peer => "peer",
            Self::Miss => "miss",
        }
    }
}

/// Why a fetch from a peer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchFailure {
    Connect,
    /// The request failed after connecting, before any response.
    Transport,
    HeaderTimeout,
    Status,
    /// The peer answered 429/503: at its upload limit.
    Busy,
    NotFound,
    Stall,
    Body,
    DigestMismatch,
    Spool,
}

impl FetchFailure {
    /// Every reason, so each series can be exported at 0 from the start.
    pub const ALL: [Self; 10] = [
        Self::Connect,
        Self::Transport,
        Self::HeaderTimeout,
        Self::Status,
        Self::Busy,
        Self::NotFound,
        Self::Stall,
        Self::Body,
        Self::DigestMismatch,
        Self::Spool,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Transport => "transport",
            Self::HeaderTimeout => "header_timeout",
            Self::Status => "status",
            Self::Busy => "busy",
            Self::NotFound => "not_found",
            Self::Stall => "stall",
            Self::Body => "body",
            Self::DigestMismatch => "digest_mismatch",
            Self::Spool => "spool",
        }
    }
}

/// Every request kind, for series exported at 0 from the start.
const KINDS: [PathKind; 2] = [PathKind::Manifest, PathKind::Blob];
/// The `result` values of `shoal_peer_requests_total`.
const PEER_REQUEST_RESULTS: [&str; 3] = ["served", "not_found", "busy"];
/// The `result` values of probes and replication pulls.
const OK_FAILED: [&str; 2] = ["ok", "failed"];

/// An HTTP listener, for the connection and admission metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The registry mirror API (`--registry-addr`).
    Registry,
    /// `/metrics` and `/status/peers` (`--metrics-addr`).
    Metrics,
}

impl Listener {
    pub const ALL: [Self; 2] = [Self::Registry, Self::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Metrics => "metrics",
        }
    }
}

/// Why a request was refused before it was served (`shoal_requests_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// 503: the listener was at `--max-in-flight-requests`.
    InFlightLimit,
    /// 414: the URL was longer than `--max-url-bytes`.
    UrlTooLong,
    /// 403: the client is neither on this host nor a connected peer.
    Forbidden,
}

impl Rejection {
    pub const ALL: [Self; 3] = [Self::InFlightLimit, Self::UrlTooLong, Self::Forbidden];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlightLimit => "in_flight_limit",
            Self::UrlTooLong => "url_too_long",
            Self::Forbidden => "forbidden",
        }
    }
}

/// The most distinct `registry` label values kept; later ones become `other`.
const MAX_REGISTRY_LABELS: usize = 64;

/// All metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    bytes: IntCounterVec,
    resolve_duration: Histogram,
    fetch_duration: HistogramVec,
    fetch_failures: IntCounterVec,
    uploads: IntCounterVec,
    upload_bytes: IntCounterVec,
    advertised_keys: IntGauge,
    advertise_failures: IntCounter,
    connected_peers: IntGauge,
    containerd_connected: IntGauge,
    last_peer_fetch: Gauge,
    http_in_flight: GaugeVec,
    hedges: IntCounter,
    hedge_wins: IntCounter,
    passthroughs: IntCounter,
    hedge_deadline: Gauge,
    peers_excluded: IntGauge,
    peer_probes: IntCounterVec,
    uploads_in_flight: Gauge,
    replication_pulls: IntCounterVec,
    replication_images: IntGaugeVec,
    advertise: AdvertiseMetrics,
    state: StateMetrics,
    listeners: ListenerCounters,
    /// Registry label values seen so far; a std mutex, never held across `.await`.
    registries: Mutex<HashSet<String>>,
}

impl Inner {
    /// Creates every series whose label values come from a closed set, at 0,
    /// so `rate()` and alert expressions have data before the first event.
    /// Series with the open `registry` label, and replication's per-state
    /// gauge (exported only while replication runs), are left alone.
    fn export_closed_series(&self) {
        for reason in FetchFailure::ALL {
            self.fetch_failures.with_label_values(&[reason.as_str()]);
        }
        for kind in KINDS.map(PathKind::as_str) {
            for result in PEER_REQUEST_RESULTS {
                self.uploads.with_label_values(&[kind, result]);
            }
            self.upload_bytes.with_label_values(&[kind]);
            self.fetch_duration.with_label_values(&[kind]);
            self.http_in_flight.with_label_values(&[kind]);
        }
        for result in OK_FAILED {
            self.peer_probes.with_label_values(&[result]);
            self.replication_pulls.with_label_values(&[result]);
        }
    }
}

fn latency_buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("shoal_requests_total", "Registry requests answered, by where the content came from."),
            &["source", "registry", "kind"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new("shoal_bytes_served_total", "Response body bytes sent to clients, by where they came from."),
            &["source", "registry", "kind"],
        )?;
        let resolve_duration = Histogram::with_opts(
            HistogramOpts::new("shoal_resolve_duration_seconds", "Time from a lookup's start to its first provider.")
                .buckets(latency_buckets()),
        )?;
        let fetch_duration = HistogramVec::new(
            HistogramOpts::new("shoal_peer_fetch_duration_seconds", "Duration of successful fetches from peers.")
                .buckets(latency_buckets()),
            &["kind"],
        )?;
        let fetch_failures = IntCounterVec::new(
            Opts::new("shoal_peer_fetch_failures_total", "Failed fetch attempts from peers, by reason."),
            &["reason"],
        )?;
        let uploads = IntCounterVec::new(
            Opts::new(
                "shoal_peer_requests_total",
                "Requests from other nodes, by result: served, not_found, or busy (turned away at the upload limit).",
            ),
            &["kind", "result"],
        )?;
        let upload_bytes = IntCounterVec::new(
            Opts::new("shoal_peer_upload_bytes_total", "Body bytes sent to other nodes."),
            &["kind"],
        )?;
        let advertised_keys = IntGauge::new("shoal_advertised_keys", "Keys this node currently advertises.")?;
        let advertise_failures =
            IntCounter::new("shoal_advertise_failures_total", "Advertisements of a key that failed.")?;
        let connected_peers = IntGauge::new("shoal_connected_peers", "Peers currently connected.")?;
        let containerd_connected =
            IntGauge::new("shoal_containerd_connected", "1 while the containerd event subscription is up.")?;
        let last_peer_fetch = Gauge::new(
            "shoal_last_peer_fetch_timestamp_seconds",
            "Unix time of the last successful fetch from a peer.",
        )?;
        let http_in_flight = GaugeVec::new(
            Opts::new("shoal_http_requests_in_flight", "Registry requests being served, by kind."),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(resolve_duration.clone()))?;
        registry.register(Box::new(fetch_duration.clone()))?;
        registry.register(Box::new(fetch_failures.clone()))?;
        registry.register(Box::new(uploads.clone()))?;
        registry.register(Box::new(upload_bytes.clone()))?;
        registry.register(Box::new(advertised_keys.clone()))?;
        registry.register(Box::new(advertise_failures.clone()))?;
        registry.register(Box::new(connected_peers.clone()))?;
        registry.register(Box::new(containerd_connected.clone()))?;
        registry.register(Box::new(last_peer_fetch.clone()))?;
        registry.register(Box::new(http_in_flight.clone()))?;
        let hedges =
            IntCounter::new("shoal_hedges_total", "Hedged attempts started: a second peer asked in parallel.")?;
        let hedge_wins =
            IntCounter::new("shoal_hedge_wins_total", "Hedged attempts that delivered response headers first.")?;
        let passthroughs = IntCounter::new(
            "shoal_peer_blob_passthroughs_total",
            "Blobs from trusted peers passed straight through, hashed on the way, instead of verified first.",
        )?;
        let hedge_deadline = Gauge::new(
            "shoal_hedge_deadline_seconds",
            "The current hedge deadline: wait this long for headers before asking another peer.",
        )?;
        let peers_excluded =
            IntGauge::new("shoal_peers_excluded", "Peers excluded from selection (closed connection, failures).")?;
        let peer_probes = IntCounterVec::new(
            Opts::new("shoal_peer_probes_total", "Health probes of excluded peers, by result."),
            &["result"],
        )?;
        let uploads_in_flight =
            Gauge::new("shoal_uploads_in_flight", "Blob bodies being streamed to other nodes right now.")?;
        registry.register(Box::new(uploads_in_flight.clone()))?;
        let replication_pulls = IntCounterVec::new(
            Opts::new("shoal_replication_pulls_total", "Pulls started by replication (pinned or popular), by result."),
            &["result"],
        )?;
        let replication_images = IntGaugeVec::new(
            Opts::new(
                "shoal_replication_images",
                "Images the last replication round considered, by what it did: held, satisfied, waiting, pulled, \
                 failed, over_budget.",
            ),
            &["state"],
        )?;
        registry.register(Box::new(replication_pulls.clone()))?;
        registry.register(Box::new(replication_images.clone()))?;
        registry.register(Box::new(hedges.clone()))?;
        registry.register(Box::new(hedge_wins.clone()))?;
        registry.register(Box::new(passthroughs.clone()))?;
        registry.register(Box::new(hedge_deadline.clone()))?;
        registry.register(Box::new(peers_excluded.clone()))?;
        registry.register(Box::new(peer_probes.clone()))?;
        let advertise = AdvertiseMetrics::new(&registry)?;
        let state = StateMetrics::new(&registry)?;
        let listeners = ListenerCounters::new(&registry)?;
        let inner = Inner {
            registry,
            requests,
            bytes,
            resolve_duration,
            fetch_duration,
            fetch_failures,
            uploads,
            upload_bytes,
            advertised_keys,
            advertise_failures,
            connected_peers,
            containerd_connected,
            last_peer_fetch,
            http_in_flight,
            hedges,
            hedge_wins,
            passthroughs,
            hedge_deadline,
            peers_excluded,
            peer_probes,
            uploads_in_flight,
            replication_pulls,
            replication_images,
            advertise,
            state,
            listeners,
            registries: Mutex::new(HashSet::new()),
        };
        inner.export_closed_series();
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Caps the distinct values of the `registry` label.
    fn registry_label(&self, registry: &str) -> String {
        let Ok(mut seen) = self.inner.registries.lock() else {
            return "other".to_owned();
        };
        if seen.contains(registry) || seen.len() < MAX_REGISTRY_LABELS {
            seen.insert(registry.to_owned());
            return registry.to_owned();
        }
        "other".to_owned()
    }

    /// Counts one answered request and returns the counter its body bytes go to.
    pub fn served(&self, source: Source, registry: &str, kind: PathKind) -> IntCounter {
        let registry = self.registry_label(registry);
        let labels = [source.as_str(), registry.as_str(), kind.as_str()];
        self.inner.requests.with_label_values(&labels).inc();
        self.inner.bytes.with_label_values(&labels)
    }

    /// Counts a request from another node that this node served, and returns
    /// the counter its body bytes go to.
    pub fn uploaded(&self, kind: PathKind) -> IntCounter {
        self.inner.uploads.with_label_values(&[kind.as_str(), "served"]).inc();
        self.inner.upload_bytes.with_label_values(&[kind.as_str()])
    }

    /// Counts a request from another node turned away at the upload limit.
    pub fn upload_busy(&self, kind: PathKind) {
        self.inner.uploads.with_label_values(&[kind.as_str(), "busy"]).inc();
    }

    /// Tracks one upload body until the guard drops.
    pub fn uploading(&self) -> InFlight {
        let gauge = self.inner.uploads_in_flight.clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// Counts a request from another node for content this node lacks.
    pub fn upload_not_found(&self, kind: PathKind) {
        self.inner.uploads.with_label_values(&[kind.as_str(), "not_found"]).inc();
    }

    pub fn observe_resolve(&self, elapsed: Duration) {
        self.inner.resolve_duration.observe(elapsed.as_secs_f64());
    }

    pub fn observe_peer_fetch(&self, kind: PathKind, elapsed: Duration) {
        self.inner.fetch_duration.with_label_values(&[kind.as_str()]).observe(elapsed.as_secs_f64());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.inner.last_peer_fetch.set(now.as_secs_f64());
    }

    pub fn peer_fetch_failed(&self, reason: FetchFailure) {
        self.inner.fetch_failures.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn set_advertised_keys(&self, n: usize) {
        self.inner.advertised_keys.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn advertise_failed(&self, keys: u64) {
        self.inner.advertise_failures.inc_by(keys);
    }

    /// One batch handed to the router, and how many of its keys were advertised.
    pub fn observe_advertise_batch(&self, elapsed: Duration, advertised: usize) {
        self.inner.advertise.duration.observe(elapsed.as_secs_f64());
        self.inner.advertise.provided.inc_by(advertised as u64);
    }

    pub fn withdrew(&self) {
        self.inner.advertise.withdrawn.inc();
    }

    /// Keys waiting to be advertised or withdrawn, including those in flight.
    pub fn set_advertise_pending(&self, n: usize) {
        self.inner.advertise.pending.set(gauge_value(n));
    }

    /// Keys whose last advertisement failed, waiting for a retry.
    pub fn set_advertise_failed_keys(&self, n: usize) {
        self.inner.advertise.failed_keys.set(gauge_value(n));
    }

    pub fn observe_state_write(&self, elapsed: Duration) {
        self.inner.state.write_duration.observe(elapsed.as_secs_f64());
    }

    pub fn set_saved_peers(&self, n: usize) {
        self.inner.state.saved_peers.set(gauge_value(n));
    }

    pub fn state_write_failed(&self) {
        self.inner.state.write_failures.inc();
    }

    /// How this run started (one of [`START_MODES`]): that series is 1, the others 0.
    pub fn set_state_start(&self, mode: &str) {
        for known in START_MODES {
            self.inner.state.start_mode.with_label_values(&[known]).set(i64::from(known == mode));
        }
    }

    pub fn set_connected_peers(&self, n: usize) {
        self.inner.connected_peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_containerd_connected(&self, up: bool) {
        self.inner.containerd_connected.set(i64::from(up));
    }

    pub fn hedge_started(&self) {
        self.inner.hedges.inc();
    }

    pub fn hedge_won(&self) {
        self.inner.hedge_wins.inc();
    }

    /// A blob from a trusted peer is being passed straight through.
    pub fn peer_blob_passed_through(&self) {
        self.inner.passthroughs.inc();
    }

    pub fn set_hedge_deadline(&self, deadline: Duration) {
        self.inner.hedge_deadline.set(deadline.as_secs_f64());
    }

    pub fn set_peers_excluded(&self, n: usize) {
        self.inner.peers_excluded.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn peer_probed(&self, ok: bool) {
        self.inner.peer_probes.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
    }

    pub fn replication_pulled(&self, ok: bool) {
        self.inner.replication_pulls.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
    }

    /// The last replication round's image count per state (closed set of names).
    pub fn set_replication_images(&self, states: &[(&'static str, usize)]) {
        for (state, count) in states {
            self.inner.replication_images.with_label_values(&[state]).set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Tracks one in-flight request of `kind` until the guard drops.
    pub fn in_flight(&self, kind: &'static str) -> InFlight {
        let gauge = self.inner.http_in_flight.with_label_values(&[kind]);
        gauge.inc();
        InFlight(gauge)
    }

    /// The connection and admission metrics of one HTTP listener.
    pub fn listener(&self, listener: Listener) -> ListenerMetrics {
        let counters = &self.inner.listeners;
        let name = listener.as_str();
        ListenerMetrics {
            open: counters.open.with_label_values(&[name]),
            rejected: counters.rejected.with_label_values(&[name]),
            stalled: counters.stalled.with_label_values(&[name]),
            in_flight_limit: counters.requests_rejected.with_label_values(&[name, Rejection::InFlightLimit.as_str()]),
            url_too_long: counters.requests_rejected.with_label_values(&[name, Rejection::UrlTooLong.as_str()]),
            forbidden: counters.requests_rejected.with_label_values(&[name, Rejection::Forbidden.as_str()]),
        }
    }

    /// Every series name this registry can export, recorded yet or not (a
    /// vector without children counts): histograms as their `_bucket`, `_sum`
    /// and `_count` series, since the bare name is never a series. Dashboards
    /// and alert rules are checked against it. Lists the same collectors as
    /// `new` registers; a unit test holds the two in step.
    pub fn metric_names(&self) -> Vec<String> {
        let inner = &*self.inner;
        let collectors: [&dyn Collector; 22] = [
            &inner.requests,
            &inner.bytes,
            &inner.resolve_duration,
            &inner.fetch_duration,
            &inner.fetch_failures,
            &inner.uploads,
            &inner.upload_bytes,
            &inner.advertised_keys,
            &inner.advertise_failures,
            &inner.connected_peers,
            &inner.containerd_connected,
            &inner.last_peer_fetch,
            &inner.http_in_flight,
            &inner.hedges,
            &inner.hedge_wins,
            &inner.passthroughs,
            &inner.hedge_deadline,
            &inner.peers_excluded,
            &inner.peer_probes,
            &inner.uploads_in_flight,
            &inner.replication_pulls,
            &inner.replication_images,
        ];
        let mut names = Vec::new();
        let all = collectors
            .into_iter()
            .chain(inner.advertise.collectors())
            .chain(inner.state.collectors())
            .chain(inner.listeners.collectors());
        for family in all.flat_map(|collector| collector.collect()) {
            let name = family.name();
            let suffixes: &[&str] = match family.get_field_type() {
                MetricType::HISTOGRAM => &["_bucket", "_sum", "_count"],
                MetricType::SUMMARY => &["", "_sum", "_count"],
                MetricType::COUNTER | MetricType::GAUGE | MetricType::UNTYPED => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        }
        names.sort();
        names.dedup();
        names
    }

    /// The classic text exposition format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.inner.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The advertisement pipeline's metrics.
struct AdvertiseMetrics {
    duration: Histogram,
    provided: IntCounter,
    withdrawn: IntCounter,
    pending: IntGauge,
    failed_keys: IntGauge,
}

impl AdvertiseMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_advertise_duration_seconds",
                    "Time to advertise one batch of keys, until every key was announced or failed.",
                )
                .buckets(latency_buckets()),
            )?,
            provided: IntCounter::new("shoal_advertisements_total", "Keys advertised (each re-advertisement counts).")?,
            withdrawn: IntCounter::new("shoal_withdrawals_total", "Keys withdrawn.")?,
            pending: IntGauge::new(
                "shoal_advertise_pending_keys",
                "Keys waiting to be advertised or withdrawn, including those in flight.",
            )?,
            failed_keys: IntGauge::new(
                "shoal_advertise_failed_keys",
                "Keys whose last advertisement failed, waiting for a retry.",
            )?,
        };
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.provided.clone()))?;
        registry.register(Box::new(metrics.withdrawn.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.failed_keys.clone()))?;
        Ok(metrics)
    }

    /// The collectors `new` registers, for `Metrics::metric_names`.
    fn collectors(&self) -> [&dyn Collector; 5] {
        [&self.duration, &self.provided, &self.withdrawn, &self.pending, &self.failed_keys]
    }
}

/// The `mode` values of `shoal_state_start_mode` (see `state::StartMode`).
pub const START_MODES: [&str; 4] = ["cold", "fresh", "rebuilt", "recovered"];

/// The state file's metrics.
struct StateMetrics {
    write_duration: Histogram,
    write_failures: IntCounter,
    start_mode: IntGaugeVec,
    saved_peers: IntGauge,
}

impl StateMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            write_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_state_write_duration_seconds",
                    "Time to write one change to the state file, durably.",
                )
                .buckets(latency_buckets()),
            )?,
            write_failures: IntCounter::new(
                "shoal_state_write_failures_total",
                "Writes to the state file that failed.",
            )?,
            start_mode: IntGaugeVec::new(
                Opts::new("shoal_state_start_mode", "How this run started: cold, fresh, rebuilt or recovered (1)."),
                &["mode"],
            )?,
            saved_peers: IntGauge::new("shoal_state_saved_peers", "Peers in the peer store as last saved.")?,
        };
        registry.register(Box::new(metrics.write_duration.clone()))?;
        registry.register(Box::new(metrics.write_failures.clone()))?;
        registry.register(Box::new(metrics.start_mode.clone()))?;
        registry.register(Box::new(metrics.saved_peers.clone()))?;
        // A closed label: every mode is exported from the start, at 0 until the state is opened.
        for mode in START_MODES {
            metrics.start_mode.with_label_values(&[mode]);
        }
        Ok(metrics)
    }

    /// The collectors `new` registers, for `Metrics::metric_names`.
    fn collectors(&self) -> [&dyn Collector; 4] {
        [&self.write_duration, &self.write_failures, &self.start_mode, &self.saved_peers]
    }
}

/// The HTTP listeners' connection and admission counters (see `registry::server`).
struct ListenerCounters {
    open: IntGaugeVec,
    rejected: IntCounterVec,
    stalled: IntCounterVec,
    requests_rejected: IntCounterVec,
}

impl ListenerCounters {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counters = Self {
            open: IntGaugeVec::new(
                Opts::new("shoal_connections_open", "HTTP connections open, by listener."),
                &["listener"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "shoal_connections_rejected_total",
                    "HTTP connections closed right after accept because the listener was at --max-connections.",
                ),
                &["listener"],
            )?,
            stalled: IntCounterVec::new(
                Opts::new(
                    "shoal_connections_stalled_total",
                    "HTTP connections closed because the client took no response byte for --send-stall-timeout.",
                ),
                &["listener"],
            )?,
            requests_rejected: IntCounterVec::new(
                Opts::new(
                    "shoal_requests_rejected_total",
                    "HTTP requests refused before being served, by reason: in_flight_limit (503), url_too_long (414) or forbidden (403).",
                ),
                &["listener", "reason"],
            )?,
        };
        registry.register(Box::new(counters.open.clone()))?;
        registry.register(Box::new(counters.rejected.clone()))?;
        registry.register(Box::new(counters.stalled.clone()))?;
        registry.register(Box::new(counters.requests_rejected.clone()))?;
        // Closed labels: every series is exported from the start, at 0.
        for listener in Listener::ALL.map(Listener::as_str) {
            counters.open.with_label_values(&[listener]);
            counters.rejected.with_label_values(&[listener]);
            counters.stalled.with_label_values(&[listener]);
            for reason in Rejection::ALL.map(Rejection::as_str) {
                counters.requests_rejected.with_label_values(&[listener, reason]);
            }
        }
        Ok(counters)
    }

    /// The collectors `new` registers, for `Metrics::metric_names`.
    fn collectors(&self) -> [&dyn Collector; 4] {
        [&self.open, &self.rejected, &self.stalled, &self.requests_rejected]
    }
}

/// One listener's connection and admission metrics. Cheap to clone.
#[derive(Clone)]
pub struct ListenerMetrics {
    open: IntGauge,
    rejected: IntCounter,
    stalled: IntCounter,
    in_flight_limit: IntCounter,
    url_too_long: IntCounter,
    forbidden: IntCounter,
}

impl ListenerMetrics {
    /// Counts one open connection until the guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// A connection closed at once: the listener was full.
    pub fn connection_rejected(&self) {
        self.rejected.inc();
    }

    /// A connection closed because its client stopped taking the response.
    pub fn connection_stalled(&self) {
        self.stalled.inc();
    }

    /// A request refused before it was served.
    pub fn request_rejected(&self, reason: Rejection) {
        match reason {
            Rejection::InFlightLimit => self.in_flight_limit.inc(),
            Rejection::UrlTooLong => self.url_too_long.inc(),
            Rejection::Forbidden => self.forbidden.inc(),
        }
    }
}

/// Decrements the open-connections gauge when dropped.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn served_requests_and_bytes_appear_in_the_exposition() {
        let metrics = Metrics::new().unwrap();
        metrics.served(Source::Peer, "docker.io", PathKind::Blob).inc_by(42);
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"shoal_requests_total{kind="blob",registry="docker.io",source="peer"} 1"#), "{text}");
        assert!(text.contains(r#"shoal_bytes_served_total{kind="blob",registry="docker.io",source="peer"} 42"#));
    }

    /// Records into every metric, then checks that the exposition names
    /// exactly the families `metric_names` describes.
    #[test]
    fn metric_names_match_what_is_exported() {
        let metrics = Metrics::new().unwrap();
        let before = metrics.metric_names();
        assert!(before.contains(&"shoal_peer_fetch_failures_total".to_owned()), "vectors count before use");
        assert!(before.contains(&"shoal_resolve_duration_seconds_bucket".to_owned()));
        assert!(!before.contains(&"shoal_resolve_duration_seconds".to_owned()), "a bare histogram is no series");
        metrics.served(Source::Local, "docker.io", PathKind::Blob).inc_by(1);
        metrics.uploaded(PathKind::Blob).inc_by(1);
        metrics.upload_not_found(PathKind::Manifest);
        metrics.observe_resolve(Duration::from_millis(3));
        metrics.observe_peer_fetch(PathKind::Blob, Duration::from_millis(30));
        metrics.peer_fetch_failed(FetchFailure::Stall);
        metrics.set_advertised_keys(7);
        metrics.advertise_failed(1);
        metrics.set_connected_peers(2);
        metrics.set_containerd_connected(true);
        let _in_flight = metrics.in_flight("blob");
        metrics.peer_probed(true);
        metrics.replication_pulled(true);
        metrics.set_replication_images(&[("held", 1)]);
        metrics.observe_advertise_batch(Duration::from_millis(5), 3);
        metrics.withdrew();
        metrics.set_advertise_pending(1);
        metrics.set_advertise_failed_keys(1);
        metrics.observe_state_write(Duration::from_millis(1));
        metrics.state_write_failed();
        metrics.set_state_start("recovered");
        metrics.set_saved_peers(2);
        let text = metrics.encode().unwrap();
        let mut exported: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .flat_map(|line| match line.split_once(' ') {
                Some((name, "histogram")) => ["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")).to_vec(),
                Some((name, _)) => vec![name.to_owned()],
                None => Vec::new(),
            })
            .collect();
        exported.sort();
        assert_eq!(exported, before);
        assert_eq!(metrics.metric_names(), before);
    }

    /// Every closed-label series is exported at 0 by a fresh registry.
    #[test]
    fn closed_label_series_exist_at_zero_from_the_start() {
        let text = Metrics::new().unwrap().encode().unwrap();
        let mut expected: Vec<String> = FetchFailure::ALL
            .iter()
            .map(|r| format!(r#"shoal_peer_fetch_failures_total{{reason="{}"}} 0"#, r.as_str()))
            .collect();
        for kind in ["manifest", "blob"] {
            for result in ["served", "not_found", "busy"] {
                expected.push(format!(r#"shoal_peer_requests_total{{kind="{kind}",result="{result}"}} 0"#));
            }
            expected.push(format!(r#"shoal_peer_upload_bytes_total{{kind="{kind}"}} 0"#));
            expected.push(format!(r#"shoal_peer_fetch_duration_seconds_count{{kind="{kind}"}} 0"#));
            expected.push(format!(r#"shoal_peer_fetch_duration_seconds_bucket{{kind="{kind}",le="+Inf"}} 0"#));
            expected.push(format!(r#"shoal_http_requests_in_flight{{kind="{kind}"}} 0"#));
        }
        for result in ["ok", "failed"] {
            expected.push(format!(r#"shoal_peer_probes_total{{result="{result}"}} 0"#));
            expected.push(format!(r#"shoal_replication_pulls_total{{result="{result}"}} 0"#));
        }
        let missing: Vec<&String> = expected.iter().filter(|line| !text.lines().any(|l| l == line.as_str())).collect();
        assert!(missing.is_empty(), "missing {missing:?} in\n{text}");
        assert!(!text.contains("shoal_requests_total{"), "open registry label pre-filled:\n{text}");
        assert!(!text.contains("shoal_replication_images{"), "replication states exported while inactive");
        for mode in START_MODES {
            assert!(text.contains(&format!(r#"shoal_state_start_mode{{mode="{mode}"}} 0"#)), "{mode}");
        }
        for listener in ["registry", "metrics"] {
            assert!(text.contains(&format!(r#"shoal_connections_rejected_total{{listener="{listener}"}} 0"#)));
            assert!(text.contains(&format!(r#"shoal_connections_stalled_total{{listener="{listener}"}} 0"#)));
            for reason in ["in_flight_limit", "url_too_long", "forbidden"] {
                let series = format!(r#"shoal_requests_rejected_total{{listener="{listener}",reason="{reason}"}} 0"#);
                assert!(text.contains(&series), "{series}");
            }
        }
    }

    /// Recording still adds to the pre-filled series rather than beside them.
    #[test]
    fn recording_moves_the_pre_filled_series() {
        let metrics = Metrics::new().unwrap();
        metrics.peer_fetch_failed(FetchFailure::DigestMismatch);
        metrics.upload_busy(PathKind::Blob);
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"shoal_peer_fetch_failures_total{reason="digest_mismatch"} 1"#), "{text}");
        assert!(text.contains(r#"shoal_peer_requests_total{kind="blob",result="busy"} 1"#), "{text}");
        let failure_series = text.lines().filter(|l| l.starts_with("shoal_peer_fetch_failures_total{")).count();
        assert_eq!(failure_series, FetchFailure::ALL.len());
    }

    #[test]
    fn registry_label_cardinality_is_capped() {
        let metrics = Metrics::new().unwrap();
        for i in 0..(MAX_REGISTRY_LABELS + 10) {
            metrics.served(Source::Miss, &format!("r{i}.test"), PathKind::Manifest);
        }
        let text = metrics.encode().unwrap();
        let series = text.lines().filter(|l| l.starts_with("shoal_requests_total{")).count();
        assert_eq!(series, MAX_REGISTRY_LABELS + 1);
        assert!(text.contains(r#"registry="other""#));
    }
}
