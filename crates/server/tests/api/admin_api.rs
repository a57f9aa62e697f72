//! `/api/admin/`: the operators' data and actions as JSON, for an admin's
//! JWT, after real calls through the pool and gemini-sim.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app_with_sim, spawn_app_with_sim_and, start_sim, TestApp, SIM_KEY};

async fn chat(app: &TestApp, access: &str) -> reqwest::Response {
    app.post("/api/auth/chat/", Some(access), &json!({"message": "Hello"})).await
}

fn key<'a>(keys: &'a Value, key_id: &str) -> &'a Value {
    keys.as_array().unwrap().iter().find(|k| k["key_id"] == key_id).unwrap()
}

#[tokio::test]
async fn only_admins_may_read_or_act() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("plain-user").await;
    let admin = app.register_admin("pool-admin").await;
    for path in ["/api/admin/keys/", "/api/admin/usage/", "/api/admin/history/", "/api/admin/users/usage/"] {
        expect_status(app.get(path, None).await, StatusCode::UNAUTHORIZED).await;
        let refused = expect_status(app.get(path, Some(&user.access)).await, StatusCode::FORBIDDEN).await;
        assert_eq!(refused["code"], "permission_denied", "{refused}");
        expect_status(app.get(path, Some(&admin.access)).await, StatusCode::OK).await;
    }
    for path in ["/api/admin/keys/default/disable/", "/api/admin/reload/", "/api/admin/alerts/test/"] {
        expect_status(app.post(path, Some(&user.access), &json!({})).await, StatusCode::FORBIDDEN).await;
    }
    let keys = expect_status(app.get("/api/admin/keys/", Some(&admin.access)).await, StatusCode::OK).await;
    assert_eq!(key(&keys, "default")["state"], "available", "a refused disable changed nothing: {keys}");
}

#[tokio::test]
async fn keys_usage_and_users_count_real_calls_across_the_hour_and_day() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("busy-user").await;
    let admin = app.register_admin("watching-admin").await;
    assert_eq!(chat(&app, &user.access).await.status(), StatusCode::OK);
    assert_eq!(chat(&app, &user.access).await.status(), StatusCode::OK);

    let response = app.get("/api/admin/keys/", Some(&admin.access)).await;
    let keys = expect_status(response, StatusCode::OK).await;
    let default = key(&keys, "default");
    assert_eq!(default["last4"], "…0001", "{default}");
    assert_eq!(default["project"], "default");
    assert_eq!(default["state"], "available");
    assert_eq!(default["hour"]["successes"], 2, "{default}");
    assert_eq!(default["day"]["successes"], 2, "{default}");
    assert_eq!(default["hour"]["rate_limited"], 0);
    assert!(default["hour"]["mean_latency_ms"].is_u64(), "{default}");
    assert!(default["last_used"].is_string(), "{default}");
    assert!(!keys.to_string().contains(SIM_KEY), "a secret in the key list");

    let usage = expect_status(app.get("/api/admin/usage/", Some(&admin.access)).await, StatusCode::OK).await;
    let bucket = &usage["buckets"][0];
    assert_eq!(bucket["project"], "default", "{usage}");
    let rpm = bucket["limits"].as_array().unwrap().iter().find(|l| l["limit"] == "rpm").unwrap();
    assert_eq!((rpm["used"].as_u64(), rpm["remaining"].as_u64()), (Some(2), Some(8)), "{usage}");
    assert!(rpm["resets_at"].is_string(), "{usage}");
    assert_eq!(usage["warning_threshold"], 0.8);
    assert_eq!(usage["projects"]["default"]["hour_calls"], 2, "{usage}");

    let users = expect_status(app.get("/api/admin/users/usage/", Some(&admin.access)).await, StatusCode::OK).await;
    assert_eq!(users[0]["username"], "busy-user", "{users}");
    assert_eq!(users[0]["hour"]["requests"], 2, "{users}");
    assert!(users[0]["day"]["tokens"].as_u64().unwrap() > 0, "{users}");
}

