#!/usr/bin/env python3
"""Build deploy/grafana/pgveil-dashboard.json, the Grafana dashboard for pgveil.

The dashboard is generated so that its layout, its data source references and its query
filters stay uniform; edit the PANELS below, not the JSON, then run

    python3 deploy/tools/build_dashboard.py            # rewrite the JSON
    python3 deploy/tools/build_dashboard.py --check    # exit 1 if the JSON is out of date
    python3 deploy/tools/build_dashboard.py --markdown # the panel list for docs/operations.md

Python 3 standard library only.

Every query filters on the dashboard variables $job and $instance and aggregates with
`sum by (...)` (or topk/histogram_quantile over such a sum), so that any number of pgveil
instances add up. The data source is the variable ${DS_PROMETHEUS}, whose default is the
provisioned Prometheus data source with uid "prometheus" (deploy/grafana/provisioning).
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "deploy", "grafana", "pgveil-dashboard.json")

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Label filter every selector carries; %s is the selector's own matchers (may be empty).
F = 'job=~"$job", instance=~"$instance"'
RI = "$__rate_interval"


def sel(metric, matchers=""):
    inner = F if not matchers else matchers + ", " + F
    return "%s{%s}" % (metric, inner)


def q(expr, legend, instant=False, fmt=None):
    t = {"expr": expr, "legendFormat": legend}
    if instant:
        t["instant"] = True
        t["range"] = False
    if fmt:
        t["format"] = fmt
    return t


def quantiles(scope):
    bucket = sel("pgveil_query_duration_seconds_bucket", 'scope="%s"' % scope)
    return [
        q("histogram_quantile(%s, sum by (le) (rate(%s[%s])))" % (p, bucket, RI), label)
        for p, label in (("0.5", "p50"), ("0.99", "p99"))
    ]


# Each panel: title, type, width, height, unit, targets, and the text shown as the panel's
# description (what it shows; normal; abnormal), which docs/operations.md repeats.
ROWS = [
    ("Overview", [
        dict(title="Instances up", type="stat", w=4, h=6, unit="none",
             targets=[q('sum(up{job=~"$job", instance=~"$instance"})', "up")],
             thresholds=[("red", None), ("green", 1)],
             what="the number of pgveil processes that Prometheus scrapes successfully.",
             normal="the number of instances you run.",
             abnormal="fewer: an instance is down or unreachable (alert PgveilDown, PgveilAbsent)."),
        dict(title="Active client connections", type="timeseries", w=10, h=6, unit="none",
             targets=[q("sum(%s)" % sel("pgveil_connections_active"), "all instances"),
                      q("sum by (instance) (%s)" % sel("pgveil_connections_active"), "{{instance}}")],
             what="open client connections, in total and per instance.",
             normal="follows the applications' pool sizes; flat under steady load.",
             abnormal="a climb towards limits.max_client_connections (1000 by default), or a drop to 0 "
                      "while applications run."),
        dict(title="Connections accepted and rejected", type="timeseries", w=10, h=6, unit="cps",
             targets=[q("sum(rate(%s[%s]))" % (sel("pgveil_connections_total"), RI), "accepted"),
                      q("sum by (reason) (rate(%s[%s]))" % (sel("pgveil_connections_rejected_total"), RI),
                        "rejected: {{reason}}")],
             what="new client connections per second, and refusals by reason (too_many_clients).",
             normal="steady accepts from pooled applications; no rejections.",
             abnormal="rejections (raise the limit or fix a connection leak); a storm of accepts from an "
                      "application that does not pool."),
        dict(title="Queries per second by outcome", type="timeseries", w=8, h=8, unit="reqps",
             targets=[q("sum by (outcome) (rate(%s[%s]))" % (sel("pgveil_queries_total"), RI), "{{outcome}}")],
             what="statements completed per second, ok and error.",
             normal="the applications' usual load, errors a small fraction.",
             abnormal="errors rising with ok flat (denials, upstream trouble), or a sudden drop to 0."),
        dict(title="Queries per second by command", type="timeseries", w=8, h=8, unit="reqps",
             targets=[q("sum by (command) (rate(%s[%s]))" % (sel("pgveil_queries_total"), RI), "{{command}}")],
             what="statements per second by command word (SELECT, INSERT, COPY, ...).",
             normal="the applications' usual mix.",
             abnormal="an unusual command appearing in volume, e.g. COPY from an application that never "
                      "copies."),
        dict(title="Errors per second", type="timeseries", w=8, h=8, unit="reqps",
             targets=[q('sum(rate(%s[%s]))' % (sel("pgveil_queries_total", 'outcome="error"'), RI),
                        "failed statements"),
                      q("sum by (kind) (rate(%s[%s]))" % (sel("pgveil_session_errors_total"), RI),
                        "session ended: {{kind}}")],
             what="failed statements, and sessions that ended with an error by kind "
                  "(startup_timeout, protocol_violation, upstream_lost, panic, ...).",
             normal="near zero; client_disconnect from applications that drop connections is common.",
             abnormal="upstream_unavailable or upstream_lost (the database), panic (a bug: report it), a "
                      "rise in failed statements."),
        dict(title="End-to-end latency p50 / p99", type="timeseries", w=12, h=8, unit="s",
             targets=quantiles("end_to_end"),
             what="from a client's Query or Sync to the server's ReadyForQuery, over all instances.",
             normal="the database's own latency plus well under a millisecond.",
             abnormal="p99 rising while the pgveil-added latency stays flat points at the database."),
        dict(title="Latency pgveil adds p50 / p99", type="timeseries", w=12, h=8, unit="s",
             targets=quantiles("added"),
             what="the time pgveil itself spends: analysis of statements naming protected data and "
                  "the per-row transforms.",
             normal="below 100 µs, the histogram's smallest bucket (a cached analysis takes well under a "
                    "microsecond, a cold one tens of microseconds).",
             abnormal="p99 in milliseconds: a low parse-cache hit ratio (many distinct SQL texts) or very "
                      "wide rows of encrypted columns."),
    ]),
    ("Sensitive access", [
        dict(title="Sensitive values sent by level and action", type="timeseries", w=12, h=8, unit="short",
             targets=[q("sum by (level, action) (rate(%s[%s]))" % (sel("pgveil_sensitive_values_total"), RI),
                        "{{level}} {{action}}")],
             what="protected values sent to clients per second, by level (core, important, general) "
                  "and action (allow = decrypted, mask, hash, null).",
             normal="a steady pattern that follows business hours, mostly masked.",
             abnormal="a jump in core values or in allow (plaintext) out of hours; a bulk export shows "
                      "here first (alert PgveilBulkCoreExport)."),
        dict(title="Policy decisions by action and level", type="timeseries", w=12, h=8, unit="short",
             targets=[q("sum by (action, level) (rate(%s[%s]))" % (sel("pgveil_policy_decisions_total"), RI),
                        "{{action}} {{level}}")],
             what="protected output columns decided per second, once per analysed statement.",
             normal="stable proportions between actions.",
             abnormal="deny decisions rising, or a shift in proportions right after a policy reload "
                       "(check the new policy with pgveil policy matrix)."),
        dict(title="Core values decrypted in range", type="stat", w=4, h=8, unit="short",
             targets=[q("sum(increase(%s[$__range]))" % sel("pgveil_sensitive_values_total",
                                                              'level="core", action="allow"'),
                        "core allow", instant=True)],
             thresholds=[("green", None), ("orange", 1000), ("red", 10000)],
             what="core-level values (ID cards, passports) sent in plaintext over the selected time range.",
             normal="small, from the few roles allowed to see them (e.g. the auditor's real-name checks).",
             abnormal="thousands: someone is reading core data in bulk."),
        dict(title="Top policy roles by masked and decrypted values", type="bargauge", w=10, h=8, unit="short",
             targets=[q("topk(10, sum by (role, action) (increase(%s[$__range])))"
                        % sel("pgveil_sensitive_values_by_role_total", 'action=~"allow|mask"'),
                        "{{role}} {{action}}", instant=True)],
             what="the ten policy roles (from the policy file, never login names) with the most values "
                  "decrypted (allow) or masked over the selected range.",
             normal="the roles whose work needs the data, in proportion to their users.",
             abnormal="a role that rarely reads data at the top, or a role's allow count far above its "
                      "usual."),
        dict(title="Decrypted and masked values by policy role", type="timeseries", w=10, h=8, unit="short",
             targets=[q("topk(10, sum by (role, action) (rate(%s[%s])))"
                        % (sel("pgveil_sensitive_values_by_role_total", 'action=~"allow|mask"'), RI),
                        "{{role}} {{action}}")],
             what="the same per second, over time, for the ten busiest policy roles.",
             normal="follows working hours for interactive roles, batch windows for reporting roles.",
             abnormal="a role's rate jumping outside its usual hours."),
    ]),
    ("Denials and anomalies", [
        dict(title="Denied queries by level", type="timeseries", w=8, h=8, unit="reqps",
             targets=[q("sum by (level) (rate(%s[%s]))" % (sel("pgveil_denied_queries_total"), RI), "{{level}}")],
             what="statements refused per second, by the level of the column that caused it "
                  "(none when no single column did, e.g. a DO block).",
             normal="near zero; a few from people trying queries by hand.",
             abnormal="a burst (alert PgveilDeniedQueriesSpike): probing for protected columns, or an "
                      "application release that reads data its role may not see."),
        dict(title="Anomaly alerts by rule", type="timeseries", w=8, h=8, unit="short", bars=True,
             targets=[q("sum by (rule) (increase(%s[%s]))" % (sel("pgveil_anomaly_alerts_total"), RI),
                        "{{rule}}")],
             what="times a policy anomaly limit (policy.yaml anomaly:) was crossed, by rule.",
             normal="empty.",
             abnormal="any bar (alert PgveilAnomalyLimitCrossed): the audit log names the login and "
                      "session."),
        dict(title="Parse failures", type="timeseries", w=8, h=8, unit="reqps",
             targets=[q("sum(rate(%s[%s]))" % (sel("pgveil_parse_failures_total"), RI), "refused, not analysable")],
             what="statements naming protected data that pgveil could not analyse, and so refused.",
             normal="zero.",
             abnormal="a steady rate after an application release: its SQL is outside what pgveil "
                      "parses (alert PgveilParseFailures)."),
    ]),
    ("Crypto", [
        dict(title="Crypto operations by op", type="timeseries", w=16, h=8, unit="ops",
             targets=[q("sum by (op) (rate(%s[%s]))" % (sel("pgveil_crypto_operations_total"), RI), "{{op}}")],
             what="envelope operations per second: decrypt, encrypt, decrypt_failed.",
             normal="decrypts follow the sensitive values sent; no failures.",
             abnormal="decrypt_failed above zero; decrypts far above values sent."),
        dict(title="Decrypt failures", type="stat", w=8, h=8, unit="short",
             targets=[q("sum(increase(%s[$__range]))" % sel("pgveil_crypto_operations_total", 'op="decrypt_failed"'),
                        "decrypt_failed", instant=True)],
             thresholds=[("green", None), ("red", 1)],
             what="envelopes that failed to decrypt over the selected range.",
             normal="0.",
             abnormal="any: a keyring without the key version that encrypted the data, or altered "
                      "ciphertext (alert PgveilDecryptFailures)."),
    ]),
    ("Audit pipeline", [
        dict(title="Audit records written", type="timeseries", w=12, h=8, unit="short",
             targets=[q("sum(rate(%s[%s]))" % (sel("pgveil_audit_records_total"), RI), "all instances"),
                      q("sum by (instance) (rate(%s[%s]))" % (sel("pgveil_audit_records_total"), RI),
                        "{{instance}}")],
             what="audit records per second (one per statement touching a classified column).",
             normal="close to the rate of statements that read or write protected data.",
             abnormal="zero while sensitive values are being sent."),
        dict(title="Audit queue depth", type="timeseries", w=12, h=8, unit="short",
             targets=[q("sum by (instance) (%s)" % sel("pgveil_audit_queue_depth"), "{{instance}}")],
             thresholds=[("green", None), ("red", 8000)],
             what="audit records waiting to be written, per instance.",
             normal="near zero.",
             abnormal="a sustained climb: the audit log's disk or sink is slow. The queue applies "
                      "backpressure (never drops), so sessions slow down (alert PgveilAuditQueueSaturated "
                      "at 8000)."),
    ]),
    ("Policy", [
        dict(title="Policy version in force", type="table", w=8, h=8, unit="none",
             targets=[q("sum by (version) (%s)" % sel("pgveil_policy_info"), "{{version}}", instant=True,
                        fmt="table")],
             what="each policy version in force and how many instances enforce it.",
             normal="one row, all instances.",
             abnormal="two rows for long: a stuck roll-out or a rejected file on some instances "
                      "(alert PgveilPolicyVersionMismatch)."),
        dict(title="Policy reloads by result", type="timeseries", w=8, h=8, unit="short", bars=True,
             targets=[q("sum by (result) (increase(%s[%s]))" % (sel("pgveil_policy_reloads_total"), RI),
                        "{{result}}")],
             what="policy and keyring reloads (SIGHUP or a changed file), ok and error.",
             normal="an ok bar per instance when the policy or keyring changes.",
             abnormal="error bars: a file was rejected and the previous policy stays in force."),
        dict(title="Failed policy reloads in range", type="stat", w=4, h=8, unit="short",
             targets=[q("sum(increase(%s[$__range]))" % sel("pgveil_policy_reloads_total", 'result="error"'),
                        "failed", instant=True)],
             thresholds=[("green", None), ("red", 1)],
             what="rejected policy or keyring reloads over the selected range.",
             normal="0.",
             abnormal="any (alert PgveilPolicyReloadFailed); pgveil's log names the file, line and column."),
        dict(title="Parse cache hit ratio", type="timeseries", w=4, h=8, unit="percentunit",
             targets=[q("sum(rate(%s[%s])) / (sum(rate(%s[%s])) + sum(rate(%s[%s])))"
                        % (sel("pgveil_parse_cache_hits_total"), RI, sel("pgveil_parse_cache_hits_total"), RI,
                           sel("pgveil_parse_cache_misses_total"), RI), "hit ratio")],
             what="share of analyses of protected statements served from the parse cache.",
             normal="above 0.9 for applications that use prepared statements or parameters.",
             abnormal="low: SQL built with literals inlined, or catalog.parse_cache_size too small."),
    ]),
]


def thresholds(steps):
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in steps]}


def panel(pid, spec, x, y):
    description = "%s\nNormal: %s\nAbnormal: %s" % (spec["what"], spec["normal"], spec["abnormal"])
    targets = []
    for i, t in enumerate(spec["targets"]):
        t = dict(t)
        t["datasource"] = DS
        t["refId"] = chr(ord("A") + i)
        t.setdefault("range", True)
        t.setdefault("instant", False)
        targets.append(t)
    defaults = {"unit": spec["unit"], "color": {"mode": "palette-classic"}}
    steps = spec.get("thresholds")
    if steps:
        defaults["thresholds"] = thresholds(steps)
    options = {}
    kind = spec["type"]
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "bars" if spec.get("bars") else "line",
            "lineWidth": 1,
            "fillOpacity": 60 if spec.get("bars") else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "none"},
            "thresholdsStyle": {"mode": "line" if steps else "off"},
        }
        defaults["min"] = 0
        options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                              "calcs": ["mean", "max", "lastNotNull"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                   "orientation": "auto", "textMode": "auto"}
    elif kind == "bargauge":
        defaults["color"] = {"mode": "continuous-BlPu"}
        defaults["min"] = 0
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "displayMode": "basic", "orientation": "horizontal", "showUnfilled": True,
                   "valueMode": "color", "namePlacement": "auto", "sizing": "auto"}
    elif kind == "table":
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    p = {
        "id": pid,
        "type": kind,
        "title": spec["title"],
        "description": description,
        "datasource": DS,
        "gridPos": {"h": spec["h"], "w": spec["w"], "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }
    if kind == "table":
        p["transformations"] = [{"id": "organize", "options": {
            "excludeByName": {"Time": True},
            "renameByName": {"version": "policy version", "Value": "instances"}}}]
    return p


def dashboard():
    panels = []
    pid = 1
    y = 0
    for title, specs in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        x = 0
        row_h = 0
        for spec in specs:
            if x + spec["w"] > 24:
                x = 0
                y += row_h
                row_h = 0
            panels.append(panel(pid, spec, x, y))
            pid += 1
            x += spec["w"]
            row_h = max(row_h, spec["h"])
        y += row_h
    templating = [
        {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
         "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False, "options": []},
        {"name": "job", "label": "Job", "type": "query", "datasource": DS,
         "definition": "label_values(pgveil_build_info, job)",
         "query": {"query": "label_values(pgveil_build_info, job)", "refId": "StandardVariableQuery"},
         "current": {"selected": False, "text": "pgveil", "value": "pgveil"},
         "hide": 0, "refresh": 2, "regex": "", "sort": 1, "includeAll": False, "multi": False, "options": []},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
         "definition": 'label_values(pgveil_build_info{job=~"$job"}, instance)',
         "query": {"query": 'label_values(pgveil_build_info{job=~"$job"}, instance)',
                   "refId": "StandardVariableQuery"},
         "current": {"selected": False, "text": ["All"], "value": ["$__all"]},
         "hide": 0, "refresh": 2, "regex": "", "sort": 1, "includeAll": True, "allValue": ".+",
         "multi": True, "options": []},
    ]
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard"}]},
        "description": "pgveil: traffic, sensitive data access, denials and anomalies, crypto, audit "
                       "pipeline and policy, summed over every instance. Panels are described in "
                       "docs/operations.md (Monitoring).",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["pgveil", "postgresql", "security"],
        "templating": {"list": templating},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "pgveil",
        "uid": "pgveil",
        "version": 1,
        "weekStart": "",
    }


def render():
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def markdown():
    out = []
    for title, specs in ROWS:
        out.append("**%s**\n" % title)
        for s in specs:
            out.append("- *%s*: %s Normal: %s Abnormal: %s" % (
                s["title"], s["what"][0].upper() + s["what"][1:], s["normal"], s["abnormal"]))
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the JSON differs from what this script builds")
    ap.add_argument("--markdown", action="store_true", help="print the panel descriptions as Markdown")
    args = ap.parse_args()
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    text = render()
    if args.check:
        try:
            with open(OUT, encoding="utf-8") as f:
                current = f.read()
        except OSError as e:
            print("build_dashboard: %s" % e, file=sys.stderr)
            return 1
        if current != text:
            print("build_dashboard: %s is out of date; run python3 deploy/tools/build_dashboard.py"
                  % os.path.relpath(OUT, ROOT), file=sys.stderr)
            return 1
        print("build_dashboard: %s is up to date" % os.path.relpath(OUT, ROOT))
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s" % os.path.relpath(OUT, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
