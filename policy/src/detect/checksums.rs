//! GB 11643 MOD 11-2, Luhn, ICAO 9303 7-3-1, UPU S10, and the Chinese mobile shape.

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// The GB 11643-1999 check character (ISO 7064 MOD 11-2) for the first 17 digits.
pub fn cn_id_card_check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s: u32 = b
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(ID_CHECK[(s % 11) as usize] as char)
}

/// An 18-character 居民身份证号: region (first digit 1-9), a real calendar birth date from
/// 1800 on, sequence, and a correct MOD 11-2 check character (`x` is accepted for `X`).
pub fn cn_id_card_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 18 || b[0] == b'0' || !s.is_ascii() {
        return false;
    }
    let Some(check) = cn_id_card_check_char(&s[..17]) else {
        return false;
    };
    if b[17].to_ascii_uppercase() != check as u8 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    match (num(6..10), num(10..12), num(12..14)) {
        (Some(y), Some(m), Some(d)) => (1800..=2100).contains(&y) && valid_date(y, m, d),
        _ => false,
    }
}

fn valid_date(y: u32, m: u32, d: u32) -> bool {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Builds a valid 18-digit ID number from its first 17 digits.
pub fn make_cn_id_card(first17: &str) -> Option<String> {
    cn_id_card_check_char(first17).map(|c| format!("{first17}{c}"))
}

/// The Luhn (mod 10) check digit to append to `payload` (digits only).
pub fn luhn_check_digit(payload: &str) -> Option<char> {
    if payload.is_empty() || !payload.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut sum = 0u32;
    for (i, b) in payload.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    char::from_digit((10 - sum % 10) % 10, 10)
}

/// A digit string (at least 2 digits) whose last digit is its Luhn check digit.
pub fn luhn_valid(s: &str) -> bool {
    if s.len() < 2 || !s.is_ascii() {
        return false;
    }
    let (payload, check) = s.split_at(s.len() - 1);
    luhn_check_digit(payload).is_some_and(|c| check.starts_with(c))
}

/// ICAO Doc 9303 check digit: weights 7,3,1 repeating; `0-9` are their value, `A-Z` are 10-35,
/// `<` is 0.
pub fn icao9303_check_digit(field: &str) -> Option<char> {
    let mut sum = 0u32;
    for (i, b) in field.bytes().enumerate() {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            b'<' => 0,
            _ => return None,
        };
        sum += v * [7, 3, 1][i % 3];
    }
    char::from_digit(sum % 10, 10)
}

/// A machine-readable-zone field followed by its check digit, e.g. the 9-character passport
/// number field of a TD3 MRZ plus its check digit (`L898902C<3`).
pub fn icao9303_valid(field_with_check: &str) -> bool {
    if field_with_check.len() < 2 || !field_with_check.is_ascii() {
        return false;
    }
    let (field, check) = field_with_check.split_at(field_with_check.len() - 1);
    icao9303_check_digit(field).is_some_and(|c| check.starts_with(c))
}

/// Chinese passport numbers: `G` or `E` + 8 digits, `E` + a letter (not I or O) + 7 digits, or a
/// diplomatic / service / public-affairs `DE`/`SE`/`PE` + 7 digits.
pub fn cn_passport_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b {
        [b'G' | b'E', rest @ ..] if rest.len() == 8 && digits(rest) => true,
        [b'E', l, rest @ ..]
            if l.is_ascii_uppercase()
                && *l != b'I'
                && *l != b'O'
                && rest.len() == 7
                && digits(rest) =>
        {
            true
        }
        [b'D' | b'S' | b'P', b'E', rest @ ..] if rest.len() == 7 && digits(rest) => true,
        _ => false,
    }
}

const S10_WEIGHTS: [u32; 8] = [8, 6, 4, 2, 3, 5, 9, 7];

/// The UPU S10 check digit for an 8-digit serial number.
pub fn upu_s10_check_digit(serial8: &str) -> Option<char> {
    let b = serial8.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s: u32 = b
        .iter()
        .zip(S10_WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let c = match 11 - s % 11 {
        10 => 0,
        11 => 5,
        c => c,
    };
    char::from_digit(c, 10)
}

/// A UPU S10 item identifier: 2 service letters, 8 digits, check digit, 2-letter country code
/// (`EE123456785CN`).
pub fn upu_s10_valid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 13
        && s.is_ascii()
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[11..].iter().all(u8::is_ascii_uppercase)
        && upu_s10_check_digit(&s[2..10]).is_some_and(|c| c as u8 == b[10])
}

