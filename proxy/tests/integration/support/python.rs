//! A Python with the pinned clients (psycopg, asyncpg, SQLAlchemy, PyYAML): a venv in a cache
//! under the target directory, or `$PGVEIL_PYTHON_VENV`.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

pub fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// True when `python` imports the client libraries.
pub fn has_clients(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import psycopg, asyncpg, sqlalchemy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The interpreter of a venv holding the pinned psycopg and asyncpg.
pub fn python_with_clients() -> PathBuf {
    if let Some(venv) = std::env::var_os("PGVEIL_PYTHON_VENV").map(PathBuf::from) {
        let python = venv_python(&venv);
        assert!(
            has_clients(&python),
            "PGVEIL_PYTHON_VENV={} has no python importing psycopg, asyncpg and sqlalchemy; \
             create it with \
             `python3 -m venv DIR && DIR/bin/pip install -r proxy/tests/python/requirements.txt`",
            venv.display()
        );
        return python;
    }
    venv_into_cache()
}

pub fn base_python() -> PathBuf {
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

pub fn run(cmd: &mut Command, what: &str) {
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
pub fn venv_into_cache() -> PathBuf {
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
        "psycopg, asyncpg and sqlalchemy do not import after pip install in {}",
        venv.display()
    );
    std::fs::write(&stamp, &reqs).unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
    python
}

/// What a script printed: its last stdout line parsed as the JSON summary.
pub struct Summary {
    pub json: serde_json::Value,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `proxy/tests/python/<script>` with `env`, within `timeout_s` seconds.
pub async fn run_script(
    python: &Path,
    script: &str,
    env: &[(&str, String)],
    timeout_s: u64,
) -> Summary {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(python_dir().join(script))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(timeout_s), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} took over {timeout_s} s"))
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{script} printed no JSON summary:\n{stdout}\n{stderr}"));
    Summary {
        ok: out.status.success() && json["ok"] == true && json["failed"] == 0,
        json,
        stdout,
        stderr,
    }
}

pub fn assert_script_ok(summary: &Summary) {
    assert!(
        summary.ok,
        "Python clients through pgveil failed:\n{}\n{}",
        summary.stdout, summary.stderr
    );
}
