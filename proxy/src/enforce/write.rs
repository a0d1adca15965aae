//! The write side: values on their way into encrypted columns, and values compared with them,
//! encrypted before the server sees them.
//!
//! - Literals in the SQL text are replaced by their envelopes (a lookup literal by the
//!   envelopes of every key version, so rows not yet re-encrypted still match).
//! - Parameters are encrypted at Bind; the Parse declares them `text` (what the column holds),
//!   and the ParameterDescription the client gets back names the plaintext type, so a driver
//!   that describes before binding sends what it would send to an unprotected database.
//! - A value that already looks like an envelope is refused: nobody can plant a forged one.
use std::borrow::Cow;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgveil_policy::crypto::{DomainCipher, Mode, ENVELOPE_PREFIX};
use pgveil_policy::model::{ColumnId, LevelId};

use super::binary;
use super::rows::TEXT_OID;
use crate::protocol::encoding::ClientEncoding;
use crate::protocol::frontend::{self, Bind};
use crate::protocol::sqlstate;
use crate::sql::{LookupForm, Refusal};

/// How the values of one encrypted column are sealed.
#[derive(Debug)]
pub struct Seal {
    pub column: ColumnId,
    pub level: LevelId,
    pub qualified: String,
    pub cipher: Arc<DomainCipher>,
    /// The column's mode (lookups always use deterministic).
    pub mode: Mode,
    /// The type clients write and read: the column's type before it was encrypted.
    pub plain_type: u32,
}

/// A literal replaced in the SQL text.
#[derive(Debug)]
pub struct LiteralEdit {
    pub start: usize,
    pub end: usize,
    /// The canonical plaintext.
    pub plaintext: String,
    pub seal: Arc<Seal>,
    /// `None`: a stored value; `Some`: a lookup in that position.
    pub lookup: Option<LookupForm>,
}

/// A parameter encrypted at Bind.
#[derive(Debug)]
pub struct ParamEdit {
    /// 0-based.
    pub index: usize,
    pub seal: Arc<Seal>,
    pub lookup: bool,
    /// The array of `col = ANY($n)`: each element is encrypted (under every key version).
    pub array: bool,
    /// A scalar lookup the text widened to `= ANY($n)` / `<> ALL($n)`: its value is sent as
    /// the array of its envelopes under every key version.
    pub widened: bool,
}

/// Everything a statement text needs on its way in.
#[derive(Debug, Default)]
pub struct WritePlan {
    /// In text order, not overlapping.
    pub literals: Vec<LiteralEdit>,
    /// Casts around parameters removed from the text (`$1::date` → `$1`): byte ranges and
    /// the parameter number.
    pub strips: Vec<(usize, usize, usize)>,
    /// Parameters of `col = $n` / `col <> $n` (and any cast around them) replaced by
    /// `ANY($n)` / `ALL($n)`: byte ranges, the number and the form.
    pub widen: Vec<(usize, usize, usize, LookupForm)>,
    pub params: Vec<ParamEdit>,
}

impl WritePlan {
    pub fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.params.is_empty()
            && self.strips.is_empty()
            && self.widen.is_empty()
    }

    /// The edit of parameter `i` (0-based), if it is encrypted.
    pub fn param(&self, i: usize) -> Option<&ParamEdit> {
        self.params.iter().find(|p| p.index == i)
    }
}

/// Why a value could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("pgveil refuses a value for encrypted column {column} that already looks like a pgveil envelope: a client cannot write ciphertext directly")]
    Forged { column: String, level: LevelId },
    #[error("invalid value for encrypted column {column}: {reason}")]
    Invalid {
        column: String,
        level: LevelId,
        reason: String,
    },
    #[error("pgveil could not encrypt a value for column {column}: {reason}")]
    Encrypt {
        column: String,
        level: LevelId,
        reason: String,
    },
}

impl WriteError {
    pub fn refusal(&self) -> Refusal {
        let (sqlstate, level, hint) = match self {
            WriteError::Forged { level, .. } => (
                sqlstate::INSUFFICIENT_PRIVILEGE,
                *level,
                Some("write the plaintext value; pgveil encrypts it".to_string()),
            ),
            WriteError::Invalid { level, .. } => {
                (sqlstate::INVALID_TEXT_REPRESENTATION, *level, None)
            }
            WriteError::Encrypt { level, .. } => (sqlstate::INTERNAL_ERROR, *level, None),
        };
        Refusal::bad_value(sqlstate, self.to_string(), hint, level)
    }
}

