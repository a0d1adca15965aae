//! Which session owns which cancel key, so that a CancelRequest arriving on a
//! fresh connection reaches the right upstream backend.
use dashmap::DashMap;

use crate::protocol::startup::CancelKey;

/// Cancel keys of live sessions. One upstream today; the value would name the
/// upstream if there were several.
#[derive(Default)]
pub struct CancelRegistry {
    keys: DashMap<CancelKey, ()>,
}

impl CancelRegistry {
    pub fn register(&self, key: CancelKey) {
        self.keys.insert(key, ());
    }

    pub fn unregister(&self, key: &CancelKey) {
        self.keys.remove(key);
    }

    pub fn contains(&self, key: &CancelKey) -> bool {
        self.keys.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
