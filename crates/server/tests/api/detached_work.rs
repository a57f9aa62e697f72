//! AI work outlives the request that asked for it: a client that gives up,
//! or a request timeout, neither loses what was paid for nor wedges its
//! Idempotency-Key.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    expect_status, spawn_app_with_sim, spawn_app_with_sim_and, start_sim_answering_after, two_emas, TestApp,
};

const CHAT: &str = "/api/auth/chat/";

/// A client that gives up after `patience`.
fn impatient(patience: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(patience).build().unwrap()
}

async fn post_with_key(app: &TestApp, client: &reqwest::Client, path: &str, token: &str, key: &str, body: &Value) {
    let sent = client.post(app.url(path)).bearer_auth(token).header("idempotency-key", key).json(body).send().await;
    assert!(sent.is_err(), "the impatient client was meant to give up first");
}

async fn chat_messages(app: &TestApp, token: &str) -> Vec<Value> {
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", Some(token)).await, StatusCode::OK).await;
    assert_eq!(sessions["count"], 1, "{sessions}");
    let id = sessions["results"][0]["id"].as_i64().unwrap();
    let detail =
        expect_status(app.get(&format!("/api/auth/chat-sessions/{id}/"), Some(token)).await, StatusCode::OK).await;
    detail["chat_messages"].as_array().unwrap().clone()
}

