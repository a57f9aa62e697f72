//! `/api/data/`: symbols, stored market data, fetch requests, indicators
//! and their computed values. Data is shared by every user; writing
//! symbols and bars by hand is for administrators. A fetch
//! (`api/fetch_data/`) goes to the configured source (`MARKET_DATA_SOURCE`),
//! costs the upstream, and so is counted per user
//! (`MARKET_FETCHES_PER_HOUR`); what it brings is stored once and reused.
//! A symbol the caller uploaded (`/api/backtests/data/`) is answered from
//! their own series instead, which stays theirs.

use std::time::Duration;

use api_core::pagination::query_pairs;
use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use market_data::indicators::{self, IndicatorError};
use market_data::{Bar, SourceError};

use crate::records::day_start;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::market::{BarFilter, BarRow, DataRequestRow, IndicatorValueRow, NewBar, SymbolFields, SymbolRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/data/symbols", get(list_symbols).post(create_symbol))
        .route("/api/data/symbols/bulk_create", post(bulk_create))
        .route("/api/data/symbols/search", get(search_symbols))
        .route("/api/data/symbols/{id}", get(get_symbol).put(replace_symbol).patch(update_symbol).delete(delete_symbol))
        .route("/api/data/market-data", get(list_bars))
        .route("/api/data/market-data/{id}", get(get_bar).delete(delete_bar))
        .route("/api/data/data-requests", get(list_requests).post(fetch_data))
        .route("/api/data/data-requests/{id}", get(get_request))
        .route("/api/data/indicators", get(list_indicators))
        .route("/api/data/indicators/categories", get(indicator_categories))
        .route("/api/data/indicators/{name}", get(get_indicator))
        .route("/api/data/indicator-data", get(list_indicator_values))
        .route("/api/data/indicator-data/{id}", get(get_indicator_value))
        .route("/api/data/api/fetch_data", post(fetch_data))
        .route("/api/data/api/calculate_indicator", post(calculate_indicator))
        .route("/api/data/api/available_indicators", get(available_indicators))
        .route("/api/data/api/health", get(health))
}

#[derive(Debug, Serialize)]
struct SymbolView {
    id: i64,
    symbol: String,
    name: String,
    exchange: String,
    sector: String,
    industry: String,
    is_active: bool,
    #[serde(serialize_with = "api_core::time::serialize")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<SymbolRow> for SymbolView {
    fn from(row: SymbolRow) -> Self {
        Self {
            id: row.id,
            symbol: row.symbol,
            name: row.name,
            exchange: row.exchange,
            sector: row.sector,
            industry: row.industry,
            is_active: row.is_active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A symbol's writable fields.
#[derive(Debug, Default, Deserialize)]
struct SymbolChanges {
    symbol: Option<String>,
    name: Option<String>,
    exchange: Option<String>,
    sector: Option<String>,
    industry: Option<String>,
    is_active: Option<bool>,
}

impl SymbolChanges {
    fn apply(self, fields: &mut SymbolFields) -> ApiResult<()> {
        if let Some(symbol) = self.symbol {
            fields.symbol = symbol_name("symbol", &symbol)?;
        }
        let mut errors = FieldErrors::new();
        for (field, value, target) in [
            ("name", self.name, &mut fields.name),
            ("exchange", self.exchange, &mut fields.exchange),
            ("sector", self.sector, &mut fields.sector),
            ("industry", self.industry, &mut fields.industry),
        ] {
            if let Some(value) = value {
                errors.check_length(field, value.trim(), 200);
                *target = value.trim().to_string();
            }
        }
        fields.is_active = self.is_active.unwrap_or(fields.is_active);
        errors.into_result()
    }
}

/// The old rule: alphanumeric, upper-cased (with `.` and `-`, as tickers have).
fn symbol_name(field: &str, text: &str) -> ApiResult<String> {
    crate::data::normalise_symbol(text)
        .map_err(|_| ApiError::Validation(FieldErrors::single(field, "Letters, digits, '.' or '-', at most 20.")))
}

fn symbol_taken(err: store::StoreError) -> ApiError {
    match err {
        store::StoreError::UniqueViolation => {
            ApiError::Validation(FieldErrors::single("symbol", "A symbol with this name already exists."))
        }
        other => other.into(),
    }
}

async fn list_symbols(
    State(state): State<AppState>,
    _user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<SymbolView>>> {
    let (count, rows) = state.store.market_symbols_page(None, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(SymbolView::from).collect())?))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn search_symbols(
    State(state): State<AppState>,
    _user: AuthUser,
    Query(query): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(ApiError::bad_request("q query parameter is required"));
    }
    let (count, rows) = state.store.market_symbols_page(Some(q.trim()), 50, 0).await?;
    let results: Vec<SymbolView> = rows.into_iter().map(SymbolView::from).collect();
    Ok(Json(json!({ "query": q.trim(), "count": count, "results": results })))
}

async fn create_symbol(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<SymbolChanges>,
) -> ApiResult<(StatusCode, Json<SymbolView>)> {
    user.require_admin(&state).await?;
    if changes.symbol.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("symbol", "This field is required.")));
    }
    let mut fields = SymbolFields { is_active: true, ..SymbolFields::default() };
    changes.apply(&mut fields)?;
    let row = state.store.create_symbol(&fields).await.map_err(symbol_taken)?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[derive(Debug, Deserialize)]
