//! Runs a user's backtest code where it cannot hurt anything.
//!
//! Each run is a fresh process chain, `prlimit` → `setpriv` → `bwrap` →
//! Python, with:
//! - resource limits set before anything of the user's runs (CPU seconds,
//!   address space, processes, file size, open files, no core dumps);
//! - an unprivileged uid of the run's own when the server is root (in the
//!   group of the account `algoagent sandbox setup` creates): root ignores
//!   `RLIMIT_NPROC`, so only a real uid makes the process limit hold
//!   against a fork bomb, and one uid per run keeps one run's bomb from
//!   exhausting another's limit;
//! - its own user, network, PID, IPC and UTS namespaces: no network at all,
//!   no view of the host's processes, `--die-with-parent`, and the whole
//!   namespace gone when its first process ends;
//! - a filesystem of read-only `/usr`, the read-only Python environment, a
//!   read-only `/input` (our runner, the code, the data) and a size-capped
//!   private `/tmp`, the only writable place. No `/etc`, no home, no
//!   environment variables of the server's;
//! - a wall-clock limit, and stdout and stderr read up to a cap (the run is
//!   killed past it).
//!
//! The runner inside (`runner.py`) is ours: it loads the code, finds its
//! `backtesting.Strategy`, runs backtesting.py on each symbol and writes
//! one JSON document to stdout (the code's own prints go to stderr).

pub mod setup;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The runner script, written into each run's `/input`.
pub const RUNNER: &str = include_str!("runner.py");

/// The account whose group runs take when the server is root.
pub const DEFAULT_USER: &str = "algoagent-sandbox";

/// Runs get a uid of their own, counted up from here (no account needed):
/// the process limit then counts one run's processes only, so a fork bomb
/// starves no other run, and whatever is left with that uid after a run is
/// that run's, to kill.
pub const UID_BASE: u32 = 1_800_000_000;
/// Runs at once, at most, on one machine.
const UID_SLOTS: u32 = 4096;

/// The sample series backtesting.py ships, by the names runs use.
pub const SAMPLE_SYMBOLS: [&str; 3] = ["GOOG", "EURUSD", "BTCUSD"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub cpu_seconds: u64,
    /// Address space; numpy with one BLAS thread needs about 1 GB.
    pub memory_bytes: u64,
    /// Processes (threads included) of the sandbox's uid.
    pub processes: u64,
    /// The largest file a run may write.
    pub file_bytes: u64,
    /// The private `/tmp`'s size.
    pub tmp_bytes: u64,
    /// Stdout and stderr each, before the run is killed.
    pub output_bytes: usize,
    pub wall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_seconds: 120,
            memory_bytes: 2 << 30,
            processes: 64,
            file_bytes: 64 << 20,
            tmp_bytes: 64 << 20,
            output_bytes: 1 << 20,
            wall: Duration::from_secs(120),
        }
    }
}

/// Where the sandbox's parts are.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The Python environment (`algoagent sandbox setup` makes it).
    pub env_dir: PathBuf,
    /// `bwrap`; `None` when it is not installed.
    pub bwrap: Option<PathBuf>,
    /// The account runs drop to when the server is root.
    pub user: String,
    pub limits: Limits,
}

impl SandboxSettings {
    /// `bwrap` from `PATH`, the rest as given.
    pub fn new(env_dir: PathBuf, user: String, limits: Limits) -> Self {
        Self { env_dir, bwrap: find_on_path("bwrap"), user, limits }
    }

    pub fn python(&self) -> PathBuf {
        self.env_dir.join("bin").join("python")
    }
}

/// Whether runs can happen, and if not why: `/readyz` and the dashboard
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Readiness {
    Ready { run_as: String },
    Unavailable { reason: String },
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Runs are refused rather than run unsandboxed.
    #[error("the sandbox is unavailable: {0}")]
    Unavailable(String),
    #[error("could not prepare the run: {0}")]
    Io(#[from] std::io::Error),
}

/// One symbol's OHLCV CSV for a run.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub symbol: String,
    pub path: PathBuf,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub code: String,
    pub data: Vec<DataFile>,
    pub cash: f64,
    pub commission: f64,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// `1mo` … `10y` back from the series' end (or `end_date`); `None` or
    /// `max` for all of it.
    pub period: Option<String>,
}

