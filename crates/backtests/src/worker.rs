//! Backtest workers: each claims the oldest queued run it may (two running
//! per user at most), runs it in the sandbox while renewing its lease and
//! watching for a cancel, and writes how it ended. Any replica runs them,
//! and so does `algoagent worker` on machines that serve no HTTP.

use std::time::Duration;

use api_core::AppState;
use chrono::Utc;
use sandbox::{RunInput, Verdict};
use store::backtests::{BacktestRunRow, RunEnding, CANCELLED, COMPLETED, FAILED, TIMED_OUT};

/// Runs one user may have running at once.
pub const PER_USER_RUNNING: i64 = 2;
/// Claims a run gets before it is failed for good.
pub const MAX_ATTEMPTS: i32 = 3;
/// How often an idle worker looks for work (a queued run wakes this
/// replica's workers at once).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How often a running worker checks for a cancel.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// `slots` workers on this process, until the process shuts down
/// (`state.tasks`): then each gives its run back to the queue, the attempt
/// refunded, for another worker to take at once rather than after the
/// lease runs out.
pub async fn run_workers(state: AppState, slots: usize) {
    if slots == 0 {
        // An HTTP-only replica.
        return;
    }
    let replica = format!("{}-{}", std::process::id(), rand::random::<u32>());
    let mut workers = tokio::task::JoinSet::new();
    for slot in 0..slots {
        workers.spawn(worker(state.clone(), format!("{replica}/{slot}")));
    }
    workers.spawn(reclaim_expired(state.clone()));
    workers.spawn(report_in(state.clone(), replica, slots));
    while workers.join_next().await.is_some() {}
}

/// How often a worker process reports in.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// A worker process not heard from for this long is taken for gone.
pub const SEEN_WITHIN: Duration = Duration::from_secs(15);

