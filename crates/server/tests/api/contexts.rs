use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{expect_status, spawn_app};

const PATH: &str = "/api/auth/ai-contexts/";

#[tokio::test]
async fn ai_contexts_are_created_listed_updated_and_deleted() {
    let app = spawn_app().await;
    let user = app.register("quant").await;
    let token = Some(user.access.as_str());

    let created = expect_status(
        app.post(
            PATH,
            token,
            &json!({"session_name": "Momentum desk", "instructions": "Prefer trend following.", "context_data": {"market": "crypto"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["username"], "quant");
    assert_eq!(created["session_name"], "Momentum desk");
    assert_eq!(created["context_data"], json!({"market": "crypto"}));
    assert_eq!(created["is_active"], true);
    assert!(created["last_used"].is_null());
    let id = created["id"].as_i64().unwrap();

    let list = expect_status(app.get(PATH, token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["results"][0]["id"], id);

    let item = format!("{PATH}{id}/");
    let patched = expect_status(
        app.send(
            Method::PATCH,
            &item,
            token,
            &json!({"instructions": "Prefer mean reversion.", "username": "mallory"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["instructions"], "Prefer mean reversion.");
    assert_eq!(patched["session_name"], "Momentum desk");
    assert_eq!(patched["username"], "quant");

    // PUT is a full update: the required field must be there.
    let error = expect_status(
        app.send(Method::PUT, &item, token, &json!({"instructions": "x"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["session_name"], json!(["This field is required."]));
    let replaced = expect_status(
        app.send(Method::PUT, &item, token, &json!({"session_name": "Swing desk", "instructions": "Hold for days."}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replaced["session_name"], "Swing desk");

    let response = app.client.delete(app.url(&item)).bearer_auth(&user.access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_status(app.get(&item, token).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn activate_touches_last_used_and_deactivate_only_clears_the_flag() {
    let app = spawn_app().await;
    let user = app.register("trader").await;
    let token = Some(user.access.as_str());
    let created =
        expect_status(app.post(PATH, token, &json!({"session_name": "Scalping"})).await, StatusCode::CREATED).await;
    let id = created["id"].as_i64().unwrap();

    let off =
        expect_status(app.post(&format!("{PATH}{id}/deactivate/"), token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(off["is_active"], false);
    assert!(off["last_used"].is_null(), "deactivate does not count as a use");
    let on = expect_status(app.post(&format!("{PATH}{id}/activate/"), token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(on["is_active"], true);
    assert!(on["last_used"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn ai_contexts_are_validated() {
    let app = spawn_app().await;
    let user = app.register("careful").await;
    let token = Some(user.access.as_str());
    let cases = [
        (json!({}), "session_name"),
        (json!({"session_name": "   "}), "session_name"),
        (json!({"session_name": "x".repeat(201)}), "session_name"),
        (json!({"session_name": "ok", "context_data": [1, 2]}), "context_data"),
        (json!({"session_name": "ok", "is_active": "yes"}), "is_active"),
    ];
    for (body, field) in cases {
        let error = expect_status(app.post(PATH, token, &body).await, StatusCode::BAD_REQUEST).await;
        assert!(error[field].is_array(), "{body} should name {field}: {error}");
    }
    let list = expect_status(app.get(PATH, token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 0, "nothing was stored");
}

#[tokio::test]
async fn another_users_context_is_a_404_on_every_route() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let intruder = app.register("intruder").await;
    let created = expect_status(
        app.post(PATH, Some(&owner.access), &json!({"session_name": "Private"})).await,
        StatusCode::CREATED,
    )
    .await;
    let item = format!("{PATH}{}/", created["id"]);
    let token = Some(intruder.access.as_str());
    expect_status(app.get(&item, token).await, StatusCode::NOT_FOUND).await;
    for method in [Method::PATCH, Method::PUT] {
        expect_status(
            app.send(method, &item, token, &json!({"session_name": "Mine now"})).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    for action in ["activate", "deactivate"] {
        expect_status(app.post(&format!("{item}{action}/"), token, &json!({})).await, StatusCode::NOT_FOUND).await;
    }
    let response = app.client.delete(app.url(&item)).bearer_auth(&intruder.access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let list = expect_status(app.get(PATH, token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 0);
    // The owner's context is untouched.
    let mine = expect_status(app.get(&item, Some(&owner.access)).await, StatusCode::OK).await;
    assert_eq!((mine["session_name"].as_str(), mine["is_active"].as_bool()), (Some("Private"), Some(true)));
}
