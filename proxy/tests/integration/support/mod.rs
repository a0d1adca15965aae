//! Shared helpers: start PostgreSQL and pgveil, connect clients, speak raw protocol.
#![allow(dead_code)]
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use pgveil::app::RunningProxy;
use pgveil::config::{Config, UpstreamTlsMode};
use pgveil_testkit::{ClusterOptions, PgCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const USER: &str = "app";
pub const PASSWORD: &str = "s3cret pass";

/// Start PostgreSQL; panics with the testkit's message (an install hint when
/// the binaries are missing) so the test fails loudly instead of skipping.
pub fn pg(options: ClusterOptions) -> PgCluster {
    let mut options = options;
    if options.users.is_empty() {
        options.users.push((USER.into(), PASSWORD.into()));
    }
    match PgCluster::start(options) {
        Ok(c) => c,
        Err(e) => panic!("cannot start PostgreSQL for the test: {e}"),
    }
}

pub fn pg_trust() -> PgCluster {
    pg(ClusterOptions::default())
}

/// A config pointing at `cluster`, on ephemeral ports.
pub fn config_for(cluster: &PgCluster) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: Some("127.0.0.1:0".into()),
        shutdown_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    c.upstream.host = cluster.host().into();
    c.upstream.port = cluster.port();
    c.upstream.tls_mode = UpstreamTlsMode::Disable;
    c
}

pub async fn proxy_for(cluster: &PgCluster) -> RunningProxy {
    proxy_with(config_for(cluster)).await
}

pub async fn proxy_with(config: Config) -> RunningProxy {
    match RunningProxy::start(config).await {
        Ok(p) => p,
        Err(e) => panic!("cannot start pgveil: {e:#}"),
    }
}

pub fn conninfo(proxy: &RunningProxy, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={} password='{}' dbname=postgres sslmode=disable connect_timeout=10",
        proxy.addr.port(),
        user,
        password.replace('\'', "\\'")
    )
}

/// Connect tokio-postgres through the proxy and drive the connection in the background.
pub async fn client(proxy: &RunningProxy) -> tokio_postgres::Client {
    client_as(proxy, USER, PASSWORD).await
}

pub async fn client_as(proxy: &RunningProxy, user: &str, password: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&conninfo(proxy, user, password), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect through pgveil as {user}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Connect directly to PostgreSQL as the superuser (to check what is stored).
/// Start `select pg_sleep(30)` on `c`, cancel it through the client's cancel
/// token after 500 ms, and check it ends with 57014 well before 30 s.
pub async fn cancel_a_sleeping_query(c: tokio_postgres::Client) {
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .unwrap()
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

pub async fn direct(cluster: &PgCluster) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &cluster.superuser_conninfo("postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("direct connection to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub async fn metrics_text(proxy: &RunningProxy) -> String {
    http_get(proxy.metrics_addr.expect("metrics enabled"), "/metrics")
        .await
        .1
}

/// Minimal HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to metrics endpoint");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read response");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A raw protocol connection, for exact control over what goes on the wire.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    pub fn field(&self, kind: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&k, tail)) = rest.split_first() {
            if k == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if k == kind {
                return Some(String::from_utf8_lossy(&tail[..end]).to_string());
            }
            rest = &tail[end + 1..];
        }
        None
    }
}

impl Raw {
    pub async fn connect(proxy: &RunningProxy) -> Raw {
        Raw::connect_to(proxy.addr).await
    }

    /// Connect to any address: pgveil, or PostgreSQL itself for comparison.
    pub async fn connect_to(addr: std::net::SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connect and log in as the superuser over trust; returns after ReadyForQuery.
    pub async fn login(proxy: &RunningProxy, user: &str) -> Raw {
        Raw::login_at(proxy.addr, user).await
    }

    /// Log in over trust at any address; returns after ReadyForQuery.
    pub async fn login_at(addr: std::net::SocketAddr, user: &str) -> Raw {
        let mut raw = Raw::connect_to(addr).await;
        let startup =
            pgveil::protocol::startup::encode_startup(&[("user", user), ("database", "postgres")]);
        raw.send(&startup).await;
        loop {
            let m = raw.recv().await.expect("message during login");
            match m.tag {
                b'Z' => break,
                b'E' => panic!("login failed: {:?}", m.field(b'M')),
                _ => {}
            }
        }
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to pgveil");
    }

    /// Next message, or None when the connection is closed.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Some(Msg { tag, body });
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(30), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("timed out waiting for pgveil");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Read messages until ReadyForQuery (inclusive).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Read until the connection closes.
    pub async fn until_closed(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            out.push(m);
        }
        out
    }
}

/// Frontend message builders.
pub mod fe {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        b.to_vec()
    }

    fn cstr(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, sql);
        msg(b'Q', &b)
    }

    /// A Query of raw bytes (text in a legacy client encoding).
    pub fn query_bytes(sql: &[u8]) -> Vec<u8> {
        let mut b = sql.to_vec();
        b.push(0);
        msg(b'Q', &b)
    }

    /// A Parse with a raw statement name and text.
    pub fn parse_bytes(name: &[u8], sql: &[u8]) -> Vec<u8> {
        let mut b = name.to_vec();
        b.push(0);
        b.extend_from_slice(sql);
        b.push(0);
        b.extend_from_slice(&0i16.to_be_bytes());
        msg(b'P', &b)
    }

    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, name);
        cstr(&mut b, sql);
        b.extend_from_slice(&0i16.to_be_bytes());
        msg(b'P', &b)
    }

    /// Bind text parameters; `binary_results` asks for binary result columns.
    pub fn bind(
        portal: &str,
        stmt: &str,
        params: &[Option<&str>],
        binary_results: bool,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        cstr(&mut b, stmt);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        if binary_results {
            b.extend_from_slice(&1i16.to_be_bytes());
            b.extend_from_slice(&1i16.to_be_bytes());
        } else {
            b.extend_from_slice(&0i16.to_be_bytes());
        }
        msg(b'B', &b)
    }

    pub fn describe_portal(portal: &str) -> Vec<u8> {
        let mut b = vec![b'P'];
        cstr(&mut b, portal);
        msg(b'D', &b)
    }

    pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        b.extend_from_slice(&max_rows.to_be_bytes());
        msg(b'E', &b)
    }

    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    pub fn terminate() -> Vec<u8> {
        msg(b'X', &[])
    }

    pub fn raw(tag: u8, body: &[u8]) -> Vec<u8> {
        msg(tag, body)
    }
}

/// Tags of a message list, as a string for readable assertions.
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// Path of the psql binary next to the server binaries, or on PATH.
pub fn psql() -> std::path::PathBuf {
    match pgveil_testkit::find_bindir() {
        Ok(b) => b.psql(),
        Err(e) => panic!("{e}"),
    }
}

/// The lines of `/metrics` text whose name starts with `prefix` and whose value is not 0
/// (pgveil creates its labelled counters at 0, so presence alone says nothing).
pub fn nonzero<'m>(metrics: &'m str, prefix: &str) -> Vec<&'m str> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
        .collect()
}

pub mod python;
pub mod read_fixture;
pub mod write_fixture;
