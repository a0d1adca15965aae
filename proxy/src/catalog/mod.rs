//! The catalog cache: per database, what the analysis needs to know about relations, views,
//! functions and roles, read over connections pgveil owns.
//!
//! Steady state costs nothing per statement: a snapshot is an `Arc` read under an
//! uncontended lock. A snapshot is reloaded when it is older than the refresh interval, and
//! before the next statement after a session relayed DDL ([`Catalog::invalidate`]).
pub mod functions;
pub mod load;
pub mod snapshot;
pub mod words;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use pgveil_policy::CompiledPolicy;

pub use load::{CatalogCounters, CatalogSource, Dial, LoadError};
pub use snapshot::{RawCatalog, Relation, Snapshot};

/// What is built once per snapshot and policy version and cached with it (the analysis's
/// fast-path scanner): the catalog cache builds it, without knowing what it is.
pub trait Derived: Send + Sync + 'static {
    fn derive(policy: &CompiledPolicy, snapshot: &Snapshot) -> Self;
}

/// A snapshot bound to one policy version, with what was derived from both.
pub struct Bound<D> {
    pub snapshot: Arc<Snapshot>,
    pub derived: D,
    /// Changes whenever the snapshot does; part of the parse-cache key.
    pub generation: u64,
    /// When the catalog behind it was read.
    pub read_at: Instant,
}

struct Loaded<D> {
    raw: Arc<RawCatalog>,
    at: Instant,
    policy_version: String,
    bound: Arc<Bound<D>>,
}

/// One database's cache entry.
struct DbCatalog<D> {
    current: RwLock<Option<Arc<Loaded<D>>>>,
    stale: AtomicBool,
    /// Only one load at a time per database; others wait for it. It holds the connection
    /// the catalog is read over, kept between reads.
    loading: tokio::sync::Mutex<load::CatalogConn>,
}

/// Catalogs of every database sessions connect to.
pub struct Catalog<D> {
    source: CatalogSource,
    refresh: Duration,
    dbs: Mutex<HashMap<String, Arc<DbCatalog<D>>>>,
    generation: AtomicU64,
    /// Bumped on every invalidation and every new snapshot, so sessions can keep the snapshot
    /// they hold while nothing changed (see [`Catalog::still_fresh`]).
    epoch: AtomicU64,
}

impl<D: Derived> Catalog<D> {
    pub fn new(source: CatalogSource, refresh: Duration) -> Self {
        Catalog {
            source,
            refresh,
            dbs: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
            epoch: AtomicU64::new(1),
        }
    }

    fn db(&self, database: &str) -> Arc<DbCatalog<D>> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        dbs.entry(database.to_string())
            .or_insert_with(|| {
                Arc::new(DbCatalog {
                    current: RwLock::new(None),
                    stale: AtomicBool::new(false),
                    loading: tokio::sync::Mutex::new(load::CatalogConn::default()),
                })
            })
            .clone()
    }

    /// Mark one database's snapshot stale: DDL went through it, or it did not know a role.
    pub fn invalidate_database(&self, database: &str) {
        let db = {
            let dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
            dbs.get(database).cloned()
        };
        if let Some(db) = db {
            db.stale.store(true, Ordering::Release);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Mark every database's snapshot stale: DDL went through, or a reload was asked for.
    pub fn invalidate(&self) {
        let dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        for db in dbs.values() {
            db.stale.store(true, Ordering::Release);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The current epoch; a snapshot obtained at epoch `e` is still the one to use while the
    /// epoch is unchanged and the refresh interval has not passed.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether a snapshot obtained at `epoch` may still be used without asking again.
    pub fn still_fresh(&self, bound: &Bound<D>, epoch: u64) -> bool {
        self.epoch() == epoch && bound.read_at.elapsed() < self.refresh
    }

    /// The snapshot of `database` bound to `policy`, loading or rebinding it if needed.
    pub async fn get(
        &self,
        database: &str,
        policy: &CompiledPolicy,
    ) -> Result<Arc<Bound<D>>, LoadError> {
        let db = self.db(database);
        if let Some(b) = self.fresh(&db, policy) {
            return Ok(b);
        }
        let mut conn = db.loading.lock().await;
        if let Some(b) = self.fresh(&db, policy) {
            return Ok(b);
        }
        let reuse = {
            let cur = db.current.read().unwrap_or_else(|e| e.into_inner());
            cur.as_ref()
                .filter(|l| !db.stale.load(Ordering::Acquire) && l.at.elapsed() < self.refresh)
                .map(|l| (l.raw.clone(), l.at))
        };
        let (raw, at) = match reuse {
            // Only the policy changed: rebind what was read, no round trip.
            Some(r) => r,
            None => {
                db.stale.store(false, Ordering::Release);
                let raw = self.source.load(database, &mut conn).await?;
                (Arc::new(raw), Instant::now())
            }
        };
        let snapshot = Snapshot::build((*raw).clone(), policy);
        for (table, columns) in snapshot.policy_mismatches() {
            tracing::error!(
                database,
                table = %table,
                columns = %columns.join(", "),
                "the policy protects columns this table no longer has (renamed or dropped); statements on it are refused until the policy or the table is fixed"
            );
        }
        let derived = D::derive(policy, &snapshot);
        let bound = Arc::new(Bound {
            read_at: at,
            derived,
            snapshot: Arc::new(snapshot),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        });
        let loaded = Arc::new(Loaded {
            raw,
            at,
            policy_version: policy.version().to_string(),
            bound: bound.clone(),
        });
        *db.current.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(database, "catalog loaded");
        Ok(bound)
    }

    /// The snapshot of `database` as last loaded, without loading.
    pub fn peek(&self, database: &str) -> Option<Arc<Snapshot>> {
        let dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        let db = dbs.get(database)?;
        let cur = db.current.read().unwrap_or_else(|e| e.into_inner());
        cur.as_ref().map(|l| l.bound.snapshot.clone())
    }

    fn fresh(&self, db: &DbCatalog<D>, policy: &CompiledPolicy) -> Option<Arc<Bound<D>>> {
        if db.stale.load(Ordering::Acquire) {
            return None;
        }
        let cur = db.current.read().unwrap_or_else(|e| e.into_inner());
        cur.as_ref()
            .filter(|l| l.at.elapsed() < self.refresh && l.policy_version == policy.version())
            .map(|l| l.bound.clone())
    }
}
