//! psycopg 3 and asyncpg as clients of an enforcing pgveil:
//! `proxy/tests/python/read_side.py` checks masks, decrypts, hashes, refusals
//! (42501, then 25P02 inside a transaction) and untouched unprotected reads
//! over the simple, extended and binary protocols, prepared statements,
//! asyncpg's type introspection, cursors and pools.
//!
//! Needs `python3` (or `$PGVEIL_PYTHON`) and a venv holding the versions
//! pinned by `proxy/tests/python/requirements.txt`: `$PGVEIL_PYTHON_VENV`
//! (set by `.ci/run`), or else one created here with `python3 -m venv` and
//! `pip install -r` in a cache under the cargo target directory, keyed by the
//! requirements file. Missing pieces fail the test; they never skip it.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::enforce_read::{mask, setup, ROWS};
use crate::support::*;

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// True when `python` imports both client libraries.
fn has_clients(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import psycopg, asyncpg"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The interpreter of a venv holding the pinned psycopg and asyncpg.
fn python_with_clients() -> PathBuf {
    if let Some(venv) = std::env::var_os("PGVEIL_PYTHON_VENV").map(PathBuf::from) {
        let python = venv_python(&venv);
        assert!(
            has_clients(&python),
            "PGVEIL_PYTHON_VENV={} has no python importing psycopg and asyncpg; create it with \
             `python3 -m venv DIR && DIR/bin/pip install -r proxy/tests/python/requirements.txt`",
            venv.display()
        );
        return python;
    }
    venv_into_cache()
}

fn base_python() -> PathBuf {
    let python =
        std::env::var_os("PGVEIL_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    match Command::new(&python).arg("--version").output() {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "the Python client tests need Python 3.9+: `{}` did not run. Install python3 and \
             python3-venv (apt-get install -y python3-venv) or set PGVEIL_PYTHON to its path",
            python.display()
        ),
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Create a venv with the pinned requirements under the target directory, once
/// per requirements file contents.
fn venv_into_cache() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pgveil-python-clients");
    let reqs_path = python_dir().join("requirements.txt");
    let reqs =
        std::fs::read(&reqs_path).unwrap_or_else(|e| panic!("read {}: {e}", reqs_path.display()));
    let venv = cache.join("venv");
    let stamp = cache.join("requirements.installed");
    let python = venv_python(&venv);
    if std::fs::read(&stamp).ok().as_deref() == Some(&reqs[..]) && has_clients(&python) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    run(
        Command::new(base_python()).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (on Debian it needs: apt-get install -y python3-venv)",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&reqs_path),
        "pip install -r proxy/tests/python/requirements.txt",
    );
    assert!(
        has_clients(&python),
        "psycopg and asyncpg do not import after pip install in {}",
        venv.display()
    );
    std::fs::write(&stamp, &reqs).unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_see_the_policy() {
    let python = tokio::task::block_in_place(python_with_clients);
    let s = setup().await;
    let k = &s.keys;
    // Types asyncpg has no built-in codec for, so that it runs its introspection queries.
    direct(&s.cluster)
        .await
        .batch_execute(
            "create type ticket_state as enum ('open', 'closed');
             create type order_line as (amount numeric(10,2), note text);",
        )
        .await
        .unwrap();

    // What each policy role must read, per customer id, computed with pgveil's own masks.
    let mut support = serde_json::Map::new();
    let mut dispatcher = serde_json::Map::new();
    let mut analyst = serde_json::Map::new();
    for (id, name, phone, id_card, address, birth) in ROWS {
        support.insert(
            id.to_string(),
            json!({
                "name": mask("cn_name", name, k),
                "phone": mask("cn_mobile", phone, k),
                "address": mask("address", address, k),
                "birth": mask("date", birth, k),
            }),
        );
        dispatcher.insert(
            id.to_string(),
            json!({
                "name": name, "phone": phone, "address": address, "birth": birth,
                "id_card": mask("cn_id_card", id_card, k),
            }),
        );
        analyst.insert(
            id.to_string(),
            json!({
                "name": mask("cn_name", name, k),
                "phone": mask("hash", phone, k),
                "birth": birth,
            }),
        );
    }
    let expected = json!({ "support": support, "dispatcher": dispatcher, "analyst": analyst });

    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(python_dir().join("read_side.py"))
        .env("PGVEIL_PROXY_PORT", s.proxy.addr.port().to_string())
        .env("PGVEIL_EXPECTED", expected.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.output())
        .await
        .expect("read_side.py took over 180 s")
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("read_side.py printed no JSON summary:\n{stdout}\n{stderr}"));
    assert!(
        out.status.success() && summary["ok"] == true && summary["failed"] == 0,
        "psycopg/asyncpg through pgveil failed:\n{stdout}\n{stderr}"
    );
    assert!(
        summary["passed"].as_u64().unwrap_or(0) >= 100,
        "fewer checks ran than expected:\n{stdout}"
    );
    println!("{stdout}");
    s.proxy.shutdown().await;
}