/// Tells every replica this process runs backtests (while its sandbox is
/// ready), until it shuts down.
async fn report_in(state: AppState, replica: String, slots: usize) {
    let slots = i32::try_from(slots).unwrap_or(i32::MAX);
    while !state.tasks.is_shutting_down() {
        // Workers without a sandbox take nothing, so they do not count.
        if state.sandbox.readiness().is_ready() {
            if let Err(err) = state.store.report_backtest_workers(&replica, slots, Utc::now()).await {
                tracing::warn!(error = %err, "backtest workers could not report in");
            }
        }
        tokio::select! {
            () = state.tasks.shutting_down() => {}
            () = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
    let stale = Utc::now() - chrono::Duration::from_std(SEEN_WITHIN * 4).unwrap_or(chrono::Duration::minutes(1));
    if let Err(err) = state.store.leave_backtest_workers(&replica, stale).await {
        tracing::warn!(error = %err, "backtest workers could not sign off");
    }
}

/// How often this process looks for runs whose worker stopped renewing.
const RECLAIM_EVERY: Duration = Duration::from_secs(2);

/// One sweep a process, not one per worker poll: expired leases go back to
/// the queue (or fail once their attempts are spent).
async fn reclaim_expired(state: AppState) {
    while !state.tasks.is_shutting_down() {
        match state.store.reclaim_expired_backtests(MAX_ATTEMPTS, Utc::now()).await {
            Ok(reclaimed) if reclaimed.total() == 0 => {}
            Ok(reclaimed) => {
                tracing::warn!(
                    requeued = reclaimed.requeued,
                    failed = reclaimed.failed.len(),
                    "backtests whose worker stopped were re-queued or failed"
                );
                // Failed for good: what waits on their end hears it, as from a worker.
                for run in &reclaimed.failed {
                    let message = run.error_message.clone().unwrap_or_else(|| "its workers stopped".into());
                    record_details(&state, run, Err(&message)).await;
                    settle_validation(&state, run, None, Some(&message)).await;
                    settle_bot(&state, run, Err(&message)).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not reclaim expired backtests"),
        }
        tokio::select! {
            () = state.tasks.shutting_down() => {}
            () = tokio::time::sleep(RECLAIM_EVERY) => {}
        }
    }
}

async fn worker(state: AppState, name: String) {
    while !state.tasks.is_shutting_down() {
        let claimed = next_run(&state, &name).await;
        match claimed {
            Some(run) => execute(&state, &name, run).await,
            None => {
                let notified = state.backtest_queue.notified();
                tokio::select! {
                    () = state.tasks.shutting_down() => {}
                    _ = tokio::time::timeout(IDLE_POLL, notified) => {}
                }
            }
        }
    }
}

fn lease(state: &AppState) -> chrono::Duration {
    // Twice the time limit: a live worker renews long before it runs out.
    chrono::Duration::from_std(state.sandbox.settings().limits.wall * 2).unwrap_or(chrono::Duration::minutes(4))
}

async fn next_run(state: &AppState, name: &str) -> Option<BacktestRunRow> {
    if !state.sandbox.readiness().is_ready() {
        return None;
    }
    let now = Utc::now();
    match state.store.claim_backtest(name, PER_USER_RUNNING, now + lease(state), now).await {
        Ok(run) => run,
        Err(err) => {
            tracing::warn!(error = %err, "could not claim a backtest");
            None
        }
    }
}

#[tracing::instrument(name = "backtest", skip_all, fields(run = run.id, run_id = %run.run_id, attempt = run.attempts))]
async fn execute(state: &AppState, name: &str, run: BacktestRunRow) {
    let parameters = &run.parameters.0;
    // The user's own series are written here for the run's /input copy.
    let Ok(scratch) = tempfile::Builder::new().prefix("algoagent-data-").tempdir() else {
        tracing::warn!("no scratch directory for a backtest's data; released to the queue");
        let _ = state.store.release_backtest(run.id, name, false).await;
        return;
    };
    let symbols: Vec<String> = serde_json::from_value(run.symbols.0.clone()).unwrap_or_default();
    let input = match crate::data::files(state, run.user_id, &symbols, parameters, scratch.path()).await {
        Ok(data) => RunInput {
            code: run.code.clone(),
            data,
            cash: parameters["initial_capital"].as_f64().unwrap_or(state.backtest_defaults.cash),
            commission: parameters["commission"].as_f64().unwrap_or(state.backtest_defaults.commission),
            start_date: parameters["start_date"].as_str().map(str::to_string),
            end_date: parameters["end_date"].as_str().map(str::to_string),
            period: parameters["period"].as_str().map(str::to_string),
        },
        Err(message) => {
            finish(state, name, &run, FAILED, None, Some(&message), None, 0.0).await;
            return;
        }
    };
    let sandboxed = state.sandbox.run(&input);
    tokio::pin!(sandboxed);
    let mut checks = tokio::time::interval(CANCEL_POLL);
    let mut renewals = tokio::time::interval(state.sandbox.settings().limits.wall / 4);
    let output = loop {
        tokio::select! {
            output = &mut sandboxed => break output,
            () = state.tasks.shutting_down() => {
                // Dropping the run kills its sandbox; the run goes back whole.
                match state.store.release_backtest(run.id, name, true).await {
                    Ok(()) => tracing::info!("shutting down: the backtest went back to the queue"),
                    Err(err) => tracing::warn!(error = %err, "shutting down: could not give a backtest back; its lease will"),
                }
                return;
            }
            _ = checks.tick() => {
                if let Ok(Some(status)) = state.store.backtest_status(run.id).await {
                    if status == CANCELLED {
                        // Dropping the run kills its sandbox.
                        tracing::info!("backtest cancelled while running: sandbox stopped");
                        return;
                    }
                }
            }
            _ = renewals.tick() => {
                if let Err(err) = state.store.renew_backtest_lease(run.id, name, Utc::now() + lease(state)).await {
                    tracing::warn!(error = %err, "could not renew a backtest's lease");
                }
            }
        }
    };
    let output = match output {
        Ok(output) => output,
        Err(err) => {
            // The sandbox could not start: give the run back to be retried.
            tracing::warn!(error = %err, "a backtest could not start; released to the queue");
            if let Err(err) = state.store.release_backtest(run.id, name, false).await {
                tracing::warn!(error = %err, "could not release a backtest");
            }
            return;
        }
    };
    let seconds = output.elapsed.as_secs_f64();
    let failure = match &output.verdict {
        Verdict::Completed { result } => {
            if finish(state, name, &run, COMPLETED, Some(result), None, None, seconds).await {
                record_performance(state, &run, result).await;
                record_latest_result(state, &run, result).await;
                record_details(state, &run, Ok(result)).await;
                settle_validation(state, &run, Some(result), None).await;
                settle_bot(state, &run, Ok(result)).await;
            }
            return;
        }
        Verdict::Failed { error_type, message, traceback } => {
            let message = format!("{error_type}: {message}");
            (FAILED, message, traceback.clone())
        }
        Verdict::TimedOut => {
            let message = format!("the run took longer than {} s", state.sandbox.settings().limits.wall.as_secs());
            (TIMED_OUT, message, None)
        }
        Verdict::Killed { reason } => (FAILED, reason.clone(), None),
    };
    let (status, message, traceback) = failure;
    if finish(state, name, &run, status, None, Some(&message), traceback.as_deref(), seconds).await {
        record_details(state, &run, Err(&message)).await;
        settle_bot(state, &run, Err(&message)).await;
        settle_validation(state, &run, None, Some(traceback.as_deref().unwrap_or(&message))).await;
    }
}

/// `parameters.purpose` of a run that validates its strategy (queued by
/// `create_strategy`): its end is recorded as a `backtest` validation and
/// sets the strategy `valid` or `invalid`.
pub const VALIDATES_STRATEGY: &str = "validate_strategy";

async fn settle_validation(
    state: &AppState,
    run: &BacktestRunRow,
    result: Option<&serde_json::Value>,
    failure: Option<&str>,
) {
    let Some(strategy_id) = run.strategy_id else { return };
    if run.parameters.0["purpose"] != VALIDATES_STRATEGY {
        return;
    }
    let trades = result.and_then(|result| result["results"][0]["metrics"]["total_trades"].as_i64());
    let warnings: Vec<String> = trades
        .filter(|n| *n == 0)
        .map(|_| "The strategy made no trades in the test period.".to_string())
        .into_iter()
        .collect();
    let fields = store::generated::ValidationFields {
        strategy_id,
        validation_type: "backtest",
        status: if failure.is_none() { "passed" } else { "failed" }.into(),
        errors: serde_json::json!(failure.into_iter().collect::<Vec<_>>()),
        warnings: serde_json::json!(warnings),
        details: serde_json::json!({ "executed": true, "run": run.id, "run_id": run.run_id, "symbols": run.symbols.0,
                                     "total_trades": trades }),
    };
    let status = if failure.is_none() { "valid" } else { "invalid" };
    let recorded = state.store.record_validation(run.user_id, &fields).await;
    let set = state.store.set_strategy_status(strategy_id, run.user_id, status).await;
    if let Err(err) = recorded.map(|_| ()).and(set.map(|_| ())) {
        tracing::warn!(error = %err, strategy = strategy_id, "could not record a strategy's validation run");
    }
}

#[allow(clippy::too_many_arguments, reason = "one row's columns")]
async fn finish(
    state: &AppState,
    name: &str,
    run: &BacktestRunRow,
    status: &str,
    result: Option<&serde_json::Value>,
    error_message: Option<&str>,
    error_traceback: Option<&str>,
    execution_time: f64,
) -> bool {
    let ending = RunEnding { status, result, error_message, error_traceback, execution_time, at: Utc::now() };
    match state.store.finish_backtest(run.id, name, &ending).await {
        Ok(true) => {
            tracing::info!(status, seconds = execution_time, "backtest finished");
            true
        }
        Ok(false) => {
            tracing::info!("backtest ended after it was cancelled or taken back: result dropped");
            false
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not record a backtest's end");
            false
        }
    }
}

/// The bars' interval: a live backtest's own; other runs are recorded as
/// daily, as the old app recorded them.
fn timeframe(run: &BacktestRunRow) -> &str {
    run.parameters.0[crate::data::MARKET_INTERVAL].as_str().unwrap_or("1d")
}

/// A completed run on a strategy: a `performance` record per symbol.
async fn record_performance(state: &AppState, run: &BacktestRunRow, result: &serde_json::Value) {
    let Some(strategy_id) = run.strategy_id else { return };
    let timestamp = |value: &serde_json::Value| {
        value
            .as_str()
            .and_then(|text| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok())
            .map(|at| at.and_utc())
    };
    for symbol in result["results"].as_array().into_iter().flatten() {
        let metrics = &symbol["metrics"];
        let mut kept = metrics.clone();
        kept["run_id"] = serde_json::json!(run.run_id);
        let record = store::generated::NewPerformance {
            user_id: run.user_id,
            strategy_id,
            symbol: symbol["symbol"].as_str().unwrap_or_default(),
            timeframe: timeframe(run),
            period_start: timestamp(&metrics["start_date"]),
            period_end: timestamp(&metrics["end_date"]),
            initial_capital: run.parameters.0["initial_capital"].as_f64(),
            final_value: metrics["equity_final"].as_f64(),
            total_return: metrics["return_pct"].as_f64(),
            sharpe_ratio: metrics["sharpe_ratio"].as_f64(),
            max_drawdown: metrics["max_drawdown"].as_f64(),
            win_rate: metrics["win_rate"].as_f64(),
            total_trades: metrics["total_trades"].as_i64().and_then(|n| i32::try_from(n).ok()),
            metrics: &kept,
            created_at: Utc::now(),
        };
        if let Err(err) = state.store.record_performance(&record).await {
            tracing::warn!(error = %err, "could not record a backtest's performance");
        }
    }
}

/// A completed run on a strategy replaces its latest result (the first
/// symbol's, as the old one-symbol record held).
async fn record_latest_result(state: &AppState, run: &BacktestRunRow, result: &serde_json::Value) {
    let Some(strategy_id) = run.strategy_id else { return };
    let first = &result["results"][0];
    let metrics = &first["metrics"];
    let trades = first["trades"].as_array().cloned().unwrap_or_default();
    let count = |wins: bool| {
        let n = trades.iter().filter(|t| t["pnl"].as_f64().is_some_and(|pnl| (pnl > 0.0) == wins)).count();
        i32::try_from(n).unwrap_or(i32::MAX)
    };
    let initial = run.parameters.0["initial_capital"].as_f64().unwrap_or(state.backtest_defaults.cash);
    let final_equity = metrics["equity_final"].as_f64();
    let latest = store::generated::LatestResult {
        symbol: first["symbol"].as_str().unwrap_or_default().to_string(),
        timeframe: timeframe(run).into(),
        period: run.parameters.0["period"]
            .as_str()
            .or(run.parameters.0["stream_period"].as_str())
            .unwrap_or("custom")
            .to_string(),
        initial_balance: initial,
        commission: run.parameters.0["commission"].as_f64().unwrap_or(state.backtest_defaults.commission),
        total_trades: i32::try_from(trades.len()).unwrap_or(i32::MAX),
        winning_trades: count(true),
        losing_trades: count(false),
        win_rate: metrics["win_rate"].as_f64().unwrap_or(0.0),
        net_profit: final_equity.map_or(0.0, |equity| equity - initial),
        total_return_pct: metrics["return_pct"].as_f64().unwrap_or(0.0),
        final_equity,
        max_drawdown: metrics["max_drawdown"].as_f64().unwrap_or(0.0),
        sharpe_ratio: metrics["sharpe_ratio"].as_f64(),
        trades: serde_json::Value::Array(trades.clone()),
        equity_curve: first["equity_curve"].clone(),
        run_id: Some(run.run_id.clone()),
    };
    if let Err(err) = state.store.save_latest_result(run.user_id, strategy_id, &latest).await {
        tracing::warn!(error = %err, "could not record a strategy's latest backtest result");
    }
}

/// A drawdown deeper than this (in percent) raises a warning alert.
const DRAWDOWN_ALERT_PCT: f64 = 20.0;

/// A finished run's trades as rows, and its alerts: how it ended, and per
/// symbol a run without trades or with a deep drawdown.
async fn record_details(state: &AppState, run: &BacktestRunRow, ending: Result<&serde_json::Value, &str>) {
    use store::backtest_records::{NewAlert, NewTrade};
    let mut trades = Vec::new();
    let mut alerts = Vec::new();
    match ending {
        Ok(result) => {
            let symbols = result["results"].as_array().cloned().unwrap_or_default();
            for symbol in &symbols {
                let name = symbol["symbol"].as_str().unwrap_or_default().to_string();
                for trade in symbol["trades"].as_array().into_iter().flatten() {
                    let size = trade["size"].as_f64().unwrap_or(0.0);
                    trades.push(NewTrade {
                        symbol: name.clone(),
                        trade_type: if size < 0.0 { "short" } else { "long" },
                        entry_date: trade["entry_time"].as_str().unwrap_or_default().to_string(),
                        entry_price: trade["entry_price"].as_f64().unwrap_or(0.0),
                        exit_date: trade["exit_time"].as_str().map(str::to_string),
                        exit_price: trade["exit_price"].as_f64(),
                        quantity: size.abs(),
                        pnl: trade["pnl"].as_f64(),
                        pnl_pct: trade["return_pct"].as_f64(),
                        holding_period: trade["duration"].as_str().map(str::to_string),
                    });
                }
                let metrics = &symbol["metrics"];
                if metrics["total_trades"].as_i64() == Some(0) {
                    alerts.push(NewAlert {
                        alert_type: "warning",
                        title: format!("No trades on {name}"),
                        message: "The strategy never entered a position in this period.".into(),
                        symbol: Some(name.clone()),
                        context_data: serde_json::json!({}),
                    });
                }
                if let Some(drawdown) = metrics["max_drawdown"].as_f64().filter(|d| d.abs() > DRAWDOWN_ALERT_PCT) {
                    alerts.push(NewAlert {
                        alert_type: "warning",
                        title: format!("Deep drawdown on {name}"),
                        message: format!("The equity fell {:.1}% from a peak.", drawdown.abs()),
                        symbol: Some(name.clone()),
                        context_data: serde_json::json!({ "max_drawdown": drawdown }),
                    });
                }
            }
            alerts.push(NewAlert {
                alert_type: "success",
                title: "Backtest completed".into(),
                message: format!("{} trades over {} symbol(s).", trades.len(), symbols.len()),
                symbol: None,
                context_data: serde_json::json!({ "symbols": run.symbols.0 }),
            });
        }
        Err(message) => alerts.push(NewAlert {
            alert_type: "error",
            title: "Backtest failed".into(),
            message: message.to_string(),
            symbol: None,
            context_data: serde_json::json!({ "attempts": run.attempts }),
        }),
    }
    if let Err(err) = state.store.record_run_details(run.id, run.user_id, &trades, &alerts).await {
        tracing::warn!(error = %err, "could not record a backtest's trades and alerts");
    }
}

/// `parameters.purpose` of a bot verification run (`bot-performance/`).
pub const VERIFIES_BOT: &str = "verify_bot";
/// Trades a verification run must make, unless the request said otherwise.
pub const DEFAULT_TRADES_THRESHOLD: i32 = 2;

/// The old rule, from a run's trades: at least `threshold` is verified,
/// none is failed, anything between is still testing.
pub fn bot_verdict(trades: i64, threshold: i32) -> &'static str {
    match trades {
        0 => "failed",
        n if n >= i64::from(threshold) => "verified",
        _ => "testing",
    }
}

async fn settle_bot(state: &AppState, run: &BacktestRunRow, ending: Result<&serde_json::Value, &str>) {
    let Some(strategy_id) = run.strategy_id else { return };
    if run.parameters.0["purpose"] != VERIFIES_BOT {
        return;
    }
    let threshold = run.parameters.0["trades_threshold"]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(DEFAULT_TRADES_THRESHOLD);
    let symbol = run.symbols.0[0].as_str().map(str::to_string);
    let verification = match ending {
        Ok(result) => {
            let metrics = &result["results"][0]["metrics"];
            let trades = metrics["total_trades"].as_i64().unwrap_or(0);
            let status = bot_verdict(trades, threshold);
            store::bots::BotVerification {
                verification_status: status.into(),
                trades_threshold: threshold,
                symbol,
                total_return: metrics["return_pct"].as_f64(),
                total_trades: i32::try_from(trades).ok(),
                win_rate: metrics["win_rate"].as_f64(),
                sharpe_ratio: metrics["sharpe_ratio"].as_f64(),
                max_drawdown: metrics["max_drawdown"].as_f64(),
                last_run_id: Some(run.run_id.clone()),
                message: format!("{trades} trades in its test; {threshold} verify it."),
                tested_at: Some(Utc::now()),
            }
        }
        Err(message) => store::bots::BotVerification {
            verification_status: "failed".into(),
            trades_threshold: threshold,
            symbol,
            last_run_id: Some(run.run_id.clone()),
            message: format!("Its test run failed: {message}"),
            tested_at: Some(Utc::now()),
            ..Default::default()
        },
    };
    if let Err(err) = state.store.save_bot_verification(run.user_id, strategy_id, &verification).await {
        tracing::warn!(error = %err, strategy = strategy_id, "could not record a bot verification");
    }
}
