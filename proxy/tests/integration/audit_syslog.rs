//! The audit trail's syslog copy for a SIEM, against a real PostgreSQL and real sockets: CEF over
//! UDP, the JSON lines over TCP (octet counting), a receiver that goes away and comes back, and
//! the counters that say what was and was not forwarded. The file stays complete throughout. A
//! statement padded past any datagram still reaches the SIEM: shortened and marked over UDP,
//! whole over TCP.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgveil::audit::syslog::{Facility, SyslogAddress, SyslogConfig, SyslogFormat};
use pgveil::audit::AuditConfig;
use pgveil::config::EnforcementConfig;
use pgveil_policy::keyring::Keyring;
use tokio::io::AsyncReadExt;

use crate::support::read_fixture::{refused, rows};
use crate::support::write_fixture::{assert_stored_ciphertext, policy_files, PolicyFiles, POLICY};
use crate::support::*;

const SECRETS: [&str; 3] = ["13912345678", "Canary Road", "13700000000"];

fn schema() -> &'static str {
    "create role writer_app login; create role viewer_app login;
     create table customers (id int primary key, name text, phone text, id_card text,
                             address text, points text);
     create table shipments (id int primary key, customer_id int, sender_phone text, note text);
     grant all on all tables in schema public to public;"
}

/// A counter's value in the metrics text (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn file_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PostgreSQL with the customers schema, and an enforcing pgveil whose audit log has `syslog`.
struct Audited {
    cluster: pgveil_testkit::PgCluster,
    dir: tempfile::TempDir,
    keyring: std::path::PathBuf,
    log: std::path::PathBuf,
    proxy: pgveil::app::RunningProxy,
}

async fn audited(syslog: SyslogConfig) -> Audited {
    let cluster = pg_trust();
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(POLICY);
    direct(&cluster)
        .await
        .batch_execute(schema())
        .await
        .unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut audit = AuditConfig::new(&log);
    audit.syslog = Some(syslog);
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(policy, keyring.clone(), "postgres"));
    config.audit = Some(audit);
    let proxy = proxy_with(config).await;
    Audited {
        cluster,
        dir,
        keyring,
        log,
        proxy,
    }
}

/// writer_app inserts a customer (phone and address encrypted); its client, still open.
async fn insert_customer(proxy: &pgveil::app::RunningProxy) -> tokio_postgres::Client {
    let w = client_as(proxy, "writer_app", "").await;
    w.batch_execute(
        "insert into customers (id, phone, address) values (1, '13912345678', 'Canary Road 7')",
    )
    .await
    .unwrap();
    w
}

