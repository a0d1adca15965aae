//! `pgveil audit verify` and `audit report` through the built binary, and a log cut after it was
//! closed, behind a restart.
use std::path::Path;
use std::process::{Command, Output};

use pgveil::audit::chain::ChainWriter;
use pgveil::audit::{Outcome, StatementEvent};
use pgveil_policy::crypto::KeySet;
use pgveil_policy::keyring::Keyring;

fn pgveil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(args)
        .env_remove("PGVEIL_KEYRING")
        .output()
        .expect("run pgveil")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_log(keyring: &Path, out: &Path) {
    let keys = Keyring::load(keyring).unwrap().into_key_set();
    let mut c = ChainWriter::new(&keys).unwrap();
    let t = "2026-01-01T00:00:00.000000Z".to_string();
    let mut lines = vec![c.start(t.clone(), None).unwrap()];
    for i in 0..5 {
        let mut r = StatementEvent {
            session: 1,
            login: "support_app".into(),
            roles: vec!["support".into()],
            client: "10.0.0.9:4000".into(),
            application_name: "crm".into(),
            command: "SELECT".into(),
            sql: format!("SELECT phone FROM customers WHERE id = {i}"),
            columns: vec![(
                "public.customers.phone".into(),
                "important".into(),
                "mask".into(),
            )],
            rows: 1,
            outcome: Outcome::Ok,
            reason: None,
        }
        .into_record();
        r.time = t.clone();
        lines.push(c.seal(r).unwrap());
    }
    lines.push(c.checkpoint(t, true).unwrap());
    std::fs::write(out, lines.join("\n") + "\n").unwrap();
}

#[test]
fn verify_exit_codes_and_report() {
    let d = tempfile::tempdir().unwrap();
    let kr = d.path().join("keyring.json");
    let out = pgveil(&["keys", "generate", "--out", kr.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = d.path().join("audit.jsonl");
    write_log(&kr, &log);

    let out = pgveil(&[
        "audit",
        "verify",
        "--keyring",
        kr.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 7 records in 1 file(s)"),
        "{}",
        text(&out.stdout)
    );

    let tampered = std::fs::read_to_string(&log)
        .unwrap()
        .replacen("\"rows\":1", "\"rows\":9", 1);
    std::fs::write(&log, tampered).unwrap();
    let out = pgveil(&[
        "audit",
        "verify",
        "--keyring",
        kr.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "first bad record: seq 2 in {} line 2: ",
            log.display()
        )),
        "{err}"
    );

    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/logistics/policy.yaml");
    let out = pgveil(&[
        "audit",
        "report",
        "--policy",
        policy.to_str().unwrap(),
        "--format",
        "csv",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    assert!(
        csv.contains("used,support_app,support,public.customers.phone,important,mask,5,13"),
        "{csv}"
    );
    assert!(csv.contains("\nunused,,support,"), "{csv}");
}

/// The scenario: a closed log loses its last lines (closing checkpoint included),
/// pgveil restarts, runs a statement and stops. `audit verify` (without `--open`) fails and
/// names the cut file.
#[tokio::test]
async fn a_closed_log_cut_before_a_restart_fails_verify_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let kr = d.path().join("keyring.json");
    let out = pgveil(&["keys", "generate", "--out", kr.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let keys = Keyring::load(&kr).unwrap().into_key_set();
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let cfg = pgveil::audit::AuditConfig::new(logs.join("audit.jsonl"));
    run_pgveil_audit(&cfg, &keys, 5).await;
    let verify = |files: &[std::path::PathBuf]| {
        let mut args = vec!["audit", "verify", "--keyring", kr.to_str().unwrap()];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        pgveil(&args)
    };
    let active = logs.join("audit.jsonl");
    let out = verify(std::slice::from_ref(&active));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let whole = std::fs::read_to_string(&active).unwrap();
    let mut lines: Vec<&str> = whole.lines().collect();
    lines.truncate(lines.len() - 2);
    std::fs::write(&active, lines.join("\n") + "\n").unwrap();
    run_pgveil_audit(&cfg, &keys, 1).await;

    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &active && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let cut = files[0].clone();
    files.push(active);
    let out = verify(&files);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "first bad record: seq {} in {} line {}: the log ends at seq {} without its closing checkpoint, and pgveil found it so at its restart with no sign of a crash",
            lines.len() + 1,
            cut.display(),
            lines.len() + 1,
            lines.len()
        )),
        "{err}"
    );
}

/// What a pgveil run does to its audit log: opens it (continuing from the file there), writes
/// `n` statements, closes it.
async fn run_pgveil_audit(cfg: &pgveil::audit::AuditConfig, keys: &KeySet, n: u64) {
    let metrics = pgveil::metrics::Metrics::new().unwrap();
    let (sink, handle) = pgveil::audit::start(cfg, keys, &metrics).await.unwrap();
    for i in 0..n {
        sink.statement(event(i)).await.unwrap();
    }
    handle.close().await.unwrap();
}

fn event(i: u64) -> StatementEvent {
    StatementEvent {
        session: 1,
        login: "support_app".into(),
        roles: vec!["support".into()],
        client: "10.0.0.9:4000".into(),
        application_name: "crm".into(),
        command: "SELECT".into(),
        sql: format!("SELECT phone FROM customers WHERE id = {i}"),
        columns: vec![(
            "public.customers.phone".into(),
            "important".into(),
            "mask".into(),
        )],
        rows: 1,
        outcome: Outcome::Ok,
        reason: None,
    }
}
