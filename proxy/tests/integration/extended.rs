//! The extended protocol: named and unnamed statements, reuse, pipelines,
//! binary formats, and errors in the middle of a pipeline.
use futures_util::future::join_all;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_reused_and_binary_results() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    // tokio-postgres prepares named statements and asks for binary results.
    let stmt = c
        .prepare("select $1::int8 * 2, $2::text || '!', $3::bytea, now()::timestamptz, 1.5::float8, true, null::int4")
        .await
        .unwrap();
    for i in 0..5i64 {
        let row = c
            .query_one(&stmt, &[&i, &"hi", &vec![0u8, 1, 255]])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i * 2);
        assert_eq!(row.get::<_, &str>(1), "hi!");
        assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 1, 255]);
        assert_eq!(row.get::<_, f64>(4), 1.5);
        assert!(row.get::<_, bool>(5));
        assert_eq!(row.get::<_, Option<i32>>(6), None);
    }
    // Unnamed statements (query_typed uses the unnamed statement every time).
    for i in 0..5i32 {
        let rows = c
            .query_typed("select $1 + 1", &[(&i, tokio_postgres::types::Type::INT4)])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), i + 1);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_unnamed_statement_reuse_in_one_pipeline() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::login(&proxy, USER).await;
    let mut batch = Vec::new();
    for sql in ["select 'first'", "select 'second'", "select $1::text"] {
        batch.extend(fe::parse("", sql));
        let params: &[Option<&str>] = if sql.contains("$1") {
            &[Some("third")]
        } else {
            &[]
        };
        batch.extend(fe::bind("", "", params, false));
        batch.extend(fe::execute("", 0));
    }
    // A named statement defined, used twice, then redefined after a Close.
    batch.extend(fe::parse("s1", "select 10"));
    batch.extend(fe::bind("", "s1", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::bind("", "s1", &[], true));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::raw(b'C', b"Ss1\0"));
    batch.extend(fe::parse("s1", "select 20"));
    batch.extend(fe::bind("", "s1", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "12DC12DC12DC12DC2DC312DCZ");
    let data: Vec<Vec<u8>> = msgs
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.body[6..].to_vec())
        .collect();
    assert_eq!(data[0], b"first");
    assert_eq!(data[1], b"second");
    assert_eq!(data[2], b"third");
    assert_eq!(data[3], b"10");
    assert_eq!(data[4], 10i32.to_be_bytes()); // binary result
    assert_eq!(data[5], b"20");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_pipeline_then_recovery() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::login(&proxy, USER).await;
    let mut batch = Vec::new();
    batch.extend(fe::parse("", "select 1"));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::parse("", "select 1 / (random() * 0)::int"));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    // Skipped by the server until Sync:
    batch.extend(fe::parse("", "select 3"));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    // The next batch after Sync runs normally.
    batch.extend(fe::parse("", "select 4"));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let first = raw.until_ready().await;
    assert_eq!(tags(&first), "12DC12EZ");
    let err = first.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.sqlstate().as_deref(), Some("22012"));
    let second = raw.until_ready().await;
    assert_eq!(tags(&second), "12DCZ");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelines_with_a_failing_member() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    let stmt = c.prepare("select 100 / $1::int").await.unwrap();
    // Polled together, these queries are pipelined on one connection.
    let divisors: Vec<i32> = vec![1, 2, 0, 4, 5, 0, 10];
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        divisors.iter().map(|d| [d as _]).collect();
    let futures = params.iter().map(|p| c.query_one(&stmt, p));
    let results = join_all(futures).await;
    for (d, r) in divisors.iter().zip(results) {
        match d {
            0 => assert_eq!(r.unwrap_err().code().map(|c| c.code()), Some("22012")),
            d => assert_eq!(r.unwrap().get::<_, i32>(0), 100 / d),
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_suspension_with_row_limits() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::login(&proxy, USER).await;
    let mut batch = Vec::new();
    batch.extend(fe::query("begin"));
    raw.send(&batch).await;
    raw.until_ready().await;
    let mut batch = Vec::new();
    batch.extend(fe::parse("", "select generate_series(1, 5)"));
    batch.extend(fe::bind("p", "", &[], false));
    batch.extend(fe::describe_portal("p"));
    batch.extend(fe::execute("p", 2));
    batch.extend(fe::execute("p", 2));
    batch.extend(fe::execute("p", 2));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "12TDDsDDsDCZ");
    proxy.shutdown().await;
}
