//! `/api/backtests/`: backtests that really run. A run is a row in the
//! database (`backtest_runs`), queued by the API and claimed by a worker on
//! any replica ([`worker`]), which executes it in the sandbox and writes
//! the result back. Owner-scoped like everything else.

pub mod data;
pub mod live;
pub mod market;
pub mod records;
pub mod worker;

use std::time::Duration;

use api_core::{streaming, ApiError, ApiJson, ApiResult, AppState, AuthUser, Page, PageRequest, ResourceId};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::backtests::{BacktestRunRow, NewBacktestRun};
use tokio::sync::mpsc;

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
        .merge(records::routes())
        .merge(market::routes())
        .merge(live::routes())
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

/// How long `quick_run` and `run_backtest` wait for their run before
/// answering with the queued run to poll.
const QUICK_RUN_WAIT: Duration = Duration::from_secs(25);

pub fn request_wait(state: &AppState) -> Duration {
    QUICK_RUN_WAIT.min(state.request_timeout)
}

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
pub async fn check_symbols(state: &AppState, user_id: i64, symbols: &[String]) -> ApiResult<()> {
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

/// Whether a run queued now will be run: by this process's own workers
/// (a sandbox here and `SANDBOX_WORKERS` > 0), or by a worker process
/// that reported in lately. Refused with a 503 saying why otherwise:
/// never queued for no one, never run unsandboxed.
pub async fn accepting(state: &AppState) -> ApiResult<()> {
    let here = match (state.backtest_slots, state.sandbox.readiness()) {
        (0, _) => "this replica runs no backtests (SANDBOX_WORKERS=0)".to_string(),
        (_, sandbox::Readiness::Unavailable { reason }) => format!("the sandbox is unavailable here: {reason}"),
        (_, sandbox::Readiness::Ready { .. }) => return Ok(()),
    };
    let since = Utc::now() - chrono::Duration::from_std(worker::SEEN_WITHIN).unwrap_or(chrono::Duration::seconds(15));
    if state.store.live_backtest_worker_slots(since).await? > 0 {
        return Ok(());
    }
    let reason = format!(
        "backtests are unavailable: {here}, and no backtest worker has reported in for {} s",
        worker::SEEN_WITHIN.as_secs()
    );
    tracing::warn!(%reason, "a backtest was refused");
    Err(ApiError::Unavailable(reason))
}

/// Python the runner can load: the code as sent, or executable canonical
/// JSON translated locally; a 400 saying what to send instead.
fn runnable_code(code: &str) -> ApiResult<String> {
    if code.trim().is_empty() {
        return Err(ApiError::bad_request("strategy_code must not be empty"));
    }
    Ok(strategy_schema::runnable_python("strategy_code", code)?)
}

/// Python the runner can load, never canonical JSON (a stored strategy's
/// own `strategy_code` may be either).
fn python_code(code: &str) -> Option<&str> {
    let code = code.trim();
    (!code.is_empty() && !code.starts_with('{')).then_some(code)
}

/// A run checked and ready to queue: every symbol has data, the dates,
/// capital and commission are sound.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub symbols: Vec<String>,
    pub parameters: Value,
}

/// A generation endpoint's `test_config` as a run: `symbol` (or
/// `symbols`, default GOOG), and the dates, `period`, capital and
/// commission a run takes. `interval` is the series' own: it is read
/// from the data, not chosen. Checked before any AI call is paid for.
pub async fn prepare_test_run(state: &AppState, user_id: i64, test_config: &Value) -> ApiResult<Prepared> {
    #[derive(Deserialize)]
    struct TestConfig {
        #[serde(default)]
        symbol: Option<String>,
        #[serde(default)]
        symbols: Option<Vec<String>>,
        #[serde(flatten)]
        settings: RunSettings,
    }
    let config: TestConfig = serde_json::from_value(test_config.clone()).map_err(|err| {
        ApiError::Validation(api_core::FieldErrors::single("test_config", format!("Invalid test_config: {err}")))
    })?;
    let mut named: Vec<String> = config.symbols.unwrap_or_default();
    named.extend(config.symbol.filter(|s| !s.trim().is_empty()));
    if named.is_empty() {
        named.push(DEFAULT_SYMBOL.to_string());
    }
    let symbols = distinct_symbols(&named)?;
    check_symbols(state, user_id, &symbols).await?;
    Ok(Prepared { symbols, parameters: run_parameters(state, &config.settings)? })
}

