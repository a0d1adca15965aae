//! Anomaly limits and the audit trail against a client that tries to get around them (issue
//! "Anomaly limits and the audit trail that no client can evade"), through an enforcing pgveil
//! on a real PostgreSQL. The policy allows 50 rows of level `important` per login per hour,
//! then denies. Each way around gets its own login (a member of the policy's group role), so
//! each starts with an empty window; each asserts the rows received, the refusal, the window
//! (what the login may still read), and the audit record's rows and columns.
use pgveil::config::EnforcementConfig;
use serde_json::Value;

use crate::support::write_fixture::{policy_files, PolicyFiles, POLICY};
use crate::support::*;

/// Rows of level `important` a login may receive per hour.
const LIMIT: usize = 50;
/// Customers in the table: more than the limit.
const CUSTOMERS: usize = 203;

struct Evasion {
    cluster: pgveil_testkit::PgCluster,
    proxy: pgveil::app::RunningProxy,
    log: std::path::PathBuf,
    _files: PolicyFiles,
}

/// The cluster, 203 customers written through pgveil (phones encrypted), and pgveil with the
/// limit and an audit log. `logins`: created as members of `writer_app` (phones in clear).
async fn setup(logins: &[&str]) -> Evasion {
    let cluster = pg_trust();
    // `name` is classified but stored in clear, so the server can compute on it.
    let policy = POLICY.replace(
        "    points:",
        "    name:    { level: important, kind: cn_name }\n    points:",
    );
    let files = policy_files(&format!(
        "{policy}anomaly:\n  - {{ name: bulk, level: important, max_rows: {LIMIT}, per: 1h, then: deny }}\n"
    ));
    let db = direct(&cluster).await;
    let mut sql = String::from(
        "create role writer_app login; create role viewer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         grant all on all tables in schema public to public;",
    );
    for l in logins {
        sql.push_str(&format!("create role {l} login in role writer_app;"));
    }
    db.batch_execute(&sql).await.unwrap();
    let log = files.dir.path().join("audit.jsonl");
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(
        files.policy.clone(),
        files.keyring.clone(),
        "postgres",
    ));
    config.audit = Some(pgveil::audit::AuditConfig::new(&log));
    let proxy = proxy_with(config).await;
    let values: Vec<String> = (1..=CUSTOMERS)
        .map(|i| format!("({i}, 'name{i}', '139{i:08}')"))
        .collect();
    let w = client_as(&proxy, "writer_app", "").await;
    w.batch_execute(&format!(
        "insert into customers (id, name, phone) values {}",
        values.join(",")
    ))
    .await
    .unwrap();
    // The core promise: what the database holds is ciphertext.
    let stored: String = db
        .query_one("select phone from customers where id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("pgv1:"), "{stored}");
    Evasion {
        cluster,
        proxy,
        log,
        _files: files,
    }
}

impl Evasion {
    /// Stop pgveil (its log closed) and return the statement records of `login`.
    async fn records(self, login: &str) -> Vec<Value> {
        self.proxy.shutdown().await;
        records_of(&self.log, login)
    }
}

fn records_of(log: &std::path::Path, login: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "statement" && r["login"] == login)
        .collect()
}

/// A record of `login` whose outcome and rows are these, naming a protected column of
/// `public.customers`.
fn assert_record(records: &[Value], outcome: &str, rows: usize) {
    let found = records.iter().any(|r| {
        let columns = r["columns"].to_string();
        r["outcome"] == outcome
            && r["rows"] == rows as u64
            && (columns.contains("public.customers.phone")
                || columns.contains("public.customers.name"))
    });
    assert!(
        found,
        "no record with outcome {outcome} and rows {rows}: {records:#?}"
    );
}

fn data_rows(msgs: &[Msg]) -> usize {
    msgs.iter().filter(|m| m.tag == b'D').count()
}

fn close_portal(name: &str) -> Vec<u8> {
    let mut body = vec![b'P'];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    fe::raw(b'C', &body)
}

/// The ErrorResponse of the anomaly rule among `msgs`.
fn stopped_by_rule(msgs: &[Msg]) -> bool {
    msgs.iter().any(|m| {
        m.tag == b'E'
            && m.sqlstate().as_deref() == Some("42501")
            && m.field(b'M')
                .is_some_and(|t| t.contains("anomaly rule bulk"))
    })
}

