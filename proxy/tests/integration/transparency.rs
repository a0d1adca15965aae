//! Transparent under a policy: what cannot reach protected data behaves exactly as PostgreSQL.
//! The same statements run directly in one database and through pgveil (policy loaded) in a
//! twin database, and every answer (rows, command tags, SQLSTATEs) must be the same; reading
//! catalogs costs one kept connection per database and one read per DDL that matters.
use tokio_postgres::SimpleQueryMessage;

use crate::support::read_fixture;
use crate::support::write_fixture::{policy_files, POLICY};
use crate::support::*;

/// Statements PostgreSQL's regression suite and legacy applications run, none of which can
/// reach a table of the policy: code, views, rules, role switches, column words that the
/// policy's tables also use (`name`, `phone`), statements sqlparser cannot parse.
const UNPROTECTED: &[&str] = &[
    "create role regress_user login",
    "create table road (name text, phone text, thepath path)",
    "insert into road values ('I- 580', '13812345678', '[(0,0),(1,1)]'), ('Main St', NULL, NULL)",
    "SELECT name, phone FROM ONLY road WHERE name ~ 'I- .*' ORDER BY name",
    "select name, count(*) from road group by name order by 1",
    "create function road_count() returns bigint language plpgsql as $$ begin return (select count(*) from road); end $$",
    "select road_count()",
    "create function dyn() returns int language plpgsql as $$ declare n int; begin execute 'select count(*) from road' into n; return n; end $$",
    "select dyn()",
    "create view road_names as select name from road",
    "select * from road_names order by name",
    "create materialized view road_mv as select name, phone from road",
    "refresh materialized view road_mv",
    "create rule road_log as on insert to road do also notify road",
    "insert into road values ('rule', NULL, NULL)",
    "DO $$ begin execute 'create table made_by_do (x int)'; end $$",
    "DO $$ begin perform 1; end $$",
    "create function on_ddl() returns event_trigger language plpgsql as $$ begin null; end $$",
    "create event trigger ddl_watch on ddl_command_start execute function on_ddl()",
    "drop event trigger ddl_watch",
    "alter default privileges grant select on tables to public",
    "grant select on road to regress_user",
    "SET SESSION AUTHORIZATION regress_user",
    "select current_user, session_user",
    "select name from road order by name",
    "RESET SESSION AUTHORIZATION",
    "SET ROLE regress_user",
    "select current_user",
    "RESET ROLE",
    "begin; set local role regress_user; select current_user; commit",
    "select set_config('role', 'regress_user', false)",
    "select current_user",
    "reset role",
    "select current_user",
    "set client_encoding to 'UTF8'",
    "set standard_conforming_strings = on",
    "select 'it''s', E'\\x41'",
    "select U&'\\0041'",
    "prepare p(text) as select name from road where name = $1",
    "execute p('Main St')",
    "deallocate p",
    "drop view road_names",
    "discard all",
    "select name from road where (((",
    "select * from no_such_table",
    "copy (select name from road order by name) to stdout",
];

/// One answer as text: rows, command tags and SQLSTATEs, in order.
async fn answer(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(msgs) => msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    let vals: Vec<String> = (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect();
                    Some(format!("row {}", vals.join("|")))
                }
                SimpleQueryMessage::CommandComplete(n) => Some(format!("ok {n}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => match e.as_db_error() {
            Some(d) => format!("error {} {}", d.code().code(), d.message()),
            None => format!("error {e}"),
        },
    }
}