struct BulkCreateRequest {
    symbols: Option<Vec<Value>>,
}

/// `{symbols: [str | {symbol, name, …}]}`: the new ones, 201.
async fn bulk_create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<BulkCreateRequest>,
) -> ApiResult<(StatusCode, Json<Vec<SymbolView>>)> {
    user.require_admin(&state).await?;
    let Some(items) = request.symbols.filter(|items| !items.is_empty()) else {
        return Err(ApiError::Validation(FieldErrors::single("symbols", "A non-empty list is required.")));
    };
    if items.len() > 1000 {
        return Err(ApiError::Validation(FieldErrors::single("symbols", "At most 1000 at once.")));
    }
    let mut all = Vec::new();
    for (n, item) in items.into_iter().enumerate() {
        let changes = match item {
            Value::String(symbol) => SymbolChanges { symbol: Some(symbol), ..SymbolChanges::default() },
            object @ Value::Object(_) => serde_json::from_value(object)
                .map_err(|err| ApiError::Validation(FieldErrors::single(format!("symbols[{n}]"), err.to_string())))?,
            _ => {
                return Err(ApiError::Validation(FieldErrors::single(
                    format!("symbols[{n}]"),
                    "A symbol or an object.",
                )))
            }
        };
        let mut fields = SymbolFields { is_active: true, ..SymbolFields::default() };
        changes.apply(&mut fields).map_err(|_| {
            ApiError::Validation(FieldErrors::single(
                format!("symbols[{n}]"),
                "Letters, digits, '.' or '-', at most 20.",
            ))
        })?;
        if fields.symbol.is_empty() {
            return Err(ApiError::Validation(FieldErrors::single(format!("symbols[{n}]"), "symbol is required.")));
        }
        all.push(fields);
    }
    let mut created = Vec::new();
    for fields in all {
        match state.store.create_symbol(&fields).await {
            Ok(row) => created.push(SymbolView::from(row)),
            // Already there: the old action answered with the new ones only.
            Err(store::StoreError::UniqueViolation) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok((StatusCode::CREATED, Json(created)))
}

async fn get_symbol(
    State(state): State<AppState>,
    _user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<SymbolView>> {
    Ok(Json(state.store.market_symbol(id).await?.ok_or(ApiError::NotFound)?.into()))
}

async fn change_symbol(state: &AppState, user: AuthUser, id: i64, changes: SymbolChanges) -> ApiResult<SymbolView> {
    user.require_admin(state).await?;
    let current = state.store.market_symbol(id).await?.ok_or(ApiError::NotFound)?;
    let mut fields = SymbolFields::from(&current);
    changes.apply(&mut fields)?;
    Ok(state.store.update_symbol(id, &fields).await.map_err(symbol_taken)?.ok_or(ApiError::NotFound)?.into())
}

async fn replace_symbol(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<SymbolChanges>,
) -> ApiResult<Json<SymbolView>> {
    if changes.symbol.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("symbol", "This field is required.")));
    }
    Ok(Json(change_symbol(&state, user, id, changes).await?))
}

