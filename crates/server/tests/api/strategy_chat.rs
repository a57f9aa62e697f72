//! `/api/strategies/chat/`: conversations about a strategy through the key
//! pool, with nothing lost on failure, and owner scoping by session id.

use gemini_sim::Scripted;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_status, spawn_app_with_sim, start_sim};

const CHAT: &str = "/api/strategies/chat/chat/";

#[tokio::test]
async fn a_strategy_conversation_carries_the_strategy_history_and_summary() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("strategist").await;
    let token = Some(user.access.as_str());
    let strategy = expect_status(
        app.post(
            "/api/strategies/strategies/",
            token,
            &json!({"name": "RSI dip", "description": "Buy oversold dips", "strategy_code": "RSI(14) < 30"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let first = expect_status(
        app.post(CHAT, token, &json!({"message": "Is 30 too low?", "strategy_id": strategy["id"]})).await,
        StatusCode::OK,
    )
    .await;
    let session = first["session_id"].as_str().unwrap().to_string();
    assert!(session.starts_with("chat_"));
    assert_eq!(first["message_count"], 2);
    assert_eq!(first["context_used"], true, "the strategy went along");
    let system = sim.sim.requests()[0].system.clone().unwrap();
    assert!(system.contains("RSI dip") && system.contains("RSI(14) < 30"), "{system}");

    let second = expect_status(
        app.post(CHAT, token, &json!({"message": "And 25?", "session_id": session})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["message_count"], 4);
    let contents = sim.sim.requests()[1].body["contents"].as_array().unwrap().clone();
    let texts: Vec<&str> = contents.iter().map(|c| c["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(texts[0], "Is 30 too low?");
    assert_eq!(texts.last().copied(), Some("And 25?"));
    assert!(sim.sim.requests()[1].system.clone().unwrap().contains("RSI dip"), "the session remembers its strategy");

    let summary = expect_status(
        app.post(&format!("/api/strategies/chat/{session}/summarize/"), token, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    let detail = expect_status(app.get(&format!("/api/strategies/chat/{session}/"), token).await, StatusCode::OK).await;
    assert_eq!(detail["context_summary"], summary["summary"]);
    assert_eq!(detail["strategy"], strategy["id"]);
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4);
    let list = expect_status(app.get("/api/strategies/chat/", token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 1);
    assert!(list["results"][0].get("messages").is_none(), "the list leaves messages out");

    let cleared = expect_status(
        app.post(&format!("/api/strategies/chat/{session}/clear/"), token, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["deleted_messages"], 4);
    let messages =
        expect_status(app.get(&format!("/api/strategies/chat/{session}/messages/"), token).await, StatusCode::OK).await;
    assert_eq!(messages["count"], 0);
    expect_status(
        app.post(&format!("/api/strategies/chat/{session}/deactivate/"), token, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    let error = expect_status(
        app.post(CHAT, token, &json!({"message": "still there?", "session_id": session})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["error"].as_str().unwrap().contains("inactive"));
}

#[tokio::test]
async fn a_failed_turn_keeps_the_message_and_sessions_are_owner_scoped() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("unluckystrategist").await;
    let other = app.register("nosystrategist").await;
    sim.sim.script(std::iter::repeat_n(Scripted::Unavailable, 4));
    let error =
        expect_status(app.post(CHAT, Some(&user.access), &json!({"message": "Hello?"})).await, StatusCode::BAD_GATEWAY)
            .await;
    assert_eq!(error["code"], "ai_upstream_error");
    let list = expect_status(app.get("/api/strategies/chat/", Some(&user.access)).await, StatusCode::OK).await;
    let session = list["results"][0]["session_id"].as_str().unwrap().to_string();
    let messages = expect_status(
        app.get(&format!("/api/strategies/chat/{session}/messages/"), Some(&user.access)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(messages["messages"][0]["content"], "Hello?");
    assert_eq!(messages["messages"][0]["metadata"]["status"], "failed");

    for path in [format!("/api/strategies/chat/{session}/"), format!("/api/strategies/chat/{session}/messages/")] {
        expect_status(app.get(&path, Some(&other.access)).await, StatusCode::NOT_FOUND).await;
    }
    for action in ["summarize", "clear", "deactivate"] {
        let path = format!("/api/strategies/chat/{session}/{action}/");
        expect_status(app.post(&path, Some(&other.access), &json!({})).await, StatusCode::NOT_FOUND).await;
    }
    let into_theirs = json!({"message": "hi", "session_id": session});
    expect_status(app.post(CHAT, Some(&other.access), &into_theirs).await, StatusCode::NOT_FOUND).await;
    let error =
        expect_status(app.post(CHAT, Some(&user.access), &json!({"message": " "})).await, StatusCode::BAD_REQUEST)
            .await;
    assert_eq!(error["message"][0], "This field is required.");
    let error = expect_status(
        app.post(CHAT, Some(&user.access), &json!({"message": "x", "strategy_id": 99999})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["strategy_id"].is_array());
}
