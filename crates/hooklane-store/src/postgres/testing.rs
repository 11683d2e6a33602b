//! Throw-away PostgreSQL databases for tests (cargo feature `testing`), for this crate's
//! conformance suite and for other crates' integration tests alike:
//!
//! ```ignore
//! let db = hooklane_store::postgres::testing::TestDatabase::create().await;
//! let store = hooklane_store::open(db.url()).await?; // or hand db.url() to a hooklane process
//! ```
//!
//! Every [`TestDatabase`] is a new, empty database (`CREATE DATABASE`) on one server shared
//! by the whole test process, so tests are isolated and may run in parallel. On a
//! `DATABASE_URL` server it is dropped (`DROP DATABASE … WITH (FORCE)`) when the guard
//! goes; on the private cluster it is left for the cluster's removal at exit, because
//! `DROP DATABASE` forces a checkpoint (about a second each, with fsync on).
//!
//! The server is, in this order:
//! 1. `DATABASE_URL`, when set: a `postgres://` URL whose role may create databases (the
//!    URL's own database is only used to run `CREATE DATABASE`).
//! 2. Otherwise a private cluster started once per test process: `initdb` into a new
//!    temporary directory, `pg_ctl start` listening on a free port of 127.0.0.1 only, with
//!    its unix socket inside that directory and the server's default durability (fsync
//!    on). The binaries are looked for in `PG_BIN`, then `/usr/lib/postgresql/15/bin`,
//!    then `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`. initdb
//!    refuses to run as root, so when the process is root the cluster is created and run
//!    as the `postgres` system user (via `runuser`, else `su`), owning the directory.
//!    It serves TLS too, with a certificate for 127.0.0.1 from a CA made at start, and
//!    admits one role ([`TlsDatabase`]'s) over TLS only. [`private_server`] gives this
//!    cluster even when `DATABASE_URL` is set (TLS tests need it).
//!
//! Stopping the private cluster: Rust runs no destructor for statics at process exit, and
//! an `atexit` hook would need `unsafe` (this crate forbids it) and would not run when the
//! test process is killed. So starting the cluster also starts a small watchdog shell in
//! its own process group (a Ctrl-C at the terminal does not reach it) that polls the test
//! process every second and, once it is gone for whatever reason, runs
//! `pg_ctl stop -m immediate` and deletes the temporary directory.
//!
//! Without PostgreSQL binaries (and without `DATABASE_URL`) every test using this module
//! fails with a message saying how to install them (`scripts/ensure-postgres.sh`); nothing
//! is skipped silently. With `CI` set the message says that this is required in CI.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// The directory Debian's `postgresql-15` package installs the server binaries into.
const DEBIAN_PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Attempts at starting the private cluster (a free port may be taken before we use it).
const START_ATTEMPTS: usize = 3;

/// The PostgreSQL server the tests of this process create their databases on.
#[derive(Debug, Clone)]
pub struct PgServer {
    admin_url: String,
    /// The private cluster, when this process started one.
    cluster: Option<Cluster>,
}

#[derive(Debug, Clone)]
struct Cluster {
    dir: PathBuf,
    port: u16,
}

/// The role that may connect to the private cluster only over TLS (see [`TlsDatabase`]).
const TLS_ROLE: &str = "hooklane_tls";

impl PgServer {
    /// A URL to a maintenance database of the server, for `CREATE DATABASE` and the like.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        match &self.cluster {
            Some(c) => format!("postgres://postgres@127.0.0.1:{}/{name}", c.port),
            None => with_dbname(&self.admin_url, name),
        }
    }

    /// The PEM file of the CA that signed the private cluster's TLS certificate (issued to
    /// 127.0.0.1 only), or `None` when the server came from `DATABASE_URL`.
    pub fn tls_root_cert(&self) -> Option<PathBuf> {
        self.cluster.as_ref().map(|c| c.dir.join(TLS_CA_FILE))
    }

    /// The temporary directory of the private cluster (data, socket and `postgres.log`),
    /// or `None` when the server came from `DATABASE_URL`.
    pub fn cluster_dir(&self) -> Option<&Path> {
        self.cluster.as_ref().map(|c| c.dir.as_path())
    }
}

/// The server for this process, started on first use; panics (failing the calling test)
/// with an explanation when there is none to be had. Blocks while starting a cluster.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    match SERVER.get_or_init(find_or_start_server) {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}

