//! The live backtest stream: the old chat UI's `ws/backtest/stream/`,
//! and the same messages over SSE.
//!
//! A `start_backtest` reads the old config (its defaults and aliases),
//! loads the bars (the user's own series, or the market data source's,
//! stored and reused), and queues the run like any other: a worker on any
//! replica runs it in the sandbox. When it ends, its messages are built
//! once ([`events::build`]) and every client watching paces through them
//! on its own: candles every `STREAM_BAR_MS`, signals, running stats, the
//! end. A client leaving stops its own pacing; a run nobody watches any
//! more is cancelled.

mod events;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use api_core::live_runs::{LiveRun, Outcome, Watcher};
use api_core::{streaming, ApiError, ApiJson, ApiResult, AppState, AuthUser, ResourceId};
use axum::extract::State;
use axum::response::sse::Event;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{NaiveDateTime, Utc};
use market_data::indicators;
use serde_json::{json, Map, Value};
use store::backtests::{BacktestRunRow, COMPLETED};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use events::{IndicatorSpec, Stopped};

/// The WebSocket: public, since it authenticates in its first message.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/ws/backtest/stream", get(socket::upgrade))
}

/// The SSE twins, behind the usual bearer token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/backtests/stream", post(start_over_sse))
        .route("/api/backtests/runs/{id}/live", get(watch_over_sse))
}

/// Messages queued for one client at most; past it candles are merged.
const CLIENT_BUFFER: usize = 32;
/// Indicators one stream may draw.
const MAX_INDICATORS: usize = 10;

/// A `start_backtest` config, read with the old defaults and aliases.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub symbol: String,
    pub period: String,
    pub interval: String,
    code: String,
    pub strategy_id: Option<i64>,
    pub initial_balance: f64,
    pub commission: f64,
    pub indicators: Vec<IndicatorSpec>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(api_core::FieldErrors::single(field, message))
}

/// A number, or a string holding one (the old UI sent both).
fn number(config: &Map<String, Value>, key: &str) -> ApiResult<Option<f64>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => {
            text.trim().parse().map(Some).map_err(|_| invalid(key, format!("{text:?} is not a number")))
        }
        Some(_) => Err(invalid(key, "must be a number")),
    }
}

fn text<'a>(config: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim()).filter(|t| !t.is_empty())),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

/// A count and a unit, as the old UI spelled periods and intervals
/// (`1year`, `3 months`, `60min`, `1hour`).
fn count_and_unit(text: &str) -> Option<(u32, String)> {
    let text: String = text.trim().to_ascii_lowercase().chars().filter(|c| !c.is_whitespace() && *c != '_').collect();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let count = if digits == 0 { 1 } else { text[..digits].parse().ok()? };
    Some((count, text[digits..].to_string()))
}

/// A period in the old `fetch_data` set, from it or an alias.
pub fn period(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    if market_data::PERIODS.contains(&lower.as_str()) {
        return Some(lower);
    }
    let (count, unit) = count_and_unit(&lower)?;
    let unit = match unit.as_str() {
        "d" | "day" | "days" => "d",
        "mo" | "mos" | "mon" | "month" | "months" => "mo",
        "y" | "yr" | "yrs" | "year" | "years" => "y",
        _ => return None,
    };
    let period = format!("{count}{unit}");
    market_data::PERIODS.contains(&period.as_str()).then_some(period)
}

/// An interval in the old `fetch_data` set, from it or an alias.
pub fn interval(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    if market_data::INTERVALS.contains(&lower.as_str()) {
        return Some(lower);
    }
    let named = match lower.as_str() {
        "daily" | "day" => Some("1d"),
        "hourly" | "hour" => Some("1h"),
        "weekly" | "week" => Some("1wk"),
        "monthly" | "month" => Some("1mo"),
        _ => None,
    };
    if let Some(named) = named {
        return Some(named.to_string());
    }
    let (count, unit) = count_and_unit(&lower)?;
    let unit = match unit.as_str() {
        "m" | "min" | "mins" | "minute" | "minutes" => "m",
        "h" | "hr" | "hour" | "hours" => "h",
        "d" | "day" | "days" => "d",
        "w" | "wk" | "week" | "weeks" => "wk",
        "mo" | "month" | "months" => "mo",
        _ => return None,
    };
    let interval = format!("{count}{unit}");
    market_data::INTERVALS.contains(&interval.as_str()).then_some(interval)
}

