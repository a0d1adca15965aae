//! Binary-format values of the types a masked column may have, turned into their text form
//! (masks work on text). Types without a decoder here are refused with a clear error.
use std::fmt::Write;

use crate::protocol::encoding::ClientEncoding;

/// Type OIDs whose binary format is the text itself.
const TEXTUAL: &[u32] = &[25, 1043, 1042, 19, 114, 705];

pub fn is_textual(oid: u32) -> bool {
    TEXTUAL.contains(&oid)
}

/// Append the text form of a binary value of type `oid` to `out`. The binary format of text
/// types is the text in the client encoding `enc` (the server converts it, as for text format).
pub fn to_text(oid: u32, v: &[u8], enc: ClientEncoding, out: &mut String) -> Result<(), String> {
    let bad = || format!("malformed binary value of type {oid}");
    let text = |b: &[u8]| {
        enc.decode(b)
            .map(|t| t.into_owned())
            .map_err(|e| e.to_string())
    };
    match oid {
        _ if is_textual(oid) => out.push_str(&text(v)?),
        // jsonb: a version byte, then the text
        3802 => out.push_str(&text(v.get(1..).ok_or_else(bad)?)?),
        16 => out.push_str(if v.first() == Some(&1) { "t" } else { "f" }),
        21 => {
            let b: [u8; 2] = v.try_into().map_err(|_| bad())?;
            let _ = write!(out, "{}", i16::from_be_bytes(b));
        }
        23 => {
            let b: [u8; 4] = v.try_into().map_err(|_| bad())?;
            let _ = write!(out, "{}", i32::from_be_bytes(b));
        }
        20 => {
            let b: [u8; 8] = v.try_into().map_err(|_| bad())?;
            let _ = write!(out, "{}", i64::from_be_bytes(b));
        }
        700 => {
            let b: [u8; 4] = v.try_into().map_err(|_| bad())?;
            let _ = write!(out, "{}", f32::from_be_bytes(b));
        }
        701 => {
            let b: [u8; 8] = v.try_into().map_err(|_| bad())?;
            let _ = write!(out, "{}", f64::from_be_bytes(b));
        }
        1082 => {
            let b: [u8; 4] = v.try_into().map_err(|_| bad())?;
            let (y, m, d) = civil(i32::from_be_bytes(b) as i64 + DAYS_TO_2000);
            let _ = write!(out, "{y:04}-{m:02}-{d:02}");
        }
        1114 | 1184 => {
            let b: [u8; 8] = v.try_into().map_err(|_| bad())?;
            let us = i64::from_be_bytes(b);
            let days = us.div_euclid(86_400_000_000);
            let rem = us.rem_euclid(86_400_000_000);
            let (y, m, d) = civil(days + DAYS_TO_2000);
            let (h, mi, s, frac) = (
                rem / 3_600_000_000,
                rem / 60_000_000 % 60,
                rem / 1_000_000 % 60,
                rem % 1_000_000,
            );
            let _ = write!(out, "{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}");
            if frac != 0 {
                let f = format!("{frac:06}");
                let _ = write!(out, ".{}", f.trim_end_matches('0'));
            }
            if oid == 1184 {
                out.push_str("+00");
            }
        }
        1700 => numeric(v, out).ok_or_else(bad)?,
        2950 => {
            if v.len() != 16 {
                return Err(bad());
            }
            for (i, b) in v.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                let _ = write!(out, "{b:02x}");
            }
        }
        other => {
            return Err(format!(
                "pgveil cannot mask binary values of type OID {other}; request text format for this column"
            ))
        }
    }
    Ok(())
}

/// `typlen` of a type as RowDescription reports it (-1: variable length).
pub fn type_len(oid: u32) -> i16 {
    match oid {
        16 => 1,
        21 => 2,
        23 | 700 | 1082 => 4,
        20 | 701 | 1114 | 1184 => 8,
        2950 => 16,
        _ => -1,
    }
}

