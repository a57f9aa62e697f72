//! `/api/backtests/`: backtests that really run. A run is a row in the
//! database (`backtest_runs`), queued by the API and claimed by a worker on
//! any replica ([`worker`]), which executes it in the sandbox and writes
//! the result back. Owner-scoped like everything else.

pub mod data;
pub mod worker;

use std::time::Duration;

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, Page, PageRequest, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::backtests::{BacktestRunRow, NewBacktestRun};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/backtests/api/quick_run", post(quick_run))
        .route("/api/backtests/api/run_backtest", post(run_backtest))
        .route("/api/backtests/runs", get(list_runs))
        .route("/api/backtests/runs/{id}", get(get_run))
        .route("/api/backtests/runs/{id}/result", get(run_result))
        .route("/api/backtests/runs/{id}/trades", get(run_trades))
        .route("/api/backtests/runs/{id}/cancel", post(cancel_run))
        .merge(data::routes())
}

/// What the old API gave a run, in snake_case.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub id: i64,
    pub run_id: String,
    pub status: String,
    pub strategy_id: Option<i64>,
    pub symbols: Value,
    pub parameters: Value,
    pub attempts: i32,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub completed_at: Option<DateTime<Utc>>,
    pub execution_time: Option<f64>,
    pub error_message: Option<String>,
    pub error_traceback: Option<String>,
    /// The first symbol's headline numbers, once completed.
    pub result_summary: Option<Value>,
}

impl From<&BacktestRunRow> for RunView {
    fn from(row: &BacktestRunRow) -> Self {
        Self {
            id: row.id,
            run_id: row.run_id.clone(),
            status: row.status.clone(),
            strategy_id: row.strategy_id,
            symbols: row.symbols.0.clone(),
            parameters: row.parameters.0.clone(),
            attempts: row.attempts,
            created_at: row.created_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            execution_time: row.execution_time,
            error_message: row.error_message.clone(),
            error_traceback: row.error_traceback.clone(),
            result_summary: row.result.as_ref().map(|result| summary(&result.0)),
        }
    }
}

/// `summary{total_return, total_trades, win_rate, sharpe_ratio,
/// max_drawdown, final_equity}` of the first symbol.
fn summary(result: &Value) -> Value {
    let metrics = &result["results"][0]["metrics"];
    json!({
        "total_return": metrics["return_pct"],
        "total_trades": metrics["total_trades"],
        "win_rate": metrics["win_rate"],
        "sharpe_ratio": metrics["sharpe_ratio"],
        "max_drawdown": metrics["max_drawdown"],
        "final_equity": metrics["equity_final"],
    })
}

/// The old `quick_run` shape: the first symbol's summary, metrics, trades
/// and equity curve, and every symbol's metrics in `symbol_stats`.
fn result_view(row: &BacktestRunRow, result: &Value) -> Value {
    let first = &result["results"][0];
    let symbol_stats: Vec<Value> = result["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|symbol| json!({ "symbol": symbol["symbol"], "bars": symbol["bars"], "metrics": symbol["metrics"] }))
        .collect();
    json!({
        "id": row.id,
        "run_id": row.run_id,
        "status": row.status,
        "summary": summary(result),
        "metrics": first["metrics"],
        "trades": first["trades"],
        "equity_curve": first["equity_curve"],
        "daily_stats": [],
        "symbol_stats": symbol_stats,
        "strategy_class": result["strategy_class"],
    })
}

/// The dates, capital and commission every kind of run takes.
#[derive(Debug, Default, Deserialize)]
struct RunSettings {
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    /// `1mo` … `10y` back from the series' end (or `end_date`), or `max`.
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    initial_capital: Option<f64>,
    #[serde(default)]
    commission: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct QuickRunRequest {
    strategy_code: String,
    #[serde(default)]
    symbol: Option<String>,
    #[serde(flatten)]
    settings: RunSettings,
}

/// How long `quick_run` waits for its run before answering with the
/// queued run to poll.
const QUICK_RUN_WAIT: Duration = Duration::from_secs(25);

fn date(field: &str, value: Option<&str>) -> ApiResult<Option<NaiveDate>> {
    value
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map_err(|_| ApiError::bad_request(format!("{field} must be a date, YYYY-MM-DD")))
        })
        .transpose()
}

