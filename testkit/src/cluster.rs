//! One throwaway PostgreSQL cluster: initdb, configure, start, stop, tear down.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::bins::{find_bindir, PgBinaries};
use crate::certs::{set_mode, TestCerts};
use crate::TestkitError;

/// How TCP clients other than the superuser authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Trust,
    Password,
    Md5,
    ScramSha256,
}

impl AuthMethod {
    fn hba_name(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Password => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }

    fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// What the cluster should look like.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Authentication for TCP logins other than the `postgres` superuser.
    pub auth: AuthMethod,
    /// Serve TLS with a freshly generated certificate.
    pub tls: bool,
    /// Accept only TLS connections for non-superusers (`hostssl`).
    pub tls_only: bool,
    /// The names the server certificate is valid for (empty: `localhost` and `127.0.0.1`).
    pub tls_names: Vec<String>,
    /// Login roles to create: (name, password).
    pub users: Vec<(String, String)>,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            auth: AuthMethod::Trust,
            tls: false,
            tls_only: false,
            tls_names: Vec::new(),
            users: Vec::new(),
            settings: Vec::new(),
        }
    }
}

/// A running PostgreSQL server in a temp dir. Dropping it stops the server and
/// deletes the directory.
pub struct PgCluster {
    bins: PgBinaries,
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<(u32, u32)>,
    certs: Option<TestCerts>,
    running: bool,
}

/// The database superuser that every cluster has; it authenticates by trust on loopback.
pub const SUPERUSER: &str = "postgres";

impl PgCluster {
    /// Initialise and start a cluster.
    pub fn start(options: ClusterOptions) -> Result<PgCluster, TestkitError> {
        let bins = find_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("pgveil-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let run_as = unprivileged_user()?;
        let mut cluster = PgCluster {
            bins,
            dir,
            port: 0,
            run_as,
            certs: None,
            running: false,
        };
        cluster.init(&options)?;
        cluster.start_on_free_port()?;
        cluster.create_users(&options)?;
        Ok(cluster)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The temp directory (holds `data/`, the socket, the log and certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificates, when the cluster serves TLS.
    pub fn certs(&self) -> Option<&TestCerts> {
        self.certs.as_ref()
    }

    /// The server log, for diagnostics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A libpq-style connection string for the superuser over TCP.
    pub fn superuser_conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={} sslmode=disable",
            self.host(),
            self.port,
            SUPERUSER,
            dbname
        )
    }

    /// Run SQL through `psql` as the superuser, over the Unix socket. Returns stdout
    /// (unaligned, tuples only).
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, TestkitError> {
        let mut cmd = self.psql_command(dbname);
        cmd.args(["-A", "-t", "-c", sql]);
        let out = run(&mut cmd, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Run a SQL file through `psql` as the superuser.
    pub fn psql_file(&self, dbname: &str, file: &Path) -> Result<String, TestkitError> {
        let mut cmd = self.psql_command(dbname);
        cmd.arg("-f").arg(file);
        let out = run(&mut cmd, "psql -f")?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `psql` as the superuser over the Unix socket, stopping at the first error.
    fn psql_command(&self, dbname: &str) -> Command {
        let mut cmd = Command::new(self.bins.psql());
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", dbname]);
        cmd
    }

    /// Stop the server (fast shutdown: sessions are terminated).
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        if !self.running {
            return Ok(());
        }
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])?;
        self.running = false;
        Ok(())
    }

    /// Start the server again on the same port after [`PgCluster::stop`].
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.running {
            self.stop()?;
        }
        self.start_server()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's Unix-domain socket (`.s.PGSQL.<port>`);
    /// `local` connections are trusted.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(self.bins.bin(bin));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        // Keep the server's messages in English so tests and users read the same text.
        cmd.env("LC_ALL", "C").env("LANG", "C");
        cmd
    }

