//! Master keys, key derivation and the per-domain cipher.
use super::envelope::{self, DecryptError, EncryptError, VersionKeys};
use super::secret::Secret32;
use crate::mask::PseudonymKey;
use ring::{aead, hkdf, hmac, rand::SecureRandom};

pub const MASTER_KEY_LEN: usize = 32;
const HKDF_SALT: &[u8] = b"pgveil hkdf salt v1";

/// Encryption mode of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Randomized,
    Deterministic,
}

/// 32 bytes of master key material for one key version. Wiped on drop; never printed.
pub struct MasterKey(Secret32);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        MasterKey(Secret32(bytes))
    }

    /// A fresh key from the system RNG.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut k = [0u8; MASTER_KEY_LEN];
        ring::rand::SystemRandom::new().fill(&mut k)?;
        Ok(MasterKey(Secret32(k)))
    }

    pub fn as_bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// A public identifier of the key: the first 8 bytes of SHA-256("pgveil key fingerprint" ‖
    /// key), as 16 hex digits. It reveals nothing usable about the key.
    pub fn fingerprint(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"pgveil key fingerprint");
        ctx.update(&self.0[..]);
        hex::encode(&ctx.finish().as_ref()[..8])
    }

    /// HKDF-SHA256(salt, master) expanded with info = "pgveil" 0 purpose 0 domain 0 version(BE).
    fn derive(&self, purpose: &str, domain: &str, version: u32) -> [u8; 32] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.0[..]);
        let v = version.to_be_bytes();
        let info: [&[u8]; 7] = [
            b"pgveil",
            b"\0",
            purpose.as_bytes(),
            b"\0",
            domain.as_bytes(),
            b"\0",
            &v,
        ];
        let mut out = [0u8; 32];
        // expand fails only for outputs longer than 255 hash lengths, fill only on a length
        // mismatch: neither can happen for 32 bytes.
        if let Ok(okm) = prk.expand(&info, Len32) {
            let _ = okm.fill(&mut out);
        }
        out
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(fingerprint {})", self.fingerprint())
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The master keys of every version in a keyring, and which version encrypts new values.
#[derive(Debug)]
pub struct KeySet {
    versions: Vec<(u32, MasterKey)>,
    active: u32,
}

impl KeySet {
    /// `active` must be one of the versions; returns `None` otherwise.
    pub fn new(versions: Vec<(u32, MasterKey)>, active: u32) -> Option<Self> {
        versions
            .iter()
            .any(|(v, _)| *v == active)
            .then_some(KeySet { versions, active })
    }

    pub(crate) fn new_unchecked(versions: Vec<(u32, MasterKey)>, active: u32) -> Self {
        KeySet { versions, active }
    }

    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// The cipher for one key domain (e.g. `phone`), with keys for every version.
    pub fn domain(&self, domain: &str) -> DomainCipher {
        let keys = self
            .versions
            .iter()
            .map(|(v, mk)| {
                let enc = mk.derive("aes-256-gcm", domain, *v);
                let mac = mk.derive("siv-hmac-sha256", domain, *v);
                // AES-256 accepts any 32-byte key, so this cannot fail.
                let aead = aead::UnboundKey::new(&aead::AES_256_GCM, &enc)
                    .map(aead::LessSafeKey::new)
                    .ok();
                (*v, aead, hmac::Key::new(hmac::HMAC_SHA256, &mac))
            })
            .filter_map(|(v, a, m)| {
                a.map(|a| VersionKeys {
                    version: v,
                    aead: a,
                    siv: m,
                })
            })
            .collect();
        DomainCipher {
            domain: domain.to_string(),
            active: self.active,
            keys,
        }
    }

    /// The key for `hash` pseudonyms, derived from the **lowest** key version in the keyring.
    ///
    /// Pseudonyms are join keys for analysts, so they must not change when a new version is
    /// added and made active (`keys add-version`, `rekey`). They change only when the lowest
    /// version is retired (`keys retire`), which is a deliberate event: the next-lowest version
    /// then derives them. See docs/encryption.md, "Pseudonym stability".
    pub fn pseudonym_key(&self) -> PseudonymKey {
        match self.versions.iter().min_by_key(|(v, _)| *v) {
            Some((v, k)) => PseudonymKey::new(&k.derive("pseudonym-hmac-sha256", "", *v)),
            // Unreachable: `new` checked that at least the active version exists.
            None => PseudonymKey::new(&[]),
        }
    }

    /// The lowest key version: the one new audit logs derive their keys from.
    pub fn lowest_version(&self) -> Option<u32> {
        self.versions.iter().map(|(v, _)| *v).min()
    }

