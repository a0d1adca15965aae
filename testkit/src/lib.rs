//! Throwaway PostgreSQL clusters for pgveil's tests and demo.
//!
//! A [`PgCluster`] is a real PostgreSQL server: `initdb` and `pg_ctl` run in a
//! fresh temporary directory, the server listens on a random loopback port, and
//! everything is torn down when the value is dropped. There is no mock.
//!
//! The binaries are found through `PGVEIL_PG_BINDIR`, on `PATH`, through
//! `pg_config --bindir`, or under `/usr/lib/postgresql/*/bin`. When none of these
//! has them, [`PgCluster::start`] fails with an install hint; callers never skip.
//!
//! PostgreSQL refuses to run as root. When the current user is root, the server
//! runs as the `postgres` system user (or `nobody`), and the temp dir is handed
//! to that user.

mod bins;
mod certs;
mod cluster;

pub use bins::{find_bindir, PgBinaries};
pub use certs::TestCerts;
pub use cluster::{AuthMethod, ClusterOptions, PgCluster};

/// Everything that can go wrong while preparing or running a throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "PostgreSQL server binaries not found (looked in $PGVEIL_PG_BINDIR, PATH, `pg_config --bindir` \
         and /usr/lib/postgresql/*/bin); install them with `apt-get update && apt-get install -y postgresql`"
    )]
    BinariesMissing,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("certificate generation failed: {0}")]
    Certificate(String),
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            what: what.into(),
            source,
        }
    }
}