async fn update_symbol(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<SymbolChanges>,
) -> ApiResult<Json<SymbolView>> {
    Ok(Json(change_symbol(&state, user, id, changes).await?))
}

async fn delete_symbol(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<StatusCode> {
    user.require_admin(&state).await?;
    if state.store.delete_symbol(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Debug, Serialize)]
struct BarView {
    id: i64,
    symbol: String,
    timestamp: String,
    interval: String,
    open_price: f64,
    high_price: f64,
    low_price: f64,
    close_price: f64,
    volume: Option<f64>,
    adj_close: Option<f64>,
}

impl From<BarRow> for BarView {
    fn from(row: BarRow) -> Self {
        Self {
            id: row.id,
            symbol: row.symbol,
            timestamp: api_core::time::iso8601(&row.ts),
            interval: row.bar_interval,
            open_price: row.open,
            high_price: row.high,
            low_price: row.low,
            close_price: row.close,
            volume: row.volume,
            adj_close: row.adj_close,
        }
    }
}

/// `?symbol`, `?interval`, `?start_date`, `?end_date` (that whole day).
async fn list_bars(
    State(state): State<AppState>,
    _user: AuthUser,
    RawQuery(query): RawQuery,
    page: PageRequest,
) -> ApiResult<Json<Page<BarView>>> {
    let mut filter = BarFilter::default();
    for (key, value) in query_pairs(query.as_deref()) {
        let value = value.trim().to_string();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "symbol" => filter.symbol = Some(symbol_name("symbol", &value)?),
            "interval" => filter.interval = Some(value),
            "start_date" => filter.from = day_start("start_date", Some(&value))?,
            "end_date" => {
                filter.until = day_start("end_date", Some(&value))?.map(|day| day + chrono::Duration::days(1));
            }
            _ => {}
        }
    }
    let (count, rows) = state.store.bars_page(&filter, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(BarView::from).collect())?))
}

async fn get_bar(
    State(state): State<AppState>,
    _user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<BarView>> {
    Ok(Json(state.store.bar(id).await?.ok_or(ApiError::NotFound)?.into()))
}

async fn delete_bar(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<StatusCode> {
    user.require_admin(&state).await?;
    if state.store.delete_bar(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Debug, Serialize)]
struct RequestView {
    id: i64,
    request_id: String,
    symbol: String,
    period: String,
    interval: String,
    status: String,
    source: String,
    records_saved: i32,
    error_message: Option<String>,
    requested_by: i64,
    #[serde(serialize_with = "api_core::time::serialize")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    completed_at: Option<chrono::DateTime<Utc>>,
}

impl From<DataRequestRow> for RequestView {
    fn from(row: DataRequestRow) -> Self {
        Self {
            id: row.id,
            request_id: row.request_id,
            symbol: row.symbol,
            period: row.period,
            interval: row.bar_interval,
            status: row.status,
            source: row.source,
            records_saved: row.records_saved,
            error_message: row.error_message,
            requested_by: row.user_id,
            created_at: row.created_at,
            completed_at: row.completed_at,
        }
    }
}

async fn list_requests(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<RequestView>>> {
    let (count, rows) = state.store.data_requests_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(RequestView::from).collect())?))
}

async fn get_request(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<RequestView>> {
    Ok(Json(state.store.data_request(id, user.user_id).await?.ok_or(ApiError::NotFound)?.into()))
}

fn default_period() -> String {
    "1y".into()
}

fn default_interval() -> String {
    "1d".into()
}

#[derive(Debug, Deserialize)]
struct FetchRequest {
    symbol: Option<String>,
    #[serde(default = "default_period")]
    period: String,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default)]
    indicators: Vec<Value>,
}

