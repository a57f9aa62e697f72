//! `/api/production/`: the old "production hardening" API, mapped onto what
//! exists. Its state manager, safe tools, output validator, sandbox runner
//! and git manager are here the database, the static checks, the JSON
//! Schemas, the sandboxed job runner and versions kept in the database.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::generated::GeneratedCodeFields;
use store::strategies::{NewVersion, StrategyRow, VersionRow};

use crate::python_checks::{self, Report};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/production/strategies/validate-schema", post(validate_schema))
        .route("/api/production/strategies/validate-code", post(validate_code))
        .route("/api/production/strategies/sandbox-test", post(sandbox_test))
        .route("/api/production/strategies/health", get(strategies_health))
        .route("/api/production/strategies/{id}/lifecycle", get(lifecycle))
        .route("/api/production/strategies/{id}/deploy", post(deploy))
        .route("/api/production/strategies/{id}/rollback", post(rollback))
        .route("/api/production/backtests/validate-config", post(validate_config))
        .route("/api/production/backtests/run-sandbox", post(run_sandbox))
        .route("/api/production/backtests/health", get(backtests_health))
        .route("/api/production/backtests/{id}/status", get(backtest_status))
}

/// How many versions `lifecycle` lists.
const LIFECYCLE_VERSIONS: i64 = 100;

async fn owned(state: &AppState, user: &AuthUser, id: i64) -> ApiResult<StrategyRow> {
    state.store.strategy(id, user.user_id).await?.ok_or(ApiError::NotFound)
}

