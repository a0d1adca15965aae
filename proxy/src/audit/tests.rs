//! Chain, verify, writer and report tests.
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgveil_policy::crypto::{KeySet, MasterKey};

use super::chain::ChainWriter;
use super::verify::{verify, Options};
use super::*;

fn keys() -> KeySet {
    KeySet::new(vec![(1, MasterKey::from_bytes([3; 32]))], 1).unwrap()
}

fn stmt(i: u64, login: &str, role: &str, col: &str, action: &str) -> Record {
    StatementEvent {
        session: i,
        login: login.into(),
        roles: vec![role.into()],
        client: "10.0.0.1:5555".into(),
        application_name: "app".into(),
        command: "SELECT".into(),
        sql: format!("SELECT phone FROM consignee WHERE id = {i} AND name = 'secret{i}'"),
        columns: vec![(col.into(), "important".into(), action.into())],
        rows: 2,
        outcome: Outcome::Ok,
        reason: None,
    }
    .into_record()
}

/// Writes a log of `n` statements into `dir` as files of `per_file` records, returning paths.
fn write_log(dir: &Path, n: u64, per_file: usize, checkpoint_every: u64) -> Vec<PathBuf> {
    let k = keys();
    let mut c = ChainWriter::new(&k).unwrap();
    let mut files: Vec<Vec<String>> = vec![vec![c
        .start("2025-01-01T00:00:00.000000Z".into(), None)
        .unwrap()]];
    for i in 1..=n {
        if files.last().unwrap().len() >= per_file {
            let prev = format!("f{}", files.len());
            files.push(vec![c
                .rotation("2025-01-01T00:00:00.000000Z".into(), prev)
                .unwrap()]);
        }
        let line = c
            .seal(stmt(i, "alice", "support", "public.c.phone", "mask"))
            .unwrap();
        files.last_mut().unwrap().push(line);
        if i % checkpoint_every == 0 {
            let l = c
                .checkpoint("2025-01-01T00:00:00.000000Z".into(), false)
                .unwrap();
            files.last_mut().unwrap().push(l);
        }
    }
    let l = c
        .checkpoint("2025-01-01T00:00:00.000000Z".into(), true)
        .unwrap();
    files.last_mut().unwrap().push(l);
    files
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            let p = dir.join(format!("f{}", i + 1));
            std::fs::write(&p, lines.join("\n") + "\n").unwrap();
            p
        })
        .collect()
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn put(p: &Path, l: &[String]) {
    std::fs::write(p, l.join("\n") + "\n").unwrap();
}

#[test]
fn clean_log_verifies_and_holds_no_literal() {
    let d = tempfile::tempdir().unwrap();
    let files = write_log(d.path(), 20, 1000, 5);
    let s = verify(&files, &keys(), Options::default()).unwrap();
    assert!(s.closed);
    assert_eq!(s.records, 1 + 20 + 4 + 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("secret"), "a literal reached the log");
    assert!(text.contains("WHERE id = ? AND name = ?"));
    // Another keyring does not verify it.
    let other = KeySet::new(vec![(1, MasterKey::from_bytes([4; 32]))], 1).unwrap();
    assert!(verify(&files, &other, Options::default()).is_err());
}

#[test]
fn edited_byte_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let f = write_log(d.path(), 10, 1000, 100);
    let mut l = lines(&f[0]);
    l[4] = l[4].replace("\"rows\":2", "\"rows\":3");
    put(&f[0], &l);
    let e = verify(&f, &keys(), Options::default()).unwrap_err();
    assert_eq!((e.seq, e.line), (5, 5), "{e}");
    assert!(e.reason.contains("tag"), "{e}");
}

#[test]
fn deleted_swapped_inserted_lines_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let f = write_log(d.path(), 10, 1000, 100);
    let orig = lines(&f[0]);

    let mut l = orig.clone();
    l.remove(3);
    put(&f[0], &l);
    let e = verify(&f, &keys(), Options::default()).unwrap_err();
    assert_eq!((e.seq, e.line), (4, 4), "{e}");

    let mut l = orig.clone();
    l.swap(5, 6);
    put(&f[0], &l);
    let e = verify(&f, &keys(), Options::default()).unwrap_err();
    assert_eq!((e.seq, e.line), (6, 6), "{e}");

    // A copy of a record, and a forged record with the right seq.
    let mut l = orig.clone();
    l.insert(3, orig[2].clone());
    put(&f[0], &l);
    let e = verify(&f, &keys(), Options::default()).unwrap_err();
    assert_eq!(e.seq, 4, "{e}");
    let mut l = orig.clone();
    let mut forged: Record = serde_json::from_str(&orig[3]).unwrap();
    forged.login = Some("mallory".into());
    l[3] = serde_json::to_string(&forged).unwrap();
    put(&f[0], &l);
    let e = verify(&f, &keys(), Options::default()).unwrap_err();
    assert_eq!(e.seq, 4, "{e}");
}