const FETCH_WINDOW: Duration = Duration::from_secs(3600);
/// Bars a fetch answer shows as its sample.
const SAMPLE_BARS: usize = 5;

fn checked_choice(field: &str, value: &str, choices: &[&str]) -> ApiResult<String> {
    let value = value.trim().to_string();
    if choices.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(ApiError::Validation(FieldErrors::single(
            field,
            format!("\"{value}\" is not a valid choice: {}.", choices.join(", ")),
        )))
    }
}

pub(crate) fn bar_of(row: &BarRow) -> Bar {
    Bar {
        timestamp: row.ts,
        open: row.open,
        high: row.high,
        low: row.low,
        close: row.close,
        volume: row.volume,
        adj_close: row.adj_close,
    }
}

/// An indicator request: a name, or `{name|indicator, parameters}`.
fn indicator_request(n: usize, item: &Value) -> ApiResult<(String, Value)> {
    match item {
        Value::String(name) => Ok((name.clone(), json!({}))),
        Value::Object(spec) => {
            let name = spec.get("name").or(spec.get("indicator")).and_then(Value::as_str).unwrap_or_default();
            Ok((name.to_string(), spec.get("parameters").cloned().unwrap_or_else(|| json!({}))))
        }
        _ => {
            Err(ApiError::Validation(FieldErrors::single(format!("indicators[{n}]"), "A name or {name, parameters}.")))
        }
    }
}

fn indicator_error(field: &str, err: &IndicatorError) -> ApiError {
    ApiError::Validation(FieldErrors::single(field, err.to_string()))
}

/// Computes `name` over the symbol's stored bars and stores the values:
/// the values, keyed by time, and the parameters used.
async fn compute_and_keep(
    state: &AppState,
    symbol: &SymbolRow,
    interval: &str,
    name: &str,
    parameters: &Value,
    bars: &[BarRow],
    field: &str,
) -> ApiResult<(Vec<Value>, Value)> {
    let series: Vec<Bar> = bars.iter().map(bar_of).collect();
    let (values, used) =
        indicators::calculate(name, parameters, &series).map_err(|err| indicator_error(field, &err))?;
    let kept: Vec<(chrono::DateTime<Utc>, Value)> = bars
        .iter()
        .zip(&values)
        .filter(|(_, value)| !value.is_null())
        .map(|(bar, value)| (bar.ts, value.clone()))
        .collect();
    state.store.save_indicator_values(symbol.id, &name.to_ascii_lowercase(), interval, &used, &kept).await?;
    let timed = bars
        .iter()
        .zip(values)
        .map(|(bar, value)| json!({ "timestamp": api_core::time::iso8601(&bar.ts), "value": value }))
        .collect();
    Ok((timed, used))
}

/// All stored bars of a symbol at an interval, oldest first.
pub(crate) async fn stored_bars(state: &AppState, symbol: &str, interval: &str) -> ApiResult<Vec<BarRow>> {
    let filter = BarFilter { symbol: Some(symbol.into()), interval: Some(interval.into()), ..BarFilter::default() };
    let (_, rows) = state.store.bars_page(&filter, 200_000, 0).await?;
    Ok(rows)
}

/// What one fetch brought and kept.
pub(crate) struct Fetched {
    pub request_id: String,
    pub symbol: SymbolRow,
    pub fetched: usize,
    pub saved: i32,
}

pub(crate) enum FetchFailure {
    /// The source has nothing for the symbol.
    NoData,
    Api(ApiError),
}

impl From<ApiError> for FetchFailure {
    fn from(err: ApiError) -> Self {
        FetchFailure::Api(err)
    }
}

impl From<store::StoreError> for FetchFailure {
    fn from(err: store::StoreError) -> Self {
        FetchFailure::Api(err.into())
    }
}

