//! The analysis against a hand-built catalog: output sources through every scope form,
//! usages, refusals, and a property test that it never panics.
use super::*;
use crate::catalog::snapshot::{
    Attribute, Dependency, FunctionSource, RawCatalog, RelKind, Relation,
};
use crate::sql::Scanner;
use pgveil_policy::CompiledPolicy;
use proptest::prelude::*;
use std::sync::Arc;

const POLICY: &str = r#"
version: 1
levels: [core, important, general]
roles:
  dispatcher: [dispatch_app]
  support: [support_app]
  owner: [owner_app]
tables:
  public.customers:
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic }
    phone:   { level: important, kind: cn_mobile, encrypt: deterministic }
    name:    { level: important, kind: cn_name }
  public.shipments:
    sender_phone: { level: important, kind: cn_mobile, encrypt: deterministic }
    address:      { level: important, kind: address, encrypt: randomized }
    id_card:      { level: core, kind: cn_id_card, encrypt: deterministic, domain: other }
rules:
  - { roles: [dispatcher], level: important, action: allow }
  - { roles: [dispatcher], level: core, action: mask }
  - { roles: [support], level: important, action: mask }
  - { roles: [owner], level: core, action: allow }
  - { roles: [owner], level: important, action: allow }
defaults: { core: deny, important: mask, general: allow }
"#;

fn rel(oid: u32, schema: &str, name: &str, kind: RelKind, cols: &[&str]) -> Relation {
    Relation {
        oid,
        schema: schema.into(),
        name: name.into(),
        kind,
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, c)| Attribute {
                name: (*c).into(),
                attnum: i as i16 + 1,
                type_oid: 25,
                protected: None,
            })
            .collect(),
        exposes: Vec::new(),
    }
}

pub(super) struct Fixture {
    policy: Arc<CompiledPolicy>,
    snapshot: Snapshot,
}

pub(super) fn fixture() -> Fixture {
    let policy = CompiledPolicy::from_str("policy.yaml", POLICY).unwrap();
    let raw = RawCatalog {
        relations: vec![
            rel(
                100,
                "public",
                "customers",
                RelKind::Table,
                &["id", "name", "phone", "id_card", "city"],
            ),
            rel(
                200,
                "public",
                "orders",
                RelKind::Table,
                &["id", "customer_id", "note"],
            ),
            rel(300, "public", "v_contacts", RelKind::View, &["id", "phone"]),
            rel(400, "archive", "customers", RelKind::Table, &["id", "name"]),
            rel(
                600,
                "public",
                "shipments",
                RelKind::Table,
                &["id", "sender_phone", "address", "id_card"],
            ),
        ],
        dependencies: vec![Dependency {
            from: 300,
            on: 100,
            attnum: 3,
        }],
        functions: vec![FunctionSource {
            oid: 500,
            name: "first_name".into(),
            language: "sql".into(),
            body: "select name from customers limit 1".into(),
        }],
        memberships: vec![],
        original_types: vec![],
        ..Default::default()
    };
    let snapshot = Snapshot::build(raw, &policy);
    Fixture { policy, snapshot }
}

pub(super) fn run(f: &Fixture, login: &str, sql: &str) -> Result<Analysis, Refusal> {
    let roles = f.policy.resolve_roles(login, &[] as &[&str]);
    let env = Env {
        policy: &f.policy,
        snapshot: &f.snapshot,
        roles: &roles,
    };
    analyze(sql, &env)
}

fn outputs(f: &Fixture, login: &str, sql: &str) -> Vec<Src> {
    match run(f, login, sql) {
        Ok(a) => a.statements[0].outputs.clone(),
        Err(r) => panic!("{sql}: refused: {}", r.message),
    }
}

fn col(f: &Fixture, c: &str) -> Src {
    Src::Col(f.policy.column_id("public.customers", c).unwrap())
}

