//! Reading the catalog over a connection pgveil owns (tokio-postgres).
//!
//! Least privilege: every query reads `pg_catalog` only, which any role may read; the
//! catalog login needs `CONNECT` on each database and nothing else.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::stream::ServerStream;

use super::snapshot::{Attribute, Dependency, FunctionSource, RawCatalog, RelKind, Relation};

/// The server's own words for a failed query or login (tokio-postgres shows only "db error"),
/// or the cause tokio-postgres keeps behind its own summary.
fn server_message(e: &tokio_postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return format!("{} ({})", d.message(), d.code().code());
    }
    match std::error::Error::source(e).map(|s| s.to_string()) {
        Some(s) if s == "password missing" => format!(
            "{e}: the server asks for a password and none is set (set catalog.password or \
             PGVEIL_CATALOG_PASSWORD)"
        ),
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

impl LoadError {
    /// A read that failed because other sessions were changing the catalog at that moment: a
    /// lock it would have waited for (55P03), or an object dropped between the read's snapshot
    /// and a function looking it up ("could not open relation with OID ...", XX000, 42P01,
    /// 42704). Trying again sees the change committed or undone.
    fn concurrent_change(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let LoadError::Query { source, .. } = self else {
            return false;
        };
        source.code().is_some_and(|c| {
            [
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::INTERNAL_ERROR,
                SqlState::UNDEFINED_TABLE,
                SqlState::UNDEFINED_OBJECT,
            ]
            .contains(c)
        })
    }
}

/// How many times a read is tried when other sessions change the catalog under it.
const READ_ATTEMPTS: u32 = 4;

/// Opens a byte stream to the server with TLS negotiated as `upstream.tls` says (the same code
/// and settings as the sessions' upstream connections; built by `context.rs`). An error says
/// why, in one line.
pub type Dial = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<ServerStream, String>> + Send>> + Send + Sync,
>;

/// How pgveil reaches the catalog of one database.
#[derive(Clone)]
pub struct CatalogSource {
    /// The stream to the server, TLS included: the login then runs over it.
    pub dial: Dial,
    pub user: String,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Counted per database: `catalog_reads_total`, `catalog_connections_total`.
    pub counters: Option<CatalogCounters>,
}

/// What reading catalogs costs the server, per database.
#[derive(Debug, Clone)]
pub struct CatalogCounters {
    pub reads: prometheus::IntCounterVec,
    pub connections: prometheus::IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("catalog connection to database {database:?} failed: {reason}")]
    Dial { database: String, reason: String },
    #[error(
        "catalog connection to database {database:?} as {user:?} failed: {}",
        server_message(source)
    )]
    Connect {
        database: String,
        user: String,
        source: tokio_postgres::Error,
    },
    #[error(
        "catalog query failed in database {database:?}: {}",
        server_message(source)
    )]
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

/// Recorded when a column is encrypted (by `pgveil encrypt`), so clients keep seeing its type
/// with its modifier (`varchar(20)`; -1 where a record made before `original_typmod` has none).
const HAS_ORIGINAL_TYPES: &str = "SELECT to_regclass('pgveil.original_types') IS NOT NULL";
const ORIGINAL_TYPES: &str = "\
SELECT o.table_name::oid::int8, o.column_name::text, o.original_type::oid::int8,
       coalesce((to_jsonb(o) ->> 'original_typmod')::int4, -1)
FROM pgveil.original_types o";

const INHERITS: &str = "SELECT inhrelid::int8, inhparent::int8 FROM pg_inherits";

/// View definitions. `pg_get_viewdef` takes a share lock on the view and the relations its
/// query names, so it would wait behind a session that holds (or waits for) an exclusive lock
/// on one of them, for example one in a transaction that drops or alters a table, whose next
/// statement waits for this read. Those views are left without a definition (NULL): the
/// analysis then treats them as views it cannot read, which refuses reading protected data
/// through them, until a later read.
const VIEW_DEFINITIONS: &str = "\
SELECT c.oid::int8,
       CASE WHEN EXISTS (
           SELECT 1 FROM pg_locks l
           WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND (l.relation = c.oid OR l.relation IN (
                 SELECT d.refobjid FROM pg_rewrite r
                 JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                 WHERE r.ev_class = c.oid AND d.refclassid = 'pg_class'::regclass)))
       THEN NULL ELSE pg_get_viewdef(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Relations whose writes go elsewhere: INSTEAD OF triggers (tgtype bit 6), and rules other
/// than a view's own `_RETURN`.
const WRITE_REDIRECTED: &str = "\
SELECT tgrelid::int8 FROM pg_trigger WHERE NOT tgisinternal AND (tgtype & 64) <> 0
UNION
SELECT ev_class::int8 FROM pg_rewrite WHERE rulename <> '_RETURN'";

const ROLES: &str = "SELECT rolname::text FROM pg_roles";

/// The roles each role is a member of, directly or through others, INHERIT or not: a group's
/// `deny` rule binds every member (a NOINHERIT member could switch to the group anyway, and
/// gets the group's view only after `SET ROLE` through the current role it then has).
const MEMBERSHIPS: &str = "\
WITH RECURSIVE m(member, roleid) AS (
    SELECT member, roleid FROM pg_auth_members
  UNION
    SELECT m.member, a.roleid FROM m JOIN pg_auth_members a ON a.member = m.roleid
)
SELECT r.rolname::text, g.rolname::text
FROM m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid";

