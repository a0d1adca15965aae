//! Binary-format values of the types a masked column may have, turned into their text form
//! (masks work on text). Types without a decoder here are refused with a clear error.
use std::fmt::Write;

/// Type OIDs whose binary format is the text itself.
const TEXTUAL: &[u32] = &[25, 1043, 1042, 19, 114, 705];

pub fn is_textual(oid: u32) -> bool {
    TEXTUAL.contains(&oid)
}

/// Append the text form of a binary value of type `oid` to `out`.
pub fn to_text(oid: u32, v: &[u8], out: &mut String) -> Result<(), String> {
    let bad = || format!("malformed binary value of type {oid}");
    match oid {
        _ if is_textual(oid) => out.push_str(&String::from_utf8_lossy(v)),
        // jsonb: a version byte, then the text
        3802 => out.push_str(&String::from_utf8_lossy(v.get(1..).ok_or_else(bad)?)),
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
        to_text(oid, v, &mut s).unwrap();
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
    fn unknown_types_are_refused() {
        let mut s = String::new();
        assert!(to_text(600, &[0; 16], &mut s).is_err());
        assert!(to_text(23, &[0; 3], &mut s).is_err());
    }
}
