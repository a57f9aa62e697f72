//! `SECRET_STORE_TYPE=azure` against keyvault-sim, our stand-in for Key
//! Vault and Entra over TLS with a test CA (proven faithful with
//! Microsoft's own SDKs in its crate). It runs in this process, so these
//! tests need nothing installed; `ALGOAGENT_STORE_TESTS=0` skips them as it
//! does the other stores' (a store does not care which database is used).

use std::time::Duration;

use keyvault_sim::{ca_pem_path, KeyVaultSim, SimConfig};

use crate::cli::{failed_start, keys_status, ServerProcess};
use crate::helpers::{redis_url, TestDatabase};
use crate::vault::{keys_json, rotation_and_outage, set, sim, store_env, StoreUnderTest, OLD_SECRET, SECOND_SECRET};

#[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
async fn start(config: SimConfig) -> Option<KeyVaultSim> {
    if std::env::var("ALGOAGENT_STORE_TESTS").as_deref() == Ok("0") {
        eprintln!("SKIPPED: ALGOAGENT_STORE_TESTS=0");
        return None;
    }
    Some(KeyVaultSim::start(config).await.expect("keyvault-sim starts"))
}

fn azure_env(
    dir: &tempfile::TempDir,
    database: &str,
    vault: &KeyVaultSim,
    keys_file: &str,
    sim: &str,
) -> Vec<(String, String)> {
    let config = vault.config();
    let (url, authority, ca) = (vault.vault_url(), vault.authority_host(), ca_pem_path().display().to_string());
    let store = [
        ("SECRET_STORE_TYPE", "azure"),
        ("AZURE_VAULT_URL", url.as_str()),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
        ("AZURE_TENANT_ID", config.tenant_id.as_str()),
        ("AZURE_CLIENT_ID", config.client_id.as_str()),
        ("AZURE_CLIENT_SECRET", config.client_secret.as_str()),
        ("AZURE_CA_CERT", ca.as_str()),
    ];
    store_env(dir, database, keys_file, sim, &store)
}

impl StoreUnderTest for KeyVaultSim {
    async fn write_flash_01(&self, secret: &str) {
        // Key Vault names allow no `_`: the key id's `_` becomes `-`.
        self.set_secret("flash-01", secret);
    }

    async fn stop(&mut self) {
        KeyVaultSim::stop(self);
    }
}

/// The old layout (one secret per key, named by the key id).
#[tokio::test]
async fn azure_secrets_rotate_without_a_restart_and_outlive_the_store() {
    let Some(mut vault) = start(SimConfig::default()).await else { return };
    vault.write_flash_01(OLD_SECRET).await;
    let sim = sim(1_500).await;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = keys_json(&dir, &["flash_01"]);
    let env = azure_env(&dir, &database.url, &vault, &keys_file, &sim.base_url());
    let client_secret = vault.config().client_secret.clone();
    rotation_and_outage(&mut vault, env, &sim, &[&client_secret]).await;
}

/// `AZURE_SECRET_PREFIX`, and secrets that leave: deleted or disabled, the
/// key is retired with a warning that names where it was looked for.
#[tokio::test]
async fn prefixed_names_and_a_deleted_or_disabled_secret_retires_its_key() {
    let Some(vault) = start(SimConfig::default()).await else { return };
    vault.set_secret("algoagent-flash-01", OLD_SECRET);
    vault.set_secret("algoagent-flash-02", SECOND_SECRET);
    vault.set_secret("algoagent-flash-03", "third-secret-value-THR3");
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01", "flash_02", "flash_03"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let mut env = azure_env(&dir, &database, &vault, &keys_file, "http://127.0.0.1:9");
    set(&mut env, "AZURE_SECRET_PREFIX", "algoagent-");
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for shown in ["flash_01 …OLD1", "flash_02 …TWO3", "flash_03 …THR3"] {
        assert!(table.contains(shown), "{table}");
    }

    vault.delete_secret("algoagent-flash-02");
    vault.disable_secret("algoagent-flash-03");
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{logs}");
    assert!(table.contains("flash_01") && !table.contains("flash_02") && !table.contains("flash_03"), "{table}");
    assert!(logs.contains("Key Vault secret algoagent-flash-02"), "{logs}");
    assert!(logs.contains("Key Vault secret algoagent-flash-03"), "{logs}");
    for secret in [OLD_SECRET, SECOND_SECRET, vault.config().client_secret.as_str()] {
        assert!(!logs.contains(secret) && !table.contains(secret), "a secret was printed");
    }
}

