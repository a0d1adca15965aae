//! Result transforms: RowDescription and DataRow rewritten per output column.
//!
//! Values are decrypted (encrypted columns hold a text envelope, whose binary format is its
//! bytes), then masked, hashed or nulled. Masks work on text: a binary value of another type
//! is turned into its text form first ([`super::binary`]). A masked or hashed column is
//! reported as `text`, and text's binary format is its UTF-8 bytes, so whichever format the
//! client asked for, it gets a value of the type it was told.
use std::borrow::Cow;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgveil_policy::crypto::DomainCipher;
use pgveil_policy::crypto::ENVELOPE_PREFIX;
use pgveil_policy::mask::{Mask, PseudonymKey};
use pgveil_policy::model::{Action, ColumnId, LevelId};

use super::binary;
use crate::protocol::encoding::{ClientEncoding, Untranslatable};

/// `text`'s type OID.
pub const TEXT_OID: u32 = 25;

/// What happens to one output column's values.
#[derive(Debug)]
pub enum Op {
    /// Decrypt (if an envelope), then send as is.
    Plain,
    Mask(Mask),
    Null,
}

#[derive(Debug)]
pub struct ColumnOp {
    pub column: ColumnId,
    pub level: LevelId,
    pub action: Action,
    /// The column's type in the database (decides how binary values are read).
    pub type_oid: u32,
    /// The type clients see for decrypted values: the column's type before it was encrypted
    /// (`pgveil.original_types`), else its type in the database.
    pub plain_type: u32,
    /// The modifier of `plain_type` (`varchar(20)`, `numeric(10,2)`), or -1.
    pub plain_typmod: i32,
    /// Set when the column is encrypted.
    pub cipher: Option<Arc<DomainCipher>>,
    pub op: Op,
}

impl ColumnOp {
    /// Masked and hashed values are text whatever the column's type.
    pub fn reports_text(&self) -> bool {
        matches!(self.op, Op::Mask(_))
    }

    /// Decrypted values (and NULLs) of an encrypted column report its original type.
    pub fn reports_plain_type(&self) -> bool {
        self.cipher.is_some() && self.plain_type != self.type_oid && !self.reports_text()
    }
}

/// The transforms of one statement's output columns, by position. Positions past the end, and
/// `None` entries, pass untouched.
#[derive(Debug, Default)]
pub struct RowPlan {
    pub ops: Vec<Option<ColumnOp>>,
    pub qualified: Vec<String>,
    /// Set for `COPY ... TO STDOUT`: the format of its CopyData rows.
    pub copy: Option<CopyFormat>,
    /// Set when the audit log is on and the statement touches classified columns.
    pub audit: Option<Arc<crate::audit::AuditInfo>>,
    /// The policy's anomaly limits this statement's rows count against, for this login.
    pub anomaly: Vec<Arc<AnomalyLimit>>,
    /// The login's policy role names (`sensitive_values_by_role_total`).
    pub roles: Arc<Vec<String>>,
    /// For a statement that touched protected data and whose result columns the analysis
    /// knows them all: their number. A RowDescription with another number stops the
    /// statement (the analysis and the server disagree on what comes back).
    pub width: Option<usize>,
}

/// An anomaly rule as it applies to a statement.
#[derive(Debug)]
pub struct AnomalyLimit {
    pub rule: String,
    pub level: String,
    pub limit: pgveil_policy::model::Limit,
    /// The window (for hours rules: alerts per login at most once per window).
    pub per: std::time::Duration,
    pub deny: bool,
    /// What one result row counts as against a rows limit: the most values of one protected
    /// column of the level it carries (a self-join returning four customers' names per row
    /// counts four), at least 1.
    pub weight: u64,
}

/// The formats of COPY TO STDOUT pgveil can transform (default delimiters, quote and NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv { header: bool },
}

impl RowPlan {
    pub fn is_empty(&self) -> bool {
        self.ops.iter().all(Option::is_none)
    }

    fn op(&self, i: usize) -> Option<&ColumnOp> {
        self.ops.get(i).and_then(Option::as_ref)
    }
}

