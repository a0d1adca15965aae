//! TLS on the client leg (pgveil terminates it) and on the upstream leg.
use pgveil::config::{ClientTlsConfig, UpstreamTlsMode};
use pgveil_testkit::{AuthMethod, ClusterOptions, TestCerts};

use crate::support::*;

fn tls_pg(auth: AuthMethod) -> pgveil_testkit::PgCluster {
    pg(ClusterOptions {
        auth,
        tls: true,
        tls_only: true,
        ..Default::default()
    })
}

async fn run_psql(
    port: u16,
    conn_extra: &str,
    password: &str,
    sql: &str,
) -> (bool, String, String) {
    let conninfo = format!("host=localhost port={port} user={USER} dbname=postgres {conn_extra}");
    let out = tokio::process::Command::new(psql())
        .args(["-X", "-A", "-t", "-d", &conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_on_both_legs_with_a_different_certificate() {
    let pg = tls_pg(AuthMethod::ScramSha256);
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path(), "proxy").unwrap();
    let mut config = config_for(&pg);
    config.client_tls = Some(ClientTlsConfig {
        cert_file: certs.server_cert.clone(),
        key_file: certs.server_key.clone(),
    });
    config.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
    config.upstream.ca_file = pg.certs().map(|c| c.ca_cert.clone());
    let proxy = proxy_with(config).await;
    let verify = format!(
        "sslmode=verify-full sslrootcert={}",
        certs.ca_cert.display()
    );

    // pgveil's own certificate verifies; SCRAM-SHA-256-PLUS is not offered, and
    // a client that leaves channel binding off logs in over TLS on both legs.
    let (ok, stdout, stderr) = run_psql(
        proxy.addr.port(),
        &format!("{verify} channel_binding=disable"),
        PASSWORD,
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    )
    .await;
    assert!(ok, "psql failed: {stderr}");
    assert_eq!(stdout, "t", "the upstream leg must be TLS");

    // libpq's default (channel_binding=prefer) would be refused by the server as a
    // downgrade; pgveil says why and what to do instead.
    let (ok, _, stderr) = run_psql(proxy.addr.port(), &verify, PASSWORD, "select 1").await;
    assert!(!ok);
    assert!(
        stderr.contains("channel binding cannot pass through pgveil"),
        "{stderr}"
    );

    // A client without TLS on its leg is unaffected (the upstream stays TLS).
    let (ok, stdout, stderr) =
        run_psql(proxy.addr.port(), "sslmode=disable", PASSWORD, "select 7").await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "7");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_passes_through_with_the_servers_certificate() {
    let pg = tls_pg(AuthMethod::ScramSha256);
    let pg_certs = pg.certs().expect("TLS cluster").clone();
    let mut config = config_for(&pg);
    config.client_tls = Some(ClientTlsConfig {
        cert_file: pg_certs.server_cert.clone(),
        key_file: pg_certs.server_key.clone(),
    });
    config.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
    config.upstream.ca_file = Some(pg_certs.ca_cert.clone());
    let proxy = proxy_with(config).await;
    let verify = format!(
        "sslmode=verify-full sslrootcert={}",
        pg_certs.ca_cert.display()
    );
    // Same certificate on both legs: tls-server-end-point matches, so even
    // channel_binding=require works end to end.
    for binding in ["prefer", "require"] {
        let (ok, stdout, stderr) = run_psql(
            proxy.addr.port(),
            &format!("{verify} channel_binding={binding}"),
            PASSWORD,
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        )
        .await;
        assert!(ok, "channel_binding={binding}: {stderr}");
        assert_eq!(stdout, "t");
    }
    let (ok, _, _) = run_psql(proxy.addr.port(), &verify, "wrong", "select 1").await;
    assert!(!ok, "a wrong password must still fail");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_prefer_and_require_use_tls_when_offered() {
    let pg = tls_pg(AuthMethod::Md5);
    for mode in [UpstreamTlsMode::Prefer, UpstreamTlsMode::Require] {
        let mut config = config_for(&pg);
        config.upstream.tls_mode = mode;
        let proxy = proxy_with(config).await;
        let c = client(&proxy).await;
        let ssl: bool = c
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{mode:?}");
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_failures_are_reported_to_the_client() {
    // Server without TLS, pgveil requires it.
    let plain = pg_trust();
    let mut config = config_for(&plain);
    config.upstream.tls_mode = UpstreamTlsMode::Require;
    let proxy = proxy_with(config).await;
    let err = tokio_postgres::connect(&conninfo(&proxy, USER, PASSWORD), tokio_postgres::NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(err.code().map(|c| c.code()), Some("08001"), "{err:?}");
    assert!(
        format!("{err:?}").contains("does not support TLS"),
        "{err:?}"
    );
    proxy.shutdown().await;

    // Server with TLS, but pgveil trusts a different CA.
    let tls = tls_pg(AuthMethod::Trust);
    let dir = tempfile::tempdir().unwrap();
    let other = TestCerts::generate(dir.path(), "other").unwrap();
    let mut config = config_for(&tls);
    config.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
    config.upstream.ca_file = Some(other.ca_cert.clone());
    let proxy = proxy_with(config).await;
    let err = tokio_postgres::connect(&conninfo(&proxy, USER, PASSWORD), tokio_postgres::NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(err.code().map(|c| c.code()), Some("08001"), "{err:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_tls_support_on_proxy_gets_n() {
    // No certificate configured: sslmode=require must fail, prefer must fall back.
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let (ok, _, stderr) =
        run_psql(proxy.addr.port(), "sslmode=require", PASSWORD, "select 1").await;
    assert!(!ok);
    assert!(stderr.contains("does not support SSL"), "{stderr}");
    let (ok, stdout, stderr) =
        run_psql(proxy.addr.port(), "sslmode=prefer", PASSWORD, "select 1").await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "1");
    proxy.shutdown().await;
}

/// A policy over TLS to the server (managed PostgreSQL insists on it): the catalog connection
/// dials as the sessions do, with the same mode, CA and host name check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reads_the_catalog_over_tls() {
    use crate::support::write_fixture::{assert_stored_ciphertext, policy_files, POLICY};
    let pg = tls_pg(AuthMethod::Trust);
    let db = direct(&pg).await;
    db.batch_execute(
        "create role writer_app login; create role catalog_login login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let files = policy_files(POLICY);
    for (i, mode) in [UpstreamTlsMode::Require, UpstreamTlsMode::VerifyFull]
        .into_iter()
        .enumerate()
    {
        let mut config = config_for(&pg);
        config.upstream.host = "localhost".into();
        config.upstream.tls_mode = mode;
        config.upstream.ca_file = pg.certs().map(|c| c.ca_cert.clone());
        // A login that may connect over TLS only (hostssl): the catalog must use TLS.
        config.enforcement = Some(pgveil::config::EnforcementConfig::new(
            files.policy.clone(),
            files.keyring.clone(),
            "catalog_login",
        ));
        let proxy = proxy_with(config).await;
        let c = client_as(&proxy, "writer_app", "").await;
        let phone = format!("1391234567{i}");
        c.execute(
            "insert into customers (id, phone) values ($1, $2)",
            &[&(i as i32), &phone],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: {e:?}"));
        let back: String = c
            .query_one("select phone from customers where phone = $1", &[&phone])
            .await
            .unwrap()
            .get(0);
        assert_eq!(back, phone, "{mode:?}");
        let catalog_ssl: Vec<bool> = db
            .query(
                "select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid)
                  where a.application_name = 'pgveil-catalog' and a.usename = 'catalog_login'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(catalog_ssl, vec![true], "{mode:?}: the catalog connection");
        assert_stored_ciphertext(&pg, &files.keyring, &[phone]).await;
        proxy.shutdown().await;
    }

    // A certificate for another host name: verify-full refuses it, on every leg, and says why.
    let other = crate::support::pg(ClusterOptions {
        auth: AuthMethod::Trust,
        tls: true,
        tls_only: true,
        tls_names: vec!["db.internal".into()],
        ..Default::default()
    });
    let mut config = config_for(&other);
    config.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
    config.upstream.ca_file = other.certs().map(|c| c.ca_cert.clone());
    config.enforcement = Some(pgveil::config::EnforcementConfig::new(
        files.policy.clone(),
        files.keyring.clone(),
        "postgres",
    ));
    let proxy = proxy_with(config).await;
    let err = tokio_postgres::connect(&conninfo(&proxy, "postgres", ""), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a certificate for db.internal must not verify for 127.0.0.1");
    assert_eq!(err.code().map(|c| c.code()), Some("08001"), "{err:?}");
    assert!(format!("{err:?}").contains("certificate"), "{err:?}");
    proxy.shutdown().await;
}