    /// The secret of the audit log `log_id` (its random id) under key version `version`:
    /// HKDF-SHA256 of that master key with purpose `audit-hmac-sha256` and the log id as domain.
    /// `None` if the keyring lacks the version.
    pub fn audit_root(&self, version: u32, log_id: &str) -> Option<super::AuditRoot> {
        self.versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(v, k)| super::AuditRoot::new(k.derive("audit-hmac-sha256", log_id, *v)))
    }

    /// The versions this key set holds, in keyring order.
    pub fn versions(&self) -> Vec<u32> {
        self.versions.iter().map(|(v, _)| *v).collect()
    }
}

/// Encrypts and decrypts the values of one key domain. Cheap to share (`&self` everywhere).
pub struct DomainCipher {
    domain: String,
    active: u32,
    keys: Vec<VersionKeys>,
}

impl std::fmt::Debug for DomainCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainCipher")
            .field("domain", &self.domain)
            .field("active", &self.active)
            .finish()
    }
}

impl DomainCipher {
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The keys new values are encrypted with.
    fn active_keys(&self) -> Result<&VersionKeys, EncryptError> {
        self.keys_for(self.active).ok_or(EncryptError::NoActiveKey)
    }

    fn keys_for(&self, version: u32) -> Option<&VersionKeys> {
        self.keys.iter().find(|k| k.version == version)
    }

    /// The 96-bit synthetic nonce of deterministic mode.
    fn synthetic_nonce(&self, k: &VersionKeys, plaintext: &[u8]) -> [u8; 12] {
        let mut ctx = hmac::Context::with_key(&k.siv);
        ctx.update(self.domain.as_bytes());
        ctx.update(b"\0");
        ctx.update(plaintext);
        let tag = ctx.sign();
        let mut n = [0u8; 12];
        n.copy_from_slice(&tag.as_ref()[..12]);
        n
    }

    /// Encrypts with the active version, appending the envelope to `out`. `scratch` is a reusable
    /// buffer; after warm-up neither buffer reallocates.
    pub fn encrypt_into(
        &self,
        mode: Mode,
        plaintext: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut String,
    ) -> Result<(), EncryptError> {
        let k = self.active_keys()?;
        let nonce = match mode {
            Mode::Deterministic => self.synthetic_nonce(k, plaintext),
            Mode::Randomized => {
                let mut n = [0u8; 12];
                ring::rand::SystemRandom::new()
                    .fill(&mut n)
                    .map_err(|_| EncryptError::Rng)?;
                n
            }
        };
        envelope::seal(k, nonce, plaintext, scratch, out)
    }

    /// Encrypts with an explicit nonce. Only for known-answer tests: reusing a nonce with
    /// different plaintexts destroys confidentiality.
    #[doc(hidden)]
    pub fn encrypt_with_nonce_for_tests(
        &self,
        nonce: [u8; 12],
        plaintext: &[u8],
    ) -> Result<String, EncryptError> {
        let (mut scratch, mut out) = (Vec::new(), String::new());
        self.encrypt_randomized_with(nonce, plaintext, &mut scratch, &mut out)?;
        Ok(out)
    }

    /// Convenience wrapper around [`DomainCipher::encrypt_into`].
    pub fn encrypt(&self, mode: Mode, plaintext: &[u8]) -> Result<String, EncryptError> {
        let (mut scratch, mut out) = (Vec::new(), String::new());
        self.encrypt_into(mode, plaintext, &mut scratch, &mut out)?;
        Ok(out)
    }

    /// Decrypts an envelope; `out` is cleared and then holds the plaintext.
    pub fn decrypt_into(&self, envelope: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        envelope::open(|v| self.keys_for(v), envelope, out)
    }

    /// Encrypts in randomized mode with the active version, using `nonce`, which the caller
    /// draws from a cryptographically secure generator (never a counter, never reused): a
    /// session can keep a seeded CSPRNG instead of asking the system for 12 bytes per value.
    pub fn encrypt_randomized_with(
        &self,
        nonce: [u8; 12],
        plaintext: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut String,
    ) -> Result<(), EncryptError> {
        envelope::seal(self.active_keys()?, nonce, plaintext, scratch, out)
    }

    /// The key versions this cipher holds, the active one first.
    pub fn versions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.keys.iter().map(|k| k.version).collect();
        v.sort_by_key(|x| (*x != self.active, std::cmp::Reverse(*x)));
        v
    }

    /// The deterministic envelope of `plaintext` under key `version` (appended to `out`): what
    /// a value written while that version was active looks like, so an equality lookup can
    /// match values not yet re-encrypted to the active version.
    pub fn encrypt_deterministic_as(
        &self,
        version: u32,
        plaintext: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut String,
    ) -> Result<(), EncryptError> {
        let k = self.keys_for(version).ok_or(EncryptError::NoActiveKey)?;
        let nonce = self.synthetic_nonce(k, plaintext);
        envelope::seal(k, nonce, plaintext, scratch, out)
    }

    /// Convenience wrapper around [`DomainCipher::decrypt_into`].
    pub fn decrypt(&self, envelope: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let mut out = Vec::new();
        self.decrypt_into(envelope, &mut out)?;
        Ok(out)
    }
}