/// The review's reproduction: a 3 s upstream, a client that left after 1 s,
/// and a retry 6 s later answered `409 still in progress`, forever.
#[tokio::test]
async fn a_client_that_leaves_loses_nothing_and_its_retry_replays_the_answer() {
    let sim = start_sim_answering_after(1_500).await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("leaver").await;
    let body = json!({"message": "What is a stop loss?"});

    post_with_key(&app, &impatient(Duration::from_millis(300)), CHAT, &user.access, "leave-1", &body).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let messages = chat_messages(&app, &user.access).await;
    assert_eq!(messages.len(), 2, "the turn finished without its client: {messages:?}");
    assert_eq!(messages[0]["metadata"]["status"], "ok");
    assert_eq!(messages[1]["role"], "assistant");

    let response =
        app.client.post(app.url(CHAT)).bearer_auth(&user.access).header("idempotency-key", "leave-1").json(&body);
    let answer = expect_status(response.send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(answer["ai_response"], messages[1]["content"]);
    assert_eq!(sim.sim.requests().len(), 1, "the retry spent no quota");
    assert_eq!(chat_messages(&app, &user.access).await.len(), 2, "and stored nothing twice");
}

#[tokio::test]
async fn a_retry_while_the_work_runs_waits_for_the_same_answer() {
    let sim = start_sim_answering_after(1_500).await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("waiter").await;
    let body = json!({"message": "Explain RSI divergence"});

    post_with_key(&app, &impatient(Duration::from_millis(300)), CHAT, &user.access, "wait-1", &body).await;
    let response =
        app.client.post(app.url(CHAT)).bearer_auth(&user.access).header("idempotency-key", "wait-1").json(&body);
    let answer = expect_status(response.send().await.unwrap(), StatusCode::OK).await;
    assert!(!answer["ai_response"].as_str().unwrap().is_empty());
    assert_eq!(sim.sim.requests().len(), 1);
    assert_eq!(chat_messages(&app, &user.access).await.len(), 2);
}

#[tokio::test]
async fn a_claim_left_by_a_dead_process_expires_after_the_request_timeout() {
    let sim = start_sim_answering_after(0).await;
    let app = spawn_app_with_sim_and(&sim, &[("REQUEST_TIMEOUT_SECS", "30"), ("AI_DEADLINE_SECS", "5")]).await;
    let user = app.register("heir").await;
    let body = json!({"message": "Hello again"});
    // What a process that died mid-call leaves behind: a claim never settled.
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    // The claim's request is the route and the body as the handler reads it.
    let request = r#"chat
{"message":"Hello again","session_id":null,"ai_context_id":null,"title":null}"#;
    store.claim_idempotency_key(user.id, "orphan-1", request, chrono::Utc::now()).await.unwrap();
    store::on_pool!(store, pool => sqlx::query("UPDATE idempotency_keys SET touched_at = $1 WHERE key = 'orphan-1'")
        .bind(chrono::Utc::now() - chrono::Duration::seconds(31))
        .execute(pool)
        .await
        .map(|_| ())
        .unwrap());
    store.close().await;

    let response =
        app.client.post(app.url(CHAT)).bearer_auth(&user.access).header("idempotency-key", "orphan-1").json(&body);
    expect_status(response.send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(sim.sim.requests().len(), 1);
}

#[tokio::test]
async fn generated_code_is_stored_even_when_its_client_left() {
    let sim = start_sim_answering_after(1_500).await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("codeleaver").await;
    let created = expect_status(
        app.post("/api/strategies/strategies/", Some(&user.access), &json!({"name": "Left behind"})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    let body = json!({"canonical_json": two_emas("Left behind"), "strategy_id": id});
    let sent = impatient(Duration::from_millis(300))
        .post(app.url("/api/strategies/api/generate_executable_code/"))
        .bearer_auth(&user.access)
        .json(&body)
        .send()
        .await;
    assert!(sent.is_err());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let validations = expect_status(
        app.get(&format!("/api/strategies/validations/?strategy={id}"), Some(&user.access)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(validations["count"], 1, "the paid-for code was stored: {validations}");
}

#[tokio::test]
async fn strategy_chat_finishes_its_turn_without_its_client() {
    let sim = start_sim_answering_after(1_500).await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("strategyleaver").await;
    let sent = impatient(Duration::from_millis(300))
        .post(app.url("/api/strategies/chat/chat/"))
        .bearer_auth(&user.access)
        .json(&json!({"message": "How do I size positions?"}))
        .send()
        .await;
    assert!(sent.is_err());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let sessions = expect_status(app.get("/api/strategies/chat/", Some(&user.access)).await, StatusCode::OK).await;
    let session = sessions["results"][0]["session_id"].as_str().unwrap().to_string();
    let messages = expect_status(
        app.get(&format!("/api/strategies/chat/{session}/messages/"), Some(&user.access)).await,
        StatusCode::OK,
    )
    .await;
    let messages = messages["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["metadata"]["status"], "ok");
}

/// `generate_with_auto_fix` allows 10 fixes of up to `AI_DEADLINE_SECS`
/// each; the whole endpoint gets one budget that ends 5 s before the
/// request timeout, and then answers with the code so far.
#[tokio::test]
async fn many_ai_calls_share_one_budget_that_ends_before_the_request_timeout() {
    let sim = start_sim_answering_after(1_500).await;
    // Fair use out of the way: only the time budget may stop the loop.
    let settings = [
        ("REQUEST_TIMEOUT_SECS", "8"),
        ("AI_DEADLINE_SECS", "5"),
        ("USER_RPM_DEFAULT", "1000"),
        ("USER_BURST_DEFAULT", "1000"),
        ("USER_TPM_DEFAULT", "10000000"),
    ];
    let app = spawn_app_with_sim_and(&sim, &settings).await;
    let user = app.register("budgeted").await;
    // Six calls of 1.5 s would outlast the 8 s request timeout.
    sim.sim.script(std::iter::repeat_n(gemini_sim::Scripted::BrokenCode, 6));
    let canonical = two_emas("Budget");
    let answer = expect_status(
        app.post(
            "/api/strategies/api/generate_with_auto_fix/",
            Some(&user.access),
            &json!({"canonical_json": canonical, "max_fix_attempts": 5}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["error_fixing"]["final_status"], "interrupted", "{}", answer["error_fixing"]);
    let fixes = answer["fix_history"].as_array().unwrap().len();
    assert!(fixes < 5, "the budget ended the loop after {fixes} fixes");
    assert!(!answer["strategy_code"].as_str().unwrap().is_empty(), "the code so far is kept");
}
