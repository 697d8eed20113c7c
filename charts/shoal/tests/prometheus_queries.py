"""Runs every query Shoal ships through a real Prometheus that scrapes a real
`shoal run`, and checks the alert rules evaluate there without error.

    python3 prometheus_queries.py --prometheus http://127.0.0.1:PORT --repo REPO

Started by .ci/chart-checks.sh, which runs the node, generates a few registry
requests and starts Prometheus with the chart's rules file. A query fails if
Prometheus rejects it; a query may return no series when the single node had
no traffic of that kind (peer fetches, for instance), and the count of queries
with data is printed.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml

# Grafana's variables, replaced as a dashboard would send them.
GRAFANA_VARIABLES = [("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "5m"),
                     ("${node}", ".*"), ("$node", ".*")]


def api(base, path, **params):
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 400 and 422 carry the error as JSON
        return json.load(error)


def dashboard_queries(path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES:
                expr = expr.replace(variable, value)
            yield f"dashboard: {panel['title']}", expr


def rule_queries(path):
    with open(path, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule: {rule.get('alert') or rule.get('record')}", rule["expr"]


def doc_queries(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for block in re.findall(r"```promql\n(.*?)```", text, flags=re.DOTALL):
        for query in block.split("\n\n"):
            if query.strip():
                yield "docs/metrics.md", query.strip()


def wait_for(description, predicate, deadline_seconds):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {description}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--expect-alerts", type=int, default=5)
    args = parser.parse_args()
    base = args.prometheus
    chart = os.path.join(args.repo, "charts", "shoal")

    def scraped():
        result = api(base, "query", query='count_over_time(shoal_requests_total{source="miss"}[1m])')
        values = [float(r["value"][1]) for r in result.get("data", {}).get("result", [])]
        return bool(values) and min(values) >= 3

    wait_for("three scrapes of shoal_requests_total", scraped, 60)

    failures, with_data, total = [], 0, 0
    queries = [*dashboard_queries(os.path.join(chart, "dashboards", "shoal.json")),
               *rule_queries(os.path.join(chart, "rules", "shoal.rules.yaml")),
               *doc_queries(os.path.join(args.repo, "docs", "metrics.md"))]
    for origin, expr in queries:
        total += 1
        result = api(base, "query", query=expr)
        if result.get("status") != "success":
            failures.append(f"{origin}: {result.get('error')}\n    {expr}")
        elif result["data"]["result"]:
            with_data += 1
    print(f"{total} queries accepted by Prometheus: {total - len(failures)}; with series: {with_data}")

    def rules_evaluated():
        groups = api(base, "rules").get("data", {}).get("groups", [])
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) >= args.expect_alerts and all(r["health"] != "unknown" for r in rules)

    wait_for("the alert rules to be evaluated", rules_evaluated, 30)
    rules = [r for g in api(base, "rules")["data"]["groups"] for r in g["rules"]]
    for rule in rules:
        if rule["health"] != "ok":
            failures.append(f"rule {rule['name']}: health {rule['health']}: {rule.get('lastError')}")
    print(f"{len(rules)} alert rules loaded and evaluated: "
          f"{sum(r['health'] == 'ok' for r in rules)} healthy")
    if len(rules) != args.expect_alerts:
        failures.append(f"expected {args.expect_alerts} alert rules, Prometheus loaded {len(rules)}")

    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
