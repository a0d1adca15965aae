//! Frontend messages (client to server): the ones pgveil reads in place from a frame body
//! (Query, Parse, Bind, Describe, Close, Execute), and the few it builds.
use bytes::{BufMut, BytesMut};

use super::frame::cstr;
use super::ProtocolError;

fn bad(what: &'static str) -> ProtocolError {
    ProtocolError::Malformed(what)
}

fn string<'a>(b: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), ProtocolError> {
    cstr(b).ok_or_else(|| bad(what))
}

fn i16_at<'a>(b: &'a [u8], what: &'static str) -> Result<(i16, &'a [u8]), ProtocolError> {
    match b {
        [x, y, rest @ ..] => Ok((i16::from_be_bytes([*x, *y]), rest)),
        _ => Err(bad(what)),
    }
}

fn i32_at<'a>(b: &'a [u8], what: &'static str) -> Result<(i32, &'a [u8]), ProtocolError> {
    match b {
        [a, x, y, z, rest @ ..] => Ok((i32::from_be_bytes([*a, *x, *y, *z]), rest)),
        _ => Err(bad(what)),
    }
}

/// Query: the SQL text.
pub fn query_text(body: &[u8]) -> Result<&[u8], ProtocolError> {
    string(body, "Query").map(|(s, _)| s)
}

/// Parse, read in place.
#[derive(Debug)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
    /// The parameter type OIDs the client declared (0: unspecified).
    pub param_types: &'a [u8],
}

impl Parse<'_> {
    /// The declared parameter types.
    pub fn types(&self) -> Vec<u32> {
        self.param_types
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

pub fn parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    const W: &str = "Parse";
    let (name, rest) = string(body, W)?;
    let (sql, rest) = string(rest, W)?;
    let (n, rest) = i16_at(rest, W)?;
    let n = usize::try_from(n).map_err(|_| bad(W))?;
    let param_types = rest.get(..4 * n).ok_or_else(|| bad(W))?;
    Ok(Parse {
        name,
        sql,
        param_types,
    })
}

/// Bind, read in place and checked whole: every length inside it fits the body.
#[derive(Debug)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Portal and statement names with their NULs, as on the wire.
    pub names: &'a [u8],
    /// The parameter format codes as on the wire (2 bytes each).
    pub param_formats: &'a [u8],
    /// How many parameter values follow.
    pub param_count: usize,
    /// The parameter values with their lengths, as on the wire.
    pub values: &'a [u8],
    /// The result-format codes as on the wire (2 bytes each, big-endian); read them with
    /// [`decode_formats`] only when they matter.
    pub result_formats: &'a [u8],
}

impl<'a> Bind<'a> {
    /// The parameter values (`None`: NULL), in order.
    pub fn params(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut rest = self.values;
        (0..self.param_count).map(move |_| {
            // Checked by `bind`: every length fits.
            let (len, r) = i32_at(rest, "Bind").unwrap_or((-1, &[]));
            if len < 0 {
                rest = r;
                None
            } else {
                let (v, r) = r.split_at((len as usize).min(r.len()));
                rest = r;
                Some(v)
            }
        })
    }

    /// The format code of parameter `i` (0 text, 1 binary).
    pub fn param_format(&self, i: usize) -> i16 {
        format_at(self.param_formats, i)
    }
}

pub fn bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    const W: &str = "Bind";
    let (portal, rest) = string(body, W)?;
    let (statement, rest) = string(rest, W)?;
    let names = &body[..body.len() - rest.len()];
    let (nfmt, rest) = i16_at(rest, W)?;
    let nfmt = usize::try_from(nfmt).map_err(|_| bad(W))?;
    let param_formats = rest.get(..2 * nfmt).ok_or_else(|| bad(W))?;
    let rest = &rest[2 * nfmt..];
    let (nparams, rest) = i16_at(rest, W)?;
    let param_count = usize::try_from(nparams).map_err(|_| bad(W))?;
    let mut walk = rest;
    for _ in 0..param_count {
        let (len, r) = i32_at(walk, W)?;
        walk = if len < 0 {
            r
        } else {
            r.get(len as usize..).ok_or_else(|| bad(W))?
        };
    }
    let values = &rest[..rest.len() - walk.len()];
    let (nres, rest) = i16_at(walk, W)?;
    let result_formats = rest
        .get(..2 * usize::try_from(nres).map_err(|_| bad(W))?)
        .ok_or_else(|| bad(W))?;
    Ok(Bind {
        portal,
        statement,
        names,
        param_formats,
        param_count,
        values,
        result_formats,
    })
}

/// The format code at position `i` of a list of format codes as on the wire: none means
/// text for all, one applies to all, otherwise one each.
pub fn format_at(raw: &[u8], i: usize) -> i16 {
    let code = |k: usize| {
        raw.get(2 * k..2 * k + 2)
            .map_or(0, |c| i16::from_be_bytes([c[0], c[1]]))
    };
    match raw.len() / 2 {
        0 => 0,
        1 => code(0),
        _ => code(i),
    }
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
    let (name, _) = string(rest, what)?;
    Ok((kind, name))
}

/// Execute: the portal name.
pub fn execute(body: &[u8]) -> Result<&[u8], ProtocolError> {
    string(body, "Execute").map(|(p, _)| p)
}

