//! Write-side enforcement against a real PostgreSQL: every way a value enters an encrypted
//! column (literals, parameters in text and binary, COPY in text and CSV, upserts, updates),
//! checked directly in the database; equality lookups rewritten so indexes keep working;
//! forged envelopes and values pgveil cannot see refused.
use bytes::Bytes;
use futures_util::SinkExt;
use pgveil_policy::crypto::Mode;
use pgveil_policy::keyring::Keyring;
use std::sync::Arc;

use crate::support::read_fixture::{refused, rows};
use crate::support::write_fixture::*;
use crate::support::*;

fn phone(i: usize) -> String {
    format!("1390000{i:04}")
}

#[tokio::test]
async fn every_write_path_stores_ciphertext_and_reads_back_plaintext() {
    let s = setup().await;
    let w = client_as(&s.proxy, "writer_app", "").await;
    let mut canaries = Vec::new();

    // Simple protocol: single and multi-row INSERT, RETURNING, UPSERT, UPDATE ... FROM.
    let got = rows(
        &w,
        "insert into customers (id, name, phone, id_card, address, points) values \
         (1, 'a', '13900000001', '110101199003071234', 'Road 1', '101') returning phone, points",
    )
    .await;
    assert_eq!(got, vec![vec!["13900000001".to_string(), "101".into()]]);
    w.batch_execute(
        "insert into customers (id, phone, address) values (2, '13900000002', 'Road ''2'''), \
         (3, $$13900000003$$, E'Road\\t3'); \
         insert into customers values (4, 'd', '13900000004', null, null, 7) \
           on conflict (id) do update set phone = excluded.phone; \
         insert into customers (id, phone) values (4, '13900000044') \
           on conflict (id) do update set phone = excluded.phone, address = 'Upserted'; \
         insert into customers (id, phone) values (5, '13900000005') \
           on conflict (id) do update set phone = '13900000055'; \
         insert into customers (id, phone) values (5, '13900000005') \
           on conflict (id) do update set phone = '13900000555'; \
         update customers set phone = '13900000022', points = 22 where id = 2; \
         insert into shipments (id, customer_id, sender_phone, note) values (1, 1, '13900000001', 'n'); \
         insert into shipments (id, customer_id) values (2, 2); \
         update shipments s set sender_phone = c.phone from customers c where c.id = s.customer_id and s.id = 2;",
    )
    .await
    .unwrap();
    for c in [
        "13900000001",
        "110101199003071234",
        "Road 1",
        "13900000002",
        "Road '2'",
        "13900000003",
        "Road\t3",
        "13900000044",
        "Upserted",
        "13900000555",
        "13900000022",
    ] {
        canaries.push(c.to_string());
    }

    // Extended protocol: one prepared INSERT reused 1,000 times, parameters typed from the
    // catalog (points is described as int4, its original type, and sent in binary).
    let st = w
        .prepare("insert into customers (id, phone, address, points) values ($1, $2, $3, $4)")
        .await
        .unwrap();
    assert_eq!(st.params()[3], tokio_postgres::types::Type::INT4);
    assert_eq!(st.params()[1], tokio_postgres::types::Type::TEXT);
    for i in 100..1100 {
        let p = phone(i);
        let addr = format!("Street {i}");
        w.execute(&st, &[&(i as i32), &p, &addr, &(i as i32 * 3)])
            .await
            .unwrap();
        if i % 97 == 0 {
            canaries.push(p);
            canaries.push(addr);
        }
    }
    // A pipeline: several statements in flight at once.
    let upd = w
        .prepare("update customers set phone = $1 where id = $2")
        .await
        .unwrap();
    let ids: Vec<i32> = (100..110).collect();
    let phones: Vec<String> = ids.iter().map(|i| format!("1380000{i:04}")).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 2]> = ids
        .iter()
        .zip(&phones)
        .map(|(id, p)| [p as _, id as _])
        .collect();
    let futs: Vec<_> = params.iter().map(|p| w.execute(&upd, p)).collect();
    for r in futures_util::future::join_all(futs).await {
        assert_eq!(r.unwrap(), 1);
    }
    canaries.extend(phones.iter().cloned());

    // COPY FROM STDIN in text and CSV, sent in chunks that split rows and quoted fields.
    let text: String = (2000..2300)
        .map(|i| format!("{i}\t{}\tCopy\\tstreet {i}\t{}\n", phone(i), i))
        .collect();
    copy_in_chunks(
        &w,
        "copy customers (id, phone, address, points) from stdin",
        &text,
        7,
    )
    .await;
    let csv: String = std::iter::once("id,phone,address\n".to_string())
        .chain(
            (3000..3300).map(|i| format!("{i},{},\"Csv, \"\"quoted\"\"\nstreet {i}\"\n", phone(i))),
        )
        .collect();
    copy_in_chunks(
        &w,
        "copy customers (id, phone, address) from stdin with (format csv, header true)",
        &csv,
        13,
    )
    .await;
    canaries.push(phone(2150));
    canaries.push("street 2150".into());
    canaries.push(phone(3150));

    assert_all_ciphertext(&s, &canaries).await;

    // Read back through pgveil: equal to what was written, in the original types.
    let r = w
        .query_one(
            "select phone, address, points from customers where id = 500",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), phone(500));
    assert_eq!(r.get::<_, String>(1), "Street 500");
    assert_eq!(r.get::<_, i32>(2), 1500);
    let got = rows(&w, "select phone, address, points from customers where id in (2, 3, 4, 5, 2150, 3150) order by id").await;
    assert_eq!(
        got,
        vec![
            vec!["13900000022".to_string(), "Road '2'".into(), "22".into()],
            vec!["13900000003".into(), "Road\t3".into(), "NULL".into()],
            vec!["13900000044".into(), "Upserted".into(), "7".into()],
            vec!["13900000555".into(), "NULL".into(), "NULL".into()],
            vec![phone(2150), "Copy\tstreet 2150".into(), "2150".into()],
            vec![
                phone(3150),
                "Csv, \"quoted\"\nstreet 3150".into(),
                "NULL".into()
            ],
        ]
    );
    let got = rows(&w, "select sender_phone from shipments order by id").await;
    assert_eq!(
        got,
        vec![vec!["13900000001".to_string()], vec!["13900000022".into()]]
    );
    let n = rows(&w, "select count(*) from customers").await;
    assert_eq!(n[0][0], (5 + 1000 + 300 + 300).to_string());
}

