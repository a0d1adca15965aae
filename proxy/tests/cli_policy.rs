//! `pgveil policy ...` end to end, through the built binary.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pgveil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(args)
        .output()
        .expect("run pgveil")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("policy.yaml")
        .display()
        .to_string()
}

/// A file in a fresh temporary directory, removed when the returned guard drops.
fn temp_file(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("pgveil-cli-policy-")
        .tempdir()
        .unwrap();
    let p = d.path().join(name);
    std::fs::write(&p, content).unwrap();
    (d, p)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_examples_clean() {
    let out = pgveil(&["policy", "check", &example("logistics"), &example("travel")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("policy.yaml: ok ("));
    assert!(out.stderr.is_empty());
}

#[test]
fn check_reports_diagnostics_and_exits_1() {
    let (_d, p) = temp_file("bad.yaml", b"version: 1\nlevels: [core, general]\ntables:\n  t:\n    c: { levle: core }\ndefaults: { core: deny, general: allow }\n");
    let out = pgveil(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let f = p.display();
    assert_eq!(
        text(&out.stderr),
        format!(
            "{f}:5:8: column \"public.t.c\" has no `level`\n{f}:5:10: unknown key `levle` in column \"public.t.c\"\n  hint: did you mean `level`?\n{f}: 2 error(s)\n"
        )
    );
}

#[test]
fn check_json() {
    let (_d, p) = temp_file("bad2.yaml", b"version: 1\nlevels: [core]\ntables: { t: { c: { level: cor } } }\ndefaults: { core: deny }\n");
    let out = pgveil(&[
        "policy",
        "check",
        "--format",
        "json",
        p.to_str().unwrap(),
        &example("travel"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let d = &v["files"][0]["diagnostics"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(3), Some(28))
    );
    assert_eq!(d["message"], "unknown level \"cor\" (expected core)");
    assert_eq!(d["hint"], "did you mean `core`?");
    assert_eq!(v["files"][1]["ok"], true);
}

#[test]
fn check_empty_and_binary_files() {
    let (_e, e) = temp_file("empty.yaml", b"");
    let (_b, b) = temp_file("bin.yaml", &[0x7f, b'E', b'L', b'F', 0, 1, 2, 0xff]);
    let out = pgveil(&["policy", "check", e.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:1:1: policy file is empty", e.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:1:5: file is binary, not a YAML policy (NUL byte)",
            b.display()
        )),
        "{err}"
    );
    let missing = pgveil(&["policy", "check", "/nonexistent/policy.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).starts_with("/nonexistent/policy.yaml:1:1: cannot read file:"));
}

#[test]
fn matrix_formats() {
    let out = pgveil(&["policy", "matrix", &example("logistics")]);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    let header = t.lines().next().unwrap();
    assert!(
        header.starts_with("column")
            && header.contains("dispatcher")
            && header.ends_with("(no role)"),
        "{header}"
    );
    let id = t
        .lines()
        .find(|l| l.starts_with("public.customers.id_card"))
        .unwrap();
    let cells: Vec<&str> = id
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "public.customers.id_card",
            "core",
            "cn_id_card",
            "deterministic",
            "mask cn_id_card",
            "deny",
            "deny",
            "hash",
            "allow",
            "deny"
        ]
    );

    let csv = text(&pgveil(&["policy", "matrix", "--format", "csv", &example("logistics")]).stdout);
    assert_eq!(
        csv.lines().next().unwrap(),
        "column,level,kind,encrypt,dispatcher,support,driver,analyst,auditor,(no role)"
    );
    assert!(csv.contains("\npublic.customers.phone,important,cn_mobile,deterministic,allow,mask cn_mobile +lookup,mask cn_mobile,hash,mask cn_mobile,mask cn_mobile\n"), "{csv}");

    let html = text(&pgveil(&["policy", "matrix", "--format", "html", &example("travel")]).stdout);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<td class=\"deny\">deny</td>"));
}

#[test]
fn schema_is_json() {
    let out = pgveil(&["policy", "schema"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "pgveil policy");
    assert_eq!(v["properties"]["version"]["const"], 1);
}

#[test]
fn explain_login() {
    let out = pgveil(&[
        "policy",
        "explain",
        "--policy",
        &example("logistics"),
        "--user",
        "alice",
        "--member-of",
        "compliance",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("login alice: policy roles auditor"), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("public.customers.id_card"))
        .unwrap();
    assert!(
        line.contains(" allow ")
            && line.contains("plaintext")
            && line.contains("\"auditor-id-check\""),
        "{line}"
    );
    let nobody = text(
        &pgveil(&[
            "policy",
            "explain",
            "--policy",
            &example("logistics"),
            "--user",
            "nobody",
        ])
        .stdout,
    );
    assert!(nobody.contains("login nobody: no policy role"), "{nobody}");
    let line = nobody
        .lines()
        .find(|l| l.starts_with("public.customers.phone"))
        .unwrap();
    assert!(
        line.contains("mask")
            && line.contains("cn_mobile")
            && line.contains("default for level important"),
        "{line}"
    );
}

#[test]
fn explain_a_statement_against_a_schema_file() {
    let schema = format!(
        "{}/../examples/logistics/schema.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    // Exit 0 when the statement would pass, 1 when the login would get an error.
    let explain = |user: &str, sql: &str, code: i32| {
        let out = pgveil(&[
            "policy",
            "explain",
            "--policy",
            &example("logistics"),
            "--user",
            user,
            "--schema",
            &schema,
            "--sql",
            sql,
        ]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let run = |user: &str, sql: &str| explain(user, sql, 0);
    let refused = |user: &str, sql: &str| explain(user, sql, 1);
    let t = run(
        "support_app",
        "SELECT c.name, c.phone, c.id FROM customers c",
    );
    assert!(
        t.contains("column 1: public.customers.name: mask -> cn_name"),
        "{t}"
    );
    assert!(
        t.contains("column 2: public.customers.phone: mask -> cn_mobile"),
        "{t}"
    );
    assert!(t.contains("column 3: not protected"), "{t}");
    assert!(t.ends_with("allowed\n"), "{t}");
    // The exact error the login would get, with the rule that decided.
    let t = refused("support_app", "SELECT * FROM customers");
    assert!(
        t.contains("refused: ERROR 42501: permission denied for column public.customers.id_card"),
        "{t}"
    );
    assert!(t.contains("\"core-locked\""), "{t}");
    let t = refused("support_app", "SELECT id FROM customers ORDER BY name");
    assert!(
        t.contains("refused: ERROR 42501") && t.contains("HINT:"),
        "{t}"
    );
    // Statements that name nothing protected take the fast path.
    let t = run("support_app", "SELECT status FROM shipments");
    assert!(t.contains("fast path"), "{t}");
    // Each protected column's use in words, not a Rust debug form.
    let t = run(
        "support_app",
        "SELECT id FROM customers WHERE phone = '13812345678'",
    );
    assert!(
        t.contains("uses public.customers.phone: equality condition (= or IN)\n"),
        "{t}"
    );
    let t = refused(
        "support_app",
        "SELECT id FROM customers WHERE phone LIKE '138%'",
    );
    assert!(t.contains("refused: ERROR 42501"), "{t}");
    for t in [
        &t,
        &run(
            "dispatch_app",
            "SELECT id FROM customers GROUP BY name, phone",
        ),
    ] {
        assert!(!t.contains('{') && !t.contains("Predicate"), "{t}");
    }
}

/// A policy for the tables of tests/data/pg15_dump_schema.sql (and of the dump the test below
/// makes), with `extra` column lines under public.customers.
fn dump_policy(extra: &str) -> String {
    format!(
        "version: 1\nlevels: [core, important]\nroles:\n  support: [support_app]\ntables:\n  \
         public.customers:\n    phone: {{ level: important, kind: cn_mobile }}\n    \
         id_card: {{ level: core, kind: cn_id_card }}\n{extra}  public.waybills:\n    \
         consignee_phone: {{ level: important, kind: cn_mobile }}\nrules:\n  \
         - {{ roles: [support], level: important, action: mask }}\n\
         defaults: {{ core: deny, important: mask }}\n"
    )
}

/// `policy check --schema` and `policy explain --schema` with the output of `pg_dump -s`
/// (PostgreSQL 15.18, `-C`): `\restrict`, `\connect`, CREATE DATABASE, sequences with `AS
/// integer`, `ALTER ... OWNER TO`, SET, set_config, COMMENT ON, a function body with a `;`, a
/// partition, a view and a materialized view are read or skipped, and nothing is reported.
#[test]
fn check_and_explain_read_a_pg_dump_file() {
    let dump = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pg15_dump_schema.sql")
        .display()
        .to_string();
    let (_d, policy) = temp_file("policy.yaml", dump_policy("").as_bytes());
    let out = pgveil(&[
        "policy",
        "check",
        "--schema",
        &dump,
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // A policy column the dump's table does not have is found.
    let (_e, stale) = temp_file(
        "stale.yaml",
        dump_policy("    mobile_old: { level: important, kind: cn_mobile }\n").as_bytes(),
    );
    let out = pgveil(&[
        "policy",
        "check",
        "--schema",
        &dump,
        stale.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("table public.customers has no column mobile_old"),
        "{}",
        text(&out.stderr)
    );
    // The view's columns come from its definition.
    let explain = |sql: &str| {
        let out = pgveil(&[
            "policy",
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--user",
            "support_app",
            "--schema",
            &dump,
            "--sql",
            sql,
        ]);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, t, err) = explain("SELECT id, mobile FROM customer_contacts");
    assert_eq!(code, Some(0), "{t}{err}");
    assert!(
        t.contains("column 2: public.customers.phone: mask -> cn_mobile"),
        "{t}"
    );
    let (code, t, _) = explain("SELECT * FROM customers");
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("public.customers.id_card"), "{t}");
}

/// The same with a dump made now by PostgreSQL 15's own `pg_dump -s` of a live database.
#[test]
fn check_reads_what_pg_dump_writes_today() {
    let cluster = match pgveil_testkit::PgCluster::start(Default::default()) {
        Ok(c) => c,
        Err(e) => panic!("cannot start PostgreSQL for the test: {e}"),
    };
    cluster
        .psql(
            "postgres",
            "create table customers (id serial primary key, name varchar(20), id_card char(18), \
                                     phone text, created_at timestamptz default now());\n\
             comment on table customers is 'who sends; parcels';\n\
             create table waybills (id bigserial primary key, customer_id int references customers, \
                                    consignee_phone varchar(11));\n\
             create view customer_contacts as select c.id, c.name, c.phone as mobile from customers c;",
        )
        .unwrap_or_else(|e| panic!("schema: {e}"));
    let bins = pgveil_testkit::find_bindir().unwrap_or_else(|e| panic!("{e}"));
    let dump = Command::new(bins.bin("pg_dump"))
        .args(["-s", "-d", &cluster.superuser_conninfo("postgres")])
        .output()
        .expect("run pg_dump");
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    let (_d, file) = temp_file("dump.sql", &dump.stdout);
    let (_p, policy) = temp_file("policy.yaml", dump_policy("").as_bytes());
    let out = pgveil(&[
        "policy",
        "check",
        "--schema",
        file.to_str().unwrap(),
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let out = pgveil(&[
        "policy",
        "explain",
        "--policy",
        policy.to_str().unwrap(),
        "--user",
        "support_app",
        "--schema",
        file.to_str().unwrap(),
        "--sql",
        "SELECT mobile FROM customer_contacts",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("column 1: public.customers.phone: mask -> cn_mobile"),
        "{}",
        text(&out.stdout)
    );
}

/// Output to a reader that went away ends quietly: `pgveil policy schema | head -1` and a long
/// matrix read one line at a time.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    // The reader is gone before pgveil writes anything.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["policy", "schema"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgveil");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for pgveil");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    // A matrix far larger than a pipe's buffer, closed after its first line.
    let mut policy = String::from("version: 1\nlevels: [core]\nroles:\n  r: [app]\ntables:\n");
    for t in 0..100 {
        policy.push_str(&format!("  public.table_{t}:\n"));
        for c in 0..40 {
            policy.push_str(&format!("    column_{c}: {{ level: core, kind: text }}\n"));
        }
    }
    policy.push_str("defaults: { core: deny }\n");
    let (_d, p) = temp_file("big.yaml", policy.as_bytes());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["policy", "matrix", p.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgveil");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read a line");
    assert!(first.starts_with("column"), "{first}");
    let out = child.wait_with_output().expect("wait for pgveil");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_warns_of_an_anomaly_rule_for_every_login() {
    let (_d, p) = temp_file(
        "anomaly.yaml",
        b"version: 1\nlevels: [core]\nroles: { app: [app] }\ntables: { t: { c: { level: core } } }\ndefaults: { core: deny }\nanomaly:\n  - { name: export, max_rows: 10, per: 1m, then: deny }\n",
    );
    let out = pgveil(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "{}:7:5: warning: anomaly rule \"export\" has no roles: it limits every login",
            p.display()
        )),
        "{}",
        text(&out.stderr)
    );
    let out = pgveil(&["policy", "check", "--format", "json", p.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][0]["ok"], true);
    assert_eq!(v["files"][0]["diagnostics"][0]["severity"], "warning");
}
