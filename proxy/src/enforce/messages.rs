//! The frontend messages enforcement reads (Query, Parse, Bind, Describe, Execute, Close),
//! read in place from a frame body, and the few frames it builds.
use bytes::{BufMut, BytesMut};

use crate::protocol::ProtocolError;

fn bad(what: &'static str) -> ProtocolError {
    ProtocolError::BadStartup(format!("malformed {what} message"))
}

/// A NUL-terminated string at the front of `b`, and the rest.
fn cstr<'a>(b: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), ProtocolError> {
    let end = b.iter().position(|&x| x == 0).ok_or_else(|| bad(what))?;
    Ok((&b[..end], &b[end + 1..]))
}

fn i16_at<'a>(b: &'a [u8], what: &'static str) -> Result<(i16, &'a [u8]), ProtocolError> {
    if b.len() < 2 {
        return Err(bad(what));
    }
    Ok((i16::from_be_bytes([b[0], b[1]]), &b[2..]))
}

fn i32_at<'a>(b: &'a [u8], what: &'static str) -> Result<(i32, &'a [u8]), ProtocolError> {
    if b.len() < 4 {
        return Err(bad(what));
    }
    Ok((i32::from_be_bytes([b[0], b[1], b[2], b[3]]), &b[4..]))
}

/// Query: the SQL text.
pub fn query_text(body: &[u8]) -> Result<&[u8], ProtocolError> {
    cstr(body, "Query").map(|(s, _)| s)
}

/// Parse: statement name and SQL text.
pub fn parse(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let (name, rest) = cstr(body, "Parse")?;
    let (sql, _) = cstr(rest, "Parse")?;
    Ok((name, sql))
}

/// Bind, as far as enforcement needs it.
#[derive(Debug)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// The result-format codes as on the wire (2 bytes each, big-endian); read them with
    /// [`decode_formats`] only when they matter.
    pub result_formats: &'a [u8],
}

pub fn bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    const W: &str = "Bind";
    let (portal, rest) = cstr(body, W)?;
    let (statement, rest) = cstr(rest, W)?;
    let (nfmt, mut rest) = i16_at(rest, W)?;
    let skip = 2 * usize::try_from(nfmt).map_err(|_| bad(W))?;
    rest = rest.get(skip..).ok_or_else(|| bad(W))?;
    let (nparams, mut rest) = i16_at(rest, W)?;
    for _ in 0..nparams.max(0) {
        let (len, r) = i32_at(rest, W)?;
        rest = if len < 0 {
            r
        } else {
            r.get(len as usize..).ok_or_else(|| bad(W))?
        };
    }
    let (nres, rest) = i16_at(rest, W)?;
    let result_formats = rest
        .get(..2 * usize::try_from(nres).map_err(|_| bad(W))?)
        .ok_or_else(|| bad(W))?;
    Ok(Bind {
        portal,
        statement,
        result_formats,
    })
}

/// Result-format codes from their wire form.
pub fn decode_formats(raw: &[u8]) -> Vec<i16> {
    raw.chunks_exact(2)
        .map(|c| i16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Describe and Close: the kind (`S` or `P`) and the name.
pub fn target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), ProtocolError> {
    let (&kind, rest) = body.split_first().ok_or_else(|| bad(what))?;
    let (name, _) = cstr(rest, what)?;
    Ok((kind, name))
}

/// Execute: the portal name.
pub fn execute(body: &[u8]) -> Result<&[u8], ProtocolError> {
    cstr(body, "Execute").map(|(p, _)| p)
}

/// A Flush message: the server sends whatever answers it holds.
pub const FLUSH: [u8; 5] = [b'H', 0, 0, 0, 4];

/// SQL that fails at parse time; pgveil sends it in place of a refused statement so that
/// the server's error handling (skip to Sync, abort the transaction) stays in order, and then
/// replaces the server's syntax error with its own ErrorResponse.
pub const REFUSED_SQL: &str = "pgveil refused this statement";

pub fn query_frame(sql: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    out.put_u8(b'Q');
    out.put_i32((4 + sql.len() + 1) as i32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out
}

pub fn parse_frame(name: &[u8], sql: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(name.len() + sql.len() + 9);
    out.put_u8(b'P');
    out.put_i32((4 + name.len() + 1 + sql.len() + 1 + 2) as i32);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out.put_i16(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_body(formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
        let mut b = b"p1\0s1\0".to_vec();
        b.extend((formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend(f.to_be_bytes());
        }
        b.extend((params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend((-1i32).to_be_bytes()),
            }
        }
        b.extend((results.len() as i16).to_be_bytes());
        for r in results {
            b.extend(r.to_be_bytes());
        }
        b
    }

    #[test]
    fn bind_reads_names_and_result_formats() {
        let body = bind_body(&[1], &[Some(b"abc"), None], &[1, 0]);
        let b = bind(&body).unwrap();
        assert_eq!(b.portal, b"p1");
        assert_eq!(b.statement, b"s1");
        assert_eq!(decode_formats(b.result_formats), vec![1, 0]);
        let none = bind_body(&[], &[], &[]);
        assert!(bind(&none).unwrap().result_formats.is_empty());
        // A result-format count larger than what follows is malformed.
        let mut short = bind_body(&[], &[], &[1, 1]);
        short.truncate(short.len() - 2);
        assert!(bind(&short).is_err());
    }

    #[test]
    fn truncated_bind_is_an_error() {
        let body = bind_body(&[], &[Some(b"abcdef")], &[]);
        assert!(bind(&body[..12]).is_err());
    }

    #[test]
    fn built_frames_have_correct_lengths() {
        let q = query_frame("select 1");
        assert_eq!(
            i32::from_be_bytes([q[1], q[2], q[3], q[4]]) as usize,
            q.len() - 1
        );
        let p = parse_frame(b"s", "x");
        assert_eq!(
            i32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize,
            p.len() - 1
        );
        assert_eq!(parse(&p[5..]).unwrap(), (&b"s"[..], &b"x"[..]));
    }
}
