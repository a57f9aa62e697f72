//! Code generation: `generate_executable_code`, `generate_with_auto_fix`,
//! `generate_code` and `strategies/{id}/fix_errors`.
//!
//! Every call goes through the rotating executor as `heavy` work. The code
//! is checked statically ([`crate::python_checks`]). With a `test_config`
//! and a sandbox, code that passes is then run: a backtest job like any
//! other ([`backtests::run_within`]), so any replica's workers take it,
//! under the same limits. A failed check, or the traceback of a failed
//! run, goes to the fixer, for up to `max_fix_attempts` rounds. Code that
//! was not run says so: `execution.attempted` is false, with the reason.
//!
//! Every result is stored in `generated_code`, linked to the strategy when
//! one is given; for a strategy it is also a validation run and a note in
//! its parameters. A fixer call that fails after code exists keeps that
//! code and says the fixing was interrupted, rather than losing it.

use std::future::Future;
use std::time::Duration;

use api_core::streaming;
use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, Begun, FieldErrors, Idempotency, ResourceId};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gemini_client::chat::parse_answer;
use gemini_client::{CallSpec, ChatRequest, ExecError, GenerationConfig, Message, Role};
use key_rotation::config::Workload;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::backtests::BacktestRunRow;
use store::generated::{GeneratedCodeFields, GeneratedCodeRow, ValidationFields};
use store::strategies::StrategyRow;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::canonical::{check, form_of, normalize_executable, Schema};
use crate::code_prompt;
use crate::python_checks::{self, error_type, extract_python, Report};

pub const DEFAULT_STRATEGY_NAME: &str = "GeneratedStrategy";
pub const DEFAULT_FIX_ATTEMPTS: u32 = 3;
pub const MAX_FIX_ATTEMPTS: u32 = 10;
const DESCRIPTION_MAX_CHARS: usize = 20_000;
const ERROR_MESSAGE_MAX_CHARS: usize = 20_000;
const CANONICAL_MAX_CHARS: usize = 100_000;
const STATIC_ONLY: &str =
    "The code was checked statically (parsed, structure, imports, forbidden calls); it has not been run or backtested.";
const NO_TEST_CONFIG: &str = "Send a test_config ({symbol, period}) to have the code backtested in the sandbox.";
/// Of a job's budget, what a backtest may not use: the fixer's turn.
const RUN_MARGIN: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/api/generate_executable_code", post(generate_executable_code))
        .route("/api/strategies/api/generate_with_auto_fix", post(generate_with_auto_fix))
        .route("/api/strategies/api/generate_code", post(generate_code))
        .route("/api/strategies/strategies/{id}/fix_errors", post(fix_errors))
        .route("/api/strategies/strategies/generate_with_ai", post(generate_with_ai))
}

/// Of the request timeout, what a generation endpoint's AI calls may not
/// use: time to store the result and answer before the timeout cuts in.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// One run of a generation endpoint: its stages, sent as `progress` events
/// when the caller streams, and its one time budget for every AI call it
/// makes (`generate_with_auto_fix` may make eleven). The budget ends
/// [`ANSWER_MARGIN`] before the request timeout, so the answer (with the
/// code so far) always gets out.
#[derive(Clone)]
struct Job {
    events: Option<mpsc::Sender<Event>>,
    ends: Instant,
    test: Testing,
}

/// Whether the job's code is run, and where.
#[derive(Clone)]
enum Testing {
    /// Checked statically only, for this reason.
    StaticOnly(String),
    /// Backtested, on behalf of this strategy (if any), after each check it passes.
    Run { run: backtests::Prepared, strategy_id: Option<i64> },
}

impl Testing {
    /// From a request's `test_config`: a run whose symbols and settings are
    /// checked now, before any AI call is paid for; static checks only
    /// without one, or without a sandbox here.
    async fn from_request(
        state: &AppState,
        user_id: i64,
        test_config: Option<&Value>,
        strategy_id: Option<i64>,
    ) -> ApiResult<Self> {
        let Some(config) = test_config.filter(|config| !config.is_null()) else {
            return Ok(Self::StaticOnly(NO_TEST_CONFIG.into()));
        };
        if !config.is_object() {
            return Err(ApiError::Validation(FieldErrors::single("test_config", "Expected an object.")));
        }
        match backtests::accepting(state).await {
            Ok(()) => {}
            Err(ApiError::Unavailable(reason)) => return Ok(Self::StaticOnly(format!("Not run: {reason}."))),
            Err(err) => return Err(err),
        }
        let run = backtests::prepare_test_run(state, user_id, config).await?;
        Ok(Self::Run { run, strategy_id })
    }
}

impl Job {
    fn new(state: &AppState, events: Option<mpsc::Sender<Event>>, test: Testing) -> Self {
        let timeout = state.request_timeout;
        // A request timeout too short for the margin still leaves half of it.
        let budget = timeout.saturating_sub(ANSWER_MARGIN).max(timeout / 2);
        Self { events, ends: Instant::now() + budget, test }
    }

