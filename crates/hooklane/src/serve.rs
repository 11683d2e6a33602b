//! `hooklane serve`: store, delivery engine and API in one process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hooklane_dispatch::Dispatcher;
use hooklane_server::{AppState, InboundSettings, ServerSettings};
use rand::RngCore;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// How long in-flight deliveries get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    for name in Config::unknown_environment() {
        tracing::warn!(variable = %name, "{}", crate::config::UNKNOWN_VARIABLE);
    }
    // Before the store opens, so that its first commits are measured too.
    let metrics = hooklane_server::ops::install_recorder();
    // Everything that can stop the start comes before anything is delivered: a second
    // process on the same SQLite file (before the store is even opened and migrated), a
    // port taken, no admin token.
    let _only_process = match config.sqlite_path() {
        Some(db) => Some(lock_database(Path::new(db), "stop it first, or give this one its own database_url")?),
        None => None,
    };
    let store = hooklane_store::open(&config.database_url).await.context("cannot open the store")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (admin_token, shown) = admin_token(&config)?;
    // The embedded store has exactly one process (the lock above): leases left over are
    // this process's own, from before a crash, and can be retaken at once. On a shared
    // PostgreSQL they may belong to live nodes, so they are left to expire instead.
    if config.sqlite_path().is_some() {
        let released = store.release_all_leases().await?;
        if released > 0 {
            tracing::info!(released, "resuming deliveries that were in flight before the last stop");
        }
    }
    let dispatcher = Dispatcher::start(store.clone(), config.dispatch())?;
    tokio::spawn(crate::housekeeping::run(
        store.clone(),
        (config.housekeeping_interval, crate::housekeeping::TASKS_EVERY),
        crate::housekeeping::Retention {
            inbound_requests: config.inbound.request_retention,
            messages: config.message_retention,
        },
    ));
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    if config.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(%public_url, "public_url is not set: the URLs handed out (sources' ingest URLs, portal and poller links) name the bind address, which no one can reach; Twilio and Square signatures will not match");
    }
    // stdout, not the log: the quick start needs the token, log pipelines must not see it.
    println!("hooklane listening on http://{addr}");
    println!("admin token: {shown}");
    let state = AppState::new(
        store,
        dispatcher.clone(),
        ServerSettings {
            max_body_bytes: config.max_body_bytes,
            admin_token,
            public_url,
            inbound: InboundSettings {
                trusted_proxies: config.inbound.trusted_proxies.clone(),
                request_retention: config.inbound.request_retention,
            },
            ops: hooklane_server::ops::OpsSettings { metrics, metrics_require_token: config.metrics_require_token },
            operational_app: config.operational_app.clone(),
            tenant_cache_ttl: config.tenant_cache_ttl,
            task_wait: config.task_wait,
            default_signature_type: config.default_signature_type,
            message_rate_limit: config.message_rate_limit,
            portal_frame_ancestors: config.portal_frame_ancestors.clone(),
        },
    );
    // Inbound requests acknowledged while their fan-out to event types failed are completed
    // here, whichever node took them (it may have stopped since).
    let sweep_every = config.housekeeping_interval.min(hooklane_server::inbound::FAN_OUT_SWEEP_EVERY);
    tokio::spawn(hooklane_server::inbound::finish_fan_outs(state.clone(), sweep_every));
    if config.operational_app.as_deref().is_some_and(|a| !a.is_empty()) {
        tokio::spawn(hooklane_server::operational::forward_engine_events(state.clone(), dispatcher.events()));
    }
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%addr, store = %config.database_url_for_display(), workers, "hooklane started");
    // At the signal the dispatcher stops claiming and lets what is in flight finish while
    // the API's connections drain, not after them: one after the other they took up to
    // twice SHUTDOWN_GRACE (past `docker stop`'s 10 s, which then kills the process), and
    // the dispatcher went on claiming deliveries while the connections drained. Messages
    // ingested meanwhile are written for a poller to take (the dispatcher reserves none
    // once stopping): this node's next start, or another node.
    let mut signals = Signals::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drained = tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move {
            if stopped.await.is_ok() {
                tracing::info!("shutting down: letting in-flight deliveries finish");
                dispatcher.shutdown(SHUTDOWN_GRACE).await;
            }
        }
    });
    let signalled = async move {
        signals.next().await;
        let _ = stop.send(());
        // A second signal ends the process at once: nothing acknowledged is lost (it is in
        // the store; leases are released at the next start on SQLite, expire on PostgreSQL).
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("hooklane: a second signal: exiting without waiting for the shutdown");
            std::process::exit(130);
        });
    };
    hooklane_server::serve(listener, state.clone(), config.request_read_timeout, signalled).await?;
    let _ = drained.await;
    hooklane_server::tasks::fail_unfinished(&state).await;
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from its making, so that none is missed
/// between two waits.
struct Signals {
    #[cfg(unix)]
    both: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let both = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(int), Ok(term)) => Some((int, term)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for signals; Ctrl-C alone stops the server");
                    None
                }
            };
            Signals { both }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = self.both.as_mut() {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level).context("invalid log_level")?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if config.log_format == "json" { builder.json().try_init() } else { builder.try_init() };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// The configured admin token, or one generated on first start and kept in a file with
