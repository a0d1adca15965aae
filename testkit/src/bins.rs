//! Locating the PostgreSQL server binaries.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestkitError;

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `psql`.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// Path of one binary in the directory.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// `psql`, which Debian ships in the client package: prefer the server's
    /// directory, fall back to PATH.
    pub fn psql(&self) -> PathBuf {
        let local = self.bin("psql");
        if local.exists() {
            local
        } else {
            PathBuf::from("psql")
        }
    }
}

/// Find a directory that has the server binaries, or fail with an install hint.
pub fn find_bindir() -> Result<PgBinaries, TestkitError> {
    candidates()
        .into_iter()
        .find(|dir| has_server_binaries(dir))
        .map(|bindir| PgBinaries { bindir })
        .ok_or(TestkitError::BinariesMissing)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("PGVEIL_PG_BINDIR") {
        out.push(PathBuf::from(dir));
    }
    // On PATH: resolve symlinks (Debian links /usr/local/bin/initdb into the
    // versioned directory, where `postgres` lives too).
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if let Ok(real) = std::fs::canonicalize(&initdb) {
                if let Some(parent) = real.parent() {
                    out.push(parent.to_path_buf());
                }
            }
        }
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !text.is_empty() {
                out.push(PathBuf::from(text));
            }
        }
    }
    out.extend(debian_versioned_dirs());
    out
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn debian_versioned_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let major = name.split('.').next()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, p)| p).collect()
}
