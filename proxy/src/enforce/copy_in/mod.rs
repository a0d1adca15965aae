//! `COPY ... FROM STDIN` into encrypted columns: the client's CopyData read as PostgreSQL 15
//! reads it, encrypted field by field, and written again.
//!
//! The client's bytes are one stream, cut into CopyData wherever the client likes (psql sends
//! lines, others 64 KiB chunks that split rows, escapes and quoted fields). pgveil reads that
//! stream exactly as the server does (`copyfromparse.c`: the line reader with its end-of-line
//! style fixed by the first line, backslash escapes in text, quotes in CSV, the `\.` end marker),
//! splits each line into fields the same way, and then writes every row again itself in a
//! canonical form: text with every backslash, tab, newline and carriage return escaped and NULL
//! as `\N`; CSV with every value quoted and NULL as an empty field. So the server parses bytes
//! pgveil wrote, and the only reading that matters is pgveil's own, checked against the server's
//! in `proxy/tests/integration/copy_reading.rs`. Where the server would fail the COPY (mixed line
//! ends, a corrupt end marker, an unterminated quote), pgveil fails it first. After the end
//! marker nothing more is forwarded: the server ignores it.
//!
//! Text and CSV with PostgreSQL's default delimiter, quote, escape and NULL string; the analysis
//! refuses other options, HEADER in text format, ENCODING and binary COPY into encrypted
//! columns. In a session whose client encoding is not UTF8 the frontend decodes the stream
//! before it reaches [`CopyIn`] and encodes the rows it writes again (`enforce/frontend.rs`).
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::rows::CopyFormat;
use super::write::{plaintext, Seal, Sealer, WriteError};
use crate::protocol::encoding::{ClientEncoding, StreamDecoder};
use read::{
    escape_text, quote_csv, scan_line, split_csv, split_text, Eol, Fields, How, LineScan, Step,
};

mod read;

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
    /// Not text in the session's client encoding (the server's words for it).
    #[error("{0}")]
    Encoding(String),
}

/// One COPY FROM STDIN in progress.
pub struct CopyIn {
    plan: Arc<CopyInPlan>,
    csv: bool,
    /// Bytes of the stream not yet read into a line.
    pending: Vec<u8>,
    scan: LineScan,
    eol: Eol,
    header_pending: bool,
    /// The end marker (or a fatal error) was seen: nothing more is forwarded.
    ended: bool,
    pub sealer: Sealer,
    /// The fields of the current line.
    fields: Fields,
    value: String,
    /// Tests: every row as read, fields in order (`None`: NULL).
    #[cfg(test)]
    parsed: Vec<Vec<Option<Vec<u8>>>>,
}

impl CopyIn {
    pub fn new(plan: Arc<CopyInPlan>) -> CopyIn {
        let (csv, header) = match plan.format {
            CopyFormat::Csv { header } => (true, header),
            CopyFormat::Text => (false, false),
        };
        CopyIn {
            plan,
            csv,
            pending: Vec::new(),
            scan: LineScan::default(),
            eol: Eol::Unknown,
            header_pending: header,
            ended: false,
            sealer: Sealer::default(),
            fields: Fields::default(),
            value: String::new(),
            #[cfg(test)]
            parsed: Vec::new(),
        }
    }