/// This process's private cluster (the one [`server`] returns when `DATABASE_URL` is not
/// set, otherwise one more, for the tests that need what only it has: TLS).
pub fn private_server() -> &'static PgServer {
    static PRIVATE: OnceLock<Result<PgServer, String>> = OnceLock::new();
    match PRIVATE.get_or_init(start_private_cluster) {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh, empty database on [`server`]; dropped with the guard.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    /// Drop the database with the guard (not on the private cluster, removed whole).
    drop_with_guard: bool,
}

impl TestDatabase {
    /// Creates a new database. Panics (failing the calling test) when no PostgreSQL is
    /// available or the database cannot be created.
    pub async fn create() -> TestDatabase {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let server =
            tokio::task::spawn_blocking(server).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("hooklane_t_{}_{}_{nanos:x}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let admin = admin_connect(server.admin_url()).await.unwrap_or_else(|e| panic!("{e}"));
        // The private cluster's template1 is UTF-8 with the C locale already (see initdb
        // below); another server's may not be.
        let create = match server.cluster {
            Some(_) => format!("CREATE DATABASE \"{name}\""),
            None => {
                format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
            }
        };
        admin
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {}", super::db_error(&e)));
        TestDatabase {
            url: server.database_url(&name),
            name,
            admin_url: server.admin_url().to_string(),
            drop_with_guard: server.cluster.is_none(),
        }
    }

    /// The database's URL, for [`crate::open`] or a hooklane process's `database_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.drop_with_guard {
            return;
        }
        // Drop runs outside any async context we could borrow (and maybe while a test
        // unwinds), so the database is dropped from a thread with a runtime of its own.
        // FORCE ends the connections the store under test may still hold.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let admin = admin_connect(&admin_url).await.ok()?;
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.ok()
            })
        });
        if !matches!(dropper.join(), Ok(Some(()))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

async fn admin_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to the test PostgreSQL server at {url}: {}", super::db_error(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn find_or_start_server() -> Result<PgServer, String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty()) {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "DATABASE_URL is set but is not a postgres:// URL ({url:?}); unset it to let the tests start \
                 their own PostgreSQL"
            ));
        }
        return Ok(PgServer { admin_url: url, cluster: None });
    }
    Ok(private_server().clone())
}

fn start_private_cluster() -> Result<PgServer, String> {
    let bin = find_bin_dir().map_err(|looked| {
        let mut msg = format!(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; looked in: {}. Install them with \
             scripts/ensure-postgres.sh, point PG_BIN at their directory, or set DATABASE_URL to a PostgreSQL \
             server on which the tests may create databases.",
            looked.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            msg.push_str(" CI is set: the PostgreSQL store tests are required here and are not skipped.");
        }
        msg
    })?;
    let runner = Runner::new()?;
    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        match start_cluster(&bin, &runner) {
            Ok(server) => return Ok(server),
            Err(e) => last_error = e,
        }
    }
    Err(format!("cannot start a throw-away PostgreSQL cluster with {}: {last_error}", bin.display()))
}

/// The directory holding initdb, pg_ctl and postgres, or the places looked in.
fn find_bin_dir() -> Result<PathBuf, Vec<String>> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        candidates.push(dir.into());
    }
    candidates.push(DEBIAN_PG15_BIN.into());
    if let Ok(out) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output() {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !dir.is_empty() {
            candidates.push(dir.into());
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|d| seen.insert(d.clone()));
    for dir in &candidates {
        if ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file()) {
            return Ok(dir.clone());
        }
    }
    Err(candidates.iter().map(|d| d.display().to_string()).collect())
}

/// Runs the PostgreSQL binaries as the current user, or as `postgres` when that is root.
struct Runner {
    /// `(uid, gid)` of the `postgres` user when running as root.
    as_postgres: Option<(u32, u32)>,
}

impl Runner {
    fn new() -> Result<Runner, String> {
        if effective_uid()? != 0 {
            return Ok(Runner { as_postgres: None });
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "postgres"]).stderr(Stdio::null()).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|_| out.status.success())
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Ok(Runner { as_postgres: Some((uid, gid)) }),
            _ => Err("running as root, where initdb refuses to run, and there is no `postgres` user to run it as \
                      (scripts/ensure-postgres.sh installs the postgresql package, which creates it)"
                .into()),
        }
    }

    /// `program args…`, as `postgres` when needed.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        if self.as_postgres.is_none() {
            let mut c = Command::new(program);
            c.args(args);
            return c;
        }
        if let Some(runuser) =
            ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].iter().find(|p| Path::new(p).exists())
        {
            let mut c = Command::new(runuser);
            c.args(["-u", "postgres", "--"]).arg(program).args(args).current_dir("/");
            return c;
        }
        let line = std::iter::once(program.display().to_string()).chain(args.iter().cloned()).map(|a| sh_quote(&a));
        let mut c = Command::new("su");
        c.args(["-s", "/bin/sh", "postgres", "-c"]).arg(line.collect::<Vec<_>>().join(" ")).current_dir("/");
        c
    }

    /// The same, as one `sh` command line (for the watchdog).
    fn shell_line(&self, program: &Path, args: &[String]) -> String {
        let c = self.command(program, args);
        std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .map(|a| sh_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn give(&self, path: &Path) -> Result<(), String> {
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to the postgres user: {e}", path.display()))?;
        }
        Ok(())
    }
}

