//! The old app's strategy actions, as its code meant them
//! (`/api/strategies/strategies/{id}/…`): `validate_strategy`,
//! `validation_history`, `performance_history`, `execute` and
//! `execution_history`; and `/api/strategies/validate/` (code in, a verdict
//! and a test run out). They run on what exists: the static checks, and
//! the sandboxed job runner for anything that runs code (a backtest job
//! like any other, on any replica's workers).

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use store::backtests::BacktestRunRow;
use store::generated::ValidationFields;
use store::strategies::StrategyRow;

use crate::python_checks::{self, Report};
use crate::resources::runs::{PerformanceView, ValidationView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/strategies/{id}/validate_strategy", post(validate_strategy))
        .route("/api/strategies/strategies/{id}/validation_history", get(validation_history))
        .route("/api/strategies/strategies/{id}/performance_history", get(performance_history))
        .route("/api/strategies/strategies/{id}/execute", post(execute))
        .route("/api/strategies/strategies/{id}/execution_history", get(execution_history))
        .route("/api/strategies/validate", post(validate_code))
        .route("/api/strategies/validate-file", post(validate_file))
}

/// How many runs `execution_history` lists, as the old app did.
const HISTORY_RUNS: i64 = 20;
/// The most history rows `validation_history` and `performance_history` return.
const HISTORY_ROWS: i64 = 500;
/// What `validate_strategy` checks unless told otherwise.
const VALIDATION_TYPES: [&str; 3] = ["syntax", "logic", "security"];
/// The symbol and span a logic check backtests on.
const LOGIC_SYMBOL: &str = "GOOG";
const LOGIC_PERIOD: &str = "1y";

async fn owned(state: &AppState, user: &AuthUser, id: i64) -> ApiResult<StrategyRow> {
    state.store.strategy(id, user.user_id).await?.ok_or(ApiError::NotFound)
}

#[derive(Debug, Default, Deserialize)]
struct ValidateStrategyRequest {
    /// Sent by old clients; the id in the path is the one used.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for the old clients that send it")]
    strategy_id: Option<Value>,
    #[serde(default)]
    validation_types: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for the old clients that send it")]
    config: Option<Value>,
}

/// One check of `validate_strategy`, before it is recorded.
struct Finding {
    kind: &'static str,
    status: &'static str,
    errors: Vec<String>,
    warnings: Vec<String>,
    details: Value,
}

fn problems_of(report: &Report, checks: &[&str]) -> Vec<String> {
    report.problems.iter().filter(|p| checks.contains(&p.check)).map(|p| p.message.clone()).collect()
}

fn passed(errors: &[String]) -> &'static str {
    if errors.is_empty() {
        "passed"
    } else {
        "failed"
    }
}

