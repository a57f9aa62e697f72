//! The rest of the old `/api/backtests/` surface: configs (CRUD,
//! `templates/`, `api/create_config/`), the read-only `results/`,
//! `trades/` and `alerts/` (and `runs/{id}/alerts/`), `api/search/` and
//! `api/health/`. Owner-scoped like everything else.

use api_core::pagination::query_pairs;
use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, Patch, ResourceId};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::backtest_records::{AlertRow, ConfigFields, ConfigRow, TradeFilter, TradeRow};
use store::backtests::{BacktestRunRow, RunFilter};

use crate::RunView;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/backtests/configs", get(list_configs).post(create_config))
        .route("/api/backtests/configs/templates", get(config_templates))
        .route(
            "/api/backtests/configs/{id}",
            get(get_config).put(replace_config).patch(update_config).delete(delete_config),
        )
        .route("/api/backtests/api/create_config", post(create_config))
        .route("/api/backtests/results", get(list_results))
        .route("/api/backtests/results/{id}", get(get_result))
        .route("/api/backtests/trades", get(list_trades))
        .route("/api/backtests/trades/{id}", get(get_trade))
        .route("/api/backtests/alerts", get(list_alerts))
        .route("/api/backtests/alerts/{id}", get(get_alert))
        .route("/api/backtests/runs/{id}/alerts", get(run_alerts))
        .route("/api/backtests/api/search", post(search))
        .route("/api/backtests/api/health", get(health))
}

#[derive(Debug, Serialize)]
pub struct ConfigView {
    id: i64,
    name: String,
    description: String,
    start_date: Option<String>,
    end_date: Option<String>,
    initial_capital: f64,
    commission: f64,
    slippage: f64,
    max_position_size: f64,
    stop_loss: Option<f64>,
    take_profit: Option<f64>,
    data_source: String,
    timeframe: String,
    benchmark_symbol: String,
    is_template: bool,
    created_by: i64,
    created_by_username: String,
    #[serde(serialize_with = "api_core::time::serialize")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    updated_at: DateTime<Utc>,
}

impl From<ConfigRow> for ConfigView {
    fn from(row: ConfigRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            start_date: row.start_date,
            end_date: row.end_date,
            initial_capital: row.initial_capital,
            commission: row.commission,
            slippage: row.slippage,
            max_position_size: row.max_position_size,
            stop_loss: row.stop_loss,
            take_profit: row.take_profit,
            data_source: row.data_source,
            timeframe: row.timeframe,
            benchmark_symbol: row.benchmark_symbol,
            is_template: row.is_template,
            created_by: row.user_id,
            created_by_username: row.created_by_username,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A new config's fields, with the old model's defaults.
pub fn default_config(name: String) -> ConfigFields {
    ConfigFields {
        name,
        description: String::new(),
        start_date: None,
        end_date: None,
        initial_capital: 10_000.0,
        commission: 0.001,
        slippage: 0.0005,
        max_position_size: 1.0,
        stop_loss: None,
        take_profit: None,
        data_source: "local".into(),
        timeframe: "1d".into(),
        benchmark_symbol: "SPY".into(),
        is_template: false,
    }
}

/// The writable fields; read-only ones a client echoes back are ignored.
#[derive(Debug, Deserialize)]
struct ConfigChanges {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    start_date: Patch<String>,
    #[serde(default)]
    end_date: Patch<String>,
    initial_capital: Option<f64>,
    commission: Option<f64>,
    slippage: Option<f64>,
    max_position_size: Option<f64>,
    #[serde(default)]
    stop_loss: Patch<f64>,
    #[serde(default)]
    take_profit: Patch<f64>,
    data_source: Option<String>,
    timeframe: Option<String>,
    benchmark_symbol: Option<String>,
    is_template: Option<bool>,
}

impl ConfigChanges {
    fn apply(self, fields: &mut ConfigFields) {
        let trimmed = |value: String| value.trim().to_string();
        if let Some(value) = self.name {
            fields.name = trimmed(value);
        }
        if let Some(value) = self.description {
            fields.description = value;
        }
        self.start_date.apply_to(&mut fields.start_date);
        self.end_date.apply_to(&mut fields.end_date);
        fields.initial_capital = self.initial_capital.unwrap_or(fields.initial_capital);
        fields.commission = self.commission.unwrap_or(fields.commission);
        fields.slippage = self.slippage.unwrap_or(fields.slippage);
        fields.max_position_size = self.max_position_size.unwrap_or(fields.max_position_size);
        self.stop_loss.apply_to(&mut fields.stop_loss);
        self.take_profit.apply_to(&mut fields.take_profit);
        if let Some(value) = self.data_source {
            fields.data_source = trimmed(value);
        }
        if let Some(value) = self.timeframe {
            fields.timeframe = trimmed(value);
        }
        if let Some(value) = self.benchmark_symbol {
            fields.benchmark_symbol = trimmed(value).to_uppercase();
        }
        fields.is_template = self.is_template.unwrap_or(fields.is_template);
    }
}

/// Every field checked, each error named by its field.
pub fn check_config(fields: &ConfigFields) -> ApiResult<()> {
    let mut errors = FieldErrors::new();
    if fields.name.is_empty() {
        errors.add("name", "This field may not be blank.");
    }
    errors.check_length("name", &fields.name, 200);
    let mut dates = Vec::new();
    for (field, value) in [("start_date", &fields.start_date), ("end_date", &fields.end_date)] {
        if let Some(value) = value {
            match NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
                Ok(date) => dates.push(date),
                Err(_) => errors.add(field, "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."),
            }
        }
    }
    if let [start, end] = dates[..] {
        if start >= end {
            errors.add("end_date", "end_date must be after start_date.");
        }
    }
    let mut range = |field: &str, value: f64, ok: bool, rule: &str| {
        if !(value.is_finite() && ok) {
            errors.add(field, format!("Ensure this value is {rule}."));
        }
    };
    range("initial_capital", fields.initial_capital, fields.initial_capital > 0.0, "greater than 0");
    range("commission", fields.commission, (0.0..1.0).contains(&fields.commission), "from 0 up to 1");
    range("slippage", fields.slippage, (0.0..1.0).contains(&fields.slippage), "from 0 up to 1");
    let size = fields.max_position_size;
    range("max_position_size", size, size > 0.0 && size <= 1.0, "above 0 and at most 1");
    for (field, value) in [("stop_loss", fields.stop_loss), ("take_profit", fields.take_profit)] {
        if let Some(value) = value {
            range(field, value, value > 0.0 && value <= 1.0, "above 0 and at most 1");
        }
    }
    errors.check_length("data_source", &fields.data_source, 50);
    errors.check_length("timeframe", &fields.timeframe, 10);
    errors.check_length("benchmark_symbol", &fields.benchmark_symbol, 20);
    errors.into_result()
}

/// A config as `configs/` would take it, checked without saving (the
/// production API's `validate-config/`).
pub fn check_config_value(config: &Value) -> ApiResult<()> {
    let changes: ConfigChanges = serde_json::from_value(config.clone())
        .map_err(|err| ApiError::Validation(FieldErrors::single("config", format!("Invalid config: {err}"))))?;
    if changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = default_config(String::new());
    changes.apply(&mut fields);
    check_config(&fields)
}

async fn list_configs(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<ConfigView>>> {
    let (count, rows) = state.store.configs_page(user.user_id, false, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(ConfigView::from).collect())?))
}

