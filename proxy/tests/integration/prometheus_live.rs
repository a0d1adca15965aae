//! deploy/ against a real Prometheus server: an enforcing pgveil (anomaly rules, audit log)
//! in front of a real PostgreSQL, scraped every second by `prometheus` (Debian package
//! `prometheus`, which `.ci/run` installs) loaded with the shipped `deploy/prometheus/alerts.yml`.
//! Traffic of every kind goes through pgveil; then every query of the Grafana dashboard
//! (`deploy/tools/dashboard_queries.py`) must return data through Prometheus's HTTP API, and the
//! bulk-export and anomaly alerts must fire.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgveil::config::EnforcementConfig;
use pgveil_policy::detect::make_cn_id_card;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::python::python_with_clients;
use crate::support::read_fixture::{refused, rows};
use crate::support::write_fixture::{assert_stored_ciphertext, policy_files, PolicyFiles, POLICY};
use crate::support::*;

/// Queries that may be 0 after the test's traffic: nothing in the test fails to parse or to
/// decrypt, and the audit queue is empty when idle. Every other query must show a value above 0.
const ZERO_OK: &[&str] = &[
    "pgveil_parse_failures_total",
    "op=\"decrypt_failed\"",
    "pgveil_audit_queue_depth",
];

/// Queries that show 0 although the test caused their event once: the counters are labelled
/// and pgveil creates a series at its first event, so the series is born at 1, and rate() and
/// increase() (which need a rise between two samples) never see that first event. The test
/// causes each event exactly once, checks that pgveil counted it, and that the panel still
/// shows 0; when pgveil creates these series at 0 up front, the check fails and the entry
/// goes. (The alert rules match such first events with `unless ... offset`; the panels do not.)
const FIRST_EVENT_UNSEEN: &[&str] = &[];

/// Rows with an ID card number; read `BULK_READS` times by the writer, who gets them decrypted:
/// 6000 core values, over the 5000 of PgveilBulkCoreExport.
const BULK_ROWS: usize = 1000;
const BULK_READS: usize = 6;

/// The `prometheus` server, killed when dropped (also when the test panics).
struct PrometheusServer {
    child: Child,
    log: PathBuf,
    addr: std::net::SocketAddr,
}

impl PrometheusServer {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn start_prometheus(dir: &Path, target: std::net::SocketAddr) -> PrometheusServer {
    std::fs::copy(
        repo_root().join("deploy/prometheus/alerts.yml"),
        dir.join("alerts.yml"),
    )
    .expect("copy deploy/prometheus/alerts.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: pgveil\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let binary = std::env::var_os("PGVEIL_PROMETHEUS").unwrap_or_else(|| "prometheus".into());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = dir.join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the Prometheus server {binary:?}: {e}; install the Debian package \
                 `prometheus` (.ci/run does) or set PGVEIL_PROMETHEUS to the binary"
            )
        });
    PrometheusServer { child, log, addr }
}

/// Percent-encode a query-string value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HTTP/1.0 GET (no chunked answers); returns (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(out)) => out,
        Ok(Err(_)) | Err(_) => return (0, String::new()),
    };
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

/// `/api/v1/query`: the parsed answer, or a description of what went wrong.
async fn query(prom: &PrometheusServer, expr: &str) -> Result<Value, String> {
    let (status, body) = get(prom.addr, &format!("/api/v1/query?query={}", encode(expr))).await;
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(v)
}

