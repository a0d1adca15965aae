//! The keyring file: master keys per version, the active version, and creation times.
//!
//! ```json
//! {
//!   "format": "pgveil-keyring-v1",
//!   "active": 2,
//!   "keys": [
//!     { "version": 1, "created": "2025-01-06T09:30:00Z", "fingerprint": "…", "key": "base64…" },
//!     { "version": 2, "created": "2025-04-01T08:00:00Z", "fingerprint": "…", "key": "base64…" }
//!   ]
//! }
//! ```
//!
//! The file must not be readable by group or others. Every key's fingerprint is stored next to
//! it and checked on load, so a corrupted key is reported instead of silently producing
//! ciphertext nobody can read.
use crate::crypto::{KeySet, MasterKey, MASTER_KEY_LEN};
use base64_simd::STANDARD;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "pgveil-keyring-v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: keyring is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: keyring is empty")]
    Empty { path: PathBuf },
    #[error("{path}:{line}:{col}: keyring is not valid JSON: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: refusing to overwrite an existing file")]
    Exists { path: PathBuf },
    #[error("the system random number generator failed")]
    Rng,
}

/// Why a key version cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("version {0} is the active version; add a new version and rekey before retiring it")]
    Active(u32),
    #[error("version {0} is not in the keyring")]
    Unknown(u32),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    format: String,
    active: u32,
    keys: Vec<KeyRepr>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRepr {
    version: u32,
    created: String,
    fingerprint: String,
    key: String,
}

/// Public facts about one key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub version: u32,
    pub created: String,
    pub fingerprint: String,
    pub active: bool,
}

/// A loaded keyring.
#[derive(Debug)]
pub struct Keyring {
    active: u32,
    keys: Vec<(KeyInfo, MasterKey)>,
}

impl Keyring {
    /// A new keyring with one fresh key (version 1, active).
    pub fn generate(now_unix: u64) -> Result<Keyring, KeyringError> {
        let mut k = Keyring {
            active: 0,
            keys: Vec::new(),
        };
        k.add_version(now_unix)?;
        Ok(k)
    }

    /// Adds a fresh key as the next version and makes it active. Returns the new version.
    pub fn add_version(&mut self, now_unix: u64) -> Result<u32, KeyringError> {
        let version = self.keys.iter().map(|(i, _)| i.version).max().unwrap_or(0) + 1;
        let key = MasterKey::generate().map_err(|_| KeyringError::Rng)?;
        let info = KeyInfo {
            version,
            created: rfc3339(now_unix),
            fingerprint: key.fingerprint(),
            active: true,
        };
        for (i, _) in &mut self.keys {
            i.active = false;
        }
        self.keys.push((info, key));
        self.active = version;
        Ok(version)
    }

    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// Removes one key version. Values encrypted under it can no longer be decrypted by anyone
    /// holding only this keyring (crypto-shredding). The active version cannot be removed.
    pub fn remove_version(&mut self, version: u32) -> Result<(), RemoveError> {
        if version == self.active {
            return Err(RemoveError::Active(version));
        }
        let before = self.keys.len();
        self.keys.retain(|(i, _)| i.version != version);
        if self.keys.len() == before {
            return Err(RemoveError::Unknown(version));
        }
        Ok(())
    }

    /// Whether the keyring holds `version`.
    pub fn has_version(&self, version: u32) -> bool {
        self.keys.iter().any(|(i, _)| i.version == version)
    }

