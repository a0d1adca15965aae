#!/usr/bin/env bash
# Checks of deploy/ and docker-compose.yml that need neither Docker nor a pgveil build:
#   promtool check config / check rules / test rules on deploy/prometheus,
#   the dashboard (up to date with build_dashboard.py, lint, every query through promtool),
#   docker-compose.yml and the files it uses (check_compose.py and its tests),
#   and a report of metrics the dashboard and alerts read that pgveil does not register yet
#   (an error with PGVEIL_DEPLOY_STRICT_METRICS=1).
# Exits non-zero when any check fails. Installs promtool (Debian package prometheus) when missing.
# Python: $PGVEIL_PYTHON_VENV/bin/python when set (the venv of proxy/tests/python/requirements.txt,
# which pins PyYAML), else python3 (needs PyYAML).
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (Debian package prometheus)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { echo "check_deploy: cannot install promtool" >&2; exit 1; }
fi
PYTHON="${PGVEIL_PYTHON_VENV:+$PGVEIL_PYTHON_VENV/bin/python}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import yaml' >/dev/null 2>&1; then
  echo "check_deploy: $PYTHON lacks PyYAML: $PYTHON -m pip install -r proxy/tests/python/requirements.txt" >&2
  exit 1
fi

passed=0
failed=0
step() {
  local name="$1"
  shift
  echo "==> $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name" >&2
    failed=$((failed + 1))
  fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step "promtool check config" promtool check config deploy/prometheus/prometheus.yml
step "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
step "dashboard JSON is what build_dashboard.py builds" "$PYTHON" deploy/tools/build_dashboard.py --check
step "dashboard lint" "$PYTHON" deploy/tools/dashboard_queries.py --lint
step "dashboard queries parse (promtool)" bash -c \
  "'$PYTHON' deploy/tools/dashboard_queries.py --rules-file '$tmp/dashboard-queries.yml' && promtool check rules '$tmp/dashboard-queries.yml'"
step "docker-compose.yml and its files" "$PYTHON" deploy/tools/check_compose.py
step "check_compose.py tests" "$PYTHON" -m unittest discover -s deploy/tools -p 'test_*.py'
if [ "${PGVEIL_DEPLOY_STRICT_METRICS:-0}" = 1 ]; then
  step "metrics the dashboard and alerts read are registered" "$PYTHON" deploy/tools/check_metrics.py --strict
else
  echo "==> metrics the dashboard and alerts read (report only)"
  "$PYTHON" deploy/tools/check_metrics.py
fi

echo "check_deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
