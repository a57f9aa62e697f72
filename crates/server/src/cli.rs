//! The command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use api_core::rotation_history::DatabaseEventLog;

use crate::app::{self, App};
use crate::config::{self, Config, ConfigFile, ConfigSources};

#[derive(Debug, Parser)]
#[command(name = "algoagent", version, about = "AlgoAgent API server")]
pub struct Cli {
    /// Settings file (TOML). Default: `CONFIG_FILE` or ./algoagent.toml if present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides BIND_ADDR).
    #[arg(long, global = true, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Do not apply migrations at start-up.
    #[arg(long, global = true)]
    pub no_migrate: bool,
    /// A dotenv file of settings (the old deployment's `.env` works as it
    /// is). Default: `.env` in the working directory, if there is one. The
    /// process environment wins over the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve {
        /// Run against an in-process Gemini simulator with built-in keys.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a user with the admin role, or give an existing user that role.
    /// The password is read from standard input (or prompted for on a terminal).
    CreateAdmin {
        #[arg(long)]
        username: String,
    },
    /// Import an old Django deployment's database (users, conversations,
    /// strategies), in one transaction. Old JWTs do not come across: users
    /// log in again, with their old passwords.
    ImportDjango {
        /// The old database: a SQLite file (or sqlite://…) or a postgres:// URL.
        #[arg(long, value_name = "DATABASE")]
        from: String,
        /// Print what would be imported, per table, and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import into a database that already has users: every id is
        /// renumbered past ours, and the old → new map written to --map-file.
        #[arg(long)]
        merge: bool,
        /// The owner of strategies whose created_by is empty.
        #[arg(long, value_name = "USERNAME")]
        orphans_to: Option<String>,
        /// With --merge: where the old → new id map is written (JSON).
        #[arg(long, value_name = "FILE", default_value = "import-id-map.json")]
        map_file: PathBuf,
    },
    /// Inspect and manage the Gemini key pool.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Run backtests from the shared queue, serving no HTTP: a worker
    /// machine beside the server replicas (SANDBOX_WORKERS at once).
    Worker,
    /// The backtest sandbox.
    Sandbox {
        #[command(subcommand)]
        action: SandboxCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create the unprivileged account runs drop to (when root), the pinned
    /// Python environment at SANDBOX_ENV_DIR, and prove both with a run.
    Setup {
        /// Skip the proving run: for an image build, where namespaces are
        /// not allowed (the running container's `sandbox status` checks).
        #[arg(long)]
        skip_check: bool,
    },
    /// Say whether backtests can run here, and if not why.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print every key's health, every bucket's usage and the recent history.
    Status,
    /// Lift the cooldowns and disables of a project (e.g. after `limit: 0`
    /// was fixed, or a key replaced), optionally for one model only.
    Reset { project: String, model: Option<String> },
    /// Validate KEYS_FILE and make the running server re-read it (SIGHUP).
    Reload,
}

impl Cli {
    pub fn config_sources(&self) -> anyhow::Result<ConfigSources> {
        let mut flags = Vec::new();
        if let Some(bind) = &self.bind {
            flags.push(("BIND_ADDR", bind.clone()));
        }
        if self.no_migrate {
            flags.push(("RUN_MIGRATIONS", "false".to_string()));
        }
        let file = self.config.clone().map_or(ConfigFile::Discover, ConfigFile::Explicit);
        let mut sources = ConfigSources::from_process(file, flags);
        let dotenv = match &self.env_file {
            Some(path) => Some((path.clone(), true)),
            None => Some((PathBuf::from(".env"), false)),
        };
        if let Some((path, required)) = dotenv {
            sources.env.extend(dotenv_entries(&path, required, &sources.env)?);
        }
        Ok(sources)
    }
}

/// The settings of a dotenv file that the process environment does not
/// already set (the environment wins). A missing default `.env` is no
/// error; a named one must exist.
fn dotenv_entries(
    path: &std::path::Path,
    required: bool,
    environment: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let entries = match dotenvy::from_path_iter(path) {
        Ok(entries) => entries,
        Err(dotenvy::Error::Io(err)) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Vec::new())
        }
        Err(err) => return Err(dotenv_error(path, &err)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let (name, value) = entry.map_err(|err| dotenv_error(path, &err))?;
        if !environment.iter().any(|(set, _)| *set == name) {
            found.push((name, value));
        }
    }
    Ok(found)
}

