//! `pgveil audit verify`: replays the chain over files given oldest first.
//!
//! Detects an edited byte (tag or canonical form), a deleted, inserted or reordered line (seq
//! and tag), files out of order or with a gap (each file's `start`/`rotation` record names the
//! previous seq and tag), forged checkpoints (signature), and a file that ends without its
//! closing checkpoint (`final: true`): the tail may have been cut. Such a file passes only when it
//! is the last one and `--open` says the log is still being written, or when the next log's
//! `start` record says its writer found it so after a crash (`prev_end: crashed`, see
//! [`super::marker`]). What it cannot tell apart: a crash from a cut made after a crash (or after
//! a kill) and before the restart, back to any record after the last signed one.
//!
//! [`verify_tail`] is the writer's check of the file it continues from.
use std::io::BufRead;
use std::path::{Path, PathBuf};

use pgveil_policy::crypto::{ChainKey, CheckpointKey, KeySet};

use super::chain::{hex, unhex};
use super::record::{Kind, PrevEnd, Record};

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

/// A record that failed: the seq it had or should have had, and why.
type Fault = (u64, String);

struct LogState {
    log: String,
    key: ChainKey,
    checkpoint: CheckpointKey,
    next_seq: u64,
    prev_tag: Vec<u8>,
    last_checkpoint: Option<u64>,
    /// The seq of the last start, rotation or checkpoint record.
    last_signed: u64,
    closed: bool,
    /// Whether tags are checked (see [`TAIL_REPLAY_LIMIT`]); `verify` always checks them.
    tags: bool,
}

impl LogState {
    /// Checks `rec` (with its decoded `tag`) as the next record of this log and moves on.
    fn step(&mut self, rec: &Record, tag: Vec<u8>) -> Result<(), Fault> {
        if rec.seq != self.next_seq {
            let why = if rec.seq > self.next_seq {
                "a record is missing (deleted line)"
            } else {
                "a record is out of place (reordered or inserted line)"
            };
            return Err((
                self.next_seq,
                format!("expected seq {}, found {}: {why}", self.next_seq, rec.seq),
            ));
        }
        let body = rec.chained_body().unwrap_or_default();
        if self.tags && !self.key.verify(&self.prev_tag, body.as_bytes(), &tag) {
            return Err((
                rec.seq,
                "tag does not match (record edited, inserted or reordered)".into(),
            ));
        }
        if matches!(rec.kind, Kind::Start | Kind::Rotation | Kind::Checkpoint) {
            let sig = rec.signature.as_deref().and_then(unhex);
            let signed = rec.signed_body().unwrap_or_default();
            let ok = rec.log.as_deref() == Some(self.log.as_str())
                && sig.is_some_and(|s| self.checkpoint.verify(signed.as_bytes(), &s));
            if !ok {
                return Err((rec.seq, "bad signature".into()));
            }
            self.last_signed = rec.seq;
        }
        if rec.kind == Kind::Checkpoint {
            let head = (rec.seq > 1).then(|| (rec.seq - 1, hex(&self.prev_tag)));
            let claimed = rec.prev_seq.zip(rec.prev_tag.clone());
            if head != claimed {
                return Err((rec.seq, "checkpoint does not match the chain".into()));
            }
            self.last_checkpoint = Some(rec.seq);
            self.closed = rec.final_ == Some(true);
        } else {
            self.closed = false;
        }
        if self.tags {
            self.key.ratchet();
        }
        self.prev_tag = tag;
        self.next_seq += 1;
        Ok(())
    }

