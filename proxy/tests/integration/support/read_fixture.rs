//! The read side's fixture: a policy with every action, customers seeded with keys, and
//! helpers to read rows and refusals.
#![allow(dead_code)]
use super::*;
use pgveil::config::EnforcementConfig;
use pgveil_policy::crypto::{KeySet, Mode};
use pgveil_policy::keyring::Keyring;
use pgveil_policy::mask::Mask;
use pgveil_testkit::PgCluster;
use tokio_postgres::SimpleQueryMessage;

pub const POLICY: &str = r#"
version: 1
levels: [core, important, general]
roles:
  dispatcher: [dispatch_app]
  support: [support_team]
  analyst: [bi_reader]
tables:
  public.customers:
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic, domain: id_card }
    phone:   { level: important, kind: cn_mobile, encrypt: deterministic, domain: phone }
    name:    { level: important, kind: cn_name }
    address: { level: important, kind: address, encrypt: randomized }
    birth:   { level: general, kind: date }
    points:  { level: general, kind: text, encrypt: randomized, domain: points }
    vip_since: { level: general, kind: date, encrypt: randomized, domain: vip_since }
rules:
  - { roles: [dispatcher], level: important, action: allow }
  - { roles: [dispatcher], level: core, action: mask }
  - { roles: [support], level: important, action: mask }
  - { roles: [support], columns: [public.customers.birth], action: mask }
  - { roles: [analyst], columns: [public.customers.phone], action: hash }
  - { roles: [analyst], columns: [public.customers.address], action: "null" }
  - { roles: [analyst], level: important, action: mask }
defaults: { core: deny, important: mask, general: allow }
"#;

/// (id, name, phone, id_card, address, birth)
pub const ROWS: &[(i32, &str, &str, &str, &str, &str)] = &[
    (
        1,
        "王小明",
        "13812345678",
        "110101199003071234",
        "北京市朝阳区建国路88号",
        "1990-03-07",
    ),
    (
        2,
        "李娜",
        "13987654321",
        "310101198512125678",
        "上海市浦东新区世纪大道100号",
        "1985-12-12",
    ),
];

pub struct Setup {
    pub cluster: PgCluster,
    pub proxy: pgveil::app::RunningProxy,
    pub keys: KeySet,
    _dir: tempfile::TempDir,
}

pub async fn setup() -> Setup {
    let cluster = pg_trust();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let keyring_path = dir.path().join("pgveil.keys");
    let keyring = Keyring::generate(1_700_000_000).unwrap();
    keyring.save(&keyring_path, true).unwrap();
    let keys = Keyring::load(&keyring_path).unwrap().into_key_set();
    seed(&cluster, &keys).await;
    let mut config = config_for(&cluster);
    config.enforcement = Some(EnforcementConfig::new(policy, keyring_path, "postgres"));
    let proxy = proxy_with(config).await;
    Setup {
        cluster,
        proxy,
        keys,
        _dir: dir,
    }
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn seed(cluster: &PgCluster, keys: &KeySet) {
    let db = direct(cluster).await;
    let mut sql = String::from(
        "create role dispatch_app login; create role bi_reader login;
         create role support_team nologin; create role support_ann login in role support_team;
         create role nobody_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, birth date, city text, points text,
                                 vip_since text);
         create schema pgveil;
         create table pgveil.original_types (table_name regclass, column_name name,
                                             original_type regtype);
         insert into pgveil.original_types values ('customers', 'points', 'int4'),
                                                  ('customers', 'vip_since', 'date');
         create table orders (id int primary key, customer_id int, amount numeric(10,2), note text);
         create table audit_t (n int);
         grant all on all tables in schema public to public;
         insert into orders values (1, 1, 12.50, 'first'), (2, 2, 99.99, 'second');",
    );
    let phone = keys.domain("phone");
    let id_card = keys.domain("id_card");
    let address = keys.domain("address");
    let points = keys.domain("points");
    let vip = keys.domain("vip_since");
    for (id, name, ph, idc, addr, birth) in ROWS {
        sql.push_str(&format!(
            "insert into customers values ({id}, {}, {}, {}, {}, {}, 'x', {}, {});",
            lit(name),
            lit(&phone.encrypt(Mode::Deterministic, ph.as_bytes()).unwrap()),
            lit(&id_card
                .encrypt(Mode::Deterministic, idc.as_bytes())
                .unwrap()),
            lit(&address.encrypt(Mode::Randomized, addr.as_bytes()).unwrap()),
            lit(birth),
            lit(&points
                .encrypt(Mode::Randomized, format!("{}", id * 100 + 7).as_bytes())
                .unwrap()),
            lit(&vip.encrypt(Mode::Randomized, birth.as_bytes()).unwrap()),
        ));
    }
    sql.push_str(
        "create view v_contacts as select id, phone from customers;
         create view v_orders as select id, amount from orders;
         create function first_name() returns text language sql as $$ select name from customers order by id limit 1 $$;
         create function order_total() returns numeric language sql as $$ select sum(amount) from orders $$;
         grant select on all tables in schema public to public;",
    );
    db.batch_execute(&sql).await.unwrap();
}

/// Rows of a simple query as text (NULL as "NULL").
pub async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}: {:?}", e.as_db_error().map(|d| d.message())));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE a statement fails with; panics if it succeeds.
pub async fn refused(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(_) => panic!("expected a refusal, but it ran: {sql}"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| panic!("{sql}: error without SQLSTATE: {e}")),
    }
}

/// Read the database directly: every non-NULL value of these `customers` columns is an
/// envelope, never plaintext (the product's core promise).
pub async fn assert_stored_as_ciphertext(cluster: &PgCluster, columns: &[&str]) {
    let db = direct(cluster).await;
    let sql = format!("select {} from customers", columns.join(", "));
    let rows = db.query(sql.as_str(), &[]).await.unwrap();
    let mut checked = vec![0; columns.len()];
    for r in rows {
        for (i, c) in columns.iter().enumerate() {
            if let Some(v) = r.get::<_, Option<String>>(i) {
                assert!(v.starts_with("pgv1:"), "plaintext stored in {c}: {v}");
                checked[i] += 1;
            }
        }
    }
    for (c, n) in columns.iter().zip(checked) {
        assert!(n > 0, "no stored value of {c} to check");
    }
}

pub fn mask(kind: &str, v: &str, keys: &KeySet) -> String {
    let m = match kind {
        "hash" => Mask::Hash,
        k => Mask::default_for(pgveil_policy::Kind::parse(k).unwrap()),
    };
    m.apply_to_string(v, &keys.pseudonym_key())
}
