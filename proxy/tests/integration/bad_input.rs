//! Hostile or broken clients: each case closes only its own session, with
//! ErrorResponse 08P01 where the protocol allows one, and never panics.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// After each bad client, a well-behaved one must still be served.
async fn still_serving(proxy: &pgveil::app::RunningProxy) {
    let c = client(proxy).await;
    let rows = c.simple_query("select 1").await.unwrap();
    assert_eq!(rows.len(), 3);
}

fn assert_protocol_violation(msgs: &[Msg]) {
    let last = msgs.last().expect("an ErrorResponse before the close");
    assert_eq!(last.tag, b'E', "got {}", tags(msgs));
    assert_eq!(
        last.sqlstate().as_deref(),
        Some("08P01"),
        "{:?}",
        last.field(b'M')
    );
    assert_eq!(last.field(b'S').as_deref(), Some("FATAL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_connect() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::connect(&proxy).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: pgveil\r\n\r\n").await;
    assert_protocol_violation(&raw.until_closed().await);

    let mut raw = Raw::connect(&proxy).await;
    raw.send(&[0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 0]).await; // unknown protocol code
    let msgs = raw.until_closed().await;
    assert_eq!(
        msgs.last().and_then(|m| m.sqlstate()).as_deref(),
        Some("0A000")
    );
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_negative_lengths() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    // In the startup packet.
    let mut raw = Raw::connect(&proxy).await;
    raw.send(&0x7fff_fff0u32.to_be_bytes()).await;
    assert_protocol_violation(&raw.until_closed().await);
    let mut raw = Raw::connect(&proxy).await;
    raw.send(&(-5i32).to_be_bytes()).await;
    assert_protocol_violation(&raw.until_closed().await);

    // In an established session: over 1 GiB, and negative.
    for len in [0x4000_0001i32, -1, 3] {
        let mut raw = Raw::login(&proxy, USER).await;
        let mut bad = vec![b'Q'];
        bad.extend_from_slice(&len.to_be_bytes());
        raw.send(&bad).await;
        let msgs = raw.until_closed().await;
        assert_protocol_violation(&msgs);
    }
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_tag() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::login(&proxy, USER).await;
    raw.send(&fe::raw(0xff, b"whatever")).await;
    let msgs = raw.until_closed().await;
    assert_protocol_violation(&msgs);
    assert!(msgs.last().unwrap().field(b'M').unwrap().contains("255"));

    // Valid frames before the bad one are still delivered.
    let mut raw = Raw::login(&proxy, USER).await;
    let mut batch = fe::query("select 'before'");
    batch.extend(fe::raw(b'p', b"late password"));
    raw.send(&batch).await;
    let msgs = raw.until_closed().await;
    assert!(tags(&msgs).starts_with("TDCZ"), "{}", tags(&msgs));
    assert_protocol_violation(&msgs);
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_message_and_mid_startup_disconnect() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    // Truncated in an established session: the client half-closes mid-message.
    let mut raw = Raw::login(&proxy, USER).await;
    let mut q = fe::query("select 'this message is cut short'");
    q.truncate(12);
    raw.send(&q).await;
    raw.stream.shutdown().await.unwrap();
    let msgs = raw.until_closed().await;
    assert!(msgs.iter().all(|m| m.tag != b'D'));

    // Truncated startup packet, then gone.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u']).await.unwrap();
    drop(s);

    // Gone after four bytes.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0]).await.unwrap();
    drop(s);

    // Gone without a byte.
    drop(TcpStream::connect(proxy.addr).await.unwrap());

    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serving(&proxy).await;
    let metrics = metrics_text(&proxy).await;
    assert!(
        !nonzero(
            &metrics,
            "pgveil_session_errors_total{kind=\"client_disconnect\"}"
        )
        .is_empty(),
        "{metrics}"
    );
    assert!(
        nonzero(&metrics, "pgveil_session_errors_total{kind=\"panic\"}").is_empty(),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_answers_53300() {
    let pg = pg_trust();
    let mut config = config_for(&pg);
    config.max_client_connections = 2;
    let proxy = proxy_with(config).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    let err = tokio_postgres::connect(&conninfo(&proxy, USER, PASSWORD), tokio_postgres::NoTls)
        .await
        .err()
        .expect("third client refused");
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client(&proxy).await; // a slot is free again
    assert_eq!(c.simple_query("select 1").await.unwrap().len(), 3);
    assert_eq!(b.simple_query("select 1").await.unwrap().len(), 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_startup_timeout() {
    let pg = pg_trust();
    let mut config = config_for(&pg);
    config.startup_timeout = Duration::from_millis(500);
    let proxy = proxy_with(config).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("pgveil must close the silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    still_serving(&proxy).await;
    proxy.shutdown().await;
}
