//! Read-only records of what ran over a strategy:
//! `/api/strategies/validations/` (written by validation runs: the
//! rule-based validator behind `*_strategy_with_ai`, and the static checks
//! of generated code) and `/api/strategies/performance/` (written by
//! backtests, which come later). Lists take `?strategy=<id>`.

use api_core::{ApiError, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::generated::{PerformanceRow, ValidationRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/validations", get(validations))
        .route("/api/strategies/validations/{id}", get(validation))
        .route("/api/strategies/performance", get(performances))
        .route("/api/strategies/performance/{id}", get(performance))
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    strategy: Option<String>,
}

impl RunsQuery {
    fn strategy_id(&self) -> ApiResult<Option<i64>> {
        match self.strategy.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| ApiError::Validation(FieldErrors::single("strategy", "A valid integer is required."))),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ValidationView {
    pub id: i64,
    pub strategy: i64,
    pub validation_type: String,
    pub status: String,
    pub errors: Value,
    pub warnings: Value,
    pub details: Value,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub validated_at: chrono::DateTime<chrono::Utc>,
}

impl From<ValidationRow> for ValidationView {
    fn from(row: ValidationRow) -> Self {
        Self {
            id: row.id,
            strategy: row.strategy_id,
            validation_type: row.validation_type,
            status: row.status,
            errors: row.errors.0,
            warnings: row.warnings.0,
            details: row.details.0,
            validated_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PerformanceView {
    pub id: i64,
    pub strategy: i64,
    pub symbol: String,
    pub timeframe: String,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub period_start: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub period_end: Option<chrono::DateTime<chrono::Utc>>,
    pub initial_capital: Option<f64>,
    pub final_value: Option<f64>,
    pub total_return: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub win_rate: Option<f64>,
    pub total_trades: Option<i32>,
    pub metrics: Value,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<PerformanceRow> for PerformanceView {
    fn from(row: PerformanceRow) -> Self {
        Self {
            id: row.id,
            strategy: row.strategy_id,
            symbol: row.symbol,
            timeframe: row.timeframe,
            period_start: row.period_start,
            period_end: row.period_end,
            initial_capital: row.initial_capital,
            final_value: row.final_value,
            total_return: row.total_return,
            sharpe_ratio: row.sharpe_ratio,
            max_drawdown: row.max_drawdown,
            win_rate: row.win_rate,
            total_trades: row.total_trades,
            metrics: row.metrics.0,
            created_at: row.created_at,
        }
    }
}

async fn validations(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<RunsQuery>,
    page: PageRequest,
) -> ApiResult<Json<Page<ValidationView>>> {
    let strategy = query.strategy_id()?;
    let (count, rows) = state.store.validations_page(user.user_id, strategy, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(ValidationView::from).collect())?))
}

async fn validation(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<ValidationView>> {
    let row = state.store.validation(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn performances(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<RunsQuery>,
    page: PageRequest,
) -> ApiResult<Json<Page<PerformanceView>>> {
    let strategy = query.strategy_id()?;
    let (count, rows) = state.store.performance_page(user.user_id, strategy, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(PerformanceView::from).collect())?))
}

async fn performance(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<PerformanceView>> {
    let row = state.store.performance(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}
