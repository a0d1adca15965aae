//! `pgveil audit verify` and `audit report` through the built binary.
use std::path::Path;
use std::process::{Command, Output};

use pgveil::audit::chain::ChainWriter;
use pgveil::audit::{Outcome, StatementEvent};
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