    fn init(&mut self, options: &ClusterOptions) -> Result<(), TestkitError> {
        if let Some((uid, gid)) = self.run_as {
            chown(self.dir.path(), uid, gid)?;
        }
        let data = self.data_dir();
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C");
        run(&mut initdb, "initdb")?;

        let mut conf = String::from("\n# pgveil testkit\n");
        conf.push_str("listen_addresses = '127.0.0.1'\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            self.socket_dir().display()
        ));
        conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        conf.push_str("max_connections = 300\nshared_buffers = 64MB\n");
        conf.push_str(&format!(
            "password_encryption = '{}'\n",
            options.auth.password_encryption()
        ));
        if options.tls {
            let names: Vec<&str> = options.tls_names.iter().map(String::as_str).collect();
            let certs = match names.is_empty() {
                true => TestCerts::generate(self.dir.path(), "pg")?,
                false => TestCerts::generate_for(self.dir.path(), "pg", &names)?,
            };
            if let Some((uid, gid)) = self.run_as {
                chown(&certs.server_key, uid, gid)?;
            }
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ));
            self.certs = Some(certs);
        }
        for line in &options.settings {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf)?;

        let host = if options.tls_only { "hostssl" } else { "host" };
        let method = options.auth.hba_name();
        let hba = format!(
            "# pgveil testkit\n\
             local all all trust\n\
             host all {SUPERUSER} 127.0.0.1/32 trust\n\
             {host} all all 127.0.0.1/32 {method}\n"
        );
        std::fs::write(data.join("pg_hba.conf"), hba)
            .map_err(|e| TestkitError::io("write pg_hba.conf", e))?;
        Ok(())
    }

    fn start_on_free_port(&mut self) -> Result<(), TestkitError> {
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.start_server() {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(TestkitError::CommandFailed {
            command: "pg_ctl start".into(),
            status: "no attempt".into(),
            output: String::new(),
        }))
    }

    fn start_server(&mut self) -> Result<(), TestkitError> {
        let opts = format!("-p {}", self.port);
        let log = self.log_path();
        let data = self.data_dir();
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-w")
            .args(["-t", "60"])
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(opts);
        match run(&mut cmd, "pg_ctl start") {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(TestkitError::CommandFailed {
                command,
                status,
                output,
            }) => Err(TestkitError::CommandFailed {
                command,
                status,
                output: format!("{output}\n--- server log ---\n{}", self.log()),
            }),
            Err(e) => Err(e),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, TestkitError> {
        let mut cmd = self.command("pg_ctl");
        cmd.args(args).arg("-D").arg(self.data_dir());
        run(&mut cmd, "pg_ctl")
    }

    fn create_users(&self, options: &ClusterOptions) -> Result<(), TestkitError> {
        for (name, password) in &options.users {
            // PostgreSQL 15 no longer lets every role create in schema public.
            let sql = format!(
                "CREATE ROLE {0} LOGIN PASSWORD {1}; GRANT ALL ON SCHEMA public TO {0}",
                quote_ident(name),
                quote_literal(password)
            );
            self.psql("postgres", &sql)?;
        }
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
    }
}

/// Quote an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, TestkitError> {
    let out = cmd
        .output()
        .map_err(|e| TestkitError::io(format!("run {what}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(TestkitError::CommandFailed {
            command: what.to_string(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

fn append(path: &Path, text: &str) -> Result<(), TestkitError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| TestkitError::io(format!("open {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| TestkitError::io(format!("write {}", path.display()), e))
}

fn free_port() -> Result<u16, TestkitError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| TestkitError::io("bind a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| TestkitError::io("read free port", e))
}

/// When running as root, the uid/gid of an unprivileged user to run the server as.
fn unprivileged_user() -> Result<Option<(u32, u32)>, TestkitError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(ids) = lookup_user(name) {
            return Ok(Some(ids));
        }
    }
    Err(TestkitError::CommandFailed {
        command: "find an unprivileged user".into(),
        status: "none".into(),
        output: "PostgreSQL cannot run as root and neither `postgres` nor `nobody` exists; \
                 create one with `useradd postgres`"
            .into(),
    })
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), TestkitError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| TestkitError::io(format!("chown {}", path.display()), e))?;
    if path.is_dir() {
        set_mode(path, 0o700)?;
    }
    Ok(())
}
