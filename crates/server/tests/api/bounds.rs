//! Nothing a client sends grows without bound or holds the server's
//! resources forever.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_status, spawn_app, spawn_app_with_sim, spawn_app_with_sim_and, start_sim, TestApp};

const RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

#[tokio::test]
async fn absurd_page_numbers_are_a_400_and_a_page_past_the_end_a_404() {
    let app = spawn_app().await;
    let user = app.register("pager").await;
    let token = Some(user.access.as_str());
    for absurd in ["0", "-3", "9223372036854775807", "99999999999999999999", "abc"] {
        let error = expect_status(
            app.get(&format!("/api/strategies/strategies/?page={absurd}"), token).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["code"], "bad_request", "page={absurd}: {error}");
    }
    expect_status(app.get("/api/strategies/strategies/?page=2", token).await, StatusCode::NOT_FOUND).await;
    expect_status(app.get("/api/strategies/strategies/?page=1", token).await, StatusCode::OK).await;
}

#[tokio::test]
async fn strategy_search_caps_its_tags() {
    let app = spawn_app().await;
    let user = app.register("tagger").await;
    let tags: Vec<String> = (0..1000).map(|n| format!("t{n}")).collect();
    let error = expect_status(
        app.post("/api/strategies/api/search/", Some(&user.access), &json!({"tags": tags})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["tags"].is_array(), "{error}");
    let text = tags.join(",");
    let error = expect_status(
        app.post("/api/strategies/api/search/", Some(&user.access), &json!({"tags": text})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["tags"].is_array(), "{error}");
}

async fn strategy_chat(app: &TestApp, token: &str, body: serde_json::Value) -> reqwest::Response {
    app.post("/api/strategies/chat/chat/", Some(token), &body).await
}

#[tokio::test]
async fn strategy_chat_sessions_have_the_same_message_cap_as_chat() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("CHAT_MAX_SESSION_MESSAGES", "4")]).await;
    let user = app.register("talker").await;
    let first = expect_status(strategy_chat(&app, &user.access, json!({"message": "one"})).await, StatusCode::OK).await;
    let session = first["session_id"].clone();
    expect_status(
        strategy_chat(&app, &user.access, json!({"message": "two", "session_id": session})).await,
        StatusCode::OK,
    )
    .await;
    let error = expect_status(
        strategy_chat(&app, &user.access, json!({"message": "three", "session_id": session})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["error"].as_str().unwrap().contains("limit of 4 messages"), "{error}");
    assert_eq!(sim.sim.requests().len(), 2, "the refused turn never reached Gemini");
}