/// The old defaults: RSI 14, EMA 9 and 21, SMA 20 and 50.
fn default_indicators() -> Value {
    json!({"rsi": 14, "ema": [9, 21], "sma": [20, 50]})
}

/// `{name: period | [periods] | {parameters} | [{parameters}]}`, each
/// checked against the registry; keyed `rsi_14`, `ema_9`, ….
pub fn indicator_specs(given: Option<&Value>) -> ApiResult<Vec<IndicatorSpec>> {
    let default = default_indicators();
    let given = match given {
        None | Some(Value::Null) => &default,
        Some(value) => value,
    };
    let Value::Object(named) = given else {
        return Err(invalid("indicators", "An object of indicator names, e.g. {\"rsi\": 14, \"ema\": [9, 21]}."));
    };
    let registry = indicators::registry();
    let mut specs = Vec::new();
    for (name, spec) in named {
        let name = name.trim().to_ascii_lowercase();
        let field = format!("indicators.{name}");
        let items = match spec {
            Value::Array(items) => items.clone(),
            Value::Bool(false) => continue,
            other => vec![other.clone()],
        };
        for item in items {
            let parameters = match item {
                Value::Number(_) => json!({ "period": item }),
                Value::Object(_) => item,
                Value::Bool(true) | Value::Null => json!({}),
                _ => return Err(invalid(&field, "A period, a list of periods, or an object of parameters.")),
            };
            let (_, used) =
                indicators::calculate(&name, &parameters, &[]).map_err(|err| invalid(&field, err.to_string()))?;
            let order = registry.iter().find(|i| i.name == name).map(|i| i.parameters.clone()).unwrap_or_default();
            let mut key = name.clone();
            for parameter in order {
                if let Some(value) = used.get(parameter.name) {
                    key.push('_');
                    key.push_str(&value.to_string());
                }
            }
            if !specs.iter().any(|spec: &IndicatorSpec| spec.key == key) {
                specs.push(IndicatorSpec { key, name: name.clone(), parameters: used });
            }
        }
    }
    if specs.len() > MAX_INDICATORS {
        return Err(invalid("indicators", format!("At most {MAX_INDICATORS} indicators.")));
    }
    Ok(specs)
}

/// The symbol a config without one streams: the old app's AAPL where the
/// source can have it (Yahoo), else the first the source has.
fn default_symbol(state: &AppState) -> String {
    match &*state.market {
        market_data::Source::Yahoo { .. } => "AAPL".to_string(),
        source => source.describe()["symbols"][0].as_str().unwrap_or(crate::DEFAULT_SYMBOL).to_string(),
    }
}