#[tokio::test]
async fn records_reach_a_udp_receiver_as_cef_without_values() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let collector = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = receiver.recv(&mut buf).await {
            let msg = String::from_utf8(buf[..n].to_vec()).expect("syslog messages are UTF-8");
            sink.lock().unwrap().push(msg);
        }
    });

    let Audited {
        cluster,
        dir: _dir,
        keyring,
        log,
        proxy,
    } = audited(SyslogConfig::new(SyslogAddress::Udp(format!(
        "127.0.0.1:{port}"
    ))))
    .await;
    let w = insert_customer(&proxy).await;
    let v = client_as(&proxy, "viewer_app", "").await;
    assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    assert_eq!(
        refused(&v, "select id from customers where phone = '13700000000'").await,
        "42501"
    );
    // The session that was refused goes on working.
    assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    drop((w, v));

    // Everything written so far is forwarded, and counted.
    let metrics_addr = proxy.metrics_addr.unwrap();
    let mut forwarded = 0;
    let start = Instant::now();
    loop {
        let (_, text) = http_get(metrics_addr, "/metrics").await;
        forwarded = counter(&text, "pgveil_audit_forwarded_total").max(forwarded);
        let written = file_lines(&log).len() as u64;
        if forwarded == written && got.lock().unwrap().len() as u64 == written {
            assert_eq!(counter(&text, "pgveil_audit_forward_dropped_total"), 0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "forwarded {forwarded} of {written} records; received {}",
            got.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.shutdown().await;

    // The closing checkpoint arrives too: one datagram per line of the file, in order.
    let lines = file_lines(&log);
    wait_until("the closing checkpoint", Duration::from_secs(5), || {
        got.lock().unwrap().len() == lines.len()
    })
    .await;
    collector.abort();
    let msgs = got.lock().unwrap().clone();
    for (line, msg) in lines.iter().zip(&msgs) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = record["seq"].as_u64().unwrap();
        let kind = record["kind"].as_str().unwrap();
        // <PRI>1 TIMESTAMP HOSTNAME pgveil PROCID MSGID - CEF:0|...
        let head: Vec<&str> = msg.splitn(8, ' ').collect();
        assert_eq!(head[0].split('>').nth(1), Some("1"), "{msg}");
        assert_eq!(head[1], record["time"].as_str().unwrap(), "{msg}");
        assert_eq!((head[3], head[5], head[6]), ("pgveil", kind, "-"), "{msg}");
        assert_eq!(head[4], std::process::id().to_string(), "{msg}");
        assert!(head[7].starts_with("CEF:0|pgveil|pgveil|"), "{msg}");
        assert!(
            msg.contains(&format!(" externalId={seq} "))
                || msg.ends_with(&format!(" externalId={seq}")),
            "{msg}"
        );
        if let Some(tag) = record["tag"].as_str() {
            assert!(msg.contains(&format!("cs6={tag}")), "{msg}");
        }
        for secret in SECRETS {
            assert!(!msg.contains(secret), "a value reached syslog: {msg}");
        }
    }
    let statements: Vec<&String> = msgs
        .iter()
        .filter(|m| m.contains(" statement - "))
        .collect();
    assert_eq!(statements.len(), 4, "{msgs:#?}");
    // local0 (16 * 8) + informational (6), warning (4) for the refusal.
    assert!(statements[0].starts_with("<134>1 "), "{}", statements[0]);
    assert!(statements[0].contains("|statement|classified column access|3|"));
    assert!(statements[0].contains(" suser=writer_app src=127.0.0.1 spt="));
    assert!(statements[0].contains(" outcome=ok act=INSERT "));
    assert!(
        statements[0].contains("cs3=public.customers.phone important write"),
        "{}",
        statements[0]
    );
    assert!(
        statements[1].contains("cs3=public.customers.phone important mask"),
        "{}",
        statements[1]
    );
    assert!(
        statements[1].contains(" cn2Label=rows cn2=1 "),
        "{}",
        statements[1]
    );
    assert!(statements[2].starts_with("<132>1 "), "{}", statements[2]);
    assert!(statements[2].contains("|statement-denied|classified statement refused|7|"));
    assert!(
        statements[2].contains(" outcome=denied reason=42501"),
        "{}",
        statements[2]
    );
    assert!(msgs
        .last()
        .unwrap()
        .contains("|checkpoint|audit checkpoint|1|"));

    // The file, which the syslog copy does not replace, is whole and verifies.
    let keys = Keyring::load(&keyring).unwrap().into_key_set();
    let ok = pgveil::audit::verify::verify(&[&log], &keys, Default::default());
    assert!(ok.is_ok(), "{ok:?}");
    assert_stored_ciphertext(
        &cluster,
        &keyring,
        &["13912345678".into(), "Canary Road".into()],
    )
    .await;
}

/// A TCP syslog receiver (RFC 6587 octet counting) that keeps every frame it reads.
struct TcpReceiver {
    task: tokio::task::JoinHandle<()>,
}

impl TcpReceiver {
    async fn start(listener: tokio::net::TcpListener, got: Arc<Mutex<Vec<String>>>) -> Self {
        let task = tokio::spawn(async move {
            // One connection at a time, as pgveil keeps one.
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 16384];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    // Frames: "LEN SP MSG".
                    while let Some(sp) = buf.iter().position(|b| *b == b' ') {
                        let len: usize = std::str::from_utf8(&buf[..sp])
                            .ok()
                            .and_then(|l| l.parse().ok())
                            .expect("an octet-counted frame");
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        let msg = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap();
                        got.lock().unwrap().push(msg);
                        buf.drain(..sp + 1 + len);
                    }
                }
            }
        });
        TcpReceiver { task }
    }

    /// Closes the listener and the connection it holds.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The JSON line inside one syslog message, and its seq.