/// How many more rows of the level `login` may read now (the window's room).
async fn room(proxy: &pgveil::app::RunningProxy, login: &str) -> usize {
    let mut raw = Raw::login(proxy, login).await;
    raw.send(&fe::query("select id, phone from customers order by id"))
        .await;
    data_rows(&raw.until_ready().await)
}

#[tokio::test]
async fn a_portal_read_in_chunks_counts_every_chunk_and_is_audited() {
    let e = setup(&["chunks", "partial", "tail"]).await;
    // Five Executes of 40 rows, then Close and Sync: 50 rows, then the rule stops it.
    let mut raw = Raw::login(&e.proxy, "chunks").await;
    let mut batch = fe::parse("", "select id, phone from customers order by id");
    batch.extend(fe::bind("p", "", &[], false));
    for _ in 0..5 {
        batch.extend(fe::execute("p", 40));
    }
    batch.extend(close_portal("p"));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), LIMIT, "{}", tags(&msgs));
    assert!(stopped_by_rule(&msgs), "{}", tags(&msgs));
    // The window is full: the next read is refused before it runs; the session goes on.
    raw.send(&fe::query("select phone from customers where id = 1"))
        .await;
    let next = raw.until_ready().await;
    assert!(
        stopped_by_rule(&next) && data_rows(&next) == 0,
        "{}",
        tags(&next)
    );
    raw.send(&fe::query("select count(*) from shipments")).await;
    assert_eq!(data_rows(&raw.until_ready().await), 1);
    // A cursor cannot read around the count: cursors over classified columns are refused.
    let c = client_as(&e.proxy, "chunks", "").await;
    let err = c
        .batch_execute(
            "begin; declare cur cursor for select name from customers; fetch 100 from cur",
        )
        .await
        .unwrap_err();
    assert!(err.code().is_some(), "{err}");
    drop(c);

    // Within the limit: two chunks of 20, then Close: 40 rows, one record with 40 rows.
    let mut raw = Raw::login(&e.proxy, "partial").await;
    let mut batch = fe::parse("", "select id, phone from customers order by id");
    batch.extend(fe::bind("p", "", &[], true));
    batch.extend(fe::execute("p", 20));
    batch.extend(fe::execute("p", 20));
    batch.extend(close_portal("p"));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), 40, "{}", tags(&msgs));
    assert_eq!(
        msgs.iter().filter(|m| m.tag == b's').count(),
        2,
        "{}",
        tags(&msgs)
    );
    assert_eq!(room(&e.proxy, "partial").await, LIMIT - 40);

    // Chunks, then Execute 0 for the rest: CommandComplete says 5, the record says 45.
    let mut raw = Raw::login(&e.proxy, "tail").await;
    let mut batch = fe::parse("", "select id, phone from customers where id <= 45");
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 20));
    batch.extend(fe::execute("", 20));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), 45, "{}", tags(&msgs));
    assert!(!stopped_by_rule(&msgs));
    assert_eq!(room(&e.proxy, "tail").await, LIMIT - 45);

    let log = e.log.clone();
    e.proxy.shutdown().await;
    assert_record(&records_of(&log, "chunks"), "denied", LIMIT);
    let partial = records_of(&log, "partial");
    assert_record(&partial, "ok", 40);
    assert!(
        partial
            .iter()
            .any(|r| r["reason"].as_str().is_some_and(|t| t.contains("closed"))),
        "{partial:#?}"
    );
    assert_record(&records_of(&log, "tail"), "ok", 45);
    drop(e.cluster);
}

#[tokio::test]
async fn rows_before_an_error_count_and_are_audited() {
    let e = setup(&["divider"]).await;
    let c = client_as(&e.proxy, "divider", "").await;
    // Rows 1..29 leave (in the table's order, no sort to compute ahead) before division by
    // zero at id 30; the client library drops the rows of a failed query, but they were on
    // the wire.
    let err = c
        .simple_query("select phone, 1 / (id - 30) from customers")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    // The 29 rows were delivered on the wire and counted: 21 remain.
    assert_eq!(room(&e.proxy, "divider").await, LIMIT - 29);
    let records = e.records("divider").await;
    assert_record(&records, "error", 29);
}

