use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{expect_status, spawn_app};

#[tokio::test]
async fn a_user_lists_reads_and_updates_their_own_profile() {
    let app = spawn_app().await;
    let user = app.register("rosalind").await;
    let token = Some(user.access.as_str());

    let list = expect_status(app.get("/api/auth/profiles/", token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 1);
    assert!(list["next"].is_null() && list["previous"].is_null());
    let profile = &list["results"][0];
    assert_eq!(profile["username"], "rosalind");
    assert_eq!(profile["email"], "rosalind@example.com");
    let id = profile["id"].as_i64().unwrap();

    let detail = expect_status(app.get(&format!("/api/auth/profiles/{id}/"), token).await, StatusCode::OK).await;
    assert_eq!(detail["id"], id);

    let updated = expect_status(
        app.send(
            Method::PATCH,
            &format!("/api/auth/profiles/{id}/"),
            token,
            &json!({
                "default_risk_tolerance": "aggressive",
                "preferred_symbols": ["BTCUSD", "ETHUSD"],
                "risk_parameters": {"max_position": 0.1},
                // Read-only fields a client echoes back are ignored.
                "username": "mallory", "id": 999,
            }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["default_risk_tolerance"], "aggressive");
    assert_eq!(updated["preferred_symbols"], json!(["BTCUSD", "ETHUSD"]));
    assert_eq!(updated["risk_parameters"], json!({"max_position": 0.1}));
    assert_eq!(updated["username"], "rosalind");
    assert_eq!(updated["id"], id);
    // Untouched fields keep their values.
    assert_eq!(updated["default_timeframe"], "1d");

    let me = expect_status(app.get("/api/auth/profiles/me/", token).await, StatusCode::OK).await;
    assert_eq!(me["default_risk_tolerance"], "aggressive");

    let changed = expect_status(
        app.send(
            Method::PATCH,
            "/api/auth/profiles/update_me/",
            token,
            &json!({"trading_goals": "Steady growth", "default_timeframe": "4h"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["trading_goals"], "Steady growth");
    assert_eq!(changed["default_timeframe"], "4h");
    assert_eq!(changed["preferred_symbols"], json!(["BTCUSD", "ETHUSD"]));
    // Persisted, not just echoed.
    let me = expect_status(app.get("/api/auth/user/me/", token).await, StatusCode::OK).await;
    assert_eq!(me["profile"]["trading_goals"], "Steady growth");
}

#[tokio::test]
async fn profile_updates_are_validated_field_by_field() {
    let app = spawn_app().await;
    let user = app.register("marie").await;
    let token = Some(user.access.as_str());
    let path = "/api/auth/profiles/update_me/";

    let error = expect_status(
        app.send(Method::PATCH, path, token, &json!({"default_risk_tolerance": "yolo"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["default_risk_tolerance"], json!(["\"yolo\" is not a valid choice."]));
    let error = expect_status(
        app.send(Method::PATCH, path, token, &json!({"risk_parameters": [1, 2]})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["risk_parameters"].is_array());
    let error = expect_status(
        app.send(Method::PATCH, path, token, &json!({"preferred_symbols": "BTC"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["preferred_symbols"].is_array(), "{error}");
    // Nothing was written by the refused requests.
    let me = expect_status(app.get("/api/auth/profiles/me/", token).await, StatusCode::OK).await;
    assert_eq!(me["default_risk_tolerance"], "moderate");
    assert_eq!(me["risk_parameters"], json!({}));
}

#[tokio::test]
async fn another_users_profile_is_a_404_for_every_verb() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let bob_profile = expect_status(app.get("/api/auth/profiles/me/", Some(&bob.access)).await, StatusCode::OK).await;
    let path = format!("/api/auth/profiles/{}/", bob_profile["id"]);

    expect_status(app.get(&path, Some(&alice.access)).await, StatusCode::NOT_FOUND).await;
    for method in [Method::PATCH, Method::PUT] {
        let error = expect_status(
            app.send(method, &path, Some(&alice.access), &json!({"trading_goals": "hijacked"})).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(error["detail"], "Not found.");
    }
    let list = expect_status(app.get("/api/auth/profiles/", Some(&alice.access)).await, StatusCode::OK).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["results"][0]["username"], "alice");
    // Bob's profile is unchanged.
    let bob_now = expect_status(app.get(&path, Some(&bob.access)).await, StatusCode::OK).await;
    assert_eq!(bob_now["trading_goals"], "");
}

#[tokio::test]
async fn missing_ids_and_pages_are_404s_and_absurd_pages_400s() {
    let app = spawn_app().await;
    let user = app.register("niklaus").await;
    let token = Some(user.access.as_str());
    for path in ["/api/auth/profiles/abc/", "/api/auth/profiles/999999/", "/api/auth/profiles/?page=2"] {
        expect_status(app.get(path, token).await, StatusCode::NOT_FOUND).await;
    }
    // No page could have these numbers: the client's mistake.
    for path in ["/api/auth/profiles/?page=0", "/api/auth/profiles/?page=x"] {
        expect_status(app.get(path, token).await, StatusCode::BAD_REQUEST).await;
    }
    // Profiles cannot be deleted.
    let response = app.client.delete(app.url("/api/auth/profiles/me/")).bearer_auth(&user.access).send().await.unwrap();
    expect_status(response, StatusCode::METHOD_NOT_ALLOWED).await;
}