async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The value of a counter with `labels` in the metrics text (0 when absent).
fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    let key = format!("pgveil_{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_database_without_protected_data_behaves_as_postgres() {
    let cluster = pg_trust();
    let files = policy_files(POLICY);
    let admin = direct(&cluster).await;
    admin
        .batch_execute("create database direct_db")
        .await
        .unwrap();
    admin
        .batch_execute("create database veiled_db")
        .await
        .unwrap();
    let proxy = files.proxy(&cluster).await;
    let plain = connect(&cluster.superuser_conninfo("direct_db")).await;
    let veiled = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=veiled_db sslmode=disable",
        proxy.addr.port()
    ))
    .await;
    let mut differ = Vec::new();
    for sql in UNPROTECTED {
        // The role exists cluster-wide: create it once, directly.
        if sql.starts_with("create role") {
            admin.batch_execute(sql).await.unwrap();
            continue;
        }
        let want = answer(&plain, sql).await;
        let got = answer(&veiled, sql).await;
        if want != got {
            differ.push(format!("{sql}\n  direct: {want}\n  pgveil: {got}"));
        }
    }
    assert!(differ.is_empty(), "answers differ:\n{}", differ.join("\n"));
    let m = metrics_text(&proxy).await;
    assert_eq!(
        counter(&m, "catalog_connections_total", "database=\"veiled_db\""),
        1,
        "{m}"
    );
    // No DDL above can make the database protect anything: the catalog is read once.
    assert_eq!(
        counter(&m, "catalog_reads_total", "database=\"veiled_db\""),
        1,
        "{m}"
    );
    assert!(nonzero(&m, "pgveil_denied_queries_total").is_empty(), "{m}");

    // Creating a table of the policy makes the database protected: one more read, on the
    // same connection, and what is written to it from then on is encrypted.
    let tag = answer(
        &veiled,
        "create table customers (id int primary key, name text, phone text, id_card text, address text, points text)",
    )
    .await;
    assert_eq!(tag, "ok 0");
    assert_eq!(
        answer(
            &veiled,
            "insert into customers (id, phone, id_card) values (1, '13900001111', '110101199003071234')"
        )
        .await,
        "ok 1"
    );
    let m = metrics_text(&proxy).await;
    assert_eq!(
        counter(&m, "catalog_connections_total", "database=\"veiled_db\""),
        1,
        "{m}"
    );
    assert_eq!(
        counter(&m, "catalog_reads_total", "database=\"veiled_db\""),
        2,
        "{m}"
    );
    // Stored as ciphertext that decrypts to what was written.
    let stored = connect(&cluster.superuser_conninfo("veiled_db")).await;
    let row = stored
        .query_one("select phone, id_card from customers", &[])
        .await
        .unwrap();
    let keys = pgveil_policy::keyring::Keyring::load(&files.keyring)
        .unwrap()
        .into_key_set();
    for (i, domain, plain) in [
        (0, "phone", "13900001111"),
        (1, "id_card", "110101199003071234"),
    ] {
        let v: String = row.get(i);
        assert!(v.starts_with("pgv1:"), "stored in clear: {v}");
        let opened = keys.domain(domain).decrypt(v.as_bytes()).unwrap();
        assert_eq!(opened, plain.as_bytes());
    }
    // A login without a policy role gets the defaults: the phone masked, the id card denied.
    let denied = answer(&veiled, "select id_card from customers").await;
    assert!(denied.starts_with("error 42501 "), "{denied}");
    let phone = answer(&veiled, "select phone from customers").await;
    assert!(
        phone.starts_with("row ") && !phone.contains("13900001111"),
        "{phone}"
    );
}

