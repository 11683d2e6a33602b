//! The `hooklane` command: one binary for the server and its tools.
#![forbid(unsafe_code)]

mod bench;
mod config;
mod forward;
mod housekeeping;
mod listen;
mod output;
mod serve;
mod sign_tools;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hooklane", version, about = "Webhooks in and out, in one binary")]
struct Cli {
    /// TOML configuration file (environment variables HOOKLANE_* override it).
    #[arg(long, short, global = true, env = "HOOKLANE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the API and the delivery engine.
    Serve,
    /// Creates or updates the database schema, then exits.
    Migrate,
    /// Copies the embedded database into a new file, consistently, while `serve` may be
    /// running: a backup to restore by starting hooklane on it.
    Backup {
        /// The new file to write (it must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// A local webhook receiver for development: prints each delivery and checks its signature.
    Listen(listen::ListenArgs),
    /// Measures throughput and latency: a `serve` child process, a loopback receiver and
    /// concurrent API clients; prints one JSON line.
    Bench(bench::BenchArgs),
    /// Signs a payload as hooklane signs deliveries (Standard Webhooks) and POSTs it to a
    /// URL: for trying a receiver. Exits 1 unless it answers 2xx.
    Send(sign_tools::SendArgs),
    /// Checks a Standard Webhooks signature as a receiver must. Exits 1 when it does not hold.
    Verify(sign_tools::VerifyArgs),
    /// Posts an application's messages, read from a hooklane server's event stream, to a
    /// local URL, signed: webhooks on a machine no server can reach.
    Forward(forward::ForwardArgs),
    /// Prints a new endpoint secret: a `whsec_` one, or an Ed25519 key pair (`whsk_`) and
    /// its public key (`whpk_`).
    Keygen(sign_tools::KeygenArgs),
    /// Prints the OpenAPI document of the API (the one served at `/api/v1/openapi.json`).
    Openapi,
    /// Runs endpoints' JavaScript transformations for `serve`, one job per line on stdin
    /// (started by `serve` itself, never by hand).
    #[command(hide = true)]
    ScriptWorker,
}

fn main() -> anyhow::Result<()> {
    forget_empty_command_variables();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            let config = config::Config::load(cli.config.as_deref())?;
            runtime(Some(config.workers()))?.block_on(serve::run(config))
        }
        Command::Migrate => {
            let config = config::Config::load(cli.config.as_deref())?;
            warn_unknown_environment();
            // The lock `serve` holds on a SQLite file, held until the schema is done: a
            // migration under a running server would change its tables beneath it (and it
            // migrated them at its own start), and a server started meanwhile stops at once.
            let held = "a running serve migrated the schema when it started; stop it first to run migrate";
            let _only_process = config.sqlite_path().map(|db| serve::lock_database(Path::new(db), held)).transpose()?;
            runtime(None)?.block_on(async {
                hooklane_store::open(&config.database_url).await?;
                println!("database schema is up to date ({})", config.database_url_for_display());
                Ok(())
            })
        }
        Command::Backup { to } => {
            let config = config::Config::load(cli.config.as_deref())?;
            warn_unknown_environment();
            runtime(None)?.block_on(async {
                let report = hooklane_store::backup(&config.database_url, &to).await?;
                println!("backed up {} messages ({} bytes) to {}", report.messages, report.bytes, to.display());
                Ok(())
            })
        }
        Command::Listen(args) => runtime(None)?.block_on(listen::run(args)),
        Command::Bench(args) => runtime(None)?.block_on(bench::run(args)),
        Command::Send(args) => exit_with(runtime(None)?.block_on(sign_tools::send(args))?),
        Command::Verify(args) => exit_with(sign_tools::verify(args)?),
        Command::Forward(args) => runtime(None)?.block_on(forward::run(args)),
        Command::Keygen(args) => {
            sign_tools::keygen(args);
            Ok(())
        }
        Command::ScriptWorker => Ok(hooklane_dispatch::script::serve_worker()?),
        Command::Openapi => {
            println!("{}", hooklane_server::openapi::document().to_pretty_json()?);
            Ok(())
        }
    }
}

/// The commands' own variables (`HOOKLANE_CONFIG`, `HOOKLANE_URL`, `HOOKLANE_TOKEN`, the
/// secrets) set to nothing are taken as not set, as the settings' are: clap passes an
/// empty value on to the option, so `HOOKLANE_CONFIG=` (a compose file's
/// `${HOOKLANE_CONFIG:-}`) stopped every command with "a value is required for '--config'",
/// and `HOOKLANE_URL=` made forward's server no URL instead of the default. Called first
/// thing in `main`, before any thread is started.
fn forget_empty_command_variables() {
    for name in config::COMMAND_VARIABLES {
        if std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty()) {
            std::env::remove_var(name);
        }
    }
}

/// Warns on stderr of each `HOOKLANE_*` variable that is no setting, as `serve` logs them:
/// `HOOKLANE_DATABASE_ULR=… hooklane migrate` would otherwise migrate (or `backup` copy)
/// the default database without a word.
fn warn_unknown_environment() {
    for name in config::Config::unknown_environment() {
        eprintln!("warning: {}", config::unknown_variable_warning(&name));
    }
}

/// Exit status 1 for a check that did not pass (0 otherwise), after what was printed.
fn exit_with(passed: bool) -> anyhow::Result<()> {
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// A multi-threaded runtime with `workers` threads (tokio's default: one per CPU).
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}
