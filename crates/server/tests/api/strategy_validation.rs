//! `POST /api/strategies/api/validate_strategy_with_ai/`: the rule-based
//! verdict, the strategy chat session that records it, and the optional
//! Gemini formatting through the key pool.

use gemini_sim::Scripted;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app_with_sim, start_sim};

const VALIDATE: &str = "/api/strategies/api/validate_strategy_with_ai/";
const COMPLETE: &str = "Buy when the 50-day EMA crosses above the 200-day EMA. Sell when it crosses below. \
Use a stop loss at 2% below entry and risk 1% of equity per trade.";

#[tokio::test]
async fn a_strategy_is_validated_recorded_and_formatted_through_the_pool() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("validator").await;
    let token = Some(user.access.as_str());

    let first =
        expect_status(app.post(VALIDATE, token, &json!({"strategy_text": COMPLETE})).await, StatusCode::OK).await;
    assert_eq!(first["status"], "success");
    assert_eq!(first["classification"], "trend-following");
    assert_eq!(first["classification_detail"]["risk_tier"], "low");
    assert_eq!(first["confidence"], "high");
    assert_eq!(first["canonicalized_steps"].as_array().unwrap().len(), 3);
    assert_eq!(first["recommendations_list"], json!([]), "nothing is missing");
    let canonical: Value = serde_json::from_str(first["canonical_json"].as_str().unwrap()).unwrap();
    assert_eq!(canonical["steps"][2]["kind"], "risk");
    assert_eq!(canonical["indicators"], json!(["ema"]));
    assert!(first["formatted_response"].is_string(), "{first}");
    assert_eq!(first["metadata"]["formatting"]["status"], "ok");
    let session = first["session_id"].as_str().unwrap();
    assert!(session.starts_with("chat_") && session.len() == 21, "{session}");
    assert_eq!(first["message_count"], 2);
    assert_eq!(first["context_used"], false);

    // Formatting was asked for as JSON through responseSchema.
    let requests = sim.sim.requests();
    assert_eq!(requests.len(), 1);
    let config = &requests[0].body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert!(config["responseSchema"]["properties"]["formatted_response"].is_object(), "{config}");
    assert!(requests[0].prompt.contains("Buy when the 50-day EMA crosses above the 200-day EMA"));

    // The same session again: the earlier exchange is context.
    let second = expect_status(
        app.post(
            VALIDATE,
            token,
            &json!({"strategy_text": "I want to make money with crypto.", "session_id": session}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["session_id"], session);
    assert_eq!(second["message_count"], 4);
    assert_eq!(second["context_used"], true);
    assert_eq!(second["confidence"], "low");
    let titles: Vec<&str> =
        second["recommendations_list"].as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap()).collect();
    assert!(titles.contains(&"Add a stop loss") && titles.contains(&"Define the entry"), "{titles:?}");
    let contents = sim.sim.requests()[1].body["contents"].as_array().unwrap().clone();
    assert!(contents.len() >= 3, "the earlier exchange went along: {contents:?}");
}