impl StartRequest {
    /// Reads the config: every field checked, the strategy looked up, the
    /// code made runnable; nothing is fetched or queued yet.
    pub async fn read(state: &AppState, user_id: i64, config: &Value) -> ApiResult<StartRequest> {
        let empty = Map::new();
        let config = match config {
            Value::Object(config) => config,
            Value::Null => &empty,
            _ => return Err(invalid("config", "An object.")),
        };
        let symbol = match text(config, "symbol")? {
            Some(symbol) => crate::data::normalise_symbol(symbol)?,
            None => default_symbol(state),
        };
        let period = match text(config, "period")? {
            Some(given) => period(given).ok_or_else(|| {
                invalid("period", format!("\"{given}\" is not a period: {}.", market_data::PERIODS.join(", ")))
            })?,
            None => "6mo".to_string(),
        };
        let interval = match text(config, "interval")? {
            Some(given) => interval(given).ok_or_else(|| {
                invalid("interval", format!("\"{given}\" is not an interval: {}.", market_data::INTERVALS.join(", ")))
            })?,
            None => "1d".to_string(),
        };
        let strategy_id = match config.get("strategy_id") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| invalid("strategy_id", "A whole number."))?),
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim().parse().map_err(|_| invalid("strategy_id", "A whole number."))?),
            Some(_) => return Err(invalid("strategy_id", "A whole number.")),
        };
        let strategy = match strategy_id {
            Some(id) => Some(
                state
                    .store
                    .strategy(id, user_id)
                    .await?
                    .ok_or_else(|| ApiError::bad_request(format!("Strategy {id} not found")))?,
            ),
            None => None,
        };
        let given_code = match config.get("strategy_code") {
            None | Some(Value::Null) => None,
            Some(Value::String(code)) if code.trim().is_empty() => None,
            Some(Value::String(code)) => Some(code.clone()),
            Some(definition @ Value::Object(_)) => Some(definition.to_string()),
            Some(_) => return Err(invalid("strategy_code", "Python code, or a canonical JSON strategy.")),
        };
        let code = match (given_code, &strategy) {
            (Some(code), _) => crate::runnable_code(&code)?,
            (None, Some(strategy)) => crate::code_of(state, strategy).await?,
            (None, None) => {
                return Err(invalid(
                    "strategy_code",
                    "Send strategy_code (Python or canonical JSON) or a strategy_id.",
                ));
            }
        };
        let balance = number(config, "initial_balance")?
            .or(number(config, "initial_capital")?)
            .unwrap_or(state.backtest_defaults.cash);
        if !(balance.is_finite() && balance > 0.0) {
            return Err(invalid("initial_balance", "More than zero."));
        }
        let commission = number(config, "commission")?.unwrap_or(state.backtest_defaults.commission);
        if !(commission.is_finite() && (0.0..1.0).contains(&commission)) {
            return Err(invalid("commission", "A fraction from 0 up to 1."));
        }
        for key in ["lot_size", "slippage"] {
            number(config, key)?;
        }
        Ok(StartRequest {
            symbol,
            period,
            interval,
            code,
            strategy_id,
            initial_balance: balance,
            commission,
            indicators: indicator_specs(config.get("indicators"))?,
        })
    }

    fn loading(&self) -> Value {
        json!({
            "type": "metadata",
            "status": "loading_data",
            "symbol": self.symbol,
            "period": self.period,
            "interval": self.interval,
        })
    }
}

/// `parameters.purpose` of a live backtest's run.
pub const LIVE_STREAM: &str = "live_stream";

/// Loads the bars and queues the run on exactly them.
async fn begin(state: &AppState, user_id: i64, request: &StartRequest) -> ApiResult<BacktestRunRow> {
    // The client's mistakes first, then whether anything can run.
    let bars =
        crate::market::stream_window(state, user_id, &request.symbol, &request.period, &request.interval).await?;
    crate::accepting(state).await?;
    let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
        return Err(ApiError::bad_request(format!("No data found for symbol {}", request.symbol)));
    };
    let parameters = json!({
        "purpose": LIVE_STREAM,
        "start_date": crate::data::run_timestamp(&first.timestamp),
        "end_date": crate::data::run_timestamp(&last.timestamp),
        "period": null,
        "stream_period": request.period,
        crate::data::MARKET_INTERVAL: request.interval,
        "initial_capital": request.initial_balance,
        "commission": request.commission,
        "indicators": request.indicators,
    });
    let prepared = crate::Prepared { symbols: vec![request.symbol.clone()], parameters };
    crate::submit(state, user_id, request.strategy_id, &request.code, &prepared).await
}

