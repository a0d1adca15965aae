//! The coverage matrix: every kind × every action, over the simple protocol (text), the
//! extended protocol (binary results, a reused named statement, pipelined), and COPY TO.
//! Every column is encrypted (randomized), so each value is also decrypted on the way.
use futures_util::TryStreamExt;
use pgveil::config::EnforcementConfig;
use pgveil_policy::crypto::Mode;
use pgveil_policy::keyring::Keyring;
use pgveil_policy::mask::Mask;
use pgveil_policy::{Action, Kind};

use crate::support::*;

/// One real-shaped value per kind.
const SAMPLES: &[(&str, &str)] = &[
    ("cn_id_card", "11010519491231002X"),
    ("cn_mobile", "13812345678"),
    ("cn_name", "欧阳修文"),
    ("bank_card", "6222021234567890123"),
    ("email", "zhangsan@example.com"),
    ("passport", "E12345678"),
    ("address", "北京市海淀区马连洼街道289号"),
    ("pnr", "ABC123"),
    ("waybill", "EE123456785CN"),
    ("date", "1990-03-07"),
    ("text", "free text, with a comma and a \"quote\""),
];

const ACTIONS: &[&str] = &["allow", "hash", "mask", "null", "deny"];

fn policy() -> String {
    let mut p = String::from("version: 1\nlevels: [core, important, general]\nroles:\n");
    for a in ACTIONS {
        p.push_str(&format!("  r_{a}: [u_{a}]\n"));
    }
    p.push_str("tables:\n  public.matrix:\n");
    for (kind, _) in SAMPLES {
        p.push_str(&format!(
            "    c_{kind}: {{ level: important, kind: {kind}, encrypt: randomized }}\n"
        ));
    }
    p.push_str("rules:\n");
    for a in ACTIONS {
        p.push_str(&format!(
            "  - {{ roles: [r_{a}], level: important, action: \"{a}\" }}\n"
        ));
    }
    p.push_str("defaults: { core: deny, important: deny, general: allow }\n");
    p
}

#[tokio::test]
async fn every_kind_times_every_action_in_every_protocol() {
    let cluster = pg_trust();
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy()).unwrap();
    let keyring_path = dir.path().join("pgveil.keys");
    Keyring::generate(1_700_000_000)
        .unwrap()
        .save(&keyring_path, true)
        .unwrap();
    let keys = Keyring::load(&keyring_path).unwrap().into_key_set();
    let db = direct(&cluster).await;
    let cols: Vec<String> = SAMPLES.iter().map(|(k, _)| format!("c_{k}")).collect();
    let mut sql = format!(
        "create table matrix (id int primary key, {});",
        cols.iter()
            .map(|c| format!("{c} text"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let values: Vec<String> = SAMPLES
        .iter()
        .map(|(k, v)| {
            let env = keys
                .domain(k) // the default key domain is the kind
                .encrypt(Mode::Randomized, v.as_bytes())
                .unwrap();
            format!("'{env}'")
        })
        .collect();
    sql.push_str(&format!(
        "insert into matrix values (1, {}), (2, {});",
        values.join(", "),
        vec!["NULL"; SAMPLES.len()].join(", ")
    ));
    for a in ACTIONS {
        sql.push_str(&format!(
            "create role u_{a} login; grant select on matrix to u_{a};"
        ));
    }
    db.batch_execute(&sql).await.unwrap();

    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(
        policy_path,
        keyring_path,
        "postgres",
    ));
    let proxy = proxy_with(config).await;
    let pkey = keys.pseudonym_key();

    for a in ACTIONS {
        let action = Action::parse(a).unwrap();
        let c = client_as(&proxy, &format!("u_{a}"), "").await;
        // One named statement, reused for every kind, pipelined.
        let stmt_sql = format!("select {} from matrix order by id", cols.join(", "));
        if action == Action::Deny {
            for col in &cols {
                let q = format!("select {col} from matrix");
                let e = c.simple_query(&q).await.unwrap_err();
                assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{a} {col}");
                let e = c.prepare(&q).await.unwrap_err();
                assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{a} {col}");
                let e = copy_text(&c, &format!("copy (select {col} from matrix) to stdout")).await;
                assert_eq!(e.unwrap_err(), "42501", "{a} {col}");
            }
            continue;
        }
        let stmt = c.prepare(&stmt_sql).await.unwrap();
        let (r1, r2) = tokio::join!(c.query(&stmt, &[]), c.query(&stmt, &[]));
        let (bin, bin2) = (r1.unwrap(), r2.unwrap());
        let simple = simple_rows(&c, &stmt_sql).await;
        let copy = copy_text(&c, &format!("copy ({stmt_sql}) to stdout (format csv)"))
            .await
            .unwrap();
        let mut csv = copy.lines();
        let first_csv = csv.next().unwrap_or_default().to_string();
        let second_csv = csv.next().unwrap_or_default().to_string();
        for (i, (kind, value)) in SAMPLES.iter().enumerate() {
            let expected: Option<String> = match action {
                Action::Allow => Some(value.to_string()),
                Action::Hash => Some(Mask::Hash.apply_to_string(value, &pkey)),
                Action::Mask => Some(
                    Mask::default_for(Kind::parse(kind).unwrap()).apply_to_string(value, &pkey),
                ),
                Action::Null => None,
                Action::Deny => unreachable!(),
            };
            let what = format!("{a} × {kind}");
            assert_eq!(
                bin[0].get::<_, Option<String>>(i),
                expected,
                "binary, {what}"
            );
            assert_eq!(
                bin2[0].get::<_, Option<String>>(i),
                expected,
                "pipelined, {what}"
            );
            assert_eq!(
                bin[1].get::<_, Option<String>>(i),
                None,
                "NULL stays NULL, {what}"
            );
            assert_eq!(simple[0][i], expected, "simple, {what}");
            assert!(!second_csv.is_empty());
            if let Some(v) = &expected {
                assert!(
                    first_csv.contains(v.as_str()) || first_csv.contains(&v.replace('"', "\"\"")),
                    "COPY CSV, {what}: {first_csv}"
                );
            }
            if action != Action::Allow {
                assert!(!first_csv.contains(value), "COPY leaked {what}");
            }
        }
    }
    // The database itself holds only ciphertext, for every kind.
    let stored = db
        .query_one(
            &format!("select {} from matrix where id = 1", cols.join(", ")),
            &[],
        )
        .await
        .unwrap();
    for (i, (kind, value)) in SAMPLES.iter().enumerate() {
        let v: String = stored.get(i);
        assert!(
            v.starts_with("pgv1:") && !v.contains(value),
            "{kind} stored as {v}"
        );
    }
    proxy.shutdown().await;
}

async fn simple_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    c.simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn copy_text(c: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    let code =
        |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let stream = c.copy_out(sql).await.map_err(code)?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.map_err(code)?;
    Ok(String::from_utf8(chunks.concat()).unwrap())
}
