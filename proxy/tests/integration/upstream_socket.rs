//! pgveil co-located with PostgreSQL: the upstream leg over the server's
//! Unix-domain socket (`upstream.host` is a directory, as in libpq).
use pgveil::config::UpstreamTlsMode;
use pgveil_testkit::PgCluster;

use crate::support::*;

/// A proxy whose upstream is `pg`'s socket directory. The TLS mode stays at
/// the default `prefer`, which (as in libpq) means no TLS over a local socket.
async fn proxy_over_socket(pg: &PgCluster) -> pgveil::app::RunningProxy {
    let mut config = config_for(pg);
    config.upstream.host = pg.socket_dir().display().to_string();
    config.upstream.tls_mode = UpstreamTlsMode::Prefer;
    proxy_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reach_postgres_over_its_unix_socket() {
    let pg = pg_trust();
    let proxy = proxy_over_socket(&pg).await;
    let c = client(&proxy).await;

    // The backend sees a local connection: no client address, no SSL.
    let row = c
        .query_one(
            "select inet_client_addr() is null, \
                    (select ssl from pg_stat_ssl where pid = pg_backend_pid()), \
                    $1::int + 1",
            &[&41i32],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the backend saw a TCP client");
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), 42);

    // Extended protocol, a pipeline and a multi-statement simple query all
    // cross the socket.
    c.batch_execute("create table s(id int primary key, v text); insert into s values (1, 'a')")
        .await
        .unwrap();
    let stmt = c.prepare("select v from s where id = $1").await.unwrap();
    let (a, b) = tokio::join!(c.query_one(&stmt, &[&1i32]), c.query(&stmt, &[&2i32]));
    assert_eq!(a.unwrap().get::<_, String>(0), "a");
    assert!(b.unwrap().is_empty());

    let metrics_addr = proxy.metrics_addr.unwrap();
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_readiness_use_the_socket_too() {
    let mut pg = pg_trust();
    let proxy = proxy_over_socket(&pg).await;
    let c = client(&proxy).await;
    cancel_a_sleeping_query(c).await;

    // With PostgreSQL down, readiness fails and a new client is told which
    // socket could not be reached.
    let metrics_addr = proxy.metrics_addr.unwrap();
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 503);
    let down = tokio_postgres::connect(&conninfo(&proxy, USER, PASSWORD), tokio_postgres::NoTls)
        .await
        .err()
        .expect("no upstream");
    assert_eq!(down.code().map(|c| c.code()), Some("08001"), "{down}");
    let socket = format!(".s.PGSQL.{}", pg.port());
    let message = down.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(message.contains(&socket), "{message}");

    tokio::task::block_in_place(|| pg.restart()).unwrap();
    let again = client(&proxy).await;
    assert_eq!(again.simple_query("select 2").await.unwrap().len(), 3);
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 200);
    proxy.shutdown().await;
}
