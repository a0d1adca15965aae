//! ErrorResponse and NoticeResponse texts that can quote stored values, withheld.
//!
//! The server quotes values in error and notice texts: `DETAIL: Failing row contains (...)`,
//! `Key (phone)=(...) already exists`, `invalid input syntax for type integer: "..."`, a
//! trigger's `RAISE NOTICE`, a function body's `CONTEXT`. For a login that may not read every
//! protected column in clear, pgveil keeps the fields applications act on and that name no
//! value, and withholds the rest:
//!
//! | field | kept |
//! |---|---|
//! | `S`/`V` severity, `C` SQLSTATE | always |
//! | `s` schema, `t` table, `c` column, `d` data type, `n` constraint | always (names, not values) |
//! | `P`/`p` positions, `F`/`L`/`R` server source location | always |
//! | `M` message | when its SQLSTATE's messages never quote values ([`message_is_safe`]); otherwise replaced by a message naming the SQLSTATE |
//! | `D` detail | replaced by a note that it was withheld |
//! | `H` hint, `W` context, `q` internal query | dropped |
use bytes::{BufMut, BytesMut};

use crate::protocol::backend::notice_fields;

/// The text that replaces a withheld DETAIL.
pub const DETAIL_WITHHELD: &str =
    "(withheld by pgveil: details can quote stored values of protected columns)";

/// Classes of SQLSTATE whose messages name objects and types, never values.
const SAFE_CLASSES: &[&str] = &[
    "08", "0A", "0B", "0F", "0L", "0P", "21", "23", "24", "25", "26", "27", "28", "2B", "2D", "34",
    "3B", "3D", "3F", "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0",
];

/// SQLSTATEs outside those classes whose messages quote no value.
const SAFE_CODES: &[&str] = &[
    "22012", // division_by_zero
    "22001", // string_data_right_truncation: "value too long for type character varying(n)"
    "22000", // data_exception (generic)
];

/// Whether the messages of SQLSTATE `code` never quote a value.
pub fn message_is_safe(code: &str) -> bool {
    SAFE_CODES.contains(&code) || SAFE_CLASSES.iter().any(|c| code.starts_with(c))
}

/// The ErrorResponse (`tag` `E`) or NoticeResponse (`N`) frame for `body` with the texts that
/// can quote values withheld; `None` when nothing needed withholding.
pub fn scrub(tag: u8, body: &[u8]) -> Option<BytesMut> {
    let code = notice_fields(body)
        .find(|(k, _)| *k == b'C')
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let safe_message = message_is_safe(&code);
    let needs = notice_fields(body)
        .any(|(k, _)| matches!(k, b'D' | b'H' | b'W' | b'q') || (k == b'M' && !safe_message));
    if !needs {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 64);
    out.put_u8(tag);
    out.put_i32(0);
    for (kind, value) in notice_fields(body) {
        match kind {
            b'H' | b'W' | b'q' => continue,
            b'D' => field(&mut out, kind, DETAIL_WITHHELD.as_bytes()),
            b'M' if !safe_message => {
                let m = format!(
                    "pgveil withheld this message (SQLSTATE {code}): its text can quote stored values of protected columns"
                );
                field(&mut out, kind, m.as_bytes());
            }
            _ => field(&mut out, kind, value),
        }
    }
    out.put_u8(0);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

fn field(out: &mut BytesMut, kind: u8, value: &[u8]) {
    out.put_u8(kind);
    out.put_slice(value);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::{error_fields, notice_field};

    fn body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in fields {
            b.push(*k);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn details_and_value_bearing_messages_are_withheld() {
        let b = body(&[
            (b'S', "ERROR"),
            (b'C', "23502"),
            (b'M', "null value in column \"id\" of relation \"customers\" violates not-null constraint"),
            (b'D', "Failing row contains (null, 张三, 13800001111)."),
            (b's', "public"),
            (b't', "customers"),
            (b'c', "id"),
        ]);
        let f = scrub(b'E', &b).expect("scrubbed");
        let out = &f[5..];
        assert_eq!(error_fields(out).0, "23502");
        assert!(error_fields(out).1.starts_with("null value in column"));
        assert_eq!(notice_field(out, b'D'), Some(DETAIL_WITHHELD.as_bytes()));
        assert_eq!(notice_field(out, b't'), Some(&b"customers"[..]));
        assert!(!String::from_utf8_lossy(&f).contains("张三"));
        let len = i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 1);

        let b = body(&[
            (b'S', "ERROR"),
            (b'C', "22P02"),
            (b'M', "invalid input syntax for type integer: \"张三\""),
            (b'W', "SQL function \"f\" statement 1"),
        ]);
        let f = scrub(b'E', &b).expect("scrubbed");
        let text = String::from_utf8_lossy(&f);
        assert!(!text.contains("张三") && text.contains("22P02"), "{text}");
        assert_eq!(notice_field(&f[5..], b'W'), None);

        let b = body(&[(b'S', "NOTICE"), (b'C', "00000"), (b'M', "new name 张三")]);
        let f = scrub(b'N', &b).expect("scrubbed");
        assert_eq!(f[0], b'N');
        assert!(!String::from_utf8_lossy(&f).contains("张三"));
    }

    #[test]
    fn texts_without_values_pass_unchanged() {
        let b = body(&[
            (b'S', "ERROR"),
            (b'C', "42P01"),
            (b'M', "relation \"nope\" does not exist"),
            (b'P', "15"),
        ]);
        assert!(scrub(b'E', &b).is_none());
        assert!(message_is_safe("23505") && message_is_safe("22012"));
        assert!(
            !message_is_safe("P0001") && !message_is_safe("22P02") && !message_is_safe("00000")
        );
    }
}