/// A managed identity, when asked for, gets the token from its endpoint;
/// the client-credentials settings are then not needed.
#[tokio::test]
async fn a_managed_identity_is_used_when_asked_for() {
    let Some(vault) = start(SimConfig { managed_identity: true, ..SimConfig::default() }).await else { return };
    vault.set_secret("flash-01", OLD_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let mut env = azure_env(&dir, &database, &vault, &keys_file, "http://127.0.0.1:9");
    env.retain(|(k, _)| !matches!(k.as_str(), "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" | "AZURE_CLIENT_SECRET"));
    set(&mut env, "AZURE_USE_MANAGED_IDENTITY", "true");
    set(&mut env, "AZURE_MANAGED_IDENTITY_ENDPOINT", &vault.managed_identity_endpoint());
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("flash_01 …OLD1"), "{table}");
    assert_eq!(vault.token_requests(), 1);
}

/// Refused at start-up, by the authority (a wrong client secret) or by the
/// vault (no read permission): a clear error naming the store, its address
/// and the cause, never the secret, and a non-zero exit.
#[tokio::test]
async fn refused_credentials_or_permissions_stop_start_up_with_a_clear_error() {
    let Some(vault) = start(SimConfig::default()).await else { return };
    vault.set_secret("flash-01", OLD_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let wrong = "not-the-client-secret-but-still-secret";
    let mut env = azure_env(&dir, &database, &vault, &keys_file, "http://127.0.0.1:9");
    set(&mut env, "AZURE_CLIENT_SECRET", wrong);
    let message = failed_start(&env).await;
    let store = format!("azure key vault at {}", vault.vault_url());
    assert!(message.contains(&store) && message.contains("AADSTS7000215"), "{message}");
    assert!(!message.contains(wrong), "the client secret was printed");

    vault.deny_reads(true);
    let message = failed_start(&azure_env(&dir, &database, &vault, &keys_file, "http://127.0.0.1:9")).await;
    assert!(message.contains(&store) && message.contains("permission denied reading flash-01"), "{message}");
    assert!(!message.contains(&vault.config().client_secret), "the client secret was printed");
}

/// With Redis, `keys status` anywhere shows the store failing on the
/// running replicas, and still shows the keys when the store does not
/// answer the command itself. Runs on the Redis pass: the stand-in needs
/// no installed server.
#[tokio::test]
#[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
async fn keys_status_shows_a_store_failing_on_the_replicas_through_redis() {
    if redis_url().is_none() {
        eprintln!("skipped: the replicas share the store's status only through Redis (set TEST_REDIS_URL)");
        return;
    }
    let vault = KeyVaultSim::start(SimConfig::default()).await.unwrap();
    vault.set_secret("flash-01", OLD_SECRET);
    let sim = sim(0).await;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = keys_json(&dir, &["flash_01"]);
    let env = azure_env(&dir, &database.url, &vault, &keys_file, &sim.base_url());
    let server = ServerProcess::start(env.clone()).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("flash_01 …OLD1") && table.contains("answers replica"), "{table}");

    vault.stop();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("did not answer this command") && table.contains("flash_01 …????"), "{table}");
    assert!(table.contains("FAILING on replica") && table.contains("unreachable"), "{table}");
    assert!(!table.contains(OLD_SECRET) && !table.contains(&vault.config().client_secret));
    let (status, logs) = server.terminate().await;
    assert!(status.success(), "{logs}");
}

/// A key added to keys.json and to the store joins the running server at
/// the next refresh, without a restart.
#[tokio::test]
async fn a_key_added_to_keys_json_and_the_vault_joins_without_a_restart() {
    let Some(vault) = start(SimConfig::default()).await else { return };
    vault.set_secret("flash-01", OLD_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = keys_json(&dir, &["flash_01"]);
    let server = ServerProcess::start(azure_env(&dir, &database.url, &vault, &keys_file, "http://127.0.0.1:9")).await;

    vault.set_secret("flash-02", SECOND_SECRET);
    keys_json(&dir, &["flash_01", "flash_02"]);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, logs) = server.terminate().await;
    assert!(status.success(), "{logs}");
    let loads: Vec<&str> = logs.lines().filter(|line| line.contains("key pool loaded")).collect();
    assert!(loads.first().is_some_and(|line| line.contains("keys=1")), "{logs}");
    assert!(loads.last().is_some_and(|line| line.contains("keys=2")), "{logs}");
    assert!(!logs.contains(OLD_SECRET) && !logs.contains(SECOND_SECRET), "a secret reached the logs");
}