    async fn stage(&self, state: &AppState, stage: &str, detail: &str) {
        if let Some(events) = &self.events {
            // A client that left (or stopped reading) misses the progress;
            // the work goes on and is stored.
            let _ = streaming::send(events, streaming::progress(stage, detail), &state.tasks).await;
        }
    }

    /// The deadline of the next AI call: the executor's own, cut to what
    /// is left of the budget; `None` when nothing is left.
    fn next_deadline(&self, state: &AppState) -> Option<Duration> {
        let left = self.ends.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.min(state.gemini.default_deadline()))
    }

    /// Backtests code that passed its static checks, waiting for the run
    /// within the budget: the run as it then is (it goes on, to be polled,
    /// if it has not ended). `None` when the job only checks statically,
    /// or no time is left.
    async fn backtest(&self, state: &AppState, user_id: i64, code: &str) -> ApiResult<Option<BacktestRunRow>> {
        let Testing::Run { run, strategy_id } = &self.test else { return Ok(None) };
        let wait = self.ends.saturating_duration_since(Instant::now()).saturating_sub(RUN_MARGIN);
        if wait.is_zero() {
            return Ok(None);
        }
        self.stage(state, "running", &format!("backtesting on {} in the sandbox", run.symbols.join(", "))).await;
        backtests::run_within(state, user_id, *strategy_id, code, run, wait).await.map(Some)
    }
}

/// Answers `work` as JSON, or as a `progress` … `done` stream. Either way
/// the work runs detached from the request ([`api_core::tasks`]): a client
/// that leaves does not lose it; a server shutdown ends it.
async fn respond<F, Fut>(
    state: &AppState,
    user: AuthUser,
    claim: Idempotency,
    stream: bool,
    test: Testing,
    work: F,
) -> ApiResult<Response>
where
    F: FnOnce(Job) -> Fut,
    Fut: Future<Output = ApiResult<Value>> + Send + 'static,
{
    if !stream {
        let answer = api_core::run_detached(state, Some(claim), work(Job::new(state, None, test))).await?;
        return Ok(Json(answer).into_response());
    }
    let slot = match state.stream_slots.acquire(user.user_id) {
        Ok(slot) => slot,
        Err(err) => {
            claim.release(state).await?;
            return Err(err);
        }
    };
    let (events, receiver) = mpsc::channel(16);
    let work = work(Job::new(state, Some(events.clone()), test));
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        let outcome = tokio::select! {
            biased;
            () = state.tasks.shutting_down() => None,
            outcome = claim.hold(&state, work) => Some(outcome),
        };
        let settled = claim.settle(&state, outcome.as_ref().and_then(|outcome| outcome.as_ref().ok())).await;
        let last = match (outcome, settled) {
            (Some(Ok(body)), Ok(())) => streaming::done(&body),
            (Some(Ok(_)), Err(err)) | (Some(Err(err)), _) => streaming::failure(&err),
            (None, _) => streaming::error("The server is shutting down; nothing was stored. Retry.", "server_shutdown"),
        };
        streaming::send_last(&events, last).await;
        drop(slot);
    });
    Ok(streaming::response(receiver))
}

fn default_strategy_name() -> String {
    DEFAULT_STRATEGY_NAME.into()
}

/// A Python class name from a display name: "ema cross-2" → "EmaCross2".
fn class_name(name: &str) -> String {
    strategy_schema::python_class_name(name, DEFAULT_STRATEGY_NAME)
}

/// "EmaCross2" → "ema_cross2.py".
fn file_name(class: &str) -> String {
    let mut snake = String::new();
    let mut previous: Option<char> = None;
    for c in class.chars() {
        if c.is_ascii_uppercase() && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
        previous = Some(c);
    }
    format!("{snake}.py")
}

fn fix_attempts(value: Option<u32>, field: &str) -> ApiResult<u32> {
    let attempts = value.unwrap_or(DEFAULT_FIX_ATTEMPTS);
    if (1..=MAX_FIX_ATTEMPTS).contains(&attempts) {
        Ok(attempts)
    } else {
        Err(ApiError::Validation(FieldErrors::single(
            field,
            format!("Ensure this value is between 1 and {MAX_FIX_ATTEMPTS}."),
        )))
    }
}

/// The owner's strategy, or 404 whether it is missing or someone else's.
async fn owned_strategy(state: &AppState, user_id: i64, id: Option<i64>) -> ApiResult<Option<StrategyRow>> {
    match id {
        None => Ok(None),
        Some(id) => Ok(Some(state.store.strategy(id, user_id).await?.ok_or(ApiError::NotFound)?)),
    }
}

