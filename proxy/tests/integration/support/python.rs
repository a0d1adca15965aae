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
