//! Wire faithfulness: Google's own google-genai SDK (from PyPI, in a venv)
//! talks to the simulator. Runs when ALGOAGENT_SDK_TESTS=1 (.ci/run sets it
//! and installs the SDK); otherwise it says it was skipped.

use gemini_sim::{KeyStatus, SimConfig, SimKey, SimServer};

fn python() -> String {
    std::env::var("ALGOAGENT_SDK_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-sdk/bin/python").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn the_official_sdk_parses_answers_streams_and_errors() {
    if std::env::var("ALGOAGENT_SDK_TESTS").as_deref() != Ok("1") {
        println!("skipped: set ALGOAGENT_SDK_TESTS=1 (and install google-genai, as .ci/run does) to run the SDK test");
        return;
    }
    let sim = SimServer::start(SimConfig {
        keys: vec![SimKey {
            key: "sdk-good-key".into(),
            id: "sdk".into(),
            project: "sdk".into(),
            status: KeyStatus::Valid,
        }],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sim/check_sdk.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .arg(sim.base_url())
        .output()
        .await
        .expect("the SDK's python runs (see .ci/run for the venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("SDK OK"), "stdout: {stdout}\nstderr: {stderr}");
}