/// Fetches `symbol` from the configured source, counted against the
/// user's fetches in the hour (they cost the upstream), stores the bars
/// not stored yet and records the request, failed or not.
pub(crate) async fn fetch_and_store(
    state: &AppState,
    user_id: i64,
    symbol: &str,
    period: &str,
    interval: &str,
) -> Result<Fetched, FetchFailure> {
    let bucket = format!("market-fetches:user:{user_id}");
    state
        .throttle
        .hit(&bucket, state.market_fetches_per_hour, FETCH_WINDOW)
        .await
        .map_err(|refusal| ApiError::Throttled { retry_after: refusal.retry_after })?;
    let request_id = format!("req_{:08x}", rand::random::<u32>());
    let bars = match state.market.fetch(symbol, period, interval).await {
        Ok(bars) if !bars.is_empty() => bars,
        Ok(_) | Err(SourceError::UnknownSymbol(_)) => return Err(FetchFailure::NoData),
        Err(SourceError::Unsupported(message)) => {
            return Err(ApiError::Validation(FieldErrors::single("interval", message)).into());
        }
        Err(SourceError::Upstream(message)) => {
            tracing::warn!(%symbol, source = state.market.name(), error = %message, "a market data fetch failed");
            let row = state.store.ensure_symbol(symbol).await?;
            let source = state.market.name();
            state
                .store
                .record_data_request(&request_id, row.id, user_id, period, interval, source, Err(&message))
                .await?;
            return Err(ApiError::Unavailable(format!("the market data source failed: {message}")).into());
        }
    };
    let symbol_row = state.store.ensure_symbol(symbol).await?;
    let new: Vec<NewBar> = bars
        .iter()
        .map(|bar| NewBar {
            ts: bar.timestamp,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            adj_close: bar.adj_close,
        })
        .collect();
    let saved = state.store.save_bars(symbol_row.id, interval, &new).await?;
    let saved = i32::try_from(saved).unwrap_or(i32::MAX);
    let recorded = state
        .store
        .record_data_request(&request_id, symbol_row.id, user_id, period, interval, state.market.name(), Ok(saved))
        .await?;
    tracing::info!(%symbol, source = state.market.name(), fetched = bars.len(), saved, "market data fetched");
    Ok(Fetched { request_id: recorded.request_id, symbol: symbol_row, fetched: bars.len(), saved })
}

/// A user's own series is served at its own interval, as a file source's.
fn check_own_interval(symbol: &str, bars: &[Bar], interval: &str) -> ApiResult<()> {
    match market_data::native_interval(bars).filter(|native| native != interval) {
        Some(native) => Err(ApiError::Validation(FieldErrors::single(
            "interval",
            format!("your {symbol} series has {native} bars; ask for interval {native} (bars are not resampled)"),
        ))),
        None => Ok(()),
    }
}

/// `fetch_data` of a symbol the user uploaded: answered from their own
/// series, which stays theirs (never written to the shared market data)
/// and costs no upstream, so it is not counted as a fetch.
fn fetch_own(
    bars: Vec<Bar>,
    symbol: &str,
    period: &str,
    interval: &str,
    wanted: &[(String, Value)],
) -> ApiResult<Response> {
    check_own_interval(symbol, &bars, interval)?;
    let bars = market_data::within_period(bars, period);
    let mut computed = serde_json::Map::new();
    for (n, (name, parameters)) in wanted.iter().enumerate() {
        let (values, used) = indicators::calculate(name, parameters, &bars)
            .map_err(|err| indicator_error(&format!("indicators[{n}]"), &err))?;
        let recent: Vec<Value> = bars
            .iter()
            .zip(values)
            .rev()
            .take(SAMPLE_BARS)
            .rev()
            .map(|(bar, value)| json!({ "timestamp": api_core::time::iso8601(&bar.timestamp), "value": value }))
            .collect();
        computed.insert(name.to_ascii_lowercase(), json!({ "parameters": used, "latest": recent }));
    }
    let sample: Vec<Value> = bars
        .iter()
        .rev()
        .take(SAMPLE_BARS)
        .rev()
        .map(|bar| {
            json!({
                "symbol": symbol, "timestamp": api_core::time::iso8601(&bar.timestamp), "interval": interval,
                "open_price": bar.open, "high_price": bar.high, "low_price": bar.low, "close_price": bar.close,
                "volume": bar.volume, "adj_close": bar.adj_close,
            })
        })
        .collect();
    Ok(Json(json!({
        "request_id": null,
        "status": "completed",
        "symbol": symbol,
        "period": period,
        "interval": interval,
        "source": "upload",
        "records_fetched": bars.len(),
        "records_saved": 0,
        "total_records": bars.len(),
        "indicators": computed,
        "data_sample": sample,
    }))
    .into_response())
}