/// Builds a valid S10 identifier from a service code, an 8-digit serial and a country code.
pub fn make_upu_s10(service: &str, serial8: &str, country: &str) -> Option<String> {
    let ok = service.len() == 2
        && country.len() == 2
        && service
            .bytes()
            .chain(country.bytes())
            .all(|b| b.is_ascii_uppercase());
    if !ok {
        return None;
    }
    upu_s10_check_digit(serial8).map(|c| format!("{service}{serial8}{c}{country}"))
}

/// A mainland mobile number: `1[3-9]` + 9 digits, optionally prefixed by `+86`, `0086` or `86`.
pub fn cn_mobile_shape(s: &str) -> bool {
    let s = s
        .strip_prefix("+86")
        .or_else(|| s.strip_prefix("0086"))
        .map(|r| r.strip_prefix([' ', '-']).unwrap_or(r))
        .unwrap_or(if s.len() == 13 {
            s.strip_prefix("86").unwrap_or(s)
        } else {
            s
        });
    let b = s.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_card_known_values() {
        // The GB 11643-1999 standard's own example.
        assert!(cn_id_card_valid("11010519491231002X"));
        assert!(cn_id_card_valid("11010519491231002x"));
        assert!(!cn_id_card_valid("110105194912310021"));
        assert_eq!(cn_id_card_check_char("11010519491231002"), Some('X'));
        // hutool's example value.
        assert!(cn_id_card_valid("51343620000320711X"));
        assert!(!cn_id_card_valid("110105194913310028"), "month 13");
        assert!(
            !cn_id_card_valid("010105194912310021"),
            "leading zero region"
        );
        assert!(!cn_id_card_valid("11010519491231002"), "17 chars");
        assert!(!cn_id_card_valid("中文中文中文"));
        assert!(!upu_s10_valid("EE1234567\u{e9}CN"));
        let made = make_cn_id_card("44030419900307123").unwrap();
        assert!(cn_id_card_valid(&made), "{made}");
        assert!(
            !cn_id_card_valid("110105190002290018"),
            "1900 is not a leap year"
        );
    }

    #[test]
    fn luhn_known_values() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(
            luhn_valid("6222021234567890123")
                == (luhn_check_digit("622202123456789012") == Some('3'))
        );
        assert_eq!(luhn_check_digit("7992739871"), Some('3'));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("4111-1111"));
    }

    #[test]
    fn icao_known_values() {
        // ICAO 9303 part 4 specimen: document number L898902C<, check digit 3;
        // date of birth 740812 check 2; expiry 120415 check 9.
        assert!(icao9303_valid("L898902C<3"));
        assert!(icao9303_valid("7408122"));
        assert!(icao9303_valid("1204159"));
        assert!(!icao9303_valid("L898902C<4"));
        assert_eq!(icao9303_check_digit("l89"), None);
        assert!(cn_passport_shape("E12345678"));
        assert!(cn_passport_shape("EA1234567"));
        assert!(!cn_passport_shape("EI1234567"));
        assert!(cn_passport_shape("G12345678"));
        assert!(cn_passport_shape("DE1234567"));
        assert!(!cn_passport_shape("X12345678"));
    }

    #[test]
    fn s10_known_values() {
        assert!(upu_s10_valid("EE123456785CN"));
        assert!(upu_s10_valid("RR473124829GB"));
        assert!(!upu_s10_valid("EE123456784CN"));
        assert!(!upu_s10_valid("ee123456785CN"));
        assert_eq!(
            make_upu_s10("EA", "00000000", "CN").as_deref(),
            Some("EA000000005CN")
        );
        assert!(upu_s10_valid(
            &make_upu_s10("LX", "99999999", "CN").unwrap()
        ));
    }

    #[test]
    fn mobile_shape() {
        assert!(cn_mobile_shape("13812345678"));
        assert!(cn_mobile_shape("+8613812345678"));
        assert!(cn_mobile_shape("+86 13812345678"));
        assert!(cn_mobile_shape("8613812345678"));
        assert!(!cn_mobile_shape("12812345678"));
        assert!(!cn_mobile_shape("1381234567"));
        assert!(!cn_mobile_shape("010-12345678"));
    }
}
