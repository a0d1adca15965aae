//! Detectors: checksum and shape tests that recognise sensitive values.
//!
//! They power `pgveil scan` (proposing a classification for unclassified columns) and let the
//! example data generators prove that their values are realistic. The `make_*` helpers build
//! valid values from a payload by computing the check character.
mod checksums;

pub use checksums::*;

use crate::model::Kind;

/// The kind a single value most likely is, if any detector recognises it.
///
/// Checksummed formats are tried first; a value passing a checksum is strong evidence.
pub fn detect(value: &str) -> Option<Kind> {
    let v = value.trim();
    if cn_id_card_valid(v) {
        return Some(Kind::CnIdCard);
    }
    if upu_s10_valid(v) {
        return Some(Kind::Waybill);
    }
    if cn_mobile_shape(v) {
        return Some(Kind::CnMobile);
    }
    let digits: String = v.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if (13..=19).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && luhn_valid(&digits)
    {
        return Some(Kind::BankCard);
    }
    if cn_passport_shape(v) {
        return Some(Kind::Passport);
    }
    if email_shape(v) {
        return Some(Kind::Email);
    }
    None
}

/// A rough e-mail shape: `local@domain.tld`, no spaces.
pub fn email_shape(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((l, d)) => {
            !l.is_empty()
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}
