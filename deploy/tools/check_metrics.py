#!/usr/bin/env python3
"""List the metric names the dashboard and the alert rules read that pgveil does not register.

    python3 deploy/tools/check_metrics.py            # report; exit 0
    python3 deploy/tools/check_metrics.py --strict   # exit 1 if any is missing

Registered names are read from proxy/src/metrics/*.rs (the names given to IntCounter::new,
Opts::new, HistogramOpts::new, ...; the registry adds the prefix pgveil_, histograms add
_bucket, _sum and _count). Python 3 standard library only.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashboard_queries  # noqa: E402

ROOT = dashboard_queries.ROOT


def registered():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "proxy", "src", "metrics", "*.rs")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for kind, name in re.findall(
                r"\b(HistogramOpts|Opts|IntCounter|IntGauge|Counter|Gauge|Histogram|IntCounterVec|IntGaugeVec)"
                r"::new\(\s*\"([a-z_:][a-z0-9_:]*)\"", text):
            full = "pgveil_" + name
            names.add(full)
            if kind.startswith("Histogram"):
                names |= {full + "_bucket", full + "_sum", full + "_count"}
    return names


def used():
    """{metric name: [where]} for the dashboard and alerts.yml."""
    out = {}
    with open(dashboard_queries.DEFAULT, encoding="utf-8") as f:
        dash = json.load(f)
    for p, t in dashboard_queries.queries(dash):
        for n in dashboard_queries.metric_names(t["expr"]):
            out.setdefault(n, set()).add("dashboard: " + p.get("title", ""))
    alerts = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
    with open(alerts, encoding="utf-8") as f:
        text = f.read()
    for chunk in text.split("- alert: ")[1:]:
        name = chunk.split()[0]
        expr = chunk.split("expr:", 1)[1].split("labels:", 1)[0]
        for n in dashboard_queries.metric_names(expr):
            out.setdefault(n, set()).add("alert: " + name)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strict", action="store_true", help="exit 1 when a metric is missing")
    args = ap.parse_args()
    have = registered() | {"up"}
    missing = {n: w for n, w in used().items() if n not in have}
    for n in sorted(missing):
        print("not registered in proxy/src/metrics: %s (used by %s)" % (n, "; ".join(sorted(missing[n]))))
    if not missing:
        print("check_metrics: every metric the dashboard and alerts read is registered")
    return 1 if (missing and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
