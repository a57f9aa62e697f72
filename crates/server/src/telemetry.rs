//! Logging setup: `RUST_LOG` filters (else `LOG_LEVEL`, else info),
//! `LOG_FORMAT=json` gives JSON lines, `LOG_FILE` sends them to a file
//! instead of standard error.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=info";

/// Where log lines go.
enum Sink {
    Stderr,
    File(Mutex<std::fs::File>),
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Box<dyn std::io::Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::File(file) => Box::new(LockedFile(file.lock().unwrap_or_else(std::sync::PoisonError::into_inner))),
        }
    }
}

struct LockedFile<'a>(std::sync::MutexGuard<'a, std::fs::File>);

impl std::io::Write for LockedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the subscriber. A `LOG_FILE` that cannot be opened is an error:
/// an operator who asked for a file must not lose the log silently.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| match &config.log_level {
        Some(level) => EnvFilter::new(format!("{level},sqlx=warn")),
        None => EnvFilter::new(DEFAULT_FILTER),
    });
    let (sink, ansi) = match &config.log_file {
        Some(path) => {
            let file = open_log_file(path).map_err(|err| anyhow::anyhow!("LOG_FILE {}: {err}", path.display()))?;
            (Sink::File(Mutex::new(file)), false)
        }
        // Colour codes only for a person at a terminal, never in log files.
        None => (Sink::Stderr, std::io::stderr().is_terminal()),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(sink)).try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(sink),
            )
            .try_init(),
    };
    // Already initialised (a test harness, a second call): keep the first.
    let _ = result;
    for notice in &config.legacy_notices {
        tracing::warn!("{notice}");
    }
    Ok(())
}