/// A dotenv error without the line's value: dotenvy quotes the text it
/// could not parse, and a `.env` value is often a secret. The line is named
/// by its number and variable instead.
fn dotenv_error(path: &std::path::Path, err: &dotenvy::Error) -> anyhow::Error {
    match err {
        dotenvy::Error::LineParse(text, _) => {
            let lines = std::fs::read_to_string(path).unwrap_or_default();
            let place = lines
                .lines()
                .enumerate()
                .find(|(_, line)| !text.is_empty() && line.contains(text.as_str()))
                .map(|(number, line)| {
                    let name = line.split_once('=').map_or("", |(name, _)| name.trim());
                    format!("line {} ({name})", number + 1)
                })
                .unwrap_or_else(|| "a line".to_string());
            anyhow::anyhow!("env file {}: {place} is not NAME=value (its value is not shown)", path.display())
        }
        other => anyhow::anyhow!("env file {}: {other}", path.display()),
    }
}

/// Parses arguments, loads configuration and runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::load(&cli.config_sources()?)?;
    crate::telemetry::init(&config)?;
    match cli.command.unwrap_or(Command::Serve { demo: false }) {
        Command::Serve { demo } => serve(&config, demo).await,
        Command::Migrate => migrate(&config).await,
        Command::CreateAdmin { username } => create_admin(&config, &username).await,
        Command::Keys { action } => keys(&config, action).await,
        Command::Sandbox { action } => sandbox_command(&config, action).await,
        Command::Worker => worker(&config).await,
        Command::ImportDjango { from, dry_run, merge, orphans_to, map_file } => {
            let options =
                crate::import_django::ImportOptions { from, dry_run, merge, orphans_to, map_file: Some(map_file) };
            import_django(&config, &options).await
        }
    }
}

