//! Self-signed test certificates (rcgen): one CA and a leaf for localhost.
use std::path::{Path, PathBuf};

use crate::TestkitError;

/// A CA and a server certificate for `localhost` / `127.0.0.1`, written as PEM files.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ca_pem: String,
}

impl TestCerts {
    /// Generate fresh certificates into `dir`, naming the files `<prefix>-*.pem`.
    pub fn generate(dir: &Path, prefix: &str) -> Result<TestCerts, TestkitError> {
        TestCerts::generate_for(dir, prefix, &["localhost", "127.0.0.1"])
    }

    /// [`TestCerts::generate`] with a server certificate valid for `names` only.
    pub fn generate_for(
        dir: &Path,
        prefix: &str,
        names: &[&str],
    ) -> Result<TestCerts, TestkitError> {
        let err = |e: rcgen::Error| TestkitError::Certificate(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(err)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("pgveil test CA {prefix}"),
        );
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let ca_issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

        let leaf_key = rcgen::KeyPair::generate().map_err(err)?;
        let mut leaf_params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(err)?;
        leaf_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_issuer).map_err(err)?;

        let certs = TestCerts {
            ca_cert: dir.join(format!("{prefix}-ca.pem")),
            server_cert: dir.join(format!("{prefix}-server.pem")),
            server_key: dir.join(format!("{prefix}-server.key")),
            ca_pem: ca_cert.pem(),
        };
        write(&certs.ca_cert, &certs.ca_pem)?;
        write(&certs.server_cert, &leaf_cert.pem())?;
        write(&certs.server_key, &leaf_key.serialize_pem())?;
        set_mode(&certs.server_key, 0o600)?;
        Ok(certs)
    }
}

fn write(path: &Path, text: &str) -> Result<(), TestkitError> {
    std::fs::write(path, text).map_err(|e| TestkitError::io(format!("write {}", path.display()), e))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), TestkitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| TestkitError::io(format!("chmod {}", path.display()), e))
}
