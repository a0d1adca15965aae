//! Connections to the upstream PostgreSQL server, with libpq-style TLS modes.
//!
//! As in libpq, a host that starts with `/` is the directory of the server's
//! Unix-domain socket (`<dir>/.s.PGSQL.<port>`); TLS is never used there.
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use crate::config::{UpstreamConfig, UpstreamTlsMode};
use crate::protocol::startup::CancelKey;
use crate::stream::{MaybeTls, ServerStream};
use crate::tls::{upstream_config, TlsError};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Why the upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to upstream {0}")]
    Timeout(String),
    #[error("upstream {addr} does not support TLS, but upstream.tls.mode is {mode}")]
    NoTls { addr: String, mode: &'static str },
    #[error("upstream {addr}: unexpected answer {answer:#04x} to SSLRequest")]
    BadSslAnswer { addr: String, answer: u8 },
    #[error("TLS handshake with upstream {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream host {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("I/O error with upstream {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the upstream server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp {
        host: String,
        port: u16,
    },
    /// The socket file `<dir>/.s.PGSQL.<port>` of a co-located server.
    Unix(PathBuf),
}

impl crate::metrics::http::Readiness for Address {
    async fn check(&self) -> Result<(), String> {
        self.open().await.map(|_| ()).map_err(|e| e.to_string())
    }
}

impl Address {
    /// libpq's rule: a host starting with `/` names the socket directory.
    pub fn new(host: &str, port: u16) -> Address {
        if host.starts_with('/') {
            Address::Unix(PathBuf::from(host).join(format!(".s.PGSQL.{port}")))
        } else {
            Address::Tcp {
                host: host.to_string(),
                port,
            }
        }
    }

    /// Open the transport (no TLS yet): TCP with Nagle off, or the socket.
    pub async fn open(&self) -> std::io::Result<ServerStream> {
        match self {
            Address::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                let _ = tcp.set_nodelay(true);
                Ok(MaybeTls::Plain(tcp))
            }
            Address::Unix(path) => Ok(MaybeTls::Unix(UnixStream::connect(path).await?)),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Where and how to reach the upstream server.
pub struct Upstream {
    address: Address,
    mode: UpstreamTlsMode,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl Upstream {
    /// Prepare TLS for the configured mode; fails on an unreadable CA file.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, TlsError> {
        let address = Address::new(&config.host, config.port);
        // TLS is never used over a Unix-domain socket (config validation
        // refuses the modes that would require it).
        let tls = match upstream_config(config.tls_mode, config.ca_file.as_deref())? {
            Some(client) if matches!(address, Address::Tcp { .. }) => {
                Some(connector(client, &config.host)?)
            }
            _ => None,
        };
        Ok(Upstream {
            address,
            mode: config.tls_mode,
            tls,
            connect_timeout: config.connect_timeout,
        })
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// `host:port`, or the socket file's path.
    pub fn addr(&self) -> String {
        self.address.to_string()
    }

    /// Open a connection and negotiate TLS according to the mode.
    pub async fn connect(&self) -> Result<ServerStream, UpstreamError> {
        let addr = self.addr();
        let stream = tokio::time::timeout(self.connect_timeout, self.address.open())
            .await
            .map_err(|_| UpstreamError::Timeout(addr.clone()))?
            .map_err(|source| UpstreamError::Connect {
                addr: addr.clone(),
                source,
            })?;
        match (&self.tls, stream) {
            (Some((connector, name)), MaybeTls::Plain(tcp)) => {
                self.negotiate(tcp, connector, name, addr).await
            }
            (_, stream) => Ok(stream),
        }
    }

    async fn negotiate(
        &self,
        mut tcp: TcpStream,
        connector: &TlsConnector,
        name: &ServerName<'static>,
        addr: String,
    ) -> Result<ServerStream, UpstreamError> {
        let io = |source| UpstreamError::Io {
            addr: addr.clone(),
            source,
        };
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        let answer = tcp.read_u8().await.map_err(io)?;
        match answer {
            b'S' => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| UpstreamError::Handshake {
                        addr: addr.clone(),
                        source,
                    })?;
                Ok(MaybeTls::Tls(Box::new(tls)))
            }
            b'N' if self.mode == UpstreamTlsMode::Prefer => Ok(MaybeTls::Plain(tcp)),
            b'N' => Err(UpstreamError::NoTls {
                addr,
                mode: self.mode.name(),
            }),
            other => Err(UpstreamError::BadSslAnswer {
                addr,
                answer: other,
            }),
        }
    }

    /// Send a CancelRequest for `key` and wait for the server to close.
    pub async fn cancel(&self, key: &CancelKey) -> Result<(), UpstreamError> {
        let mut stream = self.connect().await?;
        let addr = self.addr();
        let io = |source| UpstreamError::Io {
            addr: addr.clone(),
            source,
        };
        stream.write_all(&key.cancel_request()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }
}

fn connector(
    client: Arc<ClientConfig>,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), TlsError> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        TlsError(format!(
            "upstream.host {host:?} is not a valid TLS server name"
        ))
    })?;
    Ok((TlsConnector::from(client), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_starting_with_slash_is_a_socket_directory() {
        let socket = Address::new("/var/run/postgresql", 5433);
        assert_eq!(
            socket,
            Address::Unix(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))
        );
        assert_eq!(socket.to_string(), "/var/run/postgresql/.s.PGSQL.5433");
        for host in ["127.0.0.1", "db.internal"] {
            let tcp = Address::new(host, 5432);
            assert!(matches!(tcp, Address::Tcp { .. }), "{tcp:?}");
            assert_eq!(tcp.to_string(), format!("{host}:5432"));
        }
    }
}
