//! The session's client encoding, read and written exactly as PostgreSQL 15 converts it.
//!
//! The server converts every text a client sends (SQL, text parameters, COPY data) from
//! `client_encoding` to the database's encoding *before* it lexes or parses it, and every text
//! it sends back the other way. pgveil reads SQL to decide what it may reach, so its reading
//! must be the server's: a byte sequence that decodes to one character for pgveil and another
//! for the server would make pgveil judge a different statement than the one that runs.
//!
//! Supported besides UTF8: `GBK`, `GB18030`, `EUC_CN` and `BIG5`, the encodings of legacy
//! Chinese applications. The characters come from `encoding_rs` (WHATWG tables) corrected by
//! [`tables`], which lists every character where PostgreSQL 15's own conversion differs. The
//! integration test `encodings::codec_agrees_with_postgres_on_every_character` compares both
//! directions with the server for every byte sequence and every code point, and writes the
//! tables anew when they drift.
//!
//! Decoding follows the server's segmentation (`pg_encoding_mblen`: a byte with the high bit
//! set starts a two-byte character; in GB18030 a four-byte one when the next byte is a digit).
//! A sequence the server rejects may still decode here (encoding_rs accepts more: HKSCS in
//! BIG5, four-byte sequences in GBK): the server then fails the message, so nothing pgveil
//! judged runs. Every sequence the server accepts decodes to the server's character.
#[rustfmt::skip]
mod tables;

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, BytesMut};
use encoding_rs::{Encoding, BIG5, GB18030, GBK};

use super::backend::notice_fields;
use super::frame::cstr;

/// Byte sequences (packed) the server decodes otherwise, and its character; sorted.
type DecodeFixes = &'static [(u32, u32)];
/// Code point ranges the server encodes otherwise, and its bytes (packed; 0: none); sorted.
type EncodeFixes = &'static [(u32, u32, u32)];

/// A `client_encoding` pgveil can read and write exactly as the server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientEncoding {
    #[default]
    Utf8,
    Gbk,
    Gb18030,
    EucCn,
    Big5,
}

/// Every encoding pgveil reads, by the name the server reports in `client_encoding`.
pub const SUPPORTED: [ClientEncoding; 5] = [
    ClientEncoding::Utf8,
    ClientEncoding::Gbk,
    ClientEncoding::Gb18030,
    ClientEncoding::EucCn,
    ClientEncoding::Big5,
];

/// Bytes the server rejects, with its words: `invalid byte sequence for encoding` (SQLSTATE
/// 22021) when its `pg_encoding_verifymbchar` rejects them, or, when that passes but its
/// conversion table has no character for them, `has no equivalent` (22P05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub encoding: ClientEncoding,
    /// The offending sequence, as the server quotes it (up to the character's length).
    pub bytes: Vec<u8>,
    /// The sequence is well formed for the server, but no character of its table.
    pub unmapped: bool,
}

impl Invalid {
    pub fn sqlstate(&self) -> &'static str {
        if self.unmapped {
            UNTRANSLATABLE_CHARACTER
        } else {
            CHARACTER_NOT_IN_REPERTOIRE
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unmapped {
            return write!(
                f,
                "character with byte sequence {} in encoding \"{}\" has no equivalent in encoding \"UTF8\"",
                hex_bytes(&self.bytes),
                self.encoding.name()
            );
        }
        write!(
            f,
            "invalid byte sequence for encoding \"{}\": {}",
            self.encoding.name(),
            hex_bytes(&self.bytes)
        )
    }
}

/// A character with no equivalent in the client encoding (SQLSTATE 22P05), as the server
/// says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    pub encoding: ClientEncoding,
    pub character: char,
}