/// How long a fetch's bars serve a backtest stream before they are
/// fetched again.
const FRESH_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// A fetch for a stream: an unknown symbol is a 400 naming what the
/// source has.
async fn fetch_for_stream(state: &AppState, user_id: i64, symbol: &str, period: &str, interval: &str) -> ApiResult<()> {
    match fetch_and_store(state, user_id, symbol, period, interval).await {
        Ok(_) => Ok(()),
        Err(FetchFailure::Api(err)) => Err(err),
        Err(FetchFailure::NoData) => {
            let described = state.market.describe();
            let has = match &described["symbols"] {
                Value::Array(symbols) => symbols.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                other => other.as_str().unwrap_or_default().to_string(),
            };
            let has = if has.is_empty() { "no symbols here".to_string() } else { format!("has {has}") };
            Err(ApiError::bad_request_with_details(
                format!("No data found for symbol {symbol}"),
                format!("the {} source {has}", state.market.name()),
            ))
        }
    }
}

/// The bars a live backtest of `symbol` runs on: the user's own series
/// if they uploaded one, else the stored bars, fetched first unless a
/// fetch of the same period and interval is fresh; `period` counted back
/// from the last bar. An unknown symbol is a 400 naming what the source has.
pub(crate) async fn stream_window(
    state: &AppState,
    user_id: i64,
    symbol: &str,
    period: &str,
    interval: &str,
) -> ApiResult<Vec<Bar>> {
    let bars = match crate::data::own_series(state, user_id, symbol).await? {
        Some(bars) => {
            check_own_interval(symbol, &bars, interval)?;
            bars
        }
        None => {
            let fresh =
                state.store.last_fetch(symbol, interval, period).await?.is_some_and(|at| at > Utc::now() - FRESH_FOR);
            if !fresh {
                fetch_for_stream(state, user_id, symbol, period, interval).await?;
            }
            stored_bars(state, symbol, interval).await?.iter().map(bar_of).collect()
        }
    };
    let bars = market_data::within_period(bars, period);
    if bars.len() < 2 {
        return Err(ApiError::bad_request(format!("{symbol} has fewer than 2 bars over {period} at {interval}")));
    }
    Ok(bars)
}

