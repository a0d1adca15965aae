//! Every mask against real-shaped values, wrong shapes, and properties.
use pgveil_policy::detect;
use pgveil_policy::mask::{Mask, PseudonymKey};
use proptest::prelude::*;

fn key() -> PseudonymKey {
    PseudonymKey::new(b"test pseudonym key")
}

fn m(expr: &str, input: &str) -> String {
    Mask::parse(expr).unwrap().apply_to_string(input, &key())
}

#[test]
fn id_card() {
    assert_eq!(m("cn_id_card", "11010519491231002X"), "110105********002X");
    assert_eq!(m("cn_id_card", "110105491231002"), "110105******002");
    assert_eq!(
        m("cn_id_card", "1101051949"),
        "**********",
        "wrong shape is redacted"
    );
    assert_eq!(m("cn_id_card", ""), "");
}

#[test]
fn mobile() {
    assert_eq!(m("cn_mobile", "13812345678"), "138****5678");
    assert_eq!(m("cn_mobile", "+8613812345678"), "+86138****5678");
    assert_eq!(m("cn_mobile", "+86 13812345678"), "+86 138****5678");
    assert_eq!(m("cn_mobile", "010-12345678"), "************");
    assert_eq!(m("cn_mobile", "12345"), "*****");
}

#[test]
fn names() {
    assert_eq!(m("cn_name", "张三丰"), "张**");
    assert_eq!(m("cn_name", "王五"), "王**");
    assert_eq!(m("cn_name", "欧阳修"), "欧阳**");
    assert_eq!(
        m("cn_name", "欧阳"),
        "欧**",
        "two characters: a single surname"
    );
    assert_eq!(m("cn_name", "李"), "*");
    assert_eq!(m("cn_name", "Zhang Wei"), "Z**");
    assert_eq!(m("cn_name", ""), "");
    assert_eq!(m("cn_name", "   "), "****");
}

#[test]
fn bank_card() {
    assert_eq!(m("bank_card", "6222021234567890123"), "622202*********0123");
    assert_eq!(m("bank_card", "6222 0212 3456 7890"), "6222 02** **** 7890");
    assert_eq!(m("bank_card", "4111111111111111"), "411111******1111");
    assert_eq!(m("bank_card", "1234"), "****");
    assert_eq!(
        m("bank_card", "card 4111111111111111"),
        "*********************"
    );
}

#[test]
fn email() {
    assert_eq!(m("email", "zhangsan@example.com"), "z***@example.com");
    assert_eq!(m("email", "a@b.cn"), "a***@b.cn");
    assert_eq!(m("email", "李雷@例子.中国"), "李***@例子.中国");
    assert_eq!(m("email", "not-an-email"), "****");
    assert_eq!(m("email", "@example.com"), "****");
    assert_eq!(m("email", "x@localhost"), "****");
}

#[test]
fn passport_pnr_waybill() {
    assert_eq!(m("passport", "E12345678"), "E******78");
    assert_eq!(m("passport", "EA1234567"), "E******67");
    assert_eq!(m("keep(1,2)", "G12345678"), "G******78");
    assert_eq!(m("passport", "护照号"), "***");
    assert_eq!(m("pnr", "ABC123"), "AB****");
    assert_eq!(m("pnr", "AB"), "**");
    assert_eq!(m("waybill", "EE123456785CN"), "*********85CN");
    assert_eq!(m("waybill", "SF1234567890123"), "***********0123");
    assert_eq!(m("waybill", "123"), "***");
}

#[test]
fn address() {
    assert_eq!(
        m("address", "北京市海淀区马连洼街道289号"),
        "北京市海淀区****"
    );
    assert_eq!(
        m("address", "浙江省义乌市稠城街道工人北路1号"),
        "浙江省义乌市****"
    );
    assert_eq!(
        m("address", "上海市浦东新区张江镇科苑路88号"),
        "上海市浦东新区****"
    );
    assert_eq!(
        m("address", "四川省成都市双流县东升镇"),
        "四川省成都市双流县****"
    );
    assert_eq!(m("address", "广东省广州市天河区"), "广东省广州市天河区****");
    assert_eq!(m("address", "幸福小区3栋"), "****");
    assert_eq!(m("address", "1 Main Street, Springfield"), "****");
}

#[test]
fn dates() {
    assert_eq!(m("date", "1990-03-07"), "1990");
    assert_eq!(m("date", "1990/3/7"), "1990");
    assert_eq!(m("date", "19900307"), "1990");
    assert_eq!(m("date", "1990年3月7日"), "1990");
    assert_eq!(m("date", "1990-03-07 12:00:00+08"), "1990");
    assert_eq!(m("date", "1990-13-07"), "****");
    assert_eq!(m("date", "1990"), "****");
    assert_eq!(m("date", "yesterday"), "****");
}

