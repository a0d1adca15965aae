//! Upstream failures, metrics endpoint, idle timeout, graceful shutdown and
//! the binary's command line.
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_session_then_back() {
    let mut pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    assert_eq!(c.simple_query("select 1").await.unwrap().len(), 3);
    let metrics_addr = proxy.metrics_addr.unwrap();
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 200);

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let err = c.simple_query("select 1").await.unwrap_err();
    assert!(c.is_closed() || err.code().is_some(), "{err}");
    // While PostgreSQL is down, new clients get a clear error and readiness fails.
    let down = tokio_postgres::connect(&conninfo(&proxy, USER, PASSWORD), tokio_postgres::NoTls)
        .await
        .err()
        .expect("no upstream");
    assert_eq!(down.code().map(|c| c.code()), Some("08001"), "{down}");
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 503);
    assert_eq!(http_get(metrics_addr, "/healthz").await.0, 200);

    tokio::task::block_in_place(|| pg.restart()).unwrap();
    let again = client(&proxy).await;
    assert_eq!(again.simple_query("select 2").await.unwrap().len(), 3);
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_documented_series() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    c.batch_execute("create temp table m(x int); insert into m values (1)")
        .await
        .unwrap();
    let (status, text) = http_get(proxy.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "pgveil_connections_active 1",
        "pgveil_connections_total 1",
        "pgveil_client_received_bytes_total",
        "pgveil_client_sent_bytes_total",
        "pgveil_queries_total{command=\"INSERT\",outcome=\"ok\"} 1",
        "pgveil_queries_total{command=\"CREATE\",outcome=\"ok\"} 1",
        "pgveil_query_duration_seconds_bucket{scope=\"end_to_end\",le=",
        "pgveil_build_info{version=\"",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert_eq!(http_get(proxy.metrics_addr.unwrap(), "/nope").await.0, 404);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_with_57p05() {
    let pg = pg_trust();
    let mut config = config_for(&pg);
    config.idle_timeout = Some(Duration::from_millis(700));
    let proxy = proxy_with(config).await;
    let mut raw = Raw::login(&proxy, USER).await;
    let msgs = raw.until_closed().await;
    assert_eq!(
        msgs.last().and_then(|m| m.sqlstate()).as_deref(),
        Some("57P05")
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_closes_sessions() {
    let pg = pg_trust();
    let mut config = config_for(&pg);
    config.shutdown_timeout = Duration::from_millis(800);
    let proxy = proxy_with(config).await;
    let addr = proxy.addr;
    let mut raw = Raw::login(&proxy, USER).await;
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No longer accepting...
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // ...but the open session keeps working while it drains.
    raw.send(&fe::query("select 1")).await;
    assert_eq!(tags(&raw.until_ready().await), "TDCZ");
    // After the timeout the session is closed with 57P01.
    let msgs = raw.until_closed().await;
    assert_eq!(
        msgs.last().and_then(|m| m.sqlstate()).as_deref(),
        Some("57P01")
    );
    shutdown.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

#[test]
fn bad_config_gives_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgveil.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\nupstream:\n  tls:\n    mode: requier\n",
    )
    .unwrap();
    let out = bin()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("pgveil.yaml:4:"), "{stderr}");
    assert!(stderr.contains("upstream.tls.mode"), "{stderr}");

    let out = bin()
        .args([
            "serve",
            "--tls-cert-file",
            "/nonexistent/cert.pem",
            "--tls-key-file",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.cert_file /nonexistent/cert.pem"),
        "{stderr}"
    );

    let out = bin()
        .args(["serve"])
        .env("PGVEIL_UPSTREAM_PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream-port"));
}

#[test]
fn help_texts_read_well() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: pgveil"), "{text}");
    }
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--upstream-tls-mode",
        "PGVEIL_LISTEN",
        "--max-client-connections",
        "--idle-timeout",
    ] {
        assert!(text.contains(flag), "missing {flag} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_stops_on_sigterm() {
    let pg = pg_trust();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "off",
        ])
        .args([
            "--upstream-host",
            "127.0.0.1",
            "--upstream-port",
            &pg.port().to_string(),
        ])
        .args(["--upstream-tls-mode", "disable", "--log-format", "json"])
        .kill_on_drop(true)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let info = format!("host=127.0.0.1 port={port} user={USER} dbname=postgres sslmode=disable");
    let mut connected = None;
    for _ in 0..100 {
        if let Ok((c, conn)) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            connected = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = connected.expect("pgveil binary accepts connections");
    assert_eq!(c.simple_query("select 1").await.unwrap().len(), 3);
    drop(c);
    let pid = child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("\"message\":\"shutdown complete\""),
        "{stderr}"
    );
}

