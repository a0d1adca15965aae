//! PostgreSQL 15's reading of COPY FROM STDIN data in text and CSV formats (`copyfromparse.c`:
//! CopyReadLineText, CopyReadAttributesText, CopyReadAttributesCSV), with the default delimiter,
//! quote, escape and NULL string; and the canonical form pgveil writes rows in again.
use bytes::{BufMut, BytesMut};

use super::CopyInError;

/// The line-end style, fixed by the first line end of the COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Eol {
    Unknown,
    Nl,
    Cr,
    CrNl,
}

impl Eol {
    pub(super) fn bytes(self) -> &'static [u8] {
        match self {
            Eol::Unknown | Eol::Nl => b"\n",
            Eol::Cr => b"\r",
            Eol::CrNl => b"\r\n",
        }
    }
}

/// How a logical line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum How {
    Eol,
    Eof,
    Marker,
}

/// Where the scan of an unfinished line stopped, to resume when more data comes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LineScan {
    pub(super) pos: usize,
    pub(super) in_quote: bool,
    pub(super) started: bool,
}

pub(super) enum Step {
    More(LineScan),
    Line { end: usize, next: usize, how: How },
}

pub(super) enum Marker {
    NeedMore,
    Yes(usize),
    No,
}

/// Find the end of the logical line at the start of `buf`, resuming scan `st`.
pub(super) fn scan_line(
    buf: &[u8],
    mut st: LineScan,
    csv: bool,
    eol: &mut Eol,
    at_eof: bool,
) -> Result<Step, CopyInError> {
    let n = buf.len();
    loop {
        let i = st.pos;
        if i >= n {
            if at_eof {
                return Ok(Step::Line {
                    end: n,
                    next: n,
                    how: How::Eof,
                });
            }
            return Ok(Step::More(st));
        }
        let c = buf[i];
        if csv && c == b'"' {
            st.in_quote = !st.in_quote;
        }
        let quoted = csv && st.in_quote;
        if c == b'\r' && !quoted {
            let cr = if csv {
                "unquoted carriage return found in data"
            } else {
                "literal carriage return found in data"
            };
            match *eol {
                Eol::Unknown | Eol::CrNl => {
                    if i + 1 >= n && !at_eof {
                        return Ok(Step::More(st));
                    }
                    if buf.get(i + 1) == Some(&b'\n') {
                        *eol = Eol::CrNl;
                        return Ok(Step::Line {
                            end: i,
                            next: i + 2,
                            how: How::Eol,
                        });
                    }
                    if *eol == Eol::CrNl {
                        return Err(CopyInError::Malformed(cr));
                    }
                    *eol = Eol::Cr;
                }
                Eol::Nl => return Err(CopyInError::Malformed(cr)),
                Eol::Cr => {}
            }
            return Ok(Step::Line {
                end: i,
                next: i + 1,
                how: How::Eol,
            });
        }
        if c == b'\n' && !quoted {
            if matches!(*eol, Eol::Cr | Eol::CrNl) {
                return Err(CopyInError::Malformed(if csv {
                    "unquoted newline found in data"
                } else {
                    "literal newline found in data"
                }));
            }
            *eol = Eol::Nl;
            return Ok(Step::Line {
                end: i,
                next: i + 1,
                how: How::Eol,
            });
        }
        if c == b'\\' && (!csv || !st.started) {
            if i + 1 >= n {
                if !at_eof {
                    return Ok(Step::More(st));
                }
                // The very last byte of the data: it stays in the line.
                return Ok(Step::Line {
                    end: n,
                    next: n,
                    how: How::Eof,
                });
            }
            if buf[i + 1] == b'.' {
                match end_marker(buf, i + 2, csv, *eol, at_eof)? {
                    Marker::NeedMore => return Ok(Step::More(st)),
                    Marker::Yes(next) => {
                        return Ok(Step::Line {
                            end: i,
                            next,
                            how: How::Marker,
                        })
                    }
                    Marker::No => {
                        // CSV: not a marker; the backslash is data, the '.' is read again.
                        st.pos = i + 1;
                        st.started = true;
                        continue;
                    }
                }
            }
            if !csv {
                // The escaped byte is taken blindly: TAB, CR, LF, anything.
                st.pos = i + 2;
                st.started = true;
                continue;
            }
        }
        st.pos = i + 1;
        st.started = true;
    }
}

/// After `\.` at `j`: whether it ends the data (and where the stream continues).
pub(super) fn end_marker(
    buf: &[u8],
    mut j: usize,
    csv: bool,
    eol: Eol,
    at_eof: bool,
) -> Result<Marker, CopyInError> {
    let mut take = || -> Option<u8> {
        let b = match buf.get(j) {
            Some(&b) => Some(b),
            None if at_eof => Some(0),
            None => None,
        };
        j += 1;
        b
    };
    let bad = |msg: &'static str| {
        if csv {
            Ok(Marker::No)
        } else {
            Err(CopyInError::Malformed(msg))
        }
    };
    if eol == Eol::CrNl {
        let Some(d) = take() else {
            return Ok(Marker::NeedMore);
        };
        if d == b'\n' {
            return bad("end-of-copy marker does not match previous newline style");
        }
        if d != b'\r' {
            return bad("end-of-copy marker corrupt");
        }
    }
    let Some(d) = take() else {
        return Ok(Marker::NeedMore);
    };
    if d != b'\r' && d != b'\n' {
        return bad("end-of-copy marker corrupt");
    }
    let expected = match eol {
        Eol::Nl | Eol::CrNl => Some(b'\n'),
        Eol::Cr => Some(b'\r'),
        Eol::Unknown => None,
    };
    if expected.is_some_and(|e| e != d) {
        return Err(CopyInError::Malformed(
            "end-of-copy marker does not match previous newline style",
        ));
    }
    Ok(Marker::Yes(j))
}