#[tokio::test]
async fn computed_outputs_count_as_their_columns_and_gathering_is_refused() {
    let e = setup(&[
        "concat", "nested", "selfjoin", "combined", "scalars", "gather", "plain",
    ])
    .await;
    // A concatenation is the column: 50 rows, then stopped.
    let mut raw = Raw::login(&e.proxy, "concat").await;
    raw.send(&fe::query("select name || '' from customers"))
        .await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), LIMIT);
    assert!(stopped_by_rule(&msgs));
    // Hidden in a derived table and cast: still the column.
    let mut raw = Raw::login(&e.proxy, "nested").await;
    raw.send(&fe::query(
        "select x from (select upper(name)::varchar as x, id from customers) s order by id",
    ))
    .await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), LIMIT);
    assert!(stopped_by_rule(&msgs));
    // Four customers per row count as four: 12 rows (48 values), the 13th would pass 50.
    let mut raw = Raw::login(&e.proxy, "selfjoin").await;
    raw.send(&fe::query(
        "select a.name, b.name, c.name, d.name from customers a
         join customers b on b.id = a.id + 50 join customers c on c.id = a.id + 100
         join customers d on d.id = a.id + 150 order by a.id",
    ))
    .await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), 12, "{}", tags(&msgs));
    assert!(stopped_by_rule(&msgs));
    // The same four customers combined into one value, in a CTE read twice: still four.
    let mut raw = Raw::login(&e.proxy, "combined").await;
    raw.send(&fe::query(
        "with c as (select id, name from customers)
         select x from (select a.name || b.name || c.name || d.name as x, a.id from c a
           join c b on b.id = a.id + 50 join c c on c.id = a.id + 100
           join c d on d.id = a.id + 150) s order by id",
    ))
    .await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), 12, "{}", tags(&msgs));
    assert!(stopped_by_rule(&msgs));
    // Scalar subqueries each add a customer to every row: 3 per row, 16 rows (48), then
    // stopped.
    let mut raw = Raw::login(&e.proxy, "scalars").await;
    raw.send(&fe::query(
        "select name, (select name from customers d where d.id = c.id + 1),
                (select name from customers d where d.id = c.id + 2) from customers c order by id",
    ))
    .await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), 16, "{}", tags(&msgs));
    assert!(stopped_by_rule(&msgs));
    // Aggregates that gather many rows into one cannot be counted: refused before they run.
    let g = client_as(&e.proxy, "gather", "").await;
    for sql in [
        "select string_agg(name, ',') from customers",
        "select array_agg(name) from customers",
        "select json_agg(s) from (select id, name from customers) s",
        "select (select string_agg(name, ',') from customers)",
        "select array(select name from customers)",
        "select pg_catalog.jsonb_agg(name || '') from customers",
        "select string_agg(name, ',') over () from customers",
        "select name, lag(name, 1) over (order by id), lag(name, 2) over (order by id) from customers",
        "select percentile_disc(array[0, 0.5, 1]) within group (order by name) from customers",
        "select sum(length(name)::numeric * 10::numeric ^ id) from customers",
        "with recursive r(i, s) as (select 1, ''::text union all
           select i + 1, s || (select name from customers where id = i) from r where i < 203)
         select s from r order by i desc limit 1",
    ] {
        let e = g.simple_query(sql).await.unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
        assert!(
            db.message().contains("gathers values"),
            "{sql}: {}",
            db.message()
        );
    }
    // Near neighbours: aggregates over unprotected columns, and a count, run.
    let p = client_as(&e.proxy, "plain", "").await;
    let rows = p
        .simple_query("select string_agg(id::text, ','), count(name), max(name) from customers")
        .await
        .unwrap();
    assert!(rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
    assert_eq!(room(&e.proxy, "gather").await, LIMIT);
    let log = e.log.clone();
    e.proxy.shutdown().await;
    assert_record(&records_of(&log, "concat"), "denied", LIMIT);
    assert_record(&records_of(&log, "nested"), "denied", LIMIT);
    assert_record(&records_of(&log, "selfjoin"), "denied", 12);
    drop(e.cluster);
}

