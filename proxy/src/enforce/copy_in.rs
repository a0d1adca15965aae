//! `COPY ... FROM STDIN` into encrypted columns: the client's CopyData encrypted row by row.
//!
//! Clients cut their CopyData wherever they like (psql sends lines, others send 64 KiB
//! chunks that split rows and even CSV quoted fields), so rows are reassembled here: each
//! CopyData the client sends becomes one CopyData holding the complete rows it finished, and
//! the unfinished tail waits for the next. Text and CSV formats with PostgreSQL's default
//! delimiter, quote and NULL string; binary COPY into encrypted columns is refused by the
//! analysis.
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::copy::unescape_text;
use super::rows::CopyFormat;
use super::write::{plaintext, Seal, Sealer, WriteError};

/// A row longer than this is refused rather than buffered.
const MAX_ROW: usize = 64 * 1024 * 1024;

/// The encrypted columns of a COPY FROM STDIN, by position.
#[derive(Debug)]
pub struct CopyInPlan {
    pub columns: Vec<Option<Arc<Seal>>>,
    pub format: CopyFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyInError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("a COPY row is longer than {MAX_ROW} bytes")]
    RowTooLong,
    #[error("malformed COPY data: {0}")]
    Malformed(&'static str),
}

/// One COPY FROM STDIN in progress.
pub struct CopyIn {
    plan: Arc<CopyInPlan>,
    /// The unfinished row.
    pending: Vec<u8>,
    /// CSV: the pending bytes end inside a quoted field.
    in_quotes: bool,
    /// How far `pending` has been scanned for the end of the row.
    scanned: usize,
    header_pending: bool,
    /// `\.` was seen: the rest passes untouched (the server ignores it).
    ended: bool,
    pub sealer: Sealer,
    field: Vec<u8>,
    value: String,
}

impl CopyIn {
    pub fn new(plan: Arc<CopyInPlan>) -> CopyIn {
        let header_pending = matches!(plan.format, CopyFormat::Csv { header: true });
        CopyIn {
            plan,
            pending: Vec::new(),
            in_quotes: false,
            scanned: 0,
            header_pending,
            ended: false,
            sealer: Sealer::default(),
            field: Vec::new(),
            value: String::new(),
        }
    }

