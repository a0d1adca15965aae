//! The masking library.
//!
//! Every mask writes into a caller-provided `String`, so the per-value path does not allocate
//! once the buffer has grown. All masks are deterministic and never add noise. A value that does
//! not have the shape a mask expects is fully redacted, never passed through.
mod address;
mod contact;
mod date;
mod expr;
mod generic;
mod ids;
mod name;

pub use expr::{mask_names, MaskParseError};
pub use generic::PseudonymKey;

use crate::kind::Kind;
use std::fmt;

/// A ready-to-run masking function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mask {
    /// First 6 and last 4 of an 18-digit ID (last 3 of a legacy 15-digit one).
    CnIdCard,
    /// `138****5678`.
    CnMobile,
    /// Surname + `**` (compound surnames such as 欧阳 are kept whole).
    CnName,
    /// First 6 and last 4 digits; separators are kept.
    BankCard,
    /// `z***@example.com`.
    Email,
    /// First 1 and last 2.
    Passport,
    /// Cut to the district (区/县/旗, or a county-level 市), then `****`.
    Address,
    /// First 2 of a record locator.
    Pnr,
    /// Last 4.
    Waybill,
    /// Year only.
    Date,
    /// Keep the first `first` and last `last` characters, `*` in between.
    Keep { first: u16, last: u16 },
    /// Every character becomes `*`.
    Redact,
    /// A fixed value.
    Constant(String),
    /// Keyed HMAC-SHA256, truncated to 64 bits, as 16 hex digits: stable, so it joins.
    Hash,
}

/// The star used by every mask.
pub const STAR: char = '*';
/// The fixed replacement used when a non-length-preserving mask meets a value of the wrong shape.
pub const FULL_REDACTION: &str = "****";

impl Mask {
    /// The default mask for a kind.
    pub fn default_for(kind: Kind) -> Mask {
        match kind {
            Kind::CnIdCard => Mask::CnIdCard,
            Kind::CnMobile => Mask::CnMobile,
            Kind::CnName => Mask::CnName,
            Kind::BankCard => Mask::BankCard,
            Kind::Email => Mask::Email,
            Kind::Passport => Mask::Passport,
            Kind::Address => Mask::Address,
            Kind::Pnr => Mask::Pnr,
            Kind::Waybill => Mask::Waybill,
            Kind::Date => Mask::Date,
            Kind::Text => Mask::Redact,
        }
    }

    /// Parses a mask expression: a kind name, `keep(n,m)`, `redact`, `constant(v)` or `hash`.
    pub fn parse(expr: &str) -> Result<Mask, MaskParseError> {
        expr::parse(expr)
    }

    /// Whether the output always has the same number of characters as the input.
    pub fn preserves_length(&self) -> bool {
        matches!(
            self,
            Mask::CnIdCard
                | Mask::CnMobile
                | Mask::BankCard
                | Mask::Passport
                | Mask::Pnr
                | Mask::Waybill
                | Mask::Keep { .. }
                | Mask::Redact
        )
    }

    /// Masks `input`, appending the result to `out` (which is not cleared).
    ///
    /// `key` is used only by [`Mask::Hash`].
    pub fn apply(&self, input: &str, key: &PseudonymKey, out: &mut String) {
        match self {
            Mask::CnIdCard => ids::cn_id_card(input, out),
            Mask::CnMobile => contact::cn_mobile(input, out),
            Mask::CnName => name::cn_name(input, out),
            Mask::BankCard => ids::bank_card(input, out),
            Mask::Email => contact::email(input, out),
            Mask::Passport => ids::passport(input, out),
            Mask::Address => address::address(input, out),
            Mask::Pnr => ids::pnr(input, out),
            Mask::Waybill => ids::waybill(input, out),
            Mask::Date => date::year_only(input, out),
            Mask::Keep { first, last } => {
                generic::keep(input, *first as usize, *last as usize, out)
            }
            Mask::Redact => generic::redact(input, out),
            Mask::Constant(v) => out.push_str(v),
            Mask::Hash => key.pseudonym(input.as_bytes(), out),
        }
    }

    /// Convenience for tests and tools: masks into a new string.
    pub fn apply_to_string(&self, input: &str, key: &PseudonymKey) -> String {
        let mut s = String::with_capacity(input.len() + 8);
        self.apply(input, key, &mut s);
        s
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Keep { first, last } => write!(f, "keep({first},{last})"),
            Mask::Constant(v) => write!(f, "constant({v:?})"),
            Mask::Redact => f.write_str("redact"),
            Mask::Hash => f.write_str("hash"),
            Mask::CnIdCard => f.write_str("cn_id_card"),
            Mask::CnMobile => f.write_str("cn_mobile"),
            Mask::CnName => f.write_str("cn_name"),
            Mask::BankCard => f.write_str("bank_card"),
            Mask::Email => f.write_str("email"),
            Mask::Passport => f.write_str("passport"),
            Mask::Address => f.write_str("address"),
            Mask::Pnr => f.write_str("pnr"),
            Mask::Waybill => f.write_str("waybill"),
            Mask::Date => f.write_str("date"),
        }
    }
}

pub(crate) fn push_stars(out: &mut String, n: usize) {
    // STAR is ASCII: whole runs are copied, not pushed a char at a time.
    const RUN: &str = "****************";
    let mut left = n;
    while left > 0 {
        let k = left.min(RUN.len());
        out.push_str(&RUN[..k]);
        left -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_stars_writes_exactly_n_stars() {
        for n in 0..40 {
            let mut s = String::from("x");
            push_stars(&mut s, n);
            assert_eq!(s, format!("x{}", STAR.to_string().repeat(n)), "n = {n}");
        }
    }
}