async fn copy_in_chunks(c: &tokio_postgres::Client, sql: &str, data: &str, chunk: usize) {
    let sink = c.copy_in::<_, Bytes>(sql).await.unwrap();
    futures_util::pin_mut!(sink);
    for part in data.as_bytes().chunks(chunk) {
        sink.send(Bytes::copy_from_slice(part)).await.unwrap();
    }
    sink.finish().await.unwrap();
}

#[tokio::test]
async fn equality_lookups_are_rewritten_and_use_the_index() {
    let s = setup().await;
    let w = client_as(&s.proxy, "writer_app", "").await;
    let data: String = (1..=5000)
        .map(|i| format!("{i}\t{}\tstreet {i}\n", phone(i)))
        .collect();
    copy_in_chunks(
        &w,
        "copy customers (id, phone, address) from stdin",
        &data,
        65536,
    )
    .await;
    w.batch_execute(
        "insert into shipments (id, customer_id, sender_phone) values (1, 7, '13900000007'), (2, 8, '13900000008'); \
         insert into customers (id, phone) values (9999, null)",
    )
    .await
    .unwrap();
    let db = direct(&s.cluster).await;
    db.batch_execute("analyze customers; analyze shipments")
        .await
        .unwrap();

    // Literal, parameter, IN, <>, IS NULL, and a join across one key domain.
    assert_eq!(
        rows(&w, "select id from customers where phone = '13900000042'").await,
        vec![vec!["42".to_string()]]
    );
    assert_eq!(
        rows(
            &w,
            "select id from customers where phone in ('13900000001', '13900000003') order by id"
        )
        .await,
        vec![vec!["1".to_string()], vec!["3".into()]]
    );
    let r = w
        .query("select id from customers where phone = $1", &[&phone(77)])
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].get::<_, i32>(0), 77);
    assert_eq!(
        rows(
            &w,
            "select count(*) from customers where phone <> '13900000001'"
        )
        .await[0][0],
        "4999"
    );
    assert_eq!(
        rows(&w, "select id from customers where phone is null").await,
        vec![vec!["9999".to_string()]]
    );
    assert_eq!(
        rows(&w, "select c.id, s.id from customers c join shipments s on s.sender_phone = c.phone order by 1").await,
        vec![vec!["7".to_string(), "1".into()], vec!["8".into(), "2".into()]]
    );
    assert_eq!(
        rows(&w, "select c.id from customers c where c.phone in (select sender_phone from shipments) order by 1").await,
        vec![vec!["7".to_string()], vec!["8".into()]]
    );

    assert_all_ciphertext(&s, &[phone(42), "street 42".into(), "13900000007".into()]).await;

    // The server runs the rewritten equality on the index: EXPLAIN through pgveil, and
    // directly with the envelope the test computes itself.
    let plan = rows(
        &w,
        "explain select id from customers where phone = '13900000042'",
    )
    .await;
    let plan: String = plan.into_iter().map(|r| r.join(" ") + "\n").collect();
    assert!(plan.contains("Index Scan using customers_phone"), "{plan}");
    assert!(
        plan.contains("pgv1:") && !plan.contains("13900000042"),
        "{plan}"
    );
    let env = keys(&s)
        .domain("phone")
        .encrypt(Mode::Deterministic, b"13900000042")
        .unwrap();
    let plan = db
        .query(
            &format!("explain select id from customers where phone = '{env}'"),
            &[],
        )
        .await
        .unwrap();
    let plan: String = plan.iter().map(|r| r.get::<_, String>(0) + "\n").collect();
    assert!(plan.contains("Index Scan using customers_phone"), "{plan}");

    // A mask role with `lookup: true` may look up; one without may not, however it asks.
    let desk = client_as(&s.proxy, "desk_app", "").await;
    let got = rows(
        &desk,
        "select id, phone from customers where phone = '13900000042'",
    )
    .await;
    assert_eq!(got[0][0], "42");
    assert_ne!(got[0][1], "13900000042");
    let viewer = client_as(&s.proxy, "viewer_app", "").await;
    for sql in [
        "select id from customers where phone = '13900000042'",
        "select id from customers where '13900000042' = phone",
        "select id from customers where phone in ('13900000042')",
        "select id from customers where not (phone <> '13900000042')",
        "select c.id from customers c join shipments s on s.sender_phone = c.phone",
        "select id from customers where phone in (select sender_phone from shipments)",
        "select id from customers where phone like '139%'",
    ] {
        assert_eq!(refused(&viewer, sql).await, "42501", "{sql}");
    }
    // Ranges, patterns and sorting fail for every role: the server holds only ciphertext.
    for sql in [
        "select id from customers where phone like '139%'",
        "select id from customers where phone > '139'",
        "select id from customers order by phone limit 1",
        "select id from customers where address = 'street 1'",
        "select id from customers where lower(phone) = '1'",
        "select id from customers c join shipments s on s.note = c.phone",
    ] {
        assert_eq!(refused(&w, sql).await, "0A000", "{sql}");
    }
}

