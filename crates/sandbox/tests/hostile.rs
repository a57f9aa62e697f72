//! Hostile code against the real sandbox: bubblewrap, the dedicated
//! account, the pinned Python environment. Each attack is contained,
//! reported as a failed (or killed) run, and the next honest run still
//! works.
//!
//! Runs with `ALGOAGENT_SANDBOX_TESTS=1` and `ALGOAGENT_SANDBOX_ENV` (the
//! environment `algoagent sandbox setup` made); `.ci/run` sets both, once,
//! not once per database backend. The attacks run one at a time.

use std::path::PathBuf;
use std::time::Duration;

use sandbox::{DataFile, Limits, RunInput, RunOutput, Sandbox, SandboxSettings, Verdict, DEFAULT_USER};

/// One attack at a time: a fork bomb beside a timing test would be unfair
/// to both.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
fn sandbox() -> Option<Sandbox> {
    if std::env::var("ALGOAGENT_SANDBOX_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set ALGOAGENT_SANDBOX_TESTS=1 and ALGOAGENT_SANDBOX_ENV to run the sandbox tests");
        return None;
    }
    let env_dir = PathBuf::from(std::env::var("ALGOAGENT_SANDBOX_ENV").expect("ALGOAGENT_SANDBOX_ENV"));
    let limits = Limits { cpu_seconds: 8, wall: Duration::from_secs(30), ..Limits::default() };
    let sandbox = Sandbox::new(SandboxSettings::new(env_dir, DEFAULT_USER.into(), limits));
    assert!(sandbox.readiness().is_ready(), "{:?}", sandbox.readiness());
    Some(sandbox)
}

async fn run(sandbox: &Sandbox, code: &str) -> RunOutput {
    let data = sandbox.sample_data("GOOG").expect("GOOG sample");
    let input = RunInput {
        code: code.to_string(),
        data: vec![DataFile { symbol: "GOOG".into(), path: data }],
        cash: 10_000.0,
        commission: 0.002,
        start_date: Some("2012-01-01".into()),
        end_date: None,
        period: None,
    };
    sandbox.run(&input).await.expect("the sandbox started")
}

/// The honest run after each attack: the worker is healthy.
async fn still_healthy(sandbox: &Sandbox) {
    let output = run(sandbox, sandbox::setup::CHECK_STRATEGY).await;
    assert!(
        matches!(output.verdict, Verdict::Completed { .. }),
        "after an attack: {:?} {}",
        output.verdict,
        output.stderr
    );
}

fn failed_with(output: &RunOutput, error_type: &str) -> String {
    match &output.verdict {
        Verdict::Failed { error_type: seen, message, .. } if seen == error_type => message.clone(),
        other => panic!("expected a failed run ({error_type}), got {other:?}; stderr: {}", output.stderr),
    }
}

#[tokio::test]
async fn an_honest_strategy_runs_and_reports_its_metrics() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let output = run(&sandbox, sandbox::setup::CHECK_STRATEGY).await;
    let Verdict::Completed { result } = &output.verdict else { panic!("{:?} {}", output.verdict, output.stderr) };
    let symbol = &result["results"][0];
    assert_eq!(symbol["symbol"], "GOOG");
    assert!(symbol["metrics"]["total_trades"].as_u64().is_some_and(|n| n > 0), "{symbol}");
    assert!(symbol["metrics"]["equity_final"].is_f64(), "{symbol}");
    assert!(symbol["equity_curve"].as_array().is_some_and(|points| points.len() > 10));
    assert!(!result.to_string().contains("NaN"), "NaN must become null");
}

#[tokio::test]
async fn a_socket_goes_nowhere() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    // A listener on the host's loopback: the sandbox has a loopback of its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\nerrors = []\nfor host in ['127.0.0.1', '1.1.1.1']:\n    try:\n        socket.create_connection((host, {port}), timeout=2)\n        errors.append(host + ' connected')\n    except OSError as err:\n        errors.append(host + ': ' + type(err).__name__)\nraise RuntimeError('; '.join(errors))\n"
    );
    let output = run(&sandbox, &code).await;
    let message = failed_with(&output, "RuntimeError");
    assert!(!message.contains("connected"), "{message}");
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the host's listener saw a connection");
    still_healthy(&sandbox).await;
}

#[tokio::test]
async fn the_hosts_files_and_the_servers_environment_are_out_of_sight() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    // Something secret in this process's environment, as a server has.
    std::env::set_var("ALGOAGENT_SECRET_FOR_THE_SANDBOX_TEST", "hunter2-never-seen");
    let host_pid = std::process::id();
    let code = format!(
        "import os\nseen = [repr(dict(os.environ))]\nfor path in ['/etc/passwd', '/etc/shadow', '/proc/{host_pid}/environ', '/proc/1/environ', '/root/.bashrc']:\n    try:\n        seen.append(path + ' ' + open(path, 'rb').read().decode('latin-1'))\n    except OSError as err:\n        seen.append(path + ': ' + type(err).__name__)\nraise RuntimeError(' | '.join(seen))\n"
    );
    let output = run(&sandbox, &code).await;
    let message = failed_with(&output, "RuntimeError");
    assert!(!message.contains("hunter2-never-seen") && !output.stderr.contains("hunter2-never-seen"), "{message}");
    assert!(!message.contains("root:x:0:0"), "read the host's /etc/passwd: {message}");
    assert!(message.contains("/etc/passwd: FileNotFoundError"), "{message}");
    still_healthy(&sandbox).await;
}

