//! The SDK gateway's Gemini-native surface (`/v1beta/`) and the personal
//! API tokens it takes, over HTTP against the real server with gemini-sim
//! behind it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app_with_sim, start_sim, TestApp};

/// A new user's login token and a fresh API token of theirs.
async fn user_with_api_token(app: &TestApp, username: &str) -> (String, Value) {
    let access = app.register(username).await.access;
    let response = app
        .client
        .post(format!("{}/api/auth/api-tokens/", app.base))
        .bearer_auth(&access)
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    (access, expect_status(response, StatusCode::CREATED).await)
}

fn ask(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}], "futureField": {"kept": true}})
}

/// The model the test pool serves: the first the gateway lists.
async fn served_model(app: &TestApp, token: &str) -> String {
    let response = app.client.get(format!("{}/v1beta/models", app.base)).header("x-goog-api-key", token).send().await;
    let listed = expect_status(response.unwrap(), StatusCode::OK).await;
    let name = listed["models"][0]["name"].as_str().unwrap();
    name.strip_prefix("models/").unwrap().to_string()
}

#[tokio::test]
async fn api_tokens_are_shown_once_listed_without_the_secret_and_revoked() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let (access, issued) = user_with_api_token(&app, "token-owner").await;
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("aat_") && token.len() == 47, "{issued}");
    assert_eq!(issued["prefix"].as_str().unwrap(), &token[..8]);
    assert_eq!(issued["name"], "laptop");
    assert!(issued["expires_at"].is_null() && issued["created_at"].is_string(), "{issued}");

    let model = served_model(&app, token).await;
    let listed = app.client.get(format!("{}/api/auth/api-tokens/", app.base)).bearer_auth(&access).send().await;
    let listed = expect_status(listed.unwrap(), StatusCode::OK).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(token), "a list showed the token");
    assert_eq!(listed[0]["prefix"], issued["prefix"]);

    // Another user sees none of them and cannot revoke them.
    let (other_access, _) = user_with_api_token(&app, "someone-else").await;
    let id = issued["id"].as_i64().unwrap();
    let url = format!("{}/api/auth/api-tokens/{id}/", app.base);
    let response = app.client.delete(&url).bearer_auth(&other_access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Revoked, it stops working at once on this replica.
    let response = app.client.delete(&url).bearer_auth(&access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .client
        .post(format!("{}/v1beta/models/{model}:generateContent", app.base))
        .header("x-goog-api-key", token)
        .json(&ask("hello"))
        .send()
        .await
        .unwrap();
    let refused = expect_status(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(refused["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(refused["error"]["details"][0]["reason"], "API_KEY_INVALID");
}

#[tokio::test]
async fn api_tokens_validate_their_fields() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let access = app.register("careful").await.access;
    let create = |body: Value| {
        app.client.post(format!("{}/api/auth/api-tokens/", app.base)).bearer_auth(&access).json(&body).send()
    };
    let refused = expect_status(create(json!({})).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(refused.to_string().contains("name"), "{refused}");
    let past = json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"});
    let refused = expect_status(create(past).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(refused.to_string().contains("expires_at"), "{refused}");
    let garbled = json!({"name": "x", "expires_at": "next tuesday"});
    expect_status(create(garbled).await.unwrap(), StatusCode::BAD_REQUEST).await;
    let later = json!({"name": "ci", "expires_at": "2099-01-01T00:00:00Z"});
    let made = expect_status(create(later).await.unwrap(), StatusCode::CREATED).await;
    assert!(made["expires_at"].as_str().unwrap().starts_with("2099-01-01"), "{made}");

    // The token endpoints take login tokens only, and the gateway API tokens only.
    let token = made["token"].as_str().unwrap();
    let response =
        app.client.get(format!("{}/api/auth/api-tokens/", app.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.client.get(format!("{}/v1beta/models", app.base)).bearer_auth(&access).send().await.unwrap();
    let refused = expect_status(response, StatusCode::BAD_REQUEST).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("/api/auth/api-tokens/"), "{refused}");
    let response = app.client.get(format!("{}/v1beta/models", app.base)).send().await.unwrap();
    let refused = expect_status(response, StatusCode::FORBIDDEN).await;
    assert_eq!(refused["error"]["status"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn generate_content_passes_through_the_pool_with_any_of_the_three_credentials() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let (_, issued) = user_with_api_token(&app, "sdk-user").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let url = format!("{}/v1beta/models/{model}:generateContent", app.base);

    let by_header = app.client.post(&url).header("x-goog-api-key", token).json(&ask("one")).send().await.unwrap();
    let by_bearer = app.client.post(&url).bearer_auth(token).json(&ask("two")).send().await.unwrap();
    let by_query = app.client.post(format!("{url}?key={token}")).json(&ask("three")).send().await.unwrap();
    for response in [by_header, by_bearer, by_query] {
        let answer = expect_status(response, StatusCode::OK).await;
        assert!(answer["candidates"][0]["content"]["parts"][0]["text"].is_string(), "{answer}");
        assert!(answer["usageMetadata"]["promptTokenCount"].is_u64(), "{answer}");
    }
    // Upstream saw the pool's key, never the caller's token, and the body as sent.
    let requests = sim.sim.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.key_id.is_some()), "the pool's key went upstream");

    // Google's shapes for what is wrong with a call.
    let response = app
        .client
        .post(format!("{}/v1beta/models/gemini-0-nonexistent:generateContent", app.base))
        .header("x-goog-api-key", token)
        .json(&ask("x"))
        .send()
        .await
        .unwrap();
    let missing = expect_status(response, StatusCode::NOT_FOUND).await;
    assert_eq!(missing["error"]["status"], "NOT_FOUND");
    assert_eq!(missing["error"]["code"], 404);
    let response = app.client.post(&url).header("x-goog-api-key", token).body("{not json").send().await.unwrap();
    let bad = expect_status(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(bad["error"]["status"], "INVALID_ARGUMENT");
    let response = app
        .client
        .get(format!("{}/v1beta/models/gemini-0-nonexistent", app.base))
        .header("x-goog-api-key", token)
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn streams_and_token_counts_come_back_in_googles_framing() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let (_, issued) = user_with_api_token(&app, "streamer").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;

    let response = app
        .client
        .post(format!("{}/v1beta/models/{model}:streamGenerateContent?alt=sse", app.base))
        .header("x-goog-api-key", token)
        .json(&ask("stream to me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\r\n\r\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(!chunks.is_empty(), "{text}");
    assert!(chunks.iter().all(|chunk| chunk["candidates"].is_array()), "{text}");

    let response = app
        .client
        .post(format!("{}/v1beta/models/{model}:streamGenerateContent", app.base))
        .header("x-goog-api-key", token)
        .json(&ask("as an array"))
        .send()
        .await
        .unwrap();
    let array = expect_status(response, StatusCode::OK).await;
    assert!(array.as_array().is_some_and(|chunks| !chunks.is_empty()), "{array}");

    let response = app
        .client
        .post(format!("{}/v1beta/models/{model}:countTokens", app.base))
        .header("x-goog-api-key", token)
        .json(&ask("count these words"))
        .send()
        .await
        .unwrap();
    let counted = expect_status(response, StatusCode::OK).await;
    assert!(counted["totalTokens"].as_u64().is_some_and(|n| n > 0), "{counted}");
}

fn sdk_python() -> Option<String> {
    if std::env::var("ALGOAGENT_SDK_TESTS").as_deref() != Ok("1") {
        return None;
    }
    Some(
        std::env::var("ALGOAGENT_SDK_PYTHON")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-sdk/bin/python").to_string()),
    )
}

/// Runs `script` (in `tests/api/`) with the SDK venv's python against a
/// server whose users may make `per_minute` AI calls, with a fresh API
/// token and the served model; it must print `marker`.
#[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
async fn sdk_check(script: &str, marker: &str, per_minute: &str) {
    let Some(python) = sdk_python() else {
        eprintln!("skipped: set ALGOAGENT_SDK_TESTS=1 (and install the SDKs, as .ci/run does)");
        return;
    };
    let sim = start_sim().await;
    let limits = [("USER_RPM_DEFAULT", per_minute), ("USER_BURST_DEFAULT", per_minute)];
    let app = crate::helpers::spawn_app_with_sim_and(&sim, &limits).await;
    let (_, issued) = user_with_api_token(&app, "sdk-user").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let output = tokio::process::Command::new(python)
        .arg(format!("{}/tests/api/{script}", env!("CARGO_MANIFEST_DIR")))
        .args([&app.base, token, &model])
        .output()
        .await
        .expect("the SDK venv's python runs (see .ci/run)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains(marker), "stdout: {stdout}\nstderr: {stderr}");
}

/// Google's google-genai SDK, unchanged, with only its base URL and key
/// changed, against `/v1beta/`. Runs with `ALGOAGENT_SDK_TESTS=1`.
#[tokio::test]
async fn googles_sdk_works_unchanged_against_the_gateway() {
    sdk_check("check_gateway_genai.py", "GATEWAY GENAI OK", "8").await;
}

/// With every log level on, an API token sent any of the three ways never
/// reaches the log: a `?key=` in a logged URL would be a leak.
#[tokio::test]
async fn api_tokens_never_reach_the_logs() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let database = crate::helpers::TestDatabase::create(&dir).await;
    let mut env = crate::helpers::base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    for (name, value) in [
        ("RUST_LOG", "trace"),
        ("GEMINI_BASE_URL", sim.base_url().as_str()),
        ("GEMINI_API_KEY", crate::helpers::SIM_KEY),
        ("KEYS_FILE", "/nonexistent/keys.json"),
    ] {
        crate::vault::set(&mut env, name, value);
    }
    let server = crate::cli::ServerProcess::start(env).await;
    let client = reqwest::Client::new();
    let password = "Gateway-Logs-Passphrase-31";
    let registered = client
        .post(format!("{}/api/auth/register/", server.base))
        .json(&json!({"username": "quiet", "email": "q@example.com", "password": password, "password2": password}))
        .send()
        .await
        .unwrap();
    let access = expect_status(registered, StatusCode::CREATED).await["tokens"]["access"].as_str().unwrap().to_string();
    let made = client
        .post(format!("{}/api/auth/api-tokens/", server.base))
        .bearer_auth(&access)
        .json(&json!({"name": "logged?"}))
        .send()
        .await
        .unwrap();
    let token = expect_status(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_string();
    let models = format!("{}/v1beta/models", server.base);
    for request in [
        client.get(format!("{models}?key={token}")),
        client.get(&models).header("x-goog-api-key", &token),
        client.get(&models).bearer_auth(&token),
        client.get(format!("{models}?key={token}x")),
    ] {
        request.send().await.unwrap();
    }
    let (status, logs) = server.terminate().await;
    assert!(status.success(), "{logs}");
    assert!(logs.contains("/v1beta/models"), "the capture holds the gateway's request logs:\n{logs}");
    assert!(!logs.contains(&token[4..]), "an API token reached the logs");
    assert!(!logs.contains(crate::helpers::SIM_KEY), "a Gemini key reached the logs");
}

/// API tokens are personal access tokens: they outlive logout and a
/// password change, and end with an expiry or the user's deactivation
/// (seen on every replica within the 2 s check cache).
#[tokio::test]
async fn tokens_outlive_logout_and_password_changes_but_not_deactivation() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("long-lived").await;
    let made = app
        .client
        .post(format!("{}/api/auth/api-tokens/", app.base))
        .bearer_auth(&user.access)
        .json(&json!({"name": "server"}))
        .send()
        .await
        .unwrap();
    let token = expect_status(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_string();
    let models = || app.client.get(format!("{}/v1beta/models", app.base)).header("x-goog-api-key", &token).send();
    assert_eq!(models().await.unwrap().status(), StatusCode::OK);

    let logged_out = app.post("/api/auth/logout/", Some(&user.access), &json!({"refresh": user.refresh})).await;
    assert!(logged_out.status().is_success(), "{}", logged_out.status());
    let login = app.post("/api/auth/login/", None, &json!({"username": "long-lived", "password": user.password})).await;
    let access = expect_status(login, StatusCode::OK).await["tokens"]["access"].as_str().unwrap().to_string();
    let changed = app
        .post(
            "/api/auth/change-password/",
            Some(&access),
            &json!({"current_password": user.password, "new_password": "A-whole-new-Passphrase-77"}),
        )
        .await;
    expect_status(changed, StatusCode::OK).await;
    tokio::time::sleep(api_core::api_tokens::CACHE_TTL).await;
    assert_eq!(models().await.unwrap().status(), StatusCode::OK, "logout and a password change leave API tokens alone");

    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    store::on_pool!(store, pool => sqlx::query("UPDATE users SET is_active = FALSE WHERE id = $1")
        .bind(user.id)
        .execute(pool)
        .await
        .map(|_| ())
        .unwrap());
    tokio::time::sleep(api_core::api_tokens::CACHE_TTL).await;
    assert_eq!(models().await.unwrap().status(), StatusCode::BAD_REQUEST, "a deactivated user's tokens end");
}

/// A blocked prompt or a safety stop is Google's answer, passed on as a
/// 200 for the SDK to read, and never held against the key that gave it.
#[tokio::test]
async fn safety_answers_pass_through_and_never_count_against_the_key() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let (_, issued) = user_with_api_token(&app, "edgy").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let url = format!("{}/v1beta/models/{model}:generateContent", app.base);
    sim.sim.script([gemini_sim::Scripted::Safety, gemini_sim::Scripted::BlockedPrompt, gemini_sim::Scripted::Safety]);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = app.client.post(&url).header("x-goog-api-key", token).json(&ask("risky")).send().await.unwrap();
        answers.push(expect_status(response, StatusCode::OK).await);
    }
    assert_eq!(answers[0]["candidates"][0]["finishReason"], "SAFETY", "{}", answers[0]);
    assert_eq!(answers[1]["promptFeedback"]["blockReason"], "SAFETY", "{}", answers[1]);
    let admin = app.register_admin("safety-admin").await;
    let keys = expect_status(app.get("/api/admin/keys/", Some(&admin.access)).await, StatusCode::OK).await;
    let states: Vec<&Value> = keys.as_array().unwrap().iter().map(|key| &key["state"]).collect();
    assert!(states.iter().all(|state| *state == "available"), "{keys}");
    let response = app.client.post(&url).header("x-goog-api-key", token).json(&ask("fine")).send().await.unwrap();
    expect_status(response, StatusCode::OK).await;
}

/// OpenAI's Python SDK, unchanged but for its base URL and key, against
/// `/v1/`. Runs with `ALGOAGENT_SDK_TESTS=1`.
#[tokio::test]
async fn openais_sdk_works_unchanged_against_the_gateway() {
    sdk_check("check_gateway_openai.py", "GATEWAY OPENAI OK", "14").await;
}
/// Operators see every user's tokens (never the tokens) and can revoke one.
#[tokio::test]
async fn admins_list_every_users_tokens_and_revoke_one() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let (access, issued) = user_with_api_token(&app, "token-holder").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let url = format!("{}/v1beta/models/{model}:generateContent", app.base);
    for _ in 0..2 {
        let response = app.client.post(&url).header("x-goog-api-key", token).json(&ask("count me")).send().await;
        expect_status(response.unwrap(), StatusCode::OK).await;
    }
    let admin = app.register_admin("token-admin").await;
    let response = app.get("/api/admin/api-tokens/", Some(&access)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let listed = expect_status(app.get("/api/admin/api-tokens/", Some(&admin.access)).await, StatusCode::OK).await;
    assert!(!listed.to_string().contains(token), "an operator's list showed a token");
    let row = listed.as_array().unwrap().iter().find(|row| row["id"] == issued["id"]).unwrap().clone();
    assert_eq!((row["username"].as_str(), row["prefix"].as_str()), (Some("token-holder"), issued["prefix"].as_str()));
    assert_eq!((row["hour"]["requests"].as_u64(), row["day"]["requests"].as_u64()), (Some(2), Some(2)), "{row}");
    assert!(row["day"]["tokens"].as_u64().is_some_and(|tokens| tokens > 0), "{row}");

    let id = issued["id"].as_i64().unwrap();
    let revoked = app
        .send(reqwest::Method::DELETE, &format!("/api/admin/api-tokens/{id}/"), Some(&admin.access), &json!({}))
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let response = app.client.get(format!("{}/v1beta/models", app.base)).header("x-goog-api-key", token).send().await;
    assert_eq!(response.unwrap().status(), StatusCode::BAD_REQUEST);
}

/// Gateway streams count against `USER_MAX_STREAMS` like the app's: the
/// next one gets a 429 in its surface's shape until one closes.
#[tokio::test]
async fn open_streams_are_capped_per_user_on_both_surfaces() {
    let sim = start_sim().await;
    let app = crate::helpers::spawn_app_with_sim_and(&sim, &[("USER_MAX_STREAMS", "1")]).await;
    let (_, issued) = user_with_api_token(&app, "many-streams").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let native = format!("{}/v1beta/models/{model}:streamGenerateContent?alt=sse", app.base);
    let openai = format!("{}/v1/chat/completions", app.base);
    let chat = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let open_native = || app.client.post(&native).header("x-goog-api-key", token).json(&ask("slow")).send();
    let open_openai = || app.client.post(&openai).bearer_auth(token).json(&chat).send();

    sim.sim.script([gemini_sim::Scripted::SlowStream { chunks: 4, gap_ms: 400 }]);
    let first = open_native().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let refused = expect_status(open_native().await.unwrap(), StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(refused["error"]["status"], "RESOURCE_EXHAUSTED", "{refused}");
    let refused = expect_status(open_openai().await.unwrap(), StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(refused["error"]["code"], "too_many_streams", "{refused}");

    // The first one read to its end frees the slot.
    first.text().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let again = open_openai().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

/// countTokens spends no generation quota, but it is still the caller's
/// traffic through the shared keys: it counts against their fair use, and
/// a key Google refuses there leaves the rotation as it would anywhere.
#[tokio::test]
async fn count_tokens_counts_against_fair_use_and_retires_a_dead_key() {
    let sim = start_sim().await;
    let limits = [("USER_RPM_DEFAULT", "2"), ("USER_BURST_DEFAULT", "2")];
    let app = crate::helpers::spawn_app_with_sim_and(&sim, &limits).await;
    let (_, issued) = user_with_api_token(&app, "counter").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let url = format!("{}/v1beta/models/{model}:countTokens", app.base);
    let count = || app.client.post(&url).header("x-goog-api-key", token).json(&ask("count me")).send();

    expect_status(count().await.unwrap(), StatusCode::OK).await;
    expect_status(count().await.unwrap(), StatusCode::OK).await;
    let refused = count().await.unwrap();
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    let refused = expect_status(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(refused["error"]["status"], "RESOURCE_EXHAUSTED", "{refused}");

    // Another user's count meets a key Google says is invalid.
    let (_, other) = user_with_api_token(&app, "second-counter").await;
    sim.sim.script([gemini_sim::Scripted::InvalidKey]);
    let response =
        app.client.post(&url).header("x-goog-api-key", other["token"].as_str().unwrap()).json(&ask("count")).send();
    assert_ne!(response.await.unwrap().status(), StatusCode::OK, "the only key is dead");
    let admin = app.register_admin("count-admin").await;
    let keys = expect_status(app.get("/api/admin/keys/", Some(&admin.access)).await, StatusCode::OK).await;
    assert_eq!(keys[0]["state"], "disabled", "{keys}");
}

/// A whole answer says how long Google took (`Server-Timing: upstream`),
/// on both surfaces, so a client can tell it from the gateway's own time.
#[tokio::test]
async fn answers_say_how_long_the_upstream_call_took() {
    let sim = crate::helpers::start_sim_answering_after(40).await;
    let app = spawn_app_with_sim(&sim).await;
    let (_, issued) = user_with_api_token(&app, "timed").await;
    let token = issued["token"].as_str().unwrap();
    let model = served_model(&app, token).await;
    let native = app
        .client
        .post(format!("{}/v1beta/models/{model}:generateContent", app.base))
        .header("x-goog-api-key", token)
        .json(&ask("time me"));
    let chat = json!({"model": model, "messages": [{"role": "user", "content": "time me"}]});
    let openai = app.client.post(format!("{}/v1/chat/completions", app.base)).bearer_auth(token).json(&chat);
    for request in [native, openai] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let timing = response.headers()["server-timing"].to_str().unwrap().to_string();
        let upstream_ms: f64 = timing.strip_prefix("upstream;dur=").unwrap().parse().unwrap();
        assert!(upstream_ms >= 40.0, "the simulator waited 40 ms before answering: {timing}");
    }
}
