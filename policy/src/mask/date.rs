//! Dates: year only.
use super::FULL_REDACTION;

/// `1990-03-05`, `1990/3/5`, `1990.03.05`, `19900305`, `1990年3月5日`, optionally followed by a
/// time (`T...` or ` ...`), become `1990`. Anything else becomes `****`.
pub fn year_only(input: &str, out: &mut String) {
    match parse_year(input) {
        Some(year) => out.push_str(year),
        None => out.push_str(FULL_REDACTION),
    }
}

fn parse_year(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year = &s[..4];
    // Compact YYYYMMDD, optionally followed by a time.
    if b[4..8].iter().all(u8::is_ascii_digit) {
        let rest = &s[8..];
        let ok = valid_md(&s[4..6], &s[6..8]) && (rest.is_empty() || rest.starts_with(['T', ' ']));
        return ok.then_some(year);
    }
    let rest = &s[4..];
    let (sep_len, rest) = if let Some(r) = rest.strip_prefix(['-', '/', '.']) {
        (1, r)
    } else if let Some(r) = rest.strip_prefix('年') {
        (3, r)
    } else {
        return None;
    };
    let _ = sep_len;
    let (month, rest) = take_digits(rest)?;
    let rest = rest.strip_prefix(['-', '/', '.', '月'])?;
    let (day, rest) = take_digits(rest)?;
    let rest = rest.strip_prefix('日').unwrap_or(rest);
    let ok = valid_md(month, day) && (rest.is_empty() || rest.starts_with(['T', ' ']));
    ok.then_some(year)
}

fn take_digits(s: &str) -> Option<(&str, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (1..=2).contains(&n).then(|| s.split_at(n))
}

fn valid_md(m: &str, d: &str) -> bool {
    let (Ok(m), Ok(d)) = (m.parse::<u8>(), d.parse::<u8>()) else {
        return false;
    };
    (1..=12).contains(&m) && (1..=31).contains(&d)
}
