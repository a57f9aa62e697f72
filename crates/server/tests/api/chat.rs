use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{expect_status, spawn_app, spawn_app_with_sim, start_sim};

const CHAT: &str = "/api/auth/chat/";

#[tokio::test]
async fn a_conversation_goes_through_the_pool_with_context_profile_and_history() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("conversant").await;
    let token = Some(user.access.as_str());
    expect_status(
        app.send(
            Method::PATCH,
            "/api/auth/profiles/update_me/",
            token,
            &json!({"trading_goals": "Grow slowly", "strategy_preferences": "Trend following"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let context = expect_status(
        app.post(
            "/api/auth/ai-contexts/",
            token,
            &json!({"session_name": "Desk", "instructions": "Answer in one paragraph."}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    let first = expect_status(
        app.post(CHAT, token, &json!({"message": "What is an EMA?", "ai_context_id": context["id"]})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["title"], "Strategy Development Session");
    assert_eq!(first["user_message"], "What is an EMA?");
    assert!(first["ai_response"].as_str().unwrap().contains("What is an EMA?"), "{first}");
    let session_id = first["session_id"].as_str().unwrap().to_string();

    let second = expect_status(
        app.post(CHAT, token, &json!({"message": "And an SMA?", "session_id": session_id})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["session_id"], session_id.as_str());

    // What Gemini was asked, read from the simulator's request log.
    let requests = sim.sim.requests();
    assert_eq!(requests.len(), 2);
    let system = requests[1].system.clone().unwrap();
    assert!(system.contains("Answer in one paragraph."), "{system}");
    assert!(system.contains("Grow slowly") && system.contains("Trend following"), "{system}");
    let contents = requests[1].body["contents"].as_array().unwrap();
    let turns: Vec<(&str, &str)> =
        contents.iter().map(|c| (c["role"].as_str().unwrap(), c["parts"][0]["text"].as_str().unwrap())).collect();
    assert_eq!(turns.len(), 3, "{turns:?}");
    assert_eq!(turns[0], ("user", "What is an EMA?"));
    assert_eq!(turns[1].0, "model");
    assert_eq!(turns[2], ("user", "And an SMA?"));

    // Both turns of both exchanges are stored, with their token counts.
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", token).await, StatusCode::OK).await;
    let id = sessions["results"][0]["id"].as_i64().unwrap();
    let detail = expect_status(app.get(&format!("/api/auth/chat-sessions/{id}/"), token).await, StatusCode::OK).await;
    assert_eq!(detail["message_count"], 4);
    assert_eq!(detail["ai_context"], context["id"]);
    let rows = detail["chat_messages"].as_array().unwrap();
    let roles: Vec<&str> = rows.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    for row in rows {
        assert_eq!(row["metadata"]["status"], "ok");
        assert!(row["tokens_used"].as_i64().unwrap() > 0, "{row}");
    }
    // The assistant turn counts its own reply: ⌈characters / 4⌉ on the simulator.
    let reply = rows[1]["content"].as_str().unwrap();
    assert_eq!(rows[1]["tokens_used"].as_i64().unwrap(), i64::try_from(reply.chars().count().div_ceil(4)).unwrap());
}

#[tokio::test]
async fn bad_chat_requests_are_refused_clearly() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("careless").await;
    let other = app.register("otherone").await;
    let token = Some(user.access.as_str());
    let error = expect_status(app.post(CHAT, token, &json!({"message": "   "})).await, StatusCode::BAD_REQUEST).await;
    assert!(error["message"].is_array());
    let error =
        expect_status(app.post(CHAT, token, &json!({"message": "x".repeat(8_001)})).await, StatusCode::BAD_REQUEST)
            .await;
    assert!(error["message"][0].as_str().unwrap().contains("8000"));
    expect_status(
        app.post(CHAT, token, &json!({"message": "hi", "session_id": "00000000-0000-0000-0000-000000000000"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Another user's session is not found either.
    let theirs =
        expect_status(app.post(CHAT, Some(&other.access), &json!({"message": "mine"})).await, StatusCode::OK).await;
    expect_status(
        app.post(CHAT, token, &json!({"message": "hi", "session_id": theirs["session_id"]})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_status(app.post(CHAT, None, &json!({"message": "hi"})).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(sim.sim.requests().len(), 1, "only the valid turn reached Gemini");
}

#[tokio::test]
async fn an_upstream_failure_keeps_the_users_message_marked_failed() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("unlucky").await;
    let token = Some(user.access.as_str());
    sim.sim.script(std::iter::repeat_n(gemini_sim::Scripted::Unavailable, 4));
    let error =
        expect_status(app.post(CHAT, token, &json!({"message": "Are you there?"})).await, StatusCode::BAD_GATEWAY)
            .await;
    assert_eq!(error["code"], "ai_upstream_error");
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", token).await, StatusCode::OK).await;
    let id = sessions["results"][0]["id"].as_i64().unwrap();
    let detail = expect_status(app.get(&format!("/api/auth/chat-sessions/{id}/"), token).await, StatusCode::OK).await;
    let rows = detail["chat_messages"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["content"], "Are you there?");
    assert_eq!(rows[0]["metadata"]["status"], "failed");
}

#[tokio::test]
async fn without_keys_chat_answers_503_and_still_keeps_the_message() {
    let app = spawn_app().await;
    let user = app.register("keyless").await;
    let token = Some(user.access.as_str());
    let error =
        expect_status(app.post(CHAT, token, &json!({"message": "hello?"})).await, StatusCode::SERVICE_UNAVAILABLE)
            .await;
    assert_eq!(error["error"], "no API keys configured");
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", token).await, StatusCode::OK).await;
    assert_eq!(sessions["results"][0]["chat_messages"], serde_json::Value::Null, "list view");
    assert_eq!(sessions["results"][0]["messages"][0]["content"], "hello?");
}

#[tokio::test]
async fn the_per_user_limit_answers_429_with_retry_after_and_keeps_the_message() {
    let sim = start_sim().await;
    let app =
        crate::helpers::spawn_app_with_sim_and(&sim, &[("USER_RPM_DEFAULT", "1"), ("USER_BURST_DEFAULT", "1")]).await;
    let user = app.register("eager").await;
    let token = Some(user.access.as_str());
    let first = expect_status(app.post(CHAT, token, &json!({"message": "one"})).await, StatusCode::OK).await;
    let response = app.post(CHAT, token, &json!({"message": "two", "session_id": first["session_id"]})).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let error = expect_status(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(error["code"], "user_rate_limited");
    assert_eq!(sim.sim.requests().len(), 1, "the limited turn never reached Gemini");
}

#[tokio::test]
async fn the_history_sent_honours_the_token_budget() {
    let sim = start_sim().await;
    // The simulator's reply to "short question" is 76 characters (19 tokens)
    // and the question 4: a budget of 21 fits the reply but not both.
    let app = crate::helpers::spawn_app_with_sim_and(&sim, &[("CHAT_HISTORY_TOKENS", "21")]).await;
    let user = app.register("budgeted").await;
    let token = Some(user.access.as_str());
    let first = expect_status(app.post(CHAT, token, &json!({"message": "short question"})).await, StatusCode::OK).await;
    expect_status(
        app.post(CHAT, token, &json!({"message": "next", "session_id": first["session_id"]})).await,
        StatusCode::OK,
    )
    .await;
    let requests = sim.sim.requests();
    let contents = requests[1].body["contents"].as_array().unwrap();
    let roles: Vec<&str> = contents.iter().map(|c| c["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["model", "user"], "only the most recent turn that fits, then the new message");
    assert!(contents[0]["parts"][0]["text"].as_str().unwrap().contains("short question"));
    assert_eq!(contents[1]["parts"][0]["text"], "next");
}

async fn chat_with_key(
    app: &crate::helpers::TestApp,
    token: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    app.client.post(app.url(CHAT)).bearer_auth(token).header("idempotency-key", key).json(body).send().await.unwrap()
}

#[tokio::test]
async fn a_retried_request_with_the_same_idempotency_key_gets_the_first_answer() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("retrier").await;
    let body = json!({"message": "Only once, please"});
    let first = expect_status(chat_with_key(&app, &user.access, "key-1", &body).await, StatusCode::OK).await;
    let again = expect_status(chat_with_key(&app, &user.access, "key-1", &body).await, StatusCode::OK).await;
    assert_eq!(first, again);
    assert_eq!(sim.sim.requests().len(), 1, "quota was spent once");
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(sessions["count"], 1);
    assert_eq!(sessions["results"][0]["message_count"], 2, "no duplicated messages");

    // The same key for a different request is refused; another key runs.
    let error = expect_status(
        chat_with_key(&app, &user.access, "key-1", &json!({"message": "Something else"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["error"].as_str().unwrap().contains("different request"));
    expect_status(chat_with_key(&app, &user.access, "key-2", &body).await, StatusCode::OK).await;
    assert_eq!(sim.sim.requests().len(), 2);
    // Keys belong to their user: another user's identical key is independent.
    let other = app.register("otherretrier").await;
    expect_status(chat_with_key(&app, &other.access, "key-1", &body).await, StatusCode::OK).await;
    assert_eq!(sim.sim.requests().len(), 3);
}

#[tokio::test]
async fn a_failed_attempt_releases_its_idempotency_key() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("persistent").await;
    let body = json!({"message": "Try again later"});
    sim.sim.script(std::iter::repeat_n(gemini_sim::Scripted::Unavailable, 4));
    expect_status(chat_with_key(&app, &user.access, "retry-me", &body).await, StatusCode::BAD_GATEWAY).await;
    let answer = expect_status(chat_with_key(&app, &user.access, "retry-me", &body).await, StatusCode::OK).await;
    assert!(answer["ai_response"].as_str().unwrap().contains("Try again later"));
}

#[tokio::test]
async fn a_full_session_refuses_more_messages_with_a_clear_400_and_loses_nothing() {
    let sim = start_sim().await;
    let app = crate::helpers::spawn_app_with_sim_and(&sim, &[("CHAT_MAX_SESSION_MESSAGES", "4")]).await;
    let user = app.register("talkative").await;
    let token = Some(user.access.as_str());
    let first = expect_status(app.post(CHAT, token, &json!({"message": "one"})).await, StatusCode::OK).await;
    let session = json!({"message": "two", "session_id": first["session_id"]});
    expect_status(app.post(CHAT, token, &session).await, StatusCode::OK).await;
    let full = json!({"message": "three", "session_id": first["session_id"]});
    let error = expect_status(app.post(CHAT, token, &full).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["error"], "This session has reached its limit of 4 messages; start a new session");
    assert_eq!(sim.sim.requests().len(), 2, "the refused turn never reached Gemini");
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", token).await, StatusCode::OK).await;
    assert_eq!(sessions["results"][0]["message_count"], 4);
    // A new session is open to the same user.
    expect_status(app.post(CHAT, token, &json!({"message": "three"})).await, StatusCode::OK).await;
}

/// The review's finding: `details` carried upstream error text and URLs.
/// Clients get the stable code; the text goes to the log.
#[tokio::test]
async fn upstream_error_text_and_urls_never_reach_the_client() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("shielded").await;
    let token = Some(user.access.as_str());
    sim.sim.script(std::iter::repeat_n(gemini_sim::Scripted::Internal, 4));
    let response = app.post(CHAT, token, &json!({"message": "Are you there?"})).await;
    let text = response.text().await.unwrap();
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["code"], "ai_upstream_error");
    assert_eq!(error["details"], "ai_upstream_error", "{error}");
    for leak in ["internal error has occurred", "developers.generativeai", &sim.base_url()] {
        assert!(!text.contains(leak), "{leak:?} reached the client: {text}");
    }
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", token).await, StatusCode::OK).await;
    let id = sessions["results"][0]["id"].as_i64().unwrap();
    let detail = app.get(&format!("/api/auth/chat-sessions/{id}/"), token).await.text().await.unwrap();
    assert!(detail.contains("\"status\":\"failed\""), "{detail}");
    assert!(!detail.contains("internal error has occurred"), "the stored failure is shown to clients too: {detail}");

    // A host that refuses connections: the client error names the URL.
    let nowhere = crate::helpers::spawn_app_with(&[
        ("GEMINI_BASE_URL", "http://127.0.0.1:1"),
        ("GEMINI_API_KEY", crate::helpers::SIM_KEY),
        ("KEYS_FILE", "/nonexistent/keys.json"),
        ("AI_DEADLINE_SECS", "2"),
    ])
    .await;
    let user = nowhere.register("stranded").await;
    let text = nowhere.post(CHAT, Some(&user.access), &json!({"message": "hello?"})).await.text().await.unwrap();
    assert!(!text.contains("127.0.0.1:1"), "the upstream URL reached the client: {text}");
}