/// One heavy call within the job's budget; the answer's text and the
/// model that wrote it.
async fn ask(state: &AppState, job: &Job, user_id: i64, prompt: String) -> ApiResult<(String, String)> {
    let deadline = job.next_deadline(state).ok_or(ApiError::Ai(ExecError::DeadlineExceeded))?;
    let request = ChatRequest {
        system: Some(
            "You write Python trading strategies for the backtesting.py library. You follow the requirements \
             exactly and answer with one python code block."
                .into(),
        ),
        messages: vec![Message { role: Role::User, text: prompt }],
        config: GenerationConfig::default(),
    };
    let spec = CallSpec {
        deadline: Some(deadline),
        ..CallSpec::for_user(format!("user:{user_id}"), Workload::Heavy, request.to_body())
    };
    let completed = state.gemini.generate(&spec).await.map_err(ApiError::Ai)?;
    let answer = parse_answer(&completed.body).map_err(|err| ApiError::Ai(ExecError::Rejected(err)))?;
    Ok((answer.text, completed.model))
}

/// The code in an answer and its check; an answer without code fails the
/// parse check, so the fixer gets a chance at it.
async fn checked(answer: &str) -> (String, Report) {
    match extract_python(answer) {
        Some(code) => {
            let report = python_checks::check(&code).await;
            (code, report)
        }
        None => (String::new(), Report::no_code()),
    }
}

#[derive(Debug, Clone, Serialize)]
struct FixRecord {
    attempt: u32,
    success: bool,
    error_type: &'static str,
    error_message: String,
    timestamp: String,
}

/// What a generation or fixing run produced.
struct Outcome {
    code: String,
    report: Report,
    /// The backtest of `code`, when it was run.
    run: Option<BacktestRunRow>,
    fixes: Vec<FixRecord>,
    /// Set when the fixer's call failed; the code is the last that existed.
    interrupted: Option<String>,
    models: Vec<String>,
}

impl Outcome {
    fn new(code: String, report: Report, models: Vec<String>) -> Self {
        Self { code, report, run: None, fixes: Vec::new(), interrupted: None, models }
    }

    /// Passed its static checks and, when it was run, its backtest did not
    /// fail (one still running has not failed yet).
    fn passed(&self) -> bool {
        self.report.passed && self.run_failure().is_none()
    }

    /// The traceback (or reason) of a backtest that ended badly.
    fn run_failure(&self) -> Option<String> {
        self.run.as_ref().and_then(backtests::failure_text)
    }

    /// The error the fixer gets next: the static checks', else the run's.
    fn error(&self) -> Option<(String, &'static str)> {
        if !self.report.passed {
            return Some((self.report.error_text(), self.report.error_type()));
        }
        self.run_failure().map(|text| {
            let kind = error_type(&text);
            (text, kind)
        })
    }

    fn final_status(&self, max_attempts: u32) -> &'static str {
        match (self.passed(), self.fixes.is_empty()) {
            _ if self.interrupted.is_some() => "interrupted",
            (true, true) => "not_needed",
            (true, false) => "fixed",
            (false, _) if max_attempts == 0 => "not_attempted",
            (false, _) => "failed",
        }
    }

    fn validation_status(&self) -> &'static str {
        match (&self.run, self.report.passed) {
            (Some(run), _) => backtests::validation_status(run),
            (None, true) => "static_checks_passed",
            (None, false) => "static_checks_failed",
        }
    }

    /// `execution`: the backtest, or why there was none.
    fn execution(&self, job: &Job) -> Value {
        if let Some(run) = &self.run {
            let mut view = backtests::execution_view(run);
            if !run.is_final() {
                view["note"] = json!(format!(
                    "The backtest had not ended when the answer was due; follow it at /api/backtests/runs/{}/",
                    run.id
                ));
            }
            return view;
        }
        let note = match &job.test {
            Testing::StaticOnly(reason) => format!("{STATIC_ONLY} {reason}"),
            Testing::Run { .. } if !self.report.passed => {
                format!("{STATIC_ONLY} It was not run: it failed the static checks.")
            }
            Testing::Run { .. } => format!("{STATIC_ONLY} No time was left in the request to run it."),
        };
        json!({
            "attempted": false,
            "success": null,
            "validation_status": self.validation_status(),
            "metrics": null,
            "error_message": if self.report.passed { Value::Null } else { json!(self.report.error_text()) },
            "note": note,
        })
    }
}

/// Checks code and, if it passes and the job runs code, backtests it.
async fn assess(state: &AppState, job: &Job, user_id: i64, code: String, models: Vec<String>) -> ApiResult<Outcome> {
    let report = python_checks::check(&code).await;
    let mut outcome = Outcome::new(code, report, models);
    if outcome.report.passed {
        outcome.run = job.backtest(state, user_id, &outcome.code).await?;
    }
    Ok(outcome)
}

