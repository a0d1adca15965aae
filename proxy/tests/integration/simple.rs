//! Simple-protocol traffic through pgveil: queries, multi-statement queries,
//! transactions, COPY, LISTEN/NOTIFY, cancel, large results, many clients.
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

use crate::support::*;

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_multi_statement_queries() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;

    let one = c
        .simple_query("select 1 as one, 'two' as two, null as three")
        .await
        .unwrap();
    assert_eq!(
        rows(&one),
        vec![vec![Some("1".into()), Some("two".into()), None]]
    );

    let multi = c
        .simple_query("create temp table t(x int); insert into t values (1),(2),(3); select sum(x) from t; select 'done'")
        .await
        .unwrap();
    assert_eq!(
        rows(&multi),
        vec![vec![Some("6".into())], vec![Some("done".into())]]
    );
    let completes = multi
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 4);

    // An error in the middle of a multi-statement query stops the rest.
    let err = c
        .simple_query("select 1; select 1/0; select 3")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    let after = c.simple_query("select 'still fine'").await.unwrap();
    assert_eq!(rows(&after), vec![vec![Some("still fine".into())]]);

    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains("pgveil_queries_total{command=\"SELECT\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgveil_queries_total{command=\"SELECT\",outcome=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgveil_query_duration_seconds_count{scope=\"end_to_end\"}"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_failed_transaction_state() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut c = client(&proxy).await;
    c.batch_execute(
        "create table acct(id int primary key, balance int); insert into acct values (1, 100)",
    )
    .await
    .unwrap();

    // Committed transaction.
    let tx = c.transaction().await.unwrap();
    tx.execute("update acct set balance = balance - 10 where id = 1", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Rolled-back transaction.
    let tx = c.transaction().await.unwrap();
    tx.execute("update acct set balance = 0 where id = 1", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // Failed transaction: every statement is refused until ROLLBACK.
    c.batch_execute("begin").await.unwrap();
    assert!(c
        .batch_execute("insert into acct values (1, 1)")
        .await
        .is_err());
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("25P02"));
    c.batch_execute("rollback").await.unwrap();

    let balance: i32 = c
        .query_one("select balance from acct where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 90);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    c.batch_execute("create table items(id int, label text)")
        .await
        .unwrap();

    let sink = c.copy_in("copy items from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..50_000 {
        chunk.push_str(&format!("{i}\tlabel \\t{i}\n"));
        if chunk.len() > 60_000 {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 50_000);

    let stream = c
        .copy_out("copy (select * from items order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.map(|r| r.unwrap()).collect().await;
    let all: Vec<u8> = chunks.concat();
    let text = String::from_utf8(all).unwrap();
    assert_eq!(text.lines().count(), 50_000);
    assert_eq!(text.lines().next(), Some("0\tlabel \\t0"));

    // Stored exactly as sent, checked directly in PostgreSQL.
    let d = direct(&pg).await;
    let n: i64 = d
        .query_one(
            "select count(*) from items where label like 'label \t%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50_000);

    // A failing COPY leaves the session usable.
    let sink = c
        .copy_in::<_, Bytes>("copy items from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());
    let n: i64 = c
        .query_one("select count(*) from items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50_000);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let (listener, mut conn) =
        tokio_postgres::connect(&conninfo(&proxy, USER, PASSWORD), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            if let AsyncMessage::Notification(n) = msg {
                if tx
                    .send((n.channel().to_string(), n.payload().to_string()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    listener.batch_execute("listen shipments").await.unwrap();
    let notifier = client(&proxy).await;
    notifier
        .batch_execute("notify shipments, 'SF1234567890123 picked up'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        (
            "shipments".to_string(),
            "SF1234567890123 picked up".to_string()
        )
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_backend() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    let bystander = client(&proxy).await;
    cancel_a_sleeping_query(c).await;
    // The other session was not cancelled.
    assert_eq!(bystander.simple_query("select 1").await.unwrap().len(), 3);
    // The forwarding task counts the request once the server has closed the cancel connection.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = metrics_text(&proxy).await;
        if metrics.contains("pgveil_cancel_requests_total{result=\"forwarded\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("pgveil_cancel_requests_total{result=\"forwarded\"} 1"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_result_streams_through() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    let stmt = c
        .prepare("select g, repeat('x', 20) from generate_series(1, 1000000) g")
        .await
        .unwrap();
    let stream = c.query_raw(&stmt, std::iter::empty::<i32>()).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut count = 0u64;
    let mut sum = 0i64;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        sum += row.get::<_, i32>(0) as i64;
        count += 1;
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 500_000_500_000);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_clients() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let setup = client(&proxy).await;
    setup
        .batch_execute("create table hits(client int, n int)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let info = conninfo(&proxy, USER, PASSWORD);
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for n in 0..20 {
                c.execute("insert into hits values ($1, $2)", &[&i, &n])
                    .await
                    .unwrap();
            }
            let mine: i64 = c
                .query_one("select count(*) from hits where client = $1", &[&i])
                .await
                .unwrap()
                .get(0);
            assert_eq!(mine, 20);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total: i64 = setup
        .query_one("select count(*) from hits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 2000);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_the_proxy() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let port = proxy.addr.port().to_string();
    let out = tokio::process::Command::new(psql())
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            USER,
            "-d",
            "postgres",
        ])
        .args([
            "-c",
            "select 40 + 2",
            "-c",
            "\\copy (select 'a\tb') to stdout",
        ])
        .env("PGSSLMODE", "disable")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\na\\tb\n");
    proxy.shutdown().await;
}