#[tokio::test]
async fn nothing_outside_its_private_tmp_is_writable() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let env_dir = sandbox.settings().env_dir.display().to_string();
    let marker = format!("algoagent-escape-{}", std::process::id());
    let code = format!(
        "results = []\nfor path in ['/input/escape', '/usr/escape', '{env_dir}/escape', '/escape', '/tmp/{marker}']:\n    try:\n        open(path, 'w').write('x')\n        results.append(path + ' written')\n    except OSError as err:\n        results.append(path + ': ' + type(err).__name__)\nraise RuntimeError(' | '.join(results))\n"
    );
    let output = run(&sandbox, &code).await;
    let message = failed_with(&output, "RuntimeError");
    for refused in ["/input/escape", "/usr/escape", "/escape"] {
        assert!(!message.contains(&format!("{refused} written")), "{message}");
    }
    assert!(message.contains(&format!("/tmp/{marker} written")), "its own /tmp is writable: {message}");
    assert!(!std::path::Path::new(&format!("/tmp/{marker}")).exists(), "its /tmp is not the host's");
    assert!(!std::path::Path::new(&format!("{env_dir}/escape")).exists());
    still_healthy(&sandbox).await;
}

/// The bounded loop first: only once it shows the process limit holds does
/// the unbounded one run.
#[tokio::test]
async fn a_fork_bomb_meets_the_process_limit() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let limit = sandbox.settings().limits.processes;
    let bounded = "import os, time\nforked = 0\nfor _ in range(400):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    forked += 1\nraise RuntimeError(f'forked {forked}')\n";
    let output = run(&sandbox, bounded).await;
    let message = failed_with(&output, "RuntimeError");
    let forked: u64 = message.trim_start_matches("forked ").parse().unwrap();
    assert!(forked < limit, "forked {forked} processes past the limit of {limit}");
    still_healthy(&sandbox).await;

    // The unbounded one, beside an honest run: each run has a uid of its
    // own, so the bomb exhausts its own process limit and nobody else's.
    let unbounded = "import os\nwhile True:\n    os.fork()\n";
    let (bomb, neighbour) = tokio::join!(run(&sandbox, unbounded), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        run(&sandbox, sandbox::setup::CHECK_STRATEGY).await
    });
    assert!(!matches!(bomb.verdict, Verdict::Completed { .. }), "{:?}", bomb.verdict);
    assert!(matches!(neighbour.verdict, Verdict::Completed { .. }), "beside a fork bomb: {:?}", neighbour.verdict);
    still_healthy(&sandbox).await;
}

#[tokio::test]
async fn ten_gigabytes_are_refused() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let output = run(&sandbox, "block = bytearray(10 * 2**30)\n").await;
    failed_with(&output, "MemoryError");
    still_healthy(&sandbox).await;
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_cpu_limit() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let output = run(&sandbox, "while True:\n    pass\n").await;
    match &output.verdict {
        Verdict::Killed { reason } => assert!(reason.contains("CPU"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(output.elapsed < sandbox.settings().limits.wall, "the CPU limit ended it, not the clock");
    still_healthy(&sandbox).await;
}

#[tokio::test]
async fn the_wall_clock_ends_a_sleeper() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let quick = Sandbox::new(SandboxSettings {
        limits: Limits { wall: Duration::from_secs(6), ..sandbox.settings().limits },
        ..sandbox.settings().clone()
    });
    let output = run(&quick, "import time\ntime.sleep(3600)\n").await;
    assert_eq!(output.verdict, Verdict::TimedOut);
    still_healthy(&sandbox).await;
}

#[tokio::test]
async fn printing_a_gigabyte_is_cut_off() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let output = run(&sandbox, "line = 'x' * (1 << 20)\nfor _ in range(1024):\n    print(line)\n").await;
    match &output.verdict {
        Verdict::Killed { reason } => assert!(reason.contains("printed more than"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(output.stderr.len() <= sandbox.settings().limits.output_bytes);
    still_healthy(&sandbox).await;
}

/// Past the static lint (no `import os`, no `os.system` in the source),
/// so the sandbox is what stops it: the shell it starts is inside too.
#[tokio::test]
async fn os_system_behind_a_getattr_runs_inside_the_sandbox_only() {
    let Some(sandbox) = sandbox() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let marker = format!("/tmp/algoagent-pwned-{}", std::process::id());
    let code = format!(
        "module = __import__('o' + 's')\nrun = getattr(module, 'sys' + 'tem')\nstatus = run('id > {marker}; cat /etc/passwd >> {marker}; echo pwned > /input/pwned')\nraise RuntimeError(f'status {{status}}: ' + open('{marker}').read())\n"
    );
    let output = run(&sandbox, &code).await;
    let message = failed_with(&output, "RuntimeError");
    assert!(!message.contains("root:x:0:0"), "{message}");
    assert!(!std::path::Path::new(&marker).exists(), "the shell wrote to the host's /tmp");
    still_healthy(&sandbox).await;
}