fn effective_uid() -> Result<u32, String> {
    // /proc/self/status: "Uid:\t<real>\t<effective>\t<saved>\t<fs>".
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
        {
            return Ok(euid);
        }
    }
    let out = Command::new("id").arg("-u").output().map_err(|e| format!("cannot run `id -u`: {e}"))?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| "cannot tell the effective user id".to_string())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("cannot find a free port: {e}"))
}

fn start_cluster(bin: &Path, runner: &Runner) -> Result<PgServer, String> {
    // Root's TMPDIR may not be reachable by the postgres user; /tmp always is.
    let parent = if runner.as_postgres.is_some() { PathBuf::from("/tmp") } else { std::env::temp_dir() };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = parent.join(format!("hooklane-pg-{}-{nanos:x}", std::process::id()));
    let (data, sock, log) = (dir.join("data"), dir.join("sock"), dir.join("postgres.log"));
    std::fs::create_dir_all(&sock).map_err(|e| format!("cannot create {}: {e}", sock.display()))?;
    runner.give(&dir)?;
    runner.give(&sock)?;
    // The watchdog goes first, so the directory is removed even if initdb or start fail
    // half-way.
    let pg_ctl = bin.join("pg_ctl");
    let stop = runner.shell_line(&pg_ctl, &args(&["-D", &data.display().to_string(), "-m", "immediate", "-w", "stop"]));
    start_watchdog(&stop, &dir)?;

    let s = |p: &Path| p.display().to_string();
    run(
        runner.command(
            &bin.join("initdb"),
            &args(&[
                "-D",
                &s(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                // Only initdb's own flush of the template files is skipped; the server
                // below runs with fsync on.
                "--no-sync",
            ]),
        ),
        "initdb",
    )?;
    let (cert, key) = write_tls_files(&dir, runner)?;
    tls_only_role_rules(&data.join("pg_hba.conf"))?;
    let port = free_port()?;
    let options = format!(
        "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=300 \
         -c fsync=on -c synchronous_commit=on -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        sh_quote(&s(&sock)),
        sh_quote(&s(&cert)),
        sh_quote(&s(&key)),
    );
    let started = run(
        runner.command(&pg_ctl, &args(&["-D", &s(&data), "-l", &s(&log), "-w", "-t", "60", "-o", &options, "start"])),
        "pg_ctl start",
    );
    if let Err(e) = started {
        let log_tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log_tail.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        // Stop anything half-started; the next attempt uses a new directory and port.
        let _ = runner.command(&pg_ctl, &args(&["-D", &s(&data), "-m", "immediate", "stop"])).output();
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("{e}\npostgres.log:\n{}", tail.join("\n")));
    }
    Ok(PgServer {
        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        cluster: Some(Cluster { dir, port }),
    })
}

/// The CA certificate's file in the cluster directory.
const TLS_CA_FILE: &str = "ca.pem";

/// Makes a CA and a server certificate it signs for 127.0.0.1 (not `localhost`: a test
/// connecting by that name sees the host name check fail), and writes `ca.pem`,
/// `server.crt` and `server.key` (0600, owned by the server's user, as PostgreSQL demands)
/// into `dir`. Returns the certificate's and key's paths.
fn write_tls_files(dir: &Path, runner: &Runner) -> Result<(PathBuf, PathBuf), String> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let err = |e: rcgen::Error| format!("cannot make the test TLS certificates: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "hooklane test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let server_key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&server_key, &ca).map_err(err)?;
    let (ca_path, cert_path, key_path) = (dir.join(TLS_CA_FILE), dir.join("server.crt"), dir.join("server.key"));
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&ca_path, &ca.pem())?;
    write(&cert_path, &cert.pem())?;
    write(&key_path, &server_key.serialize_pem())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", key_path.display()))?;
    runner.give(&cert_path)?;
    runner.give(&key_path)?;
    Ok((cert_path, key_path))
}

