//! `pgveil audit verify`: replays the chain over files given oldest first.
//!
//! Detects an edited byte (tag or canonical form), a deleted, inserted or reordered line (seq
//! and tag), files out of order or with a gap (each file's `start`/`rotation` record names the
//! previous seq and tag), forged checkpoints (signature), and a log whose last file does not end
//! with the closing checkpoint (`final: true`): the tail may have been cut. What it cannot tell
//! apart: a tail cut after the last checkpoint of a log that was never closed (a crash, or a log
//! still being written, `--open`) from one that simply ended there.
use std::path::{Path, PathBuf};

use pgveil_policy::crypto::{ChainKey, CheckpointKey, KeySet};

use super::chain::{hex, unhex};
use super::record::{Kind, Record};

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("first bad record: seq {seq} in {} line {line}: {reason}", file.display())]
pub struct Broken {
    pub seq: u64,
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub records: u64,
    pub checkpoints: u64,
    /// Log ids in order.
    pub logs: Vec<String>,
    /// Whether the last log ends with its closing checkpoint.
    pub closed: bool,
    /// Records after the last checkpoint of the last log (not covered by a signature).
    pub unanchored: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The last log may still be open (being written): do not require the closing checkpoint.
    pub open: bool,
}

struct LogState {
    log: String,
    key: ChainKey,
    checkpoint: CheckpointKey,
    next_seq: u64,
    prev_tag: Vec<u8>,
    last_checkpoint: Option<u64>,
    closed: bool,
}

/// Verifies `files` (oldest first) with `keys`.
pub fn verify<P: AsRef<Path>>(
    files: &[P],
    keys: &KeySet,
    opts: Options,
) -> Result<Summary, Broken> {
    let mut sum = Summary::default();
    let mut cur: Option<LogState> = None;
    let mut last_pos = (PathBuf::new(), 0usize);
    for path in files {
        let path = path.as_ref();
        sum.files += 1;
        let broken = |seq: u64, line: usize, reason: String| Broken {
            seq,
            file: path.to_path_buf(),
            line,
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| broken(0, 0, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            broken(0, line, "not UTF-8 (edited)".into())
        })?;
        let mut lines: Vec<&str> = text.split('\n').collect();
        match lines.last() {
            Some(&"") => {
                lines.pop();
            }
            Some(_) => {
                sum.notes.push(format!(
                    "{}: incomplete last line ignored (torn write)",
                    path.display()
                ));
                lines.pop();
            }
            None => {}
        }
        if lines.is_empty() {
            return Err(broken(0, 1, "empty file".into()));
        }
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            let expected = cur.as_ref().map_or(0, |c| c.next_seq);
            let rec: Record = serde_json::from_str(line)
                .map_err(|e| broken(expected, n, format!("not a valid record: {e}")))?;
            let canonical = serde_json::to_string(&rec).unwrap_or_default();
            if canonical != *line {
                return Err(broken(
                    expected.max(rec.seq),
                    n,
                    "not in canonical form (edited)".into(),
                ));
            }
            let tag = rec
                .tag
                .as_deref()
                .and_then(unhex)
                .filter(|t| t.len() == 32)
                .ok_or_else(|| broken(rec.seq, n, "missing or malformed tag".into()))?;
            if n == 1 {
                cur = Some(
                    open_segment(&rec, cur.take(), keys, &mut sum)
                        .map_err(|r| broken(rec.seq, n, r))?,
                );
            } else if matches!(rec.kind, Kind::Start | Kind::Rotation) {
                return Err(broken(
                    rec.seq,
                    n,
                    "start or rotation record inside a file (inserted or files concatenated)"
                        .into(),
                ));
            }
            let Some(c) = cur.as_mut() else {
                return Err(broken(rec.seq, n, "no log open".into()));
            };
            if rec.seq != c.next_seq {
                let why = if rec.seq > c.next_seq {
                    "a record is missing (deleted line)"
                } else {
                    "a record is out of place (reordered or inserted line)"
                };
                return Err(broken(
                    c.next_seq,
                    n,
                    format!("expected seq {}, found {}: {why}", c.next_seq, rec.seq),
                ));
            }
            let body = rec.chained_body().unwrap_or_default();
            if !c.key.verify(&c.prev_tag, body.as_bytes(), &tag) {
                return Err(broken(
                    rec.seq,
                    n,
                    "tag does not match (record edited, inserted or reordered)".into(),
                ));
            }
            if matches!(rec.kind, Kind::Start | Kind::Rotation | Kind::Checkpoint) {
                let sig = rec.signature.as_deref().and_then(unhex);
                let signed = rec.signed_body().unwrap_or_default();
                let ok = rec.log.as_deref() == Some(c.log.as_str())
                    && sig.is_some_and(|s| c.checkpoint.verify(signed.as_bytes(), &s));
                if !ok {
                    return Err(broken(rec.seq, n, "bad signature".into()));
                }
            }
            if rec.kind == Kind::Checkpoint {
                let head = (rec.seq > 1).then(|| (rec.seq - 1, hex(&c.prev_tag)));
                let claimed = rec.prev_seq.zip(rec.prev_tag.clone());
                if head != claimed {
                    return Err(broken(
                        rec.seq,
                        n,
                        "checkpoint does not match the chain".into(),
                    ));
                }
                sum.checkpoints += 1;
                c.last_checkpoint = Some(rec.seq);
                c.closed = rec.final_ == Some(true);
            } else {
                c.closed = false;
            }
            c.key.ratchet();
            c.prev_tag = tag;
            c.next_seq += 1;
            sum.records += 1;
            last_pos = (path.to_path_buf(), n);
        }
    }
    let Some(c) = cur else {
        return Ok(sum);
    };
    sum.closed = c.closed;
    let last_seq = c.next_seq - 1;
    sum.unanchored = last_seq - c.last_checkpoint.unwrap_or(0);
    if !c.closed && !opts.open {
        let since = match c.last_checkpoint {
            Some(s) => format!("after its last checkpoint (seq {s})"),
            None => "(it has no checkpoint)".into(),
        };
        return Err(Broken {
            seq: c.next_seq,
            file: last_pos.0,
            line: last_pos.1 + 1,
            reason: format!(
                "the log ends at seq {last_seq} without its closing checkpoint: records {since} may \
                 have been cut (unclean shutdown, or a log still being written: use --open)"
            ),
        });
    }
    Ok(sum)
}