/// The result vector of a query (empty on error).
async fn series(prom: &PrometheusServer, expr: &str) -> Vec<Value> {
    match query(prom, expr).await {
        Ok(v) => v["data"]["result"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn sample_value(s: &Value) -> f64 {
    s["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Poll until `cond` holds, or panic after `limit` with `what` and Prometheus's log.
async fn wait_for<F, Fut>(prom: &PrometheusServer, limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}; prometheus log:\n{}",
                prom.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Wait until Prometheus holds two scrapes of pgveil taken after `after` (Unix seconds), so
/// that rate() and increase() of a series born at `after` have two samples.
async fn two_scrapes_after(prom: &PrometheusServer, after: f64) {
    wait_for(
        prom,
        Duration::from_secs(15),
        "two scrapes after the traffic",
        || async {
            // Samples of `up` newer than `after` (plus a margin for counters updated just after
            // the answers reached the client).
            let window_ms = ((now_secs() - after - 0.2) * 1000.0).max(1.0) as u64;
            let s = series(
                prom,
                &format!("count_over_time(up{{job=\"pgveil\"}}[{window_ms}ms])"),
            )
            .await;
            s.first().is_some_and(|s| sample_value(s) >= 2.0)
        },
    )
    .await;
}

/// Alerts in state firing or pending, by name.
async fn alerts(prom: &PrometheusServer) -> Vec<(String, String)> {
    let (_, body) = get(prom.addr, "/api/v1/alerts").await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn dashboard_queries() -> Vec<(String, String)> {
    let python = python_with_clients();
    let out = Command::new(&python)
        .arg(repo_root().join("deploy/tools/dashboard_queries.py"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "dashboard_queries.py failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queries: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let (title, expr) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("not `title<TAB>expr`: {l}"));
            (title.to_string(), expr.to_string())
        })
        .collect();
    assert!(queries.len() >= 20, "too few dashboard queries:\n{text}");
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_has_data_and_the_bulk_export_alert_fires_in_prometheus() {
    let started = Instant::now();
    let queries = dashboard_queries();

    // PostgreSQL and an enforcing pgveil: anomaly rule on core data, audit log, metrics.
    let cluster = pg_trust();
    let policy_text = format!(
        "{POLICY}anomaly:\n  - {{ name: bulk_core_export, level: core, max_rows: 1000, per: 1h }}\n"
    );
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(&policy_text);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role writer_app login; create role viewer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(
        policy.clone(),
        keyring.clone(),
        "postgres",
    ));
    config.audit = Some(pgveil::audit::AuditConfig::new(&log));
    config.metrics_listen = Some("127.0.0.1:0".into());
    config.max_client_connections = 4;
    let proxy = proxy_with(config).await;
    let metrics_addr = proxy.metrics_addr.expect("metrics endpoint bound");

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = start_prometheus(&prom_dir, metrics_addr);
    wait_for(
        &prom,
        Duration::from_secs(20),
        "prometheus /-/ready",
        || async { get(prom.addr, "/-/ready").await.0 == 200 },
    )
    .await;

    // Warm-up: one row of every protected column, read back by both roles, so that the core
    // series exists in Prometheus before the bulk export (see the note at the alert below).
    let w = client_as(&proxy, "writer_app", "").await;
    let v = client_as(&proxy, "viewer_app", "").await;
    w.batch_execute(&format!(
        "insert into customers (id, name, phone, id_card, address, points) \
         values (0, 'seed', '13900000000', '{}', 'Seed Road 1', '10')",
        make_cn_id_card("11010119900307000").unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(
        rows(&v, "select phone, address from customers").await.len(),
        1
    );
    // No core value has been sent yet: the series exists at 0 (pgveil creates every level's
    // series at start), so the bulk export below is the first core traffic and increase()
    // still sees it.
    wait_for(
        &prom,
        Duration::from_secs(15),
        "the first scrape of core values (0)",
        || async {
            !series(
                &prom,
                "pgveil_sensitive_values_total{job=\"pgveil\", level=\"core\", action=\"allow\"}",
            )
            .await
            .is_empty()
        },
    )
    .await;

    // Writes into encrypted columns (encrypt), in chunks of 250 rows.
    for chunk in (1..=BULK_ROWS).collect::<Vec<_>>().chunks(250) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                let card = make_cn_id_card(&format!("1101011990{i:07}")).unwrap();
                format!("({i}, 'n{i}', '139{i:08}', '{card}', 'Road {i}', '{i}')")
            })
            .collect();
        w.batch_execute(&format!(
            "insert into customers (id, name, phone, id_card, address, points) values {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }
    w.batch_execute("insert into shipments (id, customer_id, sender_phone, note) values (1, 1, '13900000001', 'x')")
        .await
        .unwrap();
    // Prepared reads (parse cache, extended protocol), decrypted for the writer.
    let st = w
        .prepare("select name, phone from customers where id = $1")
        .await
        .unwrap();
    for id in 1..=20i32 {
        assert_eq!(w.query(&st, &[&id]).await.unwrap().len(), 1);
    }
    // Masked reads for the viewer; denied statements (core is denied by default).
    for _ in 0..3 {
        assert_eq!(
            rows(&v, "select phone, address from customers").await.len(),
            BULK_ROWS + 1
        );
    }
    // Exactly one refusal (see FIRST_EVENT_UNSEEN).
    assert_eq!(refused(&v, "select id_card from customers").await, "42501");
    // Errors: a missing table, a division by zero.
    for sql in ["select * from no_such_table", "select 1 / 0"] {
        assert!(w.simple_query(sql).await.is_err(), "{sql}");
    }
    // A bad startup packet (protocol version 9.9): a session error.
    let mut bad = TcpStream::connect(proxy.addr).await.unwrap();
    bad.write_all(&[0, 0, 0, 8, 0, 9, 0, 9]).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut sink)).await;
    drop(bad);
    // Over max_client_connections (4): the fifth client is refused.
    let extra = [
        client_as(&proxy, "viewer_app", "").await,
        client_as(&proxy, "viewer_app", "").await,
    ];
    let err = tokio_postgres::connect(&conninfo(&proxy, "viewer_app", ""), tokio_postgres::NoTls)
        .await
        .err()
        .expect("the fifth client is refused");
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    drop(extra);
    // A policy reload that fails (the previous policy stays), then one that succeeds.
    let enforcement = proxy.enforcement.clone().expect("enforcing proxy");
    std::fs::write(&policy, "version: 1\nlevels: [core\n").unwrap();
    assert!(
        enforcement.reload().is_err(),
        "a broken policy must not load"
    );
    std::fs::write(&policy, &policy_text).unwrap();
    enforcement.reload().expect("the policy loads again");

    // The bulk export: 6000 core values decrypted for the writer within seconds. It also
    // crosses the policy's anomaly limit (1000 core rows per hour; `log`, not `deny`).
    for _ in 0..BULK_READS {
        assert_eq!(
            rows(&w, "select id, id_card from customers where id > 0")
                .await
                .len(),
            BULK_ROWS
        );
    }
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains("pgveil_sensitive_values_by_role_total{action=\"allow\",role=\"writer\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgveil_anomaly_alerts_total{rule=\"bulk_core_export\"} 1"),
        "the anomaly limit was not crossed:\n{metrics}"
    );
    let traffic_end = now_secs();

    // Every dashboard query returns data once two scrapes follow the traffic.
    two_scrapes_after(&prom, traffic_end).await;
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (title, expr) in &queries {
        let result = match query(&prom, expr).await {
            Ok(v) => v["data"]["result"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                failures.push(format!("{title}: {expr}\n    error: {e}"));
                continue;
            }
        };
        if result.is_empty() {
            failures.push(format!("{title}: {expr}\n    no data"));
            continue;
        }
        let values: Vec<String> = result
            .iter()
            .map(|s| format!("{}={}", s["metric"], s["value"][1]))
            .collect();
        report.push(format!("{title}: {}", values.join(" ")));
        let positive = result.iter().any(|s| sample_value(s) > 0.0);
        let zero_ok = ZERO_OK.iter().any(|m| expr.contains(m));
        let unseen = FIRST_EVENT_UNSEEN.iter().find(|m| expr.contains(*m));
        match unseen {
            Some(m) if positive => failures.push(format!(
                "{title}: {expr}\n    shows the first event now: remove {m} from FIRST_EVENT_UNSEEN"
            )),
            Some(_) => {}
            None if !positive && !zero_ok => failures.push(format!(
                "{title}: {expr}\n    only zero or NaN after the traffic: {}",
                values.join(" ")
            )),
            None => {}
        }
    }
    for m in FIRST_EVENT_UNSEEN {
        let counted = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{m}{{")))
            .any(|l| l.ends_with(" 1"));
        assert!(
            counted,
            "the test's single event of {m} was not counted:\n{metrics}"
        );
    }
    eprintln!("dashboard queries:\n  {}", report.join("\n  "));
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed through Prometheus:\n{}\n\npgveil /metrics:\n{metrics}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );

    // The shipped alerts: the bulk export (no `for:`, so it fires at the first evaluation that
    // sees it) and the crossed anomaly limit. PgveilBulkCoreExport takes increase() of
    // pgveil_sensitive_values_total{level="core"}, which pgveil creates at 0 at start (every
    // level and action of the policy), so an export that is the process's first core traffic,
    // as here, still shows as a rise.
    let limit = Duration::from_secs(30);
    let start = Instant::now();
    let seen = loop {
        let seen = alerts(&prom).await;
        let firing = |name: &str| seen.iter().any(|(n, s)| n == name && s == "firing");
        if firing("PgveilBulkCoreExport") && firing("PgveilAnomalyLimitCrossed") {
            break seen;
        }
        if start.elapsed() > limit {
            let bulk = series(
                &prom,
                "sum by (job) (increase(pgveil_sensitive_values_total{level=\"core\", action!=\"null\"}[5m]))",
            )
            .await;
            panic!(
                "PgveilBulkCoreExport and PgveilAnomalyLimitCrossed not both firing after \
                 {limit:?}; alerts: {seen:?}; core increase: {bulk:?}; prometheus log:\n{}",
                prom.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("alerts: {seen:?}; test took {:?}", started.elapsed());

    drop((w, v));
    drop(prom);
    proxy.shutdown().await;
    // Everything the traffic wrote into encrypted columns is ciphertext in the database.
    assert_stored_ciphertext(&cluster, &keyring, &[]).await;
}