/// The periods a run may name.
pub const PERIODS: [&str; 8] = ["1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "max"];

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The runner's document: `results` per symbol, `timings`.
    Completed { result: Value },
    /// The code failed: its exception, as the runner caught it.
    Failed { error_type: String, message: String, traceback: Option<String> },
    /// Past the wall-clock limit.
    TimedOut,
    /// Ended by a limit or a signal without a word from the runner.
    Killed { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunOutput {
    pub verdict: Verdict,
    /// The code's prints (bounded).
    pub stderr: String,
    pub elapsed: Duration,
}

/// Who the process chain runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// The server is root: drop to a run's own uid and the account's group.
    Dropped { gid: u32 },
    /// The server is an ordinary user already: run as it.
    Current { uid: u32 },
}

/// A run's own uid, held machine-wide by an exclusive lock on its lock
/// file (so a server replica and `algoagent worker` on one host never share
/// one); the lock goes when this is dropped, or when its process dies.
struct UidSlot {
    uid: u32,
    _lock: std::fs::File,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this body).
        kill_all_of(self.uid);
    }
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    settings: SandboxSettings,
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        Self { settings }
    }

    /// The lowest run uid no process on this machine holds (a dying run's
    /// processes, a zombie its reaper has not collected yet) and no other
    /// run has locked.
    fn take_uid(&self) -> Option<UidSlot> {
        let dir = std::env::temp_dir().join("algoagent-sandbox-uids");
        std::fs::create_dir_all(&dir).ok()?;
        let busy = uids_with_processes();
        (UID_BASE..UID_BASE + UID_SLOTS).filter(|uid| !busy.contains(uid)).find_map(|uid| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{uid}.lock")))
                .ok()?;
            file.try_lock().ok()?;
            Some(UidSlot { uid, _lock: file })
        })
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    fn run_as(&self) -> Result<RunAs, String> {
        let uid = current_uid().ok_or("cannot read this process's uid from /proc/self/status")?;
        if uid != 0 {
            return Ok(RunAs::Current { uid });
        }
        match account(&self.settings.user) {
            Some((uid, gid)) if uid != 0 && gid != 0 => Ok(RunAs::Dropped { gid }),
            Some(_) => Err(format!("the sandbox account {} is root", self.settings.user)),
            None => {
                Err(format!("the sandbox account {} does not exist: run `algoagent sandbox setup`", self.settings.user))
            }
        }
    }

    /// Whether a run could start now: bwrap, the account and the Python
    /// environment are there. (`check` runs one.)
    pub fn readiness(&self) -> Readiness {
        let Some(bwrap) = &self.settings.bwrap else {
            return Readiness::Unavailable { reason: "bubblewrap (bwrap) is not installed".into() };
        };
        if !bwrap.exists() {
            return Readiness::Unavailable { reason: format!("{} is missing", bwrap.display()) };
        }
        if !self.settings.python().exists() {
            return Readiness::Unavailable {
                reason: format!(
                    "no Python environment at {}: run `algoagent sandbox setup`",
                    self.settings.env_dir.display()
                ),
            };
        }
        match self.run_as() {
            Ok(RunAs::Dropped { gid }) => Readiness::Ready {
                run_as: format!("a uid of its own from {UID_BASE} up, group {} ({gid})", self.settings.user),
            },
            Ok(RunAs::Current { uid }) => Readiness::Ready { run_as: format!("the server's own uid {uid}") },
            Err(reason) => Readiness::Unavailable { reason },
        }
    }

    /// A sample series' CSV in the environment, by symbol.
    pub fn sample_data(&self, symbol: &str) -> Option<PathBuf> {
        let name = SAMPLE_SYMBOLS.iter().find(|s| s.eq_ignore_ascii_case(symbol))?;
        let lib = self.settings.env_dir.join("lib");
        let python =
            std::fs::read_dir(&lib).ok()?.flatten().find(|e| e.file_name().to_string_lossy().starts_with("python"))?;
        let path = python.path().join("site-packages/backtesting/test").join(format!("{name}.csv"));
        path.exists().then_some(path)
    }

    /// Runs `input` in a fresh sandbox and waits for it to end.
    pub async fn run(&self, input: &RunInput) -> Result<RunOutput, SandboxError> {
        let bwrap = match (self.readiness(), &self.settings.bwrap) {
            (Readiness::Ready { .. }, Some(bwrap)) => bwrap.clone(),
            (Readiness::Unavailable { reason }, _) => return Err(SandboxError::Unavailable(reason)),
            (_, None) => return Err(SandboxError::Unavailable("bubblewrap (bwrap) is not installed".into())),
        };
        let run_as = self.run_as().map_err(SandboxError::Unavailable)?;
        let slot = match run_as {
            RunAs::Dropped { .. } => {
                Some(self.take_uid().ok_or_else(|| SandboxError::Unavailable("every run uid is in use".into()))?)
            }
            RunAs::Current { .. } => None,
        };
        let input_dir = prepare_input(input)?;
        let mut command = self.command(&bwrap, run_as, slot.as_ref().map(|slot| slot.uid), input_dir.path());
        let started = Instant::now();
        let mut child = command.spawn()?;
        let limits = self.settings.limits;
        let stdout = child.stdout.take().map(|out| read_bounded(out, limits.output_bytes));
        let stderr = child.stderr.take().map(|err| read_bounded(err, limits.output_bytes));
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(SandboxError::Io(std::io::Error::other("the run's output pipes are missing")));
        };
        let ended = tokio::time::timeout(limits.wall, async {
            let (stdout, stderr) = tokio::join!(stdout, stderr);
            (stdout, stderr)
        })
        .await;
        let Ok((stdout, stderr)) = ended else {
            let _ = child.kill().await;
            return Ok(RunOutput { verdict: Verdict::TimedOut, stderr: String::new(), elapsed: started.elapsed() });
        };
        let overflowed = stdout.overflowed || stderr.overflowed;
        if overflowed {
            let _ = child.kill().await;
        }
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let status = match status {
            Ok(status) => Some(status?),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        };
        let elapsed = started.elapsed();
        let stderr_text = String::from_utf8_lossy(&stderr.bytes).into_owned();
        let verdict = if overflowed {
            Verdict::Killed { reason: format!("printed more than {} bytes", limits.output_bytes) }
        } else {
            verdict_of(&stdout.bytes, status, &limits)
        };
        Ok(RunOutput { verdict, stderr: stderr_text, elapsed })
    }

    fn command(&self, bwrap: &Path, run_as: RunAs, uid: Option<u32>, input: &Path) -> tokio::process::Command {
        let limits = self.settings.limits;
        let env = self.settings.env_dir.display().to_string();
        let mut args: Vec<String> = vec![
            // SIGXCPU at the soft limit (a clear verdict), SIGKILL a second later.
            format!("--cpu={}:{}", limits.cpu_seconds, limits.cpu_seconds + 1),
            format!("--as={}", limits.memory_bytes),
            format!("--nproc={}", limits.processes),
            format!("--fsize={}", limits.file_bytes),
            "--nofile=256".into(),
            "--core=0".into(),
            "--".into(),
        ];
        if let (RunAs::Dropped { gid }, Some(uid)) = (run_as, uid) {
            args.extend([
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--bounding-set=-all".into(),
                "--no-new-privs".into(),
                "--".into(),
            ]);
        }
        args.push(bwrap.display().to_string());
        args.extend(
            [
                "--unshare-user",
                "--unshare-net",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--disable-userns",
                "--die-with-parent",
                "--new-session",
                "--hostname",
                "sandbox",
                "--ro-bind",
                "/usr",
                "/usr",
            ]
            .map(String::from),
        );
        // Merged-/usr systems link these into /usr; others have them apart.
        for top in ["/bin", "/lib", "/lib64", "/sbin"] {
            match std::fs::read_link(top) {
                Ok(target) => args.extend(["--symlink".into(), target.display().to_string(), top.into()]),
                Err(_) if Path::new(top).is_dir() => args.extend(["--ro-bind".into(), top.into(), top.into()]),
                Err(_) => {}
            }
        }
        args.extend(["--size".into(), limits.tmp_bytes.to_string(), "--tmpfs".into(), "/tmp".into()]);
        args.extend(["--ro-bind".into(), env.clone(), env.clone()]);
        args.extend(["--ro-bind".into(), input.display().to_string(), "/input".into()]);
        args.extend(["--proc".into(), "/proc".into(), "--dev".into(), "/dev".into()]);
        // The root bwrap builds is a tmpfs of its own: read-only, so /tmp
        // (size-capped) is the one writable place.
        args.extend(["--remount-ro".into(), "/".into()]);
        args.push("--clearenv".into());
        for (name, value) in [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/tmp"),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
            // One BLAS thread: within the process and memory limits.
            ("OPENBLAS_NUM_THREADS", "1"),
            ("OMP_NUM_THREADS", "1"),
            ("MKL_NUM_THREADS", "1"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ] {
            args.extend(["--setenv".into(), name.into(), value.into()]);
        }
        args.extend(["--chdir".into(), "/tmp".into(), "--".into()]);
        args.extend([self.settings.python().display().to_string(), "-I".into(), "/input/runner.py".into()]);

        let mut command = tokio::process::Command::new("prlimit");
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// The run's read-only `/input`: our runner, the code, the parameters and
/// a copy of each data file (the server's data directory is not the
/// sandbox's to read).
pub fn prepare_input(input: &RunInput) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("algoagent-run-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let write = |name: &str, contents: &[u8]| -> std::io::Result<()> {
        let path = dir.path().join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
    };
    write("runner.py", RUNNER.as_bytes())?;
    write("strategy.py", input.code.as_bytes())?;
    let mut symbols = Vec::new();
    for (n, data) in input.data.iter().enumerate() {
        let name = format!("data-{n}.csv");
        write(&name, &std::fs::read(&data.path)?)?;
        symbols.push(serde_json::json!({ "symbol": data.symbol, "file": name }));
    }
    let params = serde_json::json!({
        "symbols": symbols,
        "cash": input.cash,
        "commission": input.commission,
        "start_date": input.start_date,
        "end_date": input.end_date,
        "period": input.period,
    });
    write("params.json", params.to_string().as_bytes())?;
    Ok(dir)
}

struct Bounded {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// Reads up to `cap` bytes; stops at the first byte past it.
async fn read_bounded(mut from: impl AsyncRead + Unpin, cap: usize) -> Bounded {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return Bounded { bytes, overflowed: false },
            Ok(n) if bytes.len() + n > cap => {
                bytes.extend_from_slice(&chunk[..cap - bytes.len()]);
                return Bounded { bytes, overflowed: true };
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The runner's document if it wrote one, else what the exit says.
fn verdict_of(stdout: &[u8], status: Option<std::process::ExitStatus>, limits: &Limits) -> Verdict {
    use std::os::unix::process::ExitStatusExt;
    if let Ok(document) = serde_json::from_slice::<Value>(stdout) {
        if document["ok"] == Value::Bool(true) {
            return Verdict::Completed { result: document };
        }
        if let Some(error_type) = document["error_type"].as_str() {
            return Verdict::Failed {
                error_type: error_type.to_string(),
                message: document["error_message"].as_str().unwrap_or_default().to_string(),
                traceback: document["traceback"].as_str().map(str::to_string),
            };
        }
    }
    // bwrap passes a signal that ended its child on as exit status 128 + N.
    let signal = status.and_then(|s| s.signal().or(s.code().filter(|code| *code > 128).map(|code| code - 128)));
    let reason = match (signal, status.and_then(|s| s.code())) {
        (None, None) => "it did not exit".to_string(),
        (Some(9), _) => format!("killed (SIGKILL): past a limit (CPU {} s or memory)", limits.cpu_seconds),
        (Some(24), _) => format!("CPU time limit ({} s) reached", limits.cpu_seconds),
        (Some(25), _) => format!("file size limit ({} bytes) reached", limits.file_bytes),
        (Some(signal), _) => format!("killed by signal {signal}"),
        (None, Some(code)) => format!("exited with status {code} without a result"),
    };
    Verdict::Killed { reason }
}

/// Every process's real uid, from /proc.
fn process_uids() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let uid = status.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, uid))
        })
        .collect()
}