/// A log written into a file has no colour codes, and start-up logs plain values.
#[test]
fn serve_logs_plain_text_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pgveil.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--upstream-host", "127.0.0.1", "--upstream-port", "1"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(file)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut text = String::new();
    while !text.contains("pgveil listening") && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("pgveil listening"), "{text}");
    assert!(!text.contains("\x1b["), "{text:?}");
    assert!(!text.contains("Some("), "{text}");
    assert!(text.contains(" metrics=127.0.0.1:"), "{text}");
}

#[test]
fn demo_runs_the_tour_and_cleans_up() {
    let out = bin().args(["demo", "--customers", "50"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "Connected through pgveil as dispatch_app",
        "== Five customers",
        "== Prepared statement, reused",
        "pgveil_queries_total{command=\"SELECT\",outcome=\"ok\"}",
        "PostgreSQL stopped and its temp directory removed",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    // Same seed, same data: the customers shown are stable.
    let again = bin().args(["demo", "--customers", "50"]).output().unwrap();
    let first_table = |s: &str| {
        s.split("== Five customers")
            .nth(1)
            .map(|t| t.chars().take(300).collect::<String>())
    };
    assert_eq!(
        first_table(&stdout),
        first_table(&String::from_utf8_lossy(&again.stdout))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_termination_reaches_the_client_once() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::login(&proxy, USER).await;
    raw.send(&fe::query("select pg_backend_pid()")).await;
    let msgs = raw.until_ready().await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    let pid: i32 = String::from_utf8_lossy(&row.body[6..]).parse().unwrap();
    let admin = direct(&pg).await;
    admin
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let msgs = raw.until_closed().await;
    let errors: Vec<_> = msgs.iter().filter(|m| m.tag == b'E').collect();
    assert_eq!(errors.len(), 1, "{}", tags(&msgs));
    assert_eq!(errors[0].sqlstate().as_deref(), Some("57P01"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_statements_are_counted_under_their_command() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    // Simple protocol.
    assert!(c
        .batch_execute("insert into nope values (1)")
        .await
        .is_err());
    // Extended protocol: the error comes at Parse, or at Execute of a named statement.
    assert!(c.prepare("update nope set x = 1").await.is_err());
    let stmt = c.prepare("select 1 / $1::int").await.unwrap();
    assert!(c.query(&stmt, &[&0i32]).await.is_err());
    let text = metrics_text(&proxy).await;
    for needle in [
        "pgveil_queries_total{command=\"INSERT\",outcome=\"error\"} 1",
        "pgveil_queries_total{command=\"UPDATE\",outcome=\"error\"} 1",
        "pgveil_queries_total{command=\"SELECT\",outcome=\"error\"} 1",
        "pgveil_queries_total{command=\"unknown\",outcome=\"error\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counters_count_sessions_under_a_policy() {
    let s = crate::support::write_fixture::setup().await;
    let c = client_as(&s.proxy, "writer_app", "").await;
    c.execute(
        "insert into customers (id, phone) values (1, '13900000000')",
        &[],
    )
    .await
    .unwrap();
    let (_, text) = http_get(s.proxy.metrics_addr.unwrap(), "/metrics").await;
    for name in [
        "pgveil_client_received_bytes_total",
        "pgveil_client_sent_bytes_total",
    ] {
        let value: f64 = text
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{text}"));
        assert!(value > 0.0, "{name} = {value}");
    }
}
