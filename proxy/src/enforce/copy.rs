//! `COPY ... TO STDOUT` rows (CopyData) transformed like DataRows, in text and CSV format
//! with PostgreSQL's default delimiter, quote and NULL string. PostgreSQL sends one row per
//! CopyData message.
use bytes::{BufMut, BytesMut};
use pgveil_policy::mask::PseudonymKey;

use super::rows::{apply, CopyFormat, RowError, RowPlan, Scratch, Tally};
use crate::protocol::encoding::ClientEncoding;

/// Transform one CopyData payload into a whole CopyData frame in `out`. `first`: this is the
/// first row of the result (a CSV header, when there is one, passes untouched).
#[allow(clippy::too_many_arguments)]
pub fn copy_data(
    data: &[u8],
    plan: &RowPlan,
    format: CopyFormat,
    first: bool,
    key: &PseudonymKey,
    scratch: &mut Scratch,
    tally: &mut Tally,
    out: &mut BytesMut,
) -> Result<(), RowError> {
    let enc = scratch.encoding;
    if !enc.is_utf8() {
        // The row read in the client encoding (the server's escapes are characters, a byte of
        // a multibyte character is not), transformed as UTF-8, and written back: what the
        // server sent is what the server's own conversion writes, so untouched fields come
        // back byte for byte.
        let text = enc
            .decode(data)
            .map_err(|_| RowError::Malformed("CopyData"))?
            .into_owned();
        scratch.encoding = ClientEncoding::Utf8;
        let mut utf8 = BytesMut::new();
        let r = copy_data(
            text.as_bytes(),
            plan,
            format,
            first,
            key,
            scratch,
            tally,
            &mut utf8,
        );
        scratch.encoding = enc;
        r?;
        let row = std::str::from_utf8(&utf8[5..]).map_err(|_| RowError::Malformed("CopyData"))?;
        let bytes = enc.encode(row).map_err(RowError::Untranslatable)?;
        out.put_u8(b'd');
        out.put_i32(4 + bytes.len() as i32);
        out.put_slice(&bytes);
        return Ok(());
    }
    let start = out.len();
    out.put_u8(b'd');
    out.put_i32(0);
    let mut row = Row {
        plan,
        key,
        scratch,
        tally,
    };
    match format {
        CopyFormat::Csv { header: true } if first => out.put_slice(data),
        CopyFormat::Csv { .. } => csv_row(data, &mut row, out)?,
        CopyFormat::Text => text_row(data, &mut row, out)?,
    }
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// What transforming one row needs.
struct Row<'a> {
    plan: &'a RowPlan,
    key: &'a PseudonymKey,
    scratch: &'a mut Scratch,
    tally: &'a mut Tally,
}

impl Row<'_> {
    /// Transform one non-NULL text value of column `i`.
    fn apply<'s>(&'s mut self, i: usize, value: &'s [u8]) -> Result<Option<&'s [u8]>, RowError> {
        match self.plan.op_at(i) {
            Some(op) => apply(
                self.plan,
                i,
                op,
                value,
                false,
                self.key,
                self.scratch,
                self.tally,
            ),
            None => Ok(Some(value)),
        }
    }
}

fn text_row(data: &[u8], row: &mut Row<'_>, out: &mut BytesMut) -> Result<(), RowError> {
    let plan = row.plan;
    let line = data.strip_suffix(b"\n").unwrap_or(data);
    let mut field = Vec::new();
    for (i, raw) in line.split(|&b| b == b'\t').enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        if plan.op_at(i).is_none() || raw == b"\\N" {
            out.put_slice(raw);
            continue;
        }
        unescape_text(raw, &mut field);
        match row.apply(i, &field)? {
            Some(v) => escape_text(v, out),
            None => out.put_slice(b"\\N"),
        }
    }
    out.put_u8(b'\n');
    Ok(())
}

pub(super) fn unescape_text(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 >= raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
}

fn escape_text(v: &[u8], out: &mut BytesMut) {
    for &b in v {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            8 => out.put_slice(b"\\b"),
            12 => out.put_slice(b"\\f"),
            11 => out.put_slice(b"\\v"),
            other => out.put_u8(other),
        }
    }
}

fn csv_row(data: &[u8], row: &mut Row<'_>, out: &mut BytesMut) -> Result<(), RowError> {
    let plan = row.plan;
    let line = data.strip_suffix(b"\n").unwrap_or(data);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut pos = 0;
    let mut i = 0;
    let mut field = Vec::new();
    loop {
        if i > 0 {
            out.put_u8(b',');
        }
        // Read one field: quoted (may hold commas, quotes doubled, newlines) or bare.
        let start = pos;
        let quoted = line.get(pos) == Some(&b'"');
        field.clear();
        if quoted {
            pos += 1;
            loop {
                match line.get(pos) {
                    None => return Err(RowError::Malformed("CopyData (CSV)")),
                    Some(b'"') if line.get(pos + 1) == Some(&b'"') => {
                        field.push(b'"');
                        pos += 2;
                    }
                    Some(b'"') => {
                        pos += 1;
                        break;
                    }
                    Some(&b) => {
                        field.push(b);
                        pos += 1;
                    }
                }
            }
        } else {
            while let Some(&b) = line.get(pos) {
                if b == b',' {
                    break;
                }
                field.push(b);
                pos += 1;
            }
        }
        let raw = &line[start..pos];
        let null = !quoted && field.is_empty();
        if plan.op_at(i).is_some() && !null {
            if let Some(v) = row.apply(i, &field)? {
                quote_csv(v, out);
            }
        } else {
            out.put_slice(raw);
        }
        i += 1;
        match line.get(pos) {
            Some(b',') => pos += 1,
            None => break,
            Some(_) => return Err(RowError::Malformed("CopyData (CSV)")),
        }
    }
    out.put_u8(b'\n');
    Ok(())
}

fn quote_csv(v: &[u8], out: &mut BytesMut) {
    let needs =
        v.is_empty() || v == b"\\." || v.iter().any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs {
        out.put_slice(v);
        return;
    }
    out.put_u8(b'"');
    for &b in v {
        if b == b'"' {
            out.put_u8(b'"');
        }
        out.put_u8(b);
    }
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_round_trip() {
        let mut field = Vec::new();
        unescape_text(b"a\\tb\\\\c\\nd\\101", &mut field);
        assert_eq!(field, b"a\tb\\c\ndA");
        let mut out = BytesMut::new();
        escape_text(b"a\tb\\c\nd", &mut out);
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd");
    }

    #[test]
    fn csv_quoting() {
        let mut out = BytesMut::new();
        quote_csv(b"plain", &mut out);
        out.put_u8(b'|');
        quote_csv(b"", &mut out);
        out.put_u8(b'|');
        quote_csv(b"a,\"b\"", &mut out);
        assert_eq!(&out[..], b"plain|\"\"|\"a,\"\"b\"\"\"");
    }
}
