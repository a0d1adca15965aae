//! 32 bytes of key material that are wiped when dropped.
use std::ops::{Deref, DerefMut};

pub(super) struct Secret32(pub(super) [u8; 32]);

impl Deref for Secret32 {
    type Target = [u8; 32];
    fn deref(&self) -> &[u8; 32] {
        &self.0
    }
}

impl DerefMut for Secret32 {
    fn deref_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
}

impl Drop for Secret32 {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}