/// The binary format of a value of type `oid` given in its text form (a decrypted value of a
/// column whose original type was not text), into `out` (cleared first).
pub fn from_text(oid: u32, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let t = text.trim();
    let bad = || format!("{t:?} is not a valid value of type OID {oid}");
    match oid {
        _ if is_textual(oid) => out.extend_from_slice(text.as_bytes()),
        16 => out.push(match t.to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" => 1,
            "f" | "false" | "no" | "off" | "0" => 0,
            _ => return Err(bad()),
        }),
        21 => out.extend(t.parse::<i16>().map_err(|_| bad())?.to_be_bytes()),
        23 => out.extend(t.parse::<i32>().map_err(|_| bad())?.to_be_bytes()),
        20 => out.extend(t.parse::<i64>().map_err(|_| bad())?.to_be_bytes()),
        700 => out.extend(t.parse::<f32>().map_err(|_| bad())?.to_be_bytes()),
        701 => out.extend(t.parse::<f64>().map_err(|_| bad())?.to_be_bytes()),
        1082 => {
            let days = parse_date(t).ok_or_else(bad)? - DAYS_TO_2000;
            out.extend(i32::try_from(days).map_err(|_| bad())?.to_be_bytes());
        }
        1114 | 1184 => {
            let us = parse_timestamp(t, oid == 1184).ok_or_else(bad)?;
            out.extend(us.to_be_bytes());
        }
        1700 => numeric_from_text(t, out).ok_or_else(bad)?,
        other => {
            return Err(format!(
                "pgveil cannot send decrypted values of type OID {other} in binary; request text format for this column"
            ))
        }
    }
    Ok(())
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
fn parse_date(t: &str) -> Option<i64> {
    let mut parts = t.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.get(..2)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Microseconds since 2000-01-01 00:00 (UTC for `tz`) of `YYYY-MM-DD[ T]HH:MM:SS[.f][±HH[:MM]]`.
fn parse_timestamp(t: &str, tz: bool) -> Option<i64> {
    let (date, rest) = t.split_at(t.find([' ', 'T'])?);
    let days = parse_date(date)? - DAYS_TO_2000;
    let rest = &rest[1..];
    let (clock, offset) = match rest.find(['+', '-', 'Z']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut hms = clock.splitn(3, ':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let sec = hms.next().unwrap_or("0");
    let (s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = s.parse().ok()?;
    let mut us_frac: i64 = 0;
    for (i, c) in frac.chars().take(6).enumerate() {
        us_frac += i64::from(c.to_digit(10)?) * 10i64.pow(5 - i as u32);
    }
    let mut us = ((days * 24 + h) * 60 + mi) * 60_000_000 + s * 1_000_000 + us_frac;
    if tz && !offset.is_empty() && offset != "Z" {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let o = &offset[1..];
        let (oh, om) = match o.split_once(':') {
            Some((a, b)) => (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?),
            None if o.len() == 4 => (o[..2].parse().ok()?, o[2..].parse().ok()?),
            None => (o.parse().ok()?, 0),
        };
        us -= sign * (oh * 3600 + om * 60) * 1_000_000;
    }
    Some(us)
}

/// numeric's binary form from its text: ndigits, weight, sign, dscale, base-10000 digits.
fn numeric_from_text(t: &str, out: &mut Vec<u8>) -> Option<()> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if t.eq_ignore_ascii_case("nan") {
        for v in [0i16, 0, 0xC000u16 as i16, 0] {
            out.extend(v.to_be_bytes());
        }
        return Some(());
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let dscale = frac.len();
    // Pad the integer part on the left and the fraction on the right to groups of 4.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let digits_str = format!(
        "{}{}{}{}",
        "0".repeat(int_pad),
        int,
        frac,
        "0".repeat(frac_pad)
    );
    let int_groups = (int.len() + int_pad) / 4;
    let mut digits: Vec<i16> = digits_str
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).ok().and_then(|s| s.parse().ok()))
        .collect::<Option<_>>()?;
    let mut weight = int_groups as i16 - 1;
    // Strip leading and trailing zero groups (PostgreSQL's canonical form).
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if neg && !digits.is_empty() { 0x4000 } else { 0 };
    for v in [digits.len() as i16, weight, sign as i16, dscale as i16] {
        out.extend(v.to_be_bytes());
    }
    for d in digits {
        out.extend(d.to_be_bytes());
    }
    Some(())
}

/// Days from 1970-01-01 to 2000-01-01.
const DAYS_TO_2000: i64 = 10_957;

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(v: &[u8], out: &mut String) -> Option<()> {
    let h = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*v.get(i)?, *v.get(i + 1)?])) };
    let ndigits = h(0)?.max(0) as usize;
    let weight = h(2)? as i64;
    let sign = h(4)? as u16;
    let dscale = h(6)?.max(0) as usize;
    let digits: Vec<i64> = (0..ndigits)
        .map(|i| h(8 + 2 * i).map(|d| d as i64))
        .collect::<Option<_>>()?;
    match sign {
        0xC000 => {
            out.push_str("NaN");
            return Some(());
        }
        0xD000 => {
            out.push_str("Infinity");
            return Some(());
        }
        0xF000 => {
            out.push_str("-Infinity");
            return Some(());
        }
        0x4000 => out.push('-'),
        _ => {}
    }
    // Integer part: digit groups with index 0..=weight.
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let d = digits.get(i as usize).copied().unwrap_or(0);
            if i == 0 {
                let _ = write!(out, "{d}");
            } else {
                let _ = write!(out, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let d = if i < 0 {
                0
            } else {
                digits.get(i as usize).copied().unwrap_or(0)
            };
            let _ = write!(frac, "{d:04}");
            i += 1;
        }
        out.push_str(&frac[..dscale]);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(oid: u32, v: &[u8]) -> String {
        let mut s = String::new();
        to_text(oid, v, ClientEncoding::Utf8, &mut s).unwrap();
        s
    }

    #[test]
    fn integers_dates_and_timestamps() {
        assert_eq!(t(23, &(-42i32).to_be_bytes()), "-42");
        assert_eq!(t(20, &9_000_000_000i64.to_be_bytes()), "9000000000");
        assert_eq!(t(1082, &0i32.to_be_bytes()), "2000-01-01");
        assert_eq!(t(1082, &(-5_450i32).to_be_bytes()), "1985-01-29");
        let us: i64 = (31 * 86_400 + 3_600 + 61) * 1_000_000 + 500_000;
        assert_eq!(t(1114, &us.to_be_bytes()), "2000-02-01 01:01:01.5");
        assert_eq!(t(16, &[1]), "t");
        assert_eq!(t(25, "王小明".as_bytes()), "王小明");
    }

    #[test]
    fn numerics() {
        // 1234.5600 : ndigits 2 (1234, 5600), weight 0, sign +, dscale 4
        let mut v = Vec::new();
        for x in [2i16, 0, 0, 4, 1234, 5600] {
            v.extend(x.to_be_bytes());
        }
        assert_eq!(t(1700, &v), "1234.5600");
        // -0.05 : ndigits 1 (500), weight -1, sign -, dscale 2
        let mut v = Vec::new();
        for x in [1i16, -1, 0x4000u16 as i16, 2, 500] {
            v.extend(x.to_be_bytes());
        }
        assert_eq!(t(1700, &v), "-0.05");
    }

    #[test]
    fn text_to_binary_round_trips() {
        for (oid, text) in [
            (23, "-42"),
            (20, "9000000000"),
            (21, "7"),
            (16, "t"),
            (1082, "1985-01-29"),
            (1082, "2000-01-01"),
            (1114, "2000-02-01 01:01:01.5"),
            (1700, "1234.5600"),
            (1700, "-0.05"),
            (1700, "0"),
            (1700, "100000"),
            (25, "王小明"),
        ] {
            let mut bin = Vec::new();
            from_text(oid, text, &mut bin).unwrap_or_else(|e| panic!("{oid} {text}: {e}"));
            assert_eq!(t(oid, &bin), text, "type {oid}");
        }
        let mut bin = Vec::new();
        from_text(1184, "2000-01-01 08:00:00+08", &mut bin).unwrap();
        assert_eq!(t(1184, &bin), "2000-01-01 00:00:00+00");
        assert!(from_text(23, "x", &mut bin).is_err());
        assert!(from_text(1082, "1985-13-01", &mut bin).is_err());
    }

    #[test]
    fn unknown_types_are_refused() {
        let mut s = String::new();
        assert!(to_text(600, &[0; 16], ClientEncoding::Utf8, &mut s).is_err());
        assert!(to_text(23, &[0; 3], ClientEncoding::Utf8, &mut s).is_err());
        assert!(to_text(25, b"\xd6\xd0", ClientEncoding::Utf8, &mut s).is_err());
        s.clear();
        to_text(25, b"\xd6\xd0", ClientEncoding::Gbk, &mut s).unwrap();
        assert_eq!(s, "中");
    }
}