/// A Flush message: the server sends whatever answers it holds.
pub const FLUSH: [u8; 5] = [b'H', 0, 0, 0, 4];

/// Start a frame with `tag` and a length to be filled in by [`finish`].
fn start(tag: u8, capacity: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(capacity + 5);
    out.put_u8(tag);
    out.put_i32(0);
    out
}

/// Write the length of a frame begun with [`start`].
pub fn finish(mut out: BytesMut) -> BytesMut {
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}

/// The large-object functions of PostgreSQL 15 that libpq calls through the fast-path
/// protocol (OIDs fixed in `pg_proc.dat`, checked against the server by
/// tests/integration/transparency.rs): lo_create, lo_open, lo_close, loread, lowrite,
/// lo_lseek, lo_creat, lo_tell, lo_unlink, lo_truncate, lo_lseek64, lo_tell64, lo_truncate64.
/// Not `lo_import`/`lo_export` with a server path (they read and write server files).
pub const LARGE_OBJECT_FUNCTIONS: [u32; 13] = [
    715, 952, 953, 954, 955, 956, 957, 958, 964, 1004, 3170, 3171, 3172,
];

/// A Query message.
pub fn query_frame(sql: &str) -> BytesMut {
    let mut out = start(b'Q', sql.len() + 1);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    finish(out)
}

/// A Parse message declaring `param_types`.
pub fn parse_frame(name: &[u8], sql: &str, param_types: &[u32]) -> BytesMut {
    let mut out = start(b'P', name.len() + sql.len() + 4 + 4 * param_types.len());
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out.put_i16(param_types.len() as i16);
    for t in param_types {
        out.put_u32(*t);
    }
    finish(out)
}

/// A Bind of `portal` to `statement` with no parameters and no result formats.
pub fn empty_bind_frame(portal: &[u8], statement: &[u8]) -> BytesMut {
    let mut out = start(b'B', portal.len() + statement.len() + 8);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(statement);
    out.put_u8(0);
    out.put_i16(0);
    out.put_i16(0);
    out.put_i16(0);
    finish(out)
}

/// CopyFail, ending a COPY FROM STDIN at the server with `message`.
pub fn copy_fail(message: &str) -> BytesMut {
    let mut out = start(b'f', message.len() + 1);
    out.put_slice(message.as_bytes());
    out.put_u8(0);
    finish(out)
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
    fn bind_reads_names_params_and_result_formats() {
        let body = bind_body(&[1], &[Some(b"abc"), None], &[1, 0]);
        let b = bind(&body).unwrap();
        assert_eq!(b.portal, b"p1");
        assert_eq!(b.statement, b"s1");
        assert_eq!(b.names, b"p1\0s1\0");
        assert_eq!(b.param_count, 2);
        assert_eq!(
            b.params().collect::<Vec<_>>(),
            vec![Some(&b"abc"[..]), None]
        );
        assert_eq!((b.param_format(0), b.param_format(1)), (1, 1));
        assert_eq!(decode_formats(b.result_formats), vec![1, 0]);
        let none = bind_body(&[], &[], &[]);
        let b = bind(&none).unwrap();
        assert!(b.result_formats.is_empty());
        assert_eq!(b.param_format(3), 0);
        // A result-format count larger than what follows is malformed.
        let mut short = bind_body(&[], &[], &[1, 1]);
        short.truncate(short.len() - 2);
        assert!(bind(&short).is_err());
    }

    #[test]
    fn truncated_or_negative_counts_are_malformed() {
        let body = bind_body(&[], &[Some(b"abcdef")], &[]);
        assert!(matches!(
            bind(&body[..12]),
            Err(ProtocolError::Malformed("Bind"))
        ));
        let mut neg = b"\0\0".to_vec();
        neg.extend((-1i16).to_be_bytes());
        assert!(bind(&neg).is_err());
        assert!(parse(b"s\0select 1\0\xff\xff").is_err());
    }

    #[test]
    fn format_codes_follow_the_protocol() {
        assert_eq!(format_at(&[], 5), 0);
        assert_eq!(format_at(&[0, 1], 5), 1);
        assert_eq!(format_at(&[0, 0, 0, 1], 1), 1);
        assert_eq!(format_at(&[0, 0, 0, 1], 7), 0);
    }

    #[test]
    fn built_frames_have_correct_lengths_and_read_back() {
        let len = |f: &[u8]| i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        let q = query_frame("select 1");
        assert_eq!(len(&q), q.len() - 1);
        assert_eq!(query_text(&q[5..]).unwrap(), b"select 1");
        let p = parse_frame(b"s", "x", &[25, 0]);
        assert_eq!(len(&p), p.len() - 1);
        let read = parse(&p[5..]).unwrap();
        assert_eq!((read.name, read.sql), (&b"s"[..], &b"x"[..]));
        assert_eq!(read.types(), vec![25, 0]);
        let b = empty_bind_frame(b"p", b"missing");
        assert_eq!(len(&b), b.len() - 1);
        let read = bind(&b[5..]).unwrap();
        assert_eq!((read.portal, read.statement), (&b"p"[..], &b"missing"[..]));
        let f = copy_fail("no");
        assert_eq!(len(&f), f.len() - 1);
    }
}
