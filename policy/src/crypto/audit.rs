//! Keys of the audit trail's integrity chain (see docs/operations.md, "Audit").
//!
//! - [`AuditRoot`]: HKDF from one master key version and the log's random id. It yields the first
//!   chain key and the checkpoint key, and should be dropped once both are taken.
//! - [`ChainKey`]: `tag_n = HMAC-SHA256(k_n, prev_tag ‖ body)`, then
//!   `k_{n+1} = SHA-256("pgveil audit ratchet" ‖ k_n)`; the old key is overwritten.
//! - [`CheckpointKey`]: a non-ratcheted HMAC key, so any checkpoint can be checked alone.
use super::secret::Secret32;
use ring::{digest, hmac};

const RATCHET_LABEL: &[u8] = b"pgveil audit ratchet";

/// Secret material of one audit log. Wiped on drop; never printed.
pub struct AuditRoot(Secret32);

impl AuditRoot {
    pub(super) fn new(bytes: [u8; 32]) -> Self {
        AuditRoot(Secret32(bytes))
    }

    fn sub(&self, label: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let tag = hmac::sign(&key, label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// `k_1`, the key of the record with sequence number 1.
    pub fn first_chain_key(&self) -> ChainKey {
        ChainKey(Secret32(self.sub(b"chain")))
    }

    /// The key of the record with sequence number `seq` (`seq - 1` ratchet steps from `k_1`).
    pub fn chain_key_at(&self, seq: u64) -> ChainKey {
        let mut k = self.first_chain_key();
        for _ in 1..seq.max(1) {
            k.ratchet();
        }
        k
    }

    pub fn checkpoint_key(&self) -> CheckpointKey {
        let k = self.sub(b"checkpoint");
        CheckpointKey(hmac::Key::new(hmac::HMAC_SHA256, &k))
    }
}

impl std::fmt::Debug for AuditRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditRoot(..)")
    }
}

/// The current key of the chain. Wiped on drop and on every ratchet step.
pub struct ChainKey(Secret32);

impl ChainKey {
    /// `HMAC-SHA256(k, prev ‖ body)`.
    pub fn tag(&self, prev: &[u8], body: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(prev);
        ctx.update(body);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Constant-time check of a tag.
    pub fn verify(&self, prev: &[u8], body: &[u8], tag: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut msg = Vec::with_capacity(prev.len() + body.len());
        msg.extend_from_slice(prev);
        msg.extend_from_slice(body);
        hmac::verify(&key, &msg, tag).is_ok()
    }

    /// `k ← SHA-256("pgveil audit ratchet" ‖ k)`, overwriting the old key.
    pub fn ratchet(&mut self) {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(RATCHET_LABEL);
        ctx.update(&self.0[..]);
        let next = ctx.finish();
        self.0.copy_from_slice(next.as_ref());
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// Signs checkpoints; not ratcheted.
pub struct CheckpointKey(hmac::Key);

impl CheckpointKey {
    pub fn sign(&self, msg: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, msg).as_ref());
        out
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        hmac::verify(&self.0, msg, sig).is_ok()
    }
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratchet_changes_key_and_key_at_matches() {
        let root = AuditRoot::new([7; 32]);
        let mut k = root.first_chain_key();
        let t1 = k.tag(b"", b"x");
        k.ratchet();
        let t2 = k.tag(b"", b"x");
        assert_ne!(t1, t2);
        assert_eq!(root.chain_key_at(2).tag(b"", b"x"), t2);
        assert!(root.chain_key_at(2).verify(b"", b"x", &t2));
        assert!(!root.chain_key_at(3).verify(b"", b"x", &t2));
        let c = root.checkpoint_key();
        assert!(c.verify(b"m", &c.sign(b"m")));
    }
}