#[test]
fn truncated_tail_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let f = write_log(d.path(), 10, 1000, 3);
    let mut l = lines(&f[0]);
    l.truncate(l.len() - 1);
    put(&f[0], &l);
    let e = verify(&f, &keys(), Options::default()).unwrap_err();
    assert!(e.reason.contains("closing checkpoint"), "{e}");
    // As a live log it passes, with the unanchored records counted.
    let s = verify(&f, &keys(), Options { open: true }).unwrap();
    assert!(!s.closed);
    assert_eq!(s.unanchored, 1);
    // A forged closing checkpoint needs the key.
    let mut fake: Record = serde_json::from_str(l.last().unwrap()).unwrap();
    fake.seq += 1;
    fake.kind = Kind::Checkpoint;
    fake.final_ = Some(true);
    l.push(serde_json::to_string(&fake).unwrap());
    put(&f[0], &l);
    assert!(verify(&f, &keys(), Options::default()).is_err());
}

#[test]
fn rotation_order_and_gaps() {
    let d = tempfile::tempdir().unwrap();
    let f = write_log(d.path(), 30, 8, 4);
    assert!(f.len() >= 4);
    verify(&f, &keys(), Options::default()).unwrap();
    // The tail files alone verify (the keyring ratchets to their first seq).
    let s = verify(&f[2..], &keys(), Options::default()).unwrap();
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("earlier files not given")));
    // Wrong order.
    let swapped = vec![f[0].clone(), f[2].clone(), f[1].clone(), f[3].clone()];
    let e = verify(&swapped, &keys(), Options::default()).unwrap_err();
    assert_eq!(e.file, f[2]);
    assert!(e.reason.contains("out of order"), "{e}");
    // A gap.
    let gap = vec![f[0].clone(), f[2].clone()];
    let e = verify(&gap, &keys(), Options::default()).unwrap_err();
    assert!(e.reason.contains("gap"), "{e}");
}

fn cfg(dir: &Path) -> AuditConfig {
    let mut c = AuditConfig::new(dir.join("audit.jsonl"));
    c.checkpoint_every = 7;
    c
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy() != "audit.jsonl")
        .collect();
    v.sort();
    v.push(dir.join("audit.jsonl"));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_backpressure_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(d.path());
    c.queue_capacity = 2;
    c.write_delay = Some(Duration::from_millis(5));
    c.fsync = FsyncPolicy::Always;
    let m = crate::metrics::Metrics::new().unwrap();
    let (sink, handle) = start(&c, &keys(), &m).await.unwrap();
    let t0 = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                sink.record(stmt(t * 100 + i, "bob", "ops", "public.c.phone", "allow"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 40 records at 5 ms each through a queue of 2: the senders must have waited.
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    handle.close().await.unwrap();
    assert!(sink.record(stmt(1, "x", "y", "z", "allow")).await.is_err());
    let files = log_files(d.path());
    let s = verify(&files, &keys(), Options::default()).unwrap();
    let statements = lines(&files[0])
        .iter()
        .filter(|l| l.contains("\"kind\":\"statement\""))
        .count();
    assert_eq!(statements, 40);
    assert!(s.closed);
    assert_eq!(m.audit.records.get(), s.records);
    assert_eq!(m.audit.queue_depth.get(), 0);
    let text = String::from_utf8(m.render()).unwrap();
    assert!(text.contains("pgveil_audit_records_total"));
    assert!(text.contains("pgveil_audit_queue_depth"));
}

#[tokio::test]
async fn writer_rotates_and_restarts_chain_across_files() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(d.path());
    c.max_bytes = 2000;
    let m = crate::metrics::Metrics::new().unwrap();
    let (sink, handle) = start(&c, &keys(), &m).await.unwrap();
    for i in 0..30 {
        sink.statement(StatementEvent {
            session: 1,
            login: "carol".into(),
            roles: vec![],
            client: "c".into(),
            application_name: String::new(),
            command: "SELECT".into(),
            sql: format!("select {i}"),
            columns: vec![],
            rows: 1,
            outcome: Outcome::Ok,
            reason: None,
        })
        .await
        .unwrap();
    }
    handle.close().await.unwrap();
    // A restart: the old file is moved aside and the new log anchors it.
    let (sink, handle) = start(&c, &keys(), &m).await.unwrap();
    sink.anomaly(AnomalyEvent {
        session: 2,
        login: "carol".into(),
        roles: vec![],
        client: "c".into(),
        application_name: String::new(),
        rule: "bulk_read".into(),
        outcome: Outcome::Denied,
        reason: Some("rows > 1000 in 1m".into()),
    })
    .await
    .unwrap();
    sink.flush().await.unwrap();
    handle.close().await.unwrap();
    let files = log_files(d.path());
    assert!(files.len() >= 4, "{files:?}");
    let s = verify(&files, &keys(), Options::default()).unwrap();
    assert_eq!(s.logs.len(), 2);
    assert!(s.closed);
    // Dropping the first of the restarted log's predecessors breaks the link.
    let e = verify(&files[1..], &keys(), Options::default());
    assert!(e.is_ok(), "a tail of files verifies alone: {e:?}");
    let mut wrong = files.clone();
    wrong.swap(0, 1);
    assert!(verify(&wrong, &keys(), Options::default()).is_err());
}

