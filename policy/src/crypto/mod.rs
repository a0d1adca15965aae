//! Envelope encryption: AES-256-GCM through `ring`, in randomized and deterministic mode.
//!
//! - Per-domain keys come from HKDF-SHA256(master key of a version, "pgveil", purpose, domain,
//!   version), see [`keys`].
//! - **randomized**: a fresh 96-bit nonce from the system RNG for every value.
//! - **deterministic**: a synthetic nonce = HMAC-SHA256(mac key, domain ‖ 0x00 ‖ plaintext)
//!   truncated to 96 bits, so equal plaintexts in one domain give equal envelopes.
//! - The envelope is text: [`ENVELOPE_PREFIX`] then unpadded standard base64 of
//!   `key version (u32, big-endian) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The 4-byte header is
//!   the AEAD's associated data, so it cannot be altered without detection.
mod audit;
mod envelope;
mod keys;
mod secret;

pub use audit::{AuditRoot, ChainKey, CheckpointKey};
pub use envelope::{
    envelope_key_version, is_envelope, DecryptError, EncryptError, ENVELOPE_PREFIX,
};
pub use keys::{DomainCipher, KeySet, MasterKey, Mode, MASTER_KEY_LEN};
