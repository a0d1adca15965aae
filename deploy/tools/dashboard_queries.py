#!/usr/bin/env python3
"""Print every PromQL expression in the pgveil Grafana dashboard, one per line:

    <panel title>\t<expression>

Grafana's variables are expanded so that each line can be sent as is to Prometheus's
/api/v1/query: $job -> pgveil, $instance -> .+, $__rate_interval -> 5m, $__range -> 1h
(change them with --var NAME=VALUE). --raw prints the expressions as the dashboard holds them.

    python3 deploy/tools/dashboard_queries.py [--dashboard FILE] [--raw] [--var job=pgveil]
    python3 deploy/tools/dashboard_queries.py --rules-file OUT.yml   # for `promtool check rules`
    python3 deploy/tools/dashboard_queries.py --lint                 # structural checks, exit 1 on failure
    python3 deploy/tools/dashboard_queries.py --metrics              # metric names the dashboard reads

Python 3 standard library only.
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "deploy", "grafana", "pgveil-dashboard.json")
DEFAULT_VARS = {
    "job": "pgveil",
    "instance": ".+",
    "__rate_interval": "5m",
    "__range": "1h",
    "__interval": "1m",
}
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "increase", "irate", "topk", "bottomk", "count", "max", "min",
    "avg", "histogram_quantile", "offset", "and", "or", "unless", "on", "ignoring", "group_left",
    "group_right", "bool", "absent", "le", "vector", "scalar", "clamp_min", "clamp_max",
}


def panels(dashboard):
    """Every panel, with rows' nested panels, in order."""
    for p in dashboard.get("panels", []):
        yield p
        for inner in p.get("panels", []) or []:
            yield inner


def queries(dashboard):
    """(panel, target) for every Prometheus target."""
    for p in panels(dashboard):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                yield p, t


def expand(expr, variables):
    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError("unknown dashboard variable $%s in %r" % (name, expr))
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def metric_names(expr):
    """Metric names in an expression: pgveil_* names, and identifiers followed by { or [
    that are not PromQL words."""
    names = set(re.findall(r"\b(pgveil_[a-z0-9_]+)\b", expr))
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{|\[)", expr):
        if m.group(1) not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def lint(dashboard):
    errors = []
    titles = {}
    if dashboard.get("schemaVersion", 0) < 36:
        errors.append("schemaVersion %s is older than 36" % dashboard.get("schemaVersion"))
    names = [v.get("name") for v in dashboard.get("templating", {}).get("list", [])]
    for needed in ("DS_PROMETHEUS", "job", "instance"):
        if needed not in names:
            errors.append("templating variable %s missing" % needed)
    cells = {}
    ids = set()
    for p in panels(dashboard):
        title = p.get("title", "")
        if p.get("id") in ids:
            errors.append("panel id %s used twice" % p.get("id"))
        ids.add(p.get("id"))
        g = p.get("gridPos") or {}
        if not all(k in g for k in ("h", "w", "x", "y")):
            errors.append("%s: gridPos incomplete" % title)
            continue
        if g["x"] + g["w"] > 24:
            errors.append("%s: wider than the grid" % title)
        for dx in range(g["w"]):
            for dy in range(g["h"]):
                cell = (g["x"] + dx, g["y"] + dy)
                if cell in cells:
                    errors.append("%s overlaps %s" % (title, cells[cell]))
                    break
                cells[cell] = title
        if p.get("type") == "row":
            continue
        if title in titles:
            errors.append("panel title %r used twice" % title)
        titles[title] = True
        if not p.get("description"):
            errors.append("%s: no description" % title)
        for obj in [p] + list(p.get("targets", [])):
            ds = obj.get("datasource") or {}
            if ds.get("uid") not in ("${DS_PROMETHEUS}", "prometheus"):
                errors.append("%s: data source %r is neither ${DS_PROMETHEUS} nor prometheus" % (title, ds))
        if not p.get("targets"):
            errors.append("%s: no query" % title)
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            # Many instances must add up: the outermost operation aggregates.
            if not re.match(r"\s*(sum|topk|histogram_quantile\(\s*[0-9.]+\s*,\s*sum)\b", expr):
                errors.append("%s: %r does not start with an aggregation (sum by ...)" % (title, expr))
            for sel in re.findall(r"\{([^}]*)\}", expr):
                if sel.startswith("{"):
                    continue
                if 'job=~"$job"' not in sel or 'instance=~"$instance"' not in sel:
                    errors.append("%s: selector {%s} lacks the $job/$instance filter" % (title, sel))
    return errors


def main():
    ap = argparse.ArgumentParser(description="Print the PromQL of the pgveil dashboard.")
    ap.add_argument("--dashboard", default=DEFAULT)
    ap.add_argument("--raw", action="store_true", help="do not expand dashboard variables")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--rules-file", metavar="OUT",
                    help="write the expressions as recording rules, for promtool check rules")
    ap.add_argument("--lint", action="store_true", help="check layout, data sources and aggregation")
    ap.add_argument("--metrics", action="store_true", help="print the metric names the queries read")
    args = ap.parse_args()

    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    variables = dict(DEFAULT_VARS)
    for v in args.var:
        name, _, value = v.partition("=")
        variables[name.lstrip("$")] = value

    if args.lint:
        errors = lint(dashboard)
        for e in errors:
            print("dashboard: %s" % e, file=sys.stderr)
        n = sum(1 for _ in queries(dashboard))
        if errors:
            return 1
        print("dashboard: %d panels, %d queries: layout, data sources, filters and aggregation ok"
              % (sum(1 for p in panels(dashboard) if p.get("type") != "row"), n))
        return 0

    rows = []
    for p, t in queries(dashboard):
        expr = " ".join(t["expr"].split())
        if not args.raw:
            expr = expand(expr, variables)
        rows.append((p.get("title", ""), t.get("refId", ""), expr))

    if args.metrics:
        names = set()
        for _, _, expr in rows:
            names |= metric_names(expr)
        for n in sorted(names):
            print(n)
        return 0

    if args.rules_file:
        with open(args.rules_file, "w", encoding="utf-8") as f:
            f.write("# Generated by deploy/tools/dashboard_queries.py: the dashboard's queries as\n")
            f.write("# recording rules, only so that promtool checks their syntax.\n")
            f.write("groups:\n  - name: pgveil-dashboard-queries\n    rules:\n")
            for i, (title, ref, expr) in enumerate(rows):
                f.write("      # %s [%s]\n" % (title, ref))
                f.write("      - record: pgveil_dashboard:query_%d\n" % i)
                f.write("        expr: %s\n" % json.dumps(expr))
        print("wrote %d queries to %s" % (len(rows), args.rules_file))
        return 0

    for title, _, expr in rows:
        print("%s\t%s" % (title, expr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