/// Up to `max_attempts` rounds of fixing. `reported` is an error the
/// caller saw (a traceback), fixed first even when the checks pass.
async fn fix_loop(
    state: &AppState,
    user_id: i64,
    class: &str,
    mut outcome: Outcome,
    mut reported: Option<String>,
    max_attempts: u32,
    job: &Job,
) -> Outcome {
    for attempt in 1..=max_attempts {
        let (error_text, kind) = match reported.take() {
            Some(text) => {
                let kind = error_type(&text);
                (text, kind)
            }
            None => match outcome.error() {
                Some(error) => error,
                None => break,
            },
        };
        job.stage(state, "fixing", &format!("{attempt}/{max_attempts}: {kind}")).await;
        let prompt = code_prompt::fix(&outcome.code, class, kind, &error_text);
        let (answer, model) = match ask(state, job, user_id, prompt).await {
            Ok(answered) => answered,
            Err(err) => {
                tracing::info!(error = %err, attempt, "the fixer's call failed; keeping the code so far");
                outcome.interrupted = Some(err.public_message());
                break;
            }
        };
        outcome.models.push(model);
        job.stage(state, "checking", &format!("static checks after fix {attempt}/{max_attempts}")).await;
        let (code, report) = checked(&answer).await;
        // An answer without code leaves the code so far, its report and run, as they were.
        if !code.is_empty() || outcome.code.is_empty() {
            outcome.code = code;
            outcome.report = report;
            outcome.run = None;
            if outcome.report.passed {
                match job.backtest(state, user_id, &outcome.code).await {
                    Ok(run) => outcome.run = run,
                    Err(err) => {
                        tracing::info!(error = %err, attempt, "the fixed code could not be backtested");
                        outcome.interrupted = Some(err.public_message());
                    }
                }
            }
        }
        outcome.fixes.push(FixRecord {
            attempt,
            success: outcome.passed(),
            error_type: kind,
            error_message: error_text,
            timestamp: api_core::time::iso8601(&chrono::Utc::now()),
        });
    }
    outcome
}

/// Generates, checks and (up to `max_fix_attempts`) fixes.
async fn generate_checked(
    state: &AppState,
    user_id: i64,
    class: &str,
    prompt: String,
    max_fix_attempts: u32,
    job: &Job,
) -> ApiResult<Outcome> {
    job.stage(state, "generating", "asking Gemini for a backtesting.py strategy").await;
    let (answer, model) = ask(state, job, user_id, prompt).await?;
    job.stage(state, "checking", "static checks").await;
    let outcome = match extract_python(&answer) {
        Some(code) => assess(state, job, user_id, code, vec![model]).await?,
        None => Outcome::new(String::new(), Report::no_code(), vec![model]),
    };
    Ok(fix_loop(state, user_id, class, outcome, None, max_fix_attempts, job).await)
}

struct Target<'a> {
    user_id: i64,
    strategy: Option<&'a StrategyRow>,
    class: &'a str,
    source: &'static str,
}

/// Stores the outcome; for a strategy, also as a validation run and a note
/// in its parameters.
async fn keep(state: &AppState, target: &Target<'_>, outcome: &Outcome) -> ApiResult<GeneratedCodeRow> {
    let fields = GeneratedCodeFields {
        strategy_id: target.strategy.map(|s| s.id),
        strategy_name: target.class.to_string(),
        file_name: file_name(target.class),
        code: outcome.code.clone(),
        source: target.source,
        validation_status: outcome.validation_status(),
        problems: json!(outcome.report.problems),
        fix_attempts: i32::try_from(outcome.fixes.len()).unwrap_or(i32::MAX),
        fix_history: json!(outcome.fixes),
    };
    let row = state.store.create_generated_code(target.user_id, &fields).await?;
    if let Some(strategy) = target.strategy {
        let mut errors: Vec<String> = outcome.report.problems.iter().map(|p| p.message.clone()).collect();
        errors.extend(outcome.run.as_ref().and_then(|run| run.error_message.clone()));
        let validation = ValidationFields {
            strategy_id: strategy.id,
            validation_type: if outcome.run.is_some() { "backtest" } else { "static_checks" },
            status: match (outcome.passed(), outcome.run.as_ref().is_some_and(|run| !run.is_final())) {
                (true, true) => "pending",
                (true, false) => "passed",
                (false, _) => "failed",
            }
            .into(),
            errors: json!(errors),
            warnings: json!([]),
            details: json!({ "code_id": row.id, "checks": outcome.report.checks, "source": target.source,
                             "fix_attempts": outcome.fixes.len(), "executed": outcome.run.is_some(),
                             "run_id": outcome.run.as_ref().map(|run| &run.run_id) }),
        };
        state.store.record_validation(target.user_id, &validation).await?;
        let note = json!({ "code_id": row.id, "strategy_name": target.class, "file_name": row.file_name,
                           "validation_status": row.validation_status,
                           "generated_at": api_core::time::iso8601(&row.created_at) });
        state.store.note_generated_code(strategy.id, target.user_id, &note).await?;
    }
    Ok(row)
}

