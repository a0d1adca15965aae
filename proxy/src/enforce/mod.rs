//! Policy enforcement on the wire. What every session shares is [`Enforcement`] (the policy
//! and keys in force, the catalog cache, the parse cache, anomaly windows). Per session:
//!
//! - [`enforcer`]: judges a SQL text (pass, transform, refuse); [`plan`] turns an analysis
//!   into row plans, values to encrypt and audit facts;
//! - [`frontend`]: the client direction's decisions for Query, Parse, Bind, COPY FROM STDIN
//!   ([`write`], [`copy_in`], [`statements`]);
//! - [`describe`], [`results`]: RowDescription checked and rewritten, DataRow and COPY TO
//!   STDOUT rows transformed ([`rows`], [`copy`], [`binary`]); [`book`]: the statements and
//!   portals the server confirmed;
//! - [`notices`]: error and notice texts that can quote stored values, withheld;
//! - [`anomaly`]: the policy's anomaly windows and the gate that refuses over them;
//!   [`delivery`]: rows counted as they leave, stopped where a limit has no room.
//!
//! Imports run one way: `session → enforce → (sql, catalog, audit, policy)`.
pub mod anomaly;
pub mod array_param;
pub mod binary;
pub mod book;
pub mod copy;
pub mod copy_in;
pub mod delivery;
pub mod describe;
pub mod enforcer;
pub mod frontend;
pub mod notices;
pub mod plan;
pub mod portals;
pub mod reading;
pub mod results;
pub mod rows;
pub mod statements;
pub mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use pgveil_policy::crypto::{DomainCipher, KeySet};
use pgveil_policy::keyring::Keyring;
use pgveil_policy::mask::PseudonymKey;
use pgveil_policy::model::EncryptMode;
use pgveil_policy::CompiledPolicy;

use crate::catalog::CatalogSource;
use crate::metrics::Metrics;
use crate::sql::ParseCache;

/// A policy with the keys it needs, ready to enforce. Replaced whole on reload.
pub struct PolicyState {
    pub policy: Arc<CompiledPolicy>,
    pub keys: KeySet,
    pub pseudonym: PseudonymKey,
    /// One cipher per key domain of an encrypted column.
    pub ciphers: HashMap<String, Arc<DomainCipher>>,
}

impl PolicyState {
    pub fn new(policy: Arc<CompiledPolicy>, keys: KeySet) -> PolicyState {
        let mut ciphers = HashMap::new();
        for c in &policy.policy().columns {
            if c.encrypt != EncryptMode::None && !ciphers.contains_key(&c.domain) {
                ciphers.insert(c.domain.clone(), Arc::new(keys.domain(&c.domain)));
            }
        }
        PolicyState {
            pseudonym: keys.pseudonym_key(),
            policy,
            keys,
            ciphers,
        }
    }

    /// Load and check a policy file and a keyring file; errors are one line each.
    pub fn load(policy: &Path, keyring: &Path) -> Result<PolicyState, String> {
        let compiled = CompiledPolicy::from_path(policy).map_err(|d| {
            let text = d.to_string();
            let n = text.lines().count();
            let first = text.lines().next().unwrap_or("invalid policy").to_string();
            if n > 1 {
                format!("{first} (and {} more; run `pgveil policy check`)", n - 1)
            } else {
                first
            }
        })?;
        let keyring = Keyring::load(keyring).map_err(|e| e.to_string())?;
        Ok(PolicyState::new(compiled, keyring.into_key_set()))
    }
}

/// Where the policy and keyring come from, for reloads.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    pub policy: PathBuf,
    pub keyring: PathBuf,
}

/// What every enforcing session shares.
pub struct Enforcement {
    state: RwLock<Arc<PolicyState>>,
    /// Bumped on every reload, so sessions can keep the state they hold.
    policy_epoch: std::sync::atomic::AtomicU64,
    pub files: PolicyFiles,
    pub catalog: crate::catalog::Catalog<crate::sql::Scanner>,
    pub cache: ParseCache,
    pub metrics: Arc<Metrics>,
    /// Sliding windows of the policy's anomaly limits, per login.
    pub anomaly: anomaly::Windows,
    /// The policy in force has `anomaly:` rules (kept with the state, read per statement).
    anomaly_rules: std::sync::atomic::AtomicBool,
}

impl Enforcement {
    pub fn new(
        state: PolicyState,
        files: PolicyFiles,
        source: CatalogSource,
        refresh: std::time::Duration,
        cache_size: usize,
        metrics: Arc<Metrics>,
    ) -> Enforcement {
        metrics
            .enforcement
            .policy_info
            .with_label_values(&[state.policy.version()])
            .set(1);
        zero_series(&metrics, &state.policy);
        let anomaly_rules = !state.policy.policy().anomaly.is_empty();
        Enforcement {
            state: RwLock::new(Arc::new(state)),
            policy_epoch: std::sync::atomic::AtomicU64::new(1),
            files,
            catalog: crate::catalog::Catalog::new(source, refresh),
            cache: ParseCache::new(cache_size),
            metrics,
            anomaly: anomaly::Windows::default(),
            anomaly_rules: std::sync::atomic::AtomicBool::new(anomaly_rules),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<PolicyState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the policy in force has anomaly limits.
    pub fn has_anomaly_rules(&self) -> bool {
        self.anomaly_rules
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Changes with every reload.
    pub fn policy_epoch(&self) -> u64 {
        self.policy_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Load the policy and keyring files again. An invalid one is rejected and the one in
    /// force stays; sessions pick up a new one at their next statement.
    pub fn reload(&self) -> Result<(), String> {
        let m = &self.metrics.enforcement;
        match PolicyState::load(&self.files.policy, &self.files.keyring) {
            Ok(new) => {
                let old = self.current();
                if old.policy.version() != new.policy.version() {
                    m.policy_info.reset();
                    m.policy_info
                        .with_label_values(&[new.policy.version()])
                        .set(1);
                }
                zero_series(&self.metrics, &new.policy);
                let version = new.policy.version().to_string();
                self.anomaly_rules.store(
                    !new.policy.policy().anomaly.is_empty(),
                    std::sync::atomic::Ordering::Release,
                );
                *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                self.policy_epoch
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                m.policy_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(version, "policy reloaded");
                Ok(())
            }
            Err(e) => {
                m.policy_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "policy reload failed; the previous policy stays in force");
                Err(e)
            }
        }
    }
}

/// Create the series a policy's counters can take at 0 (levels, actions, policy roles, anomaly
/// rules: all bounded by the policy file), so dashboards and alert rules see their first event.
fn zero_series(metrics: &Metrics, policy: &CompiledPolicy) {
    let m = &metrics.enforcement;
    let p = policy.policy();
    let actions = ["allow", "mask", "hash", "null"];
    for level in &p.levels {
        m.denied.with_label_values(&[level]);
        for a in actions {
            m.sensitive_values.with_label_values(&[level, a]);
            m.decisions.with_label_values(&[a, level]);
        }
    }
    m.denied.with_label_values(&["none"]);
    for role in &p.roles {
        for a in actions {
            m.sensitive_by_role.with_label_values(&[&role.name, a]);
        }
    }
    for a in &p.anomaly {
        m.anomaly_alerts.with_label_values(&[&a.name]);
    }
}