/// Fetches a symbol's bars from the configured source, stores the new
/// ones, and computes the indicators asked for.
async fn fetch_data(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<FetchRequest>,
) -> ApiResult<Response> {
    let Some(symbol) = request.symbol.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Err(ApiError::Validation(FieldErrors::single("symbol", "This field is required.")));
    };
    let symbol = symbol_name("symbol", symbol)?;
    let period = checked_choice("period", &request.period, &market_data::PERIODS)?;
    let interval = checked_choice("interval", &request.interval, &market_data::INTERVALS)?;
    let wanted: Vec<(String, Value)> =
        request.indicators.iter().enumerate().map(|(n, item)| indicator_request(n, item)).collect::<ApiResult<_>>()?;
    for (n, (name, parameters)) in wanted.iter().enumerate() {
        indicators::calculate(name, parameters, &[])
            .map_err(|err| indicator_error(&format!("indicators[{n}]"), &err))?;
    }
    if let Some(bars) = crate::data::own_series(&state, user.user_id, &symbol).await? {
        return fetch_own(bars, &symbol, &period, &interval, &wanted);
    }
    let fetched = match fetch_and_store(&state, user.user_id, &symbol, &period, &interval).await {
        Ok(fetched) => fetched,
        Err(FetchFailure::NoData) => {
            let body = json!({
                "error": format!("No data found for symbol {symbol}"),
                "symbol": symbol,
                "source": state.market.describe(),
            });
            return Ok((StatusCode::NOT_FOUND, Json(body)).into_response());
        }
        Err(FetchFailure::Api(err)) => return Err(err),
    };
    let Fetched { request_id, symbol: symbol_row, fetched, saved } = fetched;
    let stored = stored_bars(&state, &symbol, &interval).await?;
    let mut computed = serde_json::Map::new();
    for (n, (name, parameters)) in wanted.iter().enumerate() {
        let (values, used) =
            compute_and_keep(&state, &symbol_row, &interval, name, parameters, &stored, &format!("indicators[{n}]"))
                .await?;
        let recent: Vec<Value> = values.into_iter().rev().take(SAMPLE_BARS).rev().collect();
        computed.insert(name.to_ascii_lowercase(), json!({ "parameters": used, "latest": recent }));
    }
    let sample: Vec<BarView> = stored.iter().rev().take(SAMPLE_BARS).rev().cloned().map(BarView::from).collect();
    Ok(Json(json!({
        "request_id": request_id,
        "status": "completed",
        "symbol": symbol,
        "period": period,
        "interval": interval,
        "source": state.market.name(),
        "records_fetched": fetched,
        "records_saved": saved,
        "total_records": stored.len(),
        "indicators": computed,
        "data_sample": sample,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct CalculateRequest {
    symbol: Option<String>,
    indicator: Option<String>,
    #[serde(default)]
    parameters: Value,
    #[serde(default = "default_period")]
    period: String,
    #[serde(default = "default_interval")]
    interval: String,
}

/// An indicator over a symbol's stored bars (fetch them first), stored
/// as indicator data too.
async fn calculate_indicator(
    State(state): State<AppState>,
    _user: AuthUser,
    ApiJson(request): ApiJson<CalculateRequest>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    if request.symbol.as_deref().is_none_or(|s| s.trim().is_empty()) {
        errors.add("symbol", "This field is required.");
    }
    if request.indicator.as_deref().is_none_or(|s| s.trim().is_empty()) {
        errors.add("indicator", "This field is required.");
    }
    errors.into_result()?;
    let symbol = symbol_name("symbol", request.symbol.as_deref().unwrap_or_default())?;
    let name = request.indicator.unwrap_or_default().trim().to_ascii_lowercase();
    let period = checked_choice("period", &request.period, &market_data::PERIODS)?;
    let interval = checked_choice("interval", &request.interval, &market_data::INTERVALS)?;
    let parameters = if request.parameters.is_null() { json!({}) } else { request.parameters };
    if !parameters.is_object() {
        return Err(ApiError::Validation(FieldErrors::single("parameters", "Expected an object.")));
    }
    indicators::calculate(&name, &parameters, &[]).map_err(|err| match err {
        IndicatorError::Unknown(_) => indicator_error("indicator", &err),
        IndicatorError::Parameter { .. } => indicator_error("parameters", &err),
    })?;
    let not_found =
        |what: String| (StatusCode::NOT_FOUND, Json(json!({ "error": what, "symbol": symbol }))).into_response();
    let Some(symbol_row) = state.store.market_symbol_named(&symbol).await? else {
        return Ok(not_found(format!("Unknown symbol {symbol}: fetch its data first (api/fetch_data/)")));
    };
    let all = stored_bars(&state, &symbol, &interval).await?;
    let series = market_data::within_period(all.iter().map(bar_of).collect(), &period);
    let bars: Vec<BarRow> = all.into_iter().rev().take(series.len()).rev().collect();
    if bars.is_empty() {
        return Ok(not_found(format!("No stored {interval} data for {symbol}: fetch it first (api/fetch_data/)")));
    }
    let (result, used) =
        compute_and_keep(&state, &symbol_row, &interval, &name, &parameters, &bars, "parameters").await?;
    Ok(Json(json!({
        "symbol": symbol,
        "indicator": name,
        "parameters": used,
        "period": period,
        "interval": interval,
        "result": result,
    }))
    .into_response())
}

async fn available_indicators(_user: AuthUser) -> Json<Value> {
    Json(json!({ "indicators": indicators::registry() }))
}

/// The registry, as the old `indicators/` resource listed it. It is code,
/// not rows: an indicator without code behind it could not compute.
async fn list_indicators(_user: AuthUser) -> Json<Value> {
    let registry = indicators::registry();
    Json(json!({ "count": registry.len(), "next": null, "previous": null, "results": registry }))
}

async fn get_indicator(
    _user: AuthUser,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<Value>> {
    let name = name.to_ascii_lowercase();
    let indicator = indicators::registry().into_iter().find(|i| i.name == name).ok_or(ApiError::NotFound)?;
    Ok(Json(json!(indicator)))
}

async fn indicator_categories(_user: AuthUser) -> Json<Value> {
    let mut categories: Vec<&str> = indicators::registry().iter().map(|i| i.category).collect();
    categories.sort_unstable();
    categories.dedup();
    Json(json!({ "categories": categories }))
}

#[derive(Debug, Serialize)]
struct IndicatorValueView {
    id: i64,
    symbol: String,
    indicator: String,
    timestamp: String,
    interval: String,
    value: Value,
    parameters: Value,
}

impl From<IndicatorValueRow> for IndicatorValueView {
    fn from(row: IndicatorValueRow) -> Self {
        Self {
            id: row.id,
            symbol: row.symbol,
            indicator: row.indicator,
            timestamp: api_core::time::iso8601(&row.ts),
            interval: row.bar_interval,
            value: row.value.0,
            parameters: row.parameters.0,
        }
    }
}

/// `?symbol`, `?indicator`, `?interval`.
async fn list_indicator_values(
    State(state): State<AppState>,
    _user: AuthUser,
    RawQuery(query): RawQuery,
    page: PageRequest,
) -> ApiResult<Json<Page<IndicatorValueView>>> {
    let (mut symbol, mut indicator, mut interval) = (String::new(), String::new(), String::new());
    for (key, value) in query_pairs(query.as_deref()) {
        let value = value.trim().to_string();
        match key.as_str() {
            "symbol" if !value.is_empty() => symbol = symbol_name("symbol", &value)?,
            "indicator" => indicator = value.to_ascii_lowercase(),
            "interval" => interval = value,
            _ => {}
        }
    }
    let (count, rows) =
        state.store.indicator_values_page(&symbol, &indicator, &interval, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(IndicatorValueView::from).collect())?))
}

async fn get_indicator_value(
    State(state): State<AppState>,
    _user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<IndicatorValueView>> {
    Ok(Json(state.store.indicator_value(id).await?.ok_or(ApiError::NotFound)?.into()))
}

async fn health(State(state): State<AppState>, _user: AuthUser) -> Json<Value> {
    let database = state.store.ping().await.is_ok();
    let symbols = state.store.market_symbols_page(None, 1, 0).await.map(|(count, _)| count).ok();
    let source = state.market.describe();
    let fetcher = match &*state.market {
        market_data::Source::Yahoo { .. } => true,
        _ => source["symbols"].as_array().is_some_and(|symbols| !symbols.is_empty()),
    };
    Json(json!({
        "status": if database && fetcher { "healthy" } else { "degraded" },
        "database": if database { "connected" } else { "unreachable" },
        "symbols_count": symbols,
        "data_fetcher_available": fetcher,
        "indicators_available": indicators::registry().len(),
        "source": source,
        "timestamp": api_core::time::iso8601(&Utc::now()),
    }))
}
