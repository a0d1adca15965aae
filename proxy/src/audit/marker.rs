//! The open marker: a small file beside the log, `.audit.jsonl.open-<log id>`, that exists
//! while a writer has that log open. The writer creates it before the log's first record and
//! removes it after the closing checkpoint is on disk.
//!
//! Why: a log that ends without its closing checkpoint was either never closed (a crash) or
//! closed and cut afterwards; the file alone cannot tell. The marker can: after a crash it is
//! still there, after a clean shutdown it is gone. The next writer checks it and says which in
//! its `start` record (`prev_end`), and `audit verify` accepts a log without its closing
//! checkpoint only when that record says `crashed`.
//!
//! The marker names its log and is signed with that log's checkpoint key, so it cannot be made
//! without the keyring; but a copy taken while the log was open can be put back later (see
//! docs/security.md, "What the audit trail proves"). Its name starts with a dot so
//! that `audit.jsonl*` globs (shippers, `audit verify`) do not pick it up.
use std::path::{Path, PathBuf};

use pgveil_policy::crypto::KeySet;
use serde::{Deserialize, Serialize};

use super::chain::{unhex, ChainWriter};
use super::AuditError;

/// Larger files are not markers (nothing is read beyond this).
const MAX_BYTES: u64 = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    /// The log id. First, so that the signed body begins `{"open":`.
    open: String,
    key_version: u32,
    time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

/// `dir/audit.jsonl` → `dir/.audit.jsonl.open-` (the marker's name without the log id).
fn prefix(log_file: &Path) -> String {
    let name = log_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    format!(".{name}.open-")
}

/// The marker of log `log` written to `log_file`.
pub(crate) fn path_for(log_file: &Path, log: &str) -> PathBuf {
    log_file.with_file_name(format!("{}{log}", prefix(log_file)))
}

/// Creates the marker of `chain`'s log and makes it durable (file and directory fsynced): a
/// marker lost to a power failure would turn the crash it was to vouch for into a cut.
pub(crate) fn create(
    log_file: &Path,
    chain: &ChainWriter,
    time: String,
) -> Result<PathBuf, AuditError> {
    let path = path_for(log_file, chain.log_id());
    let mut m = Marker {
        open: chain.log_id().to_string(),
        key_version: chain.key_version(),
        time,
        signature: None,
    };
    let body = serde_json::to_string(&m).map_err(AuditError::Json)?;
    m.signature = Some(chain.sign_marker(body.as_bytes()));
    let text = serde_json::to_string(&m).map_err(AuditError::Json)? + "\n";
    write_durably(&path, text.as_bytes()).map_err(|e| AuditError::io(&path, e))?;
    Ok(path)
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, so that a created or removed name survives a power
/// failure.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Whether the marker of log `log` beside `log_file` is there and genuine (names that log and
/// carries its checkpoint key's signature).
pub(crate) fn vouches(log_file: &Path, log: &str, keys: &KeySet) -> bool {
    let path = path_for(log_file, log);
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    if meta.len() > MAX_BYTES {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    let Ok(mut m) = serde_json::from_str::<Marker>(text.trim_end()) else {
        return false;
    };
    let Some(sig) = m.signature.take().as_deref().and_then(unhex) else {
        return false;
    };
    let Some(root) = keys.audit_root(m.key_version, log) else {
        return false;
    };
    let Ok(body) = serde_json::to_string(&m) else {
        return false;
    };
    m.open == log && root.checkpoint_key().verify(body.as_bytes(), &sig)
}

/// Removes the marker at `path` once its log is closed.
pub(crate) fn remove(path: &Path) {
    let r = std::fs::remove_file(path).and_then(|()| sync_dir(path));
    if let Err(e) = r {
        // The next start then takes the closed log for a crashed one: it ends with its closing
        // checkpoint all the same, so nothing is lost but a wrong word in a start record.
        tracing::warn!(marker = %path.display(), error = %e, "audit: cannot remove the open marker of the closed log");
    }
}

/// Removes the markers beside `log_file` other than `keep`: the previous log's, now that the
/// new log's `start` record has said how it ended, and any left by a crash during a start.
pub(crate) fn remove_others(log_file: &Path, keep: &Path) {
    let dir = match log_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = prefix(log_file);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let ours = name.to_string_lossy().starts_with(&prefix);
        if ours && Some(name.as_os_str()) != keep.file_name() {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(marker = %path.display(), error = %err, "audit: cannot remove an old open marker");
            }
        }
    }
}