fn error_event(message: &str, run_id: Option<i64>) -> Value {
    let mut event = json!({ "type": "error", "message": message });
    if let Some(run_id) = run_id {
        event["run_id"] = json!(run_id);
    }
    event
}

/// Watches run `id` on this replica, starting its producer if nobody
/// here watched it yet. The caller has checked the run is the user's.
fn watch(state: &AppState, id: i64, owner: i64) -> Watcher {
    let (watcher, created) = state.live_runs.watch(id);
    if created {
        state.tasks.spawn(produce(state.clone(), watcher.run().clone(), owner));
    }
    watcher
}

/// How long a replica's word that its clients watch a run holds; it is
/// renewed every [`WATCH_RENEW`] while they do.
const WATCH_FOR: Duration = Duration::from_secs(5);
const WATCH_RENEW: Duration = Duration::from_secs(1);
/// How often a watched run is read again.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Follows the run until it ends and builds its messages, once. While
/// clients here watch, it tells every replica so (`watched_until`); once
/// none here has for [`WATCH_FOR`], it cancels the run unless a client on
/// another replica still watches it.
async fn produce(state: AppState, live: Arc<LiveRun>, owner: i64) {
    let outcome = follow_run(&state, &live, owner).await;
    live.produce(outcome);
}

async fn follow_run(state: &AppState, live: &LiveRun, owner: i64) -> Outcome {
    let id = live.id;
    // Each attempt may hold its lease twice the time limit; then the queue.
    let wall = state.sandbox.settings().limits.wall;
    let patience = wall * 2 * u32::try_from(crate::worker::MAX_ATTEMPTS).unwrap_or(3) + wall;
    let deadline = Instant::now() + patience;
    let mut renewed: Option<Instant> = None;
    let mut unwatched_since: Option<Instant> = None;
    loop {
        let run = match state.store.backtest_run(id, owner).await {
            Ok(Some(run)) => run,
            Ok(None) => return Err(ApiError::NotFound.message()),
            Err(err) => return Err(ApiError::from(err).message()),
        };
        if run.is_final() {
            return outcome_of(state, &run).await;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "The run did not end within {} s; follow it at /api/backtests/runs/{id}",
                patience.as_secs()
            ));
        }
        if live.watchers() > 0 {
            unwatched_since = None;
            if renewed.is_none_or(|at| now.duration_since(at) >= WATCH_RENEW) {
                let until = Utc::now() + chrono::Duration::from_std(WATCH_FOR).unwrap_or(chrono::Duration::seconds(5));
                if let Err(err) = state.store.keep_watching_backtest(id, until).await {
                    tracing::warn!(run = id, error = %err, "could not say a live backtest is watched");
                }
                renewed = Some(now);
            }
        } else if now.duration_since(*unwatched_since.get_or_insert(now)) >= WATCH_FOR {
            return match state.store.cancel_unwatched_backtest(id, owner, Utc::now()).await {
                Ok(true) => {
                    tracing::info!(run = id, "live backtest cancelled: nobody watches it any more");
                    Err("Nobody watches the run any more: it was cancelled.".to_string())
                }
                // Watched on another replica, or it just ended: not ours to stop.
                Ok(false) => Err("Nobody here watches the run any more.".to_string()),
                Err(err) => Err(ApiError::from(err).message()),
            };
        }
        tokio::select! {
            biased;
            () = state.tasks.shutting_down() => {
                return Err(format!("The server is shutting down; the run goes on. Watch it again at /api/backtests/runs/{id}/live"));
            }
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

fn run_time(value: &Value) -> Option<chrono::DateTime<Utc>> {
    NaiveDateTime::parse_from_str(value.as_str()?, "%Y-%m-%d %H:%M:%S").ok().map(|at| at.and_utc())
}

/// A finished live run's messages, from the database: the same list on
/// every replica.
async fn outcome_of(state: &AppState, run: &BacktestRunRow) -> Outcome {
    if run.status != COMPLETED {
        return Err(crate::failure_text(run).unwrap_or_else(|| format!("The run was {}.", run.status)));
    }
    let parameters = &run.parameters.0;
    let (Some(interval), Some(symbol)) = (parameters[crate::data::MARKET_INTERVAL].as_str(), run.symbols.0[0].as_str())
    else {
        return Err(format!(
            "Run {} was not started as a live backtest; its result is at /api/backtests/runs/{}/result",
            run.id, run.id
        ));
    };
    let (Some(start), Some(end)) = (run_time(&parameters["start_date"]), run_time(&parameters["end_date"])) else {
        return Err("The run's dates are missing.".into());
    };
    let series = crate::data::market_series(state, run.user_id, symbol, interval).await.map_err(|err| err.message())?;
    let bars: Vec<market_data::Bar> =
        series.into_iter().filter(|bar| bar.timestamp >= start && bar.timestamp <= end).collect();
    let result = run.result.as_ref().map(|result| result.0["results"][0].clone()).unwrap_or_default();
    if result["bars"].as_u64() != u64::try_from(bars.len()).ok() {
        tracing::warn!(run = run.id, ran = %result["bars"], have = bars.len(), "a live run's bars changed since it ran");
    }
    // Checked when the run started; stored as specs.
    let indicators: Vec<IndicatorSpec> = serde_json::from_value(parameters["indicators"].clone()).unwrap_or_default();
    let list = events::build(&events::RunView {
        run_id: run.id,
        symbol,
        period: parameters["stream_period"].as_str().unwrap_or("custom"),
        interval,
        initial_balance: parameters["initial_capital"].as_f64().unwrap_or(state.backtest_defaults.cash),
        bars: &bars,
        result: &result,
        indicators: &indicators,
    });
    Ok(Arc::from(list))
}

/// One client's copy of a run's messages, paced; or its failure.
async fn follow<T>(
    state: &AppState,
    watcher: Watcher,
    sink: &mpsc::Sender<T>,
    wrap: impl Fn(&Value) -> T,
) -> Result<(), Stopped> {
    let outcome = tokio::select! {
        outcome = watcher.outcome() => outcome,
        () = sink.closed() => return Err(Stopped::ClientGone),
    };
    let id = watcher.run().id;
    match outcome {
        Ok(list) => events::pace(&list, state.stream_bar, sink, wrap).await,
        Err(message) => events::send_waiting(sink, wrap(&error_event(&message, Some(id)))).await,
    }
}

/// A `start_backtest` to its end, sent to one client: `metadata` while
/// loading, then the run's messages, or an `error`.
async fn start<T>(
    state: &AppState,
    user_id: i64,
    request: &StartRequest,
    sink: &mpsc::Sender<T>,
    wrap: impl Fn(&Value) -> T,
) -> Result<(), Stopped> {
    events::send_waiting(sink, wrap(&request.loading())).await?;
    let run = match begin(state, user_id, request).await {
        Ok(run) => run,
        Err(err) => return events::send_waiting(sink, wrap(&error_event(&err.message(), None))).await,
    };
    tracing::info!(run = run.id, symbol = %request.symbol, "live backtest started");
    follow(state, watch(state, run.id, user_id), sink, wrap).await
}

/// An existing run of the user's, sent to one client as it is watched.
async fn attach<T>(
    state: &AppState,
    run: &BacktestRunRow,
    sink: &mpsc::Sender<T>,
    wrap: impl Fn(&Value) -> T,
) -> Result<(), Stopped> {
    if !run.is_final() {
        let symbol = run.symbols.0[0].clone();
        let loading = json!({
            "type": "metadata", "status": "loading_data", "run_id": run.id, "symbol": symbol,
            "period": run.parameters.0["stream_period"], "interval": run.parameters.0[crate::data::MARKET_INTERVAL],
        });
        events::send_waiting(sink, wrap(&loading)).await?;
    }
    follow(state, watch(state, run.id, run.user_id), sink, wrap).await
}

fn sse_event(message: &Value) -> Event {
    Event::default().event(message["type"].as_str().unwrap_or("message")).data(message.to_string())
}

fn shutting_down() -> Value {
    error_event("The server is shutting down; the run goes on. Watch it again.", None)
}

/// Serves one SSE client until its stream ends, the client leaves, or
/// the server shuts down; the slot frees when it is over.
fn serve_sse<F, W>(state: &AppState, slot: api_core::stream_slots::StreamSlot, work: W) -> Response
where
    W: FnOnce(AppState, mpsc::Sender<Event>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(CLIENT_BUFFER);
    let state = state.clone();
    let work = work(state.clone(), sender.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = state.tasks.shutting_down() => streaming::send_last(&sender, sse_event(&shutting_down())).await,
        }
        drop(slot);
    });
    streaming::response(receiver)
}