fn json_body(msg: &str) -> (u64, String) {
    let body = &msg[msg.find(" - {").expect("a JSON message") + 3..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    (v["seq"].as_u64().unwrap(), body.to_string())
}

#[tokio::test]
async fn a_tcp_receiver_gets_the_verifiable_lines_and_outages_are_counted_not_hidden() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let receiver = TcpReceiver::start(listener, got.clone()).await;

    let Audited {
        cluster,
        dir,
        keyring,
        log,
        proxy,
    } = audited(SyslogConfig {
        format: SyslogFormat::Json,
        facility: Facility::parse("auth").unwrap(),
        // Room for about 50 records, so an outage overflows it quickly.
        queue_bytes: 32 * 1024,
        ..SyslogConfig::new(SyslogAddress::Tcp(addr.to_string()))
    })
    .await;
    let metrics_addr = proxy.metrics_addr.unwrap();
    let w = insert_customer(&proxy).await;
    let v = client_as(&proxy, "viewer_app", "").await;
    for _ in 0..3 {
        assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    }
    wait_until("the first records", Duration::from_secs(10), || {
        got.lock().unwrap().len() == file_lines(&log).len()
    })
    .await;

    // What arrived is the file's lines, byte for byte, so it verifies on the SIEM side too.
    let lines = file_lines(&log);
    let received: Vec<String> = got.lock().unwrap().iter().map(|m| json_body(m).1).collect();
    assert_eq!(received, lines);
    assert!(
        got.lock().unwrap()[0].starts_with("<38>1 "),
        "auth (4) * 8 + informational"
    );
    let copy = dir.path().join("siem-copy.jsonl");
    std::fs::write(&copy, received.join("\n") + "\n").unwrap();
    let keys = Keyring::load(&keyring).unwrap().into_key_set();
    let opts = pgveil::audit::verify::Options { open: true };
    let ok = pgveil::audit::verify::verify(&[&copy], &keys, opts);
    assert!(ok.is_ok(), "{ok:?}");

    // The receiver goes away. Statements go on at full speed; once the forwarder's queue is
    // full, records are counted as not forwarded. The file keeps every one.
    receiver.stop().await;
    let mut statements = 0;
    let dropped = loop {
        for _ in 0..50 {
            assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
        }
        statements += 50;
        let (_, text) = http_get(metrics_addr, "/metrics").await;
        let dropped = counter(&text, "pgveil_audit_forward_dropped_total");
        if dropped > 0 {
            break dropped;
        }
        assert!(
            statements < 2000,
            "{statements} statements with the receiver down dropped none:\n{text}"
        );
    };
    assert!(dropped < statements);

    // It comes back on the same address: the forwarder reconnects and delivers what it held,
    // and every record is either forwarded or counted as dropped.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let receiver = TcpReceiver::start(listener, got.clone()).await;
    let start = Instant::now();
    let last = loop {
        let (_, text) = http_get(metrics_addr, "/metrics").await;
        let last = (
            counter(&text, "pgveil_audit_forwarded_total"),
            counter(&text, "pgveil_audit_forward_dropped_total"),
            file_lines(&log).len() as u64,
        );
        if last.0 + last.1 == last.2 {
            break last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "forwarded + dropped != written: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("forwarded, dropped, written after the outage: {last:?}");
    // A statement after the reconnect arrives.
    assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    let seq_now = file_lines(&log).len() as u64;
    wait_until(
        "a record after the reconnect",
        Duration::from_secs(10),
        || {
            got.lock()
                .unwrap()
                .iter()
                .any(|m| json_body(m).0 >= seq_now)
        },
    )
    .await;
    drop((w, v));
    proxy.shutdown().await;
    // The closing checkpoint, sent within the shutdown, reaches the receiver.
    let closing = file_lines(&log).len() as u64;
    wait_until("the closing checkpoint", Duration::from_secs(5), || {
        got.lock()
            .unwrap()
            .iter()
            .any(|m| json_body(m).0 == closing)
    })
    .await;
    receiver.stop().await;

    // Every received line is the file's line of that seq; nothing was invented or altered.
    let by_seq: BTreeMap<u64, String> = file_lines(&log)
        .into_iter()
        .map(|l| {
            let seq = serde_json::from_str::<serde_json::Value>(&l).unwrap()["seq"]
                .as_u64()
                .unwrap();
            (seq, l)
        })
        .collect();
    let msgs = got.lock().unwrap().clone();
    for m in &msgs {
        let (seq, body) = json_body(m);
        assert_eq!(by_seq.get(&seq), Some(&body), "seq {seq}");
        for secret in SECRETS {
            assert!(!m.contains(secret), "a value reached syslog: {m}");
        }
    }
    // Nothing counted as forwarded is missing: the forwarder saw the receiver's FIN before
    // writing into the dead connection (at most a message or two could slip through if the
    // FIN arrived during a write).
    let counted = last.0;
    let received_then = msgs.iter().filter(|m| json_body(m).0 <= last.2).count() as u64;
    assert!(
        received_then + 2 >= counted,
        "forwarded {counted}, received {received_then}"
    );
    // The closing checkpoint is the last message.
    assert_eq!(
        msgs.last().map(|m| json_body(m).1),
        by_seq.values().last().cloned()
    );
    let ok = pgveil::audit::verify::verify(&[&log], &keys, Default::default());
    assert!(ok.is_ok(), "{ok:?}");
    assert_stored_ciphertext(
        &cluster,
        &keyring,
        &["13912345678".into(), "Canary Road".into()],
    )
    .await;
}

/// A statement padded to about 78 KB with 4100 `WHEN id = 0 THEN 0` branches, which the
/// fingerprint keeps one by one. (The padding, `AND id > 0` 7000 times, nests 7000 deep
/// and overflows the statement analyzer's stack before any record is written: a separate bug.)
fn padded_statement() -> String {
    format!(
        "select phone, address, case{} else 0 end as pad from customers where id > 0",
        " when id = 0 then 0".repeat(4100)
    )
}

/// The file's line of the first statement record by `login` with more than `min_bytes`.
fn long_line_of(log: &std::path::Path, login: &str, min_bytes: usize) -> Option<(u64, String)> {
    file_lines(log).into_iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(&l).ok()?;
        let seq = v["seq"].as_u64()?;
        (l.len() > min_bytes && v["login"] == login).then(|| (seq, l.clone()))
    })
}