    /// One CopyData payload from the client: appends a CopyData frame with the rows it
    /// completes (none when it completes none).
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), CopyInError> {
        let start = out.len();
        out.put_u8(b'd');
        out.put_i32(0);
        let body = out.len();
        if self.ended {
            out.put_slice(data);
        } else {
            self.pending.extend_from_slice(data);
            if let Err(e) = self.rows(out, false) {
                out.truncate(start);
                return Err(e);
            }
        }
        if out.len() == body {
            out.truncate(start);
            return Ok(());
        }
        let len = (out.len() - start - 1) as i32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// CopyDone: the last row may lack its newline.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), CopyInError> {
        if self.pending.is_empty() || self.ended {
            return Ok(());
        }
        let start = out.len();
        out.put_u8(b'd');
        out.put_i32(0);
        if let Err(e) = self.rows(out, true) {
            out.truncate(start);
            return Err(e);
        }
        let len = (out.len() - start - 1) as i32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Transform every complete row of `pending` into `out`; at the end, the rest too.
    fn rows(&mut self, out: &mut BytesMut, at_end: bool) -> Result<(), CopyInError> {
        let csv = matches!(self.plan.format, CopyFormat::Csv { .. });
        let mut row_start = 0;
        let mut i = self.scanned;
        let pending = std::mem::take(&mut self.pending);
        while i < pending.len() {
            let b = pending[i];
            if csv && b == b'"' {
                self.in_quotes = !self.in_quotes;
            } else if b == b'\n' && !self.in_quotes {
                self.row(&pending[row_start..=i], out)?;
                row_start = i + 1;
                if self.ended {
                    out.put_slice(&pending[row_start..]);
                    row_start = pending.len();
                    break;
                }
            }
            i += 1;
        }
        if at_end && row_start < pending.len() {
            if self.in_quotes {
                return Err(CopyInError::Malformed("unterminated CSV quoted field"));
            }
            self.row(&pending[row_start..], out)?;
            row_start = pending.len();
        }
        self.pending = pending;
        self.pending.drain(..row_start);
        self.scanned = self.pending.len();
        if self.pending.len() > MAX_ROW {
            return Err(CopyInError::RowTooLong);
        }
        Ok(())
    }

    /// One row, with its line ending if it has one.
    fn row(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), CopyInError> {
        let (content, ending) = split_ending(line);
        if content == b"\\." {
            self.ended = true;
            out.put_slice(line);
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            out.put_slice(line);
            return Ok(());
        }
        match self.plan.format {
            CopyFormat::Text => self.text_row(content, out)?,
            CopyFormat::Csv { .. } => self.csv_row(content, out)?,
        }
        out.put_slice(ending);
        Ok(())
    }

    fn seal_field(&mut self, seal: &Seal, out: &mut BytesMut) -> Result<(), CopyInError> {
        let text = std::str::from_utf8(&self.field).map_err(|_| WriteError::Invalid {
            column: seal.qualified.clone(),
            level: seal.level,
            reason: "the value is not valid UTF-8".into(),
        })?;
        let plain = plaintext(seal, text)?;
        self.value.clear();
        self.sealer.seal(seal, false, &plain, &mut self.value)?;
        // Envelopes hold only `pgv1:` and base64: nothing to escape or quote.
        out.put_slice(self.value.as_bytes());
        Ok(())
    }

    fn text_row(&mut self, content: &[u8], out: &mut BytesMut) -> Result<(), CopyInError> {
        let plan = self.plan.clone();
        for (i, raw) in content.split(|&b| b == b'\t').enumerate() {
            if i > 0 {
                out.put_u8(b'\t');
            }
            match plan.columns.get(i).and_then(Option::as_ref) {
                Some(seal) if raw != b"\\N" => {
                    unescape_text(raw, &mut self.field);
                    self.seal_field(seal, out)?;
                }
                _ => out.put_slice(raw),
            }
        }
        Ok(())
    }

    fn csv_row(&mut self, content: &[u8], out: &mut BytesMut) -> Result<(), CopyInError> {
        let plan = self.plan.clone();
        let mut pos = 0;
        let mut i = 0;
        loop {
            if i > 0 {
                out.put_u8(b',');
            }
            let start = pos;
            let quoted = content.get(pos) == Some(&b'"');
            self.field.clear();
            if quoted {
                pos += 1;
                loop {
                    match content.get(pos) {
                        None => {
                            return Err(CopyInError::Malformed("unterminated CSV quoted field"))
                        }
                        Some(b'"') if content.get(pos + 1) == Some(&b'"') => {
                            self.field.push(b'"');
                            pos += 2;
                        }
                        Some(b'"') => {
                            pos += 1;
                            break;
                        }
                        Some(&b) => {
                            self.field.push(b);
                            pos += 1;
                        }
                    }
                }
            }
            while let Some(&b) = content.get(pos) {
                if b == b',' {
                    break;
                }
                self.field.push(b);
                pos += 1;
            }
            let null = !quoted && self.field.is_empty();
            match plan.columns.get(i).and_then(Option::as_ref) {
                Some(seal) if !null => self.seal_field(seal, out)?,
                _ => out.put_slice(&content[start..pos]),
            }
            i += 1;
            match content.get(pos) {
                Some(b',') => pos += 1,
                _ => break,
            }
        }
        Ok(())
    }
}

