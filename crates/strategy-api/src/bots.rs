//! `/api/strategies/bot-performance/`: bot verification as the old app
//! meant it (its tables were dropped there, so it failed at the database).
//! A verification is a backtest job of the strategy's code; the worker
//! applies the old rule when it ends (at least `trades_threshold` trades is
//! verified, none is failed, anything between is testing), so runs that
//! `verify_all` queues settle on any replica.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backtests::worker::{DEFAULT_TRADES_THRESHOLD, VERIFIES_BOT};
use serde::Deserialize;
use serde_json::{json, Value};
use store::bots::{BotRow, BotVerification};
use store::strategies::StrategyRow;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/bot-performance", get(list))
        .route("/api/strategies/bot-performance/verify_bot", post(verify_bot))
        .route("/api/strategies/bot-performance/verify_all", post(verify_all))
        .route("/api/strategies/bot-performance/verified_bots", get(verified_bots))
        .route("/api/strategies/bot-performance/{id}", get(detail))
        .route("/api/strategies/bot-performance/{id}/test_history", get(test_history))
}

/// The most strategies one `verify_all` queues.
const VERIFY_ALL_LIMIT: i64 = 200;
/// How many runs `test_history` lists.
const HISTORY_RUNS: i64 = 50;

/// How a status reads on a badge.
fn badge(status: &str, threshold: i32) -> Value {
    let (label, icon, color, description) = match status {
        "verified" => ("Verified", "✓", "green", format!("Made at least {threshold} trades in its test backtest.")),
        "testing" => ("Testing", "…", "orange", format!("Traded, but fewer than {threshold} times in its test.")),
        "failed" => ("Failed", "✗", "red", "Made no trades in its test, or its test run failed.".into()),
        _ => ("Pending", "○", "gray", "Its test backtest has not ended yet.".into()),
    };
    json!({ "status": status, "label": label, "icon": icon, "color": color, "description": description })
}

fn view(row: &BotRow) -> Value {
    json!({
        "id": row.id,
        "strategy": row.strategy_id,
        "strategy_id": row.strategy_id,
        "strategy_name": row.strategy_name,
        "verification_status": row.verification_status,
        "is_verified": row.verification_status == "verified",
        "badge": badge(&row.verification_status, row.trades_threshold),
        "trades_threshold": row.trades_threshold,
        "symbol": row.symbol,
        "total_return": row.total_return,
        "total_trades": row.total_trades,
        "win_rate": row.win_rate,
        "sharpe_ratio": row.sharpe_ratio,
        "max_drawdown": row.max_drawdown,
        "last_run_id": row.last_run_id,
        "message": row.message,
        "last_tested_at": row.last_tested_at.map(|at| api_core::time::iso8601(&at)),
        "verified_at": row.verified_at.map(|at| api_core::time::iso8601(&at)),
        "created_at": api_core::time::iso8601(&row.created_at),
        "updated_at": api_core::time::iso8601(&row.updated_at),
    })
}

async fn list(State(state): State<AppState>, user: AuthUser, page: PageRequest) -> ApiResult<Json<Page<Value>>> {
    let (count, rows) = state.store.bots_page(user.user_id, false, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.iter().map(view).collect())?))
}

