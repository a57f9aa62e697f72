//! Streamed chat (`?stream=true` or `Accept: text/event-stream`): the event
//! schema, and what is stored when a stream ends early for any reason.

use std::time::Duration;

use gemini_sim::Scripted;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    expect_status, spawn_app, spawn_app_with_sim, spawn_app_with_sim_and, start_sim, EventReader, ServerEvent, TestApp,
    TestUser,
};

const CHAT: &str = "/api/auth/chat/";

async fn open_stream(app: &TestApp, user: &TestUser, body: &Value) -> EventReader {
    let response = app
        .client
        .post(app.url("/api/auth/chat/?stream=true"))
        .bearer_auth(&user.access)
        .json(body)
        .send()
        .await
        .unwrap();
    EventReader::new(response)
}

/// The only session's stored messages, read through the API.
async fn stored_messages(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let token = Some(user.access.as_str());
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", token).await, StatusCode::OK).await;
    let id = sessions["results"][0]["id"].as_i64().unwrap();
    let detail = expect_status(app.get(&format!("/api/auth/chat-sessions/{id}/"), token).await, StatusCode::OK).await;
    detail["chat_messages"].as_array().unwrap().clone()
}

/// Waits until the stream's task has stored the assistant's turn.
async fn stored_reply(app: &TestApp, user: &TestUser) -> Value {
    for _ in 0..100 {
        let rows = stored_messages(app, user).await;
        if let Some(reply) = rows.iter().find(|row| row["role"] == "assistant") {
            return reply.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the assistant's turn was never stored");
}

fn deltas(events: &[ServerEvent]) -> String {
    events.iter().filter(|e| e.name == "delta").map(|e| e.data["text"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_streamed_turn_sends_deltas_then_done_and_stores_the_whole_reply() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("streamer").await;
    let token = Some(user.access.as_str());
    expect_status(
        app.send(Method::PATCH, "/api/auth/profiles/update_me/", token, &json!({"trading_goals": "Beat inflation"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let context = expect_status(
        app.post("/api/auth/ai-contexts/", token, &json!({"session_name": "Desk", "instructions": "Be terse."})).await,
        StatusCode::CREATED,
    )
    .await;
    let first = expect_status(
        app.post(CHAT, token, &json!({"message": "What is RSI?", "ai_context_id": context["id"]})).await,
        StatusCode::OK,
    )
    .await;

    // The Accept header asks for a stream as well as ?stream=true does.
    let response = app
        .client
        .post(app.url(CHAT))
        .bearer_auth(&user.access)
        .header("accept", "text/event-stream")
        .json(&json!({"message": "And MACD?", "session_id": first["session_id"]}))
        .send()
        .await
        .unwrap();
    let events = EventReader::new(response).rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert!(names.len() >= 3, "the simulator streams three chunks: {names:?}");
    assert!(names[..names.len() - 1].iter().all(|n| *n == "delta"), "{names:?}");
    let done = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().name, "done");
    assert_eq!(done["session_id"], first["session_id"]);
    assert_eq!(done["title"], "Strategy Development Session");
    assert_eq!(done["user_message"], "And MACD?");
    assert_eq!(done["ai_response"].as_str().unwrap(), deltas(&events), "done carries the whole reply");
    assert!(deltas(&events).contains("And MACD?"), "the simulator echoes the question");

    // Upstream was asked to stream, with the context, the profile and the history in order.
    let requests = sim.sim.requests();
    assert_eq!(requests[1].method, "streamGenerateContent");
    let system = requests[1].system.clone().unwrap();
    assert!(system.contains("Be terse.") && system.contains("Beat inflation"), "{system}");
    let turns: Vec<(&str, &str)> = requests[1].body["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["role"].as_str().unwrap(), c["parts"][0]["text"].as_str().unwrap()))
        .collect();
    assert_eq!(turns[0], ("user", "What is RSI?"));
    assert_eq!(turns[1], ("model", first["ai_response"].as_str().unwrap()));
    assert_eq!(turns[2], ("user", "And MACD?"));

    let rows = stored_messages(&app, &user).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["content"], done["ai_response"]);
    for row in &rows {
        assert_eq!(row["metadata"]["status"], "ok", "{row}");
        assert!(row["tokens_used"].as_i64().unwrap() > 0, "{row}");
    }
    let reply = rows[3]["content"].as_str().unwrap();
    assert_eq!(rows[3]["tokens_used"].as_i64().unwrap(), i64::try_from(reply.chars().count().div_ceil(4)).unwrap());

    // ?stream=false wins over the header; a nonsense flag is a clear 400.
    let plain = app
        .client
        .post(app.url("/api/auth/chat/?stream=false"))
        .bearer_auth(&user.access)
        .header("accept", "text/event-stream")
        .json(&json!({"message": "Plain, please", "session_id": first["session_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_status(plain, StatusCode::OK).await["user_message"], "Plain, please");
    let bad = app.post("/api/auth/chat/?stream=maybe", token, &json!({"message": "?"})).await;
    assert_eq!(expect_status(bad, StatusCode::BAD_REQUEST).await["error"], "stream must be true or false");
}

#[tokio::test]
async fn a_failure_before_the_stream_opens_keeps_its_status_code_and_the_message() {
    let app = spawn_app().await;
    let user = app.register("keylessstreamer").await;
    let response = app
        .client
        .post(app.url("/api/auth/chat/?stream=true"))
        .bearer_auth(&user.access)
        .json(&json!({"message": "anyone?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let error = expect_status(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(error["error"], "no API keys configured");
    let rows = stored_messages(&app, &user).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["metadata"]["status"], "failed");
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_ends_with_an_error_event_and_keeps_the_partial_reply() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("cutshort").await;
    sim.sim.script([Scripted::StreamDisconnect]);
    let events = open_stream(&app, &user, &json!({"message": "Explain Bollinger bands"})).await.rest().await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["code"], "upstream_error");
    assert!(last.data["error"].as_str().unwrap().contains("partial reply was saved"), "{}", last.data);
    let partial = deltas(&events);
    assert!(!partial.is_empty(), "the first chunk arrived before the cut");

    let rows = stored_messages(&app, &user).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["metadata"]["status"], "ok", "upstream did receive the question");
    assert_eq!(rows[1]["content"].as_str().unwrap(), partial);
    assert_eq!(rows[1]["metadata"]["status"], "incomplete");
    assert_eq!(rows[1]["metadata"]["reason"], "upstream_error");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_has_what_was_generated_saved_as_incomplete() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("leaver").await;
    sim.sim.script([Scripted::SlowStream { chunks: 40, gap_ms: 100 }]);
    let mut reader =
        open_stream(&app, &user, &json!({"message": "Walk me through a moving-average crossover strategy"})).await;
    let first = reader.next().await.unwrap();
    assert_eq!(first.name, "delta");
    drop(reader);

    let reply = stored_reply(&app, &user).await;
    assert_eq!(reply["metadata"]["status"], "incomplete", "{reply}");
    assert_eq!(reply["metadata"]["reason"], "client_disconnected");
    let content = reply["content"].as_str().unwrap();
    assert!(content.starts_with(first.data["text"].as_str().unwrap()), "{content}");
    assert!(content.chars().count() < 40 * first.data["text"].as_str().unwrap().chars().count(), "not the whole reply");
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_saves_them_as_incomplete() {
    let sim = start_sim().await;
    let mut app = spawn_app_with_sim(&sim).await;
    let user = app.register("lastcaller").await;
    sim.sim.script([Scripted::SlowStream { chunks: 40, gap_ms: 100 }]);
    let mut reader = open_stream(&app, &user, &json!({"message": "Describe a breakout strategy on daily bars"})).await;
    assert_eq!(reader.next().await.unwrap().name, "delta");
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", Some(&user.access)).await, StatusCode::OK).await;
    let session = sessions["results"][0]["id"].as_i64().unwrap();

    // Shutdown waits for the stream to save its work, then returns.
    tokio::time::timeout(Duration::from_secs(15), app.shutdown()).await.expect("shutdown finishes");
    let events = reader.rest().await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["code"], "server_shutdown");

    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let rows = store.chat_messages(session).await.unwrap();
    store.close().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].role, "assistant");
    assert_eq!(rows[1].metadata.0["status"], "incomplete");
    assert_eq!(rows[1].metadata.0["reason"], "server_shutdown");
    assert!(!rows[1].content.is_empty());
}

#[tokio::test]
async fn a_stalled_upstream_ends_the_stream_after_the_idle_timeout() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("STREAM_IDLE_TIMEOUT_SECS", "1")]).await;
    let user = app.register("patient").await;
    sim.sim.script([Scripted::SlowStream { chunks: 3, gap_ms: 2_500 }]);
    let events = open_stream(&app, &user, &json!({"message": "Slowly now"})).await.rest().await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["code"], "stream_idle_timeout");
    let reply = stored_reply(&app, &user).await;
    assert_eq!(reply["metadata"]["status"], "incomplete");
    assert_eq!(reply["metadata"]["reason"], "stream_idle_timeout");
    assert_eq!(reply["content"].as_str().unwrap(), deltas(&events));
}

#[tokio::test]
async fn a_streamed_turn_with_an_idempotency_key_is_replayed_not_repeated() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("streamretrier").await;
    let body = json!({"message": "Once is enough"});
    let send = |stream: bool| {
        let path = if stream { "/api/auth/chat/?stream=true" } else { CHAT };
        app.client
            .post(app.url(path))
            .bearer_auth(&user.access)
            .header("idempotency-key", "stream-1")
            .json(&body)
            .send()
    };
    let first = EventReader::new(send(true).await.unwrap()).rest().await;
    let done = first.last().unwrap();
    assert_eq!(done.name, "done");
    let replayed = EventReader::new(send(true).await.unwrap()).rest().await;
    assert_eq!(replayed.len(), 1, "a replay is the finished answer: {replayed:?}");
    assert_eq!(replayed[0].name, "done");
    assert_eq!(replayed[0].data, done.data);
    let plain = expect_status(send(false).await.unwrap(), StatusCode::OK).await;
    assert_eq!(plain, done.data);
    assert_eq!(sim.sim.requests().len(), 1, "quota was spent once");
    assert_eq!(stored_messages(&app, &user).await.len(), 2);
}