#[tokio::test]
async fn strategy_chat_messages_come_in_bounded_pages() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("reader").await;
    let first = expect_status(strategy_chat(&app, &user.access, json!({"message": "m0"})).await, StatusCode::OK).await;
    let session = first["session_id"].as_str().unwrap().to_string();
    for n in 1..3 {
        let body = json!({"message": format!("m{n}"), "session_id": session});
        expect_status(strategy_chat(&app, &user.access, body).await, StatusCode::OK).await;
    }
    let path = format!("/api/strategies/chat/{session}/messages/");
    let all = expect_status(app.get(&path, Some(&user.access)).await, StatusCode::OK).await;
    let all = all["messages"].as_array().unwrap().clone();
    assert_eq!(all.len(), 6);

    let newest = expect_status(app.get(&format!("{path}?limit=2"), Some(&user.access)).await, StatusCode::OK).await;
    let newest = newest["messages"].as_array().unwrap();
    assert_eq!(newest.as_slice(), &all[4..], "the newest two, oldest first");
    let before = all[4]["id"].as_i64().unwrap();
    let older =
        expect_status(app.get(&format!("{path}?limit=3&before={before}"), Some(&user.access)).await, StatusCode::OK)
            .await;
    assert_eq!(older["messages"].as_array().unwrap().as_slice(), &all[1..4]);
    for bad in ["limit=0", "limit=501", "limit=x", "before=x"] {
        expect_status(app.get(&format!("{path}?{bad}"), Some(&user.access)).await, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn chat_session_lists_carry_only_the_last_twenty_messages_each() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("chatty").await;
    let answer = expect_status(
        app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "message 0"})).await,
        StatusCode::OK,
    )
    .await;
    assert!(answer["session_id"].is_string());
    // Twenty more turns, written straight to the store: the key pool's
    // default limits would not admit twenty calls a minute.
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", Some(&user.access)).await, StatusCode::OK).await;
    let session_id = sessions["results"][0]["id"].as_i64().unwrap();
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    for n in 1..11 {
        let ok = json!({"status": "ok"});
        store.add_chat_message(session_id, "user", &format!("message {n}"), &ok, 1).await.unwrap();
        store.add_chat_message(session_id, "assistant", &format!("reply {n}"), &ok, 1).await.unwrap();
    }
    store.close().await;
    let list = expect_status(app.get("/api/auth/chat-sessions/", Some(&user.access)).await, StatusCode::OK).await;
    let listed = &list["results"][0];
    assert_eq!(listed["message_count"], 22);
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 20);
    assert_eq!(messages[0]["content"], "message 1", "the oldest two are left out");
    let id = listed["id"].as_i64().unwrap();
    let detail =
        expect_status(app.get(&format!("/api/auth/chat-sessions/{id}/"), Some(&user.access)).await, StatusCode::OK)
            .await;
    assert_eq!(detail["messages"].as_array().unwrap().len(), 22, "the detail keeps the whole session");
}

#[tokio::test]
async fn a_user_may_hold_only_so_many_streams_open() {
    let sim = start_sim().await;
    sim.sim.script(std::iter::repeat_n(gemini_sim::Scripted::SlowStream { chunks: 4, gap_ms: 700 }, 3));
    let app = spawn_app_with_sim_and(&sim, &[("USER_MAX_STREAMS", "2")]).await;
    let user = app.register("streamer").await;
    let open = |n: usize| {
        app.client
            .post(app.url("/api/auth/chat/?stream=true"))
            .bearer_auth(&user.access)
            .json(&json!({"message": format!("stream {n}")}))
            .send()
    };
    let first = open(0).await.unwrap();
    let second = open(1).await.unwrap();
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let third = open(2).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams", "{body}");
    // Another user is not affected.
    let other = app.register("bystander").await;
    let response = app
        .client
        .post(app.url("/api/auth/chat/?stream=true"))
        .bearer_auth(&other.access)
        .json(&json!({"message": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop((first, second));
}

#[tokio::test]
async fn old_idempotency_answers_and_expired_sessions_are_purged() {
    let app = spawn_app().await;
    let user = app.register("purged").await;
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let now = chrono::Utc::now();
    let long_ago = now - chrono::Duration::days(2);
    store.claim_idempotency_key(user.id, "old", "r", long_ago).await.unwrap();
    store.complete_idempotency_key(user.id, "old", 200, &json!({})).await.unwrap();
    store.claim_idempotency_key(user.id, "fresh", "r", long_ago).await.unwrap();
    store::on_pool!(store, pool => sqlx::query("UPDATE idempotency_keys SET touched_at = $1 WHERE key = 'old'")
        .bind(long_ago)
        .execute(pool)
        .await
        .map(|_| ())
        .unwrap());

    // A week and a day on, the registration's session has expired.
    let later = now + chrono::Duration::days(8);
    let purged = server::maintenance::purge(&store, later - chrono::Duration::days(8), RETENTION).await.unwrap();
    assert_eq!((purged.idempotency_keys, purged.refresh_tokens), (1, 0), "only the day-old answer goes");
    let purged = server::maintenance::purge(&store, later, RETENTION).await.unwrap();
    assert_eq!(purged.refresh_tokens, 1, "the expired refresh token goes");
    expect_status(app.get("/api/auth/user/me/", Some(&user.access)).await, StatusCode::UNAUTHORIZED).await;
    store.close().await;
}