/// owner-only permissions. Returns the token and how to show it: a configured token is
/// masked (it is already known to whoever configured it), a generated one is shown whole.
fn admin_token(config: &Config) -> anyhow::Result<(String, String)> {
    if let Some(t) = config.admin_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok((t.clone(), format!("{} (from configuration)", masked(t))));
    }
    let path = token_file(config).context("no admin_token configured and no place to keep a generated one")?;
    // Two nodes starting together on one shared file: the one that loses the race to
    // create it reads the winner's (written whole before it takes its name). An empty file
    // is removed first, by whichever finds it still empty under the lock.
    for _ in 0..4 {
        match read_token_file(&path)? {
            Kept::Token(kept) => {
                // Shown whole only when generated: stdout is collected by most supervisors,
                // and every restart would put the token in their logs again.
                return Ok((kept.clone(), format!("{} (kept in {})", masked(&kept), path.display())));
            }
            Kept::Empty => {
                remove_if_still_empty(&path)?;
                continue;
            }
            Kept::Missing => {}
        }
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = format!("sk_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
        match write_private(&path, &token) {
            Ok(()) => return Ok((token.clone(), format!("{token} (generated, kept in {})", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        }
    }
    anyhow::bail!("{} was made and removed again while this process started", path.display())
}

/// What an admin token file holds.
enum Kept {
    Token(String),
    /// No such file.
    Missing,
    /// An empty file (made ready by provisioning, say): no token. It is removed, so that a
    /// new one is made owner-only in its place.
    Empty,
}

/// The token kept in `path`. A file that cannot be read is an error (never replaced: it
/// may hold the token every client uses), as is one holding a token shorter than a
/// configured one may be.
fn read_token_file(path: &Path) -> anyhow::Result<Kept> {
    let kept = match std::fs::read_to_string(path) {
        Ok(kept) => kept.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kept::Missing),
        Err(e) => return Err(e).with_context(|| format!("cannot read the admin token in {}", path.display())),
    };
    if kept.is_empty() {
        return Ok(Kept::Empty);
    }
    if kept.chars().count() < crate::config::MIN_ADMIN_TOKEN_CHARS {
        anyhow::bail!(
            "the admin token in {} is shorter than {} characters",
            path.display(),
            crate::config::MIN_ADMIN_TOKEN_CHARS
        );
    }
    if hooklane_store::private_files::readable_by_others(path) {
        tracing::warn!(path = %path.display(), "the admin token file can be read by other users (chmod 600 it)");
    }
    Ok(Kept::Token(kept))
}

/// Removes the token file `path`, found empty, if it still is: read again while holding
/// an exclusive lock on `path` + `.lock`, which every process replacing it takes. Nodes
/// starting together on one shared empty file all find it empty; without the lock, one
/// that read it empty before another replaced it removed the other's new token, and the
/// two served with different tokens (or one stopped, its removal finding no file).
fn remove_if_still_empty(path: &Path) -> anyhow::Result<()> {
    let (lock, lock_path) = lock_file_beside(path)?;
    lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if let Kept::Empty = read_token_file(path)? {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace the empty {}", path.display())),
        }
    }
    // (The lock goes with the file, closed here.)
    drop(lock);
    Ok(())
}

/// A token by its last four characters: enough to tell which one it is.
fn masked(token: &str) -> String {
    let tail: String = token.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

/// Takes the lock that makes this process the only one serving the SQLite file `db`
/// (`db` + `.lock`, held until the process ends, released by the kernel even on a crash).
/// A second `serve` would otherwise take back the first one's leases at its start and send
/// their deliveries a second time; `migrate` takes it too, so as not to change the tables
/// beneath a running server. `when_held` says what to do when another process holds it.
pub(crate) fn lock_database(db: &Path, when_held: &str) -> anyhow::Result<std::fs::File> {
    // Named after the file itself, its symbolic links resolved: one database reached by two
    // names (a link) has one lock. (A file not made yet is named as given.)
    let real = std::fs::canonicalize(db).ok();
    let db_file = real.as_deref().unwrap_or(db);
    if let Some(dir) = db_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        hooklane_store::private_files::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (file, path) = lock_file_beside(db_file)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another hooklane process is using {} (it holds {}); {when_held}",
            db.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// The file `path` + `.lock`, made if missing (never emptied: it holds nothing), that
/// processes lock to take turns over `path`; and its name.
fn lock_file_beside(path: &Path) -> anyhow::Result<(std::fs::File, PathBuf)> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    // Owner-only, as every file hooklane makes: it holds nothing, but another user who may
    // open it may lock it too, and so hold back the start.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&lock_path).with_context(|| format!("cannot open {}", lock_path.display()))?;
    // One an earlier version made (0644) is made owner-only too, when it is ours to change.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata().is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!(path = %lock_path.display(), error = %e, "the lock file can be opened by other users, who could hold back the start (chmod 600 it)");
            }
        }
    }
    Ok((file, lock_path))
}