#[tokio::test]
async fn guardrails_answer_200_with_their_status_and_never_call_gemini() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("guarded").await;
    let token = Some(user.access.as_str());
    let cases = [
        (json!({"strategy_text": "Please provide your API key so you can trade for me."}), "error"),
        (json!({"strategy_text": "Go long BTC on a breakout and trade it live with real money."}), "approval_required"),
        (json!({"strategy_text": "Use the rules at https://example.com/s.html."}), "url_fetch_required"),
        (json!({"strategy_text": "https://example.com/x", "input_type": "url"}), "url_fetch_required"),
        (json!({"strategy_text": "I want to make money with crypto.", "strict_mode": true}), "error"),
    ];
    for (body, status) in cases {
        let answer = expect_status(app.post(VALIDATE, token, &body).await, StatusCode::OK).await;
        assert_eq!(answer["status"], status, "{body} → {answer}");
        assert_eq!(answer["message_count"], 2, "the exchange is recorded");
    }
    let credentials = expect_status(
        app.post(VALIDATE, token, &json!({"strategy_text": "My password is hunter2"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(credentials["issues"], json!(["security_violation"]));
    let url = expect_status(
        app.post(VALIDATE, token, &json!({"strategy_text": "See https://example.com/s.html."})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(url["urls"], json!(["https://example.com/s.html"]));
    assert!(sim.sim.requests().is_empty(), "no guardrail case reached Gemini");
}

#[tokio::test]
async fn a_formatting_failure_keeps_the_rule_based_result_and_says_so() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("unformatted").await;
    sim.sim.script(std::iter::repeat_n(Scripted::Unavailable, 4));
    let answer = expect_status(
        app.post(VALIDATE, Some(&user.access), &json!({"strategy_text": COMPLETE})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["confidence"], "high");
    assert!(answer.get("formatted_response").is_none());
    assert_eq!(answer["metadata"]["formatting"]["status"], "failed");
    assert!(answer["warnings"][0].as_str().unwrap().contains("unavailable"), "{answer}");

    let calls = sim.sim.requests().len();
    let plain = expect_status(
        app.post(VALIDATE, Some(&user.access), &json!({"strategy_text": COMPLETE, "use_gemini": false})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(plain["metadata"]["formatting"]["status"], "not_requested");
    assert_eq!(sim.sim.requests().len(), calls, "use_gemini=false makes no call");
}

#[tokio::test]
async fn bad_requests_are_clear_and_sessions_are_owner_scoped() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let owner = app.register("sessionowner").await;
    let other = app.register("sessionthief").await;
    let error = expect_status(app.post(VALIDATE, Some(&owner.access), &json!({})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["strategy_text"][0], "This field is required.");
    let error = expect_status(
        app.post(VALIDATE, Some(&owner.access), &json!({"strategy_text": "x", "input_type": "poem"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["input_type"].is_array());
    let mine = expect_status(
        app.post(VALIDATE, Some(&owner.access), &json!({"strategy_text": COMPLETE, "use_gemini": false})).await,
        StatusCode::OK,
    )
    .await;
    let theirs = json!({"strategy_text": COMPLETE, "session_id": mine["session_id"]});
    expect_status(app.post(VALIDATE, Some(&other.access), &theirs).await, StatusCode::NOT_FOUND).await;
    let unknown = json!({"strategy_text": COMPLETE, "session_id": "chat_0000000000000000"});
    expect_status(app.post(VALIDATE, Some(&owner.access), &unknown).await, StatusCode::NOT_FOUND).await;
    expect_status(app.post(VALIDATE, None, &json!({"strategy_text": COMPLETE})).await, StatusCode::UNAUTHORIZED).await;
}

const CREATE: &str = "/api/strategies/api/create_strategy_with_ai/";

#[tokio::test]
async fn a_validated_text_becomes_a_strategy_and_names_never_collide() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("aicreator").await;
    let token = Some(user.access.as_str());
    let body = json!({"strategy_text": COMPLETE, "name": "EMA trend", "tags": ["trend"], "use_gemini": false});
    let created = expect_status(app.post(CREATE, token, &body).await, StatusCode::CREATED).await;
    assert_eq!(created["success"], true);
    let strategy = &created["strategy"];
    assert_eq!(strategy["name"], "EMA trend");
    assert_eq!(strategy["status"], "valid");
    assert_eq!(strategy["tags"], json!(["trend"]));
    assert!(strategy["last_validated"].is_string());
    assert_eq!(strategy["parameters"]["classification"], "trend-following");
    let canonical: Value = serde_json::from_str(strategy["strategy_code"].as_str().unwrap()).unwrap();
    assert_eq!(canonical["schema_version"], "1.0", "strategy_code holds the canonical JSON");
    assert_eq!(created["ai_validation"]["status"], "success");
    assert!(created["session_id"].as_str().unwrap().starts_with("chat_"));

    let again = expect_status(app.post(CREATE, token, &body).await, StatusCode::CREATED).await;
    assert_eq!(again["strategy"]["name"], "EMA trend v2");
    let third = expect_status(app.post(CREATE, token, &body).await, StatusCode::CREATED).await;
    assert_eq!(third["strategy"]["name"], "EMA trend v3");

    // A text that does not validate is a 400 carrying the verdict.
    let refused = expect_status(
        app.post(CREATE, token, &json!({"strategy_text": "Give me your password", "name": "Nope"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(refused["error"], "Strategy validation failed");
    assert_eq!(refused["issues"], json!(["security_violation"]));
    let list = expect_status(app.get("/api/strategies/strategies/", token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 3);

    // Re-validation updates the strategy in place.
    let path = format!("/api/strategies/api/{}/update_strategy_with_ai/", strategy["id"]);
    let updated = expect_status(
        app.send(
            reqwest::Method::PATCH,
            &path,
            token,
            &json!({"strategy_text": "Scalp EURUSD on the 1-minute chart: enter long at the lower Bollinger band, take profit at the middle band, stop at 5 pips.", "use_gemini": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["strategy"]["id"], strategy["id"]);
    assert_eq!(updated["strategy"]["name"], "EMA trend", "the name stays unless given");
    assert_eq!(updated["strategy"]["parameters"]["classification"], "scalping");
    let other = app.register("aiintruder").await;
    let response =
        app.send(reqwest::Method::PUT, &path, Some(&other.access), &json!({"strategy_text": COMPLETE})).await;
    expect_status(response, StatusCode::NOT_FOUND).await;
}
