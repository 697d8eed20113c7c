//! The Grafana dashboard and the alert rules the chart ships, and the example
//! queries of docs/metrics.md, ask only for series the real program exports:
//! every PromQL expression parses, every metric it selects is one `Metrics`
//! registers (histograms by their `_bucket`/`_sum`/`_count` series), and every
//! label it filters a Shoal metric by is one that metric carries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use promql_parser::label::{METRIC_NAME, MatchOp};
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::Value;
use shoal::metrics::{FetchFailure, Metrics, Source};
use shoal::oci::PathKind;
use yaml_rust2::YamlLoader;

/// Labels Prometheus adds from the scrape target (and the chart's
/// ServiceMonitor adds `node`); any metric may be filtered by them.
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "node", "service", "container", "endpoint"];

/// Grafana's variables, replaced by values of the same type before parsing.
const GRAFANA_VARIABLES: &[(&str, &str)] =
    &[("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "6h"), ("${node}", ".*"), ("$node", ".*")];

fn repo_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chart_file(path: &str) -> String {
    repo_file(&format!("charts/shoal/{path}"))
}

/// A selector's metric name, given as `name{...}` or `{__name__="name"}`.
fn metric_name(selector: &VectorSelector) -> Option<String> {
    selector.name.clone().or_else(|| {
        selector
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone())
    })
}

/// Every vector selector in an expression, in order.
fn selectors(expr: &Expr, out: &mut Vec<VectorSelector>) {
    match expr {
        Expr::VectorSelector(vs) => out.push(vs.clone()),
        Expr::MatrixSelector(ms) => out.push(ms.vs.clone()),
        Expr::Aggregate(agg) => {
            selectors(&agg.expr, out);
            if let Some(param) = &agg.param {
                selectors(param, out);
            }
        }
        Expr::Unary(unary) => selectors(&unary.expr, out),
        Expr::Binary(binary) => {
            selectors(&binary.lhs, out);
            selectors(&binary.rhs, out);
        }
        Expr::Paren(paren) => selectors(&paren.expr, out),
        Expr::Subquery(subquery) => selectors(&subquery.expr, out),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| selectors(arg, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// What the real program exports: series names, and the label names of each.
struct Exported {
    names: BTreeSet<String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    /// Records into every metric so that each family shows its labels in the
    /// exposition; the names come from `metric_names`, which also covers
    /// series never recorded.
    fn from_real_metrics() -> Self {
        let metrics = Metrics::new().unwrap();
        metrics.served(Source::Peer, "docker.io", PathKind::Blob).inc_by(1);
        metrics.uploaded(PathKind::Blob).inc_by(1);
        metrics.observe_resolve(Duration::from_millis(2));
        metrics.observe_peer_fetch(PathKind::Manifest, Duration::from_millis(20));
        metrics.peer_fetch_failed(FetchFailure::Connect);
        metrics.set_advertised_keys(1);
        metrics.advertise_failed(1);
        metrics.set_connected_peers(1);
        metrics.set_containerd_connected(true);
        let _in_flight = metrics.in_flight("blob");
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in metrics.encode().unwrap().lines().filter(|l| !l.starts_with('#')) {
            let (series, _value) = line.rsplit_once(' ').unwrap();
            let (name, label_text) = series.split_once('{').unwrap_or((series, "}"));
            let entry = labels.entry(name.to_owned()).or_default();
            for pair in label_text.trim_end_matches('}').split(',').filter(|p| !p.is_empty()) {
                entry.insert(pair.split_once('=').unwrap().0.to_owned());
            }
        }
        let names: BTreeSet<String> = metrics.metric_names().into_iter().collect();
        assert!(names.len() >= 13, "metric_names lists too few series: {names:?}");
        Self { names, labels }
    }

    /// Problems with one expression, empty when it only asks for real series.
    fn check(&self, expr_text: &str) -> Vec<String> {
        let expr = match parser::parse(expr_text) {
            Ok(expr) => expr,
            Err(e) => return vec![format!("does not parse: {e}")],
        };
        let mut found = Vec::new();
        selectors(&expr, &mut found);
        if found.is_empty() {
            return vec!["selects no metric".to_owned()];
        }
        let mut problems = Vec::new();
        for selector in &found {
            let Some(name) = metric_name(selector) else {
                problems.push("a selector has no literal metric name".to_owned());
                continue;
            };
            if !self.names.contains(&name) {
                problems.push(format!("{name} is not a metric Shoal exports"));
                continue;
            }
            let known = self.labels.get(&name).cloned().unwrap_or_default();
            for matcher in &selector.matchers.matchers {
                let label = matcher.name.as_str();
                if label != METRIC_NAME && !TARGET_LABELS.contains(&label) && !known.contains(label) {
                    problems.push(format!("{name} has no label {label} (it has {known:?})"));
                }
            }
        }
        problems
    }
}

fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (variable, value) in GRAFANA_VARIABLES {
        out = out.replace(variable, value);
    }
    assert!(!out.contains('$'), "an unknown Grafana variable is left in {out}");
    out
}

/// Every query of the dashboard: panel targets and template variables.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let nested = panel["panels"].as_array().cloned().unwrap_or_default();
        for panel in std::iter::once(panel).chain(nested.iter()) {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
                queries.push((title, target["expr"].as_str().expect("a target without expr").to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap();
        // label_values(<selector>, <label>) is Grafana's, not PromQL: check its selector.
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect(query);
        let (selector, _label) = inner.rsplit_once(',').expect(query);
        queries.push((format!("variable {}", variable["name"]), selector.trim().to_owned()));
    }
    queries
}

#[test]
fn every_dashboard_query_asks_for_real_series() {
    let exported = Exported::from_real_metrics();
    let dashboard: Value = serde_json::from_str(&chart_file("dashboards/shoal.json")).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "the dashboard has only {} queries", queries.len());
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|(title, expr)| {
            let expr = substitute_grafana_variables(expr);
            exported.check(&expr).into_iter().map(move |p| format!("{title}: {p}\n    {expr}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_dashboard_uses_every_exported_metric() {
    let dashboard: Value = serde_json::from_str(&chart_file("dashboards/shoal.json")).unwrap();
    let mut used = BTreeSet::new();
    for (_, expr) in dashboard_queries(&dashboard) {
        let mut found = Vec::new();
        selectors(&parser::parse(&substitute_grafana_variables(&expr)).unwrap(), &mut found);
        used.extend(found.iter().filter_map(metric_name));
    }
    let exported = Exported::from_real_metrics();
    // A histogram is shown through its buckets.
    let unused: Vec<_> = exported
        .names
        .iter()
        .filter(|n| !used.contains(*n) && !n.ends_with("_sum") && !n.ends_with("_count"))
        .collect();
    assert!(unused.is_empty(), "metrics missing from the dashboard: {unused:?}");
}

#[test]
fn every_alert_rule_asks_for_real_series() {
    let exported = Exported::from_real_metrics();
    let docs = YamlLoader::load_from_str(&chart_file("rules/shoal.rules.yaml")).unwrap();
    let mut checked = 0;
    let mut problems = Vec::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            let expr = rule["expr"].as_str().unwrap();
            problems.extend(exported.check(expr).into_iter().map(|p| format!("{name}: {p}")));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} rules found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The expressions of the ```promql blocks of a Markdown file, one per
/// paragraph of a block.
fn markdown_queries(text: &str) -> Vec<String> {
    let mut queries = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```promql\n") {
        let block = &rest[start + "```promql\n".len()..];
        let end = block.find("```").expect("an unclosed promql block");
        queries.extend(block[..end].split("\n\n").map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned));
        rest = &block[end + 3..];
    }
    queries
}

#[test]
fn every_documented_query_asks_for_real_series() {
    let exported = Exported::from_real_metrics();
    let queries = markdown_queries(&repo_file("docs/metrics.md"));
    assert!(queries.len() >= 10, "only {} queries found in docs/metrics.md", queries.len());
    let problems: Vec<String> =
        queries.iter().flat_map(|q| exported.check(q).into_iter().map(move |p| format!("{p}\n    {q}"))).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_catches_typos() {
    let exported = Exported::from_real_metrics();
    assert!(exported.check(r#"sum(rate(shoal_requests_total{source="peer"}[5m]))"#).is_empty());
    assert!(!exported.check("rate(shoal_request_total[5m])").is_empty(), "misspelt metric");
    assert!(!exported.check(r#"shoal_requests_total{soruce="peer"}"#).is_empty(), "misspelt label");
    assert!(!exported.check("rate(shoal_resolve_duration_seconds[5m])").is_empty(), "bare histogram name");
    assert!(exported.check("histogram_quantile(0.9, rate(shoal_resolve_duration_seconds_bucket[5m]))").is_empty());
    assert!(!exported.check("sum(rate(shoal_requests_total[5m]) by (source)").is_empty(), "syntax error");
    assert!(!exported.check("vector(1)").is_empty(), "selects nothing");
}