#[tokio::test]
async fn audit_padded_statement_reaches_udp_shortened_and_marked_never_dropped() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let collector = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = receiver.recv(&mut buf).await {
            let msg = String::from_utf8(buf[..n].to_vec()).expect("syslog messages are UTF-8");
            sink.lock().unwrap().push(msg);
        }
    });
    let Audited {
        cluster: _cluster,
        dir: _dir,
        keyring,
        log,
        proxy,
    } = audited(SyslogConfig::new(SyslogAddress::Udp(format!(
        "127.0.0.1:{port}"
    ))))
    .await;
    let w = insert_customer(&proxy).await;
    let v = client_as(&proxy, "viewer_app", "").await;
    assert_eq!(rows(&v, &padded_statement()).await.len(), 1);
    drop((w, v));

    wait_until("the padded record on file", Duration::from_secs(5), || {
        long_line_of(&log, "viewer_app", 77_000).is_some()
    })
    .await;
    let (seq, line) = long_line_of(&log, "viewer_app", 77_000).expect("the padded record");
    let tag = serde_json::from_str::<serde_json::Value>(&line).unwrap()["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let id = format!(" externalId={seq} ");
    wait_until(
        "the padded statement's datagram",
        Duration::from_secs(10),
        || got.lock().unwrap().iter().any(|m| m.contains(&id)),
    )
    .await;
    let msg = got
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.contains(&id))
        .cloned()
        .unwrap();
    let max = SyslogConfig::DEFAULT_MAX_DATAGRAM;
    assert!(msg.len() <= max, "{} bytes in one datagram", msg.len());
    for part in [
        format!(
            " cn3Label=original_bytes cn3={} flexString2Label=truncated flexString2=fingerprint ",
            line.len()
        ),
        " suser=viewer_app ".to_string(),
        " outcome=ok act=SELECT ".to_string(),
        " cn2Label=rows cn2=1 ".to_string(),
        " cs2Label=fingerprint cs2=select phone, address, case when id \\= ? then ? when id \\= ? then ?"
            .to_string(),
        " cs3Label=columns cs3=public.customers.phone important mask, public.customers.address important mask "
            .to_string(),
        format!(" cs6Label=tag cs6={tag}"),
    ] {
        assert!(msg.contains(&part), "{part} missing from {msg}");
    }
    for secret in SECRETS {
        assert!(!msg.contains(secret), "a value reached syslog: {msg}");
    }
    let (_, text) = http_get(proxy.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        counter(&text, "pgveil_audit_forward_truncated_total"),
        1,
        "{text}"
    );
    assert_eq!(
        counter(&text, "pgveil_audit_forward_dropped_total"),
        0,
        "{text}"
    );
    proxy.shutdown().await;
    collector.abort();
    // The file has the record whole, and verifies.
    let keys = Keyring::load(&keyring).unwrap().into_key_set();
    let ok = pgveil::audit::verify::verify(&[&log], &keys, Default::default());
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn audit_padded_statement_reaches_tcp_whole_past_64_kib() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let receiver = TcpReceiver::start(listener, got.clone()).await;
    let Audited {
        cluster: _cluster,
        dir: _dir,
        keyring: _keyring,
        log,
        proxy,
    } = audited(SyslogConfig {
        format: SyslogFormat::Json,
        // Smaller than the one record: a batch larger than the whole queue still goes.
        queue_bytes: 32 * 1024,
        ..SyslogConfig::new(SyslogAddress::Tcp(addr.to_string()))
    })
    .await;
    let w = insert_customer(&proxy).await;
    let v = client_as(&proxy, "viewer_app", "").await;
    assert_eq!(rows(&v, &padded_statement()).await.len(), 1);
    drop((w, v));
    wait_until("the padded record on file", Duration::from_secs(5), || {
        long_line_of(&log, "viewer_app", 64 * 1024).is_some()
    })
    .await;
    let (seq, line) = long_line_of(&log, "viewer_app", 64 * 1024).expect("the padded record");
    wait_until(
        "the padded statement's frame",
        Duration::from_secs(10),
        || got.lock().unwrap().iter().any(|m| json_body(m).0 == seq),
    )
    .await;
    let body = got
        .lock()
        .unwrap()
        .iter()
        .map(|m| json_body(m))
        .find(|(s, _)| *s == seq)
        .unwrap()
        .1;
    assert_eq!(body, line, "the line itself, byte for byte");
    assert!(!body.contains("\"truncated\""));
    let (_, text) = http_get(proxy.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        counter(&text, "pgveil_audit_forward_dropped_total"),
        0,
        "{text}"
    );
    assert_eq!(
        counter(&text, "pgveil_audit_forward_truncated_total"),
        0,
        "{text}"
    );
    proxy.shutdown().await;
    receiver.stop().await;
}