impl fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut utf8 = [0u8; 4];
        let bytes = self.character.encode_utf8(&mut utf8).as_bytes();
        write!(
            f,
            "character with byte sequence {} in encoding \"UTF8\" has no equivalent in encoding \"{}\"",
            hex_bytes(bytes),
            self.encoding.name()
        )
    }
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("0x{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The SQLSTATE of [`Invalid`].
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// The SQLSTATE of [`Untranslatable`].
pub const UNTRANSLATABLE_CHARACTER: &str = "22P05";

impl ClientEncoding {
    /// The encoding the server reports as `name` (its canonical names, as in ParameterStatus;
    /// case and `-`/`_` ignored, as `SET client_encoding` does). `None`: pgveil cannot read it.
    pub fn from_name(name: &str) -> Option<ClientEncoding> {
        let clean: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match clean.as_str() {
            "UTF8" | "UNICODE" => Some(ClientEncoding::Utf8),
            "GBK" | "CP936" | "WIN936" => Some(ClientEncoding::Gbk),
            "GB18030" => Some(ClientEncoding::Gb18030),
            "EUCCN" => Some(ClientEncoding::EucCn),
            "BIG5" | "WIN950" | "CP950" => Some(ClientEncoding::Big5),
            _ => None,
        }
    }

    /// The server's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ClientEncoding::Utf8 => "UTF8",
            ClientEncoding::Gbk => "GBK",
            ClientEncoding::Gb18030 => "GB18030",
            ClientEncoding::EucCn => "EUC_CN",
            ClientEncoding::Big5 => "BIG5",
        }
    }

    pub fn is_utf8(self) -> bool {
        self == ClientEncoding::Utf8
    }

    fn codec(self) -> Option<&'static Encoding> {
        match self {
            ClientEncoding::Utf8 => None,
            ClientEncoding::Gbk | ClientEncoding::EucCn => Some(GBK),
            ClientEncoding::Gb18030 => Some(GB18030),
            ClientEncoding::Big5 => Some(BIG5),
        }
    }

    fn fixes(self) -> (DecodeFixes, EncodeFixes) {
        match self {
            ClientEncoding::Utf8 => (&[], &[]),
            ClientEncoding::Gbk => (tables::GBK_DECODE, tables::GBK_ENCODE),
            ClientEncoding::Gb18030 => (tables::GB18030_DECODE, tables::GB18030_ENCODE),
            ClientEncoding::EucCn => (tables::EUC_CN_DECODE, tables::EUC_CN_ENCODE),
            ClientEncoding::Big5 => (tables::BIG5_DECODE, tables::BIG5_ENCODE),
        }
    }

    /// The length of the character starting at `b[0]` (`b` not empty), as the server's
    /// `pg_encoding_mblen` counts it: `None` when `b` ends before it can tell (GB18030).
    pub fn unit_len(self, b: &[u8]) -> Option<usize> {
        let lead = *b.first()?;
        if lead < 0x80 {
            return Some(1);
        }
        match self {
            ClientEncoding::Utf8 => Some(match lead {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            }),
            ClientEncoding::Gb18030 => match b.get(1) {
                Some(0x30..=0x39) => Some(4),
                Some(_) => Some(2),
                None => None,
            },
            _ => Some(2),
        }
    }

    /// The length of the longest prefix of `b` made of whole characters: what a stream can
    /// decode now (the rest waits for the next chunk).
    pub fn whole_prefix(self, b: &[u8]) -> usize {
        let mut i = 0;
        while i < b.len() {
            match self.unit_len(&b[i..]) {
                Some(n) if i + n <= b.len() => i += n,
                _ => break,
            }
        }
        i
    }

    /// Whether the server's `pg_encoding_verifymbchar` accepts `unit` (one character as
    /// [`ClientEncoding::unit_len`] cuts it) as well formed.
    fn well_formed(self, unit: &[u8]) -> bool {
        let hi = |x: &u8| (0x81..=0xFE).contains(x);
        let digit = |x: &u8| (0x30..=0x39).contains(x);
        match (self, unit) {
            // 0x8D 0x20 is rejected specifically (PostgreSQL's NONUTF8_INVALID_BYTE0/1).
            (ClientEncoding::Gbk | ClientEncoding::Big5, [a, b]) => {
                *b != 0 && (*a, *b) != (0x8D, 0x20)
            }
            (ClientEncoding::EucCn, [a, b]) => {
                (0xA1..=0xFE).contains(a) && (0xA1..=0xFE).contains(b)
            }
            (ClientEncoding::Gb18030, [a, b, c, d]) => hi(a) && digit(b) && hi(c) && digit(d),
            (ClientEncoding::Gb18030, [a, b]) => {
                hi(a) && ((0x40..=0x7E).contains(b) || (0x80..=0xFE).contains(b))
            }
            _ => false,
        }
    }

    /// The server's error for `bytes` (one character as it cuts them).
    fn invalid(self, bytes: &[u8]) -> Invalid {
        Invalid {
            encoding: self,
            bytes: bytes.to_vec(),
            unmapped: self.well_formed(bytes),
        }
    }

    /// `b` read as the server reads text in this encoding.
    ///
    /// Exactly the texts the server accepts: a sequence only encoding_rs reads (HKSCS in BIG5,
    /// GBK's four-byte forms, GBK in an EUC_CN session) is refused with the server's error,
    /// as is NUL. A value pgveil encrypts never reaches the server, so pgveil must refuse what
    /// the server would have. (A character is read only when writing it back gives the same
    /// bytes: the server's tables are one-to-one, but for seven BIG5 sequences it reads as
    /// U+FFFD, which pgveil refuses.)
    pub fn decode(self, b: &[u8]) -> Result<Cow<'_, str>, Invalid> {
        let invalid = |bytes: &[u8]| self.invalid(bytes);
        if let Some(at) = b.iter().position(|&x| x == 0) {
            return Err(invalid(&b[at..at + 1]));
        }
        if self.is_utf8() || b.is_ascii() {
            // ASCII is ASCII in every supported encoding (checked against the server).
            return std::str::from_utf8(b).map(Cow::Borrowed).map_err(|e| {
                let at = e.valid_up_to();
                let n = e.error_len().unwrap_or(b.len() - at);
                invalid(&b[at..at + n])
            });
        }
        let text = self.decode_loose(b)?;
        // Character by character, as the server cuts them: each must be one character that
        // the server writes back as the same bytes.
        let mut chars = text.chars();
        let mut buf = [0u8; 4];
        let mut i = 0;
        while i < b.len() {
            let n = self
                .unit_len(&b[i..])
                .unwrap_or(b.len() - i)
                .min(b.len() - i);
            let unit = &b[i..i + n];
            let back = chars
                .next()
                .and_then(|c| self.encode(c.encode_utf8(&mut buf)).ok());
            if back.as_deref() != Some(unit) {
                return Err(invalid(unit));
            }
            i += n;
        }
        match chars.next() {
            None => Ok(text),
            Some(_) => Err(invalid(b)),
        }
    }

    /// [`ClientEncoding::decode`] without the check that the text comes back.
    fn decode_loose(self, b: &[u8]) -> Result<Cow<'_, str>, Invalid> {
        let invalid = |bytes: &[u8]| self.invalid(bytes);
        let Some(codec) = self.codec() else {
            return std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|_| invalid(b));
        };
        let (decode_fixes, _) = self.fixes();
        // Walk the server's characters: any the server reads differently from encoding_rs
        // sends the text down the slow path.
        let mut i = 0;
        let mut fixed = false;
        while i < b.len() {
            let n = match self.unit_len(&b[i..]) {
                Some(n) if i + n <= b.len() => n,
                _ => return Err(invalid(&b[i..])),
            };
            if n > 1
                && decode_fixes
                    .binary_search_by_key(&pack(&b[i..i + n]), |e| e.0)
                    .is_ok()
            {
                fixed = true;
            }
            if b[i] == 0 {
                return Err(invalid(&b[i..i + 1]));
            }
            i += n;
        }
        if !fixed {
            if let Some(text) = codec.decode_without_bom_handling_and_without_replacement(b) {
                return Ok(text);
            }
        }
        // Character by character (also to name the first sequence that fails).
        let mut out = String::with_capacity(b.len() * 3 / 2);
        let mut i = 0;
        while i < b.len() {
            let n = self.unit_len(&b[i..]).unwrap_or(b.len() - i);
            let unit = &b[i..(i + n).min(b.len())];
            if n == 1 {
                out.push(unit[0] as char);
            } else if let Ok(at) = decode_fixes.binary_search_by_key(&pack(unit), |e| e.0) {
                let c = char::from_u32(decode_fixes[at].1).ok_or_else(|| invalid(unit))?;
                out.push(c);
            } else {
                match codec.decode_without_bom_handling_and_without_replacement(unit) {
                    Some(t) => out.push_str(&t),
                    None => return Err(invalid(unit)),
                }
            }
            i += n;
        }
        Ok(Cow::Owned(out))
    }

    /// `text` written as the server writes it in this encoding.
    pub fn encode(self, text: &str) -> Result<Cow<'_, [u8]>, Untranslatable> {
        let Some(codec) = self.codec() else {
            return Ok(Cow::Borrowed(text.as_bytes()));
        };
        if text.is_ascii() {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        let (_, encode_fixes) = self.fixes();
        let fixed = text
            .chars()
            .any(|c| !c.is_ascii() && encode_fix(encode_fixes, c).is_some());
        if !fixed {
            let (bytes, _, unmappable) = codec.encode(text);
            if !unmappable && (self != ClientEncoding::EucCn || euc_cn_only(&bytes)) {
                return Ok(bytes);
            }
        }
        let mut out = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c as u8);
                continue;
            }
            let untranslatable = || Untranslatable {
                encoding: self,
                character: c,
            };
            match encode_fix(encode_fixes, c) {
                Some(0) => return Err(untranslatable()),
                Some(packed) => out.extend_from_slice(&unpack(packed)),
                None => {
                    let (bytes, _, unmappable) = codec.encode(c.encode_utf8(&mut buf));
                    if unmappable || (self == ClientEncoding::EucCn && !euc_cn_only(&bytes)) {
                        return Err(untranslatable());
                    }
                    out.extend_from_slice(&bytes);
                }
            }
        }
        Ok(Cow::Owned(out))
    }

    /// `text` in this encoding, a character with no equivalent written as `?`: for pgveil's
    /// own messages, which must reach the client readable whatever they quote.
    pub fn encode_lossy(self, text: &str) -> Cow<'_, [u8]> {
        match self.encode(text) {
            Ok(b) => b,
            Err(_) => {
                let mut out = Vec::with_capacity(text.len());
                let mut buf = [0u8; 4];
                for c in text.chars() {
                    match self.encode(c.encode_utf8(&mut buf)) {
                        Ok(b) => out.extend_from_slice(&b),
                        Err(_) => out.push(b'?'),
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

/// The fix for `c`: `Some(0)` when the server has no equivalent, `Some(bytes)` when it writes
/// other bytes than encoding_rs, `None` when they agree.
fn encode_fix(fixes: &[(u32, u32, u32)], c: char) -> Option<u32> {
    let cp = c as u32;
    let at = fixes.partition_point(|e| e.0 <= cp);
    let e = fixes.get(at.checked_sub(1)?)?;
    (cp <= e.1).then_some(e.2)
}

/// EUC_CN is GB2312: GBK's two-byte characters with both bytes in 0xA1..=0xFE.
fn euc_cn_only(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] < 0x80 {
            i += 1;
            continue;
        }
        match b.get(i..i + 2) {
            Some([x, y]) if (0xA1..=0xFE).contains(x) && (0xA1..=0xFE).contains(y) => i += 2,
            _ => return false,
        }
    }
    true
}

/// A character's bytes as one number (big-endian), as the tables hold them.
pub fn pack(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x))
}