/// How long `algoagent worker` waits, at a stop signal, for its workers
/// to give their runs back.
const WORKER_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn worker(config: &Config) -> anyhow::Result<()> {
    let state = App::state_only(config).await?;
    if let sandbox::Readiness::Unavailable { reason } = state.sandbox.readiness() {
        anyhow::bail!("the sandbox is unavailable: {reason}");
    }
    if config.sandbox.workers == 0 {
        anyhow::bail!("SANDBOX_WORKERS=0: a worker with no slots would run nothing");
    }
    tracing::info!(workers = config.sandbox.workers, "backtest worker started");
    let workers = tokio::spawn(backtests::worker::run_workers(state.clone(), config.sandbox.workers));
    app::shutdown_signal().await;
    tracing::info!("backtest worker stopping: running backtests go back to the queue");
    state.tasks.begin_shutdown();
    if tokio::time::timeout(WORKER_STOP_LIMIT, workers).await.is_err() {
        tracing::warn!("the workers did not stop in time; their runs return to the queue when their leases run out");
    }
    state.store.close().await;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the sandbox commands report to the operator's terminal")]
async fn sandbox_command(config: &Config, action: SandboxCommand) -> anyhow::Result<()> {
    let settings = config.sandbox.settings();
    match action {
        SandboxCommand::Setup { skip_check } => {
            sandbox::setup::setup(&settings, !skip_check, |line| println!("{line}")).await?;
            println!("the sandbox is ready: {}", settings.env_dir.display());
        }
        SandboxCommand::Status => match sandbox::Sandbox::new(settings).readiness() {
            sandbox::Readiness::Ready { run_as } => println!("ready: runs as {run_as}"),
            sandbox::Readiness::Unavailable { reason } => anyhow::bail!("unavailable: {reason}"),
        },
    }
    Ok(())
}

/// The rotation history the keys commands read and add to: the server's,
/// in the database, or (when it cannot be reached) a log of this command's
/// own, said so on the terminal.
#[allow(clippy::print_stderr, reason = "a note to the operator's terminal")]
async fn history_log(
    config: &Config,
) -> (std::sync::Arc<dyn key_rotation::events::EventLog>, Option<std::sync::Arc<DatabaseEventLog>>) {
    match app::connect_store(config).await {
        Ok(store) => {
            let log = std::sync::Arc::new(DatabaseEventLog::new(store));
            (log.clone(), Some(log))
        }
        Err(err) => {
            eprintln!("note: the database is unreachable ({err:#}); the rotation history is not shown or kept");
            (std::sync::Arc::new(key_rotation::events::MemoryEventLog::default()), None)
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the keys commands report to the operator's terminal")]
async fn keys(config: &Config, action: KeysCommand) -> anyhow::Result<()> {
    match action {
        KeysCommand::Status => {
            let (history, _) = history_log(config).await;
            let secrets = crate::keys::secret_store(config)?;
            let pool_config = match crate::keys::load_pool_config(config, secrets.as_ref()).await {
                Ok(pool_config) => pool_config,
                // The quota state in Redis is still worth showing.
                Err(err) if config.redis_url.is_some() => {
                    println!("note: the secret store did not answer this command: {err:#}");
                    println!("      keys are shown without their secrets (…????).\n");
                    crate::keys::load_pool_config_unread(config)?
                }
                Err(err) => return Err(err),
            };
            let services =
                crate::keys::build_with(config, pool_config, secrets.clone(), &config.gemini_base_url, history)?;
            let pool = &services.pool;
            if services.redis.is_none() {
                println!("note: without REDIS_URL the quota state lives inside the running server; this shows the configuration only.");
            }
            println!("{:<28} {:<22} {:<22} {:<8} {:<13} reason", "key", "model", "project", "workload", "state");
            for key in pool.health().await? {
                println!(
                    "{:<28} {:<22} {:<22} {:<8} {:<13} {}",
                    key.display,
                    key.model,
                    key.project,
                    key.workload,
                    key.state,
                    key.reason.unwrap_or_default()
                );
            }
            println!();
            println!("{:<22} {:<22} {:>11} {:>17} {:>13}", "project", "model", "requests", "tokens", "today");
            for bucket in pool.usage().await? {
                let today = match bucket.rpd {
                    Some(rpd) => format!("{}/{rpd}", bucket.requests_today),
                    None => bucket.requests_today.to_string(),
                };
                println!(
                    "{:<22} {:<22} {:>11} {:>17} {:>13}{}",
                    bucket.project,
                    bucket.model,
                    format!("{}/{}", bucket.requests_in_window, bucket.rpm),
                    format!("{}/{}", bucket.tokens_in_window, bucket.tpm),
                    today,
                    if bucket.warning { "  near limit" } else { "" }
                );
            }
            if let (Some(redis), true) = (&services.redis, config.secret_store_type.is_remote()) {
                print_shared_store_status(
                    &crate::keys::SharedStoreStatus::new(redis.clone(), config),
                    &secrets.describe(),
                )
                .await;
            }
            let history = pool.history(20).await;
            if !history.is_empty() {
                println!();
                for event in history {
                    println!(
                        "{} {:<10} {:<16} {}",
                        event.at_ms,
                        event.kind,
                        event.key_id.unwrap_or_default(),
                        event.detail
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Reset { project, model } => {
            let (history, database) = history_log(config).await;
            let services = crate::keys::build(config, history).await?;
            anyhow::ensure!(
                services.redis.is_some(),
                "without REDIS_URL the quota state lives inside the running server; restart it to reset"
            );
            let keys = services.pool.reset(&project, model.as_deref(), "cli").await?;
            if let Some(database) = database {
                // The reset is done either way; only its record is at stake.
                if let Err(err) = database.flush().await {
                    eprintln!("note: the reset is not in the rotation history: {err}");
                }
            }
            anyhow::ensure!(keys > 0, "no configured key belongs to project {project}");
            println!("reset {keys} key(s) of project {project}");
            Ok(())
        }
        KeysCommand::Reload => {
            let store = crate::keys::secret_store(config)?;
            let pool = crate::keys::load_pool_config(config, store.as_ref()).await?;
            println!("{} is valid: {} key(s)", config.keys_file.display(), pool.keys.len());
            match crate::reload::request(config).await? {
                crate::reload::Delivered::Replicas(count) => println!("asked {count} replica(s) to reload"),
                crate::reload::Delivered::Process(pid) => println!("asked the server (pid {pid}) to reload"),
            }
            Ok(())
        }
    }
}

/// What each live replica last saw of the secret store.
#[allow(clippy::print_stdout, reason = "the keys commands report to the operator's terminal")]
async fn print_shared_store_status(shared: &crate::keys::SharedStoreStatus, store: &str) {
    println!();
    match shared.read().await {
        Err(err) => println!("secret store {store}: the replicas' view is unavailable ({err:#})"),
        Ok(reports) if reports.is_empty() => println!("secret store {store}: no running replica has reported yet"),
        Ok(reports) => {
            for report in reports {
                match report.failing_since_ms {
                    None => println!("secret store {store}: answers replica {}", report.replica),
                    Some(since) => println!(
                        "secret store {store}: FAILING on replica {} since {} ({} failed refreshes): {}",
                        report.replica,
                        chrono::DateTime::from_timestamp_millis(i64::try_from(since).unwrap_or_default())
                            .map(|at| api_core::time::iso8601(&at))
                            .unwrap_or_default(),
                        report.failures,
                        report.cause.unwrap_or_default()
                    ),
                }
            }
        }
    }
}

async fn serve(config: &Config, demo: bool) -> anyhow::Result<()> {
    let app = App::build_with(config, demo).await?;
    if demo {
        crate::demo::create_admin(&app.state().store, app.local_addr()?).await?;
        tokio::spawn(crate::demo::drive_traffic(app.state().gemini.clone()));
    }
    app.serve(app::shutdown_signal()).await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the import's summary is for the operator's terminal")]
async fn import_django(config: &Config, options: &crate::import_django::ImportOptions) -> anyhow::Result<()> {
    use crate::import_django::Outcome;
    let store = app::connect_store(config).await?;
    if config.run_migrations {
        store.migrate().await.context("applying database migrations")?;
    }
    let outcome = crate::import_django::import(&store, options).await;
    store.close().await;
    match outcome? {
        Outcome::AlreadyImported { at } => {
            println!("already imported (at {}): nothing changed", api_core::time::iso8601(&at));
        }
        Outcome::DryRun(summary) => {
            println!("dry run: nothing was written. It would import:\n");
            print!("{}", summary.render());
        }
        Outcome::Imported(summary) => {
            print!("{}", summary.render());
            if options.merge {
                if let Some(path) = &options.map_file {
                    println!("\nold → new ids written to {}", path.display());
                }
            }
            println!("\nimported. Users log in with their old passwords; old tokens are not valid here.");
        }
    }
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = app::connect_store(config).await?;
    store.migrate().await.context("applying database migrations")?;
    tracing::info!(database = %config.database_url.redacted(), "migrations applied");
    store.close().await;
    Ok(())
}

async fn create_admin(config: &Config, username: &str) -> anyhow::Result<()> {
    let password = read_password()?;
    let store = app::connect_store(config).await?;
    if config.run_migrations {
        store.migrate().await.context("applying database migrations")?;
    }
    let outcome = auth_conversation::accounts::ensure_admin(&store, username, &password).await?;
    let verb = match outcome {
        auth_conversation::accounts::AdminOutcome::Created => "created",
        auth_conversation::accounts::AdminOutcome::Promoted => "promoted",
    };
    tracing::info!(username, "admin user {verb}");
    store.close().await;
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password (again): ")?;
        anyhow::ensure!(first == second, "the passwords did not match");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_env_line_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "GEMINI_KEY_A=AIzaSy secret with spaces\n").unwrap();
        let message = format!("{:#}", dotenv_entries(&path, true, &[]).unwrap_err());
        assert!(message.contains("GEMINI_KEY_A"), "{message}");
        assert!(!message.contains("AIzaSy"), "{message}");
    }
}
