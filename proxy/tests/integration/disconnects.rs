//! How sessions end, byte for byte: after Terminate the client gets nothing
//! but EOF, whichever close reaches pgveil first (issue 11).
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Everything the client still receives, until EOF (a reset is a failure).
async fn rest_of_stream(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("pgveil must close the connection")
        .expect("a clean EOF, not a reset");
    out
}

fn assert_no_session_errors(metrics: &str) {
    assert!(
        nonzero(metrics, "pgveil_session_errors_total{").is_empty(),
        "a clean close was counted as an error:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_then_server_closes_first_gives_only_eof() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    for in_transaction in [false, true] {
        let mut raw = Raw::login(&proxy, USER).await;
        if in_transaction {
            raw.send(&fe::query("begin; select 1")).await;
            raw.until_ready().await;
        }
        raw.send(&fe::terminate()).await;
        // The socket stays open: PostgreSQL's close is the first to arrive.
        let bytes = rest_of_stream(&mut raw.stream).await;
        assert!(bytes.is_empty(), "after Terminate the client got {bytes:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_no_session_errors(&metrics_text(&proxy).await);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_before_terminate_are_delivered_then_eof() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::login(&proxy, USER).await;
    let mut batch = fe::query("select 'before'");
    batch.extend(fe::terminate());
    batch.extend(fe::query("select 'never read by PostgreSQL'"));
    raw.send(&batch).await;
    let msgs = raw.until_closed().await;
    assert_eq!(tags(&msgs), "TDCZ");
    assert_no_session_errors(&metrics_text(&proxy).await);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_as_the_first_message_gives_only_eof() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::connect(&proxy).await;
    raw.send(&fe::terminate()).await;
    let bytes = rest_of_stream(&mut raw.stream).await;
    assert!(
        bytes.is_empty(),
        "PostgreSQL sends nothing here; got {bytes:?}"
    );

    // node-postgres's end() right after connect(): Terminate, then the
    // StartupMessage it had queued. Still nothing but EOF.
    let mut raw = Raw::connect(&proxy).await;
    let mut both = fe::terminate();
    both.extend(pgveil::protocol::startup::encode_startup(&[("user", USER)]));
    raw.send(&both).await;
    let bytes = rest_of_stream(&mut raw.stream).await;
    assert!(bytes.is_empty(), "got {bytes:?}");
    assert_no_session_errors(&metrics_text(&proxy).await);
    proxy.shutdown().await;
}

/// What a client receives after `setup`, then Terminate, then waiting for
/// the close: tags and SQLSTATEs, to compare pgveil with PostgreSQL itself.
async fn transcript(addr: std::net::SocketAddr, setup: &[u8], wait_for: Option<u8>) -> String {
    let mut raw = Raw::login_at(addr, USER).await;
    raw.send(setup).await;
    if let Some(tag) = wait_for {
        while let Some(m) = raw.recv().await {
            if m.tag == tag {
                break;
            }
        }
    }
    raw.send(&fe::terminate()).await;
    raw.until_closed()
        .await
        .iter()
        .map(|m| match m.sqlstate() {
            Some(code) if m.tag == b'E' => format!("E{code} "),
            _ => format!("{} ", m.tag as char),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_mid_copy_and_mid_pipeline_matches_postgres() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let direct: std::net::SocketAddr = format!("127.0.0.1:{}", pg.port()).parse().unwrap();

    // Mid-COPY FROM STDIN: PostgreSQL itself answers Terminate with an ERROR
    // and a FATAL 08P01 (CopyGetData), which pgveil relays and does not add to.
    let mut copy = fe::query("create temp table t(x int); copy t from stdin");
    copy.extend(fe::raw(b'd', b"1\n"));
    let want = transcript(direct, &copy, Some(b'G')).await;
    assert_eq!(want, "E08P01 E08P01 ", "PostgreSQL's own answer changed");
    assert_eq!(transcript(proxy.addr, &copy, Some(b'G')).await, want);

    // Mid-pipeline: an extended-protocol batch without Sync, then Terminate.
    let mut batch = fe::parse("", "select 1");
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    let want = transcript(direct, &batch, None).await;
    assert_eq!(transcript(proxy.addr, &batch, None).await, want);

    // Inside a failed transaction block.
    let failed = fe::query("begin; select 1/0");
    let want = transcript(direct, &failed, Some(b'Z')).await;
    assert_eq!(transcript(proxy.addr, &failed, Some(b'Z')).await, want);
    assert_eq!(want, "");
    assert_no_session_errors(&metrics_text(&proxy).await);
    proxy.shutdown().await;
}