    /// One CopyData payload from the client: appends a CopyData frame with the rows it
    /// completes (none when it completes none).
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), CopyInError> {
        if self.ended {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        self.frame(out, false)
    }

    /// CopyData (or CopyDone, `done`) in a session whose client encoding `enc` is not UTF8:
    /// the data read through `decoder`, the rows written in `enc` again. The server converts
    /// each line before it reads escapes and delimiters, so reading the decoded text is
    /// reading what the server reads.
    pub fn transcoded(
        &mut self,
        enc: ClientEncoding,
        decoder: &mut StreamDecoder,
        done: bool,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), CopyInError> {
        let mut utf8 = BytesMut::new();
        let mut text = String::new();
        let bad = |e: &dyn std::fmt::Display| CopyInError::Encoding(e.to_string());
        if done {
            decoder.finish().map_err(|e| bad(&e))?;
            self.finish(&mut utf8)?;
        } else {
            decoder.feed(data, &mut text).map_err(|e| bad(&e))?;
            self.feed(text.as_bytes(), &mut utf8)?;
        }
        // Whole CopyData frames of whole rows.
        let mut rest = &utf8[..];
        while rest.len() >= 5 {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
            let (frame, tail) = rest.split_at(len.min(rest.len()));
            let rows = std::str::from_utf8(&frame[5..])
                .map_err(|_| CopyInError::Malformed("a value is not text"))?;
            let bytes = enc.encode(rows).map_err(|e| bad(&e))?;
            out.put_u8(b'd');
            out.put_i32(4 + bytes.len() as i32);
            out.put_slice(&bytes);
            rest = tail;
        }
        Ok(())
    }

    /// CopyDone: the end of the data; the last line may lack its line end.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), CopyInError> {
        if self.ended {
            return Ok(());
        }
        self.frame(out, true)
    }

    /// Write the rows completed so far as one CopyData frame (none if there are none).
    fn frame(&mut self, out: &mut BytesMut, at_eof: bool) -> Result<(), CopyInError> {
        let start = out.len();
        out.put_u8(b'd');
        out.put_i32(0);
        let body = out.len();
        if let Err(e) = self.lines(out, at_eof) {
            out.truncate(start);
            self.ended = true;
            return Err(e);
        }
        if out.len() == body {
            out.truncate(start);
        } else {
            let len = (out.len() - start - 1) as i32;
            out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    /// Read every complete line of `pending` (at the end, the rest too) and write its row.
    fn lines(&mut self, out: &mut BytesMut, at_eof: bool) -> Result<(), CopyInError> {
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        let result = loop {
            if self.ended {
                break Ok(());
            }
            let step = match scan_line(&pending[at..], self.scan, self.csv, &mut self.eol, at_eof) {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            match step {
                Step::More(s) => {
                    self.scan = s;
                    break Ok(());
                }
                Step::Line { end, next, how } => {
                    self.scan = LineScan::default();
                    let line = &pending[at..at + end];
                    at += next;
                    if let Err(e) = self.line(line, how, out) {
                        break Err(e);
                    }
                    if how != How::Eol {
                        self.ended = true;
                    }
                }
            }
        };
        self.pending = pending;
        self.pending.drain(..at);
        // The scan resumes where it stopped, relative to what is left.
        result?;
        if self.pending.len() > MAX_ROW {
            return Err(CopyInError::RowTooLong);
        }
        Ok(())
    }

    /// One logical line: the header (passed on), or a row (written again).
    fn line(&mut self, line: &[u8], how: How, out: &mut BytesMut) -> Result<(), CopyInError> {
        if self.header_pending {
            self.header_pending = false;
            if how == How::Eol {
                out.put_slice(line);
                out.put_slice(self.eol.bytes());
            }
            return Ok(());
        }
        if how != How::Eol && line.is_empty() {
            return Ok(());
        }
        if self.csv {
            split_csv(line, &mut self.fields)?;
        } else {
            split_text(line, &mut self.fields);
        }
        #[cfg(test)]
        self.parsed.push(
            self.fields
                .spans
                .iter()
                .map(|f| f.map(|(s, e)| self.fields.bytes[s..e].to_vec()))
                .collect(),
        );
        self.write_row(out)?;
        if how != How::Eof {
            out.put_slice(self.eol.bytes());
        }
        Ok(())
    }

    /// The current line's fields, written in the canonical form, encrypted where planned.
    fn write_row(&mut self, out: &mut BytesMut) -> Result<(), CopyInError> {
        let plan = self.plan.clone();
        let delimiter = if self.csv { b',' } else { b'\t' };
        for i in 0..self.fields.spans.len() {
            if i > 0 {
                out.put_u8(delimiter);
            }
            let Some((s, e)) = self.fields.spans[i] else {
                if !self.csv {
                    out.put_slice(b"\\N");
                }
                continue;
            };
            match plan.columns.get(i).and_then(Option::as_ref) {
                Some(seal) => {
                    self.seal_field(seal, s, e)?;
                    // Envelopes hold only `pgv1:` and base64: nothing to escape or quote.
                    out.put_slice(self.value.as_bytes());
                }
                None if self.csv => quote_csv(&self.fields.bytes[s..e], out),
                None => escape_text(&self.fields.bytes[s..e], out),
            }
        }
        Ok(())
    }

    fn seal_field(&mut self, seal: &Seal, s: usize, e: usize) -> Result<(), CopyInError> {
        if self.fields.bytes[s..e].contains(&0) {
            // The server refuses NUL in any text value (as an invalid byte sequence).
            return Err(CopyInError::Malformed("a value holds a NUL byte"));
        }
        let text =
            std::str::from_utf8(&self.fields.bytes[s..e]).map_err(|_| WriteError::Invalid {
                column: seal.qualified.clone(),
                level: seal.level,
                reason: "the value is not valid UTF-8".into(),
            })?;
        let plain = plaintext(seal, text)?;
        self.value.clear();
        self.sealer.seal(seal, false, &plain, &mut self.value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
