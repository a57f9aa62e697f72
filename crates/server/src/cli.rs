//! The command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a user with the admin role, or give an existing user that role.
    /// The password is read from standard input (or prompted for on a terminal).
    CreateAdmin {
        #[arg(long)]
        username: String,
    },
}

impl Cli {
    pub fn config_sources(&self) -> ConfigSources {
        let mut flags = Vec::new();
        if let Some(bind) = &self.bind {
            flags.push(("BIND_ADDR", bind.clone()));
        }
        if self.no_migrate {
            flags.push(("RUN_MIGRATIONS", "false".to_string()));
        }
        let file = self
            .config
            .clone()
            .map_or(ConfigFile::Discover, ConfigFile::Explicit);
        ConfigSources::from_process(file, flags)
    }
}

/// Parses arguments, loads configuration and runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::load(&cli.config_sources())?;
    crate::telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&config).await,
        Command::Migrate => migrate(&config).await,
        Command::CreateAdmin { username } => create_admin(&config, &username).await,
    }
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    app.serve(app::shutdown_signal()).await?;
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = app::connect_store(config).await?;
    store
        .migrate()
        .await
        .context("applying database migrations")?;
    tracing::info!(database = %config.database_url.redacted(), "migrations applied");
    store.close().await;
    Ok(())
}

async fn create_admin(config: &Config, username: &str) -> anyhow::Result<()> {
    let password = read_password()?;
    let store = app::connect_store(config).await?;
    if config.run_migrations {
        store
            .migrate()
            .await
            .context("applying database migrations")?;
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
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}