/// The format code of column `i` under Bind's rules (none: text; one: all; else per column).
pub fn formats_get(codes: &[i16], i: usize) -> i16 {
    match codes.len() {
        0 => 0,
        1 => codes[0],
        _ => codes.get(i).copied().unwrap_or(0),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("malformed {0} message from the server")]
    Malformed(&'static str),
    #[error("pgveil could not transform a value of column {column}: {reason}")]
    Decrypt { column: String, reason: String },
    #[error("result column {index} comes from protected column {column}, which pgveil's analysis did not expect there; the statement was stopped")]
    Unexpected { index: usize, column: String },
    #[error("the result has {got} columns where pgveil's analysis planned {planned}, in a statement on protected data; the statement was stopped")]
    Width { got: usize, planned: usize },
    /// A decrypted or masked value has a character the client encoding cannot hold (the
    /// server's own error for such a value, SQLSTATE 22P05).
    #[error("{0}")]
    Untranslatable(Untranslatable),
}

/// A RowDescription field, as far as the cross-check needs it.
pub struct Field {
    pub table_oid: u32,
    pub attnum: i16,
}

/// Walk the fields of a RowDescription body: `each` gets the index, the name (with its NUL)
/// and the 18 bytes that follow it.
fn fields(
    body: &[u8],
    mut each: impl FnMut(usize, &[u8], &[u8]) -> Result<(), RowError>,
) -> Result<(), RowError> {
    const W: &str = "RowDescription";
    if body.len() < 2 {
        return Err(RowError::Malformed(W));
    }
    let n = i16::from_be_bytes([body[0], body[1]]);
    let mut rest = &body[2..];
    for i in 0..n.max(0) as usize {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(RowError::Malformed(W))?;
        if rest.len() < end + 1 + 18 {
            return Err(RowError::Malformed(W));
        }
        let (name, tail) = rest.split_at(end + 1);
        each(i, name, &tail[..18])?;
        rest = &tail[18..];
    }
    Ok(())
}

fn field(f: &[u8]) -> Field {
    Field {
        table_oid: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
        attnum: i16::from_be_bytes([f[4], f[5]]),
    }
}

/// Run `check` over every field of a RowDescription body (the cross-check) without
/// rewriting it: for results that need no transform.
pub fn check_row_description(
    body: &[u8],
    mut check: impl FnMut(usize, &Field) -> Result<(), RowError>,
) -> Result<(), RowError> {
    fields(body, |i, _, f| check(i, &field(f)))
}

/// Rewrite a RowDescription body: transformed columns that are masked or hashed report
/// `text`, decrypted ones their original type (format codes stay as the server reports
/// them). `check` sees each field before it is written, for the cross-check.
pub fn row_description(
    body: &[u8],
    plan: &RowPlan,
    mut check: impl FnMut(usize, &Field) -> Result<(), RowError>,
) -> Result<BytesMut, RowError> {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b'T');
    out.put_i32(0);
    out.put_slice(body.get(..2).unwrap_or_default());
    fields(body, |i, name, f| {
        check(i, &field(f))?;
        out.put_slice(name);
        match plan.op(i) {
            Some(op) => {
                out.put_slice(&f[..6]);
                if op.reports_text() {
                    out.put_u32(TEXT_OID);
                    out.put_i16(-1);
                    out.put_i32(-1);
                } else if op.reports_plain_type() {
                    out.put_u32(op.plain_type);
                    out.put_i16(binary::type_len(op.plain_type));
                    out.put_i32(op.plain_typmod);
                } else {
                    out.put_slice(&f[6..16]);
                }
                out.put_slice(&f[16..18]);
            }
            None => out.put_slice(f),
        }
        Ok(())
    })?;
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Per-session scratch space, so that transforming a row allocates nothing after warm-up.
#[derive(Default)]
pub struct Scratch {
    /// The session's client encoding: values arrive in it and leave in it.
    pub encoding: ClientEncoding,
    plain: Vec<u8>,
    encoded: Vec<u8>,
    input: String,
    text: String,
}

/// Counts of transformed values, flushed to the metrics now and then.
#[derive(Default)]
pub struct Tally {
    /// (level, action) → values.
    pub values: Vec<((LevelId, Action), u64)>,
    pub decrypted: u64,
}

impl Tally {
    fn add(&mut self, level: LevelId, action: Action) {
        match self.values.iter_mut().find(|(k, _)| *k == (level, action)) {
            Some((_, n)) => *n += 1,
            None => self.values.push(((level, action), 1)),
        }
    }
}

/// Rewrite a DataRow body into `out` (a whole frame). `formats` are the result formats the
/// portal was bound with (empty for a simple Query: all text).
pub fn data_row(
    body: &[u8],
    plan: &RowPlan,
    formats: &[i16],
    key: &PseudonymKey,
    scratch: &mut Scratch,
    tally: &mut Tally,
    out: &mut BytesMut,
) -> Result<(), RowError> {
    const W: &str = "DataRow";
    if body.len() < 2 {
        return Err(RowError::Malformed(W));
    }
    let start = out.len();
    out.reserve(body.len() + 64);
    out.put_slice(&[b'D', 0, 0, 0, 0]);
    let n = i16::from_be_bytes([body[0], body[1]]);
    // Untouched columns (and NULLs) are copied as they came, one run at a time: `copied` is
    // where the run not yet written starts.
    let mut copied = 0;
    let mut at = 2;
    for i in 0..n.max(0) as usize {
        let Some(head) = body.get(at..at + 4) else {
            return Err(RowError::Malformed(W));
        };
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let value_at = at + 4;
        let value = if len < 0 {
            at = value_at;
            None
        } else {
            let end = value_at + len as usize;
            let Some(v) = body.get(value_at..end) else {
                return Err(RowError::Malformed(W));
            };
            at = end;
            Some(v)
        };
        let (Some(op), Some(value)) = (plan.op(i), value) else {
            continue;
        };
        out.put_slice(&body[copied..value_at - 4]);
        copied = at;
        let binary = formats_get(formats, i) == 1;
        match apply(plan, i, op, value, binary, key, scratch, tally)? {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
    out.put_slice(&body[copied..at]);
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Transform one non-NULL value of output column `i`. `None` is SQL NULL. `binary`: the
/// value is in binary format (text otherwise).
#[allow(clippy::too_many_arguments)]
pub fn apply<'s>(
    plan: &RowPlan,
    i: usize,
    op: &ColumnOp,
    value: &'s [u8],
    binary: bool,
    key: &PseudonymKey,
    scratch: &'s mut Scratch,
    tally: &mut Tally,
) -> Result<Option<&'s [u8]>, RowError> {
    tally.add(op.level, op.action);
    let column = || plan.qualified.get(i).cloned().unwrap_or_default();
    let enc = scratch.encoding;
    let not_utf8 = || RowError::Decrypt {
        column: column(),
        reason: "the decrypted value is not UTF-8 text".into(),
    };
    // A decrypted value is UTF-8 text (what was encrypted); a value as the server sent it is
    // in the client encoding.
    let (plain, decrypted): (&[u8], bool) = match &op.cipher {
        Some(c) if value.starts_with(ENVELOPE_PREFIX.as_bytes()) => {
            c.decrypt_into(value, &mut scratch.plain)
                .map_err(|e| RowError::Decrypt {
                    column: column(),
                    reason: e.to_string(),
                })?;
            tally.decrypted += 1;
            (&scratch.plain, true)
        }
        _ => (value, false),
    };
    match &op.op {
        Op::Null => Ok(None),
        Op::Plain if binary && op.reports_plain_type() && !binary::is_textual(op.plain_type) => {
            // The client asked for the original type's binary format.
            let text = std::str::from_utf8(plain).map_err(|_| not_utf8())?;
            binary::from_text(op.plain_type, text, &mut scratch.encoded).map_err(|reason| {
                RowError::Decrypt {
                    column: column(),
                    reason,
                }
            })?;
            Ok(Some(&scratch.encoded))
        }
        Op::Plain if decrypted && !enc.is_utf8() => {
            // Text in either format: the client's encoding, as the server would send it.
            let text = std::str::from_utf8(plain).map_err(|_| not_utf8())?;
            encoded(enc, text, &mut scratch.encoded)
        }
        Op::Plain => Ok(Some(plain)),
        Op::Mask(m) => {
            scratch.text.clear();
            let textual = !binary || binary::is_textual(op.type_oid);
            let read = if decrypted {
                std::str::from_utf8(plain).ok().map(Cow::Borrowed)
            } else if textual {
                enc.decode(plain).ok()
            } else {
                None
            };
            match read {
                // Text (either format) the client encoding reads: masked where it lies.
                Some(text) => m.apply(&text, key, &mut scratch.text),
                None => {
                    scratch.input.clear();
                    if decrypted || textual {
                        // Not text (never sent by the server): masked as it reads.
                        scratch.input.push_str(&String::from_utf8_lossy(plain));
                    } else {
                        binary::to_text(op.type_oid, plain, enc, &mut scratch.input).map_err(
                            |reason| RowError::Decrypt {
                                column: column(),
                                reason,
                            },
                        )?;
                    }
                    m.apply(&scratch.input, key, &mut scratch.text);
                }
            }
            if enc.is_utf8() {
                return Ok(Some(scratch.text.as_bytes()));
            }
            encoded(enc, &scratch.text, &mut scratch.encoded)
        }
    }
}

/// `text` in the client encoding `enc`, in `buf`.
fn encoded<'s>(
    enc: ClientEncoding,
    text: &str,
    buf: &'s mut Vec<u8>,
) -> Result<Option<&'s [u8]>, RowError> {
    let bytes = enc.encode(text).map_err(RowError::Untranslatable)?;
    buf.clear();
    buf.extend_from_slice(&bytes);
    Ok(Some(buf))
}

impl RowPlan {
    pub fn op_at(&self, i: usize) -> Option<&ColumnOp> {
        self.op(i)
    }
}

#[cfg(test)]
mod tests;