#[test]
fn report_names_used_and_unused_grants() {
    let policy_text = "version: 1\nlevels: [core, important]\nroles:\n  support: [alice]\n  ops: [bob]\ntables:\n  c:\n    phone: { level: important, kind: cn_mobile }\n    name: { level: important }\n    idno: { level: core }\ndefaults: { core: deny, important: mask }\n";
    let policy = pgveil_policy::load::load_str("p.yaml", policy_text).unwrap();
    let compiled = pgveil_policy::compile::CompiledPolicy::compile(policy, policy_text.as_bytes());
    let d = tempfile::tempdir().unwrap();
    let mut c = ChainWriter::new(&keys()).unwrap();
    let mut l = vec![c.start("2025-01-01T00:00:00.000000Z".into(), None).unwrap()];
    let mut r = stmt(1, "alice", "support", "public.c.phone", "mask");
    r.time = "2025-03-01T00:00:00.000000Z".into();
    l.push(c.seal(r.clone()).unwrap());
    l.push(c.seal(r).unwrap());
    let mut old = stmt(2, "bob", "ops", "public.c.name", "mask");
    old.time = "2024-01-01T00:00:00.000000Z".into();
    l.push(c.seal(old).unwrap());
    let p = d.path().join("a");
    put(&p, &l);
    let since = record::parse_time("2025-01-01T00:00:00Z");
    let rep = report::build(&[&p], &compiled, since).unwrap();
    assert_eq!(rep.statements, 2);
    assert_eq!(rep.used.len(), 1);
    let u = &rep.used[0];
    assert_eq!(
        (
            u.login.as_str(),
            u.role.as_str(),
            u.column.as_str(),
            u.action.as_str(),
            u.statements,
            u.rows
        ),
        ("alice", "support", "public.c.phone", "mask", 2, 4)
    );
    let unused: Vec<(String, String)> = rep
        .unused_grants
        .iter()
        .map(|u| (u.role.clone(), u.column.clone()))
        .collect();
    assert_eq!(
        unused,
        [
            ("support".to_string(), "public.c.name".to_string()),
            ("ops".into(), "public.c.phone".into()),
            ("ops".into(), "public.c.name".into()),
        ]
    );
    assert!(rep.to_text().contains("public.c.phone"));
    assert!(rep.to_csv().starts_with("section,login"));
    assert!(rep.to_json().contains("\"unused_grants\""));
}

#[test]
fn a_sealed_line_is_the_record_serialized_with_its_tag() {
    let mut c = ChainWriter::new(&keys()).unwrap();
    let ev = StatementEvent {
        session: 1,
        login: "a \"quoted\" login".into(),
        roles: vec!["r".into()],
        client: "127.0.0.1:1".into(),
        application_name: "app\nname".into(),
        command: "SELECT".into(),
        sql: "SELECT ?".into(),
        columns: vec![("public.t.c".into(), "core".into(), "mask".into())],
        rows: 3,
        outcome: Outcome::Ok,
        reason: None,
    };
    let line = c.seal(ev.into_record_fingerprinted()).unwrap();
    let parsed: Record = serde_json::from_str(&line).unwrap();
    assert!(parsed.tag.is_some());
    assert_eq!(serde_json::to_string(&parsed).unwrap(), line);
    let mut untagged = parsed.clone();
    untagged.tag = None;
    assert_eq!(
        untagged.chained_body().unwrap(),
        serde_json::to_string(&untagged).unwrap()
    );
}

#[test]
fn the_hot_path_seals_the_same_line_as_the_record_path() {
    let mut slow = ChainWriter::with_log_id(&keys(), "00ff").unwrap();
    let mut fast = ChainWriter::with_log_id(&keys(), "00ff").unwrap();
    let mut clock = super::statement::Clock::default();
    for i in 0..5u64 {
        let ev = StatementEvent {
            session: i,
            login: "a \"quoted\" login".into(),
            roles: vec!["r".into(), "ü".into()],
            client: "127.0.0.1:1".into(),
            application_name: "app\nname".into(),
            command: "SELECT".into(),
            sql: "SELECT ? FROM \"t\"".into(),
            columns: vec![("public.t.c".into(), "core".into(), "mask".into())],
            rows: i * 1000,
            outcome: if i % 2 == 0 {
                Outcome::Ok
            } else {
                Outcome::Error
            },
            reason: (i % 2 == 1).then(|| "57014 canceling \\ statement".into()),
        };
        let r = ev.to_statement_record();
        let mut record = ev.into_record_fingerprinted();
        record.time = record::format_time(r.time);
        let want = slow.seal(record).unwrap();
        let mut out = b"previous line\n".to_vec();
        fast.seal_statement(&r, &mut clock, &mut out);
        assert_eq!(std::str::from_utf8(&out[14..]).unwrap(), want, "record {i}");
    }
    assert_eq!(slow.head(), fast.head());
}