/// The bytes of a packed character (its leading byte is never zero).
pub fn unpack(packed: u32) -> Vec<u8> {
    let b = packed.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    b[skip..].to_vec()
}

/// A text stream (COPY data) decoded chunk by chunk: a character cut between two chunks
/// waits for the next.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    encoding: ClientEncoding,
    carry: Vec<u8>,
}

impl StreamDecoder {
    pub fn new(encoding: ClientEncoding) -> StreamDecoder {
        StreamDecoder {
            encoding,
            carry: Vec::new(),
        }
    }

    /// Decode `chunk` (after what an earlier chunk left), appending to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut String) -> Result<(), Invalid> {
        let joined;
        let data: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        let whole = self.encoding.whole_prefix(data);
        out.push_str(&self.encoding.decode(&data[..whole])?);
        self.carry = data[whole..].to_vec();
        Ok(())
    }

    /// The end of the stream: a character left incomplete is invalid.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        if self.carry.is_empty() {
            return Ok(());
        }
        Err(Invalid {
            encoding: self.encoding,
            bytes: std::mem::take(&mut self.carry),
            unmapped: false,
        })
    }
}

/// A Query, Parse or CopyFail frame pgveil built from UTF-8 text, with that text in the client
/// encoding `enc` (statement names and types as they are); other frames as they are.
pub fn frame_in(frame: &[u8], enc: ClientEncoding) -> Result<BytesMut, Untranslatable> {
    let copy = || BytesMut::from(frame);
    if enc.is_utf8() || frame.len() < 5 {
        return Ok(copy());
    }
    let body = &frame[5..];
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match frame[0] {
        b'Q' => {
            let Some((sql, _)) = cstr(body) else {
                return Ok(copy());
            };
            Ok(with_strings(b'Q', &[&enc.encode(&text(sql))?], &[]))
        }
        b'P' => {
            let Some((name, rest)) = cstr(body) else {
                return Ok(copy());
            };
            let Some((sql, types)) = cstr(rest) else {
                return Ok(copy());
            };
            Ok(with_strings(b'P', &[name, &enc.encode(&text(sql))?], types))
        }
        b'f' => {
            let Some((message, _)) = cstr(body) else {
                return Ok(copy());
            };
            Ok(with_strings(
                b'f',
                &[&enc.encode_lossy(&text(message))],
                &[],
            ))
        }
        _ => Ok(copy()),
    }
}

/// An ErrorResponse or NoticeResponse pgveil wrote (in UTF-8) with its texts in the client
/// encoding `enc`; a character the encoding lacks becomes `?`.
pub fn notice_in(frame: &[u8], enc: ClientEncoding) -> BytesMut {
    if enc.is_utf8() || frame.len() < 5 {
        return BytesMut::from(frame);
    }
    let mut out = BytesMut::with_capacity(frame.len() + 8);
    out.put_u8(frame[0]);
    out.put_i32(0);
    for (kind, value) in notice_fields(&frame[5..]) {
        out.put_u8(kind);
        out.put_slice(&enc.encode_lossy(&String::from_utf8_lossy(value)));
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}

/// A frame of NUL-terminated `strings` followed by `tail`.
fn with_strings(tag: u8, strings: &[&[u8]], tail: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_i32(0);
    for s in strings {
        out.put_slice(s);
        out.put_u8(0);
    }
    out.put_slice(tail);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}

#[cfg(test)]
mod tests;
