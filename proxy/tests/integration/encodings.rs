//! Legacy client encodings (GBK, GB18030, EUC_CN, BIG5).
//!
//! `codec_agrees_with_postgres_on_every_character` is the proof behind
//! `proxy/src/protocol/encoding`: for every byte sequence the server accepts (every one- and
//! two-byte sequence with a high lead byte, and GB18030's 1.6 million four-byte ones), pgveil
//! decodes the server's character; for every code point, it writes the server's bytes, or
//! refuses where the server has no equivalent. When PostgreSQL and encoding_rs drift apart (a
//! new version of either), the test fails and prints where; with
//! `PGVEIL_WRITE_ENCODING_TABLES=1` it writes `protocol/encoding/tables.rs` anew.
//!
//! `legacy_sessions_write_and_read_chinese_text` (in `python_clients.rs` style) drives
//! psycopg through an enforcing pgveil in each encoding.
use std::collections::HashMap;
use std::fmt::Write as _;

use pgveil::protocol::encoding::{pack, ClientEncoding};

use crate::support::*;

const TRY: &str = "
CREATE FUNCTION try_decode(b bytea, enc text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN RETURN convert_from(b, enc); EXCEPTION WHEN others THEN RETURN NULL; END $$;
CREATE FUNCTION try_encode(t text, enc text) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN RETURN convert_to(t, enc); EXCEPTION WHEN others THEN RETURN NULL; END $$;
";

const LEGACY: [ClientEncoding; 4] = [
    ClientEncoding::Gbk,
    ClientEncoding::Gb18030,
    ClientEncoding::EucCn,
    ClientEncoding::Big5,
];

/// What encoding_rs alone does (the tables correct it): its decoder for one character, its
/// encoder for one code point (EUC_CN: GBK's, limited to GB2312's two-byte range).
fn plain_decode(enc: ClientEncoding, b: &[u8]) -> Option<String> {
    let codec = match enc {
        ClientEncoding::Gb18030 => encoding_rs::GB18030,
        ClientEncoding::Big5 => encoding_rs::BIG5,
        _ => encoding_rs::GBK,
    };
    codec
        .decode_without_bom_handling_and_without_replacement(b)
        .map(|t| t.into_owned())
}

fn plain_encode(enc: ClientEncoding, c: char) -> Option<Vec<u8>> {
    let codec = match enc {
        ClientEncoding::Gb18030 => encoding_rs::GB18030,
        ClientEncoding::Big5 => encoding_rs::BIG5,
        _ => encoding_rs::GBK,
    };
    let mut buf = [0; 4];
    let (b, _, bad) = codec.encode(c.encode_utf8(&mut buf));
    let b = b.into_owned();
    let gb2312 = b.len() == 2 && b.iter().all(|x| (0xA1..=0xFE).contains(x));
    (!bad && (enc != ClientEncoding::EucCn || gb2312)).then_some(b)
}

/// The server's decoding of every sequence it accepts, and its encoding of every code point.
async fn server_tables(
    db: &tokio_postgres::Client,
    enc: ClientEncoding,
) -> (Vec<(Vec<u8>, char)>, HashMap<u32, Vec<u8>>) {
    let mut sequences = "SELECT b, try_decode(b, $1) FROM (
           SELECT substring(int4send(x) from 4) b FROM generate_series(128, 255) x
           UNION ALL SELECT substring(int4send(x) from 3) FROM generate_series(32768, 65535) x"
        .to_string();
    if enc == ClientEncoding::Gb18030 {
        sequences.push_str(
            " UNION ALL SELECT substring(int4send(a) from 4) || substring(int4send(c) from 4)
                 || substring(int4send(d) from 4) || substring(int4send(e) from 4)
               FROM generate_series(129, 254) a, generate_series(48, 57) c,
                    generate_series(129, 254) d, generate_series(48, 57) e",
        );
    }
    sequences.push_str(") s");
    let mut decoded = Vec::new();
    for row in db.query(&sequences, &[&enc.name()]).await.unwrap() {
        let b: Vec<u8> = row.get(0);
        if let Some(t) = row.get::<_, Option<String>>(1) {
            let mut chars = t.chars();
            let c = chars.next().expect("one character");
            assert!(chars.next().is_none(), "{b:02x?} decodes to {t:?}");
            decoded.push((b, c));
        }
    }
    let mut encoded = HashMap::new();
    let rows = db
        .query(
            "SELECT cp, b FROM (SELECT cp, try_encode(chr(cp), $1) b
               FROM generate_series(128, 1114111) cp WHERE cp < 55296 OR cp > 57343) s
             WHERE b IS NOT NULL",
            &[&enc.name()],
        )
        .await
        .unwrap();
    for row in rows {
        let cp: i32 = row.get(0);
        encoded.insert(cp as u32, row.get::<_, Vec<u8>>(1));
    }
    (decoded, encoded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_agrees_with_postgres_on_every_character() {
    let cluster = pg_trust();
    let db = direct(&cluster).await;
    db.batch_execute(TRY).await.unwrap();
    // ASCII is ASCII both ways in every encoding (the codec's fast path relies on it).
    for enc in LEGACY {
        let same: bool = db
            .query_one(
                "SELECT bool_and(convert_from(substring(int4send(x) from 4), $1) = chr(x)
                   AND convert_to(chr(x), $1) = substring(int4send(x) from 4))
                 FROM generate_series(1, 127) x",
                &[&enc.name()],
            )
            .await
            .unwrap()
            .get(0);
        assert!(same, "{enc:?}: ASCII is not ASCII");
    }
    let mut problems = Vec::new();
    let mut tables = String::from(
        "//! Generated by `proxy/tests/integration/encodings.rs` (run it with\n\
         //! `PGVEIL_WRITE_ENCODING_TABLES=1` to write this file anew) from PostgreSQL 15's own\n\
         //! conversions: every character where the server differs from encoding_rs. Do not edit.\n",
    );
    for enc in LEGACY {
        let (decoded, encoded) = server_tables(&db, enc).await;
        let mut decode_fixes = Vec::new();
        for (b, c) in &decoded {
            let ours = enc.decode(b).map(|t| t.into_owned());
            if ours.as_deref() != Ok(c.encode_utf8(&mut [0; 4])) {
                problems.push(format!(
                    "{enc:?} decodes {b:02x?} to {ours:?}, the server to {c:?}"
                ));
            }
            if plain_decode(enc, b).as_deref() != Some(c.encode_utf8(&mut [0; 4])) {
                decode_fixes.push((pack(b), *c as u32));
            }
            // What the server reads back what it writes: round trips keep the character.
            let again = encoded.get(&(*c as u32)).and_then(|b2| enc.decode(b2).ok());
            if again.as_deref() != Some(c.encode_utf8(&mut [0; 4])) {
                problems.push(format!("{enc:?}: {b:02x?} does not come back as {c:?}"));
            }
        }
        // Looked up by binary search on the packed bytes.
        decode_fixes.sort_unstable();
        let mut encode_fixes: Vec<(u32, u32, u32)> = Vec::new();
        for cp in 0x80..=0x10FFFFu32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let server = encoded.get(&cp);
            let mut buf = [0; 4];
            let ours = enc.encode(c.encode_utf8(&mut buf)).ok();
            if server.map(|b| b.as_slice()) != ours.as_deref() {
                problems.push(format!(
                    "{enc:?} encodes U+{cp:04X} as {ours:02x?}, the server as {server:02x?}"
                ));
            }
            if server != plain_encode(enc, c).as_ref() {
                let v = server.map_or(0, |b| pack(b));
                match encode_fixes.last_mut() {
                    Some(last) if v == 0 && last.2 == 0 && last.1 + 1 == cp => last.1 = cp,
                    _ => encode_fixes.push((cp, cp, v)),
                }
            }
        }
        let id = enc.name().to_string();
        let _ = writeln!(
            tables,
            "/// {id}: byte sequences PostgreSQL 15 decodes to another character than encoding_rs.\n\
             pub const {id}_DECODE: &[(u32, u32)] = &["
        );
        for chunk in decode_fixes.chunks(6) {
            let line: Vec<String> = chunk
                .iter()
                .map(|(b, c)| format!("(0x{b:X}, 0x{c:X}),"))
                .collect();
            let _ = writeln!(tables, "    {}", line.join(" "));
        }
        let _ = writeln!(
            tables,
            "];\n/// {id}: code points (ranges) PostgreSQL 15 encodes otherwise (0: no equivalent).\n\
             pub const {id}_ENCODE: &[(u32, u32, u32)] = &["
        );
        for chunk in encode_fixes.chunks(4) {
            let line: Vec<String> = chunk
                .iter()
                .map(|(a, b, v)| format!("(0x{a:X}, 0x{b:X}, 0x{v:X}),"))
                .collect();
            let _ = writeln!(tables, "    {}", line.join(" "));
        }
        tables.push_str("];\n");
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol/encoding/tables.rs");
    if std::env::var_os("PGVEIL_WRITE_ENCODING_TABLES").is_some() {
        std::fs::write(&path, &tables).unwrap();
        return;
    }
    assert!(
        problems.is_empty(),
        "pgveil reads or writes {} characters unlike PostgreSQL (first 20 below); regenerate \
         {} with PGVEIL_WRITE_ENCODING_TABLES=1:\n{}",
        problems.len(),
        path.display(),
        problems[..problems.len().min(20)].join("\n")
    );
    let have = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        have,
        tables,
        "{} is not what PostgreSQL's conversions give (regenerate it)",
        path.display()
    );
}
