//! User A's token against every one of user B's ids, on every id-bearing
//! route: always the same 404 a missing id gets, and B's data untouched.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{expect_status, spawn_app_with_sim, start_sim};

#[tokio::test]
async fn another_users_ids_are_404_on_every_route_and_nothing_of_theirs_changes() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let bob = app.register("bobowner").await;
    let alice = app.register("aliceintruder").await;
    let bob_token = Some(bob.access.as_str());

    let context = expect_status(
        app.post("/api/auth/ai-contexts/", bob_token, &json!({"session_name": "Bob's desk", "instructions": "Mine."}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let chat = expect_status(
        app.post("/api/auth/chat/", bob_token, &json!({"message": "Bob's question", "ai_context_id": context["id"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    let sessions = expect_status(app.get("/api/auth/chat-sessions/", bob_token).await, StatusCode::OK).await;
    let session = sessions["results"][0].clone();
    let profile = expect_status(app.get("/api/auth/profiles/me/", bob_token).await, StatusCode::OK).await;
    let before = [
        app.get(&format!("/api/auth/ai-contexts/{}/", context["id"]), bob_token).await,
        app.get(&format!("/api/auth/chat-sessions/{}/", session["id"]), bob_token).await,
        app.get(&format!("/api/auth/profiles/{}/", profile["id"]), bob_token).await,
    ];
    let mut bobs_view = Vec::new();
    for response in before {
        bobs_view.push(expect_status(response, StatusCode::OK).await);
    }

    let missing = 987_654_321;
    let edit_context = json!({"session_name": "Alice was here", "instructions": "Hers."});
    let edit_session = json!({"title": "Alice was here"});
    let edit_profile = json!({"trading_goals": "Alice was here"});
    let id_routes: Vec<(Method, String, serde_json::Value)> = vec![
        (Method::GET, "/api/auth/ai-contexts/{id}/".into(), json!({})),
        (Method::PUT, "/api/auth/ai-contexts/{id}/".into(), edit_context.clone()),
        (Method::PATCH, "/api/auth/ai-contexts/{id}/".into(), edit_context),
        (Method::POST, "/api/auth/ai-contexts/{id}/activate/".into(), json!({})),
        (Method::POST, "/api/auth/ai-contexts/{id}/deactivate/".into(), json!({})),
        (Method::DELETE, "/api/auth/ai-contexts/{id}/".into(), json!({})),
        (Method::GET, "/api/auth/chat-sessions/{id}/".into(), json!({})),
        (Method::PUT, "/api/auth/chat-sessions/{id}/".into(), edit_session.clone()),
        (Method::PATCH, "/api/auth/chat-sessions/{id}/".into(), edit_session),
        (Method::POST, "/api/auth/chat-sessions/{id}/end_session/".into(), json!({})),
        (Method::DELETE, "/api/auth/chat-sessions/{id}/".into(), json!({})),
        (Method::GET, "/api/auth/profiles/{id}/".into(), json!({})),
        (Method::PUT, "/api/auth/profiles/{id}/".into(), edit_profile.clone()),
        (Method::PATCH, "/api/auth/profiles/{id}/".into(), edit_profile),
    ];
    for (method, template, body) in &id_routes {
        let bobs_id = if template.contains("ai-contexts") {
            &context["id"]
        } else if template.contains("chat-sessions") {
            &session["id"]
        } else {
            &profile["id"]
        };
        let path = template.replace("{id}", &bobs_id.to_string());
        let response = app.send(method.clone(), &path, Some(&alice.access), body).await;
        let refused = expect_status(response, StatusCode::NOT_FOUND).await;
        let missing_path = template.replace("{id}", &missing.to_string());
        let absent = app.send(method.clone(), &missing_path, Some(&alice.access), body).await;
        let absent = expect_status(absent, StatusCode::NOT_FOUND).await;
        assert_eq!(refused, absent, "{method} {template}: Bob's id must look exactly like a missing one");
    }

    // Ids in request bodies: Bob's session by its public id, his context by its id.
    let into_bobs_session = json!({"message": "Let me in", "session_id": chat["session_id"]});
    expect_status(app.post("/api/auth/chat/", Some(&alice.access), &into_bobs_session).await, StatusCode::NOT_FOUND)
        .await;
    for (path, field) in [("/api/auth/chat/", "ai_context_id"), ("/api/auth/chat-sessions/", "ai_context")] {
        let with_bobs = json!({"message": "Use Bob's context", field: context["id"], "title": "Mine"});
        let with_missing = json!({"message": "Use Bob's context", field: missing, "title": "Mine"});
        let refused =
            expect_status(app.post(path, Some(&alice.access), &with_bobs).await, StatusCode::BAD_REQUEST).await;
        let absent =
            expect_status(app.post(path, Some(&alice.access), &with_missing).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            refused[field].as_array().unwrap()[0].as_str().unwrap().replace(&context["id"].to_string(), "N"),
            absent[field].as_array().unwrap()[0].as_str().unwrap().replace(&missing.to_string(), "N"),
            "{path}: Bob's context must look like a missing one"
        );
    }

    let after = [
        app.get(&format!("/api/auth/ai-contexts/{}/", context["id"]), bob_token).await,
        app.get(&format!("/api/auth/chat-sessions/{}/", session["id"]), bob_token).await,
        app.get(&format!("/api/auth/profiles/{}/", profile["id"]), bob_token).await,
    ];
    for (response, before) in after.into_iter().zip(&bobs_view) {
        assert_eq!(&expect_status(response, StatusCode::OK).await, before, "Bob's data is unchanged");
    }
    assert_eq!(sim.sim.requests().len(), 1, "only Bob's own turn reached Gemini");
}