#[test]
fn outputs_follow_aliases_joins_ctes_subqueries_and_set_operations() {
    let f = fixture();
    let (name, phone) = (col(&f, "name"), col(&f, "phone"));
    let p = Src::Pass;
    let cases: &[(&str, Vec<Src>)] = &[
        ("select id, name, phone from customers", vec![p, name, phone]),
        ("select c.name as n, o.note from customers c join orders o on o.customer_id = c.id", vec![name, p]),
        ("select * from orders o, customers c", vec![p, p, p, p, name, phone, col(&f, "id_card"), p]),
        ("select c.* from orders o join customers c on c.id = o.customer_id", vec![p, name, phone, col(&f, "id_card"), p]),
        ("with x as (select name, phone from customers) select phone, name from x", vec![phone, name]),
        ("with x(a, b) as (select name, phone from customers) select b from x", vec![phone]),
        ("select s.n from (select name as n from customers) s", vec![name]),
        ("select name from customers union all select note from orders", vec![name]),
        ("select o.note, l.p from orders o, lateral (select c.phone as p from customers c where c.id = o.customer_id) l", vec![p, phone]),
        ("with recursive r as (select id, name from customers union all select id + 1, name from r where id < 3) select name from r", vec![name]),
        ("select name from archive.customers", vec![p]),
        ("select id from customers where phone = $1", vec![p]),
    ];
    for (sql, expected) in cases {
        assert_eq!(&outputs(&f, "dispatch_app", sql), expected, "{sql}");
    }
}

#[test]
fn masked_columns_may_only_be_read() {
    let f = fixture();
    for sql in [
        "select id from customers where name like 'a%'",
        "select id from customers order by name",
        "select upper(name) from customers",
        "select id from customers c where exists (select 1 from customers d where d.name > 'a')",
        "select name from customers group by name",
        "select count(distinct name) from customers",
        "select c from customers c",
        "select * from v_contacts",
        "select first_name()",
        "select id_card from customers",
        "select name from customers union select 'x'",
    ] {
        let r = run(&f, "support_app", sql).expect_err(sql);
        assert_eq!(r.sqlstate, "42501", "{sql}: {}", r.message);
    }
    // The same reads are fine when only projected.
    for sql in [
        "select name, phone from customers c where c.id = 1",
        "select x.n from (select name n from customers) x",
        "select note from orders order by note",
    ] {
        run(&f, "support_app", sql).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
    }
}

#[test]
fn encrypted_columns_refuse_computation_for_every_role() {
    let f = fixture();
    let r = run(
        &f,
        "dispatch_app",
        "select id from customers where phone like '138%'",
    )
    .unwrap_err();
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("ciphertext"), "{}", r.message);
    // Equality and plain reads are fine for a role allowed to read phones.
    run(
        &f,
        "dispatch_app",
        "select phone from customers where phone = 'x'",
    )
    .unwrap();
    // An unencrypted column may be computed on by a role allowed to read it.
    run(
        &f,
        "dispatch_app",
        "select upper(name) from customers order by name",
    )
    .unwrap();
}

#[test]
fn denied_messages_name_the_column_and_the_rule() {
    let f = fixture();
    let r = run(&f, "support_app", "select id from customers order by name").unwrap_err();
    assert!(r.message.contains("public.customers.name"), "{}", r.message);
    assert!(r.message.contains("rule 3"), "{}", r.message);
    assert!(r.hint.is_some());
}

#[test]
fn unparsable_text_naming_protected_data_is_refused() {
    let f = fixture();
    let r = run(&f, "support_app", "select name from customers where (((").unwrap_err();
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.unanalysable);
    // A DO block is code pgveil cannot read: refused when it names a path to protected data
    // or builds SQL at run time, passed when it can reach nothing protected.
    let r = run(
        &f,
        "support_app",
        "do $$ begin perform count(*) from customers; end $$",
    )
    .unwrap_err();
    assert_eq!(r.sqlstate, "42501");
    let r = run(&f, "support_app", "do $$ begin execute 'select 1'; end $$").unwrap_err();
    assert_eq!(r.sqlstate, "42501");
    let r = run(
        &f,
        "support_app",
        "do language plpython3u $$ plpy.execute('x') $$",
    )
    .unwrap_err();
    assert_eq!(r.sqlstate, "42501");
    run(&f, "support_app", "do $$ begin perform 1; end $$").unwrap();
    // Text spelling a name through U& escapes is never read as naming nothing.
    let r = run(
        &f,
        "support_app",
        r#"select * from U&"\0063ustomers" where ((("#,
    )
    .unwrap_err();
    assert_eq!(r.sqlstate, "0A000");
    // Unparsable text that names nothing protected is the server's to reject.
    run(&f, "support_app", "select note from orders where (((").unwrap();
}