/// A kept connection to one database's catalog, and what the last read learned of it.
#[derive(Default)]
pub struct CatalogConn {
    client: Option<tokio_postgres::Client>,
    /// `pgveil.original_types` existed at the last read (then it is read in the same batch).
    original_types: bool,
}

impl CatalogSource {
    /// Read one database's catalog over `conn` (connecting, or reconnecting after a failure),
    /// in one round trip: one repeatable-read transaction of read-only queries.
    pub async fn load(
        &self,
        database: &str,
        conn: &mut CatalogConn,
    ) -> Result<RawCatalog, LoadError> {
        let timeout = self.connect_timeout + Duration::from_secs(30);
        let read = async {
            if conn.client.as_ref().is_none_or(|c| c.is_closed()) {
                let stream = (self.dial)().await.map_err(|reason| LoadError::Dial {
                    database: database.to_string(),
                    reason,
                })?;
                conn.client =
                    Some(connect_over(stream, self.config(database), database, &self.user).await?);
                if let Some(c) = &self.counters {
                    c.connections.with_label_values(&[database]).inc();
                }
            }
            if let Some(c) = &self.counters {
                c.reads.with_label_values(&[database]).inc();
            }
            let client = conn.client.as_ref().ok_or_else(|| LoadError::Timeout {
                database: database.to_string(),
                after: Duration::ZERO,
            })?;
            let mut attempt = 1;
            loop {
                match read_catalog(client, database, &mut conn.original_types).await {
                    Err(e) if attempt < READ_ATTEMPTS && e.concurrent_change() => {
                        tracing::debug!(database, error = %e, attempt, "catalog changed under the read; reading again");
                        let _ = client.simple_query("ROLLBACK").await;
                        tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                        attempt += 1;
                    }
                    r => break r,
                }
            }
        };
        let r = match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(LoadError::Timeout {
                database: database.to_string(),
                after: timeout,
            }),
        };
        if r.is_err() {
            // Start afresh next time: the connection may be broken or mid-transaction.
            conn.client = None;
        }
        r
    }

    fn config(&self, database: &str) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        // The stream arrives with TLS already negotiated (or deliberately plain).
        cfg.ssl_mode(tokio_postgres::config::SslMode::Disable)
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

async fn connect(
    cfg: tokio_postgres::Config,
    database: &str,
    user: &str,
) -> Result<tokio_postgres::Client, LoadError> {
    driven(cfg.connect(tokio_postgres::NoTls).await, database, user)
}

/// Log in over a stream [`Dial`] opened.
async fn connect_over(
    stream: ServerStream,
    cfg: tokio_postgres::Config,
    database: &str,
    user: &str,
) -> Result<tokio_postgres::Client, LoadError> {
    let connected = cfg.connect_raw(stream, tokio_postgres::NoTls).await;
    driven(connected, database, user)
}

/// A logged-in client, its connection driven in the background.
fn driven<S, T>(
    connected: Result<
        (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
        tokio_postgres::Error,
    >,
    database: &str,
    user: &str,
) -> Result<tokio_postgres::Client, LoadError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = connected.map_err(|source| LoadError::Connect {
        database: database.to_string(),
        user: user.to_string(),
        source,
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "catalog connection ended");
        }
    });
    Ok(client)
}

/// Read a catalog with a ready connection configuration, over a connection of its own (for
/// `policy explain --dsn` and `policy check --dsn`).
pub async fn load_with(
    cfg: tokio_postgres::Config,
    database: &str,
    user: &str,
) -> Result<RawCatalog, LoadError> {
    let client = connect(cfg, database, user).await?;
    let mut original_types = false;
    read_catalog(&client, database, &mut original_types).await
}

/// The queries of one read, in the order their results come back.
const QUERIES: [&str; 9] = [
    RELATIONS,
    DEPENDENCIES,
    FUNCTIONS,
    INHERITS,
    VIEW_DEFINITIONS,
    WRITE_REDIRECTED,
    ROLES,
    MEMBERSHIPS,
    HAS_ORIGINAL_TYPES,
];