/// What a run of code says in a message.
fn ran(outcome: &Outcome) -> String {
    match &outcome.run {
        None => "It has not been run.".into(),
        Some(run) if run.status == store::backtests::COMPLETED => {
            let symbols: Vec<&str> = run.symbols.0.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("Its backtest on {} completed.", symbols.join(", "))
        }
        Some(run) if !run.is_final() => format!("Its backtest {} is still {}.", run.run_id, run.status),
        Some(run) => format!("Its backtest {}: {}.", run.status, run.error_message.as_deref().unwrap_or("no detail")),
    }
}

/// The answer of `generate_executable_code` and `generate_with_auto_fix`.
fn generation_body(row: &GeneratedCodeRow, outcome: &Outcome, max_fix_attempts: u32, job: &Job) -> Value {
    let passed = outcome.passed();
    let message = match (&outcome.interrupted, outcome.report.passed) {
        (Some(error), _) => format!("Code generated, but fixing stopped when a call failed: {error}"),
        (None, true) => format!("Code generated; it passed the static checks. {}", ran(outcome)),
        (None, false) => format!("Code generated, but it failed the static checks: {}", outcome.report.error_text()),
    };
    json!({
        "success": passed,
        "strategy_code": outcome.code,
        "strategy_name": row.strategy_name,
        "file_name": row.file_name,
        "strategy_id": row.strategy_id,
        "code_id": row.id,
        "message": message,
        "execution": outcome.execution(job),
        "static_checks": outcome.report,
        "error_fixing": {
            "attempted": !outcome.fixes.is_empty(),
            "attempts": outcome.fixes.len(),
            "max_attempts": max_fix_attempts,
            "history": outcome.fixes,
            "final_status": outcome.final_status(max_fix_attempts),
            "error": outcome.interrupted,
        },
        "models": outcome.models,
    })
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ExecutableRequest {
    canonical_json: Option<Value>,
    #[serde(default = "default_strategy_name")]
    strategy_name: String,
    strategy_id: Option<i64>,
    test_config: Option<Value>,
    max_fix_attempts: Option<u32>,
}

/// The prompt for a canonical strategy, in either form, with the errors a
/// client can act on.
fn canonical_prompt(request: &ExecutableRequest) -> ApiResult<(String, String)> {
    let strategy = match &request.canonical_json {
        None | Some(Value::Null) => return Err(ApiError::Rejected(json!({ "error": "canonical_json is required" }))),
        Some(Value::String(text)) => {
            if text.chars().count() > CANONICAL_MAX_CHARS {
                return Err(ApiError::Validation(FieldErrors::single(
                    "canonical_json",
                    format!("Ensure this field has no more than {CANONICAL_MAX_CHARS} characters."),
                )));
            }
            serde_json::from_str::<Value>(text).map_err(|err| {
                ApiError::Rejected(json!({ "error": "Invalid JSON format", "detail": err.to_string() }))
            })?
        }
        Some(value) => value.clone(),
    };
    if !strategy.is_object() {
        return Err(ApiError::Validation(FieldErrors::single(
            "canonical_json",
            "Expected a JSON object: the executable strategy or the validator's canonical JSON.",
        )));
    }
    let form = form_of(&strategy);
    check(form, "canonical_json", &strategy).map_err(ApiError::Validation)?;
    let strategy = match form {
        Schema::Executable => normalize_executable("canonical_json", strategy).map_err(ApiError::Validation)?,
        Schema::Canonical => strategy,
    };
    let given_name = request.strategy_name.trim();
    let name = if given_name.is_empty() || given_name == DEFAULT_STRATEGY_NAME {
        strategy["strategy_name"].as_str().or(strategy["title"].as_str()).unwrap_or(DEFAULT_STRATEGY_NAME)
    } else {
        given_name
    };
    let class = class_name(name);
    let test_config = request.test_config.as_ref();
    let prompt = match form {
        Schema::Executable => code_prompt::from_executable(&strategy, &class, test_config),
        Schema::Canonical => code_prompt::from_steps(&strategy, &class, test_config),
    };
    Ok((class, prompt))
}

async fn generate_endpoint(
    state: &AppState,
    user: AuthUser,
    query: Option<&str>,
    headers: &HeaderMap,
    request: ExecutableRequest,
    auto_fix: bool,
) -> ApiResult<Response> {
    let stream = streaming::wants_stream(query, headers)?;
    let max_fix_attempts = if auto_fix { fix_attempts(request.max_fix_attempts, "max_fix_attempts")? } else { 0 };
    let (class, prompt) = canonical_prompt(&request)?;
    let strategy = owned_strategy(state, user.user_id, request.strategy_id).await?;
    let testing =
        Testing::from_request(state, user.user_id, request.test_config.as_ref(), strategy.as_ref().map(|s| s.id))
            .await?;
    // The endpoint's name: the idempotency scope and the stored code's source.
    let source = if auto_fix { "generate_with_auto_fix" } else { "generate_executable_code" };
    let claim = match Idempotency::begin(state, user.user_id, headers, source, &request, stream).await? {
        Begun::Run(claim) => claim,
        Begun::Replay(answer) => return Ok(answer),
    };
    let task_state = state.clone();
    respond(state, user, claim, stream, testing, move |job| async move {
        let state = task_state;
        let outcome = generate_checked(&state, user.user_id, &class, prompt, max_fix_attempts, &job).await?;
        let target = Target { user_id: user.user_id, strategy: strategy.as_ref(), class: &class, source };
        let row = keep(&state, &target, &outcome).await?;
        let mut body = generation_body(&row, &outcome, max_fix_attempts, &job);
        if auto_fix {
            body["validation_passed"] = json!(outcome.passed());
            body["fix_attempts"] = json!(outcome.fixes.len());
            body["fix_history"] = json!(outcome.fixes);
        }
        Ok(body)
    })
    .await
}

async fn generate_executable_code(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecutableRequest>,
) -> ApiResult<Response> {
    generate_endpoint(&state, user, query.as_deref(), &headers, request, false).await
}

async fn generate_with_auto_fix(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecutableRequest>,
) -> ApiResult<Response> {
    generate_endpoint(&state, user, query.as_deref(), &headers, request, true).await
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize)]
pub struct DescriptionRequest {
    strategy_description: Option<String>,
    template_id: Option<i64>,
    #[serde(default)]
    parameters: Value,
    #[serde(default = "default_true")]
    use_gemini: bool,
    strategy_name: Option<String>,
}

