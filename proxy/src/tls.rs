//! rustls configuration on the ring provider: the client-facing server side and
//! the upstream client side.
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::UpstreamTlsMode;

/// A TLS set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsError(format!("{what} {}: cannot read: {e}", path.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{what} {}: invalid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsError(format!("tls.key_file {}: cannot read: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError(format!("tls.key_file {}: invalid PEM: {e}", path.display())))?
        .ok_or_else(|| {
            TlsError(format!(
                "tls.key_file {}: no private key found",
                path.display()
            ))
        })
}

/// The server config pgveil presents to clients, and the DER of its leaf certificate.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Arc<ServerConfig>, Vec<u8>), TlsError> {
    let certs = read_certs(cert_file, "tls.cert_file")?;
    let leaf = certs
        .first()
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let key = read_key(key_file)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "tls.cert_file/tls.key_file: certificate and key do not fit: {e}"
            ))
        })?;
    Ok((Arc::new(config), leaf))
}

/// The client config pgveil uses towards the upstream server, or `None` for `disable`.
pub fn upstream_config(
    mode: UpstreamTlsMode,
    ca_file: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?;
    let config = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match ca_file {
                Some(path) => {
                    for cert in read_certs(path, "upstream.tls.ca_file")? {
                        roots.add(cert).map_err(|e| {
                            TlsError(format!(
                                "upstream.tls.ca_file {}: unusable certificate: {e}",
                                path.display()
                            ))
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// `prefer` and `require` encrypt without authenticating the server, like
/// libpq's modes of the same names. Signatures are still checked, so the
/// handshake is a real one; only the certificate chain is not.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