/// One read: a batch of queries in one simple-query round trip (a second one only the first
/// time `pgveil.original_types` is found, and when it disappears).
async fn read_catalog(
    client: &tokio_postgres::Client,
    database: &str,
    original_types: &mut bool,
) -> Result<RawCatalog, LoadError> {
    let q = |source| LoadError::Query {
        database: database.to_string(),
        source,
    };
    let batch = |with_types: bool| {
        // A lock that appears between the check above and the call fails the read at once
        // (55P03) instead of waiting; the read is then tried again.
        let mut text = String::from(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET LOCAL lock_timeout = '500ms';\n",
        );
        for query in QUERIES {
            text.push_str(query);
            text.push_str(";\n");
        }
        if with_types {
            text.push_str(ORIGINAL_TYPES);
            text.push_str(";\n");
        }
        text.push_str("COMMIT");
        text
    };
    let messages = match client.simple_query(&batch(*original_types)).await {
        Ok(m) => m,
        Err(_) if *original_types => {
            // The table went away: read without it (the failed transaction is ended first).
            let _ = client.simple_query("ROLLBACK").await;
            *original_types = false;
            client.simple_query(&batch(false)).await.map_err(q)?
        }
        Err(e) => return Err(q(e)),
    };
    // Results split at each CommandComplete: BEGIN, SET, the queries, then COMMIT.
    let mut sets: Vec<Vec<tokio_postgres::SimpleQueryRow>> = vec![Vec::new()];
    for m in messages {
        match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                if let Some(set) = sets.last_mut() {
                    set.push(r);
                }
            }
            tokio_postgres::SimpleQueryMessage::CommandComplete(_) => sets.push(Vec::new()),
            _ => {}
        }
    }
    // BEGIN and SET LOCAL come first.
    let set = |i: usize| sets.get(i + 2).map_or(&[][..], |v| v.as_slice());
    let mut raw = RawCatalog::default();
    for row in set(0) {
        let oid = int(row, 0) as u32;
        let attr = Attribute {
            name: text(row, 4),
            attnum: int(row, 5) as i16,
            type_oid: int(row, 6) as u32,
            protected: None,
        };
        match raw.relations.last_mut() {
            Some(r) if r.oid == oid => r.columns.push(attr),
            _ => raw.relations.push(Relation {
                oid,
                schema: text(row, 1),
                name: text(row, 2),
                kind: RelKind::from_relkind(&text(row, 3)).unwrap_or(RelKind::Table),
                columns: vec![attr],
                exposes: Vec::new(),
            }),
        }
    }
    for row in set(1) {
        raw.dependencies.push(Dependency {
            from: int(row, 0) as u32,
            on: int(row, 1) as u32,
            attnum: int(row, 2) as i16,
        });
    }
    for row in set(2) {
        raw.functions.push(FunctionSource {
            oid: int(row, 0) as u32,
            name: text(row, 1),
            language: text(row, 2),
            body: text(row, 3),
        });
    }
    for row in set(3) {
        raw.inherits.push((int(row, 0) as u32, int(row, 1) as u32));
    }
    for row in set(4) {
        if let Some(def) = row.get(1) {
            raw.view_definitions
                .push((int(row, 0) as u32, def.to_string()));
        }
    }
    for row in set(5) {
        raw.write_redirected.push(int(row, 0) as u32);
    }
    for row in set(6) {
        raw.roles.push(text(row, 0));
    }
    for row in set(7) {
        raw.memberships.push((text(row, 0), text(row, 1)));
    }
    let has_types = set(8).first().and_then(|r| r.get(0)) == Some("t");
    if has_types && !*original_types {
        *original_types = true;
        for row in client.query(ORIGINAL_TYPES, &[]).await.map_err(q)? {
            raw.original_types.push((
                row.get::<_, i64>(0) as u32,
                row.get(1),
                row.get::<_, i64>(2) as u32,
                row.get::<_, i32>(3),
            ));
        }
    } else if has_types {
        for row in set(9) {
            raw.original_types.push((
                int(row, 0) as u32,
                text(row, 1),
                int(row, 2) as u32,
                row.get(3).and_then(|v| v.parse().ok()).unwrap_or(-1),
            ));
        }
    } else {
        *original_types = false;
    }
    Ok(raw)
}

fn text(row: &tokio_postgres::SimpleQueryRow, i: usize) -> String {
    row.get(i).unwrap_or_default().to_string()
}

fn int(row: &tokio_postgres::SimpleQueryRow, i: usize) -> i64 {
    row.get(i).and_then(|v| v.parse().ok()).unwrap_or(0)
}