/// A field's value: its bytes' range in [`Fields::bytes`], or `None` for NULL.
pub(super) type Span = Option<(usize, usize)>;

/// The fields of one line, de-escaped into one buffer: (start, end) in `bytes`, or `None` for
/// NULL.
#[derive(Default)]
pub(super) struct Fields {
    pub spans: Vec<Span>,
    pub bytes: Vec<u8>,
}

impl Fields {
    /// The spans and the buffer, emptied for a new line.
    fn cleared(&mut self) -> (&mut Vec<Span>, &mut Vec<u8>) {
        self.spans.clear();
        self.bytes.clear();
        (&mut self.spans, &mut self.bytes)
    }
}

/// Split a text-format line into fields (PostgreSQL's CopyReadAttributesText).
pub(super) fn split_text(line: &[u8], f: &mut Fields) {
    let (fields, out) = f.cleared();
    let n = line.len();
    let mut i = 0;
    loop {
        let start = i;
        let value_start = out.len();
        let mut raw_end;
        let mut delimiter = false;
        loop {
            raw_end = i;
            if i == n {
                break;
            }
            let mut c = line[i];
            i += 1;
            if c == b'\t' {
                delimiter = true;
                break;
            }
            if c == b'\\' {
                if i == n {
                    // A lone backslash at the end of the line is dropped.
                    break;
                }
                c = line[i];
                i += 1;
                c = match c {
                    b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        for _ in 0..2 {
                            match line.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        (v & 0xff) as u8
                    }
                    b'x' => match line.get(i).and_then(|&d| hex(d)) {
                        Some(h) => {
                            i += 1;
                            let mut v = h;
                            if let Some(l) = line.get(i).and_then(|&d| hex(d)) {
                                i += 1;
                                v = v * 16 + l;
                            }
                            v
                        }
                        None => b'x',
                    },
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    other => other,
                };
            }
            out.push(c);
        }
        if &line[start..raw_end] == b"\\N" {
            out.truncate(value_start);
            fields.push(None);
        } else {
            fields.push(Some((value_start, out.len())));
        }
        if !delimiter {
            break;
        }
    }
}

pub(super) fn hex(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// Split a CSV line into fields (PostgreSQL's CopyReadAttributesCSV with the default quote,
/// escape and NULL string).
pub(super) fn split_csv(line: &[u8], f: &mut Fields) -> Result<(), CopyInError> {
    let (fields, out) = f.cleared();
    let n = line.len();
    let mut i = 0;
    loop {
        let start = i;
        let value_start = out.len();
        let mut saw_quote = false;
        let mut delimiter = false;
        let mut raw_end;
        'field: loop {
            // outside quotes
            loop {
                raw_end = i;
                if i == n {
                    break 'field;
                }
                let c = line[i];
                i += 1;
                if c == b',' {
                    delimiter = true;
                    break 'field;
                }
                if c == b'"' {
                    saw_quote = true;
                    break;
                }
                out.push(c);
            }
            // inside quotes
            loop {
                if i == n {
                    return Err(CopyInError::Malformed("unterminated CSV quoted field"));
                }
                let c = line[i];
                i += 1;
                if c == b'"' {
                    if line.get(i) == Some(&b'"') {
                        out.push(b'"');
                        i += 1;
                        continue;
                    }
                    break;
                }
                out.push(c);
            }
        }
        if !saw_quote && raw_end == start {
            fields.push(None);
        } else {
            fields.push(Some((value_start, out.len())));
        }
        if !delimiter {
            break;
        }
    }
    Ok(())
}

/// A value in text format: backslash, tab, newline and carriage return escaped.
pub(super) fn escape_text(v: &[u8], out: &mut BytesMut) {
    let mut from = 0;
    for (i, &b) in v.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.put_slice(&v[from..i]);
        out.put_slice(esc);
        from = i + 1;
    }
    out.put_slice(&v[from..]);
}

/// A value in CSV, always quoted (so it is never NULL, never the end marker).
pub(super) fn quote_csv(v: &[u8], out: &mut BytesMut) {
    out.put_u8(b'"');
    let mut from = 0;
    for (i, &b) in v.iter().enumerate() {
        if b == b'"' {
            out.put_slice(&v[from..=i]);
            out.put_u8(b'"');
            from = i + 1;
        }
    }
    out.put_slice(&v[from..]);
    out.put_u8(b'"');
}