/// `syntax` (it parses), `security` (the import allow-list and the
/// forbidden calls) and `logic` (a strategy class with `init` and `next`
/// that completes a backtest in the sandbox), each recorded as a
/// validation. The strategy becomes `valid` when every one passed, else
/// `invalid`.
async fn validate_strategy(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(request): ApiJson<ValidateStrategyRequest>,
) -> ApiResult<Json<Value>> {
    let strategy = owned(&state, &user, id).await?;
    let kinds: Vec<&'static str> = match &request.validation_types {
        None => VALIDATION_TYPES.to_vec(),
        Some(asked) if asked.is_empty() => VALIDATION_TYPES.to_vec(),
        Some(asked) => {
            let mut kinds = Vec::new();
            for kind in asked {
                let known = VALIDATION_TYPES.iter().find(|known| known.eq_ignore_ascii_case(kind.trim()));
                match known {
                    Some(known) if !kinds.contains(known) => kinds.push(*known),
                    Some(_) => {}
                    None => {
                        return Err(ApiError::Validation(FieldErrors::single(
                            "validation_types",
                            format!("\"{kind}\" is not a valid choice: {}.", VALIDATION_TYPES.join(", ")),
                        )))
                    }
                }
            }
            kinds
        }
    };
    let code = backtests::code_of(&state, &strategy).await?;
    let report = python_checks::check(&code).await;
    let mut findings = Vec::new();
    for kind in kinds {
        let finding = match kind {
            "syntax" => {
                let errors = problems_of(&report, &["parses"]);
                Finding { kind, status: passed(&errors), errors, warnings: vec![], details: json!({}) }
            }
            "security" => {
                let mut errors = problems_of(&report, &["imports", "forbidden_calls"]);
                if !problems_of(&report, &["parses"]).is_empty() {
                    errors.push("Not checked: the code does not parse.".into());
                }
                Finding { kind, status: passed(&errors), errors, warnings: vec![], details: json!({}) }
            }
            _ => logic(&state, &user, &strategy, &code, &report).await?,
        };
        findings.push(finding);
    }
    let mut results = Vec::new();
    for finding in &findings {
        let fields = ValidationFields {
            strategy_id: strategy.id,
            validation_type: finding.kind,
            status: finding.status.into(),
            errors: json!(finding.errors),
            warnings: json!(finding.warnings),
            details: finding.details.clone(),
        };
        results.push(ValidationView::from(state.store.record_validation(user.user_id, &fields).await?));
    }
    let pending = findings.iter().any(|f| f.status == "pending");
    let valid = findings.iter().all(|f| f.status == "passed");
    let status = match (pending, valid) {
        (true, _) => "validating",
        (false, true) => "valid",
        (false, false) => "invalid",
    };
    state.store.set_strategy_status(strategy.id, user.user_id, status).await?;
    tracing::info!(strategy = strategy.id, status, "strategy validated");
    let failed: Vec<&str> = findings.iter().filter(|f| f.status == "failed").map(|f| f.kind).collect();
    Ok(Json(json!({
        "strategy_id": strategy.id,
        "validation_results": results,
        "overall_result": {
            "valid": valid,
            "status": status,
            "checks": findings.len(),
            "failed": failed,
        },
    })))
}

/// The structure, then a backtest in the sandbox when one can run.
async fn logic(
    state: &AppState,
    user: &AuthUser,
    strategy: &StrategyRow,
    code: &str,
    report: &Report,
) -> ApiResult<Finding> {
    let kind = "logic";
    let errors = problems_of(report, &["strategy_class"]);
    if !report.passed {
        let mut errors = errors;
        errors.push("Not run: the code fails its static checks.".into());
        return Ok(Finding { kind, status: "failed", errors, warnings: vec![], details: json!({ "executed": false }) });
    }
    if let Err(err) = backtests::accepting(state).await {
        let ApiError::Unavailable(reason) = err else { return Err(err) };
        let warnings = vec![format!("Not run: {reason}. Only the structure was checked.")];
        return Ok(Finding { kind, status: "passed", errors, warnings, details: json!({ "executed": false }) });
    }
    let config = json!({ "symbol": LOGIC_SYMBOL, "period": LOGIC_PERIOD });
    let prepared = backtests::prepare_test_run(state, user.user_id, &config).await?;
    let run =
        backtests::run_within(state, user.user_id, Some(strategy.id), code, &prepared, backtests::request_wait(state))
            .await?;
    let details = json!({ "executed": true, "run": run.id, "run_id": run.run_id, "symbol": LOGIC_SYMBOL,
                          "period": LOGIC_PERIOD, "metrics": backtests::headline(&run) });
    Ok(match (run.is_final(), backtests::failure_text(&run)) {
        (false, _) => Finding { kind, status: "pending", errors: vec![], warnings: vec![], details },
        (true, Some(failure)) => Finding { kind, status: "failed", errors: vec![failure], warnings: vec![], details },
        (true, None) if run.status == store::backtests::CANCELLED => {
            Finding { kind, status: "failed", errors: vec!["The run was cancelled.".into()], warnings: vec![], details }
        }
        (true, None) => Finding { kind, status: "passed", errors: vec![], warnings: vec![], details },
    })
}