/// The canonical text of a value of type `oid`, so equal values of a deterministic column
/// encrypt equally: the form PostgreSQL prints for the types pgveil knows, the text as given
/// for the others.
pub fn canonical(oid: u32, text: &str) -> Result<Cow<'_, str>, String> {
    if binary::is_textual(oid) || !matches!(oid, 16 | 20 | 21 | 23 | 1082 | 1114 | 1700) {
        return Ok(Cow::Borrowed(text));
    }
    let mut bin = Vec::new();
    binary::from_text(oid, text, &mut bin)?;
    let mut out = String::new();
    binary::to_text(oid, &bin, ClientEncoding::Utf8, &mut out)?;
    Ok(Cow::Owned(out))
}

/// Check and canonicalise a plaintext for `seal`.
pub fn plaintext<'v>(seal: &Seal, value: &'v str) -> Result<Cow<'v, str>, WriteError> {
    if value.starts_with(ENVELOPE_PREFIX) {
        return Err(WriteError::Forged {
            column: seal.qualified.clone(),
            level: seal.level,
        });
    }
    canonical(seal.plain_type, value).map_err(|reason| WriteError::Invalid {
        column: seal.qualified.clone(),
        level: seal.level,
        reason,
    })
}

/// Buffers reused across values, and the session's nonce generator.
#[derive(Default)]
pub struct Sealer {
    /// The session's client encoding, in which parameters arrive.
    pub encoding: ClientEncoding,
    scratch: Vec<u8>,
    /// Envelopes produced (for the crypto metric).
    pub sealed: u64,
    /// ChaCha20 seeded from the system's generator on first use: randomized nonces without a
    /// system call per value.
    rng: Option<rand_chacha::ChaCha20Rng>,
    /// A parameter's text, and its envelope.
    text: String,
    env: String,
}

impl Sealer {
    /// Encrypt a canonical plaintext, appending the envelope to `out`.
    pub fn seal(
        &mut self,
        seal: &Seal,
        lookup: bool,
        plain: &str,
        out: &mut String,
    ) -> Result<(), WriteError> {
        let mode = if lookup {
            Mode::Deterministic
        } else {
            seal.mode
        };
        self.sealed += 1;
        let err = |e: pgveil_policy::crypto::EncryptError| WriteError::Encrypt {
            column: seal.qualified.clone(),
            level: seal.level,
            reason: e.to_string(),
        };
        match mode {
            Mode::Deterministic => seal
                .cipher
                .encrypt_into(mode, plain.as_bytes(), &mut self.scratch, out)
                .map_err(err),
            Mode::Randomized => {
                let nonce = self.nonce().map_err(err)?;
                seal.cipher
                    .encrypt_randomized_with(nonce, plain.as_bytes(), &mut self.scratch, out)
                    .map_err(err)
            }
        }
    }

