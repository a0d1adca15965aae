//! Chain, verify, writer and report tests.
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgveil_policy::crypto::{KeySet, MasterKey};

use super::chain::{Anchor, ChainWriter};
use super::verify::{verify, verify_tail, Options};
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

/// The log files in `dir`, oldest first (open markers, whose names start with a dot, left out).
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name != "audit.jsonl" && !name.starts_with('.')
        })
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

/// A writer on `dir` that writes `n` statements and, with `close`, closes the log; without, it
/// is left open (flushed), and the writer's handle is returned for the caller to close.
async fn run_writer(dir: &Path, n: u64, close: bool) -> Option<AuditHandle> {
    let m = crate::metrics::Metrics::new().unwrap();
    let (sink, handle) = start(&cfg(dir), &keys(), &m).await.unwrap();
    for i in 0..n {
        sink.record(stmt(i, "dave", "support", "public.c.phone", "mask"))
            .await
            .unwrap();
    }
    sink.flush().await.unwrap();
    if close {
        handle.close().await.unwrap();
        return None;
    }
    Some(handle)
}

fn start_record(file: &Path) -> Record {
    serde_json::from_str(&lines(file)[0]).unwrap()
}

fn markers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// The issue's cut: a closed log loses its last lines (closing checkpoint included), pgveil
/// restarts, runs a statement and stops. The cut log must not verify.
#[tokio::test]
async fn a_closed_log_cut_before_a_restart_never_verifies() {
    let d = tempfile::tempdir().unwrap();
    run_writer(d.path(), 10, true).await;
    assert!(
        markers(d.path()).is_empty(),
        "a closed log leaves no open marker"
    );
    let log = d.path().join("audit.jsonl");
    let mut l = lines(&log);
    l.truncate(l.len() - 3);
    put(&log, &l);
    run_writer(d.path(), 1, true).await;

    let files = log_files(d.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let start = start_record(&files[1]);
    assert_eq!(start.prev_end, Some(PrevEnd::Unclosed));
    assert_eq!(
        start.prev_file.as_deref(),
        files[0].file_name().and_then(|n| n.to_str())
    );
    assert_eq!(
        start.prev_seq,
        Some(l.len() as u64),
        "it anchors the cut end"
    );
    let e = verify(&files, &keys(), Options::default()).unwrap_err();
    assert_eq!(e.file, files[0], "{e}");
    assert_eq!(e.line, l.len() + 1, "{e}");
    assert!(e.reason.contains("with no sign of a crash"), "{e}");
    assert!(e.reason.contains("may have been cut"), "{e}");
    // `--open` is for the last log only.
    assert!(verify(&files, &keys(), Options { open: true }).is_err());
    // The new log alone carries the writer's signed word for it.
    let e = verify(&files[1..], &keys(), Options::default()).unwrap_err();
    assert_eq!((e.file.as_path(), e.line), (files[1].as_path(), 1), "{e}");
    assert!(e.reason.contains("its end was cut"), "{e}");
}

/// The disk as a crash leaves it: the log and its open marker, copied while the writer runs.
fn copy_as_crashed(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn a_crash_is_vouched_for_by_the_next_start_with_what_it_may_have_lost() {
    let live = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    // start (1), 7 statements, checkpoint (9), 3 statements (10..12): 3 unsigned records.
    let handle = run_writer(live.path(), 10, false).await.unwrap();
    copy_as_crashed(live.path(), d.path());
    handle.close().await.unwrap();
    assert_eq!(markers(d.path()).len(), 1);
    run_writer(d.path(), 1, true).await;
    assert!(
        markers(d.path()).is_empty(),
        "the crashed log's marker is gone too"
    );

    let files = log_files(d.path());
    let start = start_record(&files[1]);
    assert_eq!(start.prev_end, Some(PrevEnd::Crashed));
    assert_eq!((start.prev_seq, start.prev_signed), (Some(12), Some(9)));
    let s = verify(&files, &keys(), Options::default()).unwrap();
    assert!(s.closed);
    let note = s
        .notes
        .iter()
        .find(|n| n.contains("pgveil crashed"))
        .unwrap();
    assert!(
        note.contains("ends at seq 12")
            && note.contains("after seq 9")
            && note.contains("3 of them"),
        "{note}"
    );
    let alone = verify(&files[1..], &keys(), Options::default()).unwrap();
    assert!(
        alone
            .notes
            .iter()
            .any(|n| n.contains("found unclosed after a crash")),
        "{:?}",
        alone.notes
    );
}

/// The documented limit: a crashed log cut further back before the restart passes as a crash
/// there (with the note), since the writer can only vouch for what it finds.
#[tokio::test]
async fn a_crashed_log_cut_before_the_restart_looks_like_an_earlier_crash() {
    let live = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let handle = run_writer(live.path(), 10, false).await.unwrap();
    copy_as_crashed(live.path(), d.path());
    handle.close().await.unwrap();
    let log = d.path().join("audit.jsonl");
    let mut l = lines(&log);
    l.truncate(l.len() - 2);
    put(&log, &l);
    run_writer(d.path(), 1, true).await;
    let files = log_files(d.path());
    let s = verify(&files, &keys(), Options::default()).unwrap();
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("ends at seq 10") && n.contains("1 of them")),
        "{:?}",
        s.notes
    );
}

