//! `pgveil encrypt | decrypt | rekey | keys retire` against a real PostgreSQL, run as the
//! built binary: type changes, `--check`, `--dry-run`, a SIGKILL in the middle of a run under
//! concurrent writes and its resumption, key rotation and retirement.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgveil::config::EnforcementConfig;
use pgveil_policy::crypto::{envelope_key_version, is_envelope, KeySet, Mode};
use pgveil_policy::keyring::Keyring;
use pgveil_testkit::PgCluster;
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

use crate::support::*;

const POLICY: &str = r#"
version: 1
levels: [core, important, general]
roles:
  reader: [app]
tables:
  public.people:
    phone:  { level: important, kind: cn_mobile, encrypt: deterministic, domain: phone }
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic, domain: id_card }
    points: { level: general, kind: text, encrypt: randomized, domain: points }
    born:   { level: general, kind: date, encrypt: randomized, domain: born }
    name:   { level: important, kind: cn_name }
rules:
  - { roles: [reader], level: core, action: allow }
  - { roles: [reader], level: important, action: allow }
  - { roles: [reader], level: general, action: allow }
defaults: { core: deny, important: mask, general: allow }
"#;

/// The people table: text, int8 and date protected columns, and a NULL.
const PEOPLE: &str = "
create table people (id int8 primary key, name text, phone text, id_card text,
                     points int8 not null, born date, note text);
create unique index people_phone on people (phone);
insert into people values
  (1, '王小明', '13812345678', '110101199003071234', 1200, '1990-03-07', 'a'),
  (2, '李娜', '13987654321', '310101198512125678', 0, '1985-12-12', 'b'),
  (3, 'Zoë O''Brien', '13700000000', NULL, -5, NULL, 'c');
grant all on all tables in schema public to public;";

