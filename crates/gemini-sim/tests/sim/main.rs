//! The simulator over real HTTP: Google's paths, bodies, framing and
//! quotas, and the control API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sdk;

use std::collections::BTreeMap;
use std::time::Duration;

use gemini_sim::{KeyStatus, Scripted, SimConfig, SimKey, SimLimits, SimServer};
use serde_json::{json, Value};

fn key(secret: &str, id: &str, project: &str, status: KeyStatus) -> SimKey {
    SimKey { key: secret.into(), id: id.into(), project: project.into(), status }
}

async fn sim() -> SimServer {
    let mut limits = BTreeMap::new();
    limits.insert("p1/gemini-2.5-flash".to_string(), SimLimits { rpm: 2, tpm: 1_000, rpd: Some(3) });
    SimServer::start(SimConfig {
        keys: vec![
            key("secret-a1", "a1", "p1", KeyStatus::Valid),
            key("secret-a2", "a2", "p1", KeyStatus::Valid),
            key("secret-b", "b", "p2", KeyStatus::Valid),
            key("secret-dead", "dead", "p3", KeyStatus::Invalid),
            key("secret-leaked", "leaked", "p4", KeyStatus::Leaked),
            key("secret-blocked", "blocked", "p5", KeyStatus::Blocked),
            key("secret-off", "off", "p6", KeyStatus::ServiceDisabled),
        ],
        limits,
        window_seconds: 1.0,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn request(text: &str) -> Value {
    json!({
        "systemInstruction": { "parts": [{ "text": "You are terse." }] },
        "contents": [
            { "role": "user", "parts": [{ "text": "earlier question" }] },
            { "role": "model", "parts": [{ "text": "earlier answer" }] },
            { "role": "user", "parts": [{ "text": text }] }
        ],
        "generationConfig": { "temperature": 0.2 }
    })
}

async fn call(sim: &SimServer, model_method: &str, secret: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().post(format!("{}/v1beta/models/{model_method}", sim.base_url())).json(body);
    if let Some(secret) = secret {
        request = request.header("x-goog-api-key", secret);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn generate_content_answers_in_googles_shape_and_logs_the_prompt() {
    let sim = sim().await;
    let (status, body) =
        call(&sim, "gemini-2.5-flash:generateContent", Some("secret-b"), &request("What is RSI?")).await;
    assert_eq!(status, 200, "{body}");
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(candidate["finishReason"], "STOP");
    assert!(candidate["content"]["parts"][0]["text"].as_str().unwrap().contains("What is RSI?"));
    let usage = &body["usageMetadata"];
    assert!(usage["promptTokenCount"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap() + usage["candidatesTokenCount"].as_u64().unwrap()
    );
    let log = sim.sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].key_id.as_deref(), Some("b"));
    assert_eq!(log[0].system.as_deref(), Some("You are terse."));
    assert!(log[0].prompt.contains("earlier question") && log[0].prompt.contains("What is RSI?"));
    assert!(!serde_json::to_string(&log).unwrap().contains("secret-b"), "the log never holds a secret");
}

#[tokio::test]
async fn bad_keys_get_googles_errors() {
    let sim = sim().await;
    let cases = [
        (None, 403, "PERMISSION_DENIED", None),
        (Some("not-configured"), 400, "INVALID_ARGUMENT", Some("API_KEY_INVALID")),
        (Some("secret-dead"), 400, "INVALID_ARGUMENT", Some("API_KEY_INVALID")),
        (Some("secret-leaked"), 403, "PERMISSION_DENIED", None),
        (Some("secret-blocked"), 403, "PERMISSION_DENIED", Some("API_KEY_SERVICE_BLOCKED")),
        (Some("secret-off"), 403, "PERMISSION_DENIED", Some("SERVICE_DISABLED")),
    ];
    for (secret, code, status, reason) in cases {
        let (http, body) = call(&sim, "gemini-2.5-flash:generateContent", secret, &request("hi")).await;
        assert_eq!(http, code, "{secret:?}: {body}");
        assert_eq!(body["error"]["code"], code);
        assert_eq!(body["error"]["status"], status);
        if let Some(reason) = reason {
            assert_eq!(body["error"]["details"][0]["reason"], reason, "{body}");
        }
    }
    let (_, leaked) = call(&sim, "gemini-2.5-flash:generateContent", Some("secret-leaked"), &request("hi")).await;
    assert!(leaked["error"]["message"].as_str().unwrap().contains("reported as leaked"));
}

#[tokio::test]
async fn keys_of_one_project_share_its_per_minute_quota() {
    let sim = sim().await;
    let method = "gemini-2.5-flash:generateContent";
    assert_eq!(call(&sim, method, Some("secret-a1"), &request("one")).await.0, 200);
    assert_eq!(call(&sim, method, Some("secret-a2"), &request("two")).await.0, 200);
    let (status, body) = call(&sim, method, Some("secret-a2"), &request("three")).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    let details = body["error"]["details"].as_array().unwrap();
    let failure = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.QuotaFailure").unwrap();
    assert!(failure["violations"][0]["quotaId"].as_str().unwrap().contains("PerMinute"));
    let retry = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo").unwrap();
    let delay = retry["retryDelay"].as_str().unwrap();
    assert!(delay.ends_with('s'), "{delay}");
    // Another project is unaffected.
    assert_eq!(call(&sim, method, Some("secret-b"), &request("four")).await.0, 200);

    let stats = sim.sim.stats();
    let bucket = &stats.buckets["p1/gemini-2.5-flash"];
    assert_eq!((bucket.admitted, bucket.rate_limited, bucket.max_in_window), (2, 1, 2));
    assert_eq!(stats.keys["a2"].rate_limited, 1);

    // After the window, room again; then the day's quota (3) runs out.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(call(&sim, method, Some("secret-a1"), &request("five")).await.0, 200);
    let (status, body) = call(&sim, method, Some("secret-a1"), &request("six")).await;
    assert_eq!(status, 429);
    assert!(body["error"]["details"][0]["violations"][0]["quotaId"].as_str().unwrap().contains("PerDay"), "{body}");
}

#[tokio::test]
async fn the_token_quota_counts_input_tokens() {
    let sim = sim().await;
    let huge = "x".repeat(4_100);
    let (status, body) = call(&sim, "gemini-2.5-flash:generateContent", Some("secret-a1"), &request(&huge)).await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["details"][0]["violations"][0]["quotaId"].as_str().unwrap().contains("InputTokens"),
        "{body}"
    );
}

#[tokio::test]
async fn streams_are_crlf_framed_sse_with_cumulative_usage() {
    let sim = sim().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", sim.base_url()))
        .header("x-goog-api-key", "secret-b")
        .json(&request("stream me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(!text.contains("[DONE]"));
    let events: Vec<Value> = text
        .split("\r\n\r\n")
        .filter(|event| !event.is_empty())
        .map(|event| serde_json::from_str(event.strip_prefix("data: ").expect("data: line")).unwrap())
        .collect();
    assert!(events.len() >= 2, "{text}");
    let mut joined = String::new();
    let mut last_count = 0;
    for event in &events {
        joined.push_str(event["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap());
        let count = event["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap();
        assert!(count >= last_count, "usage is cumulative");
        last_count = count;
    }
    assert_eq!(events.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    assert!(events[0]["candidates"][0].get("finishReason").is_none());
    assert!(joined.contains("stream me"));
}

#[tokio::test]
async fn a_scripted_disconnect_cuts_the_stream_after_its_first_chunk() {
    let sim = sim().await;
    sim.sim.script([Scripted::StreamDisconnect]);
    let response = reqwest::Client::new()
        .post(format!("{}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", sim.base_url()))
        .header("x-goog-api-key", "secret-b")
        .json(&request("a long answer please"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.is_err(), "the body ends in a transport error");
}

#[tokio::test]
async fn scripted_responses_are_served_in_order() {
    let sim = sim().await;
    let script = json!([
        {"kind": "text", "text": "scripted hello"},
        {"kind": "unavailable"},
        {"kind": "rate_limit_minute", "retry_ms": 447},
        {"kind": "limit_zero"},
        {"kind": "blocked_prompt"},
        {"kind": "broken_code"}
    ]);
    let response =
        reqwest::Client::new().post(format!("{}/_sim/script", sim.base_url())).json(&script).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let method = "gemini-2.5-flash:generateContent";
    let (status, body) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert_eq!((status, body["candidates"][0]["content"]["parts"][0]["text"].as_str()), (200, Some("scripted hello")));
    let (status, body) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert_eq!((status, body["error"]["status"].as_str()), (503, Some("UNAVAILABLE")));
    let (status, body) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["details"][2]["retryDelay"], "0.447s");
    let (status, body) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert_eq!(status, 429);
    assert!(body["error"]["message"].as_str().unwrap().contains("limit: 0"));
    let (status, body) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert_eq!((status, body["promptFeedback"]["blockReason"].as_str()), (200, Some("SAFETY")));
    assert!(body.get("candidates").is_none());
    let (_, body) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert!(body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("class Broken(Strategy)\n"));
    // The script is used up: normal answers again.
    let (status, _) = call(&sim, method, Some("secret-b"), &request("x")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn count_tokens_model_lookup_and_unknown_models() {
    let sim = sim().await;
    let (status, body) = call(&sim, "gemini-2.5-flash:countTokens", Some("secret-b"), &request("count me")).await;
    assert_eq!(status, 200);
    assert!(body["totalTokens"].as_u64().unwrap() > 0);
    let info: Value = reqwest::Client::new()
        .get(format!("{}/v1beta/models/gemini-2.5-pro", sim.base_url()))
        .header("x-goog-api-key", "secret-b")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "models/gemini-2.5-pro");
    // Neither spent generation quota.
    assert!(sim.sim.stats().buckets.is_empty());
    let (status, body) = call(&sim, "gemini-9-ultra:generateContent", Some("secret-b"), &request("x")).await;
    assert_eq!((status, body["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn json_mode_answers_with_the_requested_shape() {
    let sim = sim().await;
    let mut body = request("format this");
    body["generationConfig"] = json!({
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"formatted_response": {"type": "STRING"}, "confidence": {"type": "STRING", "enum": ["low", "medium", "high"]}}}
    });
    let (_, response) = call(&sim, "gemini-2.5-flash:generateContent", Some("secret-b"), &body).await;
    let text = response["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(parsed["confidence"], "low");
    assert!(parsed["formatted_response"].as_str().unwrap().contains("format this"));
}