fn token_file(config: &Config) -> Option<PathBuf> {
    if let Some(f) = &config.admin_token_file {
        return Some(PathBuf::from(f));
    }
    let db = Path::new(config.sqlite_path()?);
    Some(db.parent().unwrap_or(Path::new(".")).join("admin-token"))
}

/// Writes `content` into the new file `path`, owner-only: under a temporary name first,
/// then linked to `path`, so that no reader ever finds it half written, and failing with
/// `AlreadyExists` (without touching it) when `path` exists.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    hooklane_store::private_files::create_dir_all(dir)?;
    let named = |at: &Path, e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", at.display()));
    hooklane_store::private_files::publish_new(path, named, |partial| {
        let mut file = std::fs::OpenOptions::new().write(true).open(partial)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()
    })
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes starting together on one shared `admin_token_file` that provisioning made
    /// empty all start, with one token: the one the file holds. Raced many times over, by
    /// threads released together (each is a node's `admin_token`).
    #[test]
    fn nodes_replacing_one_empty_token_file_agree_on_one_token() {
        const NODES: usize = 8;
        let dir = tempfile::tempdir().expect("tempdir");
        for round in 0..40 {
            let path = dir.path().join(format!("admin-token-{round}"));
            std::fs::write(&path, "").expect("empty file");
            let config = Config { admin_token_file: Some(path.display().to_string()), ..Config::default() };
            let start = std::sync::Barrier::new(NODES);
            let tokens: Vec<anyhow::Result<String>> = std::thread::scope(|s| {
                let nodes: Vec<_> = (0..NODES)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            admin_token(&config).map(|(token, _)| token)
                        })
                    })
                    .collect();
                nodes.into_iter().map(|n| n.join().expect("node thread")).collect()
            });
            let kept = std::fs::read_to_string(&path).expect("the token file");
            for token in tokens {
                let token = token.unwrap_or_else(|e| panic!("round {round}: a node stopped: {e:#}"));
                assert_eq!(token, kept.trim(), "round {round}: a node serves another token than the file's");
            }
        }
    }

    /// The interleaving threads seldom hit, made to happen: node B reads the shared file
    /// empty, node A then replaces it with its token and starts, and only then does B go
    /// on to replace the empty file. B must keep A's token, not remove it and make its own.
    #[test]
    fn a_node_late_to_replace_an_empty_token_file_keeps_the_token_found_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "").expect("empty file");
        let config = Config { admin_token_file: Some(path.display().to_string()), ..Config::default() };
        assert!(matches!(read_token_file(&path), Ok(Kept::Empty)), "B reads it empty");
        let (a, _) = admin_token(&config).expect("A starts");
        remove_if_still_empty(&path).expect("B replaces what it read empty");
        assert_eq!(std::fs::read_to_string(&path).expect("the token file").trim(), a, "A's token was removed");
        let (b, _) = admin_token(&config).expect("B starts");
        assert_eq!(a, b);
    }
}