#[tokio::test]
async fn batches_pipelines_and_copy_stop_at_the_limit() {
    let e = setup(&["multi", "pipeline", "copier", "returner"]).await;
    // Five statements in one Query: 50 rows in all.
    let mut raw = Raw::login(&e.proxy, "multi").await;
    raw.send(&fe::query(&"select id, phone from customers;".repeat(5)))
        .await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), LIMIT);
    assert!(stopped_by_rule(&msgs));
    // Five Parse/Bind/Execute before one Sync: 50 rows in all.
    let mut raw = Raw::login(&e.proxy, "pipeline").await;
    let mut batch = Vec::new();
    for _ in 0..5 {
        batch.extend(fe::parse("", "select id, phone from customers"));
        batch.extend(fe::bind("", "", &[], true));
        batch.extend(fe::execute("", 0));
    }
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert_eq!(data_rows(&msgs), LIMIT);
    assert!(stopped_by_rule(&msgs));
    // COPY TO STDOUT: rows are CopyData, counted the same.
    let mut raw = Raw::login(&e.proxy, "copier").await;
    raw.send(&fe::query(
        "copy (select id, phone from customers) to stdout with (format csv, header)",
    ))
    .await;
    let msgs = raw.until_ready().await;
    let copied = msgs.iter().filter(|m| m.tag == b'd').count();
    assert_eq!(copied, LIMIT + 1, "50 rows and the header line");
    assert!(stopped_by_rule(&msgs));
    // RETURNING counts: 10 rows returned, 40 left.
    let r = client_as(&e.proxy, "returner", "").await;
    let returned = r
        .query(
            "update customers set name = name where id <= 10 returning phone",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(returned.len(), 10);
    assert_eq!(room(&e.proxy, "returner").await, LIMIT - 10);
    let log = e.log.clone();
    e.proxy.shutdown().await;
    assert_record(&records_of(&log, "multi"), "denied", LIMIT);
    assert_record(&records_of(&log, "pipeline"), "denied", LIMIT);
    assert_record(&records_of(&log, "copier"), "denied", LIMIT);
    assert_record(&records_of(&log, "returner"), "ok", 10);
    drop(e.cluster);
}

#[tokio::test]
async fn twenty_sessions_of_one_login_share_the_window() {
    let e = setup(&["bulk_export"]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let proxy_addr = e.proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::login_at(proxy_addr, "bulk_export").await;
            // Every session tries another path: simple, extended in chunks, binary.
            match i % 3 {
                0 => {
                    raw.send(&fe::query("select id, phone from customers"))
                        .await
                }
                1 => {
                    let mut b = fe::parse("", "select id, phone from customers");
                    b.extend(fe::bind("p", "", &[], false));
                    for _ in 0..10 {
                        b.extend(fe::execute("p", 25));
                    }
                    b.extend(fe::sync());
                    raw.send(&b).await;
                }
                _ => {
                    let mut b = fe::parse("", "select phone || '' from customers");
                    b.extend(fe::bind("", "", &[], true));
                    b.extend(fe::execute("", 0));
                    b.extend(fe::sync());
                    raw.send(&b).await;
                }
            }
            data_rows(&raw.until_ready().await)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total, LIMIT,
        "20 sessions of one login received {total} rows"
    );
    let records = e.records("bulk_export").await;
    let recorded: u64 = records.iter().filter_map(|r| r["rows"].as_u64()).sum();
    assert_eq!(recorded, LIMIT as u64, "{records:#?}");
}

