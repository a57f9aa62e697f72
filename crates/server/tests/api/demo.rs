use std::time::Duration;

use gemini_client::CallSpec;
use key_rotation::config::Workload;
use serde_json::json;
use server::{App, ConfigFile, ConfigSources};

use crate::helpers::{base_env, TestDatabase};

/// `serve --demo`: the built-in pool through the in-process simulator. The
/// first call meets the invalid key, which is disabled, and fails over.
#[tokio::test]
async fn the_demo_pool_rotates_past_its_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let mut env = base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    // Real keys and KEYS_FILE are ignored in demo mode.
    env.push(("KEYS_FILE".into(), "/nonexistent/keys.json".into()));
    env.push(("GEMINI_API_KEY".into(), "a-real-looking-key".into()));
    let config = server::config::load(&ConfigSources { file: ConfigFile::Skip, env, flags: vec![] }).unwrap();
    let app = App::build_with(&config, true).await.unwrap();
    let gemini = app.state().gemini.clone();
    let call = CallSpec {
        user: Some("demo-user".into()),
        api_token: None,
        sticky: false,
        workload: Workload::Light,
        model: None,
        allow_spill: false,
        body: json!({ "contents": [{ "role": "user", "parts": [{ "text": "hello demo" }] }] }),
        deadline: Some(Duration::from_secs(5)),
    };
    let done = gemini.generate(&call).await.unwrap();
    assert_eq!((done.key_id.as_str(), done.attempts), ("flash_01", 2));
    let health = gemini.pool().health().await.unwrap();
    assert_eq!(health.len(), 10);
    let state = |id: &str| health.iter().find(|h| h.key_id == id).unwrap().state;
    assert_eq!(state("flash_invalid"), "disabled");
    assert_eq!(state("pro_leaked"), "available", "not used yet");
    let heavy = CallSpec { workload: Workload::Heavy, ..call };
    assert_eq!(gemini.generate(&heavy).await.unwrap().key_id, "pro_01");
    let health = gemini.pool().health().await.unwrap();
    assert_eq!(health.iter().find(|h| h.key_id == "pro_leaked").unwrap().state, "leaked");
}
