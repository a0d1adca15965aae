//! The write side's fixture: a policy with encrypted columns, a keyring, and checks that what
//! the database holds is ciphertext.
#![allow(dead_code)]
use super::*;
use pgveil::config::EnforcementConfig;
use pgveil_policy::crypto::{is_envelope, KeySet};
use pgveil_policy::keyring::Keyring;
use pgveil_testkit::PgCluster;

pub const POLICY: &str = r#"
version: 1
levels: [core, important, general]
roles:
  writer: [writer_app]
  desk: [desk_app]
  viewer: [viewer_app]
tables:
  public.customers:
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic, domain: id_card }
    phone:   { level: important, kind: cn_mobile, encrypt: deterministic, domain: phone }
    address: { level: important, kind: address, encrypt: randomized }
    points:  { level: general, kind: text, encrypt: randomized, domain: points }
  public.shipments:
    sender_phone: { level: important, kind: cn_mobile, encrypt: deterministic, domain: phone }
rules:
  - { roles: [writer], level: core, action: allow }
  - { roles: [writer], level: important, action: allow }
  - { roles: [desk], level: important, action: mask, lookup: true }
  - { roles: [viewer], level: important, action: mask }
defaults: { core: deny, important: mask, general: allow }
"#;

pub struct Setup {
    pub cluster: PgCluster,
    pub proxy: pgveil::app::RunningProxy,
    pub keyring: std::path::PathBuf,
    _files: PolicyFiles,
}

/// A policy file and a fresh keyring in a temporary directory.
pub struct PolicyFiles {
    pub dir: tempfile::TempDir,
    pub policy: std::path::PathBuf,
    pub keyring: std::path::PathBuf,
}

impl PolicyFiles {
    /// pgveil in front of `cluster`, enforcing these files (catalog read as `postgres`).
    pub async fn proxy(&self, cluster: &PgCluster) -> pgveil::app::RunningProxy {
        let mut config = config_for(cluster);
        config.enforcement = Some(EnforcementConfig::new(
            self.policy.clone(),
            self.keyring.clone(),
            "postgres",
        ));
        proxy_with(config).await
    }
}

pub fn policy_files(policy_text: &str) -> PolicyFiles {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_text).unwrap();
    let keyring = dir.path().join("pgveil.keys");
    Keyring::generate(1_700_000_000)
        .unwrap()
        .save(&keyring, true)
        .unwrap();
    PolicyFiles {
        dir,
        policy,
        keyring,
    }
}

pub async fn setup() -> Setup {
    let cluster = pg_trust();
    let files = policy_files(POLICY);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role writer_app login; create role desk_app login; create role viewer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create index customers_phone on customers (phone);
         create schema pgveil;
         create table pgveil.original_types (table_name regclass, column_name name,
                                             original_type regtype);
         insert into pgveil.original_types values ('customers', 'points', 'int4');
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let proxy = files.proxy(&cluster).await;
    Setup {
        cluster,
        proxy,
        keyring: files.keyring.clone(),
        _files: files,
    }
}

pub fn keys(s: &Setup) -> KeySet {
    Keyring::load(&s.keyring).unwrap().into_key_set()
}

/// Every protected value in the database is NULL or a valid envelope that decrypts, and no
/// canary appears anywhere in the tables' text.
pub async fn assert_all_ciphertext(s: &Setup, canaries: &[String]) {
    assert_stored_ciphertext(&s.cluster, &s.keyring, canaries).await;
}

/// [`assert_all_ciphertext`] for a cluster with the tables of [`POLICY`], read directly.
pub async fn assert_stored_ciphertext(
    cluster: &PgCluster,
    keyring: &std::path::Path,
    canaries: &[String],
) {
    let db = direct(cluster).await;
    let k = Keyring::load(keyring).unwrap().into_key_set();
    for (table, col, domain) in [
        ("customers", "phone", "phone"),
        ("customers", "id_card", "id_card"),
        ("customers", "address", "address"),
        ("customers", "points", "points"),
        ("shipments", "sender_phone", "phone"),
    ] {
        let cipher = k.domain(domain);
        for r in db
            .query(
                &format!("select {col} from {table} where {col} is not null"),
                &[],
            )
            .await
            .unwrap()
        {
            let v: String = r.get(0);
            assert!(
                is_envelope(v.as_bytes()),
                "{table}.{col} holds plaintext: {v}"
            );
            assert!(cipher.decrypt(v.as_bytes()).is_ok(), "{table}.{col}: {v}");
        }
    }
    for table in ["customers", "shipments"] {
        let all: Vec<String> = db
            .query(&format!("select t::text from {table} t"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for c in canaries {
            assert!(
                !all.iter().any(|row| row.contains(c.as_str())),
                "canary {c} stored in clear in {table}"
            );
        }
    }
}
