//! The client against gemini-sim over real HTTP: every classification, the
//! stream rules, and the key kept out of URLs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod executor;
mod logs;

use std::time::Duration;

use gemini_client::chat::{estimate_tokens, parse_answer};
use gemini_client::{ChatRequest, GeminiClient, GeminiError, Message, Role};
use gemini_sim::{KeyStatus, Scripted, SimConfig, SimKey, SimServer};
use key_rotation::outcome::{Outcome, QuotaScope};
use key_rotation::secrets::ApiKeySecret;
use serde_json::Value;

const FLASH: &str = "gemini-2.5-flash";

async fn setup() -> (SimServer, GeminiClient) {
    let keys = [
        ("good-secret-1234", "good", KeyStatus::Valid),
        ("dead-secret", "dead", KeyStatus::Invalid),
        ("leaked-secret", "leaked", KeyStatus::Leaked),
    ]
    .into_iter()
    .map(|(key, id, status)| SimKey { key: key.into(), id: id.into(), project: format!("p-{id}"), status })
    .collect();
    let sim = SimServer::start(SimConfig { keys, stream_chunks: 3, ..SimConfig::default() }).await.unwrap();
    let client = GeminiClient::new(&sim.base_url(), "v1beta", Duration::from_secs(2)).unwrap();
    (sim, client)
}

fn good() -> ApiKeySecret {
    ApiKeySecret::new("good-secret-1234")
}

fn ask(text: &str) -> Value {
    ChatRequest {
        system: Some("You are a trading assistant.".into()),
        messages: vec![Message { role: Role::User, text: text.into() }],
        config: Default::default(),
    }
    .to_body()
}

#[tokio::test]
async fn a_generation_returns_text_and_usage_and_sends_the_key_in_a_header() {
    let (sim, client) = setup().await;
    let body = ask("Explain a moving-average crossover.");
    let answer = parse_answer(&client.generate(&good(), FLASH, &body).await.unwrap()).unwrap();
    assert!(answer.text.contains("Explain a moving-average crossover."));
    assert_eq!(answer.finish_reason.as_deref(), Some("STOP"));
    // The simulator counts like our estimate: ⌈characters / 4⌉ of all text.
    assert_eq!(answer.prompt_tokens, Some(estimate_tokens(&body)));
    let log = sim.sim.requests();
    assert_eq!(log[0].key_id.as_deref(), Some("good"));
    assert!(!log[0].key_in_url, "the key must never travel in a URL");
    assert_eq!(log[0].system.as_deref(), Some("You are a trading assistant."));
}

async fn scripted_error(sim: &SimServer, client: &GeminiClient, script: Scripted) -> GeminiError {
    sim.sim.script([script]);
    client.generate(&good(), FLASH, &ask("x")).await.expect_err("a scripted failure")
}

#[tokio::test]
async fn every_upstream_failure_is_classified_for_the_pool() {
    let (sim, client) = setup().await;
    let cases: Vec<(Scripted, Outcome)> = vec![
        (
            Scripted::RateLimitMinute { retry_ms: Some(37_000) },
            Outcome::RateLimited {
                scope: QuotaScope::PerMinute,
                retry_delay: Some(Duration::from_secs(37)),
                zero_limit: false,
            },
        ),
        (
            Scripted::RateLimitTokens { retry_ms: Some(447) },
            Outcome::RateLimited {
                scope: QuotaScope::InputTokens,
                retry_delay: Some(Duration::from_millis(447)),
                zero_limit: false,
            },
        ),
        (
            Scripted::RateLimitDay,
            Outcome::RateLimited { scope: QuotaScope::PerDay, retry_delay: None, zero_limit: false },
        ),
        (
            Scripted::LimitZero,
            Outcome::RateLimited { scope: QuotaScope::PerMinute, retry_delay: None, zero_limit: true },
        ),
        (
            Scripted::RateLimitBare,
            Outcome::RateLimited { scope: QuotaScope::Unknown, retry_delay: None, zero_limit: false },
        ),
        (Scripted::InvalidKey, Outcome::KeyInvalid),
        (Scripted::LeakedKey, Outcome::KeyLeaked),
        (Scripted::BlockedKey, Outcome::KeyBlocked),
        (Scripted::ServiceDisabled, Outcome::ProjectDisabled),
        (Scripted::Unavailable, Outcome::UpstreamUnavailable),
        (Scripted::Internal, Outcome::UpstreamUnavailable),
        (Scripted::DeadlineExceeded, Outcome::UpstreamUnavailable),
        (Scripted::Malformed, Outcome::UpstreamUnavailable),
        (Scripted::Truncated, Outcome::UpstreamUnavailable),
        (Scripted::BlockedPrompt, Outcome::CallerError),
        (Scripted::Safety, Outcome::CallerError),
        (Scripted::EmptyCandidates, Outcome::CallerError),
    ];
    for (script, expected) in cases {
        let label = format!("{script:?}");
        let error = scripted_error(&sim, &client, script).await;
        assert_eq!(error.outcome(), expected, "{label}: {error:?}");
    }
    assert!(matches!(scripted_error(&sim, &client, Scripted::BlockedPrompt).await, GeminiError::PromptBlocked { .. }));
    assert!(matches!(scripted_error(&sim, &client, Scripted::Safety).await, GeminiError::Safety));
}