    /// Versions, creation times and fingerprints; never key material.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(|(i, _)| i.clone()).collect()
    }

    /// The key set for encryption (consumes the keyring so key material is not duplicated).
    pub fn into_key_set(self) -> KeySet {
        let active = self.active;
        let versions = self.keys.into_iter().map(|(i, k)| (i.version, k)).collect();
        // `generate` and `parse` guarantee that the active version exists.
        KeySet::new_unchecked(versions, active)
    }

    /// Reads and validates a keyring file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        check_permissions(path)?;
        let bytes = std::fs::read(path).map_err(|source| KeyringError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    /// Validates keyring contents (`path` is used in messages only).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Keyring, KeyringError> {
        let invalid = |message: String| KeyringError::Invalid {
            path: path.into(),
            message,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(KeyringError::Empty { path: path.into() });
        }
        let repr: FileRepr = serde_json::from_slice(bytes).map_err(|e| KeyringError::Syntax {
            path: path.into(),
            line: e.line(),
            col: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        if repr.format != FORMAT {
            return Err(invalid(format!(
                "unknown keyring format \"{}\" (expected \"{FORMAT}\")",
                repr.format
            )));
        }
        if repr.keys.is_empty() {
            return Err(invalid("keyring holds no keys".into()));
        }
        let mut keys: Vec<(KeyInfo, MasterKey)> = Vec::with_capacity(repr.keys.len());
        for k in repr.keys {
            if k.version == 0 {
                return Err(invalid(
                    "key version 0 is not allowed; versions start at 1".into(),
                ));
            }
            if keys.iter().any(|(i, _)| i.version == k.version) {
                return Err(invalid(format!("key version {} appears twice", k.version)));
            }
            let raw = STANDARD.decode_to_vec(k.key.trim()).map_err(|_| {
                invalid(format!(
                    "key version {}: key material is not valid base64",
                    k.version
                ))
            })?;
            let arr: [u8; MASTER_KEY_LEN] = raw.as_slice().try_into().map_err(|_| {
                invalid(format!(
                    "key version {}: key is {} bytes, expected {MASTER_KEY_LEN}",
                    k.version,
                    raw.len()
                ))
            })?;
            let mk = MasterKey::from_bytes(arr);
            if mk.fingerprint() != k.fingerprint {
                return Err(invalid(format!(
                    "key version {}: key does not match its fingerprint {}; the keyring is corrupted",
                    k.version, k.fingerprint
                )));
            }
            let info = KeyInfo {
                version: k.version,
                created: k.created,
                fingerprint: k.fingerprint,
                active: false,
            };
            keys.push((info, mk));
        }
        if !keys.iter().any(|(i, _)| i.version == repr.active) {
            return Err(invalid(format!(
                "active version {} is not in the keyring",
                repr.active
            )));
        }
        for (i, _) in &mut keys {
            i.active = i.version == repr.active;
        }
        Ok(Keyring {
            active: repr.active,
            keys,
        })
    }

    /// Serialises the keyring (this text contains key material).
    pub fn to_json(&self) -> String {
        let repr = FileRepr {
            format: FORMAT.into(),
            active: self.active,
            keys: self
                .keys
                .iter()
                .map(|(i, k)| KeyRepr {
                    version: i.version,
                    created: i.created.clone(),
                    fingerprint: i.fingerprint.clone(),
                    key: STANDARD.encode_to_string(k.as_bytes()),
                })
                .collect(),
        };
        let mut s = serde_json::to_string_pretty(&repr).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Writes the keyring with mode 0600, atomically (temporary file + rename).
    /// With `create_new`, refuses to replace an existing file.
    pub fn save(&self, path: &Path, create_new: bool) -> Result<(), KeyringError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if create_new && path.exists() {
            return Err(KeyringError::Exists { path: path.into() });
        }
        let io = |source| KeyringError::Io {
            path: path.into(),
            source,
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{file_name}.tmp"));
        // A temporary file left by an interrupted run is ours to replace.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = f
            .write_all(self.to_json().as_bytes())
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if create_new && path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(KeyringError::Exists { path: path.into() });
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Refuses a keyring that group or others may read or write.
pub fn check_permissions(path: &Path) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyringError::Io {
        path: path.into(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::Permissions {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil-from-days algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn remove_version() {
        let mut k = Keyring::generate(1).unwrap();
        k.add_version(2).unwrap();
        k.add_version(3).unwrap();
        assert_eq!(k.remove_version(3), Err(RemoveError::Active(3)));
        assert_eq!(k.remove_version(9), Err(RemoveError::Unknown(9)));
        assert_eq!(k.remove_version(1), Ok(()));
        assert!(!k.has_version(1));
        assert!(k.has_version(2));
        assert_eq!(k.remove_version(1), Err(RemoveError::Unknown(1)));
        let versions: Vec<u32> = k.list().iter().map(|i| i.version).collect();
        assert_eq!(versions, [2, 3]);
        // New versions number from the highest present one.
        assert_eq!(k.add_version(4).unwrap(), 4);
        // The saved and reloaded keyring keeps the removal.
        let back = Keyring::parse(std::path::Path::new("k"), k.to_json().as_bytes()).unwrap();
        assert_eq!(back.list().len(), 3);
        assert!(!back.has_version(1));
        assert_eq!(back.active_version(), 4);
    }
}