/// Lets [`TLS_ROLE`] in over TLS only (first matching line wins in `pg_hba.conf`); every
/// other role keeps initdb's rules (trust, with or without TLS).
fn tls_only_role_rules(hba: &Path) -> Result<(), String> {
    let rules = std::fs::read_to_string(hba).map_err(|e| format!("cannot read {}: {e}", hba.display()))?;
    let ours = format!("hostnossl all {TLS_ROLE} 127.0.0.1/32 reject\nhostssl all {TLS_ROLE} 127.0.0.1/32 trust\n");
    std::fs::write(hba, ours + &rules).map_err(|e| format!("cannot write {}: {e}", hba.display()))
}

/// A fresh database on [`private_server`] owned by a role that may connect only over TLS,
/// for testing the store's TLS (left for the cluster's removal at exit).
pub struct TlsDatabase {
    name: String,
    port: u16,
    root_cert: PathBuf,
}

impl TlsDatabase {
    /// Creates the database (and the role, the first time). Panics (failing the calling
    /// test) when no private cluster can be had.
    pub async fn create() -> TlsDatabase {
        let server = tokio::task::spawn_blocking(private_server)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let (Some(cluster), Some(root_cert)) = (&server.cluster, server.tls_root_cert()) else {
            panic!("the private PostgreSQL cluster has no TLS set-up")
        };
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!("hooklane_tls_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let admin = admin_connect(server.admin_url()).await.unwrap_or_else(|e| panic!("{e}"));
        let create_role = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{TLS_ROLE}') THEN \
             CREATE ROLE {TLS_ROLE} LOGIN; END IF; END $$"
        );
        for sql in [create_role, format!("CREATE DATABASE \"{name}\" OWNER {TLS_ROLE}")] {
            admin.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {}", super::db_error(&e)));
        }
        TlsDatabase { name, port: cluster.port, root_cert }
    }

    /// The database's URL through `host` (`127.0.0.1`, which the certificate names, or
    /// another name for the same server), with `params` appended as the query.
    pub fn url(&self, host: &str, params: &str) -> String {
        let query = if params.is_empty() { String::new() } else { format!("?{params}") };
        format!("postgres://{TLS_ROLE}@{host}:{}/{}{query}", self.port, self.name)
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn root_cert(&self) -> &Path {
        &self.root_cert
    }
}

/// Runs the part of [`crate::Store::claim_due`] that walks the FIFO lanes of `endpoint_id`
/// (at most `room` heads, leased until `lease_end`), as a claim does once it has read the
/// endpoint as FIFO, whatever it is now: for tests of a change of the endpoint's ordering
/// that commits between that read and the lanes' claim. Answers the leased heads' message
/// ids.
pub async fn claim_fifo_lanes(
    store: &super::PgStore,
    endpoint_id: &str,
    now: chrono::DateTime<chrono::Utc>,
    lease_end: chrono::DateTime<chrono::Utc>,
    room: usize,
) -> crate::StoreResult<Vec<String>> {
    let mut client = store.client().await?;
    let rows =
        super::lanes::claim(&mut client, endpoint_id, super::rows::ms(now), super::rows::ms(lease_end), room).await?;
    rows.iter().map(|r| super::rows::delivery(r, 0).map(|d| d.msg_id)).collect()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Starts the process that stops the cluster and removes `dir` once this process is gone.
fn start_watchdog(stop_command: &str, dir: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "trap '' INT HUP; while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop_command} >/dev/null 2>&1; \
         rm -rf {dir}",
        pid = std::process::id(),
        dir = sh_quote(&dir.display().to_string()),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir("/")
        .stdin(Stdio::null())
        // Never hold the test's output pipes open: a runner waiting for them to close
        // would wait for the watchdog.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the cluster watchdog: {e}"))
}

/// `url` with its database replaced by `name` (and any `dbname=` parameter removed).
fn with_dbname(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (rest, None),
    };
    let authority = location.split_once('/').map_or(location, |(a, _)| a);
    let params: Vec<&str> =
        query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty() && !p.starts_with("dbname=")).collect();
    let mut out = format!("{scheme}://{authority}/{name}");
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_is_replaced() {
        assert_eq!(with_dbname("postgres://u:p@h:5432/postgres", "t1"), "postgres://u:p@h:5432/t1");
        assert_eq!(with_dbname("postgresql://h", "t1"), "postgresql://h/t1");
        assert_eq!(
            with_dbname("postgres://h/db?sslmode=disable&dbname=x&application_name=a", "t1"),
            "postgres://h/t1?sslmode=disable&application_name=a"
        );
        assert_eq!(with_dbname("postgres://h?host=/run/pg", "t1"), "postgres://h/t1?host=/run/pg");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
