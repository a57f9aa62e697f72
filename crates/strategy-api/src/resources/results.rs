//! `/api/strategies/backtest-results/`: each strategy's latest backtest
//! result (one row per strategy, looked up by `strategy_id`). Every
//! completed sandbox run on a strategy replaces it; `save_result/` lets a
//! client write one itself.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::generated::{LatestResult, LatestResultRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/backtest-results", get(list))
        .route("/api/strategies/backtest-results/by_strategy", get(by_strategy))
        .route("/api/strategies/backtest-results/save_result", post(save_result))
        .route("/api/strategies/backtest-results/{id}", get(detail))
}

#[derive(Debug, Serialize)]
pub struct LatestResultView {
    pub id: i64,
    pub strategy: i64,
    pub strategy_id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub period: String,
    pub initial_balance: f64,
    pub commission: f64,
    pub total_trades: i32,
    pub winning_trades: i32,
    pub losing_trades: i32,
    pub win_rate: f64,
    pub net_profit: f64,
    pub total_return_pct: f64,
    pub final_equity: Option<f64>,
    pub max_drawdown: f64,
    pub sharpe_ratio: Option<f64>,
    pub trades: Value,
    pub equity_curve: Value,
    pub run_id: Option<String>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<LatestResultRow> for LatestResultView {
    fn from(row: LatestResultRow) -> Self {
        Self {
            id: row.id,
            strategy: row.strategy_id,
            strategy_id: row.strategy_id,
            symbol: row.symbol,
            timeframe: row.timeframe,
            period: row.period,
            initial_balance: row.initial_balance,
            commission: row.commission,
            total_trades: row.total_trades,
            winning_trades: row.winning_trades,
            losing_trades: row.losing_trades,
            win_rate: row.win_rate,
            net_profit: row.net_profit,
            total_return_pct: row.total_return_pct,
            final_equity: row.final_equity,
            max_drawdown: row.max_drawdown,
            sharpe_ratio: row.sharpe_ratio,
            trades: row.trades.0,
            equity_curve: row.equity_curve.0,
            run_id: row.run_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<LatestResultView>>> {
    let (count, rows) = state.store.latest_results_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(LatestResultView::from).collect())?))
}

/// Looked up by the strategy's id, as the old viewset did.
async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(strategy_id): ResourceId,
) -> ApiResult<Json<LatestResultView>> {
    let row = state.store.latest_result(strategy_id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

#[derive(Debug, Deserialize)]
struct ByStrategyQuery {
    strategy_id: Option<String>,
}

async fn by_strategy(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ByStrategyQuery>,
) -> ApiResult<Response> {
    let Some(text) = query.strategy_id.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(ApiError::bad_request("strategy_id query parameter is required"));
    };
    let strategy_id: i64 = text
        .parse()
        .map_err(|_| ApiError::Validation(FieldErrors::single("strategy_id", "A valid integer is required.")))?;
    Ok(match state.store.latest_result(strategy_id, user.user_id).await? {
        Some(row) => Json(LatestResultView::from(row)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "No backtest result found for this strategy", "strategy_id": strategy_id })),
        )
            .into_response(),
    })
}

#[derive(Debug, Deserialize)]
struct SaveResultRequest {
    strategy_id: Option<i64>,
    symbol: Option<String>,
    timeframe: Option<String>,
    period: Option<String>,
    initial_balance: Option<f64>,
    commission: Option<f64>,
    total_trades: Option<i32>,
    winning_trades: Option<i32>,
    losing_trades: Option<i32>,
    win_rate: Option<f64>,
    net_profit: Option<f64>,
    total_return_pct: Option<f64>,
    final_equity: Option<f64>,
    max_drawdown: Option<f64>,
    sharpe_ratio: Option<f64>,
    trades: Option<Value>,
    equity_curve: Option<Value>,
}

/// Upserts the strategy's one row, with the old model's defaults.
async fn save_result(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<SaveResultRequest>,
) -> ApiResult<Json<LatestResultView>> {
    let Some(strategy_id) = request.strategy_id else {
        return Err(ApiError::Validation(FieldErrors::single("strategy_id", "This field is required.")));
    };
    let mut errors = FieldErrors::new();
    let text = |value: &Option<String>, field: &str, default: &str, max: usize, errors: &mut FieldErrors| {
        let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty()).unwrap_or(default).to_string();
        errors.check_length(field, &value, max);
        value
    };
    let symbol = text(&request.symbol, "symbol", "AAPL", 20, &mut errors).to_uppercase();
    let timeframe = text(&request.timeframe, "timeframe", "1d", 10, &mut errors);
    let period = text(&request.period, "period", "1y", 10, &mut errors);
    let numbers = [
        ("initial_balance", request.initial_balance),
        ("commission", request.commission),
        ("win_rate", request.win_rate),
        ("net_profit", request.net_profit),
        ("total_return_pct", request.total_return_pct),
        ("final_equity", request.final_equity),
        ("max_drawdown", request.max_drawdown),
        ("sharpe_ratio", request.sharpe_ratio),
    ];
    for (field, value) in numbers {
        if value.is_some_and(|v| !v.is_finite()) {
            errors.add(field, "A valid number is required.");
        }
    }
    for (field, value) in [
        ("total_trades", request.total_trades),
        ("winning_trades", request.winning_trades),
        ("losing_trades", request.losing_trades),
    ] {
        if value.is_some_and(|n| n < 0) {
            errors.add(field, "Ensure this value is greater than or equal to 0.");
        }
    }
    for (field, value) in [("trades", &request.trades), ("equity_curve", &request.equity_curve)] {
        if value.as_ref().is_some_and(|v| !v.is_array()) {
            errors.add(field, "Expected a list.");
        }
    }
    errors.into_result()?;
    state.store.strategy(strategy_id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let result = LatestResult {
        symbol,
        timeframe,
        period,
        initial_balance: request.initial_balance.unwrap_or(10_000.0),
        commission: request.commission.unwrap_or(0.001),
        total_trades: request.total_trades.unwrap_or(0),
        winning_trades: request.winning_trades.unwrap_or(0),
        losing_trades: request.losing_trades.unwrap_or(0),
        win_rate: request.win_rate.unwrap_or(0.0),
        net_profit: request.net_profit.unwrap_or(0.0),
        total_return_pct: request.total_return_pct.unwrap_or(0.0),
        final_equity: request.final_equity,
        max_drawdown: request.max_drawdown.unwrap_or(0.0),
        sharpe_ratio: request.sharpe_ratio,
        trades: request.trades.unwrap_or_else(|| json!([])),
        equity_curve: request.equity_curve.unwrap_or_else(|| json!([])),
        run_id: None,
    };
    Ok(Json(state.store.save_latest_result(user.user_id, strategy_id, &result).await?.into()))
}