    /// The seq of the last record checked.
    fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// One line as a record in canonical form, and its decoded tag; `expected` is the seq a failure
/// is reported at when the line names none.
fn parse_line(line: &str, expected: u64) -> Result<(Record, Vec<u8>), Fault> {
    let rec: Record =
        serde_json::from_str(line).map_err(|e| (expected, format!("not a valid record: {e}")))?;
    let canonical = serde_json::to_string(&rec).unwrap_or_default();
    if canonical != line {
        return Err((
            expected.max(rec.seq),
            "not in canonical form (edited)".into(),
        ));
    }
    let tag = rec
        .tag
        .as_deref()
        .and_then(unhex)
        .filter(|t| t.len() == 32)
        .ok_or_else(|| (rec.seq, "missing or malformed tag".to_string()))?;
    Ok((rec, tag))
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
        let broken = |(seq, reason): Fault, line: usize| Broken {
            seq,
            file: path.to_path_buf(),
            line,
            reason,
        };
        let text = read_lines(path, &mut sum).map_err(|(line, why)| broken((0, why), line))?;
        for (i, line) in text.iter().enumerate() {
            let n = i + 1;
            let expected = cur.as_ref().map_or(0, |c| c.next_seq);
            let (rec, tag) = parse_line(line, expected).map_err(|f| broken(f, n))?;
            if n == 1 {
                let prev = cur.take();
                let next = open_segment(&rec, prev.as_ref(), keys, &mut sum)
                    .map_err(|r| broken((rec.seq, r), n))?;
                if let (Some(p), Kind::Start) = (&prev, rec.kind) {
                    predecessor_end(p, &rec, &last_pos, path, &mut sum)?;
                }
                cur = Some(next);
            } else if matches!(rec.kind, Kind::Start | Kind::Rotation) {
                return Err(broken(
                    (
                        rec.seq,
                        "start or rotation record inside a file (inserted or files concatenated)"
                            .into(),
                    ),
                    n,
                ));
            }
            let Some(c) = cur.as_mut() else {
                return Err(broken((rec.seq, "no log open".into()), n));
            };
            c.step(&rec, tag).map_err(|f| broken(f, n))?;
            if rec.kind == Kind::Checkpoint {
                sum.checkpoints += 1;
            }
            sum.records += 1;
            last_pos = (path.to_path_buf(), n);
        }
    }
    let Some(c) = cur else {
        return Ok(sum);
    };
    sum.closed = c.closed;
    let last_seq = c.last_seq();
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

/// The complete lines of a file (an incomplete last line, a torn write, is noted and left out).
/// On failure: the line and why.
fn read_lines(path: &Path, sum: &mut Summary) -> Result<Vec<String>, (usize, String)> {
    let bytes = std::fs::read(path).map_err(|e| (0, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        (line, "not UTF-8 (edited)".to_string())
    })?;
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    match lines.last().map(String::as_str) {
        Some("") => {
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
        return Err((1, "empty file".into()));
    }
    Ok(lines)
}

/// A log `p` that ended without its closing checkpoint is followed by a new log's `start`
/// record `rec`: it passes only when that record says its writer found it so after a crash.
/// The error names `p`'s last file (`pos`: its last record).
fn predecessor_end(
    p: &LogState,
    rec: &Record,
    pos: &(PathBuf, usize),
    next_file: &Path,
    sum: &mut Summary,
) -> Result<(), Broken> {
    if p.closed {
        return Ok(());
    }
    let (last, signed) = (p.last_seq(), p.last_signed);
    if rec.prev_end == Some(PrevEnd::Crashed) {
        sum.notes.push(format!(
            "log {} ({}) ends at seq {last} without its closing checkpoint: pgveil crashed (its \
             open marker was still there at the restart). Records after seq {signed}, its last \
             signed record, are vouched for by the chain only: {} of them are here; any written \
             after seq {last} before the crash were lost, and a cut made before the restart back \
             to any record would look the same",
            p.log,
            pos.0.display(),
            last - signed
        ));
        return Ok(());
    }
    let why = match rec.prev_end {
        Some(PrevEnd::Unclosed) => {
            "pgveil found it so at its restart with no sign of a crash (no open marker): it had \
             been closed, and its end was cut afterwards"
                .to_string()
        }
        Some(PrevEnd::Unverified) => "pgveil could not verify its end at its restart".to_string(),
        Some(PrevEnd::Closed) | Some(PrevEnd::Crashed) => {
            "the next log's start record says it ended with its closing checkpoint".to_string()
        }
        None => "the next log's start record, written by an older pgveil, does not say how \
                 its writer found it, so it does not vouch for a crash"
            .to_string(),
    };
    Err(Broken {
        seq: last + 1,
        file: pos.0.clone(),
        line: pos.1 + 1,
        reason: format!(
            "the log ends at seq {last} without its closing checkpoint, and {why} (the next log \
             begins in {}): records after seq {signed}, its last signed record, and its closing \
             checkpoint may have been cut",
            next_file.display()
        ),
    })
}

/// The first record of a file: a `start` (new log) or a `rotation` (same log, next file).
fn open_segment(
    rec: &Record,
    prev: Option<&LogState>,
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
    let (key, next_seq, prev_tag) = match rec.kind {
        Kind::Start => {
            if rec.seq != 1 {
                return Err(format!("a start record must have seq 1, found {}", rec.seq));
            }
            match prev {
                Some(p) => {
                    let head = (p.last_seq(), hex(&p.prev_tag));
                    if rec.prev_log.as_deref() != Some(p.log.as_str())
                        || anchor.as_ref() != Some(&head)
                    {
                        return Err(format!(
                            "files out of order or a gap: this log does not follow seq {} of log {}",
                            head.0, p.log
                        ));
                    }
                }
                None => predecessor_not_given(rec, &log, sum)?,
            }
            sum.logs.push(log.clone());
            (root.first_chain_key(), 1, Vec::new())
        }
        Kind::Rotation => {
            let prev_tag = match prev {
                Some(p) => {
                    let head = (p.last_seq(), hex(&p.prev_tag));
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
            (root.chain_key_at(rec.seq), rec.seq, prev_tag)
        }
        _ => return Err("the file does not begin with a start or rotation record (files out of order, or its head was cut)".into()),
    };
    Ok(LogState {
        log,
        key,
        checkpoint: root.checkpoint_key(),
        next_seq,
        prev_tag,
        last_checkpoint: None,
        last_signed: next_seq,
        closed: false,
        tags: true,
    })
}

/// A `start` record whose previous log is not among the files: what it says about it. A writer
/// that found the previous file cut (or could not verify it) said so in a signed record, and
/// that fails here even without the file.
fn predecessor_not_given(rec: &Record, log: &str, sum: &mut Summary) -> Result<(), String> {
    let prev = rec.prev_log.as_deref().unwrap_or("(unknown)");
    let file = rec.prev_file.as_deref().unwrap_or("its file");
    let at = rec
        .prev_seq
        .map_or(String::new(), |s| format!(" at seq {s}"));
    match rec.prev_end {
        Some(PrevEnd::Unclosed) => Err(format!(
            "this log's start record says pgveil found the previous log {prev} ({file}, not \
             given) ending{at} without its closing checkpoint and with no sign of a crash: its \
             end was cut"
        )),
        Some(PrevEnd::Unverified) => Err(format!(
            "this log's start record says pgveil could not verify the end of the previous log \
             {prev} ({file}, not given)"
        )),
        Some(PrevEnd::Crashed) => {
            sum.notes.push(format!(
                "log {log} follows log {prev}{at} ({file}, not given), which pgveil found \
                 unclosed after a crash: records after seq {} may be missing",
                rec.prev_signed.unwrap_or(0)
            ));
            Ok(())
        }
        Some(PrevEnd::Closed) | None => {
            if let (Some(l), Some(s)) = (&rec.prev_log, rec.prev_seq) {
                sum.notes
                    .push(format!("log {log} follows seq {s} of log {l} (not given)"));
            }
            Ok(())
        }
    }
}

/// What the writer found at the end of the file it continues from ([`verify_tail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    pub log: String,
    /// The seq and tag (hex) of the last complete record.
    pub seq: u64,
    pub tag: String,
    /// It is the closing checkpoint.
    pub closed: bool,
    /// The seq of the last signed record (start, rotation or checkpoint).
    pub signed: u64,
}

/// Beyond this seq the writer checks the signature of the last signed record and the sequence
/// and form of the records after it, but not their tags: the chain key of record `n` costs `n`
/// hashes from the keyring (about 0.15 s per million), and a log written for months holds
/// hundreds of millions. `audit verify` checks every tag whatever the cost.
pub(crate) const TAIL_REPLAY_LIMIT: u64 = 20_000_000;

/// More bytes after the last signed record than this is not a log pgveil wrote (it signs a
/// checkpoint every `checkpoint.every` records and `checkpoint.interval`).
const TAIL_MAX_BYTES: usize = 256 * 1024 * 1024;

/// Checks the end of `path` from its last signed record on (that record's signature, then the
/// chain of the records after it) and says where and how it ends. An incomplete last line (a
/// write torn by a crash) is left out, as `verify` does. Reads the file once, keeping only what
/// follows the last signed record.
pub(crate) fn verify_tail(path: &Path, keys: &KeySet) -> Result<Tail, String> {
    let (first_line, lines) = tail_lines(path)?;
    let Some(first) = lines.first() else {
        return Err("no complete record".into());
    };
    let at = |(seq, why): Fault, i: usize| format!("seq {seq} (line {}): {why}", first_line + i);
    let (rec, _) = parse_line(first, 0).map_err(|f| at(f, 0))?;
    let mut state = resume(&rec, keys).map_err(|why| at((rec.seq, why), 0))?;
    for (i, line) in lines.iter().enumerate() {
        let (rec, tag) = parse_line(line, state.next_seq).map_err(|f| at(f, i))?;
        state.step(&rec, tag).map_err(|f| at(f, i))?;
    }
    Ok(Tail {
        seq: state.last_seq(),
        tag: hex(&state.prev_tag),
        closed: state.closed,
        signed: state.last_signed,
        log: state.log,
    })
}

/// The complete lines of `path` from the last signed record on, and that record's line number.
fn tail_lines(path: &Path) -> Result<(usize, Vec<String>), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut reader = std::io::BufReader::new(f);
    let (mut first, mut n) = (1, 0);
    let mut lines: Vec<String> = Vec::new();
    let mut kept = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read: {e}"))?;
        if read == 0 || buf.last() != Some(&b'\n') {
            // The end, or a torn last line.
            return Ok((first, lines));
        }
        n += 1;
        buf.pop();
        let line = String::from_utf8(std::mem::take(&mut buf))
            .map_err(|_| format!("line {n}: not UTF-8 (edited)"))?;
        if is_signed(&line) {
            lines.clear();
            kept = 0;
            first = n;
        }
        kept += line.len();
        if kept > TAIL_MAX_BYTES {
            return Err(format!(
                "more than {TAIL_MAX_BYTES} bytes after line {first} without a signed record"
            ));
        }
        lines.push(line);
    }
}

/// Whether a line is a start, rotation or checkpoint record, by its `kind` (the first one: in
/// a canonical line it follows `time` and `seq`, and a quote inside a string is escaped). A
/// line that merely looks so fails its signature afterwards.
fn is_signed(line: &str) -> bool {
    line.split_once(",\"kind\":\"").is_some_and(|(_, rest)| {
        ["start\"", "rotation\"", "checkpoint\""]
            .iter()
            .any(|k| rest.starts_with(k))
    })
}

/// The chain state just before the signed record `rec`, from its own fields (which its
/// signature covers): the key of its seq, and the tag it follows.
fn resume(rec: &Record, keys: &KeySet) -> Result<LogState, String> {
    let log = rec.log.clone().ok_or("the signed record has no log id")?;
    let version = rec
        .key_version
        .ok_or("the signed record has no key version")?;
    let root = keys
        .audit_root(version, &log)
        .ok_or_else(|| format!("the keyring lacks key version {version} of log {log}"))?;
    let prev_tag = match rec.kind {
        Kind::Start if rec.seq == 1 => Vec::new(),
        Kind::Start => return Err(format!("a start record must have seq 1, found {}", rec.seq)),
        _ if rec.seq == 1 => return Err("only a start record has seq 1".into()),
        _ => rec
            .prev_tag
            .as_deref()
            .and_then(unhex)
            .ok_or("the signed record names no previous tag")?,
    };
    let tags = rec.seq <= TAIL_REPLAY_LIMIT;
    Ok(LogState {
        key: if tags {
            root.chain_key_at(rec.seq)
        } else {
            root.first_chain_key()
        },
        checkpoint: root.checkpoint_key(),
        next_seq: rec.seq,
        prev_tag,
        last_checkpoint: None,
        last_signed: rec.seq,
        closed: false,
        tags,
        log,
    })
}