fn uids_with_processes() -> std::collections::BTreeSet<u32> {
    process_uids().into_iter().map(|(_, uid)| uid).filter(|uid| *uid >= UID_BASE).collect()
}

/// SIGKILL to whatever a finished run left behind under its uid (a
/// zombie is already dead and only waits for its reaper).
fn kill_all_of(uid: u32) {
    let pids: Vec<String> =
        process_uids().into_iter().filter(|(_, owner)| *owner == uid).map(|(pid, _)| pid.to_string()).collect();
    if !pids.is_empty() {
        let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).stderr(Stdio::null()).status();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// This process's effective uid, from /proc (no libc needed).
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// An account's uid and gid, from /etc/passwd.
fn account(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name)).then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_uids_are_read_without_libc() {
        assert_eq!(account("root"), Some((0, 0)));
        assert_eq!(account("no-such-account-here"), None);
        assert!(current_uid().is_some());
    }

    #[test]
    fn an_exit_without_a_document_names_the_limit() {
        use std::os::unix::process::ExitStatusExt;
        let limits = Limits::default();
        let killed = verdict_of(b"", Some(std::process::ExitStatus::from_raw(9)), &limits);
        assert!(matches!(killed, Verdict::Killed { reason } if reason.contains("SIGKILL")));
        // bwrap's way of saying its child died of SIGXCPU: exit 128 + 24.
        let cpu = verdict_of(b"", Some(std::process::ExitStatus::from_raw(152 << 8)), &limits);
        assert!(matches!(cpu, Verdict::Killed { reason } if reason.contains("CPU time limit")));
        let failed = verdict_of(br#"{"ok": false, "error_type": "ValueError", "error_message": "bad"}"#, None, &limits);
        assert!(matches!(failed, Verdict::Failed { error_type, .. } if error_type == "ValueError"));
    }
}