async fn detail(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<Json<Value>> {
    Ok(Json(view(&state.store.bot(id, user.user_id).await?.ok_or(ApiError::NotFound)?)))
}

async fn verified_bots(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let (count, rows) = state.store.bots_page(user.user_id, true, VERIFY_ALL_LIMIT, 0).await?;
    Ok(Json(json!({ "count": count, "verified_bots": rows.iter().map(view).collect::<Vec<_>>() })))
}

/// The strategy's verification runs, newest first.
async fn test_history(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let bot = state.store.bot(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let (_, runs) = state.store.strategy_backtest_runs(bot.strategy_id, user.user_id, HISTORY_RUNS).await?;
    let test_runs: Vec<Value> = runs
        .iter()
        .filter(|run| run.parameters.0["purpose"] == VERIFIES_BOT)
        .map(|run| {
            let trades = backtests::headline(run).and_then(|h| h["num_trades"].as_i64());
            let threshold = run.parameters.0["trades_threshold"].as_i64().and_then(|n| i32::try_from(n).ok());
            let threshold = threshold.unwrap_or(DEFAULT_TRADES_THRESHOLD);
            json!({
                "run": run.id,
                "run_id": run.run_id,
                "status": run.status,
                "symbols": run.symbols.0,
                "verdict": match (run.status.as_str(), trades) {
                    (store::backtests::COMPLETED, Some(trades)) => json!(backtests::worker::bot_verdict(trades, threshold)),
                    (store::backtests::FAILED | store::backtests::TIMED_OUT, _) => json!("failed"),
                    _ => Value::Null,
                },
                "metrics": backtests::headline(run),
                "error_message": run.error_message,
                "tested_at": api_core::time::iso8601(&run.created_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "strategy_name": bot.strategy_name,
        "is_verified": bot.verification_status == "verified",
        "badge": badge(&bot.verification_status, bot.trades_threshold),
        "test_runs": test_runs,
    })))
}

#[derive(Debug, Deserialize)]
struct VerifyBotRequest {
    strategy_id: Option<i64>,
    /// The old default was AAPL, which is not bundled: GOOG is.
    symbol: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    /// Read from the data, as every run's interval is.
    #[allow(dead_code, reason = "accepted for the old clients that send it")]
    timeframe: Option<String>,
    initial_balance: Option<f64>,
    commission: Option<f64>,
    trades_threshold: Option<i32>,
}

/// Queues a verification run of `strategy` and marks it pending.
async fn queue_verification(
    state: &AppState,
    owner: i64,
    strategy: &StrategyRow,
    config: &Value,
    threshold: i32,
) -> ApiResult<store::backtests::BacktestRunRow> {
    let code = backtests::code_of(state, strategy).await?;
    let mut run = backtests::prepare_test_run(state, owner, config).await?;
    run.parameters["purpose"] = json!(VERIFIES_BOT);
    run.parameters["trades_threshold"] = json!(threshold);
    let pending = BotVerification {
        verification_status: "pending".into(),
        trades_threshold: threshold,
        symbol: run.symbols.first().cloned(),
        message: "Its test backtest is queued.".into(),
        ..Default::default()
    };
    state.store.save_bot_verification(owner, strategy.id, &pending).await?;
    backtests::submit(state, owner, Some(strategy.id), &code, &run).await
}

/// Verifies one strategy, answering when its run ends (within the
/// request), or 202 while it is still going.
async fn verify_bot(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<VerifyBotRequest>,
) -> ApiResult<Response> {
    let Some(strategy_id) = request.strategy_id else {
        return Err(ApiError::Validation(FieldErrors::single("strategy_id", "This field is required.")));
    };
    let threshold = request.trades_threshold.unwrap_or(DEFAULT_TRADES_THRESHOLD);
    if threshold < 1 {
        return Err(ApiError::Validation(FieldErrors::single("trades_threshold", "Ensure this value is at least 1.")));
    }
    let Some(strategy) = state.store.strategy(strategy_id, user.user_id).await? else {
        let body = json!({ "error": "Strategy not found", "strategy_id": strategy_id });
        return Ok((StatusCode::NOT_FOUND, Json(body)).into_response());
    };
    backtests::accepting(&state).await?;
    let config = json!({
        "symbol": request.symbol.clone().unwrap_or_else(|| "GOOG".into()),
        "start_date": request.start_date, "end_date": request.end_date,
        "initial_capital": request.initial_balance, "commission": request.commission,
    });
    let queued = queue_verification(&state, user.user_id, &strategy, &config, threshold).await?;
    let run = match backtests::wait_for_end(&state, queued.id, user.user_id, backtests::request_wait(&state)).await? {
        Some(run) => run,
        None => queued,
    };
    // The worker records the verdict right after the run's end.
    let bot = settled(&state, user.user_id, strategy.id, run.is_final()).await?;
    let body = json!({
        "status": if run.is_final() { "completed" } else { "queued" },
        "performance": view(&bot),
        "run_id": run.run_id,
        "message": bot.message,
    });
    Ok(if run.is_final() { Json(body).into_response() } else { (StatusCode::ACCEPTED, Json(body)).into_response() })
}

/// The bot's row, once the worker has recorded the verdict of a run that
/// ended (a moment after the run's own end).
async fn settled(state: &AppState, owner: i64, strategy_id: i64, ended: bool) -> ApiResult<BotRow> {
    for _ in 0..25 {
        let bot = state.store.bot_of_strategy(strategy_id, owner).await?.ok_or(ApiError::NotFound)?;
        if !ended || bot.verification_status != "pending" {
            return Ok(bot);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    state.store.bot_of_strategy(strategy_id, owner).await?.ok_or(ApiError::NotFound)
}

#[derive(Debug, Default, Deserialize)]
struct VerifyAllRequest {
    #[serde(default)]
    force_retest: bool,
    strategy_ids: Option<Vec<i64>>,
}

/// Queues a verification of each strategy named (or, without ids, each
/// `active` one), skipping verified ones unless `force_retest`; reports
/// what it did and where each stands.
async fn verify_all(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<VerifyAllRequest>,
) -> ApiResult<Json<Value>> {
    backtests::accepting(&state).await?;
    let mut errors: Vec<Value> = Vec::new();
    let strategies: Vec<StrategyRow> = match &request.strategy_ids {
        Some(ids) => {
            if ids.len() > VERIFY_ALL_LIMIT as usize {
                return Err(ApiError::Validation(FieldErrors::single(
                    "strategy_ids",
                    format!("Ensure this list has at most {VERIFY_ALL_LIMIT} elements."),
                )));
            }
            let mut found = Vec::new();
            for id in ids {
                match state.store.strategy(*id, user.user_id).await? {
                    Some(strategy) => found.push(strategy),
                    None => errors.push(json!({ "strategy_id": id, "error": "Strategy not found" })),
                }
            }
            found
        }
        None => {
            let filter = store::strategies::StrategyFilter { status: Some("active".into()), ..Default::default() };
            state.store.strategies_page(user.user_id, &filter, VERIFY_ALL_LIMIT, 0).await?.1
        }
    };
    let (mut queued, mut skipped) = (0, 0);
    let (mut verified, mut failed, mut testing) = (0, 0, 0);
    let config = json!({ "symbol": "GOOG", "period": "1y" });
    for strategy in &strategies {
        let current = state.store.bot_of_strategy(strategy.id, user.user_id).await?;
        let status = current.as_ref().map(|bot| bot.verification_status.clone());
        if status.as_deref() == Some("verified") && !request.force_retest {
            skipped += 1;
            verified += 1;
            continue;
        }
        match queue_verification(&state, user.user_id, strategy, &config, DEFAULT_TRADES_THRESHOLD).await {
            Ok(_) => {
                queued += 1;
                testing += 1;
            }
            Err(err) => {
                // Not testable (no code, say): it cannot be verified.
                failed += 1;
                errors.push(json!({ "strategy_id": strategy.id, "error": err.public_message() }));
            }
        }
    }
    Ok(Json(json!({
        "status": "queued",
        "summary": {
            "total": strategies.len(),
            "queued": queued,
            "skipped": skipped,
            "verified": verified,
            "failed": failed,
            "testing": testing,
            "errors": errors,
        },
        "message": "Verification runs are queued; bot-performance/ shows each verdict as its run ends.",
    })))
}
