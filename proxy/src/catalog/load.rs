//! Reading the catalog over a connection pgveil owns (tokio-postgres).
//!
//! Least privilege: every query reads `pg_catalog` only, which any role may read; the
//! catalog login needs `CONNECT` on each database and nothing else.
use std::time::Duration;

use super::snapshot::{Attribute, Dependency, FunctionSource, RawCatalog, RelKind, Relation};

/// How pgveil reaches the catalog of one database.
#[derive(Debug, Clone)]
pub struct CatalogSource {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("catalog connection to database {database:?} as {user:?} failed: {source}")]
    Connect {
        database: String,
        user: String,
        source: tokio_postgres::Error,
    },
    #[error("catalog query failed in database {database:?}: {source}")]
    Query {
        database: String,
        source: tokio_postgres::Error,
    },
    #[error("catalog read of database {database:?} timed out after {after:?}")]
    Timeout { database: String, after: Duration },
}

const RELATIONS: &str = "\
SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
       a.attname::text, a.attnum::int2, a.atttypid::int8
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY c.oid, a.attnum";

/// Columns that views (through their rewrite rules) and functions depend on.
const DEPENDENCIES: &str = "\
SELECT r.ev_class::int8, d.refobjid::int8, d.refobjsubid::int2
FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
UNION
SELECT d.objid::int8, d.refobjid::int8, d.refobjsubid::int2
FROM pg_depend d
WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass";

const FUNCTIONS: &str = "\
SELECT p.oid::int8, p.proname::text, l.lanname::text, coalesce(p.prosrc, '')
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Recorded when a column is encrypted (by `pgveil encrypt`), so clients keep seeing its type.
const HAS_ORIGINAL_TYPES: &str = "SELECT to_regclass('pgveil.original_types') IS NOT NULL";
const ORIGINAL_TYPES: &str = "\
SELECT table_name::oid::int8, column_name::text, original_type::oid::int8
FROM pgveil.original_types";

const INHERITS: &str = "SELECT inhrelid::int8, inhparent::int8 FROM pg_inherits";

const VIEW_DEFINITIONS: &str = "\
SELECT c.oid::int8, pg_get_viewdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Relations whose writes go elsewhere: INSTEAD OF triggers (tgtype bit 6), and rules other
/// than a view's own `_RETURN`.
const WRITE_REDIRECTED: &str = "\
SELECT tgrelid::int8 FROM pg_trigger WHERE NOT tgisinternal AND (tgtype & 64) <> 0
UNION
SELECT ev_class::int8 FROM pg_rewrite WHERE rulename <> '_RETURN'";

const MEMBERSHIPS: &str = "\
WITH RECURSIVE m(member, roleid) AS (
    SELECT member, roleid FROM pg_auth_members
  UNION
    SELECT m.member, a.roleid FROM m JOIN pg_auth_members a ON a.member = m.roleid
)
SELECT r.rolname::text, g.rolname::text
FROM m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid";

impl CatalogSource {
    /// Read one database's catalog in one repeatable-read transaction.
    pub async fn load(&self, database: &str) -> Result<RawCatalog, LoadError> {
        let timeout = self.connect_timeout + Duration::from_secs(30);
        match tokio::time::timeout(timeout, self.load_inner(database)).await {
            Ok(r) => r,
            Err(_) => Err(LoadError::Timeout {
                database: database.to_string(),
                after: timeout,
            }),
        }
    }

    async fn load_inner(&self, database: &str) -> Result<RawCatalog, LoadError> {
        load_with(self.config(database), database, &self.user).await
    }

    fn config(&self, database: &str) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("pgveil-catalog")
            .connect_timeout(self.connect_timeout);
        if let Some(p) = &self.password {
            cfg.password(p);
        }
        cfg
    }
}

/// Read a catalog with a ready connection configuration (also used by `policy explain --dsn`).
pub async fn load_with(
    cfg: tokio_postgres::Config,
    database: &str,
    user: &str,
) -> Result<RawCatalog, LoadError> {
    let connect_err = |source| LoadError::Connect {
        database: database.to_string(),
        user: user.to_string(),
        source,
    };
    let (mut client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(connect_err)?;
    let task = tokio::spawn(conn);
    let q = |source| LoadError::Query {
        database: database.to_string(),
        source,
    };
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(q)?;
    let mut raw = RawCatalog::default();
    for row in tx.query(RELATIONS, &[]).await.map_err(q)? {
        let oid = row.get::<_, i64>(0) as u32;
        let attr = Attribute {
            name: row.get(4),
            attnum: row.get(5),
            type_oid: row.get::<_, i64>(6) as u32,
            protected: None,
        };
        match raw.relations.last_mut() {
            Some(r) if r.oid == oid => r.columns.push(attr),
            _ => {
                let kind: String = row.get(3);
                raw.relations.push(Relation {
                    oid,
                    schema: row.get(1),
                    name: row.get(2),
                    kind: RelKind::from_relkind(&kind).unwrap_or(RelKind::Table),
                    columns: vec![attr],
                    exposes: Vec::new(),
                });
            }
        }
    }
    for row in tx.query(DEPENDENCIES, &[]).await.map_err(q)? {
        raw.dependencies.push(Dependency {
            from: row.get::<_, i64>(0) as u32,
            on: row.get::<_, i64>(1) as u32,
            attnum: row.get(2),
        });
    }
    for row in tx.query(FUNCTIONS, &[]).await.map_err(q)? {
        raw.functions.push(FunctionSource {
            oid: row.get::<_, i64>(0) as u32,
            name: row.get(1),
            language: row.get(2),
            body: row.get(3),
        });
    }
    for row in tx.query(INHERITS, &[]).await.map_err(q)? {
        raw.inherits
            .push((row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) as u32));
    }
    for row in tx.query(VIEW_DEFINITIONS, &[]).await.map_err(q)? {
        let def: Option<String> = row.get(1);
        if let Some(def) = def {
            raw.view_definitions
                .push((row.get::<_, i64>(0) as u32, def));
        }
    }
    for row in tx.query(WRITE_REDIRECTED, &[]).await.map_err(q)? {
        raw.write_redirected.push(row.get::<_, i64>(0) as u32);
    }
    for row in tx.query(MEMBERSHIPS, &[]).await.map_err(q)? {
        raw.memberships.push((row.get(0), row.get(1)));
    }
    let has_types: bool = tx
        .query_one(HAS_ORIGINAL_TYPES, &[])
        .await
        .map_err(q)?
        .get(0);
    if has_types {
        for row in tx.query(ORIGINAL_TYPES, &[]).await.map_err(q)? {
            raw.original_types.push((
                row.get::<_, i64>(0) as u32,
                row.get(1),
                row.get::<_, i64>(2) as u32,
            ));
        }
    }
    tx.commit().await.map_err(q)?;
    drop(client);
    let _ = task.await;
    Ok(raw)
}
