//! The counters of transformed values, `sensitive_values_total{level,action}` and
//! `sensitive_values_by_role_total{role,action}`, looked up by label once per (level, action)
//! for one policy version and role set, instead of at every flush.
use std::sync::Arc;

use prometheus::IntCounter;

use super::enforcement::EnforcementMetrics;

/// A (level index, action name) pair.
pub type ValueKey = (usize, &'static str);

#[derive(Default)]
pub struct ValueCounters {
    /// The policy version the level indexes belong to.
    version: Option<u64>,
    roles: Arc<Vec<String>>,
    by_key: Vec<(ValueKey, IntCounter, Vec<IntCounter>)>,
    decrypted: Option<IntCounter>,
}

impl ValueCounters {
    /// Keep the looked-up counters while the policy version and role set stay the same.
    pub fn use_for(&mut self, version: u64, roles: &Arc<Vec<String>>) {
        let same = self.version == Some(version)
            && (Arc::ptr_eq(&self.roles, roles) || self.roles == *roles);
        if !same {
            *self = ValueCounters {
                version: Some(version),
                roles: roles.clone(),
                by_key: Vec::new(),
                decrypted: self.decrypted.take(),
            };
        }
    }

    /// The counters of `key`; `level_name` names the level the first time it is seen.
    pub fn get(
        &mut self,
        m: &EnforcementMetrics,
        key: ValueKey,
        level_name: impl FnOnce() -> String,
    ) -> (&IntCounter, &[IntCounter]) {
        let i = match self.by_key.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                let (_, action) = key;
                let level = level_name();
                let values = m.sensitive_values.with_label_values(&[&level, action]);
                let by_role = if self.roles.is_empty() {
                    vec![m.sensitive_by_role.with_label_values(&["none", action])]
                } else {
                    self.roles
                        .iter()
                        .map(|r| m.sensitive_by_role.with_label_values(&[r, action]))
                        .collect()
                };
                self.by_key.push((key, values, by_role));
                self.by_key.len() - 1
            }
        };
        let (_, values, by_role) = &self.by_key[i];
        (values, by_role)
    }

    /// `crypto_operations_total{op="decrypt"}`.
    pub fn decrypted(&mut self, m: &EnforcementMetrics) -> &IntCounter {
        self.decrypted
            .get_or_insert_with(|| m.crypto.with_label_values(&["decrypt"]))
    }
}