    fn nonce(&mut self) -> Result<[u8; 12], pgveil_policy::crypto::EncryptError> {
        use rand::{RngCore, SeedableRng};
        use ring::rand::SecureRandom;
        if self.rng.is_none() {
            let mut seed = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut seed)
                .map_err(|_| pgveil_policy::crypto::EncryptError::Rng)?;
            self.rng = Some(rand_chacha::ChaCha20Rng::from_seed(seed));
        }
        let mut n = [0u8; 12];
        if let Some(rng) = self.rng.as_mut() {
            rng.fill_bytes(&mut n);
        }
        Ok(n)
    }

    /// The array parameter of `col = ANY($n)` (`binary`: in binary format) as a text-format
    /// array of envelopes: every element's under every key version, NULLs kept.
    pub fn seal_array(
        &mut self,
        seal: &Seal,
        binary: bool,
        value: &[u8],
        out: &mut String,
    ) -> Result<(), WriteError> {
        let invalid = |reason: String| WriteError::Invalid {
            column: seal.qualified.clone(),
            level: seal.level,
            reason,
        };
        let elements = if binary {
            super::array_param::parse_binary(value, self.encoding)
        } else {
            self.encoding
                .decode(value)
                .map_err(|e| e.to_string())
                .and_then(|t| super::array_param::parse_text(&t))
        }
        .map_err(invalid)?;
        out.push('{');
        for el in &elements {
            match el {
                None => super::array_param::push_element(out, None),
                Some(el) => {
                    let plain = plaintext(seal, el)?;
                    self.seal_versions(seal, &plain, out)?;
                }
            }
        }
        out.push('}');
        Ok(())
    }

    /// The envelopes of `plain` under every key version, as elements of a text-format array
    /// being written (`out` holds its opening brace and any elements before).
    pub fn seal_versions(
        &mut self,
        seal: &Seal,
        plain: &str,
        out: &mut String,
    ) -> Result<(), WriteError> {
        let mut envelope = String::new();
        for v in seal.cipher.versions() {
            envelope.clear();
            self.sealed += 1;
            seal.cipher
                .encrypt_deterministic_as(v, plain.as_bytes(), &mut self.scratch, &mut envelope)
                .map_err(|err| WriteError::Encrypt {
                    column: seal.qualified.clone(),
                    level: seal.level,
                    reason: err.to_string(),
                })?;
            super::array_param::push_element(out, Some(&envelope));
        }
        Ok(())
    }

    /// The replacement text of a literal: a quoted envelope, or for a lookup under several
    /// key versions, the envelopes of each in the form its position allows.
    fn literal(&mut self, e: &LiteralEdit, out: &mut String) -> Result<(), WriteError> {
        let versions = e.seal.cipher.versions();
        let form = match e.lookup {
            None => {
                out.push('\'');
                self.seal(&e.seal, false, &e.plaintext, out)?;
                out.push('\'');
                return Ok(());
            }
            Some(_) if versions.len() <= 1 => LookupForm::Single,
            Some(f) => f,
        };
        let (open, sep, close) = match form {
            // The analysis makes array lookups of parameters only.
            LookupForm::Single | LookupForm::Array => {
                out.push('\'');
                self.seal(&e.seal, true, &e.plaintext, out)?;
                out.push('\'');
                return Ok(());
            }
            LookupForm::Eq => ("ANY(ARRAY['", "', '", "'])"),
            LookupForm::NotEq => ("ALL(ARRAY['", "', '", "'])"),
            LookupForm::Item => ("'", "', '", "'"),
        };
        out.push_str(open);
        for (i, v) in versions.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            self.sealed += 1;
            e.seal
                .cipher
                .encrypt_deterministic_as(*v, e.plaintext.as_bytes(), &mut self.scratch, out)
                .map_err(|err| WriteError::Encrypt {
                    column: e.seal.qualified.clone(),
                    level: e.seal.level,
                    reason: err.to_string(),
                })?;
        }
        out.push_str(close);
        Ok(())
    }

    /// The SQL text with every literal replaced by its envelope(s) and every cast around an
    /// encrypted parameter removed.
    pub fn rewrite_sql(&mut self, sql: &str, plan: &WritePlan) -> Result<String, WriteError> {
        enum Edit<'p> {
            Lit(&'p LiteralEdit),
            Strip(usize),
            Widen(usize, LookupForm),
        }
        let mut edits: Vec<(usize, usize, Edit<'_>)> = plan
            .literals
            .iter()
            .map(|l| (l.start, l.end, Edit::Lit(l)))
            .chain(plan.strips.iter().map(|&(s, e, n)| (s, e, Edit::Strip(n))))
            .chain(
                plan.widen
                    .iter()
                    .map(|&(s, e, n, f)| (s, e, Edit::Widen(n, f))),
            )
            .collect();
        edits.sort_by_key(|e| e.0);
        let mut out = String::with_capacity(sql.len() + 96 * edits.len());
        let mut at = 0;
        for (start, end, edit) in edits {
            let (Some(before), true) = (sql.get(at..start), end <= sql.len()) else {
                continue;
            };
            out.push_str(before);
            match edit {
                Edit::Lit(l) => self.literal(l, &mut out)?,
                Edit::Strip(n) => {
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                Edit::Widen(n, f) => {
                    out.push_str(if f == LookupForm::NotEq {
                        "ALL($"
                    } else {
                        "ANY($"
                    });
                    out.push_str(&n.to_string());
                    out.push(')');
                }
            }
            at = end;
        }
        out.push_str(sql.get(at..).unwrap_or(""));
        Ok(out)
    }
}

/// The parameter types of a rewritten Parse: encrypted parameters are sent as `text`, the
/// others as the client declared them.
pub fn param_types(declared: &[u32], plan: &WritePlan) -> Vec<u32> {
    let n = declared
        .len()
        .max(plan.params.iter().map(|p| p.index + 1).max().unwrap_or(0));
    (0..n)
        .map(|i| {
            if let Some(p) = plan.param(i) {
                if p.array || p.widened {
                    super::array_param::TEXT_ARRAY_OID
                } else {
                    TEXT_OID
                }
            } else {
                declared.get(i).copied().unwrap_or(0)
            }
        })
        .collect()
}

/// What the client declared or will be told for parameter `i`: its own declared type, or
/// the column's plaintext type.
fn client_type(declared: &[u32], e: &ParamEdit) -> u32 {
    match declared.get(e.index).copied() {
        Some(t) if t != 0 => t,
        _ if e.array => super::array_param::array_type_of(e.seal.plain_type),
        _ => e.seal.plain_type,
    }
}

/// Rewrite a Bind: every encrypted parameter is read in the format the client sent it
/// (binary values through their declared type), checked, encrypted and sent as text.
/// `Ok(None)`: no parameter of this Bind is encrypted.
pub fn rewrite_bind(
    b: &Bind<'_>,
    plan: &WritePlan,
    declared: &[u32],
    sealer: &mut Sealer,
) -> Result<Option<BytesMut>, WriteError> {
    let nparams = b.param_count;
    if !plan.params.iter().any(|p| p.index < nparams) {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(
        b.names.len() + b.values.len() + b.result_formats.len() + 128 * plan.params.len() + 16,
    );
    out.put_u8(b'B');
    out.put_i32(0);
    out.put_slice(b.names);
    out.put_i16(nparams as i16);
    for i in 0..nparams {
        let f = if plan.param(i).is_some() {
            0
        } else {
            b.param_format(i)
        };
        out.put_i16(f);
    }
    out.put_i16(nparams as i16);
    let mut text = std::mem::take(&mut sealer.text);
    let mut env = std::mem::take(&mut sealer.env);
    let r = bind_values(b, plan, declared, sealer, &mut text, &mut env, &mut out);
    sealer.text = text;
    sealer.env = env;
    r?;
    out.put_i16((b.result_formats.len() / 2) as i16);
    out.put_slice(b.result_formats);
    Ok(Some(frontend::finish(out)))
}

/// The parameter values of a rewritten Bind, into `out`.
fn bind_values(
    b: &Bind<'_>,
    plan: &WritePlan,
    declared: &[u32],
    sealer: &mut Sealer,
    text: &mut String,
    env: &mut String,
    out: &mut BytesMut,
) -> Result<(), WriteError> {
    for (i, v) in b.params().enumerate() {
        let (Some(e), Some(v)) = (plan.param(i), v) else {
            match v {
                Some(v) => {
                    out.put_i32(v.len() as i32);
                    out.put_slice(v);
                }
                None => out.put_i32(-1),
            }
            continue;
        };
        env.clear();
        if e.array {
            sealer.seal_array(&e.seal, b.param_format(i) == 1, v, env)?;
        } else {
            text.clear();
            let enc = sealer.encoding;
            param_text(
                b.param_format(i) == 1,
                client_type(declared, e),
                e,
                v,
                enc,
                text,
            )?;
            let plain = plaintext(&e.seal, text)?;
            if e.widened {
                env.push('{');
                sealer.seal_versions(&e.seal, &plain, env)?;
                env.push('}');
            } else {
                sealer.seal(&e.seal, e.lookup, &plain, env)?;
            }
        }
        out.put_i32(env.len() as i32);
        out.put_slice(env.as_bytes());
    }
    Ok(())
}

/// A parameter's value as text: binary values read through `ty`, text ones read in the
/// client encoding `enc`.
fn param_text(
    binary_format: bool,
    ty: u32,
    e: &ParamEdit,
    v: &[u8],
    enc: ClientEncoding,
    text: &mut String,
) -> Result<(), WriteError> {
    let invalid = |reason: String| WriteError::Invalid {
        column: e.seal.qualified.clone(),
        level: e.seal.level,
        reason,
    };
    if binary_format {
        binary::to_text(ty, v, enc, text).map_err(invalid)
    } else {
        let s = enc.decode(v).map_err(|e| invalid(e.to_string()))?;
        text.push_str(&s);
        Ok(())
    }
}

/// Rewrite a ParameterDescription body: encrypted parameters are described with the type
/// the client declared, or the column's plaintext type.
pub fn parameter_description(body: &[u8], plan: &WritePlan, declared: &[u32]) -> Option<BytesMut> {
    if body.len() < 2 {
        return None;
    }
    let n = i16::from_be_bytes([body[0], body[1]]).max(0) as usize;
    if body.len() < 2 + 4 * n {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b't');
    out.put_i32((4 + body.len()) as i32);
    out.put_slice(&body[..2]);
    for (i, c) in body[2..2 + 4 * n].chunks_exact(4).enumerate() {
        match plan.param(i) {
            Some(e) => out.put_u32(client_type(declared, e)),
            None => out.put_slice(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical(1082, " 2020-01-02").ok().as_deref(),
            Some("2020-01-02")
        );
        assert_eq!(canonical(1700, "1.50").ok().as_deref(), Some("1.50"));
        assert_eq!(canonical(23, " 42").ok().as_deref(), Some("42"));
        assert_eq!(canonical(25, " x ").ok().as_deref(), Some(" x "));
        assert_eq!(canonical(16, "yes").ok().as_deref(), Some("t"));
        assert!(canonical(23, "4x2").is_err());
    }

    #[test]
    fn rewritten_parses_declare_encrypted_parameters_text() {
        let plan = WritePlan::default();
        assert_eq!(param_types(&[23, 0], &plan), vec![23, 0]);
        assert_eq!(param_types(&[], &plan), Vec::<u32>::new());
    }
}