/// `{status: "valid", validated_data}` (defaults applied), or 400
/// `{status: "invalid", errors}` naming each field by its path.
async fn validate_schema(_user: AuthUser, ApiJson(definition): ApiJson<Value>) -> ApiResult<Response> {
    let checked = strategy_schema::check_definition("definition", &definition);
    Ok(match checked {
        Ok(()) => Json(json!({
            "status": "valid",
            "message": "The strategy definition is valid.",
            "validated_data": strategy_schema::with_definition_defaults(definition),
            "schema_version": "2.0.0",
        }))
        .into_response(),
        Err(errors) => {
            let body = json!({
                "status": "invalid",
                "message": "The strategy definition does not match the schema.",
                "errors": errors.to_string().split("; ").map(str::to_string).collect::<Vec<_>>(),
                "details": errors.to_string(),
                "schema_version": "2.0.0",
            });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    })
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct ValidateCodeRequest {
    code: Option<String>,
    /// Strict: a strategy class is required too; otherwise only safety counts.
    #[serde(default = "default_true")]
    strict_mode: bool,
}

/// The checks the old safe tools reported, from our static checks.
fn checks_passed(report: &Report) -> Vec<&'static str> {
    report.checks.iter().filter(|check| check.status == "passed").map(|check| check.name).collect()
}

async fn validate_code(_user: AuthUser, ApiJson(request): ApiJson<ValidateCodeRequest>) -> ApiResult<Response> {
    let code = request.code.unwrap_or_default();
    if code.trim().is_empty() {
        return Err(ApiError::Validation(FieldErrors::single("code", "This field is required.")));
    }
    let mut errors = FieldErrors::new();
    errors.check_bytes("code", &code, python_checks::MAX_CODE_BYTES);
    errors.into_result()?;
    let report = python_checks::check(&code).await;
    let blocking: Vec<&python_checks::Problem> =
        report.problems.iter().filter(|problem| request.strict_mode || problem.check != "strategy_class").collect();
    if blocking.is_empty() {
        let warnings: Vec<&str> = report.problems.iter().map(|p| p.message.as_str()).collect();
        return Ok(Json(json!({
            "status": "validated",
            "safe": true,
            // Nothing reformats it; it is returned as checked.
            "formatted_code": code,
            "checks_passed": checks_passed(&report),
            "warnings": warnings,
            "strict_mode": request.strict_mode,
        }))
        .into_response());
    }
    let unsafe_code = blocking.iter().any(|p| p.check == "imports" || p.check == "forbidden_calls");
    let body = json!({
        "status": "rejected",
        "safe": !unsafe_code,
        "issues": blocking.iter().map(|p| json!({ "check": p.check, "message": p.message, "line": p.line })).collect::<Vec<_>>(),
        "severity": if unsafe_code { "high" } else { "medium" },
        "checks_passed": checks_passed(&report),
    });
    Ok((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

/// What the sandbox enforces on every run, whatever a request asks.
fn effective_limits(state: &AppState) -> Value {
    let limits = state.sandbox.settings().limits;
    json!({
        "wall_seconds": limits.wall.as_secs(),
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": limits.memory_bytes,
        "processes": limits.processes,
        "note": "Every run has these limits (SANDBOX_TIME_LIMIT_SECS, SANDBOX_MEMORY_MB); a request cannot raise or lower them.",
    })
}

#[derive(Debug, Deserialize)]
struct SandboxTestRequest {
    strategy_id: Option<i64>,
    #[allow(dead_code, reason = "accepted; the sandbox's own limits apply (see effective_limits)")]
    timeout: Option<u64>,
    #[allow(dead_code, reason = "accepted; the sandbox's own limits apply (see effective_limits)")]
    resource_limits: Option<Value>,
    symbol: Option<String>,
}

/// A run's state, as the old status route reported a sandbox test.
fn run_status(run: &store::backtests::BacktestRunRow) -> Value {
    json!({
        "id": run.id,
        "test_id": run.id,
        "run_id": run.run_id,
        "status": run.status,
        "success": if run.is_final() { json!(run.status == store::backtests::COMPLETED) } else { Value::Null },
        "attempts": run.attempts,
        "metrics": backtests::headline(run),
        "error_message": run.error_message,
        "error_traceback": run.error_traceback,
        "created_at": api_core::time::iso8601(&run.created_at),
        "completed_at": run.completed_at.map(|at| api_core::time::iso8601(&at)),
    })
}

/// A sandboxed run of the strategy's code, answered when it ends within the
/// request, else 202 with the run to poll at `backtests/{id}/status/`.
async fn sandbox_test(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<SandboxTestRequest>,
) -> ApiResult<Response> {
    let Some(strategy_id) = request.strategy_id else {
        return Err(ApiError::Validation(FieldErrors::single("strategy_id", "This field is required.")));
    };
    let strategy = owned(&state, &user, strategy_id).await?;
    let config = json!({ "symbol": request.symbol.unwrap_or_else(|| "GOOG".into()), "period": "1y" });
    let run = backtests::test_strategy(&state, &strategy, &config).await?;
    let mut body = run_status(&run);
    body["limits"] = effective_limits(&state);
    let status = if run.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
struct RunSandboxRequest {
    strategy_id: Option<i64>,
    config_id: Option<i64>,
    start_date: Option<String>,
    end_date: Option<String>,
    #[serde(default)]
    symbols: Vec<String>,
    #[allow(dead_code, reason = "accepted; the sandbox's own limits apply (see effective_limits)")]
    resource_limits: Option<Value>,
}

/// Queues a backtest of the strategy (with a config's settings when
/// given) and answers at once: 202 with the id to poll.
async fn run_sandbox(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<RunSandboxRequest>,
) -> ApiResult<Response> {
    let Some(strategy_id) = request.strategy_id else {
        return Err(ApiError::Validation(FieldErrors::single("strategy_id", "This field is required.")));
    };
    let strategy = owned(&state, &user, strategy_id).await?;
    let config = match request.config_id {
        Some(id) => Some(state.store.config(id, user.user_id).await?.ok_or(ApiError::NotFound)?),
        None => None,
    };
    backtests::accepting(&state).await?;
    let code = backtests::code_of(&state, &strategy).await?;
    let symbols = if request.symbols.is_empty() { vec!["GOOG".to_string()] } else { request.symbols.clone() };
    let test_config = json!({
        "symbols": symbols,
        "start_date": request.start_date.or(config.as_ref().and_then(|c| c.start_date.clone())),
        "end_date": request.end_date.or(config.as_ref().and_then(|c| c.end_date.clone())),
        "initial_capital": config.as_ref().map(|c| c.initial_capital),
        "commission": config.as_ref().map(|c| c.commission),
    });
    let mut prepared = backtests::prepare_test_run(&state, user.user_id, &test_config).await?;
    if let Some(config) = &config {
        prepared.parameters["config_id"] = json!(config.id);
        prepared.parameters["config_name"] = json!(config.name);
    }
    let run = backtests::submit(&state, user.user_id, Some(strategy.id), &code, &prepared).await?;
    let mut body = run_status(&run);
    body["backtest_id"] = json!(run.id);
    body["status_url"] = json!(format!("/api/production/backtests/{}/status/", run.id));
    body["limits"] = effective_limits(&state);
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn backtest_status(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let run = state.store.backtest_run(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(run_status(&run)))
}

/// A backtest config checked as `configs/` would take it, without saving.
async fn validate_config(_user: AuthUser, ApiJson(config): ApiJson<Value>) -> ApiResult<Response> {
    match backtests::records::check_config_value(&config) {
        Ok(()) => Ok(Json(json!({ "status": "valid", "message": "The backtest config is valid." })).into_response()),
        Err(ApiError::Validation(errors)) => {
            let body = json!({ "status": "invalid", "message": "The backtest config is not valid.", "errors": errors.to_string() });
            Ok((StatusCode::BAD_REQUEST, Json(body)).into_response())
        }
        Err(err) => Err(err),
    }
}

/// The old components, each mapped to what does the job here.
async fn components(state: &AppState) -> (bool, Value) {
    let database = state.store.ping().await.is_ok();
    let runner = match backtests::accepting(state).await {
        Ok(()) => json!({ "status": "healthy" }),
        Err(err) => json!({ "status": "unavailable", "reason": err.public_message() }),
    };
    let schemas = strategy_schema::check_definition("d", &json!({ "name": "probe" })).is_ok();
    let healthy = database && schemas && runner["status"] == "healthy";
    let component =
        |ok: bool, what: &str| json!({ "status": if ok { "healthy" } else { "unhealthy" }, "provided_by": what });
    (
        healthy,
        json!({
            "state_manager": component(database, "the database"),
            "safe_tools": component(true, "the static checks of Python code"),
            "output_validator": component(schemas, "the JSON Schemas in schemas/"),
            "sandbox_runner": runner,
            "git_manager": component(database, "strategy versions kept in the database"),
        }),
    )
}

async fn health(state: &AppState) -> Response {
    let (healthy, components) = components(state).await;
    let body = json!({
        "overall": if healthy { "healthy" } else { "degraded" },
        "components": components,
        "timestamp": api_core::time::iso8601(&chrono::Utc::now()),
    });
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn strategies_health(State(state): State<AppState>, _user: AuthUser) -> Response {
    health(&state).await
}

async fn backtests_health(State(state): State<AppState>, _user: AuthUser) -> Response {
    health(&state).await
}

/// The first 12 hex digits of the content's SHA-256: the same code and
/// parameters always have the same hash, as a git commit of them would.
fn content_hash(code: &str, parameters: &Value) -> String {
    let digest = Sha256::new().chain_update(code.as_bytes()).chain_update(b"\0").chain_update(parameters.to_string());
    api_core::bytes::hex(&digest.finalize())[..12].to_string()
}

fn version_view(version: &VersionRow) -> Value {
    json!({
        "id": version.id,
        "commit_hash": version.commit_hash,
        "kind": version.kind,
        "message": version.message,
        "tag": version.tag,
        "parameters": version.parameters.0,
        "created_at": api_core::time::iso8601(&version.created_at),
    })
}

async fn lifecycle(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let strategy = owned(&state, &user, id).await?;
    let versions = state.store.versions(strategy.id, user.user_id, LIFECYCLE_VERSIONS).await?;
    let current = versions.first();
    Ok(Json(json!({
        "strategy_id": strategy.id,
        "name": strategy.name,
        "status": strategy.status,
        "version": strategy.version,
        "current_commit": current.map(|v| v.commit_hash.clone()),
        "deployed": current.is_some(),
        "versions": versions.iter().map(version_view).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
struct DeployRequest {
    commit_message: Option<String>,
    #[serde(default)]
    create_tag: bool,
    tag_version: Option<String>,
}

/// Records the strategy's current code and parameters as a version.
async fn deploy(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(request): ApiJson<DeployRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let strategy = owned(&state, &user, id).await?;
    let message = request.commit_message.unwrap_or_default().trim().to_string();
    let mut errors = FieldErrors::new();
    if message.is_empty() {
        errors.add("commit_message", "This field is required.");
    }
    errors.check_length("commit_message", &message, 1000);
    let tag = request.create_tag.then(|| request.tag_version.clone().unwrap_or_else(|| strategy.version.clone()));
    if let Some(tag) = &tag {
        if tag.trim().is_empty() || tag.len() > 50 {
            errors.add("tag_version", "Give a tag of 1 to 50 characters.");
        }
    }
    errors.into_result()?;
    let code = backtests::code_of(&state, &strategy).await?;
    let parameters = strategy.parameters.0.clone();
    let commit_hash = content_hash(&code, &parameters);
    let version = NewVersion {
        commit_hash: &commit_hash,
        kind: "deploy",
        message: &message,
        tag: tag.as_deref(),
        code: &code,
        parameters: &parameters,
    };
    let row = state.store.record_version(user.user_id, strategy.id, &version).await?;
    tracing::info!(strategy = strategy.id, commit = %commit_hash, "strategy version deployed");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "success": true,
            "strategy_id": strategy.id,
            "commit_hash": row.commit_hash,
            "tag": row.tag,
            "message": row.message,
            "version": version_view(&row),
        })),
    ))
}

#[derive(Debug, Deserialize)]
struct RollbackRequest {
    /// The version to restore; the one before the current one when left out.
    commit_hash: Option<String>,
    reason: Option<String>,
}

/// Restores an earlier version: its code becomes the strategy's latest
/// code (a generated-code entry from `rollback`, so every run takes it)
/// and its parameters the strategy's; the rollback is recorded as a version.
async fn rollback(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> ApiResult<Json<Value>> {
    let strategy = owned(&state, &user, id).await?;
    let versions = state.store.versions(strategy.id, user.user_id, LIFECYCLE_VERSIONS).await?;
    let target = match request.commit_hash.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        Some(hash) => versions.iter().find(|v| v.commit_hash.starts_with(hash)).ok_or_else(|| {
            ApiError::Validation(FieldErrors::single("commit_hash", "No version of this strategy has this hash."))
        })?,
        None => versions
            .get(1)
            .ok_or_else(|| ApiError::bad_request("There is no earlier version to roll back to: deploy one first."))?,
    };
    let report = python_checks::check(&target.code).await;
    let fields = GeneratedCodeFields {
        strategy_id: Some(strategy.id),
        strategy_name: report.strategy_class.clone().unwrap_or_else(|| strategy.name.clone()),
        file_name: format!("{}.py", target.commit_hash),
        code: target.code.clone(),
        source: "rollback",
        validation_status: if report.passed { "static_checks_passed" } else { "static_checks_failed" },
        problems: json!(report.problems),
        fix_attempts: 0,
        fix_history: json!([]),
    };
    state.store.create_generated_code(user.user_id, &fields).await?;
    let mut changed = store::strategies::StrategyFields::from(&strategy);
    changed.parameters = target.parameters.0.clone();
    state.store.update_strategy(strategy.id, user.user_id, &changed).await?;
    let reason = request.reason.unwrap_or_default();
    let message = format!(
        "Rollback to {}{}",
        target.commit_hash,
        if reason.trim().is_empty() { String::new() } else { format!(": {}", reason.trim()) }
    );
    let version = NewVersion {
        commit_hash: &target.commit_hash,
        kind: "rollback",
        message: &message,
        tag: None,
        code: &target.code,
        parameters: &target.parameters.0,
    };
    let row = state.store.record_version(user.user_id, strategy.id, &version).await?;
    tracing::info!(strategy = strategy.id, commit = %target.commit_hash, "strategy rolled back");
    Ok(Json(json!({
        "success": true,
        "strategy_id": strategy.id,
        "restored_commit": target.commit_hash,
        "message": message,
        "version": version_view(&row),
    })))
}