/// The first record of a file: a `start` (new log) or a `rotation` (same log, next file).
fn open_segment(
    rec: &Record,
    prev: Option<LogState>,
    keys: &KeySet,
    sum: &mut Summary,
) -> Result<LogState, String> {
    let log = rec
        .log
        .clone()
        .ok_or("first record of the file has no log id")?;
    let version = rec
        .key_version
        .ok_or("first record of the file has no key version")?;
    let root = keys
        .audit_root(version, &log)
        .ok_or_else(|| format!("the keyring lacks key version {version} of this log"))?;
    let anchor = rec.prev_seq.zip(rec.prev_tag.clone());
    match rec.kind {
        Kind::Start => {
            if rec.seq != 1 {
                return Err(format!("a start record must have seq 1, found {}", rec.seq));
            }
            if let Some(p) = &prev {
                let head = (p.next_seq - 1, hex(&p.prev_tag));
                if rec.prev_log.as_deref() != Some(p.log.as_str()) || anchor.as_ref() != Some(&head) {
                    return Err(format!(
                        "files out of order or a gap: this log does not follow seq {} of log {}",
                        head.0, p.log
                    ));
                }
                if !p.closed {
                    sum.notes.push(format!(
                        "log {} was not closed (unclean shutdown); the next log anchors its last record, seq {}",
                        p.log, head.0
                    ));
                }
            } else if let (Some(l), Some((s, _))) = (&rec.prev_log, &anchor) {
                sum.notes.push(format!("log {log} follows seq {s} of log {l} (not given)"));
            }
            sum.logs.push(log.clone());
            Ok(LogState {
                log,
                key: root.first_chain_key(),
                checkpoint: root.checkpoint_key(),
                next_seq: 1,
                prev_tag: Vec::new(),
                last_checkpoint: None,
                closed: false,
            })
        }
        Kind::Rotation => {
            let prev_tag = match &prev {
                Some(p) => {
                    let head = (p.next_seq - 1, hex(&p.prev_tag));
                    if p.log != log || rec.seq != p.next_seq || anchor.as_ref() != Some(&head) {
                        return Err(format!(
                            "files out of order or a gap: expected seq {} of log {}, the file starts at seq {} of log {log}",
                            p.next_seq, p.log, rec.seq
                        ));
                    }
                    p.prev_tag.clone()
                }
                None => {
                    sum.notes.push(format!(
                        "starts inside log {log} at seq {} (earlier files not given)",
                        rec.seq
                    ));
                    sum.logs.push(log.clone());
                    match &anchor {
                        Some((_, t)) => unhex(t).ok_or("malformed prev_tag")?,
                        None => Vec::new(),
                    }
                }
            };
            Ok(LogState {
                log,
                key: root.chain_key_at(rec.seq),
                checkpoint: root.checkpoint_key(),
                next_seq: rec.seq,
                prev_tag,
                last_checkpoint: None,
                closed: false,
            })
        }
        _ => Err("the file does not begin with a start or rotation record (files out of order, or its head was cut)".into()),
    }
}