#[tokio::test]
async fn a_marker_without_the_keyrings_signature_does_not_vouch() {
    let d = tempfile::tempdir().unwrap();
    run_writer(d.path(), 10, true).await;
    let log = d.path().join("audit.jsonl");
    let mut l = lines(&log);
    l.pop();
    put(&log, &l);
    let id = start_record(&log).log.unwrap();
    let forged = serde_json::json!({
        "open": id,
        "key_version": 1,
        "time": "2026-01-01T00:00:00.000000Z",
        "signature": "00".repeat(32),
    });
    std::fs::write(
        d.path().join(format!(".audit.jsonl.open-{id}")),
        forged.to_string(),
    )
    .unwrap();
    run_writer(d.path(), 1, true).await;
    let files = log_files(d.path());
    assert_eq!(start_record(&files[1]).prev_end, Some(PrevEnd::Unclosed));
    assert!(verify(&files, &keys(), Options::default()).is_err());
}

#[tokio::test]
async fn a_cut_in_the_middle_still_fails_and_an_untouched_log_still_verifies() {
    let d = tempfile::tempdir().unwrap();
    run_writer(d.path(), 10, true).await;
    run_writer(d.path(), 2, true).await;
    let files = log_files(d.path());
    assert_eq!(start_record(&files[1]).prev_end, Some(PrevEnd::Closed));
    let s = verify(&files, &keys(), Options::default()).unwrap();
    assert_eq!(s.logs.len(), 2);
    assert!(
        !s.notes.iter().any(|n| n.contains("closing checkpoint")),
        "{:?}",
        s.notes
    );

    let d = tempfile::tempdir().unwrap();
    run_writer(d.path(), 10, true).await;
    let log = d.path().join("audit.jsonl");
    let mut l = lines(&log);
    l.remove(3);
    put(&log, &l);
    run_writer(d.path(), 1, true).await;
    let files = log_files(d.path());
    // The writer checks from the last checkpoint on, which is whole; verify checks it all.
    assert_eq!(start_record(&files[1]).prev_end, Some(PrevEnd::Closed));
    let e = verify(&files, &keys(), Options::default()).unwrap_err();
    assert_eq!(
        (e.file.as_path(), e.line, e.seq),
        (files[0].as_path(), 4, 4),
        "{e}"
    );
}

#[tokio::test]
async fn an_edited_tail_is_recorded_as_unverified() {
    let d = tempfile::tempdir().unwrap();
    run_writer(d.path(), 10, true).await;
    let log = d.path().join("audit.jsonl");
    let mut l = lines(&log);
    l.pop();
    let last = l.len() - 1;
    l[last] = l[last].replace("\"rows\":2", "\"rows\":0");
    put(&log, &l);
    let why = verify_tail(&log, &keys()).unwrap_err();
    assert!(why.contains("tag does not match"), "{why}");
    run_writer(d.path(), 1, true).await;
    let files = log_files(d.path());
    let start = start_record(&files[1]);
    assert_eq!(start.prev_end, Some(PrevEnd::Unverified));
    assert_eq!(
        start.prev_seq,
        Some(l.len() as u64),
        "still placed, for verify"
    );
    let e = verify(&files, &keys(), Options::default()).unwrap_err();
    assert_eq!(
        (e.file.as_path(), e.line),
        (files[0].as_path(), l.len()),
        "{e}"
    );
    let e = verify(&files[1..], &keys(), Options::default()).unwrap_err();
    assert!(e.reason.contains("could not verify"), "{e}");
}

#[test]
fn the_tail_check_reads_from_the_last_signed_record_and_skips_a_torn_line() {
    let d = tempfile::tempdir().unwrap();
    let f = write_log(d.path(), 10, 1000, 4);
    let mut l = lines(&f[0]);
    l.pop(); // the closing checkpoint
             // An edit before the last checkpoint is not the tail's business (verify finds it).
    l[2] = l[2].replace("\"rows\":2", "\"rows\":5");
    let text = l.join("\n") + "\n" + "{\"time\":\"torn";
    std::fs::write(&f[0], text).unwrap();
    let t = verify_tail(&f[0], &keys()).unwrap();
    // start 1, statements 2..5, checkpoint 6, 7..10, checkpoint 11, 12..13
    assert_eq!((t.seq, t.signed, t.closed), (13, 11, false), "{t:?}");
    let last: Record = serde_json::from_str(&l[l.len() - 1]).unwrap();
    assert_eq!(Some(t.tag), last.tag);
}

#[test]
fn an_older_start_record_does_not_vouch_for_an_unclosed_log() {
    let d = tempfile::tempdir().unwrap();
    let k = keys();
    let t = || "2025-01-01T00:00:00.000000Z".to_string();
    let mut old = ChainWriter::new(&k).unwrap();
    let mut first = vec![old.start(t(), None).unwrap()];
    first.push(
        old.seal(stmt(1, "erin", "ops", "public.c.phone", "allow"))
            .unwrap(),
    );
    first.push(old.checkpoint(t(), false).unwrap());
    first.push(
        old.seal(stmt(2, "erin", "ops", "public.c.phone", "allow"))
            .unwrap(),
    );
    let mut new = ChainWriter::new(&k).unwrap();
    let anchor = |end| Anchor {
        log: Some(old.log_id().to_string()),
        head: old.head(),
        end,
        ..Anchor::default()
    };
    let write = |end, new: &mut ChainWriter| {
        let second = [
            new.start(t(), Some(anchor(end))).unwrap(),
            new.checkpoint(t(), true).unwrap(),
        ];
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        put(&a, &first);
        put(&b, &second);
        vec![a, b]
    };
    let files = write(None, &mut new);
    let e = verify(&files, &k, Options::default()).unwrap_err();
    assert_eq!((e.file.as_path(), e.line), (files[0].as_path(), 5), "{e}");
    assert!(e.reason.contains("written by an older pgveil"), "{e}");
    let mut vouching = ChainWriter::new(&k).unwrap();
    let files = write(Some(PrevEnd::Crashed), &mut vouching);
    let s = verify(&files, &k, Options::default()).unwrap();
    assert!(
        s.notes.iter().any(|n| n.contains("1 of them")),
        "{:?}",
        s.notes
    );
}
