//! node-postgres (npm `pg`, pg-pool, pg-cursor, pg-query-stream) as a client:
//! `proxy/tests/node/disconnects.js` must pass against PostgreSQL directly and
//! through pgveil, with zero error events (issue 11).
//!
//! Needs `node` (or `$PGVEIL_NODE`) and the npm modules pinned by
//! `proxy/tests/node/package-lock.json`, found in `$PGVEIL_NODE_MODULES`, in
//! `proxy/tests/node/node_modules`, or else installed here with `npm ci` into
//! a cache under the cargo target directory. Missing pieces fail the test.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

fn node_bin() -> PathBuf {
    let node = std::env::var_os("PGVEIL_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from);
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => node,
        _ => panic!(
            "node-postgres tests need Node.js: `{}` did not run. Install node (v18+) \
             or set PGVEIL_NODE to its path",
            node.display()
        ),
    }
}

/// The node_modules directory holding pg, pg-pool, pg-cursor and pg-query-stream.
fn node_modules() -> PathBuf {
    let has_pg = |dir: &Path| dir.join("pg/package.json").is_file();
    if let Some(dir) = std::env::var_os("PGVEIL_NODE_MODULES").map(PathBuf::from) {
        assert!(
            has_pg(&dir),
            "PGVEIL_NODE_MODULES={} holds no pg module; run `npm ci` there (see docs/operations.md)",
            dir.display()
        );
        return dir;
    }
    let local = node_dir().join("node_modules");
    if has_pg(&local) {
        return local;
    }
    npm_ci_into_cache()
}

/// `npm ci` the pinned lockfile into the target directory, once per lockfile.
fn npm_ci_into_cache() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pgveil-node-clients");
    let lock = std::fs::read(node_dir().join("package-lock.json"))
        .unwrap_or_else(|e| panic!("read proxy/tests/node/package-lock.json: {e}"));
    let modules = cache.join("node_modules");
    let cached_lock = std::fs::read(cache.join("package-lock.json")).ok();
    if cached_lock.as_deref() == Some(&lock[..]) && modules.join("pg/package.json").is_file() {
        return modules;
    }
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(node_dir().join(file), cache.join(file))
            .unwrap_or_else(|e| panic!("copy {file} to {}: {e}", cache.display()));
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&cache)
        .output()
        .unwrap_or_else(|e| {
            panic!("node-postgres tests need npm to install the pinned modules: {e}")
        });
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}{}",
        cache.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    modules
}

/// Run disconnects.js against `url`; returns its JSON summary, failing on any
/// error event or failed step.
async fn run_script(node: &Path, modules: &Path, url: &str, against: &str) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new(node);
    cmd.arg(node_dir().join("disconnects.js"))
        .env("PGVEIL_TEST_URL", url)
        .env("NODE_PATH", modules)
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("disconnects.js against {against} took over 120 s"))
        .unwrap_or_else(|e| panic!("run node: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary against {against}:\n{stdout}\n{stderr}"));
    assert!(
        out.status.success() && summary["ok"] == true,
        "node-postgres against {against} failed:\n{summary:#}\n{stderr}"
    );
    assert_eq!(summary["cycles"], 1000, "{summary}");
    assert_eq!(summary["cycle_error_events"], 0, "{summary}");
    assert_eq!(summary["error_events"], 0, "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_disconnects_cleanly_direct_and_through_pgveil() {
    let node = node_bin();
    let modules = tokio::task::block_in_place(node_modules);
    let pg = pg_trust();
    let direct = format!("postgres://{USER}@127.0.0.1:{}/postgres", pg.port());
    run_script(&node, &modules, &direct, "PostgreSQL directly").await;

    let proxy = proxy_for(&pg).await;
    let through = format!("postgres://{USER}@127.0.0.1:{}/postgres", proxy.addr.port());
    run_script(&node, &modules, &through, "pgveil").await;
    let metrics = metrics_text(&proxy).await;
    assert!(
        nonzero(&metrics, "pgveil_session_errors_total{").is_empty(),
        "node-postgres's ordinary disconnects were counted as errors:\n{metrics}"
    );
    proxy.shutdown().await;
}
