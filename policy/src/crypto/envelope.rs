//! The text envelope: `pgv1:` + base64(version ‖ nonce ‖ ciphertext ‖ tag).
use base64_simd::STANDARD_NO_PAD;
use ring::{aead, hmac};

/// The keys of one key version of a domain: the AEAD key, and the key of the synthetic IV of
/// deterministic encryption.
pub(super) struct VersionKeys {
    pub(super) version: u32,
    pub(super) aead: aead::LessSafeKey,
    pub(super) siv: hmac::Key,
}

/// Every envelope starts with this. Plaintext that starts with it must be refused on write, so
/// that "already encrypted?" stays decidable.
pub const ENVELOPE_PREFIX: &str = "pgv1:";
const HEADER: usize = 4;
const NONCE: usize = 12;
const TAG: usize = 16;
const MIN_RAW: usize = HEADER + NONCE + TAG;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("value is not a pgveil envelope")]
    NotAnEnvelope,
    #[error("envelope was encrypted with key version {0}, which is not in the keyring")]
    UnknownKeyVersion(u32),
    #[error("envelope failed authentication: it was altered, or the keyring holds a different key for its version")]
    AuthenticationFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    #[error("the keyring has no key for its active version")]
    NoActiveKey,
    #[error("the system random number generator failed")]
    Rng,
    #[error("plaintext is too long to encrypt")]
    TooLong,
}

/// Whether `s` is a well-formed envelope (prefix and a decodable body of plausible length).
/// It does not authenticate it.
pub fn is_envelope(s: &[u8]) -> bool {
    envelope_key_version(s).is_ok()
}

/// The key version an envelope was written with, without decrypting it.
pub fn envelope_key_version(s: &[u8]) -> Result<u32, DecryptError> {
    let body = s
        .strip_prefix(ENVELOPE_PREFIX.as_bytes())
        .ok_or(DecryptError::NotAnEnvelope)?;
    // The first 6 base64 characters carry the 4-byte version.
    if body.len() < base64_len(MIN_RAW) {
        return Err(DecryptError::NotAnEnvelope);
    }
    let mut head = [0u8; 6];
    STANDARD_NO_PAD
        .decode(&body[..8], base64_simd::Out::from_slice(&mut head))
        .map_err(|_| DecryptError::NotAnEnvelope)?;
    // Validate the whole body's alphabet and length cheaply.
    if !body
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        || body.len() % 4 == 1
    {
        return Err(DecryptError::NotAnEnvelope);
    }
    Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

fn base64_len(raw: usize) -> usize {
    (raw * 4).div_ceil(3)
}

pub(super) fn seal(
    k: &VersionKeys,
    nonce: [u8; 12],
    plaintext: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut String,
) -> Result<(), EncryptError> {
    if plaintext.len() > (1 << 30) {
        return Err(EncryptError::TooLong);
    }
    scratch.clear();
    scratch.extend_from_slice(&k.version.to_be_bytes());
    scratch.extend_from_slice(&nonce);
    scratch.extend_from_slice(plaintext);
    let (head, body) = scratch.split_at_mut(HEADER + NONCE);
    let aad = aead::Aad::from(<[u8; 4]>::try_from(&head[..HEADER]).unwrap_or_default());
    let tag = k
        .aead
        .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(nonce), aad, body)
        .map_err(|_| EncryptError::TooLong)?;
    scratch.extend_from_slice(tag.as_ref());
    out.push_str(ENVELOPE_PREFIX);
    STANDARD_NO_PAD.encode_append(&scratch[..], out);
    Ok(())
}

pub(super) fn open<'k>(
    keys_for: impl Fn(u32) -> Option<&'k VersionKeys>,
    envelope: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DecryptError> {
    let body = envelope
        .strip_prefix(ENVELOPE_PREFIX.as_bytes())
        .ok_or(DecryptError::NotAnEnvelope)?;
    // Decode into `out`, reusing its capacity.
    out.clear();
    if STANDARD_NO_PAD.decode_append(body, out).is_err() {
        out.clear();
        return Err(DecryptError::NotAnEnvelope);
    }
    if out.len() < MIN_RAW {
        out.clear();
        return Err(DecryptError::NotAnEnvelope);
    }
    let version = u32::from_be_bytes([out[0], out[1], out[2], out[3]]);
    let Some(k) = keys_for(version) else {
        out.clear();
        return Err(DecryptError::UnknownKeyVersion(version));
    };
    let mut nonce = [0u8; NONCE];
    nonce.copy_from_slice(&out[HEADER..HEADER + NONCE]);
    let aad = aead::Aad::from([out[0], out[1], out[2], out[3]]);
    let len = match k.aead.open_in_place(
        aead::Nonce::assume_unique_for_key(nonce),
        aad,
        &mut out[HEADER + NONCE..],
    ) {
        Ok(pt) => pt.len(),
        Err(_) => {
            out.clear();
            return Err(DecryptError::AuthenticationFailed);
        }
    };
    out.copy_within(HEADER + NONCE..HEADER + NONCE + len, 0);
    out.truncate(len);
    Ok(())
}
