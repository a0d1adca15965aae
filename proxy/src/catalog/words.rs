//! Words of SQL text as the fast path and the catalog read them: runs of letters, digits, `_`
//! and non-ASCII bytes, lower-cased and cut to PostgreSQL's identifier length. Everything else
//! (quotes, operators, whitespace, and `$`) separates words, so a name inside a string literal,
//! a comment or a dollar-quoted body is a word too, even glued to its closing tag
//! (`customers$q$`). `$` may continue an identifier in PostgreSQL; splitting there only finds
//! more words, never fewer.

/// PostgreSQL truncates identifiers to this many bytes (NAMEDATALEN - 1).
pub const MAX_IDENT: usize = 63;

#[inline]
pub fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The lower-cased words of a text.
pub fn words(text: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.split(|&b| !is_word_byte(b))
        .filter(|w| !w.is_empty())
        .map(|w| w[..w.len().min(MAX_IDENT)].to_ascii_lowercase())
}
