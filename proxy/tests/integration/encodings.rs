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
CREATE FUNCTION decode_error(b bytea, enc text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM convert_from(b, enc); RETURN NULL; EXCEPTION WHEN others THEN RETURN SQLSTATE; END $$;
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

/// What the server says of every sequence.
struct ServerTables {
    /// Every sequence it accepts, and its character.
    decoded: Vec<(Vec<u8>, char)>,
    /// Every sequence it rejects, and the SQLSTATE it rejects it with.
    rejected: Vec<(Vec<u8>, String)>,
    /// Every code point it can write, and its bytes.
    encoded: HashMap<u32, Vec<u8>>,
}

/// The server's decoding of every sequence, and its encoding of every code point.
async fn server_tables(db: &tokio_postgres::Client, enc: ClientEncoding) -> ServerTables {
    let mut sequences = "SELECT b, t, CASE WHEN t IS NULL THEN decode_error(b, $1) END
         FROM (SELECT b, try_decode(b, $1) t FROM (
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
    sequences.push_str(") s) s2");
    let mut decoded = Vec::new();
    let mut rejected = Vec::new();
    for row in db.query(&sequences, &[&enc.name()]).await.unwrap() {
        let b: Vec<u8> = row.get(0);
        match row.get::<_, Option<String>>(1) {
            Some(t) => {
                let mut chars = t.chars();
                let c = chars.next().expect("one character");
                assert!(chars.next().is_none(), "{b:02x?} decodes to {t:?}");
                decoded.push((b, c));
            }
            None => rejected.push((b, row.get(2))),
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
    ServerTables {
        decoded,
        rejected,
        encoded,
    }
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
        let ServerTables {
            decoded,
            rejected,
            encoded,
        } = server_tables(&db, enc).await;
        // Every sequence the server refuses, pgveil refuses with the server's SQLSTATE (a value
        // pgveil encrypts never reaches the server, so it must refuse what the server would).
        for (b, state) in &rejected {
            match enc.decode(b) {
                Ok(t) => problems.push(format!(
                    "{enc:?} reads {b:02x?} as {t:?}, the server refuses it with {state}"
                )),
                Err(e) if e.sqlstate() == state => {}
                Err(e) => problems.push(format!(
                    "{enc:?} rejects {b:02x?} with {} ({e}), the server with {state}",
                    e.sqlstate()
                )),
            }
        }
        let replaced = decoded.iter().filter(|(_, c)| *c == '\u{FFFD}').count();
        println!(
            "{enc:?}: {} sequences read as the server reads them ({replaced} of them U+FFFD, which pgveil \
             refuses where it is not one-to-one), {} refused as it refuses them",
            decoded.len(),
            rejected.len()
        );
        let mut decode_fixes = Vec::new();
        for (b, c) in &decoded {
            let ours = enc.decode(b).map(|t| t.into_owned());
            // The server's U+FFFD for a sequence it has no character for: refused instead.
            let refused_replacement = *c == '\u{FFFD}' && ours.is_err();
            if ours.as_deref() != Ok(c.encode_utf8(&mut [0; 4])) && !refused_replacement {
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

const POLICY: &str = r#"
version: 1
levels: [core, important]
roles:
  writer: [writer_app]
  desk: [desk_app]
tables:
  public.passengers:
    name:     { level: important, kind: cn_name, encrypt: deterministic, domain: name }
    address:  { level: important, kind: address, encrypt: randomized }
    id_card:  { level: core, kind: cn_id_card, encrypt: deterministic, domain: id_card }
    nickname: { level: important, kind: cn_name }
rules:
  - { roles: [writer], level: core, action: allow }
  - { roles: [writer], level: important, action: allow }
  - { roles: [desk], level: important, action: mask, lookup: true }
defaults: { core: deny, important: mask }
"#;

/// Rows per encoding: [id, name, address, id_card, nickname], each written by another path
/// (literal in an escape string, text parameters, binary parameters, COPY). GBK's 乗 is
/// 0x81 0x5C and BIG5's 許 and 功 end in 0x5C: a byte that reads as a backslash on its own.
fn rows() -> serde_json::Value {
    serde_json::json!({
        "GBK": [
            [1, "乗客张伟", "广东省深圳市南山区科技园1号", "110105194912310021", "小张"],
            [2, "欧阳娜娜", "北京市朝阳区建国路88号", "110105194912310048", "娜娜"],
            [3, "王芳", "上海市浦东新区世纪大道100号", "11010519491231006X", "芳芳"],
            [4, "李娟", "浙江省杭州市西湖区文三路5号", "110105194912310080", "老李"],
            [5, "赵敏", "四川省成都市武侯区人民南路4段", "110105194912310101", "敏敏"]
        ],
        "GB18030": [
            [11, "王𠀀", "广东省广州市天河区体育西路1号", "110105194912310128", "小王"],
            [12, "张三丰", "湖北省十堰市武当山", "110105194912310144", "真人"],
            [13, "刘德华", "香港特别行政区九龙", "110105194912310160", "华仔"],
            [14, "陈𠀁", "福建省厦门市思明区", "110105194912310187", "阿陈"]
        ],
        "EUC_CN": [
            [21, "李娜", "北京市海淀区中关村大街1号", "110105194912310209", "娜姐"],
            [22, "王伟", "天津市和平区南京路2号", "110105194912310225", "伟哥"],
            [23, "周杰", "重庆市渝中区解放碑", "110105194912310241", "杰子"]
        ],
        "BIG5": [
            [31, "許功", "臺北市信義區市府路1號", "110105194912310268", "阿許"],
            [32, "張偉", "高雄市前金區中正四路211號", "110105194912310284", "小張"],
            [33, "林志玲", "臺中市西屯區臺灣大道三段99號", "110105194912310306", "志玲"]
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sessions_write_and_read_chinese_text() {
    let python = tokio::task::block_in_place(crate::support::python::python_with_clients);
    let cluster = pg_trust();
    let files = crate::support::write_fixture::policy_files(POLICY);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role writer_app login; create role desk_app login;
         create table passengers (id int primary key, name text, address text, id_card text,
                                  nickname text);
         create table passengers_plain (like passengers);
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let proxy = files.proxy(&cluster).await;
    let mut rows = rows();
    // A character each encoding lacks (GB18030 holds all of Unicode).
    let foreign = serde_json::json!({ "GBK": "\u{1e3f}", "EUC_CN": "張", "BIG5": "张" });
    let summary = crate::support::python::run_script(
        &python,
        "encodings.py",
        &[
            ("PGVEIL_PROXY_PORT", proxy.addr.port().to_string()),
            ("PGVEIL_DIRECT_PORT", cluster.port().to_string()),
            ("PGVEIL_ROWS", rows.to_string()),
            ("PGVEIL_FOREIGN", foreign.to_string()),
        ],
        180,
    )
    .await;
    crate::support::python::assert_script_ok(&summary);
    assert!(
        summary.json["passed"].as_u64().unwrap_or(0) >= 100,
        "fewer checks ran than expected:\n{}",
        summary.stdout
    );

    // psql, as a GBK application's script runs it: bytes in, bytes out.
    let gbk = ClientEncoding::Gbk;
    let script = "INSERT INTO passengers (id, name, address, id_card, nickname) VALUES \
                  (41, E'乗務員', '江苏省南京市玄武区中山路1号', '110105194912310322', '小乗');\n\
                  SELECT name, address FROM passengers WHERE name = '乗務員';\n\
                  \\copy (SELECT name, nickname FROM passengers WHERE id = 41) TO STDOUT\n";
    let mut child = tokio::process::Command::new(psql())
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &proxy.addr.port().to_string(),
            "-U",
            "writer_app",
            "-d",
            "postgres",
        ])
        .env("PGSSLMODE", "disable")
        .env("PGCLIENTENCODING", "GBK")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &gbk.encode(script).unwrap())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The COPY row keeps 乗's trail byte 0x5C unescaped, as the server writes it.
    let want = gbk
        .encode("乗務員|江苏省南京市玄武区中山路1号\n乗務員\t小乗\n")
        .unwrap()
        .into_owned();
    assert_eq!(out.stdout, want, "{:?}", gbk.decode(&out.stdout));
    rows.as_object_mut().unwrap()["GBK"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!([
            41,
            "乗務員",
            "江苏省南京市玄武区中山路1号",
            "110105194912310322",
            "小乗"
        ]));

    // In the database: ciphertext only, and its plaintext is the UTF-8 text each session meant.
    let keys = pgveil_policy::keyring::Keyring::load(&files.keyring)
        .unwrap()
        .into_key_set();
    let mut canaries = Vec::new();
    for (_, list) in rows.as_object().unwrap() {
        for r in list.as_array().unwrap() {
            let id = r[0].as_i64().unwrap() as i32;
            let stored = db
                .query_one(
                    "select name, address, id_card, nickname from passengers where id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            for (i, domain) in [(0, "name"), (1, "address"), (2, "id_card")] {
                let v: String = stored.get(i);
                let plain = keys.domain(domain).decrypt(v.as_bytes());
                assert_eq!(
                    plain.as_deref().ok(),
                    Some(r[i + 1].as_str().unwrap().as_bytes()),
                    "passengers.{domain} of {id}: {v}"
                );
            }
            // The unencrypted column holds the text as the server converted it.
            assert_eq!(stored.get::<_, String>(3), r[4].as_str().unwrap());
            canaries.push(r[1].as_str().unwrap().to_string());
            canaries.push(r[2].as_str().unwrap().to_string());
        }
    }
    let all: Vec<String> = db
        .query("select t::text from passengers t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for c in &canaries {
        assert!(
            !all.iter().any(|row| row.contains(c.as_str())),
            "{c} stored in clear"
        );
    }
    println!("{}", summary.stdout);
}