fn split_ending(line: &[u8]) -> (&[u8], &[u8]) {
    if let Some(c) = line.strip_suffix(b"\r\n") {
        (c, &line[c.len()..])
    } else if let Some(c) = line.strip_suffix(b"\n") {
        (c, &line[c.len()..])
    } else {
        (line, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgveil_policy::crypto::{KeySet, MasterKey, Mode};

    fn plan(format: CopyFormat) -> (Arc<CopyInPlan>, Arc<pgveil_policy::crypto::DomainCipher>) {
        let keys = KeySet::new(vec![(1, MasterKey::from_bytes([7; 32]))], 1).expect("keys");
        let cipher = Arc::new(keys.domain("phone"));
        let seal = Arc::new(Seal {
            column: 0,
            level: 0,
            qualified: "public.t.phone".into(),
            cipher: cipher.clone(),
            mode: Mode::Deterministic,
            plain_type: 25,
        });
        (
            Arc::new(CopyInPlan {
                columns: vec![None, Some(seal)],
                format,
            }),
            cipher,
        )
    }

    /// Feed `chunks`, finish, and return the CopyData payloads joined.
    fn run(p: Arc<CopyInPlan>, chunks: &[&[u8]]) -> Result<Vec<u8>, CopyInError> {
        let mut c = CopyIn::new(p);
        let mut out = BytesMut::new();
        for ch in chunks {
            c.feed(ch, &mut out)?;
        }
        c.finish(&mut out)?;
        let mut joined = Vec::new();
        let mut rest = &out[..];
        while rest.len() >= 5 {
            assert_eq!(rest[0], b'd');
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            joined.extend_from_slice(&rest[5..1 + len]);
            rest = &rest[1 + len..];
        }
        assert!(rest.is_empty());
        Ok(joined)
    }

    fn decrypt_column(
        out: &[u8],
        cipher: &pgveil_policy::crypto::DomainCipher,
        sep: u8,
    ) -> Vec<String> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&[u8]> = l.split(|&b| b == sep).collect();
                match cipher.decrypt(f[1]) {
                    Ok(p) => String::from_utf8_lossy(&p).into_owned(),
                    Err(_) => String::from_utf8_lossy(f[1]).into_owned(),
                }
            })
            .collect()
    }

    #[test]
    fn text_rows_split_anywhere_are_encrypted_whole() {
        let (p, cipher) = plan(CopyFormat::Text);
        let data = b"1\t+86 138\\t0000\n2\t\\N\n3\t139";
        for cut in 0..data.len() {
            let out = run(p.clone(), &[&data[..cut], &data[cut..]]).unwrap_or_default();
            let vals = decrypt_column(&out, &cipher, b'\t');
            assert_eq!(vals, vec!["+86 138\t0000", "\\N", "139"], "cut at {cut}");
        }
    }

    #[test]
    fn csv_quotes_may_hold_newlines_and_commas() {
        let (p, cipher) = plan(CopyFormat::Csv { header: true });
        let data = b"id,phone\n1,\"a,\"\"b\"\"\nc\"\n2,\n3,\"\"\n";
        for cut in 0..data.len() {
            let out = run(p.clone(), &[&data[..cut], &data[cut..]]).unwrap_or_default();
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(text.starts_with("id,phone\n"), "{text}");
            assert!(text.contains("\n2,\n"), "NULL stays NULL: {text}");
            let env = text
                .lines()
                .nth(1)
                .and_then(|l| l.split(',').nth(1))
                .unwrap_or("");
            let plain = cipher.decrypt(env.as_bytes()).unwrap_or_default();
            assert_eq!(plain, b"a,\"b\"\nc", "cut at {cut}");
            let empty = text
                .lines()
                .nth(3)
                .and_then(|l| l.split(',').nth(1))
                .unwrap_or("");
            assert_eq!(cipher.decrypt(empty.as_bytes()).unwrap_or_default(), b"");
        }
    }

    #[test]
    fn forged_envelopes_and_bad_rows_are_refused() {
        let (p, cipher) = plan(CopyFormat::Text);
        let env = cipher
            .encrypt(Mode::Deterministic, b"x")
            .unwrap_or_default();
        let row = format!("1\t{env}\n");
        assert!(matches!(
            run(p.clone(), &[row.as_bytes()]),
            Err(CopyInError::Write(WriteError::Forged { .. }))
        ));
        // Nothing of a refused chunk reaches the server (the COPY is then failed).
        let mut c = CopyIn::new(p.clone());
        let mut out = BytesMut::new();
        assert!(c.feed(row.as_bytes(), &mut out).is_err());
        assert!(out.is_empty());
        let (p, _) = plan(CopyFormat::Csv { header: false });
        assert!(matches!(
            run(p, &[b"1,\"open\n"]),
            Err(CopyInError::Malformed(_))
        ));
    }

    #[test]
    fn end_marker_stops_the_transform() {
        let (p, _) = plan(CopyFormat::Text);
        let out = run(p, &[b"\\.\nwhatever\n"]).unwrap_or_default();
        assert_eq!(out, b"\\.\nwhatever\n");
    }
}