async fn config_templates(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<ConfigView>>> {
    let (count, rows) = state.store.configs_page(user.user_id, true, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(ConfigView::from).collect())?))
}

async fn create_config(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<ConfigChanges>,
) -> ApiResult<(StatusCode, Json<ConfigView>)> {
    if changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = default_config(String::new());
    changes.apply(&mut fields);
    check_config(&fields)?;
    let row = state.store.create_config(user.user_id, &fields).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn owned_config(state: &AppState, user: &AuthUser, id: i64) -> ApiResult<ConfigRow> {
    state.store.config(id, user.user_id).await?.ok_or(ApiError::NotFound)
}

async fn get_config(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<ConfigView>> {
    Ok(Json(owned_config(&state, &user, id).await?.into()))
}

async fn change_config(state: &AppState, user: &AuthUser, id: i64, changes: ConfigChanges) -> ApiResult<ConfigView> {
    let current = owned_config(state, user, id).await?;
    let mut fields = ConfigFields::from(&current);
    changes.apply(&mut fields);
    check_config(&fields)?;
    Ok(state.store.update_config(id, user.user_id, &fields).await?.ok_or(ApiError::NotFound)?.into())
}

async fn replace_config(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<ConfigChanges>,
) -> ApiResult<Json<ConfigView>> {
    if changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    Ok(Json(change_config(&state, &user, id, changes).await?))
}

async fn update_config(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<ConfigChanges>,
) -> ApiResult<Json<ConfigView>> {
    Ok(Json(change_config(&state, &user, id, changes).await?))
}

async fn delete_config(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<StatusCode> {
    if state.store.delete_config(id, user.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// A completed run's result, in the old `BacktestResult` names (its id
/// is the run's).
fn result_view(run: &BacktestRunRow) -> Option<Value> {
    let result = run.result.as_ref().filter(|_| run.status == store::backtests::COMPLETED)?;
    let first = &result.0["results"][0];
    let metrics = &first["metrics"];
    let trades = first["trades"].as_array().cloned().unwrap_or_default();
    let pnl = |trade: &Value| trade["pnl"].as_f64().unwrap_or(0.0);
    let returns: Vec<f64> = trades.iter().filter_map(|t| t["return_pct"].as_f64()).collect();
    let winners: Vec<f64> = returns.iter().copied().filter(|r| *r > 0.0).collect();
    let losers: Vec<f64> = returns.iter().copied().filter(|r| *r <= 0.0).collect();
    let mean = |values: &[f64]| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    Some(json!({
        "id": run.id,
        "run": run.id,
        "run_id": run.run_id,
        "symbol": first["symbol"],
        "final_portfolio_value": metrics["equity_final"],
        "total_return_pct": metrics["return_pct"],
        "annualized_return_pct": metrics["return_ann"],
        "volatility": metrics["volatility_ann"],
        "sharpe_ratio": metrics["sharpe_ratio"],
        "sortino_ratio": metrics["sortino_ratio"],
        "calmar_ratio": metrics["calmar_ratio"],
        "max_drawdown_pct": metrics["max_drawdown"],
        "total_trades": trades.len(),
        "winning_trades": trades.iter().filter(|t| pnl(t) > 0.0).count(),
        "losing_trades": trades.iter().filter(|t| pnl(t) <= 0.0).count(),
        "win_rate_pct": metrics["win_rate"],
        "avg_trade_return_pct": metrics["avg_trade"],
        "avg_winning_trade_pct": mean(&winners),
        "avg_losing_trade_pct": mean(&losers),
        "largest_winning_trade_pct": metrics["best_trade"],
        "largest_losing_trade_pct": metrics["worst_trade"],
        "profit_factor": metrics["profit_factor"],
        "benchmark_return_pct": metrics["buy_hold_return"],
        "portfolio_values": first["equity_curve"],
        "symbol_results": result.0["results"].as_array().map(|all| all.iter().map(|s| json!({ "symbol": s["symbol"], "metrics": s["metrics"] })).collect::<Vec<_>>()),
        "created_at": run.completed_at.map(|at| api_core::time::iso8601(&at)),
    }))
}

async fn list_results(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<Value>>> {
    let filter = RunFilter { status: Some(store::backtests::COMPLETED.into()), ..RunFilter::default() };
    let (count, rows) = state.store.backtest_runs_page(user.user_id, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.iter().filter_map(result_view).collect())?))
}

async fn get_result(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let run = state.store.backtest_run(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(result_view(&run).ok_or(ApiError::NotFound)?))
}

#[derive(Debug, Serialize)]
struct TradeView {
    id: i64,
    run: i64,
    run_id: String,
    symbol: String,
    trade_type: String,
    status: String,
    entry_date: String,
    entry_price: f64,
    exit_date: Option<String>,
    exit_price: Option<f64>,
    quantity: f64,
    pnl: Option<f64>,
    pnl_pct: Option<f64>,
    holding_period: Option<String>,
}

impl From<TradeRow> for TradeView {
    fn from(row: TradeRow) -> Self {
        Self {
            id: row.id,
            run: row.run_id,
            run_id: row.run_ref,
            symbol: row.symbol,
            trade_type: row.trade_type,
            status: row.status,
            entry_date: row.entry_date,
            entry_price: row.entry_price,
            exit_date: row.exit_date,
            exit_price: row.exit_price,
            quantity: row.quantity,
            pnl: row.pnl,
            pnl_pct: row.pnl_pct,
            holding_period: row.holding_period,
        }
    }
}

/// An integer filter, or a 400 naming it.
fn integer(field: &str, value: &str) -> ApiResult<i64> {
    value.trim().parse().map_err(|_| ApiError::Validation(FieldErrors::single(field, "A valid integer is required.")))
}

async fn list_trades(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    page: PageRequest,
) -> ApiResult<Json<Page<TradeView>>> {
    let mut filter = TradeFilter::default();
    for (key, value) in query_pairs(query.as_deref()) {
        let value = value.trim().to_string();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            // The run's integer id, or its `bt_…` run_id.
            "run_id" | "run" => {
                // A run_id of no run of theirs matches nothing (no run has id -1).
                let run = if value.starts_with("bt_") {
                    run_by_ref(&state, user.user_id, &value).await?.unwrap_or(-1)
                } else {
                    integer(&key, &value)?
                };
                filter.run_id = Some(run);
            }
            "symbol" => filter.symbol = Some(value.to_uppercase()),
            "trade_type" => filter.trade_type = Some(value.to_lowercase()),
            "status" => filter.status = Some(value.to_lowercase()),
            _ => {}
        }
    }
    let (count, rows) = state.store.trades_page(user.user_id, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(TradeView::from).collect())?))
}

/// The id of the owner's run with this `bt_…` run_id.
async fn run_by_ref(state: &AppState, owner: i64, run_ref: &str) -> ApiResult<Option<i64>> {
    Ok(state.store.backtest_run_by_ref(run_ref, owner).await?.map(|run| run.id))
}

async fn get_trade(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<TradeView>> {
    Ok(Json(state.store.trade(id, user.user_id).await?.ok_or(ApiError::NotFound)?.into()))
}

#[derive(Debug, Serialize)]
struct AlertView {
    id: i64,
    run: i64,
    run_id: String,
    alert_type: String,
    title: String,
    message: String,
    symbol: Option<String>,
    context_data: Value,
    #[serde(serialize_with = "api_core::time::serialize")]
    timestamp: DateTime<Utc>,
}

impl From<AlertRow> for AlertView {
    fn from(row: AlertRow) -> Self {
        Self {
            id: row.id,
            run: row.run_id,
            run_id: row.run_ref,
            alert_type: row.alert_type,
            title: row.title,
            message: row.message,
            symbol: row.symbol,
            context_data: row.context_data.0,
            timestamp: row.created_at,
        }
    }
}

async fn list_alerts(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<AlertView>>> {
    let (count, rows) = state.store.alerts_page(user.user_id, None, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(AlertView::from).collect())?))
}

async fn get_alert(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<AlertView>> {
    Ok(Json(state.store.alert(id, user.user_id).await?.ok_or(ApiError::NotFound)?.into()))
}

/// A run's alerts, as a plain list (the old action's shape).
async fn run_alerts(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Vec<AlertView>>> {
    let run = state.store.backtest_run(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let (_, rows) = state.store.alerts_page(user.user_id, Some(run.id), 1000, 0).await?;
    Ok(Json(rows.into_iter().map(AlertView::from).collect()))
}

/// The runs list's filters (`?status`, `?strategy_id`, `?symbols=`
/// repeatable), read from a query string.
pub async fn run_filter(query: Option<&str>) -> ApiResult<RunFilter> {
    let mut filter = RunFilter::default();
    for (key, value) in query_pairs(query) {
        let value = value.trim().to_string();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "status" => filter.status = Some(value.to_lowercase()),
            "strategy_id" | "strategy" => filter.strategy_id = Some(integer(&key, &value)?),
            "symbols" | "symbol" => filter.symbols.push(crate::data::normalise_symbol(&value)?),
            _ => {}
        }
    }
    Ok(filter)
}

#[derive(Debug, Deserialize)]
struct SearchRequest {
    strategy_id: Option<i64>,
    status: Option<String>,
    start_date_from: Option<String>,
    start_date_to: Option<String>,
    #[serde(default)]
    symbols: Vec<String>,
    /// The old API searched anyone's runs; here it is always the caller's.
    #[allow(dead_code, reason = "accepted for the old clients that send it")]
    created_by: Option<Value>,
}

pub(crate) fn day_start(field: &str, value: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|text| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                .map_err(|_| ApiError::Validation(FieldErrors::single(field, "Date has wrong format. Use YYYY-MM-DD.")))
        })
        .transpose()
}

/// The most runs one search returns.
const SEARCH_LIMIT: i64 = 200;

async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<SearchRequest>,
) -> ApiResult<Json<Value>> {
    let mut filter = RunFilter {
        status: request.status.map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()),
        strategy_id: request.strategy_id,
        created_from: day_start("start_date_from", request.start_date_from.as_deref())?,
        // Through the end of that day.
        created_until: day_start("start_date_to", request.start_date_to.as_deref())?
            .map(|day| day + chrono::Duration::days(1)),
        ..RunFilter::default()
    };
    for symbol in &request.symbols {
        filter.symbols.push(crate::data::normalise_symbol(symbol)?);
    }
    let (count, rows) = state.store.backtest_runs_page(user.user_id, &filter, SEARCH_LIMIT, 0).await?;
    let runs: Vec<RunView> = rows.iter().map(RunView::from).collect();
    Ok(Json(json!({ "runs": runs, "count": count })))
}

async fn health(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let (runs, _) = state.store.backtest_runs_page(user.user_id, &RunFilter::default(), 1, 0).await?;
    let configs = state.store.configs_count(user.user_id).await?;
    let accepting = crate::accepting(&state).await;
    let runner = match &accepting {
        Ok(()) => json!(true),
        Err(ApiError::Unavailable(_)) => json!(false),
        Err(_) => Value::Null,
    };
    Ok(Json(json!({
        "status": if accepting.is_ok() { "healthy" } else { "degraded" },
        "database": "connected",
        "runs_count": runs,
        "configs_count": configs,
        "runner_available": runner,
        "runner": match accepting { Ok(()) => Value::Null, Err(err) => json!(err.public_message()) },
        "timestamp": api_core::time::iso8601(&Utc::now()),
    })))
}
