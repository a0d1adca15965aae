#!/usr/bin/env python3
"""Tests of check_compose.py: the stack as committed passes, and each kind of mistake is caught.

    python3 -m unittest discover -s deploy/tools -p 'test_*.py'
"""
import io
import os
import re
import shutil
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_compose  # noqa: E402

ROOT = check_compose.ROOT
FILES = ["docker-compose.yml", "Dockerfile", "Cargo.toml", "proxy/src/config", "deploy", "examples/logistics"]


class CheckCompose(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="check_compose.")
        for f in FILES:
            src, dst = os.path.join(ROOT, f), os.path.join(self.tmp, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def edit(self, path, old, new):
        p = os.path.join(self.tmp, path)
        with open(p, encoding="utf-8") as f:
            text = f.read()
        self.assertIn(old, text, "test fixture out of date: %r not in %s" % (old, path))
        with open(p, "w", encoding="utf-8") as f:
            f.write(text.replace(old, new, 1))

    def problems(self):
        check_compose.PROBLEMS.clear()
        # Read with PyYAML, as on a machine without the compose plugin.
        saved = check_compose.shutil.which
        check_compose.shutil.which = lambda name: None
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                check_compose.check(self.tmp)
        finally:
            check_compose.shutil.which = saved
        return list(check_compose.PROBLEMS)

    def assertCaught(self, pattern):
        found = self.problems()
        self.assertTrue(any(re.search(pattern, p) for p in found), "expected %r among %s" % (pattern, found))

    def test_committed_stack_passes(self):
        self.assertEqual(self.problems(), [])

    def test_config_keys_come_from_config_rs(self):
        keys = check_compose.accepted_keys(os.path.join(ROOT, "proxy/src/config"))
        self.assertIn("connect_timeout", keys["upstream"])
        self.assertEqual(keys["upstream"]["tls"]["mode"][1], ["disable", "prefer", "require", "verify-full"])
        # A field added to the Rust struct is accepted without touching the script...
        self.edit("proxy/src/config/file.rs", "struct FileMetrics {\n    pub(super) listen: Option<String>,",
                  "struct FileMetrics {\n    pub(super) listen: Option<String>,\n    pub(super) path: Option<String>,")
        self.edit("deploy/pgveil/pgveil.yaml", "  listen: 0.0.0.0:9187", "  listen: 0.0.0.0:9187\n  path: /m")
        self.assertEqual(self.problems(), [])

    def test_unknown_config_key(self):
        self.edit("deploy/pgveil/pgveil.yaml", "  host: postgres", "  hots: postgres")
        self.assertCaught(r"upstream\.hots: unknown key")

    def test_bad_values(self):
        self.edit("deploy/pgveil/pgveil.yaml", "mode: disable", "mode: requier")
        self.edit("deploy/pgveil/pgveil.yaml", "refresh_interval: 60s", "refresh_interval: soon")
        self.assertCaught(r"upstream\.tls\.mode: 'requier' is not one of")
        self.assertCaught(r"catalog\.refresh_interval: 'soon' is not a duration")

    def test_metrics_on_loopback(self):
        self.edit("deploy/pgveil/pgveil.yaml", "listen: 0.0.0.0:9187", "listen: 127.0.0.1:9187")
        self.assertCaught(r"metrics\.listen 127\.0\.0\.1:9187 cannot be scraped")

    def test_scrape_target_must_match(self):
        self.edit("deploy/prometheus/prometheus.yml", '"pgveil:9187"', '"proxy:9187"')
        self.assertCaught(r"job pgveil targets \['proxy:9187'\], expected pgveil:9187")

    def test_metrics_port_change_must_reach_prometheus(self):
        self.edit("deploy/pgveil/pgveil.yaml", "listen: 0.0.0.0:9187", "listen: 0.0.0.0:9999")
        self.assertCaught(r"expected pgveil:9999")
        self.assertCaught(r"does not publish its metrics port 9999")

    def test_missing_mounted_file(self):
        os.remove(os.path.join(self.tmp, "deploy/prometheus/alerts.yml"))
        self.assertCaught(r"prometheus mounts \./deploy/prometheus/alerts\.yml, which does not exist")

    def test_undeclared_volume_and_unknown_dependency(self):
        self.edit("docker-compose.yml", "  pgveil-keys:\n  pgveil-audit:", "  pgveil-audit:")
        self.edit("docker-compose.yml", "    depends_on:\n      - prometheus", "    depends_on:\n      - prom")
        self.assertCaught(r"uses volume pgveil-keys, not declared")
        self.assertCaught(r"grafana depends on unknown service prom")

    def test_policy_login_without_role(self):
        self.edit("deploy/postgres/20-roles.sh", "CREATE ROLE bi_reader", "-- CREATE ROLE bi_reader")
        self.assertCaught(r"role analyst: login bi_reader is not created")

    def test_upstream_must_be_the_postgres_service(self):
        self.edit("deploy/pgveil/pgveil.yaml", "  host: postgres", "  host: db")
        self.assertCaught(r"upstream\.host is 'db'")

    def test_datasource_uid(self):
        self.edit("deploy/grafana/provisioning/datasources/prometheus.yml", "uid: prometheus", "uid: prom")
        self.assertCaught(r"uid 'prom', the dashboard expects prometheus")

    def test_audit_log_in_a_volume_pgveil_can_write(self):
        self.edit("docker-compose.yml", "      - pgveil-audit:/var/log/pgveil", "")
        self.assertCaught(r"audit\.file /var/log/pgveil/audit\.jsonl is in no volume of pgveil")
        self.edit("Dockerfile", " /var/log/pgveil \\", " \\")
        self.assertCaught(r"Dockerfile: /var/log/pgveil \(the audit log's directory\) is not created")

    def test_old_rust_image(self):
        self.edit("Dockerfile", "FROM rust:1.85-bookworm", "FROM rust:1.80-bookworm")
        self.assertCaught(r"older than the workspace's rust-version")


if __name__ == "__main__":
    unittest.main()
