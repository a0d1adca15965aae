//! The audit trail of an enforcing pgveil, against a real PostgreSQL: one record per statement
//! that touched a classified column (allowed, masked, written, denied, failed), no values in
//! it, and a chain that `audit verify` accepts until someone edits it.
use pgveil::config::EnforcementConfig;
use pgveil_policy::keyring::Keyring;

use crate::support::read_fixture::{refused, rows};
use crate::support::write_fixture::{assert_stored_ciphertext, policy_files, PolicyFiles, POLICY};
use crate::support::*;

#[tokio::test]
async fn sensitive_statements_are_audited_without_values_and_the_chain_verifies() {
    let cluster = pg_trust();
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(POLICY);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role writer_app login; create role viewer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         create table plain_t (n int);
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(policy, keyring.clone(), "postgres"));
    config.audit = Some(pgveil::audit::AuditConfig::new(&log));
    let proxy = proxy_with(config).await;

    let w = client_as(&proxy, "writer_app", "").await;
    w.batch_execute(
        "insert into customers (id, phone, address) values (1, '13912345678', 'Canary Road 7')",
    )
    .await
    .unwrap();
    let st = w
        .prepare("select phone from customers where phone = $1")
        .await
        .unwrap();
    assert_eq!(w.query(&st, &[&"13912345678"]).await.unwrap().len(), 1);
    let v = client_as(&proxy, "viewer_app", "").await;
    assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    assert_eq!(
        refused(&v, "select id from customers where phone = '13912345678'").await,
        "42501"
    );
    // A statement without classified columns gets no record.
    v.batch_execute("insert into plain_t values (1)")
        .await
        .unwrap();
    // A server-side error on a classified statement.
    assert_eq!(
        refused(
            &w,
            "insert into customers (id, phone) values (1, '13900000000')"
        )
        .await,
        "23505"
    );
    drop((w, v));
    proxy.shutdown().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statements: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["kind"] == "statement")
        .collect();
    let summary: Vec<(String, String, String)> = statements
        .iter()
        .map(|r| {
            (
                r["login"].as_str().unwrap_or("").to_string(),
                r["command"].as_str().unwrap_or("").to_string(),
                r["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("writer_app".to_string(), "INSERT".into(), "ok".into()),
            ("writer_app".into(), "SELECT".into(), "ok".into()),
            ("viewer_app".into(), "SELECT".into(), "ok".into()),
            ("viewer_app".into(), "SELECT".into(), "denied".into()),
            ("writer_app".into(), "INSERT".into(), "error".into()),
        ],
        "{text}"
    );
    // Columns with level and action; rows; roles; the fingerprint keeps no literal.
    let first = statements[0];
    assert_eq!(first["rows"], 1);
    assert_eq!(first["roles"], serde_json::json!(["writer"]));
    let cols = first["columns"].to_string();
    assert!(
        cols.contains("public.customers.phone") && cols.contains("write"),
        "{cols}"
    );
    let masked = statements[2]["columns"].to_string();
    assert!(masked.contains("\"mask\""), "{masked}");
    assert!(statements[3]["reason"]
        .as_str()
        .unwrap_or("")
        .starts_with("42501"));
    // The refused statement names the column that caused it, its level, and `refused`.
    let refused_cols = statements[3]["columns"].to_string();
    assert!(
        refused_cols.contains("public.customers.phone")
            && refused_cols.contains("important")
            && refused_cols.contains("refused"),
        "{refused_cols}"
    );
    assert_eq!(statements[4]["reason"], "23505");
    for secret in ["13912345678", "Canary Road", "13900000000"] {
        assert!(
            !text.contains(secret),
            "the audit log holds a value: {secret}"
        );
    }
    // And the database holds only ciphertext.
    assert_stored_ciphertext(
        &cluster,
        &keyring,
        &["13912345678".into(), "Canary Road".into()],
    )
    .await;

    // The access review over this log names exactly the logins, columns and actions used
    // (denied and failed statements are not use), and grants never used.
    let compiled = pgveil_policy::CompiledPolicy::from_str("policy.yaml", POLICY).unwrap();
    let report = pgveil::audit::report::build(&[&log], &compiled, None).unwrap();
    let mut used: Vec<(String, String, String)> = report
        .used
        .iter()
        .map(|u| (u.login.clone(), u.column.clone(), u.action.clone()))
        .collect();
    used.sort();
    assert_eq!(
        used,
        vec![
            (
                "viewer_app".to_string(),
                "public.customers.phone".to_string(),
                "mask".to_string()
            ),
            (
                "writer_app".into(),
                "public.customers.address".into(),
                "write".into()
            ),
            (
                "writer_app".into(),
                "public.customers.phone".into(),
                "allow".into()
            ),
            (
                "writer_app".into(),
                "public.customers.phone".into(),
                "write".into()
            ),
        ],
        "{report:?}"
    );
    assert!(
        report.unused_grants.iter().any(|u| u.role == "desk"),
        "desk never looked anything up: {report:?}"
    );
    assert!(
        !report
            .unused_grants
            .iter()
            .any(|u| u.role == "viewer" && u.column == "public.customers.phone"),
        "{report:?}"
    );

    // The chain verifies; one edited byte breaks it at that record.
    let keys = Keyring::load(&keyring).unwrap().into_key_set();
    let ok = pgveil::audit::verify::verify(&[&log], &keys, Default::default());
    assert!(ok.is_ok(), "{ok:?}");
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("\"rows\":1", "\"rows\":0", 1)).unwrap();
    let broken = pgveil::audit::verify::verify(&[&tampered], &keys, Default::default());
    assert!(broken.is_err(), "an edited record verified");
}

