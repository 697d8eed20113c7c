//! Needs root. A real Prometheus scrapes a real 3-node Shoal cluster while
//! node 1 pulls an image from the upstream, nodes 2 and 3 pull it through
//! peers, and a pull of an image nobody has misses; then every query of the
//! shipped Grafana dashboard must return data, and the chart's alert rules
//! must load and evaluate without error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_e2e::prometheus::{Prometheus, Target};
use shoal_e2e::wait::poll_until;
use shoal_e2e::{Cluster, ClusterOptions, ImageSpec, image};

const PULL_TIMEOUT: Duration = Duration::from_secs(60);
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const PUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on every dashboard query having data once the pulls are done.
const DATA_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every alert rule having been evaluated.
const RULES_TIMEOUT: Duration = Duration::from_secs(20);

/// Grafana's variables, replaced as a dashboard would send them.
const GRAFANA_VARIABLES: &[(&str, &str)] =
    &[("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "5m"), ("${node}", ".*"), ("$node", ".*")];

fn repo_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (variable, value) in GRAFANA_VARIABLES {
        out = out.replace(variable, value);
    }
    assert!(!out.contains('$'), "an unknown Grafana variable is left in {out}");
    out
}

/// Every query of the dashboard, titled: panel targets (also of panels nested
/// in rows) and the selector of each `label_values` template variable.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_path("charts/shoal/dashboards/shoal.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let nested = panel["panels"].as_array().cloned().unwrap_or_default();
        for panel in std::iter::once(panel).chain(nested.iter()) {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
                let expr = target["expr"].as_str().expect("a target without expr");
                queries.push((title, substitute_grafana_variables(expr)));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect(query);
        let (selector, _label) = inner.rsplit_once(',').expect(query);
        queries.push((format!("variable {}", variable["name"]), selector.trim().to_owned()));
    }
    queries
}

/// The titled queries that return no series (or that Prometheus rejects).
async fn queries_without_data(prometheus: &Prometheus, queries: &[(String, String)]) -> Vec<String> {
    let mut empty = Vec::new();
    for (title, expr) in queries {
        match prometheus.query(expr).await {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => empty.push(format!("{title}: no series\n    {expr}")),
            Err(e) => empty.push(format!("{title}: {e:#}\n    {expr}")),
        }
    }
    empty
}

/// Whether a query's every series has a value above 0.
async fn positive(prometheus: &Prometheus, expr: &str) -> Result<bool> {
    let series = prometheus.query(expr).await?;
    Ok(!series.is_empty()
        && series.iter().all(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_has_data_after_a_few_pulls() -> Result<()> {
    let started = Instant::now();
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard has only {} queries", queries.len());
    let rules_file = repo_path("charts/shoal/rules/shoal.rules.yaml");
    let alert_count =
        std::fs::read_to_string(&rules_file)?.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();

    // A short replication interval so a round runs (and exports its per-state gauge) during the test.
    let options = ClusterOptions {
        shoal_args: vec!["--replication-interval".into(), "2s".into()],
        ..ClusterOptions::with_shoal(3)
    };
    let cluster = Cluster::start(&options).await?;
    let targets: Vec<Target> = cluster
        .nodes()
        .iter()
        .map(|n| Target {
            address: format!("{}:9090", n.ip),
            labels: vec![("node".into(), format!("node-{}", n.index))],
        })
        .collect();
    let prometheus = Prometheus::start(&targets, std::slice::from_ref(&rules_file)).await?;

    let dir = tempfile::tempdir()?;
    let built = image::build(&ImageSpec::multi_arch("e2e/dashboard", "v1", &[4 << 10, 256 << 10]), dir.path())?;
    built.push(cluster.registry_host(), PUSH_TIMEOUT).await?;
    let name = built.reference(cluster.registry_host());
    cluster.node(1)?.cri().pull(&name, PULL_TIMEOUT).await.context("node 1 pulls from the upstream")?;
    for node in [2, 3] {
        let node = cluster.node(node)?;
        node.wait_until_servable(&built, DISCOVERY_TIMEOUT).await?;
        node.cri().pull(&name, PULL_TIMEOUT).await.with_context(|| format!("node {} pulls via peers", node.index))?;
    }
    // Node 1 pulls again: containerd resolves the tag through Shoal, which holds it locally.
    cluster.node(1)?.cri().pull(&name, PULL_TIMEOUT).await.context("node 1 pulls again")?;
    let nowhere = format!("{}/e2e/nowhere:v1", cluster.registry_host());
    let missed = cluster.node(3)?.cri().pull(&nowhere, PULL_TIMEOUT).await;
    ensure!(missed.is_err(), "{nowhere} exists nowhere, yet node 3 pulled it");
    eprintln!("pulls done after {:.1} s", started.elapsed().as_secs_f64());

    // The pulls moved the hit, peer and miss series as Prometheus sees them.
    for source in ["local", "peer", "miss"] {
        let expr = format!(r#"sum(shoal_requests_total{{source="{source}"}})"#);
        let what = format!("Prometheus to see {expr} above 0");
        poll_until(&what, DATA_TIMEOUT, || async { Ok(positive(&prometheus, &expr).await?.then_some(())) }).await?;
    }
    let peer_uploads = r#"sum(shoal_peer_upload_bytes_total{kind="blob"})"#;
    poll_until("Prometheus to see peer uploads", DATA_TIMEOUT, || async {
        Ok(positive(&prometheus, peer_uploads).await?.then_some(()))
    })
    .await?;

    let deadline = Instant::now() + DATA_TIMEOUT;
    let mut empty = queries_without_data(&prometheus, &queries).await;
    while !empty.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        empty = queries_without_data(&prometheus, &queries).await;
    }
    ensure!(
        empty.is_empty(),
        "{} of {} dashboard queries returned nothing within {DATA_TIMEOUT:?} (Prometheus log: {}):\n{}",
        empty.len(),
        queries.len(),
        prometheus.log_path().display(),
        empty.join("\n")
    );
    eprintln!("all {} dashboard queries have data after {:.1} s", queries.len(), started.elapsed().as_secs_f64());

    let rules = poll_until("every alert rule to be evaluated", RULES_TIMEOUT, || async {
        let rules = prometheus.rules().await?;
        Ok((rules.len() >= alert_count && rules.iter().all(|r| r.health != "unknown")).then_some(rules))
    })
    .await?;
    ensure!(rules.len() == alert_count, "Prometheus loaded {} rules, the file has {alert_count}", rules.len());
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r.health != "ok")
        .map(|r| format!("{}: {} {}", r.name, r.health, r.last_error))
        .collect();
    ensure!(unhealthy.is_empty(), "alert rules failing to evaluate:\n{}", unhealthy.join("\n"));

    drop(prometheus);
    cluster.shutdown().await?.ensure_clean()?;
    eprintln!("dashboard test took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
