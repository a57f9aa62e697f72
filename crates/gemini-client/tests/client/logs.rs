//! No secret in any log line. A child process (this test binary re-run)
//! installs a global subscriber at TRACE, runs a failover-heavy workload,
//! and the parent searches everything it printed for every key.

use std::time::Duration;

use gemini_sim::Scripted;

use crate::executor::{secret, setup, spec, GENEROUS, KEYS};

#[tokio::test]
#[ignore = "the child process of secrets_never_reach_the_logs"]
async fn log_worker() {
    if std::env::var("GEMINI_LOG_WORKER").is_err() {
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let setup = setup(&["dead", "a1", "a2", "b"], 100, Duration::from_secs(60), GENEROUS).await;
    setup.sim.sim.script([
        Scripted::RateLimitMinute { retry_ms: Some(5_000) },
        Scripted::Unavailable,
        Scripted::LeakedKey,
        Scripted::BlockedPrompt,
    ]);
    for _ in 0..4 {
        let _ = setup.executor.generate(&spec(Some("someone"))).await;
    }
    if let Ok(mut stream) = setup.executor.stream(&spec(None)).await {
        while stream.next().await.is_some() {}
    }
    let health = setup.executor.pool().health().await.unwrap();
    tracing::info!(?health, "final health");
    eprintln!("WORKER DONE");
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["logs::log_worker", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("GEMINI_LOG_WORKER", "1")
        .output()
        .await
        .unwrap();
    let logs = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && logs.contains("WORKER DONE"), "{logs}");
    // The capture saw the failovers, named by key id.
    assert!(logs.contains("gemini call failed") && logs.contains("key_id="), "{logs}");
    assert!(logs.contains("key pool event"), "{logs}");
    for (id, ..) in KEYS {
        assert!(!logs.contains(&secret(id)), "the secret of key {id} reached the logs");
    }
}