#[test]
fn the_scanner_sends_protected_names_to_the_analysis() {
    let f = fixture();
    let s = Scanner::new(&f.policy, &f.snapshot);
    assert!(s.needs_analysis(b"select * from v_contacts"));
    assert!(s.needs_analysis(b"select first_name()"));
    assert!(s.needs_analysis(b"SET ROLE x"));
    assert!(!s.needs_analysis(b"select note from orders where id = 1"));
}

/// Fragments that make up generated statements: keywords, protected and unprotected names,
/// literals, operators and punctuation.
const FRAGMENTS: &[&str] = &[
    "select",
    "from",
    "where",
    "customers",
    "orders",
    "c",
    "o",
    "name",
    "phone",
    "id_card",
    "id",
    "note",
    "*",
    "c.*",
    ",",
    "(",
    ")",
    "=",
    "like",
    "'x'",
    "$1",
    "1",
    "order by",
    "group by",
    "union",
    "join",
    "on",
    "with x as",
    "lateral",
    "as",
    "exists",
    "in",
    "and",
    "or",
    "not",
    "distinct",
    "::text",
    "||",
    "upper(",
    "count(*)",
    ";",
    "insert into orders",
    "values",
    "update customers set",
    "delete from",
    "returning",
    "case when",
    "then",
    "end",
    "select (",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn analysis_never_panics_and_protected_names_never_pass_unseen(
        picks in prop::collection::vec(0..FRAGMENTS.len(), 1..24),
        cut in 0usize..200,
        junk in "[ -~]{0,6}",
    ) {
        let f = fixture();
        let mut sql: String = picks.iter().map(|&i| FRAGMENTS[i]).collect::<Vec<_>>().join(" ");
        // Mutate: insert junk at a char boundary.
        let at = (0..=sql.len()).filter(|&i| sql.is_char_boundary(i)).nth(cut % (sql.len() + 1)).unwrap_or(0);
        sql.insert_str(at, &junk);
        for login in ["support_app", "dispatch_app", "nobody"] {
            let _ = run(&f, login, &sql);
        }
        let s = Scanner::new(&f.policy, &f.snapshot);
        let names_protected = crate::catalog::words::words(sql.as_bytes())
            .any(|w| matches!(&w[..], b"customers"));
        if names_protected {
            prop_assert!(s.needs_analysis(sql.as_bytes()), "fast path let through: {sql}");
        }
        // What the fast path forwards, the analysis would have forwarded unchanged too: it
        // touches no protected column and encrypts nothing, whoever asks. (The analysis may
        // refuse such text, conservatively, where a bare column name has no table.)
        if !s.needs_analysis(sql.as_bytes()) {
            for login in ["support_app", "dispatch_app"] {
                if let Ok(a) = run(&f, login, &sql) {
                    prop_assert!(
                        a.statements.iter().all(|p| p.touched.is_empty() && p.sites.is_empty()),
                        "fast path skipped work: {sql}"
                    );
                }
            }
        }
    }
}

// ---- the write side ----------------------------------------------------------------------

type Found = Vec<(String, SiteValue, Purpose)>;

fn sites(f: &Fixture, login: &str, sql: &str) -> Found {
    match run(f, login, sql) {
        Ok(a) => a
            .statements
            .iter()
            .flat_map(|s| s.sites.iter())
            .map(|s| (sql[s.start..s.end].to_string(), s.value.clone(), s.purpose))
            .collect(),
        Err(r) => panic!("{sql}: refused: {}", r.message),
    }
}

fn lit(s: &str) -> SiteValue {
    SiteValue::Literal(s.into())
}