/// The symbol a run without one uses: the first sample series.
const DEFAULT_SYMBOL: &str = "GOOG";

/// Uppercased, each once, 1 to [`MAX_SYMBOLS`] of them.
fn distinct_symbols(named: &[String]) -> ApiResult<Vec<String>> {
    let mut symbols: Vec<String> = Vec::new();
    for symbol in named {
        let symbol = data::normalise_symbol(symbol)?;
        if !symbols.contains(&symbol) {
            symbols.push(symbol);
        }
    }
    if symbols.is_empty() || symbols.len() > MAX_SYMBOLS {
        return Err(ApiError::bad_request(format!("symbols must name 1 to {MAX_SYMBOLS} symbols")));
    }
    Ok(symbols)
}

/// Queues a run of `code` and wakes this replica's workers; any replica's
/// may take it.
pub async fn submit(
    state: &AppState,
    user_id: i64,
    strategy_id: Option<i64>,
    code: &str,
    run: &Prepared,
) -> ApiResult<BacktestRunRow> {
    let run_id = new_run_id();
    let row = state
        .store
        .queue_backtest(&NewBacktestRun {
            run_id: &run_id,
            user_id,
            strategy_id,
            code,
            symbols: &json!(run.symbols),
            parameters: &run.parameters,
            created_at: Utc::now(),
        })
        .await?;
    state.backtest_queue.notify_waiters();
    tracing::info!(run = row.id, run_id = %row.run_id, "backtest queued");
    Ok(row)
}

/// Queues a run and waits for it within `wait`: the run as it then is,
/// final or not.
pub async fn run_within(
    state: &AppState,
    user_id: i64,
    strategy_id: Option<i64>,
    code: &str,
    run: &Prepared,
    wait: Duration,
) -> ApiResult<BacktestRunRow> {
    let row = submit(state, user_id, strategy_id, code, run).await?;
    match wait_for_end(state, row.id, user_id, wait).await? {
        Some(done) => Ok(done),
        None => state.store.backtest_run(row.id, user_id).await?.ok_or(ApiError::NotFound),
    }
}

/// What went wrong in a run that ended badly, for the fixer: the
/// traceback when the code raised, else the reason it was stopped.
pub fn failure_text(run: &BacktestRunRow) -> Option<String> {
    match run.status.as_str() {
        store::backtests::FAILED | store::backtests::TIMED_OUT => Some(
            run.error_traceback
                .clone()
                .filter(|t| !t.trim().is_empty())
                .or_else(|| run.error_message.clone())
                .unwrap_or_else(|| format!("the run {}", run.status)),
        ),
        _ => None,
    }
}

/// The code a strategy runs: its latest generated code, or else its own
/// `strategy_code` when that is Python; a 400 saying what to do otherwise.
pub async fn code_of(state: &AppState, strategy: &store::strategies::StrategyRow) -> ApiResult<String> {
    if let Some(generated) = state.store.latest_generated_code(strategy.id, strategy.user_id).await? {
        return Ok(generated.code);
    }
    python_code(&strategy.strategy_code)
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("the strategy has no Python code yet: generate its code first"))
}

/// A backtest of a strategy's code with a `test_config` (as
/// [`prepare_test_run`] reads it), waited for within the request: the
/// refusals of [`accepting`] and [`code_of`] first, then the run as it is
/// when the wait ends.
pub async fn test_strategy(
    state: &AppState,
    strategy: &store::strategies::StrategyRow,
    test_config: &Value,
) -> ApiResult<BacktestRunRow> {
    accepting(state).await?;
    let code = code_of(state, strategy).await?;
    let prepared = prepare_test_run(state, strategy.user_id, test_config).await?;
    run_within(state, strategy.user_id, Some(strategy.id), &code, &prepared, request_wait(state)).await
}

