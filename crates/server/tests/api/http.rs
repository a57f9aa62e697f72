use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{expect_status, spawn_app, spawn_app_with, GOOD_PASSWORD};

#[tokio::test]
async fn malformed_bodies_get_clear_json_errors() {
    let app = spawn_app().await;
    let send_raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = app.client.post(app.url("/api/auth/login/")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move { request.send().await.unwrap() }
    };
    let error =
        expect_status(send_raw("{\"username\": ", Some("application/json")).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["error"], "Malformed JSON");
    assert!(error["details"].is_string());
    assert_eq!(error["code"], "bad_request");

    let error = expect_status(
        send_raw("{\"username\": 5, \"password\": \"x\"}", Some("application/json")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["username"][0].as_str().unwrap().contains("invalid type"), "{error}");

    let error = expect_status(send_raw("[1,2,3]", Some("application/json")).await, StatusCode::BAD_REQUEST).await;
    assert!(error["non_field_errors"].is_array());

    let error = expect_status(send_raw("username=a", None).await, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(error["code"], "unsupported_media_type");
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "2048")]).await;
    let big = "x".repeat(4096);
    let response = app.post("/api/auth/login/", None, &json!({"username": big, "password": "y"})).await;
    let error = expect_status(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(error["code"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = spawn_app().await;
    let error = expect_status(app.get("/api/nope/", None).await, StatusCode::NOT_FOUND).await;
    assert_eq!(error["detail"], "Not found.");
    // A public route with the wrong method.
    let error = expect_status(app.get("/api/auth/login/", None).await, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(error["code"], "method_not_allowed");
    // A protected route with the wrong method, authenticated.
    let user = app.register("ken").await;
    let error = expect_status(
        app.send(Method::DELETE, "/api/auth/user/me/", Some(&user.access), &json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_eq!(error["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_trailing_slash_is_optional_everywhere() {
    let app = spawn_app().await;
    let user = app.register("dennis").await;
    for path in ["/api/auth/user/me", "/api/auth/user/me/"] {
        expect_status(app.get(path, Some(&user.access)).await, StatusCode::OK).await;
    }
    for path in ["/api", "/api/", "/healthz", "/healthz/"] {
        expect_status(app.get(path, None).await, StatusCode::OK).await;
    }
    let login = json!({"username": "dennis", "password": GOOD_PASSWORD});
    expect_status(app.post("/api/auth/login", None, &login).await, StatusCode::OK).await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_given_one() {
    let app = spawn_app().await;
    let response = app.get("/healthz", None).await;
    let generated = response.headers().get("x-request-id").expect("request id").to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let response = app.client.get(app.url("/healthz")).header("x-request-id", "trace-me-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
}

#[tokio::test]
async fn cors_answers_preflights_for_allowed_origins_only() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/auth/login/"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn healthz_is_alive_and_readyz_checks_dependencies() {
    let app = spawn_app().await;
    let alive = expect_status(app.get("/healthz", None).await, StatusCode::OK).await;
    assert_eq!(alive["status"], "ok");
    let ready = expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"], "ok");
    let expected_redis = if crate::helpers::redis_url().is_some() { "ok" } else { "not configured" };
    assert_eq!(ready["checks"]["redis"], expected_redis);
    // This test's DATA_DIR has no sandbox environment: backtests are
    // unavailable, said why, and the server is ready all the same.
    assert_eq!(ready["checks"]["sandbox"]["state"], "unavailable", "{ready}");
    assert!(ready["checks"]["sandbox"]["reason"].is_string(), "{ready}");
}

#[tokio::test]
async fn readyz_says_the_sandbox_is_ready_when_it_is() {
    let Ok(env_dir) = std::env::var("ALGOAGENT_SANDBOX_ENV") else { return };
    let app = spawn_app_with(&[("SANDBOX_ENV_DIR", env_dir.as_str())]).await;
    let ready = expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
    assert_eq!(ready["checks"]["sandbox"]["state"], "ready", "{ready}");
}

#[tokio::test]
async fn readyz_is_503_naming_an_unreachable_redis() {
    // Port 1 on loopback: nothing listens there.
    let app = spawn_app_with(&[("REDIS_URL", "redis://:sekret-redis-pw@127.0.0.1:1")]).await;
    let response = app.get("/readyz", None).await;
    let text = expect_status(response, StatusCode::SERVICE_UNAVAILABLE).await.to_string();
    assert!(text.contains("redis unreachable"), "{text}");
    assert!(!text.contains("sekret-redis-pw"), "{text}");
    // Alive all the same: a Redis outage is not a crash.
    expect_status(app.get("/healthz", None).await, StatusCode::OK).await;
}
