//! gemini-sim: a wire-faithful fake of the Gemini REST API.
//!
//! It serves `/v1beta/` and `/v1/` model routes with Google's JSON, SSE
//! framing and error bodies; counts quotas per (project, model) the way
//! Google does; and answers prompts in ways tests can check. A control API
//! under `/_sim/` scripts responses and reads the request log and stats.
//!
//! It shares no wire code with `gemini-client`, so a wire bug cannot cancel
//! itself out in the tests.

pub mod answers;
pub mod config;
pub mod errors;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use config::{KeyStatus, SimConfig, SimKey, SimLimits};
use errors::{GoogleError, QuotaKind};

/// A scripted answer for the next generate call, replacing the normal one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scripted {
    /// Answer with this text.
    Text {
        text: String,
    },
    /// Answer with Python code that does not parse.
    BrokenCode,
    /// A per-minute 429 with `RetryInfo` (`retry_ms`, default 30 s).
    RateLimitMinute {
        retry_ms: Option<u64>,
    },
    RateLimitDay,
    RateLimitTokens {
        retry_ms: Option<u64>,
    },
    /// A 429 whose message says `limit: 0`.
    LimitZero,
    /// A 429 without details.
    RateLimitBare,
    InvalidKey,
    LeakedKey,
    BlockedKey,
    ServiceDisabled,
    Unavailable,
    Internal,
    DeadlineExceeded,
    /// 200 with `promptFeedback.blockReason` and no candidates.
    BlockedPrompt,
    /// 200 with `finishReason: SAFETY`.
    Safety,
    /// 200 with an empty candidate list.
    EmptyCandidates,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a JSON body cut short.
    Truncated,
    /// A stream cut after its first chunk.
    StreamDisconnect,
    /// The normal answer streamed in `chunks` pieces `gap_ms` apart, so a
    /// test can act while a stream is open.
    SlowStream {
        chunks: usize,
        gap_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub at_ms: u64,
    /// The key's configured id, never the secret.
    pub key_id: Option<String>,
    pub model: String,
    pub method: String,
    pub status: u16,
    /// Whether the key came in the URL (`?key=`) rather than the header.
    pub key_in_url: bool,
    pub system: Option<String>,
    pub prompt: String,
    pub body: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    pub admitted: u64,
    pub rate_limited: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BucketStats {
    pub admitted: u64,
    pub rate_limited: u64,
    /// The most requests ever inside one sliding window, measured at arrival.
    pub max_in_window: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub keys: BTreeMap<String, Counters>,
    /// "project/model" → counts.
    pub buckets: BTreeMap<String, BucketStats>,
}

#[derive(Default)]
struct State_ {
    windows: HashMap<String, VecDeque<(Instant, u64)>>,
    days: HashMap<String, u32>,
    script: VecDeque<Scripted>,
    /// Answers for the next calls of one project's keys, before `script`.
    project_scripts: HashMap<String, VecDeque<Scripted>>,
    log: Vec<LoggedRequest>,
    stats: Stats,
}

pub struct Sim {
    config: SimConfig,
    state: Mutex<State_>,
    started: Instant,
}

pub type SharedSim = Arc<Sim>;

fn now_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Sim {
    pub fn new(config: SimConfig) -> SharedSim {
        Arc::new(Self { config, state: Mutex::new(State_::default()), started: Instant::now() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn script(&self, responses: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(responses);
    }

    /// Scripts the next answers to calls with a key of `project` only.
    pub fn script_project(&self, project: &str, responses: impl IntoIterator<Item = Scripted>) {
        self.lock().project_scripts.entry(project.to_string()).or_default().extend(responses);
    }

    fn next_scripted(&self, project: &str) -> Option<Scripted> {
        let mut state = self.lock();
        match state.project_scripts.get_mut(project).and_then(VecDeque::pop_front) {
            Some(scripted) => Some(scripted),
            None => state.script.pop_front(),
        }
    }

    /// The next scripted answer of `project`, taken only if `error` makes
    /// an error of it: a method that answers no text (countTokens) fails
    /// as Google's does, and leaves a scripted text for the next generation.
    fn next_scripted_error(
        &self,
        project: &str,
        error: impl Fn(&Scripted) -> Option<GoogleError>,
    ) -> Option<GoogleError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let queue = match state.project_scripts.get_mut(project).filter(|queue| !queue.is_empty()) {
            Some(queue) => queue,
            None => &mut state.script,
        };
        let found = error(queue.front()?)?;
        queue.pop_front();
        Some(found)
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    pub fn reset(&self) {
        *self.lock() = State_::default();
    }

    fn key(&self, secret: &str) -> Option<&SimKey> {
        self.config.keys.iter().find(|k| k.key == secret)
    }

    /// Counts one request against its bucket at arrival, or says why not.
    fn admit(&self, key: &SimKey, model: &str, tokens: u64) -> Result<(), GoogleError> {
        let limits = self.config.limits_for(&key.project, model);
        let bucket = format!("{}/{model}", key.project);
        let window = self.config.window();
        let now = Instant::now();
        let mut state = self.lock();
        let refusal = {
            let entries = state.windows.entry(bucket.clone()).or_default();
            while entries.front().is_some_and(|(at, _)| now.duration_since(*at) >= window) {
                entries.pop_front();
            }
            let retry = |entries: &VecDeque<(Instant, u64)>| {
                entries.front().map(|(at, _)| {
                    u64::try_from((window.saturating_sub(now.duration_since(*at))).as_millis()).unwrap_or(0).max(1)
                })
            };
            let used: u64 = entries.iter().map(|(_, t)| t).sum();
            if limits.rpm == 0 {
                Some(errors::quota_exceeded(QuotaKind::PerMinute, model, 0, None))
            } else if entries.len() >= limits.rpm as usize {
                Some(errors::quota_exceeded(QuotaKind::PerMinute, model, u64::from(limits.rpm), retry(entries)))
            } else if used + tokens > limits.tpm {
                Some(errors::quota_exceeded(QuotaKind::InputTokensPerMinute, model, limits.tpm, retry(entries)))
            } else {
                None
            }
        };
        let refusal = refusal.or_else(|| {
            let today = state.days.get(&bucket).copied().unwrap_or(0);
            limits
                .rpd
                .filter(|rpd| today >= *rpd)
                .map(|rpd| errors::quota_exceeded(QuotaKind::PerDay, model, u64::from(rpd), None))
        });
        let key_stats = state.stats.keys.entry(key.id.clone()).or_default();
        if refusal.is_some() {
            key_stats.rate_limited += 1;
            state.stats.buckets.entry(bucket).or_default().rate_limited += 1;
            return Err(refusal.unwrap_or_else(errors::bare_rate_limit));
        }
        key_stats.admitted += 1;
        let entries = state.windows.entry(bucket.clone()).or_default();
        entries.push_back((now, tokens));
        let in_window = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        *state.days.entry(bucket.clone()).or_default() += 1;
        let bucket_stats = state.stats.buckets.entry(bucket).or_default();
        bucket_stats.admitted += 1;
        bucket_stats.max_in_window = bucket_stats.max_in_window.max(in_window);
        Ok(())
    }

    fn log(&self, entry: LoggedRequest) {
        self.lock().log.push(entry);
    }
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: Option<String>,
    alt: Option<String>,
}

fn api_key(headers: &HeaderMap, query: &KeyQuery) -> Option<String> {
    headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::to_string).or_else(|| query.key.clone())
}

/// The whole simulator, control API included.
pub fn router(sim: SharedSim) -> Router {
    Router::new()
        .route("/{version}/models", get(list_models))
        .route("/{version}/models/{target}", get(get_model).post(model_call))
        .route("/_sim/script", post(script))
        .route("/_sim/projects/{project}/script", post(script_project))
        .route("/_sim/requests", get(requests))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .with_state(sim)
}

fn model_info(model: &str) -> Value {
    json!({
        "name": format!("models/{model}"),
        "version": "001",
        "displayName": model,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
    })
}

async fn list_models(State(sim): State<SharedSim>) -> Json<Value> {
    Json(json!({ "models": sim.config.models.iter().map(|m| model_info(m)).collect::<Vec<_>>() }))
}

/// Checks the key the way Google does before anything else.
fn check_key<'a>(sim: &'a Sim, secret: Option<&str>) -> Result<&'a SimKey, GoogleError> {
    let Some(secret) = secret else {
        return Err(errors::missing_key());
    };
    let key = sim.key(secret).ok_or_else(errors::invalid_key)?;
    match key.status {
        KeyStatus::Valid => Ok(key),
        KeyStatus::Invalid => Err(errors::invalid_key()),
        KeyStatus::Leaked => Err(errors::leaked_key()),
        KeyStatus::Blocked => Err(errors::blocked_key()),
        KeyStatus::ServiceDisabled => Err(errors::service_disabled(&key.project)),
    }
}

/// `GET models/{m}`: the no-quota probe. It checks the key, spends nothing.
async fn get_model(
    State(sim): State<SharedSim>,
    Path((version, model)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    let secret = api_key(&headers, &query);
    if let Err(err) = check_key(&sim, secret.as_deref()) {
        return err.into_response();
    }
    if !sim.config.models.contains(&model) {
        return errors::model_not_found(&model, &version).into_response();
    }
    Json(model_info(&model)).into_response()
}

async fn model_call(
    State(sim): State<SharedSim>,
    Path((version, target)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, method)) = target.split_once(':') else {
        return errors::bad_request("Expected models/{model}:{method}").into_response();
    };
    let model = model.to_string();
    let method = method.to_string();
    let secret = api_key(&headers, &query);
    let key_in_url = query.key.is_some();
    let key = check_key(&sim, secret.as_deref());
    // A configured key is named in the log even when it was rejected.
    let key_id = secret.as_deref().and_then(|s| sim.key(s)).map(|k| k.id.clone());
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let body = match parsed {
        Ok(value) if value.is_object() => value,
        _ => {
            let err = errors::bad_request("Invalid JSON payload received.");
            return finish(&sim, (key_id, key_in_url), &model, &method, &Value::Null, err.into_response());
        }
    };
    let response = match key {
        Err(err) => err.into_response(),
        Ok(key) => handle(&sim, key, &version, &model, &method, &body, query.alt.as_deref()).await,
    };
    finish(&sim, (key_id, key_in_url), &model, &method, &body, response)
}

fn finish(
    sim: &Sim,
    (key_id, key_in_url): (Option<String>, bool),
    model: &str,
    method: &str,
    body: &Value,
    response: Response,
) -> Response {
    let prompt = answers::prompt(body);
    let status = response.status().as_u16();
    if status >= 400 && status != 429 {
        if let Some(id) = &key_id {
            sim.lock().stats.keys.entry(id.clone()).or_default().errors += 1;
        }
    }
    sim.log(LoggedRequest {
        at_ms: now_ms(sim.started),
        key_id,
        model: model.to_string(),
        method: method.to_string(),
        status,
        key_in_url,
        system: prompt.system,
        prompt: prompt.all_text,
        body: body.clone(),
    });
    response
}

async fn handle(
    sim: &SharedSim,
    key: &SimKey,
    version: &str,
    model: &str,
    method: &str,
    body: &Value,
    alt: Option<&str>,
) -> Response {
    if !sim.config.models.iter().any(|m| m == model) {
        return errors::model_not_found(model, version).into_response();
    }
    let prompt = answers::prompt(body);
    let prompt_tokens = answers::estimate_tokens(&prompt.all_text);
    match method {
        "countTokens" => {
            let scripted = sim.next_scripted_error(&key.project, |s| scripted_error(s, model, &key.project));
            return match scripted {
                Some(error) => error.into_response(),
                None => Json(json!({ "totalTokens": prompt_tokens })).into_response(),
            };
        }
        "generateContent" | "streamGenerateContent" => {}
        other => return errors::bad_request(&format!("Unknown method {other}")).into_response(),
    }
    if body["contents"].as_array().is_none_or(Vec::is_empty) {
        return errors::bad_request("* GenerateContentRequest.contents: contents is not specified").into_response();
    }
    let scripted = sim.next_scripted(&key.project);
    if let Some(error) = scripted.as_ref().and_then(|s| scripted_error(s, model, &key.project)) {
        if error.status == StatusCode::TOO_MANY_REQUESTS {
            sim.lock().stats.keys.entry(key.id.clone()).or_default().rate_limited += 1;
        }
        return error.into_response();
    }
    if let Err(refusal) = sim.admit(key, model, prompt_tokens) {
        return refusal.into_response();
    }
    let (low, high) = sim.config.latency_ms;
    if high > 0 {
        let delay = rand::rng().random_range(low..=high.max(low));
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let roll: f64 = rand::rng().random();
    if roll < sim.config.error_rate_500 {
        return errors::internal().into_response();
    }
    if roll < sim.config.error_rate_500 + sim.config.error_rate_503 {
        return errors::overloaded().into_response();
    }
    let text = match &scripted {
        Some(Scripted::Text { text }) => text.clone(),
        Some(Scripted::BrokenCode) => {
            "```python\nfrom backtesting import Strategy\n\nclass Broken(Strategy)\n    def init(self):\n        pass\n```\n"
                .to_string()
        }
        _ => answers::answer(body, &prompt),
    };
    let streaming = method == "streamGenerateContent";
    match scripted {
        Some(Scripted::BlockedPrompt) => Json(json!({
            "promptFeedback": { "blockReason": "SAFETY", "safetyRatings": [
                { "category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true }
            ]},
            "usageMetadata": { "promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens },
            "modelVersion": model,
        }))
        .into_response(),
        Some(Scripted::Safety) => Json(json!({
            "candidates": [{ "finishReason": "SAFETY", "index": 0, "safetyRatings": [
                { "category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true }
            ]}],
            "usageMetadata": { "promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens },
            "modelVersion": model,
        }))
        .into_response(),
        Some(Scripted::EmptyCandidates) => Json(json!({
            "candidates": [],
            "usageMetadata": { "promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens },
            "modelVersion": model,
        }))
        .into_response(),
        Some(Scripted::Malformed) => {
            ([(header::CONTENT_TYPE, "application/json")], "<html>upstream proxy error</html>").into_response()
        }
        Some(Scripted::Truncated) => {
            let full = response_json(model, &text, prompt_tokens, answers::estimate_tokens(&text), true).to_string();
            ([(header::CONTENT_TYPE, "application/json")], full[..full.len() / 2].to_string()).into_response()
        }
        Some(Scripted::StreamDisconnect) if streaming => {
            stream(&chunk_responses(model, &text, prompt_tokens, sim.config.stream_chunks), true, NORMAL_CHUNK_GAP)
        }
        Some(Scripted::SlowStream { chunks, gap_ms }) if streaming => {
            stream(&chunk_responses(model, &text, prompt_tokens, chunks), false, Duration::from_millis(gap_ms))
        }
        _ => {
            let candidates = body["generationConfig"]["candidateCount"].as_u64().unwrap_or(1).clamp(1, 8) as usize;
            let chunks = match answers::function_call(body, &prompt) {
                Some(call) => vec![function_call_json(model, &call, prompt_tokens)],
                None if streaming => chunk_responses(model, &text, prompt_tokens, sim.config.stream_chunks),
                None => vec![response_json(model, &text, prompt_tokens, answers::estimate_tokens(&text), true)],
            };
            let chunks: Vec<Value> = chunks.into_iter().map(|chunk| with_candidates(chunk, candidates)).collect();
            if streaming && alt == Some("sse") {
                let cut = rand::rng().random::<f64>() < sim.config.stream_disconnect_rate;
                stream(&chunks, cut, NORMAL_CHUNK_GAP)
            } else if streaming {
                // Without alt=sse Google streams a JSON array of responses.
                Json(Value::Array(chunks)).into_response()
            } else {
                Json(chunks.into_iter().next().unwrap_or_default()).into_response()
            }
        }
    }
}

/// A model turn that calls a function.
fn function_call_json(model: &str, call: &Value, prompt_tokens: u64) -> Value {
    let mut response = response_json(model, "", prompt_tokens, 8, true);
    response["candidates"][0]["content"]["parts"] = json!([{ "functionCall": call }]);
    response
}

/// `candidateCount`: the candidate repeated with its own index, each after
/// the first saying which it is.
fn with_candidates(mut response: Value, count: usize) -> Value {
    let Some(first) = response["candidates"].as_array().and_then(|c| c.first()).cloned() else { return response };
    let candidates: Vec<Value> = (0..count)
        .map(|i| {
            let mut candidate = first.clone();
            candidate["index"] = json!(i);
            if let (true, Some(text)) = (i > 0, candidate["content"]["parts"][0]["text"].as_str()) {
                candidate["content"]["parts"][0]["text"] = json!(format!("{text} (candidate {i})"));
            }
            candidate
        })
        .collect();
    response["candidates"] = json!(candidates);
    response
}

fn scripted_error(scripted: &Scripted, model: &str, project: &str) -> Option<GoogleError> {
    Some(match scripted {
        Scripted::RateLimitMinute { retry_ms } => {
            errors::quota_exceeded(QuotaKind::PerMinute, model, 15, Some(retry_ms.unwrap_or(30_000)))
        }
        Scripted::RateLimitDay => errors::quota_exceeded(QuotaKind::PerDay, model, 1500, None),
        Scripted::RateLimitTokens { retry_ms } => {
            errors::quota_exceeded(QuotaKind::InputTokensPerMinute, model, 1_000_000, Some(retry_ms.unwrap_or(30_000)))
        }
        Scripted::LimitZero => errors::quota_exceeded(QuotaKind::PerMinute, model, 0, None),
        Scripted::RateLimitBare => errors::bare_rate_limit(),
        Scripted::InvalidKey => errors::invalid_key(),
        Scripted::LeakedKey => errors::leaked_key(),
        Scripted::BlockedKey => errors::blocked_key(),
        Scripted::ServiceDisabled => errors::service_disabled(project),
        Scripted::Unavailable => errors::overloaded(),
        Scripted::Internal => errors::internal(),
        Scripted::DeadlineExceeded => errors::deadline_exceeded(),
        _ => return None,
    })
}

fn response_json(model: &str, text: &str, prompt_tokens: u64, candidate_tokens: u64, last: bool) -> Value {
    let mut candidate = json!({
        "content": { "parts": [{ "text": text }], "role": "model" },
        "index": 0,
    });
    if last {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidate_tokens,
            "totalTokenCount": prompt_tokens + candidate_tokens,
        },
        "modelVersion": model,
        "responseId": format!("sim-{:016x}", rand::rng().random::<u64>()),
    })
}

/// The answer split into whole responses, each with cumulative usage.
fn chunk_responses(model: &str, text: &str, prompt_tokens: u64, pieces: usize) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = pieces.clamp(1, chars.len().max(1));
    let size = chars.len().div_ceil(pieces).max(1);
    let mut sent = 0usize;
    chars
        .chunks(size)
        .enumerate()
        .map(|(i, piece)| {
            sent += piece.len();
            let part: String = piece.iter().collect();
            let last = (i + 1) * size >= chars.len();
            response_json(model, &part, prompt_tokens, (sent as u64).div_ceil(4), last)
        })
        .collect()
}

/// A small gap between chunks, as a real stream has.
const NORMAL_CHUNK_GAP: Duration = Duration::from_millis(5);

/// `alt=sse`: `data: <json>` events framed by CRLF, no `[DONE]`. A cut
/// stream ends with a transport error after its first chunk.
fn stream(chunks: &[Value], cut: bool, gap: Duration) -> Response {
    let mut events: Vec<Result<Bytes, std::io::Error>> = Vec::with_capacity(chunks.len() + 1);
    for chunk in chunks {
        events.push(Ok(Bytes::from(format!("data: {chunk}\r\n\r\n"))));
        if cut {
            events.push(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated disconnect")));
            break;
        }
    }
    let body = Body::from_stream(futures::stream::iter(events).then(move |item| async move {
        tokio::time::sleep(gap).await;
        item
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn script(State(sim): State<SharedSim>, Json(responses): Json<Vec<Scripted>>) -> StatusCode {
    sim.script(responses);
    StatusCode::NO_CONTENT
}

async fn script_project(
    State(sim): State<SharedSim>,
    Path(project): Path<String>,
    Json(responses): Json<Vec<Scripted>>,
) -> StatusCode {
    sim.script_project(&project, responses);
    StatusCode::NO_CONTENT
}

async fn requests(State(sim): State<SharedSim>) -> Json<Vec<LoggedRequest>> {
    Json(sim.requests())
}

async fn stats(State(sim): State<SharedSim>) -> Json<Stats> {
    Json(sim.stats())
}

async fn reset(State(sim): State<SharedSim>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

/// A simulator serving on its own port, for tests, benchmarks and the demo.
pub struct SimServer {
    pub addr: SocketAddr,
    pub sim: SharedSim,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    pub async fn start(config: SimConfig) -> std::io::Result<SimServer> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?, config).await
    }

    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> std::io::Result<SimServer> {
        let sim = Sim::new(config);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(sim.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "gemini-sim stopped");
            }
        });
        Ok(SimServer { addr, sim, task })
    }

    /// The base URL to give a Gemini client (`GEMINI_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use futures::StreamExt as _;