/// A completed run's headline figures, in the old strategy actions' names.
pub fn headline(run: &BacktestRunRow) -> Option<Value> {
    let result = run.result.as_ref().filter(|_| run.status == store::backtests::COMPLETED)?;
    let metrics = &result.0["results"][0]["metrics"];
    Some(json!({
        "return_pct": metrics["return_pct"],
        "num_trades": metrics["total_trades"],
        "win_rate": metrics["win_rate"],
        "sharpe_ratio": metrics["sharpe_ratio"],
        "max_drawdown": metrics["max_drawdown"],
        "execution_time": run.execution_time,
    }))
}

/// A run as generated code's `validation_status`.
pub fn validation_status(run: &BacktestRunRow) -> &'static str {
    match run.status.as_str() {
        store::backtests::COMPLETED => "backtest_passed",
        store::backtests::FAILED | store::backtests::TIMED_OUT => "backtest_failed",
        store::backtests::CANCELLED => "backtest_cancelled",
        _ => "backtest_pending",
    }
}

/// A run as a generation endpoint's `execution`.
pub fn execution_view(run: &BacktestRunRow) -> Value {
    let completed = run.status == store::backtests::COMPLETED;
    json!({
        "attempted": true,
        "success": if run.is_final() { json!(completed) } else { Value::Null },
        "status": run.status,
        "id": run.id,
        "run_id": run.run_id,
        "symbols": run.symbols.0,
        "validation_status": validation_status(run),
        "metrics": run.result.as_ref().map(|result| result.0["results"][0]["metrics"].clone()),
        "summary": run.result.as_ref().map(|result| summary(&result.0)),
        "execution_time": run.execution_time,
        "error_message": run.error_message,
        "error_traceback": run.error_traceback,
    })
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
    accepting(&state).await?;
    let code = runnable_code(&request.strategy_code)?;
    let symbol = request.symbol.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or(DEFAULT_SYMBOL);
    let symbols = vec![data::normalise_symbol(symbol)?];
    check_symbols(&state, user.user_id, &symbols).await?;
    let run = Prepared { symbols, parameters: run_parameters(&state, &request.settings)? };
    let run = run_within(&state, user.user_id, None, &code, &run, request_wait(&state)).await?;
    Ok(match (run.is_final(), &run.result) {
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
    #[serde(default)]
    config_id: Option<i64>,
    symbols: Vec<String>,
    #[serde(flatten)]
    settings: RunSettings,
}

/// "Auto-config for <name>": the settings of a run that named no config,
/// kept as a config like any other.
async fn auto_config(
    state: &AppState,
    owner: i64,
    strategy: &store::strategies::StrategyRow,
    settings: &RunSettings,
) -> ApiResult<store::backtest_records::ConfigRow> {
    let name: String = format!("Auto-config for {}", strategy.name).chars().take(200).collect();
    let mut fields = records::default_config(name);
    fields.start_date = settings.start_date.clone().filter(|d| !d.trim().is_empty());
    fields.end_date = settings.end_date.clone().filter(|d| !d.trim().is_empty());
    fields.initial_capital = settings.initial_capital.unwrap_or(state.backtest_defaults.cash);
    fields.commission = settings.commission.unwrap_or(state.backtest_defaults.commission);
    records::check_config(&fields)?;
    Ok(state.store.create_config(owner, &fields).await?)
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
    accepting(&state).await?;
    let strategy = state.store.strategy(request.strategy_id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    // As the old API: uppercased, anything that is no symbol dropped.
    let named: Vec<String> =
        request.symbols.into_iter().filter(|symbol| data::normalise_symbol(symbol).is_ok()).collect();
    let symbols = distinct_symbols(&named)?;
    check_symbols(&state, user.user_id, &symbols).await?;
    let config = match request.config_id {
        Some(id) => state.store.config(id, user.user_id).await?.ok_or(ApiError::NotFound)?,
        None => auto_config(&state, user.user_id, &strategy, &request.settings).await?,
    };
    // The request's own settings win over the config's.
    let settings = RunSettings {
        start_date: request.settings.start_date.clone().or(config.start_date.clone()),
        end_date: request.settings.end_date.clone().or(config.end_date.clone()),
        period: request.settings.period.clone(),
        initial_capital: request.settings.initial_capital.or(Some(config.initial_capital)),
        commission: request.settings.commission.or(Some(config.commission)),
    };
    let mut parameters = run_parameters(&state, &settings)?;
    parameters["config_id"] = json!(config.id);
    parameters["config_name"] = json!(config.name);
    let run = Prepared { symbols, parameters };
    let code = code_of(&state, &strategy).await?;
    let run = run_within(&state, user.user_id, Some(strategy.id), &code, &run, request_wait(&state)).await?;
    Ok(match (run.is_final(), run.status.as_str()) {
        (false, _) => (StatusCode::ACCEPTED, Json(RunView::from(&run))).into_response(),
        (true, store::backtests::COMPLETED) => Json(RunView::from(&run)).into_response(),
        (true, _) => failed(&run),
    })
}

/// The run once final, or `None` if it is not within `wait`.
pub async fn wait_for_end(state: &AppState, id: i64, owner: i64, wait: Duration) -> ApiResult<Option<BacktestRunRow>> {
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

/// The owner's runs, newest first; `?status`, `?strategy_id` and
/// `?symbols=` (repeatable: runs naming every one) narrow them.
async fn list_runs(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    page: PageRequest,
) -> ApiResult<Json<Page<RunView>>> {
    let filter = records::run_filter(query.as_deref()).await?;
    let (count, rows) = state.store.backtest_runs_page(user.user_id, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.iter().map(RunView::from).collect())?))
}

async fn owned(state: &AppState, user: &AuthUser, id: i64) -> ApiResult<BacktestRunRow> {
    state.store.backtest_run(id, user.user_id).await?.ok_or(ApiError::NotFound)
}

/// A run, or with `?stream=true` its progress as server-sent events:
/// `progress{stage, detail}` at each change of state (the stage is the
/// status), then `done` with the run (and its result, once completed).
/// The stream reads the database, so it follows a run on any replica.
async fn get_run(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let stream = streaming::wants_stream(query.as_deref(), &headers)?;
    let run = owned(&state, &user, id).await?;
    if !stream {
        return Ok(Json(RunView::from(&run)).into_response());
    }
    let slot = state.stream_slots.acquire(user.user_id)?;
    let (events, receiver) = mpsc::channel(16);
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        let last = follow(&state, &events, run).await;
        if let Some(last) = last {
            streaming::send_last(&events, last).await;
        }
        drop(slot);
    });
    Ok(streaming::response(receiver))
}