#[test]
fn values_for_encrypted_columns_are_found_in_the_text() {
    let f = fixture();
    let store = Purpose::Store;
    let eq = Purpose::Lookup(LookupForm::Eq);
    let cases: Vec<(&str, Found)> = vec![
        (
            "INSERT INTO customers (id, phone, name) VALUES (1, '+86 138', 'Li'), (2, $1, 'Wu')",
            vec![
                ("'+86 138'".into(), lit("+86 138"), store),
                ("$1".into(), SiteValue::Param(1), store),
            ],
        ),
        (
            "insert into customers values (1, 'n', 'it''s', E'a\\tb')",
            vec![
                ("'it''s'".into(), lit("it's"), store),
                ("E'a\\tb'".into(), lit("a\tb"), store),
            ],
        ),
        (
            "UPDATE customers SET phone = $2::varchar(20), name = 'x' WHERE id_card = 'é1' AND id = 3",
            vec![
                ("$2::varchar(20)".into(), SiteValue::Param(2), store),
                ("'é1'".into(), lit("é1"), eq),
            ],
        ),
        (
            "SELECT id FROM customers WHERE phone IN ('1', $3) OR id_card <> CAST('9' AS text)",
            vec![
                ("'1'".into(), lit("1"), Purpose::Lookup(LookupForm::Item)),
                ("$3".into(), SiteValue::Param(3), Purpose::Lookup(LookupForm::Item)),
                ("CAST('9' AS text)".into(), lit("9"), Purpose::Lookup(LookupForm::Single)),
            ],
        ),
        (
            "INSERT INTO customers (id, phone) VALUES (1, '2') ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.phone",
            vec![("'2'".into(), lit("2"), store)],
        ),
        (
            "INSERT INTO customers (id, phone) VALUES (1, '2') ON CONFLICT (id) DO UPDATE SET phone = '3' RETURNING phone",
            vec![("'2'".into(), lit("2"), store), ("'3'".into(), lit("3"), store)],
        ),
        (
            "DELETE FROM customers WHERE phone = 12345; SELECT 1 FROM customers WHERE phone IS NULL",
            vec![("12345".into(), lit("12345"), eq)],
        ),
        (
            "INSERT INTO shipments (id, sender_phone) SELECT id, phone FROM customers",
            vec![],
        ),
        (
            "UPDATE shipments s SET sender_phone = c.phone FROM customers c WHERE c.id = s.id",
            vec![],
        ),
        (
            "SELECT 1 FROM customers c JOIN shipments s ON s.sender_phone = c.phone",
            vec![],
        ),
        (
            "WITH n AS (INSERT INTO customers (id, phone) VALUES (1, $$x'y$$) RETURNING id) SELECT id FROM n",
            vec![("$$x'y$$".into(), lit("x'y"), store)],
        ),
        (
            "UPDATE customers SET phone = - 5, id_card = -2.5e3 WHERE id = 1",
            vec![
                ("- 5".into(), lit("-5"), store),
                ("-2.5e3".into(), lit("-2.5e3"), store),
            ],
        ),
        (
            "INSERT INTO shipments (id, address) VALUES (1, NULL), (2, 'Road 1')",
            vec![("'Road 1'".into(), lit("Road 1"), store)],
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(sites(&f, "owner_app", sql), want, "{sql}");
    }
}

#[test]
fn writes_pgveil_cannot_encrypt_are_refused_with_a_reason() {
    let f = fixture();
    let cases = [
        (
            "UPDATE customers SET phone = name",
            "computed inside the server",
        ),
        (
            "UPDATE customers SET phone = lower($1)",
            "computed inside the server",
        ),
        (
            "INSERT INTO customers (id, phone) VALUES (1, '1' || '2')",
            "computed inside the server",
        ),
        (
            "INSERT INTO customers (id, phone) SELECT 1, '2'",
            "computed inside the server",
        ),
        (
            "INSERT INTO customers (id, phone) SELECT id, id_card FROM customers",
            "computed inside the server",
        ),
        (
            "INSERT INTO customers (id, name) SELECT id, phone FROM customers",
            "ciphertext",
        ),
        (
            "UPDATE customers SET (phone, name) = ('1', '2')",
            "multiple-column",
        ),
        (
            "UPDATE shipments SET id_card = (SELECT id_card FROM customers LIMIT 1)",
            "computed",
        ),
        (
            "INSERT INTO customers (id, phone) VALUES (1, DATE '2020-01-01')",
            "this form of value",
        ),
        (
            "SELECT 1 FROM shipments WHERE address = 'Road 1'",
            "randomized",
        ),
        (
            "SELECT 1 FROM shipments WHERE address IN ('a')",
            "randomized",
        ),
        (
            "SELECT 1 FROM customers WHERE phone = lower('x')",
            "encrypted",
        ),
        ("SELECT 1 FROM customers WHERE phone LIKE '1%'", "encrypted"),
        ("SELECT 1 FROM customers WHERE phone > '1'", "encrypted"),
        ("SELECT 1 FROM customers ORDER BY phone", "encrypted"),
        (
            "SELECT 1 FROM customers c JOIN shipments s ON s.id_card = c.id_card",
            "encrypted differently",
        ),
        (
            "SELECT 1 FROM customers c JOIN orders o ON o.note = c.phone",
            "in clear",
        ),
        (
            "SELECT 1 FROM customers WHERE phone IN (SELECT note FROM orders)",
            "same key domain",
        ),
        ("COPY customers FROM STDIN (FORMAT binary)", "CSV"),
        ("COPY customers (id, phone) FROM '/tmp/x'", "server file"),
        (
            "PREPARE p AS INSERT INTO customers (id, phone) VALUES ($1, $2)",
            "PREPARE",
        ),
    ];
    for (sql, why) in cases {
        match run(&f, "owner_app", sql) {
            Ok(a) => panic!("{sql}: passed: {a:?}"),
            Err(r) => assert!(
                r.message.contains(why) || r.hint.as_deref().unwrap_or("").contains(why),
                "{sql}: {} / {:?}",
                r.message,
                r.hint
            ),
        }
    }
    // A NULL passes; an IS NULL test on a randomized column works on ciphertext.
    assert!(run(
        &f,
        "owner_app",
        "UPDATE shipments SET address = NULL WHERE address IS NULL"
    )
    .is_ok());
}

#[test]
fn copy_from_stdin_marks_the_encrypted_positions() {
    let f = fixture();
    let phone = f.policy.column_id("public.customers", "phone");
    let a = run(
        &f,
        "dispatch_app",
        "COPY customers (name, phone) FROM STDIN WITH (FORMAT csv, HEADER true)",
    )
    .unwrap_or_else(|r| panic!("{}", r.message));
    assert_eq!(
        a.statements[0].copy_in,
        Some(CopyIn {
            columns: vec![None, phone],
            format: CopyOut::Csv { header: true }
        })
    );
    let a = run(&f, "dispatch_app", "COPY orders FROM STDIN")
        .unwrap_or_else(|r| panic!("{}", r.message));
    assert_eq!(a.statements[0].copy_in, None);
}

#[test]
fn a_mask_role_may_look_up_only_with_lookup_true() {
    let f = fixture();
    // support masks `important` without lookup: no equality on phone.
    let r = run(
        &f,
        "support_app",
        "SELECT name FROM customers WHERE phone = '1'",
    );
    assert!(r.is_err());
    // ... and every way around it.
    for sql in [
        "SELECT name FROM customers WHERE phone IN ('1')",
        "SELECT name FROM customers WHERE '1' = phone",
        "SELECT name FROM customers c JOIN shipments s ON s.sender_phone = c.phone",
        "SELECT name FROM customers WHERE phone IN (SELECT sender_phone FROM shipments)",
        "SELECT name FROM customers WHERE NOT (phone <> '1')",
    ] {
        assert!(run(&f, "support_app", sql).is_err(), "{sql}");
    }
}

#[test]
fn a_judgement_that_depends_on_who_is_asking_says_so() {
    let f = fixture();
    for (login, sql, dependent) in [
        ("support_app", "select 1", false),
        (
            "support_app",
            "select current_setting('jit'), set_config('jit', 'off', false)",
            false,
        ),
        ("support_app", "select note from orders", false),
        ("support_app", "select name from customers", true),
        ("owner_app", "select name from customers", true),
        (
            "support_app",
            "select id from customers where id = 1",
            false,
        ),
        (
            "owner_app",
            "select query_to_xml('select 1', true, true, '')",
            true,
        ),
        ("support_app", "select 1; select phone from customers", true),
    ] {
        let a = run(&f, login, sql).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
        assert_eq!(a.role_dependent, dependent, "{sql} as {login}");
    }
}

#[test]
fn deterministic_columns_group_for_clear_readers() {
    let f = fixture();
    // Equal plaintexts have equal deterministic ciphertexts: grouping by the whole value,
    // DISTINCT, count(DISTINCT ...) and equi-joins work on them.
    for sql in [
        "select phone, count(*) from customers group by phone",
        "select phone, count(*) from customers group by 1",
        "select c.phone, count(*) from customers c group by c.phone having count(*) > 1",
        "select distinct phone from customers",
        "select count(distinct phone) from customers",
        "select count(distinct c.phone) from customers c",
        "select a.id, b.id from customers a join customers b on a.phone = b.phone",
        "select phone from customers group by rollup (phone)",
    ] {
        let a = run(&f, "dispatch_app", sql).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
        assert!(a.role_dependent, "{sql}");
    }
    // What ciphertext cannot do stays refused, for the same reader: order, ranges,
    // expressions over the value, aggregates of the value, randomized columns.
    for sql in [
        "select phone from customers group by phone order by phone",
        "select substr(phone, 1, 3), count(*) from customers group by substr(phone, 1, 3)",
        "select count(distinct substr(phone, 1, 3)) from customers",
        "select count(distinct phone) + 1 from customers",
        "select count(distinct phone) filter (where id > 1) from customers",
        "select min(phone) from customers",
        "select distinct on (phone) phone from customers",
        "select address, count(*) from shipments group by address",
        "select distinct address from shipments",
        "select count(distinct address) from shipments",
    ] {
        let r = run(&f, "owner_app", sql).expect_err(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}: {}", r.message);
    }
    // A masked reader may not group by the column at all.
    for sql in [
        "select phone, count(*) from customers group by phone",
        "select count(distinct phone) from customers",
        "select distinct phone from customers",
    ] {
        let r = run(&f, "support_app", sql).expect_err(sql);
        assert_eq!(r.sqlstate, "42501", "{sql}: {}", r.message);
    }
}

/// What the anomaly limits count: the columns whose values reach the result (bare or
/// computed, at any depth), and whether one row can gather many rows' values.
#[test]
fn revealed_columns_and_gathering() {
    let f = fixture();
    let id = |c: &str| f.policy.column_id("public.customers", c).unwrap();
    let (name, phone) = (id("name"), id("phone"));
    let plan = |sql: &str| match run(&f, "dispatch_app", sql) {
        Ok(a) => a.statements[0].clone(),
        Err(r) => panic!("{sql}: refused: {}", r.message),
    };
    let cases: &[(&str, Vec<ColumnId>, bool)] = &[
        ("select name from customers", vec![name], false),
        ("select name || '' from customers", vec![name], false),
        (
            "select x from (select upper(name) as x from customers) s",
            vec![name],
            false,
        ),
        (
            "select (select name from customers limit 1)",
            vec![name],
            false,
        ),
        (
            "select phone, name from customers where id = 1",
            vec![phone, name],
            false,
        ),
        // Used only to filter or count: no value of it leaves.
        ("select id from customers where name = 'x'", vec![], false),
        (
            "select count(*) from customers where phone = '1'",
            vec![],
            false,
        ),
        // Gathering aggregates and constructors over a protected value.
        (
            "select string_agg(name, ',') from customers",
            vec![name],
            true,
        ),
        (
            "select pg_catalog.array_agg(name) from customers",
            vec![name],
            true,
        ),
        (
            "select json_agg(s) from (select id, name from customers) s",
            vec![name],
            true,
        ),
        ("select array(select name from customers)", vec![name], true),
        (
            "select string_agg(name, ',') over () from customers",
            vec![name],
            true,
        ),
        (
            "with recursive r(i, s) as (select 1, ''::text union all \
             select i + 1, s || (select name from customers where id = i) from r where i < 9) \
             select s from r",
            vec![name],
            true,
        ),
        // Window functions and ordered-set aggregates read other rows into this one; sums
        // can pack values arithmetically.
        (
            "select lag(name, 3) over (order by id) from customers",
            vec![name],
            true,
        ),
        (
            "select percentile_disc(0.5) within group (order by name) from customers",
            vec![name],
            true,
        ),
        ("select sum(length(name)) from customers", vec![name], true),
        // A recursive query after the column was already read once.
        (
            "select name, (with recursive r(i, s) as (select 1, ''::text union all \
             select i + 1, s || (select name from customers where id = i) from r where i < 9) \
             select max(s) from r) from customers",
            vec![name],
            true,
        ),
        // Near neighbours: gathering unprotected values, a recursive query over none.
        (
            "select string_agg(id::text, ','), max(name) from customers",
            vec![name],
            false,
        ),
        (
            "select name, array_agg(id) from customers group by name",
            vec![name],
            false,
        ),
        (
            "with recursive r(i) as (select 1 union all select i + 1 from r where i < 9) \
             select i from r",
            vec![],
            false,
        ),
    ];
    // Scalar subqueries in the result: each adds its row's values.
    let p = plan("select (select name from customers where id = 1), (select name from customers where id = 2), name from customers");
    assert_eq!(p.subquery_reveals, vec![name, name]);
    let p = plan("select id from customers where name = (select name from customers where id = 1)");
    assert!(p.subquery_reveals.is_empty());
    for (sql, revealed, packs) in cases {
        let p = plan(sql);
        let mut got = p.revealed.clone();
        got.sort();
        let mut want = revealed.clone();
        want.sort();
        assert_eq!(got, want, "{sql}");
        assert_eq!(p.packs, *packs, "{sql}");
    }
}

/// How many stored rows' values of a column one result row can carry: the most FROM items
/// of one level it is read from, bare or computed, through derived tables and CTEs.
#[test]
fn spread_counts_the_rows_one_result_row_joins() {
    let f = fixture();
    let name = f.policy.column_id("public.customers", "name").unwrap();
    let spread = |sql: &str| match run(&f, "dispatch_app", sql) {
        Ok(a) => a.statements[0]
            .spread
            .iter()
            .find(|(c, _)| *c == name)
            .map_or(0, |(_, n)| *n),
        Err(r) => panic!("{sql}: refused: {}", r.message),
    };
    let cases: &[(&str, usize)] = &[
        ("select name from customers", 1),
        ("select name, upper(name) from customers", 1),
        ("select x from (select name as x from customers) s", 1),
        ("select a.name, b.name from customers a, customers b", 2),
        (
            "select a.name || b.name || c.name from customers a, customers b, customers c",
            3,
        ),
        (
            "select x from (select a.name || b.name as x from customers a, customers b) s",
            2,
        ),
        (
            "with c as (select name from customers) select a.name || b.name from c a, c b",
            2,
        ),
        (
            "select a.name from customers a join customers b on a.id = b.id",
            1,
        ),
        (
            "select a.name from customers a join customers b on a.name = b.name",
            1,
        ),
        ("select * from customers a, customers b", 2),
        ("select id from customers where name = 'x'", 0),
    ];
    for (sql, n) in cases {
        assert_eq!(spread(sql), *n, "{sql}");
    }
}

/// Operator chains as long as the bound allows are analysed without exhausting the stack (on a
/// test thread's 2 MiB); longer ones are refused before they are parsed.
#[test]
fn deep_operator_chains_are_bounded_not_fatal() {
    let f = fixture();
    // Each `and id > 0` is three nesting tokens.
    let n = crate::sql::depth::MAX_NESTING / 3 - 10;
    let filter = " and id > 0".repeat(n);
    let sql = format!("select name from customers where id > 0{filter}");
    let a = run(&f, "dispatch_app", &sql).expect("a chain within the bound is analysed");
    assert_eq!(a.statements[0].outputs.len(), 1);
    // The generic walk (clones, visitor) over a long concatenation in the result.
    // `||` is one nesting token per level: the deepest tree the bound lets through.
    let concat = " || 'x'".repeat(crate::sql::depth::MAX_NESTING - 10);
    let sql = format!("select name{concat} from customers");
    if let Err(r) = run(&f, "dispatch_app", &sql) {
        panic!("refused: {} {}", r.sqlstate, r.message);
    }
    // One nesting token per level: `and 1` repeated to the bound.
    let filter = " and 1".repeat(crate::sql::depth::MAX_NESTING - 10);
    let sql = format!("select name from customers where id > 0{filter}");
    assert!(run(&f, "dispatch_app", &sql).is_ok());
    // Past the bound: refused, 54001, before anything deep is built.
    let filter = " and id > 0".repeat(crate::sql::depth::MAX_NESTING / 3 + 10);
    let sql = format!("select name from customers where id > 0{filter}");
    let r = run(&f, "dispatch_app", &sql).expect_err("a chain past the bound is refused");
    assert_eq!(r.sqlstate, "54001");
}