#[tokio::test]
async fn an_anomaly_limit_denies_until_the_window_clears() {
    let cluster = pg_trust();
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(&format!(
            "{POLICY}anomaly:\n  - {{ name: bulk_phone, level: important, max_rows: 5, per: 2s, then: deny }}\n  - {{ name: watch_all, max_rows: 4, per: 1h }}\n"
        ));
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role viewer_app login; create role other_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         insert into customers (id, name, phone) select i, 'n' || i, '1390000000' || i from generate_series(1, 3) i;
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(policy, keyring, "postgres"));
    config.audit = Some(pgveil::audit::AuditConfig::new(&log));
    let proxy = proxy_with(config).await;
    let v = client_as(&proxy, "viewer_app", "").await;
    let read = "select id, phone from customers";
    assert_eq!(rows(&v, read).await.len(), 3);
    // The second read would cross the limit (6 > 5): two rows leave, then the rule stops
    // it; the next is refused before it runs, however it asks.
    let mut raw = Raw::login(&proxy, "viewer_app").await;
    raw.send(&fe::query(read)).await;
    let msgs = raw.until_ready().await;
    assert_eq!(
        msgs.iter().filter(|m| m.tag == b'D').count(),
        2,
        "{}",
        tags(&msgs)
    );
    assert!(
        msgs.iter()
            .any(|m| m.sqlstate().as_deref() == Some("42501")),
        "{}",
        tags(&msgs)
    );
    assert_eq!(refused(&v, read).await, "42501");
    let e = v
        .query("select phone from customers where id > $1", &[&0i32])
        .await
        .unwrap_err();
    let msg = format!("{e:?}");
    assert!(msg.contains("anomaly rule bulk_phone"), "{msg}");
    let st_err = v.prepare("select name, phone from customers").await;
    assert!(
        st_err.is_err(),
        "a new statement on the level is refused too"
    );
    // Columns of other levels, another login: served.
    assert_eq!(rows(&v, "select id from customers").await.len(), 3);
    let o = client_as(&proxy, "other_app", "").await;
    assert_eq!(rows(&o, read).await.len(), 3);
    // After the window: served again.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(rows(&v, read).await.len(), 3);
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains("pgveil_anomaly_alerts_total{rule=\"bulk_phone\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgveil_anomaly_alerts_total{rule=\"watch_all\"}"),
        "{metrics}"
    );
    // Values sent, by policy role (viewer gets phone masked: 3 + 2 + 3 rows served).
    assert!(
        metrics
            .contains("pgveil_sensitive_values_by_role_total{action=\"mask\",role=\"viewer\"} 8"),
        "{metrics}"
    );
    drop((v, o));
    proxy.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let anomalies: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "anomaly")
        .collect();
    assert!(
        anomalies.iter().any(|r| r["rule"] == "bulk_phone"
            && r["login"] == "viewer_app"
            && r["outcome"] == "denied"),
        "{text}"
    );
    assert!(anomalies.iter().any(|r| r["rule"] == "watch_all"), "{text}");
}

#[tokio::test]
async fn refusals_per_window_raise_an_anomaly_that_denies() {
    let cluster = pg_trust();
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(&format!(
        "{POLICY}anomaly:\n  - {{ name: probing, max_denied: 3, per: 2s, then: deny }}\n"
    ));
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role viewer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         insert into customers (id, phone) values (1, '13900000001');
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(policy, keyring, "postgres"));
    config.audit = Some(pgveil::audit::AuditConfig::new(&log));
    let proxy = proxy_with(config).await;
    let v = client_as(&proxy, "viewer_app", "").await;
    assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    // Probing: lookups a mask role may not make. The fourth refusal crosses the limit.
    for _ in 0..4 {
        assert_eq!(
            refused(&v, "select id from customers where phone = '13900000001'").await,
            "42501"
        );
    }
    let e = v
        .simple_query("select phone from customers")
        .await
        .unwrap_err();
    let msg = format!("{e:?}");
    assert!(
        msg.contains("anomaly rule probing") && msg.contains("refused"),
        "{msg}"
    );
    // Statements without classified output still run; after the window, reads run again.
    assert_eq!(rows(&v, "select count(*) from shipments").await.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(rows(&v, "select phone from customers").await.len(), 1);
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains("pgveil_anomaly_alerts_total{rule=\"probing\"} 1"),
        "{metrics}"
    );
    drop(v);
    proxy.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"kind\":\"anomaly\"") && l.contains("\"rule\":\"probing\"")),
        "{text}"
    );
}

