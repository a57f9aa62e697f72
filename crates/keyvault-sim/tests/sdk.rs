//! Wire faithfulness: Microsoft's own azure-identity and
//! azure-keyvault-secrets (from PyPI, in `.venv-stores`) talk to the
//! stand-in over TLS. Runs when ALGOAGENT_STORE_TESTS=1 (.ci/run sets it and
//! installs the SDKs); otherwise it says it was skipped.

use keyvault_sim::{ca_pem_path, KeyVaultSim, SimConfig};

fn python() -> String {
    std::env::var("ALGOAGENT_STORES_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-stores/bin/python").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn microsofts_sdks_get_tokens_follow_the_challenge_and_page() {
    if std::env::var("ALGOAGENT_STORE_TESTS").as_deref() != Ok("1") {
        println!("skipped: set ALGOAGENT_STORE_TESTS=1 (and install the Azure SDKs, as .ci/run does) to run it");
        return;
    }
    let sim = KeyVaultSim::start(SimConfig { managed_identity: true, ..SimConfig::default() }).await.unwrap();
    let config = sim.config().clone();
    let output = tokio::process::Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_sdk.py"))
        .args([&sim.vault_url(), &config.tenant_id, &config.client_id, &config.client_secret])
        .arg(ca_pem_path())
        .output()
        .await
        .expect("the stores venv's python runs (see .ci/run)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("SDK OK"), "stdout: {stdout}\nstderr: {stderr}");
    // The SDK paid for its tokens at the token endpoints, not per call.
    assert!(sim.token_requests() <= 4, "token requests: {}", sim.token_requests());
}