#[tokio::test]
async fn a_login_that_disconnects_mid_portal_is_audited() {
    let e = setup(&["leaver"]).await;
    let mut raw = Raw::login(&e.proxy, "leaver").await;
    let mut batch = fe::parse("", "select id, phone from customers order by id");
    batch.extend(fe::bind("p", "", &[], false));
    batch.extend(fe::execute("p", 15));
    batch.extend(fe::execute("p", 15));
    // A Flush, not a Sync: the portal stays open, and the client goes away.
    batch.extend(fe::raw(b'H', &[]));
    raw.send(&batch).await;
    let mut got = 0;
    while got < 30 {
        match raw.recv().await {
            Some(m) if m.tag == b'D' => got += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(got, 30);
    drop(raw);
    // The session's end is seen; its count stands.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(room(&e.proxy, "leaver").await, LIMIT - 30);
    let records = e.records("leaver").await;
    assert!(
        records.iter().any(|r| r["rows"] == 30
            && r["reason"]
                .as_str()
                .is_some_and(|t| t.contains("session ended"))),
        "{records:#?}"
    );
}

#[tokio::test]
async fn a_padded_statement_is_counted_and_cannot_take_pgveil_down() {
    let e = setup(&["padder"]).await;
    // The padding that once made the audit record too big for a datagram, and whose
    // 7,000-deep expression exhausted a thread's stack (aborting the process).
    let padded = format!(
        "select id, phone from customers where id > 0{}",
        " and id > 0".repeat(7000)
    );
    let mut raw = Raw::login(&e.proxy, "padder").await;
    raw.send(&fe::query(&padded)).await;
    let msgs = raw.until_ready().await;
    let errors: Vec<_> = msgs.iter().filter_map(|m| m.field(b'M')).collect();
    assert_eq!(data_rows(&msgs), LIMIT, "{} {errors:?}", tags(&msgs));
    assert!(stopped_by_rule(&msgs));
    // Past the bound: refused before it is parsed; the session and pgveil go on.
    let deeper = format!(
        "select id from customers where id > 0{}",
        " and id > 0".repeat(17_000)
    );
    raw.send(&fe::query(&deeper)).await;
    let msgs = raw.until_ready().await;
    assert!(
        msgs.iter()
            .any(|m| m.sqlstate().as_deref() == Some("54001")),
        "{}",
        tags(&msgs)
    );
    let c = client_as(&e.proxy, "writer_app", "").await;
    assert_eq!(c.query("select 1", &[]).await.unwrap().len(), 1);
    let records = e.records("padder").await;
    assert_record(&records, "denied", LIMIT);
}

#[tokio::test]
async fn sql_fetch_cannot_read_a_protocol_portal_past_the_policy() {
    let e = setup(&["fetcher"]).await;
    let mut raw = Raw::login(&e.proxy, "fetcher").await;
    raw.send(&fe::query("begin")).await;
    raw.until_ready().await;
    // A portal bound over protected data, then read by SQL FETCH instead of Execute: the
    // server would answer from the portal, past the transforms, the count and the audit.
    let mut batch = fe::parse("s", "select id, name, phone from customers");
    batch.extend(fe::bind("c", "s", &[], false));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    raw.until_ready().await;
    for sql in [
        "fetch all from c",
        "FETCH 10 c",
        "select 1; fetch forward 5 in c",
    ] {
        raw.send(&fe::query(sql)).await;
        let msgs = raw.until_ready().await;
        assert_eq!(data_rows(&msgs), 0, "{sql}: {}", tags(&msgs));
        assert!(
            msgs.iter().any(|m| m.sqlstate().as_deref() == Some("42501")
                && m.field(b'M').is_some_and(|t| t.contains("FETCH"))),
            "{sql}: {}",
            tags(&msgs)
        );
        raw.send(&fe::query("rollback")).await;
        raw.until_ready().await;
        raw.send(&fe::query("begin")).await;
        raw.until_ready().await;
        let mut batch = fe::bind("c", "s", &[], false);
        batch.extend(fe::sync());
        raw.send(&batch).await;
        raw.until_ready().await;
    }
    // Execute reads it through the policy.
    let mut batch = fe::execute("c", 5);
    batch.extend(fe::sync());
    raw.send(&batch).await;
    assert_eq!(data_rows(&raw.until_ready().await), 5);
    // Near neighbour: once the portal is closed, a SQL cursor over unprotected data fetches.
    let mut batch = close_portal("c");
    batch.extend(fe::sync());
    raw.send(&batch).await;
    raw.until_ready().await;
    raw.send(&fe::query(
        "declare k cursor for select id from shipments; fetch all from k; close k; commit",
    ))
    .await;
    let msgs = raw.until_ready().await;
    assert!(msgs.iter().all(|m| m.tag != b'E'), "{}", tags(&msgs));
    e.proxy.shutdown().await;
}