/// `POST /api/backtests/stream/` with a `start_backtest` config (or the
/// whole `{action, config}` message): the WebSocket's messages as SSE,
/// `event:` naming each message's `type`.
async fn start_over_sse(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let config = match body.get("config") {
        Some(config) if body.get("action").is_some() || config.is_object() => config,
        _ => &body,
    };
    let request = StartRequest::read(&state, user.user_id, config).await?;
    let slot = state.stream_slots.acquire(user.user_id)?;
    let user_id = user.user_id;
    Ok(serve_sse(&state, slot, move |state, sender| async move {
        let _ = start(&state, user_id, &request, &sender, sse_event).await;
    }))
}

/// `GET /api/backtests/runs/{id}/live`: another client's view of a live
/// run (the `run_id` its `metadata` and `complete` carry), as SSE.
async fn watch_over_sse(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Response> {
    let run = crate::owned(&state, &user, id).await?;
    let slot = state.stream_slots.acquire(user.user_id)?;
    Ok(serve_sse(&state, slot, move |state, sender| async move {
        let _ = attach(&state, &run, &sender, sse_event).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_uis_periods_and_intervals_are_read() {
        for (given, period_of) in [
            ("1year", Some("1y")),
            ("3months", Some("3mo")),
            ("6 Months", Some("6mo")),
            ("5d", Some("5d")),
            ("YTD", Some("ytd")),
            ("2yrs", Some("2y")),
            ("year", Some("1y")),
            ("7 days", None),
            ("forever", None),
        ] {
            assert_eq!(period(given).as_deref(), period_of, "{given}");
        }
        for (given, interval_of) in [
            ("daily", Some("1d")),
            ("1hour", Some("1h")),
            ("60min", Some("60m")),
            ("1 week", Some("1wk")),
            ("monthly", Some("1mo")),
            ("15m", Some("15m")),
            ("7m", None),
            ("fortnightly", None),
        ] {
            assert_eq!(interval(given).as_deref(), interval_of, "{given}");
        }
    }

    #[test]
    fn indicators_default_to_the_old_set_and_are_checked() {
        // In the order given, or sorted, as serde_json's maps are built: compare sorted.
        let keys = |specs: Vec<IndicatorSpec>| {
            let mut keys: Vec<String> = specs.into_iter().map(|spec| spec.key).collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(indicator_specs(None).unwrap()), ["ema_21", "ema_9", "rsi_14", "sma_20", "sma_50"]);
        let given = json!({"MACD": {"fast": 5}, "bollinger_bands": [{"period": 10, "std_dev": 1.5}], "atr": false});
        assert_eq!(keys(indicator_specs(Some(&given)).unwrap()), ["bollinger_bands_10_1.5", "macd_5_26_9"]);
        for bad in [json!({"rsi": "fourteen"}), json!({"vwap": 20}), json!({"sma": 0}), json!([14])] {
            assert!(indicator_specs(Some(&bad)).is_err(), "{bad}");
        }
    }
}