fn shutting_down() -> Event {
    streaming::error("The server is shutting down; the run goes on. Follow it again.", "server_shutdown")
}

/// How often a followed run is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// A run's progress until it ends: the last event to send, or `None` when
/// the client left.
async fn follow(state: &AppState, events: &mpsc::Sender<Event>, mut run: BacktestRunRow) -> Option<Event> {
    let mut told: Option<(String, i32)> = None;
    loop {
        let now = (run.status.clone(), run.attempts);
        if told.as_ref() != Some(&now) {
            let detail = match run.status.as_str() {
                store::backtests::QUEUED if run.attempts > 0 => {
                    format!("waiting for a worker (attempt {} of {} ended early)", run.attempts, worker::MAX_ATTEMPTS)
                }
                store::backtests::QUEUED => "waiting for a worker".to_string(),
                store::backtests::RUNNING => {
                    let symbols = run.symbols.0.as_array().map_or(0, Vec::len);
                    let plural = if symbols == 1 { "" } else { "s" };
                    format!(
                        "in the sandbox on {symbols} symbol{plural} (attempt {} of {})",
                        run.attempts,
                        worker::MAX_ATTEMPTS
                    )
                }
                other => other.to_string(),
            };
            match streaming::send(events, streaming::progress(&run.status, &detail), &state.tasks).await {
                Ok(()) => {}
                Err(streaming::SendFailed::ShuttingDown) => return Some(shutting_down()),
                Err(_) => return None,
            }
            told = Some(now);
        }
        if run.is_final() {
            let mut body = json!(RunView::from(&run));
            if let Some(result) = &run.result {
                body["result"] = result_view(&run, &result.0);
            }
            return Some(streaming::done(&body));
        }
        tokio::select! {
            biased;
            () = state.tasks.shutting_down() => return Some(shutting_down()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        run = match state.store.backtest_run(run.id, run.user_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Some(streaming::failure(&ApiError::NotFound)),
            Err(err) => return Some(streaming::failure(&ApiError::from(err))),
        };
    }
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