async fn validation_history(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Vec<ValidationView>>> {
    let strategy = owned(&state, &user, id).await?;
    let (_, rows) = state.store.validations_page(user.user_id, Some(strategy.id), HISTORY_ROWS, 0).await?;
    Ok(Json(rows.into_iter().map(ValidationView::from).collect()))
}

async fn performance_history(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Vec<PerformanceView>>> {
    let strategy = owned(&state, &user, id).await?;
    let (_, rows) = state.store.performance_page(user.user_id, Some(strategy.id), HISTORY_ROWS, 0).await?;
    Ok(Json(rows.into_iter().map(PerformanceView::from).collect()))
}

fn default_test_symbol() -> String {
    LOGIC_SYMBOL.into()
}

#[derive(Debug, Deserialize)]
struct ExecuteRequest {
    #[serde(default = "default_test_symbol")]
    test_symbol: String,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    initial_capital: Option<f64>,
    #[serde(default)]
    commission: Option<f64>,
}

/// The old `execute` answer for a run.
fn execution_body(run: &BacktestRunRow) -> Value {
    json!({
        "success": if run.is_final() { json!(run.status == store::backtests::COMPLETED) } else { Value::Null },
        "status": run.status,
        "metrics": backtests::headline(run),
        "results_file": format!("/api/backtests/runs/{}/result/", run.id),
        "error_message": run.error_message,
        "error_traceback": run.error_traceback,
        "run": run.id,
        "run_id": run.run_id,
    })
}

/// A sandboxed backtest of the strategy's code on `test_symbol`. The
/// strategy becomes `executed` or `failed`. A run that outlasts the
/// request answers 202 with the run to follow.
async fn execute(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> ApiResult<Response> {
    let strategy = owned(&state, &user, id).await?;
    let config = json!({ "symbol": request.test_symbol, "start_date": request.start_date, "end_date": request.end_date,
                         "initial_capital": request.initial_capital, "commission": request.commission });
    let run = backtests::test_strategy(&state, &strategy, &config).await?;
    if !run.is_final() {
        return Ok((StatusCode::ACCEPTED, Json(execution_body(&run))).into_response());
    }
    let status = if run.status == store::backtests::COMPLETED { "executed" } else { "failed" };
    state.store.set_strategy_status(strategy.id, user.user_id, status).await?;
    Ok(Json(execution_body(&run)).into_response())
}

/// The strategy's last 20 runs, newest first, however they were started.
async fn execution_history(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let strategy = owned(&state, &user, id).await?;
    let (total, runs) = state.store.strategy_backtest_runs(strategy.id, user.user_id, HISTORY_RUNS).await?;
    let executions: Vec<Value> = runs
        .iter()
        .map(|run| {
            let figures = backtests::headline(run).unwrap_or_else(|| json!({ "execution_time": run.execution_time }));
            let mut entry = json!({
                "timestamp": api_core::time::iso8601(&run.created_at),
                "success": if run.is_final() { json!(run.status == store::backtests::COMPLETED) } else { Value::Null },
                "status": run.status,
                "run": run.id,
                "run_id": run.run_id,
                "symbols": run.symbols.0,
                "error_message": run.error_message,
            });
            for field in ["return_pct", "num_trades", "win_rate", "sharpe_ratio", "max_drawdown", "execution_time"] {
                entry[field] = figures[field].clone();
            }
            entry
        })
        .collect();
    Ok(Json(json!({
        "strategy_id": strategy.id,
        "strategy_name": strategy.name,
        "total_executions": total,
        "executions": executions,
    })))
}

#[derive(Debug, Deserialize)]
struct ValidateCodeRequest {
    strategy_code: Option<String>,
    strategy_name: Option<String>,
    /// The old app's default was AAPL, which is not bundled: GOOG is.
    test_symbol: Option<String>,
    test_period_days: Option<u32>,
}

/// `test_period_days` as the period the runner takes: the shortest that
/// covers it.
fn period_covering(days: u32) -> &'static str {
    match days {
        0..=31 => "1mo",
        32..=93 => "3mo",
        94..=186 => "6mo",
        187..=366 => "1y",
        367..=731 => "2y",
        732..=1827 => "5y",
        1828..=3653 => "10y",
        _ => "max",
    }
}

/// `POST /api/strategies/validate/`: code in; the static checks, then a
/// sandboxed run on a bundled symbol (answered when it ends, within the
/// request); valid when nothing failed and it made at least one trade.
async fn validate_code(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<ValidateCodeRequest>,
) -> ApiResult<Response> {
    let code = request.strategy_code.clone().unwrap_or_default();
    if code.trim().is_empty() {
        return Err(ApiError::Rejected(json!({ "error": "strategy_code is required" })));
    }
    let mut errors = FieldErrors::new();
    errors.check_bytes("strategy_code", &code, python_checks::MAX_CODE_BYTES);
    errors.into_result()?;
    let name =
        request.strategy_name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "GeneratedStrategy".into());
    let days = request.test_period_days.unwrap_or(365);
    if days == 0 {
        return Err(ApiError::Validation(FieldErrors::single("test_period_days", "Ensure this value is at least 1.")));
    }
    let symbol = request.test_symbol.clone().unwrap_or_else(|| LOGIC_SYMBOL.into());
    let config = json!({ "symbol": symbol, "period": period_covering(days) });
    // The symbol is checked before anything runs, sandbox or not.
    let prepared = backtests::prepare_test_run(&state, user.user_id, &config).await?;
    let code = strategy_schema::runnable_python("strategy_code", &code)?;
    let report = python_checks::check(&code).await;
    let mut errors: Vec<String> = report.problems.iter().map(|p| p.message.clone()).collect();
    let mut warnings = Vec::new();
    let mut suggestions = Vec::new();
    let mut run = None;
    if report.passed {
        match backtests::accepting(&state).await {
            Ok(()) => {
                run = Some(
                    backtests::run_within(
                        &state,
                        user.user_id,
                        None,
                        &code,
                        &prepared,
                        backtests::request_wait(&state),
                    )
                    .await?,
                );
            }
            Err(ApiError::Unavailable(reason)) => warnings.push(format!("Not run: {reason}.")),
            Err(err) => return Err(err),
        }
    } else {
        suggestions.push("Fix the problems the static checks found; fix_errors can do it for a strategy.".to_string());
    }
    let figures = run.as_ref().and_then(backtests::headline);
    let trades = figures.as_ref().and_then(|f| f["num_trades"].as_i64());
    match &run {
        Some(run) if !run.is_final() => warnings.push(format!(
            "The test run had not ended when the answer was due; follow it at /api/backtests/runs/{}/",
            run.id
        )),
        Some(run) => {
            if let Some(failure) = backtests::failure_text(run) {
                errors.push(failure);
                suggestions.push("Read the traceback: the error is in the strategy's own code.".into());
            }
            if trades == Some(0) {
                errors.push("The strategy made no trades in the test period; at least one is required.".into());
                suggestions.push("Loosen the entry conditions, or test over a longer period.".into());
            }
        }
        None => {}
    }
    let ran = run.as_ref().is_some_and(|run| run.status == store::backtests::COMPLETED);
    let valid = errors.is_empty() && ran;
    let indicators = code.matches("self.I(").count();
    Ok(Json(json!({
        "strategy_name": name,
        "valid": valid,
        "errors": errors,
        "warnings": warnings,
        "suggestions": suggestions,
        "test_results": figures.as_ref().map(|f| json!({
            "return": f["return_pct"], "trades": f["num_trades"], "win_rate": f["win_rate"],
            "sharpe": f["sharpe_ratio"], "max_drawdown": f["max_drawdown"],
        })),
        "execution_time": run.as_ref().and_then(|run| run.execution_time),
        "trades_executed": trades.unwrap_or(0),
        "indicators_initialized": indicators,
        "test_symbol": prepared.symbols[0],
        "test_period": period_covering(days),
        "run": run.as_ref().map(|run| run.id),
        "run_id": run.as_ref().map(|run| run.run_id.clone()),
        "static_checks": report,
    }))
    .into_response())
}

/// `validate-file/` read a path on the server; there are no such files.
async fn validate_file(_user: AuthUser) -> Response {
    let body = json!({
        "error": "validate-file/ is gone: strategies are no longer files on the server.",
        "detail": "POST the code itself to /api/strategies/validate/ (strategy_code, test_symbol, test_period_days).",
        "replacement": "/api/strategies/validate/",
    });
    (StatusCode::GONE, Json(body)).into_response()
}
