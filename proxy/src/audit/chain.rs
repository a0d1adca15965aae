//! The integrity chain on the writing side.
//!
//! For the record with sequence number `n`: `tag_n = HMAC-SHA256(k_n, prev ‖ body_n)` where
//! `prev` is the raw previous tag (empty for seq 1) and `body_n` the record serialized without
//! `tag`; then `k_{n+1} = SHA-256("pgveil audit ratchet" ‖ k_n)` overwrites `k_n`. `k_1` comes
//! from the keyring's lowest master key version through HKDF with a random 128-bit log id, which
//! the log's `start` record (and every `rotation` and `checkpoint`) names. Start, rotation and
//! checkpoint records also carry a signature with the non-ratcheted checkpoint key, which the
//! keyring can check without replaying the chain.
use pgveil_policy::crypto::{ChainKey, CheckpointKey, KeySet};

use super::record::{Kind, PrevEnd, Record};
use super::statement::{Clock, StatementRecord};
use super::AuditError;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    String::from_utf8(s).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Where a new log continues from: what its writer found of the file before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchor {
    /// The previous log's id.
    pub log: Option<String>,
    /// The seq and tag of the previous file's last complete record.
    pub head: Option<(u64, String)>,
    /// The previous file's name after it was moved aside.
    pub file: Option<String>,
    /// How that file ended.
    pub end: Option<PrevEnd>,
    /// The seq of its last signed record.
    pub signed: Option<u64>,
}

/// The writing end of one log's chain. Holds only the current (ratcheted) chain key and the
/// checkpoint key; the root secret is dropped after both are taken.
pub struct ChainWriter {
    log: String,
    key_version: u32,
    key: ChainKey,
    checkpoint: CheckpointKey,
    next_seq: u64,
    prev_tag: Vec<u8>,
}

impl std::fmt::Debug for ChainWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWriter")
            .field("log", &self.log)
            .field("key_version", &self.key_version)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl ChainWriter {
    /// A new log with a fresh random id, keyed from the keyring's lowest version.
    pub fn new(keys: &KeySet) -> Result<ChainWriter, AuditError> {
        let id: [u8; 16] = rand::random();
        Self::with_log_id(keys, &hex(&id))
    }

    pub fn with_log_id(keys: &KeySet, log: &str) -> Result<ChainWriter, AuditError> {
        let version = keys.lowest_version().ok_or(AuditError::NoKey)?;
        let root = keys.audit_root(version, log).ok_or(AuditError::NoKey)?;
        Ok(ChainWriter {
            log: log.to_string(),
            key_version: version,
            key: root.first_chain_key(),
            checkpoint: root.checkpoint_key(),
            next_seq: 1,
            prev_tag: Vec::new(),
        })
    }

    pub fn log_id(&self) -> &str {
        &self.log
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq and tag (hex) of the last record sealed, if any.
    pub fn head(&self) -> Option<(u64, String)> {
        (self.next_seq > 1).then(|| (self.next_seq - 1, hex(&self.prev_tag)))
    }

    /// The `start` record of this log (call first), following `after` if given.
    pub fn start(&mut self, time: String, after: Option<Anchor>) -> Result<String, AuditError> {
        let mut r = Record {
            time,
            kind: Kind::Start,
            ..Record::default()
        };
        if let Some(a) = after {
            r.prev_log = a.log;
            r.prev_file = a.file;
            if let Some((seq, tag)) = a.head {
                r.prev_seq = Some(seq);
                r.prev_tag = Some(tag);
            }
            r.prev_end = a.end;
            r.prev_signed = a.signed;
        }
        self.seal(r)
    }

    /// The keyring version this log's keys come from.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// A signature (hex) with this log's checkpoint key over `body`, for the open marker. Its
    /// bodies begin `{"open":`, record bodies `{"time":`, so neither passes for the other.
    pub(crate) fn sign_marker(&self, body: &[u8]) -> String {
        hex(&self.checkpoint.sign(body))
    }

    /// The `rotation` record that opens a new file; `prev_file` is the old file's new name.
    pub fn rotation(&mut self, time: String, prev_file: String) -> Result<String, AuditError> {
        let mut r = Record {
            time,
            kind: Kind::Rotation,
            prev_file: Some(prev_file),
            ..Record::default()
        };
        if let Some((seq, tag)) = self.head() {
            r.prev_seq = Some(seq);
            r.prev_tag = Some(tag);
        }
        self.seal(r)
    }

    /// A `checkpoint` record (`closing`: the last record of the log).
    pub fn checkpoint(&mut self, time: String, closing: bool) -> Result<String, AuditError> {
        let mut r = Record {
            time,
            kind: Kind::Checkpoint,
            final_: Some(closing),
            ..Record::default()
        };
        if let Some((seq, tag)) = self.head() {
            r.prev_seq = Some(seq);
            r.prev_tag = Some(tag);
        }
        self.seal(r)
    }

    /// Numbers, signs (for start, rotation, checkpoint) and tags a record; returns its line
    /// (without the newline) and ratchets the key.
    pub fn seal(&mut self, mut r: Record) -> Result<String, AuditError> {
        r.seq = self.next_seq;
        r.tag = None;
        r.signature = None;
        if matches!(r.kind, Kind::Start | Kind::Rotation | Kind::Checkpoint) {
            r.log = Some(self.log.clone());
            r.key_version = Some(self.key_version);
            let body = r.signed_body().map_err(AuditError::Json)?;
            r.signature = Some(hex(&self.checkpoint.sign(body.as_bytes())));
        }
        // `tag` is None and serialized last: this is `chained_body()` without its clone, and
        // the line is the same text with `"tag":"<hex>"` appended (hex needs no escaping).
        let body = serde_json::to_string(&r).map_err(AuditError::Json)?;
        let tag = self.key.tag(&self.prev_tag, body.as_bytes());
        let mut line = body;
        line.pop();
        line.push_str(",\"tag\":\"");
        line.push_str(&hex(&tag));
        line.push_str("\"}");
        self.advance(&tag);
        Ok(line)
    }

    /// [`seal`](Self::seal) for a statement record on the hot path: appends its line (without
    /// the newline) to `out`.
    pub(crate) fn seal_statement(
        &mut self,
        r: &StatementRecord,
        clock: &mut Clock,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        r.write_body(self.next_seq, clock, out);
        let tag = self.key.tag(&self.prev_tag, &out[start..]);
        out.pop();
        out.extend_from_slice(b",\"tag\":\"");
        push_hex(out, &tag);
        out.extend_from_slice(b"\"}");
        self.advance(&tag);
    }

    fn advance(&mut self, tag: &[u8]) {
        self.key.ratchet();
        self.prev_tag.clear();
        self.prev_tag.extend_from_slice(tag);
        self.next_seq += 1;
    }
}
