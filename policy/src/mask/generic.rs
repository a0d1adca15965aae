//! Generic masks: `keep(n,m)`, `redact`, and the keyed `hash` pseudonym.
use super::push_stars;
use ring::hmac;

/// Keeps the first `first` and last `last` characters. A value too short to hide anything that
/// way is redacted entirely, so the mask never returns its input unchanged.
pub fn keep(input: &str, first: usize, last: usize, out: &mut String) {
    let n = input.chars().count();
    if n <= first + last {
        push_stars(out, n);
        return;
    }
    for (i, c) in input.chars().enumerate() {
        if i < first || i >= n - last {
            out.push(c);
        } else {
            out.push(super::STAR);
        }
    }
}

/// Every character becomes `*`.
pub fn redact(input: &str, out: &mut String) {
    push_stars(out, input.chars().count());
}

/// The key for `hash` pseudonyms. Derive it from the keyring so that pseudonyms are stable
/// across restarts and instances (see `crypto::KeySet::pseudonym_key`).
#[derive(Clone)]
pub struct PseudonymKey(hmac::Key);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

impl PseudonymKey {
    pub fn new(key_bytes: &[u8]) -> Self {
        PseudonymKey(hmac::Key::new(hmac::HMAC_SHA256, key_bytes))
    }

    /// HMAC-SHA256(key, value), first 8 bytes, as 16 lowercase hex digits.
    pub fn pseudonym(&self, value: &[u8], out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.0, value);
        for b in &tag.as_ref()[..8] {
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}