/// An hours range (in Asia/Shanghai, UTC+8 all year) that starts `from` hours after the
/// current hour there and lasts `len` hours.
fn shanghai_hours(from: u64, len: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let local_hour = (now / 3600 + 8) % 24;
    let start = (local_hour + 24 + from) % 24;
    format!("{:02}:00-{:02}:00", start, (start + len) % 24)
}

#[tokio::test]
async fn reads_outside_allowed_hours_are_refused_or_alerted() {
    let cluster = pg_trust();
    // `night_phone` (deny) and `night_points` (log) exclude now; `day_address` includes it
    // (an overnight range whenever now is near midnight).
    let policy_text = format!(
        "{POLICY}anomaly:\n  - {{ name: night_phone, roles: [viewer], level: important, hours: \"{}\", timezone: Asia/Shanghai, then: deny }}\n  - {{ name: night_points, level: general, hours: \"{}\", timezone: Asia/Shanghai, per: 1h }}\n  - {{ name: day_address, roles: [desk], level: important, hours: \"{}\", timezone: Asia/Shanghai, then: deny }}\n",
        shanghai_hours(2, 1),
        shanghai_hours(2, 1),
        shanghai_hours(22, 4),
    );
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(&policy_text);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role viewer_app login; create role desk_app login; create role writer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(policy, keyring.clone(), "postgres"));
    config.audit = Some(pgveil::audit::AuditConfig::new(&log));
    let proxy = proxy_with(config).await;
    let w = client_as(&proxy, "writer_app", "").await;
    w.batch_execute(
        "insert into customers (id, name, phone, address, points) values
           (1, 'a', '13900000001', 'Beijing Road 1', '10'), (2, 'b', '13900000002', 'Beijing Road 2', '20')",
    )
    .await
    .unwrap();
    assert_stored_ciphertext(
        &cluster,
        &keyring,
        &["13900000001".into(), "Beijing Road 1".into()],
    )
    .await;

    let v = client_as(&proxy, "viewer_app", "").await;
    // Every way of asking for the phone is refused by the rule, and the session stays usable.
    for sql in [
        "select phone from customers",
        "select id, phone from customers where id = 1",
        "with x as (select phone from customers) select * from x",
        "select name, customers.phone from customers",
        "select s.p from (select phone as p from customers) s",
    ] {
        let e = v.simple_query(sql).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e:?}");
        let msg = format!("{e:?}");
        assert!(
            msg.contains("anomaly rule night_phone") && msg.contains("may be read only"),
            "{sql}: {msg}"
        );
    }
    let e = v
        .query("select phone from customers where id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
    let mut copy = Vec::new();
    let copy_err = match v
        .copy_out("copy (select phone from customers) to stdout")
        .await
    {
        Ok(s) => {
            use futures_util::StreamExt;
            let mut s = std::pin::pin!(s);
            let mut err = None;
            while let Some(r) = s.next().await {
                match r {
                    Ok(b) => copy.extend_from_slice(&b),
                    Err(e) => err = Some(e),
                }
            }
            err
        }
        Err(e) => Some(e),
    };
    assert!(copy.is_empty(), "COPY leaked {copy:?}");
    assert_eq!(
        copy_err.and_then(|e| e.code().map(|c| c.code().to_string())),
        Some("42501".into())
    );
    // Columns outside the rule's level are served (points: log only; the alert fires once).
    assert_eq!(rows(&v, "select id, points from customers").await.len(), 2);
    assert_eq!(rows(&v, "select points from customers").await.len(), 2);
    // Other roles are not bound by the viewer's rule; desk is within its hours.
    let d = client_as(&proxy, "desk_app", "").await;
    let masked = rows(&d, "select phone, address from customers order by id").await;
    assert_eq!(masked.len(), 2);
    assert!(!masked[0][0].contains("13900000001"), "{masked:?}");

    let metrics = metrics_text(&proxy).await;
    for (rule, n) in [("night_phone", 1), ("night_points", 1), ("day_address", 0)] {
        assert!(
            metrics.contains(&format!(
                "pgveil_anomaly_alerts_total{{rule=\"{rule}\"}} {n}"
            )),
            "{rule} {n}: {metrics}"
        );
    }
    drop((v, d, w));
    proxy.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    let anomaly = |rule: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "anomaly" && r["rule"] == rule)
            .count()
    };
    assert_eq!(anomaly("night_phone"), 1, "{text}");
    assert_eq!(anomaly("night_points"), 1, "{text}");
    assert_eq!(anomaly("day_address"), 0, "{text}");
    // Each refused statement has its own record, denied.
    let denied = records
        .iter()
        .filter(|r| {
            r["kind"] == "statement" && r["login"] == "viewer_app" && r["outcome"] == "denied"
        })
        .count();
    assert!(denied >= 6, "{denied}: {text}");
    assert!(
        !text.contains("13900000001"),
        "a value reached the audit log"
    );
}