/// `POST /api/strategies/api/generate_code/`: a description (and optionally
/// a template to start from) → code. Without Gemini, the template's own
/// code is the answer.
async fn generate_code(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ApiJson(request): ApiJson<DescriptionRequest>,
) -> ApiResult<Response> {
    let stream = streaming::wants_stream(query.as_deref(), &headers)?;
    let description = request.strategy_description.clone().unwrap_or_default();
    let mut errors = FieldErrors::new();
    if description.trim().is_empty() {
        errors.add("strategy_description", "This field is required.");
    }
    errors.check_length("strategy_description", &description, DESCRIPTION_MAX_CHARS);
    if !(request.parameters.is_object() || request.parameters.is_null()) {
        errors.add("parameters", "Expected an object.");
    }
    errors.into_result()?;
    let template = match request.template_id {
        Some(id) => Some(state.store.template(id, user.user_id).await?.ok_or_else(|| {
            ApiError::Validation(FieldErrors::single(
                "template_id",
                format!("Invalid pk \"{id}\" - object does not exist."),
            ))
        })?),
        None => None,
    };
    if !request.use_gemini && template.is_none() {
        return Err(ApiError::Validation(FieldErrors::single(
            "template_id",
            "Without use_gemini, code comes from a template: give template_id.",
        )));
    }
    let name = request.strategy_name.clone().or_else(|| template.as_ref().map(|t| t.name.clone()));
    let class = class_name(name.as_deref().unwrap_or(DEFAULT_STRATEGY_NAME));
    let claim = match Idempotency::begin(&state, user.user_id, &headers, "generate_code", &request, stream).await? {
        Begun::Run(claim) => claim,
        Begun::Replay(answer) => return Ok(answer),
    };
    let task_state = state.clone();
    let testing = Testing::StaticOnly(String::new());
    respond(&state, user, claim, stream, testing, move |job| async move {
        let state = task_state;
        let parameters = if request.parameters.is_null() { json!({}) } else { request.parameters.clone() };
        let (outcome, generator) = if request.use_gemini {
            let prompt = code_prompt::from_description(
                &description,
                &class,
                template.as_ref().map(|t| t.template_code.as_str()),
                &parameters,
            );
            (generate_checked(&state, user.user_id, &class, prompt, 0, &job).await?, "gemini")
        } else {
            let code = template.as_ref().map(|t| t.template_code.clone()).unwrap_or_default();
            let report = python_checks::check(&code).await;
            (Outcome::new(code, report, Vec::new()), "template")
        };
        let target = Target { user_id: user.user_id, strategy: None, class: &class, source: "generate_code" };
        let row = keep(&state, &target, &outcome).await?;
        Ok(json!({
            "generated_code": outcome.code,
            "strategy_name": class,
            "description": description,
            "parameters": parameters,
            "metadata": {
                "code_id": row.id,
                "file_name": row.file_name,
                "generator": generator,
                "template_id": template.as_ref().map(|t| t.id),
                "models": outcome.models,
                "validation_status": outcome.validation_status(),
                "static_checks": outcome.report,
                "execution": { "attempted": false, "note": STATIC_ONLY },
            },
        }))
    })
    .await
}