/// The run's symbols, each resolvable now (the user's own series or a
/// sample): a 400 naming what exists otherwise, before anything is queued.
async fn check_symbols(state: &AppState, user_id: i64, symbols: &[String]) -> ApiResult<()> {
    for symbol in symbols {
        if !data::available(state, user_id, symbol).await? {
            let own: Vec<String> = state.store.datasets(user_id).await?.into_iter().map(|d| d.symbol).collect();
            let known: Vec<&str> =
                sandbox::SAMPLE_SYMBOLS.iter().copied().chain(own.iter().map(String::as_str)).collect();
            return Err(ApiError::bad_request_with_details(
                format!("no market data for symbol {symbol}"),
                format!("available symbols: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn new_run_id() -> String {
    format!("bt_{:08x}", rand::random::<u32>())
}

/// Dates, capital and commission of a run, checked.
fn run_parameters(state: &AppState, settings: &RunSettings) -> ApiResult<Value> {
    let start = date("start_date", settings.start_date.as_deref())?;
    let end = date("end_date", settings.end_date.as_deref())?;
    if let (Some(start), Some(end)) = (start, end) {
        if start >= end {
            return Err(ApiError::bad_request("start_date must be before end_date"));
        }
    }
    let period = settings.period.as_deref().map(str::trim).filter(|p| !p.is_empty()).map(str::to_ascii_lowercase);
    if let Some(period) = &period {
        if !sandbox::PERIODS.contains(&period.as_str()) {
            return Err(ApiError::bad_request(format!("period must be one of {}", sandbox::PERIODS.join(", "))));
        }
        if start.is_some() {
            return Err(ApiError::bad_request("give period or start_date, not both"));
        }
    }
    let cash = settings.initial_capital.unwrap_or(state.backtest_defaults.cash);
    if !(cash.is_finite() && cash > 0.0) {
        return Err(ApiError::bad_request("initial_capital must be more than zero"));
    }
    let commission = settings.commission.unwrap_or(state.backtest_defaults.commission);
    if !(commission.is_finite() && (0.0..1.0).contains(&commission)) {
        return Err(ApiError::bad_request("commission must be a fraction from 0 up to 1"));
    }
    Ok(json!({
        "start_date": start.map(|d| d.to_string()),
        "end_date": end.map(|d| d.to_string()),
        "period": period,
        "initial_capital": cash,
        "commission": commission,
    }))
}

/// Refused, never run unsandboxed, when the sandbox is not there.
fn sandbox_ready(state: &AppState) -> ApiResult<()> {
    match state.sandbox.readiness() {
        sandbox::Readiness::Ready { .. } => Ok(()),
        sandbox::Readiness::Unavailable { reason } => {
            tracing::warn!(%reason, "a backtest was refused: the sandbox is unavailable");
            Err(ApiError::Unavailable(format!("backtests are unavailable here: {reason}")))
        }
    }
}

/// Python the runner can load, or a 400 saying what to send instead.
fn python_code(code: &str) -> ApiResult<&str> {
    let code = code.trim();
    if code.is_empty() {
        return Err(ApiError::bad_request("strategy_code must not be empty"));
    }
    if code.starts_with('{') {
        return Err(ApiError::bad_request(
            "canonical JSON strategies are not run yet: send Python code (a backtesting.Strategy subclass)",
        ));
    }
    Ok(code)
}

/// Queues a run and waits for it within the request's time: the finished
/// run, or `None` (then the caller answers 202 with the run to poll).
async fn start_and_wait(
    state: &AppState,
    user: &AuthUser,
    strategy_id: Option<i64>,
    code: &str,
    symbols: &[String],
    parameters: &Value,
) -> ApiResult<(BacktestRunRow, bool)> {
    let run_id = new_run_id();
    let row = state
        .store
        .queue_backtest(&NewBacktestRun {
            run_id: &run_id,
            user_id: user.user_id,
            strategy_id,
            code,
            symbols: &json!(symbols),
            parameters,
            created_at: Utc::now(),
        })
        .await?;
    state.backtest_queue.notify_waiters();
    tracing::info!(run = row.id, run_id = %row.run_id, "backtest queued");
    match wait_for_end(state, row.id, user.user_id, QUICK_RUN_WAIT.min(state.request_timeout)).await? {
        Some(done) => Ok((done, true)),
        None => Ok((state.store.backtest_run(row.id, user.user_id).await?.ok_or(ApiError::NotFound)?, false)),
    }
}

/// The old API's failure answer.
fn failed(run: &BacktestRunRow) -> Response {
    let body = json!({ "error": "Backtest execution failed", "details": run.error_message, "run": RunView::from(run) });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn quick_run(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<QuickRunRequest>,
) -> ApiResult<Response> {
    sandbox_ready(&state)?;
    let code = python_code(&request.strategy_code)?;
    let symbol = data::normalise_symbol(request.symbol.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or("GOOG"))?;
    let parameters = run_parameters(&state, &request.settings)?;
    let symbols = [symbol];
    check_symbols(&state, user.user_id, &symbols).await?;
    let (run, ended) = start_and_wait(&state, &user, None, code, &symbols, &parameters).await?;
    Ok(match (ended, &run.result) {
        (false, _) => (StatusCode::ACCEPTED, Json(RunView::from(&run))).into_response(),
        (true, Some(result)) if run.status == store::backtests::COMPLETED => {
            Json(result_view(&run, &result.0)).into_response()
        }
        (true, _) => failed(&run),
    })
}

#[derive(Debug, Deserialize)]
struct RunBacktestRequest {
    strategy_id: i64,
    symbols: Vec<String>,
    #[serde(flatten)]
    settings: RunSettings,
}

/// Most symbols one run takes.
const MAX_SYMBOLS: usize = 50;

/// A strategy's code, backtested on each symbol: its latest generated
/// code, or else its own `strategy_code` when that is Python. Each
/// completed run writes a `performance` record per symbol.
async fn run_backtest(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<RunBacktestRequest>,
) -> ApiResult<Response> {
    sandbox_ready(&state)?;
    let strategy = state.store.strategy(request.strategy_id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    // As the old API: uppercased, anything that is no symbol dropped.
    let mut symbols: Vec<String> = Vec::new();
    for symbol in request.symbols.iter().filter_map(|symbol| data::normalise_symbol(symbol).ok()) {
        if !symbols.contains(&symbol) {
            symbols.push(symbol);
        }
    }
    if symbols.is_empty() || symbols.len() > MAX_SYMBOLS {
        return Err(ApiError::bad_request(format!("symbols must name 1 to {MAX_SYMBOLS} symbols")));
    }
    check_symbols(&state, user.user_id, &symbols).await?;
    let parameters = run_parameters(&state, &request.settings)?;
    let generated = state.store.latest_generated_code(strategy.id, user.user_id).await?;
    let code = match &generated {
        Some(generated) => generated.code.as_str(),
        None => python_code(&strategy.strategy_code)
            .map_err(|_| ApiError::bad_request("the strategy has no Python code yet: generate its code first"))?,
    };
    let (run, ended) = start_and_wait(&state, &user, Some(strategy.id), code, &symbols, &parameters).await?;
    Ok(match ended {
        false => (StatusCode::ACCEPTED, Json(RunView::from(&run))).into_response(),
        true if run.status == store::backtests::COMPLETED => Json(RunView::from(&run)).into_response(),
        true => failed(&run),
    })
}

/// The run once final, or `None` if it is not within `wait`.
async fn wait_for_end(state: &AppState, id: i64, owner: i64, wait: Duration) -> ApiResult<Option<BacktestRunRow>> {
    let deadline = tokio::time::Instant::now() + wait.saturating_sub(Duration::from_secs(1));
    loop {
        let row = state.store.backtest_run(id, owner).await?.ok_or(ApiError::NotFound)?;
        if row.is_final() {
            return Ok(Some(row));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list_runs(State(state): State<AppState>, user: AuthUser, page: PageRequest) -> ApiResult<Json<Page<RunView>>> {
    let (count, rows) = state.store.backtest_runs_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.iter().map(RunView::from).collect())?))
}

async fn owned(state: &AppState, user: &AuthUser, id: i64) -> ApiResult<BacktestRunRow> {
    state.store.backtest_run(id, user.user_id).await?.ok_or(ApiError::NotFound)
}

async fn get_run(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<RunView>> {
    Ok(Json(RunView::from(&owned(&state, &user, id).await?)))
}

fn not_available() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "Results not available for this run" }))).into_response()
}

async fn run_result(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<Response> {
    let row = owned(&state, &user, id).await?;
    Ok(match &row.result {
        Some(result) => Json(result_view(&row, &result.0)).into_response(),
        None => not_available(),
    })
}

async fn run_trades(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<Response> {
    let row = owned(&state, &user, id).await?;
    let Some(result) = &row.result else { return Ok(not_available()) };
    let trades: Vec<Value> = result.0["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|symbol| {
            let name = symbol["symbol"].clone();
            symbol["trades"].as_array().cloned().unwrap_or_default().into_iter().map(move |mut trade| {
                trade["symbol"] = name.clone();
                trade
            })
        })
        .collect();
    Ok(Json(trades).into_response())
}

async fn cancel_run(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<Response> {
    let before = owned(&state, &user, id).await?;
    if before.is_final() {
        return Err(ApiError::bad_request(format!("the run is already {}", before.status)));
    }
    let after = state.store.cancel_backtest(id, user.user_id, Utc::now()).await?.ok_or(ApiError::NotFound)?;
    if after.status != store::backtests::CANCELLED {
        return Err(ApiError::bad_request(format!("the run is already {}", after.status)));
    }
    tracing::info!(run = id, "backtest cancelled by its owner");
    Ok(Json(json!({ "message": "Backtest cancelled", "run_id": after.run_id, "status": after.status })).into_response())
}
