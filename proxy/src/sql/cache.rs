//! The parse cache: analyses keyed by (SQL text, policy version, catalog generation, role
//! set), bounded, shared by all sessions.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dashmap::DashMap;
use pgveil_policy::RoleSet;

use super::analyze::Analysis;
use super::refusal::Refusal;

pub type Cached = Arc<Result<Analysis, Refusal>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    sql: Box<str>,
    generation: u64,
    roles: RoleSet,
}

/// A bounded map; when full, an arbitrary eighth of it is dropped (cheap, and statements an
/// application uses come straight back).
pub struct ParseCache {
    map: DashMap<Key, Cached>,
    capacity: usize,
}

impl ParseCache {
    pub fn new(capacity: usize) -> ParseCache {
        ParseCache {
            map: DashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// `generation` must change whenever the policy or the catalog snapshot does.
    pub fn get(&self, sql: &str, generation: u64, roles: &RoleSet) -> Option<Cached> {
        let key = Key {
            sql: sql.into(),
            generation,
            roles: roles.clone(),
        };
        self.map.get(&key).map(|v| v.clone())
    }

    pub fn insert(&self, sql: &str, generation: u64, roles: &RoleSet, value: Cached) {
        if self.map.len() >= self.capacity {
            let drop_n = (self.capacity / 8).max(1);
            let victims: Vec<Key> = self
                .map
                .iter()
                .take(drop_n)
                .map(|e| e.key().clone())
                .collect();
            for k in victims {
                self.map.remove(&k);
            }
        }
        self.map.insert(
            Key {
                sql: sql.into(),
                generation,
                roles: roles.clone(),
            },
            value,
        );
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A stable hash of a text (for logs: never the text itself).
pub fn fingerprint(sql: &str) -> u64 {
    let mut h = DefaultHasher::new();
    sql.hash(&mut h);
    h.finish()
}