/// Rotate the keyring: version 2 becomes active, and pgveil reloads it.
fn rotate(s: &Setup) {
    let mut k = Keyring::load(&s.keyring).unwrap();
    k.add_version(1_700_000_100).unwrap();
    k.save(&s.keyring, false).unwrap();
    s.proxy.enforcement.as_ref().unwrap().reload().unwrap();
}

#[tokio::test]
async fn lookups_find_rows_written_under_every_key_version() {
    let s = setup().await;
    let w = client_as(&s.proxy, "writer_app", "").await;
    w.batch_execute("insert into customers (id, phone) values (1, '13900000001')")
        .await
        .unwrap();
    rotate(&s);
    w.batch_execute("insert into customers (id, phone) values (2, '13900000001')")
        .await
        .unwrap();
    let db = direct(&s.cluster).await;
    let versions: Vec<u32> = db
        .query("select phone from customers order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            pgveil_policy::crypto::envelope_key_version(r.get::<_, String>(0).as_bytes()).unwrap()
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(
        rows(
            &w,
            "select id from customers where phone = '13900000001' order by id"
        )
        .await,
        vec![vec!["1".to_string()], vec!["2".into()]]
    );
    assert_eq!(
        rows(
            &w,
            "select id from customers where phone in ('13900000001') order by id"
        )
        .await,
        vec![vec!["1".to_string()], vec!["2".into()]]
    );
    assert_eq!(
        rows(
            &w,
            "select count(*) from customers where phone <> '13900000001'"
        )
        .await,
        vec![vec!["0".to_string()]]
    );
    // Parameters: `= $1` and `<> $1` are widened like literals (binary and a cast too).
    let ids =
        |rs: Vec<tokio_postgres::Row>| rs.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>();
    let got = w
        .query(
            "select id from customers where phone = $1 order by id",
            &[&"13900000001"],
        )
        .await
        .unwrap();
    assert_eq!(
        ids(got),
        vec![1, 2],
        "= $1 finds rows under both key versions"
    );
    let got = w
        .query(
            "select id from customers where phone = $1::text order by id",
            &[&"13900000001"],
        )
        .await
        .unwrap();
    assert_eq!(ids(got), vec![1, 2]);
    let n: i64 = w
        .query_one(
            "select count(*) from customers where phone <> $1",
            &[&"13900000001"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Described as the scalar the client sends.
    let st = w
        .prepare("select id from customers where phone = $1")
        .await
        .unwrap();
    assert_eq!(st.params()[0], tokio_postgres::types::Type::TEXT);
    // A parameter also written stays one value, under the active version (documented): its
    // lookup finds the row under version 2 only, until rekey.
    let got = w
        .query(
            "update customers set phone = $1 where phone = $1 returning id",
            &[&"13900000001"],
        )
        .await
        .unwrap();
    assert_eq!(ids(got), vec![2]);
}

#[tokio::test]
async fn forged_envelopes_and_unencryptable_writes_are_refused_in_order() {
    let s = setup().await;
    let w = client_as(&s.proxy, "writer_app", "").await;
    let forged = keys(&s)
        .domain("phone")
        .encrypt(Mode::Deterministic, b"13900000001")
        .unwrap();
    // Literal, parameter, and COPY: each refused, and the session carries on.
    assert_eq!(
        refused(
            &w,
            &format!("insert into customers (id, phone) values (1, '{forged}')")
        )
        .await,
        "42501"
    );
    let st = w
        .prepare("insert into customers (id, phone) values ($1, $2)")
        .await
        .unwrap();
    let e = w.execute(&st, &[&1i32, &forged]).await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501");
    assert!(format!("{e:?}").contains("envelope"), "{e:?}");
    w.execute(&st, &[&1i32, &"13900000001"]).await.unwrap();
    let sink = w
        .copy_in::<_, Bytes>("copy customers (id, phone) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(format!("2\t{forged}\n")))
        .await
        .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert!(format!("{e:?}").contains("envelope"), "{e:?}");
    // Values the server would compute, and bad input for the original type.
    for (sql, code) in [
        ("update customers set phone = name", "0A000"),
        ("update customers set phone = upper('x')", "0A000"),
        ("insert into customers (id, phone) select 3, '1'", "0A000"),
        (
            "insert into customers (id, phone) values (3, default)",
            "0A000",
        ),
        (
            "insert into customers (id, points) values (3, '12x')",
            "22P02",
        ),
        (
            "copy customers (id, phone) from stdin (format binary)",
            "0A000",
        ),
        (
            "insert into shipments (id, note) select id, phone from customers",
            "0A000",
        ),
    ] {
        assert_eq!(refused(&w, sql).await, code, "{sql}");
    }
    // In a transaction, a refusal aborts it like any error.
    w.batch_execute("begin").await.unwrap();
    assert_eq!(
        refused(&w, &format!("update customers set phone = '{forged}'")).await,
        "42501"
    );
    assert_eq!(refused(&w, "select 1").await, "25P02");
    w.batch_execute("rollback").await.unwrap();
    assert_eq!(rows(&w, "select count(*) from customers").await[0][0], "1");
    assert_all_ciphertext(&s, &["13900000001".into()]).await;
    let _ = Arc::new(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_inserts_and_copies_through_pgveil() {
    let s = setup().await;
    let script =
        "insert into customers (id, phone, address) values (1, '13900000001', 'Psql road');\n\
                  \\copy customers (id, phone, address) from stdin with (format csv)\n\
                  2,13900000002,\"Csv, road\"\n\
                  3,13900000003,\n\
                  \\.\n\
                  select id, phone, address from customers order by id;\n";
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg(crate::support::psql())
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-A",
            "-F",
            "|",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &s.proxy.addr.port().to_string(),
            "-U",
            "writer_app",
            "-d",
            "postgres",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .map(|mut i| i.write_all(script.as_bytes()));
            child.wait_with_output()
        })
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "1|13900000001|Psql road\n2|13900000002|Csv, road\n3|13900000003|"
    );
    assert_all_ciphertext(
        &s,
        &[
            "13900000001".into(),
            "13900000002".into(),
            "Csv, road".into(),
            "Psql road".into(),
        ],
    )
    .await;
}

/// `col = ANY($1)` with an array parameter (psycopg's list lookup): each element encrypted
/// under every key version; in binary (tokio-postgres) and text (a raw Bind); NULL elements
/// kept; the role rules of `=` apply; near neighbours that cannot be encrypted refused.
#[tokio::test]
async fn array_parameter_lookups_find_rows_under_every_key_version() {
    let s = setup().await;
    let w = client_as(&s.proxy, "writer_app", "").await;
    w.batch_execute(
        "insert into customers (id, phone) values (1, '13900000001'), (3, '13900000003')",
    )
    .await
    .unwrap();
    rotate(&s);
    w.batch_execute("insert into customers (id, phone) values (2, '13900000002')")
        .await
        .unwrap();
    // The core promise: what was written is ciphertext.
    let db = direct(&s.cluster).await;
    for r in db.query("select phone from customers", &[]).await.unwrap() {
        assert!(r.get::<_, String>(0).starts_with("pgv1:"));
    }
    // Binary array of text, from tokio-postgres (typed by pgveil's ParameterDescription).
    let st = w
        .prepare("select id from customers where phone = any($1) order by id")
        .await
        .unwrap();
    assert_eq!(st.params()[0], tokio_postgres::types::Type::TEXT_ARRAY);
    let wanted = vec!["13900000001", "13900000002", "13999999999"];
    let ids: Vec<i32> = w
        .query(&st, &[&wanted])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2], "rows under key versions 1 and 2");
    let none: Vec<&str> = Vec::new();
    assert!(w.query(&st, &[&none]).await.unwrap().is_empty());
    // A cast written on the parameter, and a desk role with lookup: true.
    let desk = client_as(&s.proxy, "desk_app", "").await;
    let ids: Vec<i32> = desk
        .query(
            "select id from customers where phone = any($1::text[]) order by id",
            &[&vec!["13900000003", "13900000002"]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2, 3]);
    // Text format, with a NULL element and quoting, through a raw Bind.
    let mut raw = Raw::login(&s.proxy, "writer_app").await;
    let mut batch = fe::parse("", "select id from customers where phone = any($1)");
    batch.extend(fe::bind(
        "",
        "",
        &[Some(r#"{NULL, "13900000001" ,13900000003}"#)],
        false,
    ));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(
        msgs.iter().filter(|m| m.tag == b'D').count(),
        2,
        "{}",
        tags(&msgs)
    );
    // A malformed array is refused with the column named; the session goes on.
    let mut batch = fe::parse("", "select id from customers where phone = any($1)");
    batch.extend(fe::bind("", "", &[Some("{{1},{2}}")], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert!(
        msgs.iter()
            .any(|m| m.tag == b'E' && m.field(b'M').is_some_and(|t| t.contains("customers.phone"))),
        "{}",
        tags(&msgs)
    );
    // A role without lookup may not, as with `=`; literal arrays are not encrypted: refused.
    let viewer = client_as(&s.proxy, "viewer_app", "").await;
    let e = viewer
        .query(
            "select id from customers where phone = any($1)",
            &[&vec!["13900000001"]],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501");
    assert_eq!(
        refused(
            &w,
            "select id from customers where phone = any('{13900000001}')"
        )
        .await,
        "0A000"
    );
    // ARRAY[...] of literals: each encrypted in place.
    assert_eq!(
        rows(
            &w,
            "select id from customers where phone = any(array['13900000001', '13900000002']) order by id"
        )
        .await,
        vec![vec!["1".to_string()], vec!["2".into()]]
    );
}

/// A parameter encrypted for one use and read by value elsewhere would put its envelope where
/// the server reads it in clear: refused, and nothing stored. A NULL test elsewhere is fine.
#[tokio::test]
async fn a_parameter_encrypted_for_one_use_is_never_seen_as_ciphertext_elsewhere() {
    let s = setup().await;
    let w = client_as(&s.proxy, "writer_app", "").await;
    for sql in [
        "insert into customers (id, phone, name) values ($1, $2, $2)",
        "insert into customers (id, phone, name) values ($1, $2, upper($2))",
        "select id, $2 from customers where id = $1 and phone = $2",
    ] {
        let e = w.query(sql, &[&1i32, &"13900000001"]).await.expect_err(sql);
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "0A000", "{sql}");
        assert!(db.message().contains("parameter $2"), "{}", db.message());
    }
    let db = direct(&s.cluster).await;
    let n: i64 = db
        .query_one("select count(*) from customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was stored");
    // Near neighbours: two parameters; a NULL test of the same one (the optional filter).
    w.execute(
        "insert into customers (id, phone, name) values ($1, $2, $3)",
        &[&1i32, &"13900000001", &"13900000001"],
    )
    .await
    .unwrap();
    let name: String = db
        .query_one("select name from customers where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "13900000001");
    let optional = "select id from customers where ($1::text is null or phone = $1) order by id";
    let got = w.query(optional, &[&"13900000001"]).await.unwrap();
    assert_eq!(got.len(), 1);
    let got = w.query(optional, &[&None::<&str>]).await.unwrap();
    assert_eq!(got.len(), 1, "a NULL filter matches every row");
}