#[tokio::test]
async fn in_a_protected_database_only_paths_to_protected_data_are_judged() {
    let s = read_fixture::setup().await;
    direct(&s.cluster)
        .await
        .batch_execute("grant create on schema public to public")
        .await
        .unwrap();
    let c = client_as(&s.proxy, "support_ann", "").await;
    // A column word alone is not a path: tables of the application's own, their views,
    // functions, rules and DO blocks pass.
    for sql in [
        "create table road (name text, phone text)",
        "insert into road values ('I- 580', '13812345678')",
        "SELECT name, phone FROM ONLY road WHERE name ~ 'I- .*'",
        "select name from road order by name",
        "create view road_names as select name from road",
        "select name from road_names where name like 'I%'",
        "create function road_count() returns bigint language sql as $$ select count(*) from road $$",
        "select road_count()",
        "create rule road_log as on insert to road do also notify road",
        "DO $$ begin perform count(*) from road; end $$",
        "select name from road where (((",
    ] {
        let got = answer(&c, sql).await;
        assert!(
            !got.starts_with("error 42501") && !got.starts_with("error 0A000"),
            "{sql}: refused: {got}"
        );
    }
    // Near neighbours that reach the protected table stay refused.
    for (sql, code) in [
        (
            "create view names_again as select name from customers",
            "42501",
        ),
        (
            "create function leak() returns text language sql as $$ select name from customers limit 1 $$",
            "42501",
        ),
        (
            "DO $$ begin perform name from customers; end $$",
            "42501",
        ),
        (
            "DO $$ begin execute 'select 1'; end $$",
            "42501",
        ),
        ("select name from customers where (((", "0A000"),
        (
            "select name from road, customers where road.name = customers.name",
            "42501",
        ),
    ] {
        let got = answer(&c, sql).await;
        assert!(got.starts_with(&format!("error {code} ")), "{sql}: {got}");
    }
    let m = metrics_text(&s.proxy).await;
    assert_eq!(
        counter(&m, "catalog_connections_total", "database=\"postgres\""),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn a_login_created_directly_gets_its_policy_at_once() {
    let s = read_fixture::setup().await;
    // Warm the catalog, then create a login in a dispatcher group behind pgveil's back.
    let first = client_as(&s.proxy, "dispatch_app", "").await;
    let clear = read_fixture::rows(&first, "select phone from customers order by id").await;
    assert_eq!(clear[0][0], read_fixture::ROWS[0].2);
    let db = direct(&s.cluster).await;
    db.batch_execute("create role dispatch_two login in role dispatch_app")
        .await
        .unwrap();
    let fresh = client_as(&s.proxy, "dispatch_two", "").await;
    let rows = read_fixture::rows(&fresh, "select phone from customers order by id").await;
    assert_eq!(
        rows[0][0],
        read_fixture::ROWS[0].2,
        "the new dispatcher login got another role's view"
    );
}

/// DDL in an open transaction holds an exclusive lock on a table that a view reads; the next
/// statement of that session needs a catalog read, which must not wait behind the session's
/// own lock (it would wait for ever; before, 40 s and a 57P03 refusal).
#[tokio::test]
async fn a_catalog_read_never_waits_behind_a_sessions_own_lock() {
    let s = read_fixture::setup().await;
    let c = client_as(&s.proxy, "postgres", "").await;
    let other = client_as(&s.proxy, "support_ann", "").await;
    read_fixture::rows(&c, "select id from customers where id = 1").await;
    read_fixture::rows(&c, "begin").await;
    // orders is read by the view v_orders; customers by v_contacts.
    read_fixture::rows(&c, "alter table orders add column extra int").await;
    read_fixture::rows(&c, "alter table customers add column extra int").await;
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        read_fixture::rows(&c, "select name from customers where id = 1"),
    )
    .await
    .expect("the statement waited for a catalog read blocked by its own session's lock");
    assert_eq!(answered.len(), 1);
    read_fixture::rows(&c, "commit").await;
    // After the commit the views are read again: the view over protected data is masked.
    let phones = read_fixture::rows(&other, "select phone from v_contacts order by id").await;
    assert_eq!(
        phones[0][0],
        read_fixture::mask("cn_mobile", read_fixture::ROWS[0].2, &s.keys)
    );
}

/// A FunctionCall ('F') message: `oid` with text arguments, text result.
fn function_call(oid: u32, args: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&oid.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(args.len() as i16).to_be_bytes());
    for a in args {
        b.extend_from_slice(&(a.len() as i32).to_be_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    fe::raw(b'F', &b)
}

/// The fast-path function call protocol: large objects through libpq (psql's `\lo_import`
/// and `\lo_export`) work where data is protected; any other function called by OID is
/// refused there, and passes where nothing is protected.
#[tokio::test]
async fn large_objects_pass_the_fast_path_and_other_calls_do_not() {
    let s = read_fixture::setup().await;
    let db = direct(&s.cluster).await;
    // The OIDs pgveil lets through are the server's large-object functions.
    let rows = db
        .query(
            "select oid::int8 from pg_proc where proname in ('lo_create', 'lo_open', 'lo_close',
             'loread', 'lowrite', 'lo_lseek', 'lo_creat', 'lo_tell', 'lo_unlink', 'lo_truncate',
             'lo_lseek64', 'lo_tell64', 'lo_truncate64') order by oid",
            &[],
        )
        .await
        .unwrap();
    let oids: Vec<u32> = rows.iter().map(|r| r.get::<_, i64>(0) as u32).collect();
    assert_eq!(
        oids,
        pgveil::enforce::frontend::LARGE_OBJECT_FUNCTIONS.to_vec()
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "運單 SF1234567890\n".repeat(2000)).unwrap();
    let script = format!(
        "\\lo_import {}\n\\lo_export :LASTOID {}\n\\lo_unlink :LASTOID\n",
        input.display(),
        output.display()
    );
    let script_path = dir.path().join("lo.sql");
    std::fs::write(&script_path, script).unwrap();
    let out = tokio::process::Command::new(psql())
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &s.proxy.addr.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-f",
        ])
        .arg(&script_path)
        .env("PGSSLMODE", "disable")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&input).unwrap()
    );

    // int4pl(int4, int4) by OID: refused where data is protected.
    let int4pl: i64 = db
        .query_one("select 'int4pl(int4, int4)'::regprocedure::oid::int8", &[])
        .await
        .unwrap()
        .get(0);
    let mut raw = Raw::login(&s.proxy, "postgres").await;
    raw.send(&function_call(int4pl as u32, &["2", "3"])).await;
    let msgs = raw.until_ready().await;
    let err = msgs.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(err.sqlstate().as_deref(), Some("0A000"));

    // In a database that protects nothing, the same call passes.
    db.batch_execute("create database plain_db").await.unwrap();
    let mut raw = Raw::connect(&s.proxy).await;
    raw.send(&pgveil::protocol::startup::encode_startup(&[
        ("user", "postgres"),
        ("database", "plain_db"),
    ]))
    .await;
    raw.until_ready().await;
    raw.send(&function_call(int4pl as u32, &["2", "3"])).await;
    let msgs = raw.until_ready().await;
    let result = msgs.iter().find(|m| m.tag == b'V').unwrap_or_else(|| {
        panic!(
            "no FunctionCallResponse: {} {:?}",
            tags(&msgs),
            msgs.iter().find_map(|m| m.field(b'M'))
        )
    });
    assert!(result.body.ends_with(b"5"), "{:?}", result.body);
}
