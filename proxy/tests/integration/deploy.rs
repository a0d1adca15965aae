//! deploy/ checked without Docker or Grafana: `deploy/tools/check_deploy.sh` runs
//! `promtool check config`, `promtool check rules` and `promtool test rules` (a unit test for
//! every alert rule), checks that the dashboard JSON is what its generator builds and that every
//! PromQL expression in it parses, and checks docker-compose.yml against the repository
//! (services, volumes, ports, files, pgveil's config keys). It installs promtool (Debian package
//! `prometheus`) when missing; `.ci/run` installs it up front.
use std::path::Path;
use std::process::Command;

use crate::support::python::python_with_clients;

#[test]
fn deploy_configs_dashboard_and_alert_rules_pass_their_checks() {
    let python = python_with_clients();
    let venv = python
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg("deploy/tools/check_deploy.sh")
        .current_dir(&root)
        .env("PGVEIL_PYTHON_VENV", &venv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run deploy/tools/check_deploy.sh: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "deploy checks failed:\n{text}");
    assert!(text.contains("promtool test rules"), "{text}");
}