#[tokio::test]
async fn configured_dead_keys_unknown_models_and_unreachable_hosts() {
    let (_sim, client) = setup().await;
    let error = client.generate(&ApiKeySecret::new("dead-secret"), FLASH, &ask("x")).await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::KeyInvalid);
    let error = client.get_model(&ApiKeySecret::new("leaked-secret"), FLASH).await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::KeyLeaked);
    let error = client.generate(&good(), "gemini-9-ultra", &ask("x")).await.unwrap_err();
    assert_eq!(error, GeminiError::ModelNotFound("gemini-9-ultra".into()));
    // Port 1 on loopback: the connection never opens, so nothing was sent.
    let nowhere = GeminiClient::new("http://127.0.0.1:1", "v1beta", Duration::from_secs(1)).unwrap();
    let error = nowhere.generate(&good(), FLASH, &ask("x")).await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::NotSent, "{error:?}");
    // The probe and token count spend no generation quota.
    assert!(client.get_model(&good(), FLASH).await.is_ok());
    assert!(client.count_tokens(&good(), FLASH, &ask("count me")).await.unwrap() > 0);
}

#[tokio::test]
async fn a_stream_yields_whole_chunks_and_fails_before_the_first_with_a_real_error() {
    let (sim, client) = setup().await;
    let mut stream = client.stream(&good(), "gemini-2.5-pro", &ask("stream this answer")).await.unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        text.push_str(&parse_answer(&chunk.unwrap()).unwrap().text);
        chunks += 1;
    }
    assert_eq!(chunks, 3);
    assert!(text.contains("stream this answer"));

    // Refused before the first chunk: an error, not a stream.
    sim.sim.script([Scripted::RateLimitMinute { retry_ms: Some(1_000) }]);
    let error = client.stream(&good(), "gemini-2.5-pro", &ask("x")).await.err().expect("refused");
    assert!(matches!(error, GeminiError::RateLimited { .. }));

    // Cut after the first chunk: the first arrives, then the stream errs.
    sim.sim.script([Scripted::StreamDisconnect]);
    let mut stream = client.stream(&good(), "gemini-2.5-pro", &ask("a long one")).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let tail = stream.next().await.expect("an error, not a silent end");
    assert!(tail.is_err());
}

/// An upstream that accepts the connection and never answers.
async fn hung_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{addr}"), holder)
}

/// The review's finding: one hung `GET models/{m}` stopped all re-probing.
/// Every upstream call has a total timeout, the probe included.
#[tokio::test]
async fn a_hung_upstream_times_out_every_call_and_the_probe_is_inconclusive() {
    use gemini_client::probe::ModelProbe;
    use key_rotation::pool::{KeyProbe, ProbeResult};

    let (base, _holder) = hung_upstream().await;
    let client = GeminiClient::new(&base, "v1beta", Duration::from_secs(1))
        .unwrap()
        .with_exchange_timeout(Duration::from_millis(300));
    let error = client.get_model(&good(), FLASH).await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::TimedOut, "{error:?}");
    let error = client.count_tokens(&good(), FLASH, &ask("x")).await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::TimedOut, "{error:?}");

    let patient = GeminiClient::new(&base, "v1beta", Duration::from_secs(1)).unwrap();
    let probe = ModelProbe::new(patient).with_timeout(Duration::from_millis(300));
    let pool = key_rotation::config::parse_pool(
        r#"{"keys": [{"key_id": "k", "model_name": "gemini-2.5-flash", "provider": "gemini", "rpm": 5, "tpm": 1000}]}"#,
        &key_rotation::secrets::EnvSecrets::new([("GEMINI_KEY_K".to_string(), "good-secret-1234".to_string())])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(probe.probe(&pool.keys[0]).await, ProbeResult::Inconclusive);
}