#[derive(Debug, Deserialize, Serialize)]
pub struct GenerateWithAiRequest {
    description: Option<String>,
    /// The new strategy's name (made free with " v2", …); from the
    /// description's first words when not given.
    name: Option<String>,
    #[serde(default = "default_true")]
    auto_fix: bool,
    #[serde(default)]
    execute_after_generation: bool,
    max_fix_attempts: Option<u32>,
    /// Where `execute_after_generation` runs the code: `{symbol, period, …}`
    /// as generation's `test_config`; GOOG over a year by default.
    test_config: Option<Value>,
}

/// A strategy's name from a description: its first words.
fn name_from(description: &str) -> String {
    const WORDS: usize = 6;
    let words: Vec<&str> = description.split_whitespace().take(WORDS).collect();
    let mut name = words.join(" ");
    if description.split_whitespace().count() > WORDS {
        name.push('…');
    }
    name.chars().take(100).collect()
}

/// `POST /api/strategies/strategies/generate_with_ai/`: a description
/// becomes a new strategy with generated code (through the executor, with
/// the fix loop unless `auto_fix` is false) and, with
/// `execute_after_generation`, a sandboxed backtest of it. 201 with the
/// old app's intended shape.
async fn generate_with_ai(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GenerateWithAiRequest>,
) -> ApiResult<Response> {
    let stream = streaming::wants_stream(query.as_deref(), &headers)?;
    let description = request.description.clone().unwrap_or_default().trim().to_string();
    if description.is_empty() {
        return Err(ApiError::Rejected(json!({ "error": "Description is required" })));
    }
    let mut errors = FieldErrors::new();
    errors.check_length("description", &description, DESCRIPTION_MAX_CHARS);
    errors.into_result()?;
    let max_fix_attempts =
        if request.auto_fix { fix_attempts(request.max_fix_attempts, "max_fix_attempts")? } else { 0 };
    let mut fields = crate::resources::strategies::new_fields();
    fields.name = request
        .name
        .clone()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name_from(&description));
    fields.description = description.clone();
    crate::resources::strategies::check_fields(&state, user.user_id, &fields).await?;
    let default_run = json!({ "symbol": "GOOG", "period": "1y" });
    let test_config = request.execute_after_generation.then(|| request.test_config.clone().unwrap_or(default_run));
    // Checked before any AI call is paid for; the strategy it runs for is made below.
    let testing = Testing::from_request(&state, user.user_id, test_config.as_ref(), None).await?;
    let claim = match Idempotency::begin(&state, user.user_id, &headers, "generate_with_ai", &request, stream).await? {
        Begun::Run(claim) => claim,
        Begun::Replay(answer) => return Ok(answer),
    };
    let strategy = match crate::resources::strategies::create_with_free_name(&state, user.user_id, fields).await {
        Ok(strategy) => strategy,
        Err(err) => {
            claim.release(&state).await?;
            return Err(err);
        }
    };
    let testing = match testing {
        Testing::Run { run, .. } => Testing::Run { run, strategy_id: Some(strategy.id) },
        static_only => static_only,
    };
    let class = class_name(&strategy.name);
    let task_state = state.clone();
    let mut response = respond(&state, user, claim, stream, testing, move |job| async move {
        let state = task_state;
        let prompt = code_prompt::from_description(&description, &class, None, &json!({}));
        let outcome = match generate_checked(&state, user.user_id, &class, prompt, max_fix_attempts, &job).await {
            Ok(outcome) => outcome,
            Err(err) => {
                // Nothing was generated: the strategy made for it goes too.
                if let Err(cleanup) = state.store.delete_strategy(strategy.id, user.user_id).await {
                    tracing::warn!(error = %cleanup, "could not remove the strategy of a failed generation");
                }
                return Err(err);
            }
        };
        let target =
            Target { user_id: user.user_id, strategy: Some(&strategy), class: &class, source: "generate_with_ai" };
        let row = keep(&state, &target, &outcome).await?;
        let status = match (&outcome.run, outcome.passed()) {
            (Some(run), _) if !run.is_final() => "testing",
            (Some(_), true) => "executed",
            (Some(_), false) => "failed",
            (None, true) => "draft",
            (None, false) => "invalid",
        };
        state.store.set_strategy_status(strategy.id, user.user_id, status).await?;
        let fix_details: Vec<Value> = outcome
            .fixes
            .iter()
            .map(|fix| json!({ "attempt": fix.attempt, "error_type": fix.error_type, "success": fix.success }))
            .collect();
        let execution_result = outcome.run.as_ref().map(|run| {
            let mut result = backtests::headline(run).unwrap_or_else(|| json!({}));
            result["success"] =
                if run.is_final() { json!(run.status == store::backtests::COMPLETED) } else { Value::Null };
            result["run"] = json!(run.id);
            result["run_id"] = json!(run.run_id);
            result["error_message"] = json!(run.error_message);
            result
        });
        Ok(json!({
            "id": strategy.id,
            "name": strategy.name,
            "file_path": row.file_name,
            "status": status,
            "generation_result": {
                "success": outcome.report.passed,
                "file_path": row.file_name,
                "code_id": row.id,
                "strategy_code": outcome.code,
                "static_checks": outcome.report,
                "models": outcome.models,
                "error": outcome.interrupted,
            },
            "execution_result": execution_result,
            "execution": outcome.execution(&job),
            "fix_attempts": outcome.fixes.len(),
            "fix_details": fix_details,
        }))
    })
    .await?;
    if response.status() == StatusCode::OK && !stream {
        *response.status_mut() = StatusCode::CREATED;
    }
    Ok(response)
}

