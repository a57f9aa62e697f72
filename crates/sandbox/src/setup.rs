//! `algoagent sandbox setup`: the account runs drop to, the pinned Python
//! environment, and a real run in the sandbox to prove both.

use std::path::Path;
use std::process::Stdio;

use crate::{DataFile, Readiness, RunInput, Sandbox, SandboxSettings, Verdict};

/// The environment's packages, pinned.
pub const REQUIREMENTS: &str = include_str!("requirements.txt");

/// The Python the environment is built from: the system's, which the
/// sandbox can see (a per-user install under a home directory it cannot).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A moving-average crossover on GOOG: setup's proof that a run works.
pub const CHECK_STRATEGY: &str = r#"
from backtesting import Strategy
from backtesting.lib import crossover
from backtesting.test import SMA


class SmaCross(Strategy):
    fast = 10
    slow = 30

    def init(self):
        self.fast_ma = self.I(SMA, self.data.Close, self.fast)
        self.slow_ma = self.I(SMA, self.data.Close, self.slow)

    def next(self):
        if crossover(self.fast_ma, self.slow_ma):
            self.buy()
        elif crossover(self.slow_ma, self.fast_ma):
            self.position.close()
"#;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Missing(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("the check run failed: {0}")]
    Check(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn run(program: &str, args: &[&str]) -> Result<(), SetupError> {
    let output = tokio::process::Command::new(program).args(args).stdin(Stdio::null()).output().await?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    Err(SetupError::Command { command: format!("{program} {}", args.join(" ")), detail })
}

/// Makes everything a run needs, and proves it with one. Each step is
/// skipped when already done, so running it again is cheap. `say` gets a
/// line per step.
pub async fn setup(settings: &SandboxSettings, check: bool, mut say: impl FnMut(String)) -> Result<(), SetupError> {
    if settings.bwrap.is_none() {
        return Err(SetupError::Missing(
            "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)".into(),
        ));
    }
    if crate::current_uid() == Some(0) {
        if crate::account(&settings.user).is_none() {
            run(
                "useradd",
                &[
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    &settings.user,
                ],
            )
            .await?;
            say(format!("created the account {}", settings.user));
        } else {
            say(format!("the account {} exists", settings.user));
        }
    } else {
        say("not root: runs will use this process's own uid".to_string());
    }

    let env = settings.env_dir.display().to_string();
    if !settings.python().exists() {
        if !Path::new(SYSTEM_PYTHON).exists() {
            return Err(SetupError::Missing(format!("{SYSTEM_PYTHON} is missing (apt-get install python3-venv)")));
        }
        run(SYSTEM_PYTHON, &["-m", "venv", &env]).await?;
        say(format!("created the Python environment at {env}"));
    }
    let requirements = tempfile::Builder::new().prefix("algoagent-requirements-").suffix(".txt").tempfile()?;
    std::fs::write(requirements.path(), REQUIREMENTS)?;
    let pip = settings.env_dir.join("bin").join("pip").display().to_string();
    let requirements_path = requirements.path().display().to_string();
    run(&pip, &["install", "--quiet", "--disable-pip-version-check", "--no-input", "-r", &requirements_path]).await?;
    say("installed the pinned packages (backtesting, pandas, numpy)".to_string());

    if !check {
        say("the check run was skipped".to_string());
        return Ok(());
    }
    let sandbox = Sandbox::new(settings.clone());
    if let Readiness::Unavailable { reason } = sandbox.readiness() {
        return Err(SetupError::Check(reason));
    }
    let data = sandbox.sample_data("GOOG").ok_or_else(|| SetupError::Check("GOOG sample data missing".into()))?;
    let input = RunInput {
        code: CHECK_STRATEGY.to_string(),
        data: vec![DataFile { symbol: "GOOG".into(), path: data }],
        cash: 10_000.0,
        commission: 0.002,
        start_date: None,
        end_date: None,
        period: None,
    };
    let output = sandbox.run(&input).await.map_err(|err| SetupError::Check(err.to_string()))?;
    match output.verdict {
        Verdict::Completed { result } => {
            let trades = &result["results"][0]["metrics"]["total_trades"];
            let import = result["timings"]["import_seconds"].as_f64().unwrap_or_default();
            say(format!(
                "a check backtest ran in the sandbox: {trades} trades on GOOG, {:.2} s in all ({import:.2} s importing)",
                output.elapsed.as_secs_f64()
            ));
            Ok(())
        }
        other => Err(SetupError::Check(format!("{other:?}; stderr: {}", output.stderr))),
    }
}
