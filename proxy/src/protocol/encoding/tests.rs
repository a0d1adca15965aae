use super::*;
use ClientEncoding::*;

fn roundtrip(e: ClientEncoding, text: &str, bytes: &[u8]) {
    assert_eq!(e.encode(text).as_deref(), Ok(bytes), "{e:?} encode {text}");
    assert_eq!(
        e.decode(bytes).as_deref(),
        Ok(text),
        "{e:?} decode {bytes:02x?}"
    );
}

#[test]
fn chinese_names_both_ways() {
    roundtrip(Gbk, "张伟 王芳", b"\xd5\xc5\xce\xb0 \xcd\xf5\xb7\xbc");
    roundtrip(Gb18030, "中国 𠀀", b"\xd6\xd0\xb9\xfa \x95\x32\x82\x36");
    roundtrip(EucCn, "中国", b"\xd6\xd0\xb9\xfa");
    roundtrip(Big5, "許功", b"\xb3\x5c\xa5\x5c");
    roundtrip(Utf8, "许功", "许功".as_bytes());
    roundtrip(Gbk, "plain ascii", b"plain ascii");
}

#[test]
fn a_trail_byte_that_looks_like_a_backslash_or_quote_is_part_of_its_character() {
    // 乗 is 0x81 0x5C in GBK: the server reads one character, no backslash.
    let t = Gbk.decode(b"'\x81\x5c'").unwrap();
    assert_eq!(t, "'乗'");
    assert!(!t.contains('\\'));
    // 娜 is 0xAE 0x52 in BIG5 ('R'); 功 is 0xA5 0x5C.
    assert_eq!(Big5.decode(b"\xae\x52\xa5\x5c").unwrap(), "娜功");
}

#[test]
fn where_postgresql_differs_from_encoding_rs_the_server_wins() {
    // EUC_CN 0xA1A4 is U+30FB for PostgreSQL 15 (U+00B7 for WHATWG).
    assert_eq!(EucCn.decode(b"\xa1\xa4").unwrap(), "\u{30fb}");
    assert_eq!(EucCn.encode("\u{30fb}").unwrap().as_ref(), b"\xa1\xa4");
    // GB18030 0xA8BC is U+E7C7 for PostgreSQL 15 (U+1E3F since GB18030-2022).
    assert_eq!(Gb18030.decode(b"\xa8\xbc").unwrap(), "\u{e7c7}");
    assert_eq!(Gb18030.encode("\u{e7c7}").unwrap().as_ref(), b"\xa8\xbc");
    // GBK has no U+1E3F for the server (WHATWG writes 0xA8BC).
    assert_eq!(
        Gbk.encode("x\u{1e3f}").unwrap_err().to_string(),
        "character with byte sequence 0xe1 0xb8 0xbf in encoding \"UTF8\" has no equivalent in encoding \"GBK\""
    );
    // A fixed character in the middle of a text goes the slow way and keeps the rest.
    assert_eq!(EucCn.decode(b"a\xd6\xd0\xa1\xa4b").unwrap(), "a中\u{30fb}b");
}

#[test]
fn euc_cn_is_only_gb2312() {
    // 張 is GBK 0x8F88, outside GB2312.
    assert!(EucCn.encode("張").is_err());
    assert!(Gbk.encode("張").is_ok());
}

#[test]
fn invalid_sequences_are_named_as_the_server_names_them() {
    // GBK's well-formedness check is only "two bytes, no NUL": the table says the rest.
    let e = Gbk.decode(b"select '\x81'").unwrap_err();
    assert_eq!(
        e.to_string(),
        "character with byte sequence 0x81 0x27 in encoding \"GBK\" has no equivalent in encoding \"UTF8\""
    );
    assert_eq!(e.sqlstate(), "22P05");
    let e = EucCn.decode(b"select '\x81'").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid byte sequence for encoding \"EUC_CN\": 0x81 0x27"
    );
    assert_eq!(e.sqlstate(), "22021");
    assert!(Gbk.decode(b"abc\x81").is_err());
    assert!(Utf8.decode(b"\xff").is_err());
    assert!(Gb18030.decode(b"\x81\x30\x81").is_err());
}

#[test]
fn lossy_encoding_keeps_the_message_readable() {
    assert_eq!(Gbk.encode_lossy("a\u{1e3f}中").as_ref(), b"a?\xd6\xd0");
}

#[test]
fn names_as_the_server_reports_them() {
    assert_eq!(ClientEncoding::from_name("GBK"), Some(Gbk));
    assert_eq!(ClientEncoding::from_name("euc-cn"), Some(EucCn));
    assert_eq!(ClientEncoding::from_name("UTF8"), Some(Utf8));
    assert_eq!(ClientEncoding::from_name("SJIS"), None);
    assert_eq!(ClientEncoding::from_name("LATIN1"), None);
    for e in SUPPORTED {
        assert_eq!(ClientEncoding::from_name(e.name()), Some(e));
    }
}

#[test]
fn a_stream_keeps_a_character_cut_between_chunks() {
    let bytes = Gb18030.encode("中 𠀀 国").unwrap().into_owned();
    for cut in 0..=bytes.len() {
        let mut d = StreamDecoder::new(Gb18030);
        let mut out = String::new();
        d.feed(&bytes[..cut], &mut out).unwrap();
        d.feed(&bytes[cut..], &mut out).unwrap();
        d.finish().unwrap();
        assert_eq!(out, "中 𠀀 国", "cut at {cut}");
    }
    let mut d = StreamDecoder::new(Gbk);
    let mut out = String::new();
    d.feed(b"a\xd6", &mut out).unwrap();
    assert!(d.finish().is_err());
}

#[test]
fn pack_and_unpack() {
    assert_eq!(pack(&[0x81, 0x30, 0x81, 0x30]), 0x8130_8130);
    assert_eq!(unpack(0xa1a4), vec![0xa1, 0xa4]);
    assert_eq!(unpack(0x8130_8130), vec![0x81, 0x30, 0x81, 0x30]);
}

#[test]
fn frames_pgveil_built_are_sent_in_the_client_encoding() {
    use crate::protocol::frontend::{parse_frame, query_frame};
    let q = frame_in(&query_frame("SELECT '中'"), Gbk).unwrap();
    assert_eq!(&q[..], b"Q\0\0\0\x10SELECT '\xd6\xd0'\0");
    let p = frame_in(&parse_frame(b"s1", "SELECT '中'", &[25]), Gbk).unwrap();
    let want = parse_frame(b"s1", "SELECT 'xx'", &[25]);
    assert_eq!(p.len(), want.len());
    assert_eq!(&p[..16], &want[..16]);
    assert_eq!(&p[16..18], b"\xd6\xd0");
    assert!(frame_in(&query_frame("SELECT '\u{1e3f}'"), Gbk).is_err());
    let same = query_frame("SELECT 1");
    assert_eq!(frame_in(&same, Utf8).unwrap(), same);
}

#[test]
fn pgveil_errors_reach_the_client_in_its_encoding() {
    use crate::protocol::backend::{error_response, Severity};
    let e = error_response(Severity::Error, "42501", "列 public.c.名字 \u{1e3f}");
    let g = notice_in(&e, Gbk);
    let body = &g[5..];
    let m = crate::protocol::backend::notice_field(body, b'M').unwrap();
    assert_eq!(Gbk.decode(m).unwrap(), "列 public.c.名字 ?");
    assert_eq!(
        i32::from_be_bytes([g[1], g[2], g[3], g[4]]) as usize,
        g.len() - 1
    );
}