#[derive(Debug, Deserialize, Serialize)]
pub struct FixRequest {
    max_attempts: Option<u32>,
    /// An error the caller saw running the code (a traceback); fixed first.
    error_message: Option<String>,
    /// When given, the code is backtested: first to find what fails, then
    /// after each fix to confirm it.
    test_config: Option<Value>,
}

/// `POST /api/strategies/strategies/{id}/fix_errors/`: fixes the strategy's
/// latest generated code until it passes the checks (and, when given, the
/// caller's own error is addressed).
async fn fix_errors(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ApiJson(request): ApiJson<FixRequest>,
) -> ApiResult<Response> {
    let stream = streaming::wants_stream(query.as_deref(), &headers)?;
    let max_attempts = fix_attempts(request.max_attempts, "max_attempts")?;
    let reported = request.error_message.clone().map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
    if let Some(message) = &reported {
        let mut errors = FieldErrors::new();
        errors.check_length("error_message", message, ERROR_MESSAGE_MAX_CHARS);
        errors.into_result()?;
    }
    let strategy = state.store.strategy(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let testing = Testing::from_request(&state, user.user_id, request.test_config.as_ref(), Some(id)).await?;
    let Some(latest) = state.store.latest_generated_code(id, user.user_id).await? else {
        return Err(ApiError::bad_request(
            "This strategy has no generated code yet; generate it with generate_executable_code first",
        ));
    };
    let claim = match Idempotency::begin(&state, user.user_id, &headers, &format!("fix_errors {id}"), &request, stream)
        .await?
    {
        Begun::Run(claim) => claim,
        Begun::Replay(answer) => return Ok(answer),
    };
    let task_state = state.clone();
    respond(&state, user, claim, stream, testing, move |job| async move {
        let state = task_state;
        job.stage(&state, "checking", "static checks of the latest code").await;
        // The caller's own error is fixed first: running the code it came from would only repeat it.
        let start = match &reported {
            Some(_) => Outcome::new(latest.code.clone(), python_checks::check(&latest.code).await, vec![]),
            None => assess(&state, &job, user.user_id, latest.code.clone(), vec![]).await?,
        };
        let class = latest.strategy_name.clone();
        let outcome = fix_loop(&state, user.user_id, &class, start, reported, max_attempts, &job).await;
        let code_id = if outcome.fixes.is_empty() {
            latest.id
        } else {
            let target =
                Target { user_id: user.user_id, strategy: Some(&strategy), class: &class, source: "fix_errors" };
            keep(&state, &target, &outcome).await?.id
        };
        let message = match (&outcome.interrupted, outcome.fixes.is_empty(), outcome.passed()) {
            (Some(error), _, _) => format!("Fixing stopped when a call failed: {error}"),
            (None, true, _) => {
                format!("The latest code passes the static checks; there was nothing to fix. {}", ran(&outcome))
            }
            (None, false, true) => format!("Fixed: the code passes the static checks. {}", ran(&outcome)),
            (None, false, false) => format!(
                "Still failing after {} attempts: {}",
                outcome.fixes.len(),
                outcome.error().map(|(text, _)| text).unwrap_or_default()
            ),
        };
        Ok(json!({
            "success": outcome.passed() && outcome.interrupted.is_none(),
            "attempts": outcome.fixes.len(),
            "fixes": outcome.fixes,
            "final_status": outcome.final_status(max_attempts),
            "message": message,
            "strategy_id": strategy.id,
            "code_id": code_id,
            "strategy_code": outcome.code,
            "validation_status": outcome.validation_status(),
            "static_checks": outcome.report,
            "execution": outcome.execution(&job),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_classes_and_files() {
        assert_eq!(class_name("ema cross-2"), "EmaCross2");
        assert_eq!(class_name("GoldenCross"), "GoldenCross");
        assert_eq!(class_name("EMA Cross"), "EmaCross");
        assert_eq!(file_name("RSIStrategy"), "rsistrategy.py");
        assert_eq!(class_name("  "), DEFAULT_STRATEGY_NAME);
        assert_eq!(class_name("50/200 sma"), "Strategy50200Sma");
        assert_eq!(class_name("rm -rf /; import os"), "RmRfImportOs");
        assert_eq!(file_name("EmaCross2"), "ema_cross2.py");
        assert_eq!(file_name("GeneratedStrategy"), "generated_strategy.py");
    }
}
