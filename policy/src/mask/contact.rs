//! Contact masks: Chinese mobile number and e-mail address.
use super::{generic::redact, push_stars, FULL_REDACTION};

/// `13812345678` -> `138****5678`. An optional `+86`, `0086` or `86` prefix (with an optional space
/// or dash after it) is kept.
pub fn cn_mobile(input: &str, out: &mut String) {
    let (prefix, rest) = split_country_code(input);
    let b = rest.as_bytes();
    let shape = b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit);
    if shape {
        out.push_str(prefix);
        out.push_str(&rest[..3]);
        push_stars(out, 4);
        out.push_str(&rest[7..]);
    } else {
        redact(input, out);
    }
}

fn split_country_code(s: &str) -> (&str, &str) {
    for p in ["+86", "0086"] {
        if let Some(rest) = s.strip_prefix(p) {
            let rest = rest.strip_prefix([' ', '-']).unwrap_or(rest);
            return s.split_at(s.len() - rest.len());
        }
    }
    // A bare "86" prefix only when what follows is a full 11-digit number.
    if s.len() == 13 && s.starts_with("86") {
        return s.split_at(2);
    }
    ("", s)
}

/// `zhangsan@example.com` -> `z***@example.com`: first character of the local part, fixed `***`.
pub fn email(input: &str, out: &mut String) {
    let Some(at) = input.rfind('@') else {
        out.push_str(FULL_REDACTION);
        return;
    };
    let (local, domain) = (&input[..at], &input[at + 1..]);
    let shape = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !input.chars().any(char::is_whitespace);
    match local.chars().next() {
        Some(c) if shape => {
            out.push(c);
            out.push_str("***@");
            out.push_str(domain);
        }
        _ => out.push_str(FULL_REDACTION),
    }
}
