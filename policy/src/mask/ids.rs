//! Identifier masks: ID card, bank card, passport, PNR, waybill. All keep the character count.
use super::{generic::redact, push_stars};

/// 18-digit ID (17 digits + digit/X): first 6 (region), last 4. Legacy 15-digit: first 6, last 3.
/// The birth date (digits 7-14) is always hidden.
pub fn cn_id_card(input: &str, out: &mut String) {
    let b = input.as_bytes();
    let ok18 = b.len() == 18
        && b[..17].iter().all(u8::is_ascii_digit)
        && (b[17].is_ascii_digit() || b[17] == b'X' || b[17] == b'x');
    let ok15 = b.len() == 15 && b.iter().all(u8::is_ascii_digit);
    if ok18 {
        out.push_str(&input[..6]);
        push_stars(out, 8);
        out.push_str(&input[14..]);
    } else if ok15 {
        out.push_str(&input[..6]);
        push_stars(out, 6);
        out.push_str(&input[12..]);
    } else {
        redact(input, out);
    }
}

/// 12-19 digits, optionally grouped with spaces or dashes: first 6 and last 4 digits stay.
pub fn bank_card(input: &str, out: &mut String) {
    let b = input.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let shape = !b.is_empty()
        && b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_digit() || *c == b' ' || *c == b'-')
        && (12..=19).contains(&digits);
    if !shape {
        redact(input, out);
        return;
    }
    let mut seen = 0;
    for &c in b {
        if c.is_ascii_digit() {
            if seen < 6 || seen >= digits - 4 {
                out.push(c as char);
            } else {
                out.push(super::STAR);
            }
            seen += 1;
        } else {
            out.push(c as char);
        }
    }
}

/// Passport number (5-12 letters and digits, at least one digit): first 1, last 2.
pub fn passport(input: &str, out: &mut String) {
    let b = input.as_bytes();
    let shape = (5..=12).contains(&b.len())
        && b.iter().all(u8::is_ascii_alphanumeric)
        && b.iter().any(u8::is_ascii_digit);
    if shape {
        out.push_str(&input[..1]);
        push_stars(out, b.len() - 3);
        out.push_str(&input[b.len() - 2..]);
    } else {
        redact(input, out);
    }
}

/// Record locator (5-8 letters and digits): first 2.
pub fn pnr(input: &str, out: &mut String) {
    let b = input.as_bytes();
    if (5..=8).contains(&b.len()) && b.iter().all(u8::is_ascii_alphanumeric) {
        out.push_str(&input[..2]);
        push_stars(out, b.len() - 2);
    } else {
        redact(input, out);
    }
}

/// Waybill / tracking number (8-30 letters, digits or dashes): last 4.
pub fn waybill(input: &str, out: &mut String) {
    let b = input.as_bytes();
    if (8..=30).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        push_stars(out, b.len() - 4);
        out.push_str(&input[b.len() - 4..]);
    } else {
        redact(input, out);
    }
}
