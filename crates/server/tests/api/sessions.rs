use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{expect_status, spawn_app};

const PATH: &str = "/api/auth/chat-sessions/";

#[tokio::test]
async fn chat_sessions_are_created_listed_updated_ended_and_deleted() {
    let app = spawn_app().await;
    let user = app.register("chatty").await;
    let token = Some(user.access.as_str());

    let created = expect_status(app.post(PATH, token, &json!({})).await, StatusCode::CREATED).await;
    assert_eq!(created["title"], "New Strategy Session");
    assert_eq!(created["username"], "chatty");
    assert_eq!(created["is_active"], true);
    assert_eq!(created["message_count"], 0);
    assert_eq!(created["messages"], json!([]));
    assert_eq!(created["chat_messages"], json!([]));
    assert_eq!(created["session_id"].as_str().unwrap().len(), 36, "a uuid");
    let id = created["id"].as_i64().unwrap();

    let list = expect_status(app.get(PATH, token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 1);
    assert!(list["results"][0].get("chat_messages").is_none(), "the list leaves out the message rows");

    let item = format!("{PATH}{id}/");
    let renamed =
        expect_status(app.send(Method::PATCH, &item, token, &json!({"title": "RSI ideas"})).await, StatusCode::OK)
            .await;
    assert_eq!(renamed["title"], "RSI ideas");

    let ended = expect_status(app.post(&format!("{item}end_session/"), token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(ended["message"], "Session ended");
    assert_eq!(ended["session"]["is_active"], false);

    let response = app.client.delete(app.url(&item)).bearer_auth(&user.access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_status(app.get(&item, token).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn only_an_active_context_of_ones_own_can_be_attached() {
    let app = spawn_app().await;
    let user = app.register("ctxuser").await;
    let other = app.register("ctxother").await;
    let token = Some(user.access.as_str());
    let context = expect_status(
        app.post("/api/auth/ai-contexts/", token, &json!({"session_name": "Desk"})).await,
        StatusCode::CREATED,
    )
    .await;
    let context_id = context["id"].as_i64().unwrap();
    let foreign = expect_status(
        app.post("/api/auth/ai-contexts/", Some(&other.access), &json!({"session_name": "Theirs"})).await,
        StatusCode::CREATED,
    )
    .await;

    let attached =
        expect_status(app.post(PATH, token, &json!({"ai_context": context_id})).await, StatusCode::CREATED).await;
    assert_eq!(attached["ai_context"], context_id);
    assert_eq!(attached["ai_context_name"], "Desk");

    let error =
        expect_status(app.post(PATH, token, &json!({"ai_context": foreign["id"]})).await, StatusCode::BAD_REQUEST)
            .await;
    assert!(error["ai_context"].is_array(), "{error}");

    expect_status(
        app.post(&format!("/api/auth/ai-contexts/{context_id}/deactivate/"), token, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    let error =
        expect_status(app.post(PATH, token, &json!({"ai_context": context_id})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["ai_context"], json!(["This AI context is inactive."]));

    // Detaching with an explicit null.
    let item = format!("{PATH}{}/", attached["id"]);
    let detached =
        expect_status(app.send(Method::PATCH, &item, token, &json!({"ai_context": null})).await, StatusCode::OK).await;
    assert!(detached["ai_context"].is_null());
}

#[tokio::test]
async fn another_users_session_is_a_404_on_every_route() {
    let app = spawn_app().await;
    let owner = app.register("sessowner").await;
    let intruder = app.register("sessintruder").await;
    let created =
        expect_status(app.post(PATH, Some(&owner.access), &json!({"title": "Mine"})).await, StatusCode::CREATED).await;
    let item = format!("{PATH}{}/", created["id"]);
    let token = Some(intruder.access.as_str());
    expect_status(app.get(&item, token).await, StatusCode::NOT_FOUND).await;
    for method in [Method::PATCH, Method::PUT] {
        expect_status(app.send(method, &item, token, &json!({"title": "Stolen"})).await, StatusCode::NOT_FOUND).await;
    }
    expect_status(app.post(&format!("{item}end_session/"), token, &json!({})).await, StatusCode::NOT_FOUND).await;
    let response = app.client.delete(app.url(&item)).bearer_auth(&intruder.access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let mine = expect_status(app.get(&item, Some(&owner.access)).await, StatusCode::OK).await;
    assert_eq!((mine["title"].as_str(), mine["is_active"].as_bool()), (Some("Mine"), Some(true)));
}