struct Env {
    cluster: PgCluster,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(schema: &str) -> Env {
        let cluster = pg_trust();
        cluster
            .psql("postgres", schema)
            .unwrap_or_else(|e| panic!("schema: {e}"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        Keyring::generate(1_700_000_000)
            .unwrap()
            .save(&dir.path().join("pgveil.keys"), true)
            .unwrap();
        Env { cluster, dir }
    }

    fn with_policy(schema: &str, policy: &str) -> Env {
        let env = Env::new(schema);
        std::fs::write(env.policy(), policy).unwrap();
        env
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn keyring(&self) -> PathBuf {
        self.dir.path().join("pgveil.keys")
    }

    fn keys(&self) -> KeySet {
        Keyring::load(&self.keyring()).unwrap().into_key_set()
    }

    fn dsn(&self) -> String {
        self.cluster.superuser_conninfo("postgres")
    }

    /// `pgveil <cmd> --policy --keyring --dsn <extra>`.
    fn args(&self, cmd: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            cmd.into(),
            "--policy".into(),
            path(&self.policy()),
            "--keyring".into(),
            path(&self.keyring()),
            "--dsn".into(),
            self.dsn(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn run(&self, cmd: &str, extra: &[&str]) -> Output {
        pgveil(&self.args(cmd, extra))
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn pgveil<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(args)
        .output()
        .expect("run pgveil")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn col_type(db: &tokio_postgres::Client, table: &str, column: &str) -> String {
    db.query_one(
        "select format_type(atttypid, atttypmod) from pg_attribute \
         where attrelid = $1::text::regclass and attname = $2",
        &[&table, &column],
    )
    .await
    .unwrap()
    .get(0)
}

/// Every row of a simple query as text cells.
async fn rows(db: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    db.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
        })
        .collect()
}

const PEOPLE_SNAPSHOT: &str =
    "select id::text, name, phone, id_card, points::text, born::text, note from people order by id";

#[tokio::test]
async fn encrypt_text_int8_and_date_columns_then_read_through_the_proxy() {
    let env = Env::new(PEOPLE);
    let db = direct(&env.cluster).await;
    let before = rows(&db, PEOPLE_SNAPSHOT).await;

    let out = ok(&env.run("encrypt", &[]));
    assert!(
        out.contains("public.people: 3 rows scanned, 10 values encrypted"),
        "{out}"
    );
    assert!(
        !out.contains("13812345678"),
        "plaintext in the output: {out}"
    );

    // Stored: envelopes only, NULLs stay NULL, types recorded and changed to text.
    let keys = env.keys();
    let stored = rows(
        &db,
        "select phone, id_card, points, born from people order by id",
    )
    .await;
    let mut envelopes = 0;
    for v in stored.iter().flatten().flatten() {
        assert!(is_envelope(v.as_bytes()), "not an envelope: {v}");
        envelopes += 1;
    }
    assert_eq!(envelopes, 10);
    assert_eq!(stored[2][1], None);
    assert_eq!(stored[2][3], None);
    let phone = keys.domain("phone");
    assert_eq!(
        phone
            .decrypt(stored[0][0].as_ref().unwrap().as_bytes())
            .unwrap(),
        b"13812345678"
    );
    // Deterministic: the same plaintext gives the same envelope.
    assert_eq!(
        stored[0][0].as_deref(),
        Some(
            phone
                .encrypt(Mode::Deterministic, b"13812345678")
                .unwrap()
                .as_str()
        )
    );
    assert_eq!(col_type(&db, "people", "points").await, "text");
    assert_eq!(col_type(&db, "people", "born").await, "text");
    let recorded = rows(
        &db,
        "select column_name, original_type::text, original_type_full from pgveil.original_types \
         where table_name = 'people'::regclass order by column_name",
    )
    .await;
    assert_eq!(
        recorded,
        vec![
            vec![
                Some("born".into()),
                Some("date".into()),
                Some("date".into())
            ],
            vec![
                Some("points".into()),
                Some("bigint".into()),
                Some("bigint".into())
            ],
        ]
    );
    // The unique index on the deterministic column still works on ciphertext.
    let dup = db
        .batch_execute(&format!(
            "insert into people (id, phone, points) values (9, '{}', '1')",
            phone.encrypt(Mode::Deterministic, b"13812345678").unwrap()
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code().map(|c| c.code()), Some("23505"), "{dup}");

    // --check: zero plaintext, exit 0; values per key version.
    let check = ok(&env.run("encrypt", &["--check"]));
    assert!(
        check.contains("check: no plaintext left in 4 encrypted columns"),
        "{check}"
    );
    assert!(
        check.contains("public.people.phone: 0 plaintext, 3 envelopes (v1: 3), 0 NULL"),
        "{check}"
    );
    // A re-run changes nothing.
    let again = ok(&env.run("encrypt", &[]));
    assert!(
        again.contains("3 rows scanned, 0 values encrypted, 10 skipped"),
        "{again}"
    );

    // Through the proxy, the allowed role sees the original values and types.
    let mut config = config_for(&env.cluster);
    config.enforcement = Some(EnforcementConfig::new(
        env.policy(),
        env.keyring(),
        "postgres",
    ));
    let proxy = proxy_with(config).await;
    let app = client(&proxy).await;
    // (Casts of encrypted columns are refused by the proxy: read them as they are.)
    let through = rows(
        &app,
        "select id, name, phone, id_card, points, born, note from people order by id",
    )
    .await;
    assert_eq!(through, before);
    let stmt = app
        .prepare("select points, born, phone from people where id = 1")
        .await
        .unwrap();
    let types: Vec<&Type> = stmt.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(types, [&Type::INT8, &Type::DATE, &Type::TEXT]);
    let row = app.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 1200);
    assert_eq!(row.get::<_, String>(2), "13812345678");
    drop(app);
    proxy.shutdown().await;
}

/// A `varchar(11)` keeps its length: recorded with its modifier when encrypted, reported
/// with it to clients through the proxy (psql's `\gdesc` shows `character varying(11)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_varchar_keeps_its_length() {
    let policy = "version: 1\nlevels: [important]\nroles:\n  reader: [app]\ntables:\n  \
                  public.contacts:\n    phone: { level: important, kind: cn_mobile, \
                  encrypt: deterministic, domain: phone }\nrules:\n  \
                  - { roles: [reader], level: important, action: allow }\n\
                  defaults: { important: mask }\n";
    let env = Env::with_policy(
        "create table contacts (id int primary key, phone varchar(11), price numeric(10,2));
         insert into contacts values (1, '13812345678', 1.5);
         grant all on all tables in schema public to public;",
        policy,
    );
    ok(&env.run("encrypt", &[]));
    let db = direct(&env.cluster).await;
    assert_eq!(col_type(&db, "contacts", "phone").await, "text");
    let recorded = rows(
        &db,
        "select original_type_full, original_typmod from pgveil.original_types",
    )
    .await;
    assert_eq!(
        recorded,
        vec![vec![
            Some("character varying(11)".into()),
            Some("15".into())
        ]]
    );
    let mut config = config_for(&env.cluster);
    config.enforcement = Some(EnforcementConfig::new(
        env.policy(),
        env.keyring(),
        "postgres",
    ));
    let proxy = proxy_with(config).await;
    let script = env.dir.path().join("gdesc.sql");
    std::fs::write(&script, "select phone, price from contacts \\gdesc\n").unwrap();
    let out = tokio::process::Command::new(psql())
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &proxy.addr.port().to_string(),
            "-U",
            USER,
            "-d",
            "postgres",
        ])
        .arg("-f")
        .arg(&script)
        .env("PGSSLMODE", "disable")
        .env("PGPASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["phone|character varying(11)", "price|numeric(10,2)"]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let env = Env::new(PEOPLE);
    let db = direct(&env.cluster).await;
    let before = rows(&db, PEOPLE_SNAPSHOT).await;
    let out = ok(&env.run("encrypt", &["--dry-run"]));
    assert!(out.contains("dry run: nothing will be changed"), "{out}");
    assert!(
        out.contains(
            "ALTER TABLE \"public\".\"people\" ALTER COLUMN \"points\" TYPE text USING \"points\"::text (was bigint"
        ),
        "{out}"
    );
    assert!(out.contains("about 3 rows"), "{out}");
    assert!(!out.contains("13812345678"), "{out}");
    assert_eq!(rows(&db, PEOPLE_SNAPSHOT).await, before);
    assert_eq!(col_type(&db, "people", "points").await, "bigint");
    let schema = rows(
        &db,
        "select count(*) from pg_namespace where nspname = 'pgveil'",
    )
    .await;
    assert_eq!(schema, vec![vec![Some("0".into())]]);
    // --check before encrypting: plaintext found, exit code 3, counts but never values.
    let check = env.run("encrypt", &["--check"]);
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("check: 10 plaintext values remain in public.people.phone (3), public.people.id_card (2), public.people.points (3), public.people.born (2)"), "{out}");
    assert!(!out.contains("13812345678"), "{out}");
}

#[tokio::test]
async fn decrypt_round_trip_restores_types_and_values() {
    let env = Env::new(PEOPLE);
    let db = direct(&env.cluster).await;
    let before = rows(&db, PEOPLE_SNAPSHOT).await;
    ok(&env.run("encrypt", &["--batch-size", "2"]));
    assert_eq!(col_type(&db, "people", "points").await, "text");
    let out = ok(&env.run("decrypt", &["--batch-size", "2"]));
    assert!(
        out.contains("public.people: 3 rows scanned, 10 values decrypted"),
        "{out}"
    );
    assert!(
        out.contains("public.people.points: type restored to bigint"),
        "{out}"
    );
    assert_eq!(col_type(&db, "people", "points").await, "bigint");
    assert_eq!(col_type(&db, "people", "born").await, "date");
    assert_eq!(rows(&db, PEOPLE_SNAPSHOT).await, before);
    let left = rows(&db, "select count(*) from pgveil.original_types").await;
    assert_eq!(left, vec![vec![Some("0".into())]]);
    let check = ok(&env.run("decrypt", &["--check"]));
    assert!(
        check.contains("check: 0 values are still envelopes"),
        "{check}"
    );
}

#[tokio::test]
async fn clear_errors_for_bad_input() {
    let env = Env::new(
        "create table people (id int8, name text, phone text, id_card text, points int8, born date);
         create table other (id int primary key, phone text, constraint ck check (length(phone) = 11));",
    );
    let out = env.run("encrypt", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "table public.people has no primary key; pgveil needs a single-column primary key"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = env.run("encrypt", &["--table", "public.nope"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("table public.nope has no encrypted columns in the policy"),
        "{}",
        text(&out)
    );

    let mut args = env.args("encrypt", &[]);
    args[4] = path(&env.dir.path().join("missing.keys"));
    let out = pgveil(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.keys") && err.contains("No such file"),
        "{err}"
    );

    // A table that is missing, and a CHECK constraint that would see ciphertext.
    std::fs::write(
        env.policy(),
        "version: 1\nlevels: [core]\nroles: {}\ntables:\n  public.gone:\n    phone: { level: core, kind: cn_mobile, encrypt: deterministic }\n  public.other:\n    phone: { level: core, kind: cn_mobile, encrypt: deterministic }\nrules: []\ndefaults: { core: deny }\n",
    )
    .unwrap();
    let out = env.run("encrypt", &["--table", "public.gone"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("table public.gone not found in the database"),
        "{}",
        text(&out)
    );
    let out = env.run("encrypt", &["--table", "public.other"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "public.other.phone: CHECK constraint ck would see ciphertext, not the value; drop it first"
        ),
        "{}",
        text(&out)
    );
}

/// Rows in the big test (about 18 s in all on 2 cores, test profile).
const BIG_ROWS: i64 = 1_000_000;

const BIG_POLICY: &str = r#"
version: 1
levels: [core, important, general]
roles:
  reader: [app]
tables:
  public.big:
    phone:   { level: important, kind: cn_mobile, encrypt: deterministic, domain: phone }
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic, domain: id_card }
    amount:  { level: general, kind: text, encrypt: randomized, domain: amount }
rules:
  - { roles: [reader], level: general, action: allow }
defaults: { core: deny, important: mask, general: allow }
"#;

/// The generated plaintext of row `id` (the same expressions as BIG_LOAD).
fn big_row(id: i64) -> (String, String, String) {
    (
        format!("138{:08}", id),
        format!("110101{:012}", id * 7),
        format!("{}", id * 3 - 100),
    )
}

fn big_load(rows: i64) -> String {
    format!(
        "create table big (id int8 primary key, phone text, id_card text, amount int8, note text);
         insert into big select g, '138' || lpad(g::text, 8, '0'), '110101' || lpad((g * 7)::text, 12, '0'),
                                g * 3 - 100, 'n' from generate_series(1, {rows}) g;
         analyze big; grant all on big to public;"
    )
}

/// Concurrent writers while a migration runs: updates of the unprotected `note` (through
/// the proxy when given, else directly) and inserts of new rows, half plaintext and half
/// already encrypted. Returns what they wrote, to check nothing was lost.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Insert already-encrypted rows too (once the protected columns are text).
    encrypted_inserts: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Written>>,
}

#[derive(Default)]
struct Written {
    notes: HashMap<i64, String>,
    inserted: HashMap<i64, (String, String, String)>,
    errors: Vec<String>,
}

impl Writers {
    fn start(
        updater: tokio_postgres::Client,
        inserter: tokio_postgres::Client,
        keys: Arc<KeySet>,
        rows: i64,
        first_new_id: i64,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let encrypted_inserts = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let update = tokio::spawn(async move {
            let mut w = Written::default();
            let mut i: i64 = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                // Spread over the table, so some rows are behind the migration and some ahead.
                let id = (i * 7919) % rows + 1;
                let note = format!("w{i}");
                match updater
                    .simple_query(&format!("update big set note = '{note}' where id = {id}"))
                    .await
                {
                    Ok(_) => {
                        w.notes.insert(id, note);
                    }
                    Err(e) => w.errors.push(format!("update: {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            w
        });
        let s = stop.clone();
        let enc = encrypted_inserts.clone();
        let insert = tokio::spawn(async move {
            let mut w = Written::default();
            let mut id = first_new_id;
            while !s.load(Ordering::Relaxed) {
                let plain = big_row(id);
                let (p, c, a) = if id % 2 == 0 && enc.load(Ordering::Relaxed) {
                    (
                        keys.domain("phone")
                            .encrypt(Mode::Deterministic, plain.0.as_bytes())
                            .unwrap(),
                        keys.domain("id_card")
                            .encrypt(Mode::Deterministic, plain.1.as_bytes())
                            .unwrap(),
                        keys.domain("amount")
                            .encrypt(Mode::Randomized, plain.2.as_bytes())
                            .unwrap(),
                    )
                } else {
                    plain.clone()
                };
                match inserter
                    .simple_query(&format!(
                        "insert into big values ({id}, '{p}', '{c}', '{a}', 'new')"
                    ))
                    .await
                {
                    Ok(_) => {
                        w.inserted.insert(id, plain);
                    }
                    Err(e) => w.errors.push(format!("insert: {e:?}")),
                }
                id += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            w
        });
        Writers {
            stop,
            encrypted_inserts,
            tasks: vec![update, insert],
        }
    }

    async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Written::default();
        for t in self.tasks {
            let w = t.await.unwrap();
            all.notes.extend(w.notes);
            all.inserted.extend(w.inserted);
            all.errors.extend(w.errors);
        }
        all
    }
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Decrypt every row of `big` and check it against the generator, the writers' inserts and
/// their notes. Returns the number of rows.
async fn verify_big(db: &tokio_postgres::Client, keys: &KeySet, w: &Written, rows: i64) -> i64 {
    let ciphers = [
        keys.domain("phone"),
        keys.domain("id_card"),
        keys.domain("amount"),
    ];
    let all = db
        .query(
            "select id, phone, id_card, amount, note from big order by id",
            &[],
        )
        .await
        .unwrap();
    let mut n = 0;
    for r in &all {
        let id: i64 = r.get(0);
        let mut plain = Vec::new();
        for (i, c) in ciphers.iter().enumerate() {
            let v: String = r.get(i + 1);
            assert!(
                is_envelope(v.as_bytes()),
                "row {id}: column {i} is not encrypted"
            );
            let p = c
                .decrypt(v.as_bytes())
                .unwrap_or_else(|e| panic!("row {id}: {e}"));
            plain.push(String::from_utf8(p).unwrap());
        }
        let want = if id <= rows {
            big_row(id)
        } else {
            w.inserted
                .get(&id)
                .unwrap_or_else(|| panic!("row {id} was never inserted"))
                .clone()
        };
        assert_eq!(
            (plain[0].clone(), plain[1].clone(), plain[2].clone()),
            want,
            "row {id}"
        );
        let note: String = r.get(4);
        if let Some(last) = w.notes.get(&id) {
            assert_eq!(&note, last, "row {id}: a concurrent update was lost");
        }
        n += 1;
    }
    assert_eq!(n, rows + w.inserted.len() as i64, "rows lost or duplicated");
    n
}

#[tokio::test]
async fn encrypt_killed_midway_under_concurrent_writes_then_resumed() {
    let started = Instant::now();
    let env = Env::with_policy(&big_load(BIG_ROWS), BIG_POLICY);
    let loaded = started.elapsed();
    let db = direct(&env.cluster).await;
    let keys = Arc::new(env.keys());

    // Writers: note updates through the proxy, inserts directly.
    let mut config = config_for(&env.cluster);
    config.enforcement = Some(EnforcementConfig::new(
        env.policy(),
        env.keyring(),
        "postgres",
    ));
    let proxy = proxy_with(config).await;
    let writers = Writers::start(
        client(&proxy).await,
        direct(&env.cluster).await,
        keys.clone(),
        BIG_ROWS,
        BIG_ROWS + 1,
    );

    // Start the migration and SIGKILL it once a fifth of the table is encrypted.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(env.args("encrypt", &["--batch-size", "500"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = count(&db, "select count(*) from big where phone like 'pgv1:%'").await;
        if done >= BIG_ROWS / 5 {
            break;
        }
        assert!(Instant::now() < deadline, "encrypt made no progress");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("encrypt ended before it was killed: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap(); // SIGKILL
    writers.encrypted_inserts.store(true, Ordering::Relaxed);
    let killed_at = started.elapsed();
    let encrypted = count(&db, "select count(*) from big where phone like 'pgv1:%'").await;
    let plaintext = count(
        &db,
        "select count(*) from big where phone not like 'pgv1:%'",
    )
    .await;
    assert!(encrypted > 0 && plaintext > 0, "{encrypted} / {plaintext}");
    assert_eq!(col_type(&db, "big", "amount").await, "text");

    // Half-migrated: --check says so (exit 3), naming the columns and counts.
    let check = env.run("encrypt", &["--check"]);
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    assert!(String::from_utf8_lossy(&check.stdout)
        .contains("plaintext values remain in public.big.phone"));

    // Resume, with the writers still going.
    let out = ok(&env.run("encrypt", &["--batch-size", "2000"]));
    assert!(out.contains("public.big: "), "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = writers.stop().await;
    assert!(
        written.errors.is_empty(),
        "{:?}",
        &written.errors[..written.errors.len().min(5)]
    );
    assert!(written.notes.len() > 20 && written.inserted.len() > 20);
    proxy.shutdown().await;

    // Rows inserted in plaintext after the resumed run passed them, if any: a second pass.
    ok(&env.run("encrypt", &[]));
    let check = ok(&env.run("encrypt", &["--check"]));
    assert!(
        check.contains("check: no plaintext left in 3 encrypted columns"),
        "{check}"
    );
    let n = verify_big(&db, &keys, &written, BIG_ROWS).await;
    eprintln!(
        "migrate big: {n} rows; loaded in {loaded:?}, killed at {killed_at:?}, total {:?}; {} concurrent updates, {} inserts",
        started.elapsed(),
        written.notes.len(),
        written.inserted.len()
    );
}

/// The lost-update interleaving, forced: a transaction holds a row and changes its protected
/// value while the migration reaches it. The batch must wait for it and encrypt the new value
/// (without `FOR UPDATE` it would read the old one and overwrite the new one on commit).
#[tokio::test]
async fn a_concurrent_change_of_a_protected_value_is_not_lost() {
    const ROWS: i64 = 2000;
    // Already text: the type change would wait for the holder's table lock.
    let schema = big_load(ROWS) + "alter table big alter column amount type text;";
    let env = Env::with_policy(&schema, BIG_POLICY);
    let db = direct(&env.cluster).await;
    let holder = direct(&env.cluster).await;
    holder
        .batch_execute("begin; update big set phone = '19900000000' where id = 1500")
        .await
        .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(env.args("encrypt", &["--batch-size", "100"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run has reached the held row's batch and is blocked there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "select count(*) from big where phone like 'pgv1:%'").await < 1400 {
        assert!(Instant::now() < deadline, "encrypt made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&db, "select count(*) from big where phone like 'pgv1:%'").await,
        1400,
        "the run went past a row another transaction holds"
    );
    holder.batch_execute("commit").await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    ok(&out);
    let keys = env.keys();
    let stored: String = db
        .query_one("select phone from big where id = 1500", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        keys.domain("phone").decrypt(stored.as_bytes()).unwrap(),
        b"19900000000",
        "the concurrent update was lost"
    );
    let check = ok(&env.run("encrypt", &["--check"]));
    assert!(check.contains("check: no plaintext left"), "{check}");
}

#[tokio::test]
async fn rekey_under_concurrent_writes_then_retire() {
    const ROWS: i64 = 20_000;
    let env = Env::with_policy(&big_load(ROWS), BIG_POLICY);
    let db = direct(&env.cluster).await;
    let out = ok(&env.run("encrypt", &[]));
    assert!(
        out.contains(&format!(
            "public.big: {ROWS} rows scanned, {} values encrypted",
            ROWS * 3
        )),
        "{out}"
    );
    let old_keys = Arc::new(env.keys());

    // Version 2 becomes active; version 1 still holds every value.
    ok(&pgveil(&["keys", "add-version", &path(&env.keyring())]));
    let keys = env.keys();
    assert_eq!(keys.active_version(), 2);
    let retire = |force: bool| {
        let mut a = vec![
            "keys".to_string(),
            "retire".into(),
            path(&env.keyring()),
            "--version".into(),
            "1".into(),
            "--dsn".into(),
            env.dsn(),
            "--policy".into(),
            path(&env.policy()),
        ];
        if force {
            a.push("--force".into());
        }
        pgveil(&a)
    };
    let refused = retire(false);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("refusing to retire version 1: {} values in the database are still encrypted under it; run `pgveil rekey` first", ROWS * 3)),
        "{err}"
    );
    assert!(Keyring::load(&env.keyring()).unwrap().has_version(1));
    // The active version is never retired.
    let active = pgveil(&[
        "keys",
        "retire",
        &path(&env.keyring()),
        "--version",
        "2",
        "--dsn",
        &env.dsn(),
        "--policy",
        &path(&env.policy()),
        "--force",
    ]);
    assert!(String::from_utf8_lossy(&active.stderr).contains("version 2 is the active version"));

    // Rekey while writers update notes and insert rows (encrypted under the old version, or
    // plaintext): nothing is lost, every envelope ends under version 2.
    let writers = Writers::start(
        direct(&env.cluster).await,
        direct(&env.cluster).await,
        old_keys,
        ROWS,
        ROWS + 1,
    );
    writers.encrypted_inserts.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = ok(&env.run("rekey", &["--batch-size", "500"]));
    assert!(out.contains("re-encrypted"), "{out}");
    let written = writers.stop().await;
    assert!(written.errors.is_empty(), "{:?}", written.errors);
    // Rows the writers added behind the run's position: one more pass of each.
    ok(&env.run("rekey", &[]));
    ok(&env.run("encrypt", &[]));
    let check = ok(&env.run("rekey", &["--check"]));
    assert!(
        check.contains("check: 0 envelopes are not under the active version v2"),
        "{check}"
    );
    let stored: Vec<String> = db
        .query("select phone from big", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored
        .iter()
        .all(|v| envelope_key_version(v.as_bytes()) == Ok(2)));

    let out = ok(&retire(false));
    assert!(out.contains("version 1 removed; no value"), "{out}");
    assert!(out.contains("pseudonyms; they change now"), "{out}");
    let after = Keyring::load(&env.keyring()).unwrap();
    assert!(!after.has_version(1));
    let keys = after.into_key_set();
    verify_big(&db, &keys, &written, ROWS).await;
}

#[tokio::test]
async fn retire_force_crypto_shreds() {
    let env = Env::new(PEOPLE);
    ok(&env.run("encrypt", &[]));
    ok(&pgveil(&["keys", "add-version", &path(&env.keyring())]));
    let out = ok(&pgveil(&[
        "keys",
        "retire",
        &path(&env.keyring()),
        "--version",
        "1",
        "--dsn",
        &env.dsn(),
        "--policy",
        &path(&env.policy()),
        "--force",
    ]));
    assert!(
        out.contains("version 1 removed WITH --force: 10 values encrypted under it can no longer be decrypted"),
        "{out}"
    );
    // The values are still envelopes, but nothing can open them: --check's sample says so.
    let check = env.run("encrypt", &["--check"]);
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("10 sampled envelopes failed to decrypt"),
        "{}",
        text(&check)
    );
}

/// The DBA's path: a view over a non-text column blocks its type change, and `--dry-run` says so
/// (with every other reason) and exits 4, as the real run refuses before changing anything;
/// after `encrypt`, a catalog login with only LOGIN reads `pgveil.original_types`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_every_blocker_and_the_catalog_login_needs_no_grant() {
    let env = Env::new(&format!(
        "{PEOPLE}
         create view people_points as select id, points from people;
         create role catalog_login login;"
    ));
    let db = direct(&env.cluster).await;
    let dry = env.run("encrypt", &["--dry-run"]);
    let out = text(&dry);
    assert_eq!(dry.status.code(), Some(4), "{out}");
    assert!(
        out.contains("points: REFUSED: view people_points uses this column"),
        "{out}"
    );
    let real = env.run("encrypt", &[]);
    assert!(!real.status.success(), "{}", text(&real));
    assert!(
        text(&real).contains("view people_points uses this column"),
        "{}",
        text(&real)
    );
    assert_eq!(col_type(&db, "people", "points").await, "bigint");

    db.batch_execute("drop view people_points").await.unwrap();
    ok(&env.run("encrypt", &[]));
    for v in rows(&db, "select points from people")
        .await
        .iter()
        .flatten()
        .flatten()
    {
        assert!(is_envelope(v.as_bytes()), "points stored in clear: {v}");
    }
    // A plain login reads the recorded types: the proxy reports points as int8 again.
    let mut config = config_for(&env.cluster);
    config.enforcement = Some(pgveil::config::EnforcementConfig::new(
        env.policy(),
        env.keyring(),
        "catalog_login",
    ));
    let proxy = proxy_with(config).await;
    let c = client(&proxy).await;
    let row = c
        .query_one("select points from people where id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_(), &tokio_postgres::types::Type::INT8);
    assert_eq!(row.get::<_, i64>(0), 1200);
    proxy.shutdown().await;
}
