//! The kinds of data a column can hold.
use std::fmt;

/// The kind of data a column holds. It picks the default mask and the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    CnIdCard,
    CnMobile,
    CnName,
    BankCard,
    Email,
    Passport,
    Address,
    Pnr,
    Waybill,
    Date,
    /// Free text or anything without a better kind; masks to `redact`.
    Text,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::CnIdCard,
        Kind::CnMobile,
        Kind::CnName,
        Kind::BankCard,
        Kind::Email,
        Kind::Passport,
        Kind::Address,
        Kind::Pnr,
        Kind::Waybill,
        Kind::Date,
        Kind::Text,
    ];
    pub const NAMES: [&'static str; 11] = [
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
        "text",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }

    /// Whether deterministic encryption (and so equality lookup) makes sense for this kind.
    ///
    /// `date`: a few tens of thousands of possible values, so deterministic ciphertexts are a
    /// dictionary; and dates are searched by range, which equality cannot serve.
    /// `address` and `text`: free text is not looked up by exact equality (spelling and spacing
    /// vary), so determinism would only leak repeated values.
    pub fn supports_lookup(self) -> bool {
        !matches!(self, Kind::Date | Kind::Address | Kind::Text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