#[tokio::test]
async fn actions_change_the_pool_and_are_recorded_in_the_history_by_name() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("caller").await;
    let admin = app.register_admin("acting-admin").await;
    let token = Some(admin.access.as_str());

    // Google says the project is out of its per-minute quota: it cools.
    sim.sim.script_project("test-project", [gemini_sim::Scripted::RateLimitMinute { retry_ms: Some(60_000) }]);
    let refused = chat(&app, &user.access).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let keys = expect_status(app.get("/api/admin/keys/", token).await, StatusCode::OK).await;
    let cooling = key(&keys, "default");
    assert_eq!(cooling["state"], "cooling_down", "{cooling}");
    assert!(cooling["cooldown_until"].is_string() && cooling["reason"].is_string(), "{cooling}");
    assert_eq!(cooling["hour"]["rate_limited"], 1, "{cooling}");

    let done = expect_status(
        app.post("/api/admin/buckets/default/gemini-2.5-flash/reset/", token, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert!(done["message"].as_str().unwrap().contains("default/gemini-2.5-flash"), "{done}");
    let keys = expect_status(app.get("/api/admin/keys/", token).await, StatusCode::OK).await;
    assert_eq!(key(&keys, "default")["state"], "available");
    assert_eq!(chat(&app, &user.access).await.status(), StatusCode::OK, "usable again at once");

    expect_status(app.post("/api/admin/keys/default/disable/", token, &json!({})).await, StatusCode::OK).await;
    let keys = expect_status(app.get("/api/admin/keys/", token).await, StatusCode::OK).await;
    assert_eq!(key(&keys, "default")["state"], "disabled", "not 'leaked': {keys}");
    assert_eq!(chat(&app, &user.access).await.status(), StatusCode::SERVICE_UNAVAILABLE, "out of rotation");
    let probed =
        expect_status(app.post("/api/admin/keys/default/probe/", token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(probed["message"], "probed default: healthy");
    let keys = expect_status(app.get("/api/admin/keys/", token).await, StatusCode::OK).await;
    assert_eq!(key(&keys, "default")["state"], "disabled", "a probe does not undo an operator's disable");
    expect_status(app.post("/api/admin/keys/default/enable/", token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(chat(&app, &user.access).await.status(), StatusCode::OK);

    expect_status(app.post("/api/admin/keys/no-such-key/disable/", token, &json!({})).await, StatusCode::NOT_FOUND)
        .await;
    expect_status(
        app.post("/api/admin/buckets/nowhere/gemini-2.5-flash/reset/", token, &json!({})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let no_webhook =
        expect_status(app.post("/api/admin/alerts/test/", token, &json!({})).await, StatusCode::CONFLICT).await;
    assert!(no_webhook["error"].as_str().unwrap_or_default().contains("ALERT_WEBHOOK_URL"), "{no_webhook}");

    let history = expect_status(app.get("/api/admin/history/", token).await, StatusCode::OK).await;
    let kinds: Vec<(&str, &str)> = history["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("test_alert", "admin:acting-admin"),
            ("enabled", "admin:acting-admin"),
            ("probe", "admin:acting-admin"),
            ("disabled", "admin:acting-admin"),
            ("reset", "admin:acting-admin"),
            ("cooldown", "pool"),
        ],
        "newest first: {history}"
    );
    let resets =
        expect_status(app.get("/api/admin/history/?kind=reset&key=default", token).await, StatusCode::OK).await;
    assert_eq!(resets["count"], 1, "{resets}");
    assert_eq!(resets["results"][0]["project"], "default");
    let none = expect_status(app.get("/api/admin/history/?project=elsewhere", token).await, StatusCode::OK).await;
    assert_eq!(none["count"], 0);
    expect_status(app.get("/api/admin/history/?page=abc", token).await, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_test_alert_reaches_the_webhook() {
    let (url, received) = crate::alerts::receiver(axum::http::StatusCode::OK).await;
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("ALERT_WEBHOOK_URL", url.as_str())]).await;
    let admin = app.register_admin("alerting-admin").await;
    let done =
        expect_status(app.post("/api/admin/alerts/test/", Some(&admin.access), &json!({})).await, StatusCode::OK).await;
    assert_eq!(done["message"], "test alert delivered");
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let body: Value = serde_json::from_str(&received[0].1).unwrap();
    assert_eq!(body["alert"], "test");
    assert!(body["text"].as_str().unwrap().contains("admin:alerting-admin"), "{body}");
}

#[tokio::test]
async fn reload_asks_every_replica_and_is_recorded() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let admin = app.register_admin("reloading-admin").await;
    let response = app.post("/api/admin/reload/", Some(&admin.access), &json!({})).await;
    let done = expect_status(response, StatusCode::OK).await;
    assert!(done["message"].as_str().unwrap().starts_with("asked"), "{done}");
    let history =
        expect_status(app.get("/api/admin/history/?kind=reload_requested", Some(&admin.access)).await, StatusCode::OK)
            .await;
    assert_eq!(history["results"][0]["actor"], "admin:reloading-admin", "{history}");
}

#[tokio::test]
async fn the_history_is_kept_for_the_retention_period() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let admin = app.register_admin("archivist").await;
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let now = chrono::Utc::now();
    let event = |days: i64, kind: &str| store::operators::NewRotationEvent {
        at: now - chrono::Duration::days(days),
        kind: kind.into(),
        key_id: Some("default".into()),
        project: Some("default".into()),
        model: Some("gemini-2.5-flash".into()),
        detail: "seeded".into(),
        actor: "pool".into(),
    };
    store.insert_rotation_events(&[event(31, "old_cooldown"), event(29, "recent_cooldown")]).await.unwrap();
    let retention = std::time::Duration::from_secs(30 * 86_400);
    let purged = server::maintenance::purge(&store, now, retention).await.unwrap();
    assert_eq!(purged.rotation_events, 1);
    let history = expect_status(app.get("/api/admin/history/", Some(&admin.access)).await, StatusCode::OK).await;
    let kinds: Vec<&str> = history["results"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["recent_cooldown"], "{history}");
    store.close().await;
}