#[test]
fn generic() {
    assert_eq!(m("keep(3,4)", "9991234567890"), "999******7890");
    assert_eq!(m("keep(1,1)", "ab"), "**", "too short to keep anything");
    assert_eq!(m("keep(0,0)", "abc"), "***");
    assert_eq!(m("redact", "张三"), "**");
    assert_eq!(m("constant('N/A')", "anything"), "N/A");
    let h1 = m("hash", "13812345678");
    assert_eq!(h1.len(), 16);
    assert!(h1.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(h1, m("hash", "13812345678"), "stable");
    assert_ne!(h1, m("hash", "13812345679"));
    let other = Mask::Hash.apply_to_string("13812345678", &PseudonymKey::new(b"another key"));
    assert_ne!(h1, other, "keyed");
}

#[test]
fn appends_without_clearing() {
    let mut out = String::from("x=");
    Mask::CnMobile.apply("13812345678", &key(), &mut out);
    assert_eq!(out, "x=138****5678");
}

#[test]
fn detectors_on_generated_values() {
    let id = detect::make_cn_id_card("44030419900307123").unwrap();
    assert_eq!(detect::detect(&id), Some(pgveil_policy::Kind::CnIdCard));
    let card = format!(
        "622202123456789012{}",
        detect::luhn_check_digit("622202123456789012").unwrap()
    );
    assert_eq!(detect::detect(&card), Some(pgveil_policy::Kind::BankCard));
    assert_eq!(
        detect::detect("EE123456785CN"),
        Some(pgveil_policy::Kind::Waybill)
    );
    assert_eq!(
        detect::detect("13812345678"),
        Some(pgveil_policy::Kind::CnMobile)
    );
    assert_eq!(
        detect::detect("E12345678"),
        Some(pgveil_policy::Kind::Passport)
    );
    assert_eq!(detect::detect("a@b.cn"), Some(pgveil_policy::Kind::Email));
    assert_eq!(detect::detect("hello"), None);
    assert_eq!(detect::detect("4111111111111112"), None, "Luhn fails");
}

fn all_masks() -> Vec<Mask> {
    [
        "cn_id_card",
        "cn_mobile",
        "cn_name",
        "bank_card",
        "email",
        "passport",
        "address",
        "pnr",
        "waybill",
        "date",
        "keep(1,2)",
        "keep(0,4)",
        "keep(3,0)",
        "redact",
        "hash",
    ]
    .iter()
    .map(|e| Mask::parse(e).unwrap())
    .collect()
}

/// Inputs without the mask character, so "unchanged" cannot happen by coincidence of stars.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^*]{1,40}",
        "1[3-9][0-9]{9}",
        "[1-9][0-9]{16}[0-9X]",
        "62[0-9]{14,17}",
        "[a-z]{1,10}@[a-z]{1,8}\\.(com|cn)",
        "E[A-HJ-NP-Z][0-9]{7}",
        "[A-Z]{2}[0-9]{9}[A-Z]{2}",
        "(北京市|上海市|广东省广州市)[\\u4e00-\\u9fa5]{1,4}区[\\u4e00-\\u9fa5]{0,6}路[0-9]{1,3}号",
        "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])",
        "[\\u4e00-\\u9fa5]{1,4}",
    ]
}

proptest! {
    #[test]
    fn never_returns_nontrivial_input_unchanged(s in value()) {
        for mk in all_masks() {
            let out = mk.apply_to_string(&s, &key());
            prop_assert_ne!(&out, &s, "mask {} returned its input", mk);
        }
    }

    #[test]
    fn length_promises_hold(s in value()) {
        for mk in all_masks().into_iter().filter(Mask::preserves_length) {
            let out = mk.apply_to_string(&s, &key());
            prop_assert_eq!(out.chars().count(), s.chars().count(), "mask {}", mk);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,64}") {
        for mk in all_masks() {
            let _ = mk.apply_to_string(&s, &key());
        }
        let _ = detect::detect(&s);
        let _ = Mask::parse(&s);
    }

    #[test]
    fn generated_ids_pass_their_detectors(body in "[1-6][0-9]{5}(19[5-9][0-9]|200[0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}") {
        let id = detect::make_cn_id_card(&body).unwrap();
        prop_assert!(detect::cn_id_card_valid(&id));
        let mut bad = id.clone().into_bytes();
        bad[16] = if bad[16] == b'9' { b'0' } else { bad[16] + 1 };
        prop_assert!(!detect::cn_id_card_valid(std::str::from_utf8(&bad).unwrap()), "one changed digit is caught");
    }
}
