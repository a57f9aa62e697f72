//! `/api/backtests/`: runs queued in the database, taken by the server's
//! workers and executed in the real sandbox. They need the sandbox's
//! environment (`ALGOAGENT_SANDBOX_ENV`, set by `.ci/run` after `algoagent
//! sandbox setup`) and run on both database backends: the claim differs.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app, spawn_app_with, with_sandbox, with_sandbox_and_sim, TestApp};

pub(crate) const SMA_CROSS: &str = r#"
from backtesting import Strategy
from backtesting.lib import crossover
from backtesting.test import SMA


class SmaCross(Strategy):
    def init(self):
        self.fast = self.I(SMA, self.data.Close, 10)
        self.slow = self.I(SMA, self.data.Close, 30)

    def next(self):
        if crossover(self.fast, self.slow):
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()
"#;

async fn quick_run(app: &TestApp, access: &str, body: Value) -> reqwest::Response {
    app.send(Method::POST, "/api/backtests/api/quick_run/", Some(access), &body).await
}

#[tokio::test]
async fn quick_run_backtests_python_for_real_and_keeps_the_run() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("backtester").await;
    let body =
        json!({"strategy_code": SMA_CROSS, "symbol": "goog", "start_date": "2010-01-01", "initial_capital": 20000});
    let done = expect_status(quick_run(&app, &user.access, body).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["run_id"].as_str().is_some_and(|id| id.starts_with("bt_") && id.len() == 11), "{done}");
    assert!(done["summary"]["total_trades"].as_u64().is_some_and(|n| n > 0), "{done}");
    for field in
        ["start_date", "equity_final", "return_pct", "sharpe_ratio", "max_drawdown", "win_rate", "profit_factor"]
    {
        assert!(done["metrics"].get(field).is_some(), "metrics.{field} missing: {done}");
    }
    assert!(done["metrics"]["start_date"].as_str().unwrap().starts_with("2010-01-04"), "{done}");
    assert!(!done["trades"].as_array().unwrap().is_empty() && !done["equity_curve"].as_array().unwrap().is_empty());
    assert_eq!(done["symbol_stats"][0]["symbol"], "GOOG");

    let id = done["id"].as_i64().unwrap();
    let runs = expect_status(app.get("/api/backtests/runs/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 1);
    assert_eq!(runs["results"][0]["status"], "completed");
    assert_eq!(runs["results"][0]["parameters"]["initial_capital"], 20000.0);
    let trades = app.get(&format!("/api/backtests/runs/{id}/trades/"), Some(&user.access)).await;
    let trades = expect_status(trades, StatusCode::OK).await;
    assert_eq!(trades[0]["symbol"], "GOOG");
    let result = app.get(&format!("/api/backtests/runs/{id}/result/"), Some(&user.access)).await;
    assert_eq!(expect_status(result, StatusCode::OK).await["summary"], done["summary"]);

    // `period` counts back from the end of the series (GOOG's ends 2013-03-01).
    let body = json!({"strategy_code": SMA_CROSS, "symbol": "GOOG", "period": "1y"});
    let year = expect_status(quick_run(&app, &user.access, body).await, StatusCode::OK).await;
    assert!(year["metrics"]["start_date"].as_str().unwrap().starts_with("2012-03"), "{}", year["metrics"]);
    assert!(year["metrics"]["end_date"].as_str().unwrap().starts_with("2013-03-01"), "{}", year["metrics"]);

    // Another user sees nothing of it.
    let other = app.register("someone-else").await;
    let hidden = app.get(&format!("/api/backtests/runs/{id}/"), Some(&other.access)).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failing_strategy_is_a_clear_failed_run() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("broken-code").await;
    let code = "from backtesting import Strategy\n\nclass Broken(Strategy):\n    def init(self):\n        raise ValueError('no indicators today')\n\n    def next(self):\n        pass\n";
    let failed = quick_run(&app, &user.access, json!({"strategy_code": code, "symbol": "GOOG"})).await;
    let failed = expect_status(failed, StatusCode::BAD_REQUEST).await;
    assert_eq!(failed["error"], "Backtest execution failed");
    assert!(failed["details"].as_str().unwrap().contains("ValueError: no indicators today"), "{failed}");
    assert_eq!(failed["run"]["status"], "failed");
    assert!(failed["run"]["error_traceback"].as_str().is_some_and(|tb| tb.contains("no indicators today")));
    let id = failed["run"]["id"].as_i64().unwrap();
    let result = app.get(&format!("/api/backtests/runs/{id}/result/"), Some(&user.access)).await;
    assert_eq!(expect_status(result, StatusCode::NOT_FOUND).await["error"], "Results not available for this run");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_queued() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("careless").await;
    let unknown = quick_run(&app, &user.access, json!({"strategy_code": SMA_CROSS, "symbol": "NOPE"})).await;
    let unknown = expect_status(unknown, StatusCode::BAD_REQUEST).await;
    assert!(unknown.to_string().contains("GOOG") && unknown.to_string().contains("EURUSD"), "{unknown}");
    for body in [
        json!({"strategy_code": "  "}),
        json!({"strategy_code": SMA_CROSS, "start_date": "2012-05-01", "end_date": "2012-01-01"}),
        json!({"strategy_code": SMA_CROSS, "start_date": "yesterday"}),
        json!({"strategy_code": SMA_CROSS, "initial_capital": -5}),
        json!({"strategy_code": SMA_CROSS, "commission": 1.5}),
        json!({"strategy_code": SMA_CROSS, "period": "7w"}),
        json!({"strategy_code": SMA_CROSS, "period": "1y", "start_date": "2012-01-01"}),
        json!({"symbol": "GOOG"}),
    ] {
        let response = quick_run(&app, &user.access, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let runs = expect_status(app.get("/api/backtests/runs/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 0, "nothing was queued: {runs}");
}

#[tokio::test]
async fn a_long_run_answers_queued_and_can_be_cancelled_while_running() {
    let Some(app) = with_sandbox(&[("AI_DEADLINE_SECS", "2"), ("REQUEST_TIMEOUT_SECS", "4")]).await else { return };
    let user = app.register("impatient").await;
    let slow = "import time\nfrom backtesting import Strategy\n\nclass Slow(Strategy):\n    def init(self):\n        time.sleep(60)\n\n    def next(self):\n        pass\n";
    let queued = quick_run(&app, &user.access, json!({"strategy_code": slow, "symbol": "GOOG"})).await;
    let queued = expect_status(queued, StatusCode::ACCEPTED).await;
    assert!(["queued", "running"].contains(&queued["status"].as_str().unwrap()), "{queued}");
    let id = queued["id"].as_i64().unwrap();

    let cancel = format!("/api/backtests/runs/{id}/cancel/");
    let cancelled =
        expect_status(app.send(Method::POST, &cancel, Some(&user.access), &json!({})).await, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    // The worker stops the sandbox and never overwrites the cancel.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let run =
        expect_status(app.get(&format!("/api/backtests/runs/{id}/"), Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let again = app.send(Method::POST, &cancel, Some(&user.access), &json!({})).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn without_the_sandbox_backtests_are_refused_with_503() {
    let app = spawn_app().await;
    let user = app.register("no-sandbox").await;
    let refused = quick_run(&app, &user.access, json!({"strategy_code": SMA_CROSS, "symbol": "GOOG"})).await;
    let refused = expect_status(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(refused.to_string().contains("sandbox setup") || refused.to_string().contains("bubblewrap"), "{refused}");
}

/// The job table's rules, on this backend: a dead worker's lease expires
/// and its run goes back to the queue, failing for good after three
/// attempts; at most two runs of a user run at once; a cancelled run's
/// late result is dropped. (This server's own workers stay idle: it has
/// no sandbox.)
#[tokio::test]
async fn leases_expire_to_the_queue_attempts_run_out_and_users_get_two_at_a_time() {
    use chrono::{Duration, Utc};
    use store::backtests::{NewBacktestRun, RunEnding};

    let app = spawn_app().await;
    let user = app.register("queue-owner").await;
    let other = app.register("queue-neighbour").await;
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let queue = |owner: i64, run_id: &'static str| {
        let store = store.clone();
        async move {
            let (symbols, parameters) = (json!(["GOOG"]), json!({}));
            let run = NewBacktestRun {
                run_id,
                user_id: owner,
                strategy_id: None,
                code: "pass",
                symbols: &symbols,
                parameters: &parameters,
                created_at: Utc::now(),
            };
            store.queue_backtest(&run).await.unwrap()
        }
    };
    let past = || Utc::now() - Duration::seconds(1);
    let later = || Utc::now() + Duration::minutes(5);

    let abandoned = queue(user.id, "bt_0000000a").await;
    for attempt in 1..=3 {
        let claimed = store.claim_backtest("dead-worker", 2, past(), Utc::now()).await.unwrap().unwrap();
        assert_eq!((claimed.id, claimed.attempts), (abandoned.id, attempt));
        assert_eq!(store.reclaim_expired_backtests(3, Utc::now()).await.unwrap().total(), 1);
    }
    let failed = app.get(&format!("/api/backtests/runs/{}/", abandoned.id), Some(&user.access)).await;
    let failed = expect_status(failed, StatusCode::OK).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error_message"].as_str().unwrap().contains("stopped 3 times"), "{failed}");

    // Two of a user's runs at once; the third waits, a neighbour's does not.
    for run_id in ["bt_0000000b", "bt_0000000c", "bt_0000000d"] {
        queue(user.id, run_id).await;
    }
    let neighbour = queue(other.id, "bt_0000000e").await;
    let first = store.claim_backtest("live-worker", 2, later(), Utc::now()).await.unwrap().unwrap();
    let second = store.claim_backtest("live-worker", 2, later(), Utc::now()).await.unwrap().unwrap();
    let third = store.claim_backtest("live-worker", 2, later(), Utc::now()).await.unwrap().unwrap();
    assert_eq!((first.user_id, second.user_id), (user.id, user.id));
    assert_eq!(third.id, neighbour.id, "the user's third run waits for one of the two");
    assert!(store.claim_backtest("live-worker", 2, later(), Utc::now()).await.unwrap().is_none());
    assert_eq!(store.reclaim_expired_backtests(3, Utc::now()).await.unwrap().total(), 0, "live leases stay");

    // Cancelled while running: the worker's late result is dropped.
    let cancelled = store.cancel_backtest(first.id, user.id, Utc::now()).await.unwrap().unwrap();
    assert_eq!(cancelled.status, "cancelled");
    let result = json!({"ok": true});
    let ending = RunEnding {
        status: "completed",
        result: Some(&result),
        error_message: None,
        error_traceback: None,
        execution_time: 1.0,
        at: Utc::now(),
    };
    assert!(!store.finish_backtest(first.id, "live-worker", &ending).await.unwrap());
    assert!(store.finish_backtest(second.id, "live-worker", &ending).await.unwrap());
    assert!(store.claim_backtest("live-worker", 2, later(), Utc::now()).await.unwrap().is_some(), "room again");
}

/// `algoagent worker` runs the queue on a machine that serves no HTTP, as
/// in the compose file: the HTTP replicas (`SANDBOX_WORKERS=0`) have no
/// sandbox at all and take backtests as long as a worker reports in.
#[tokio::test]
async fn a_worker_process_runs_what_an_http_only_replica_queued() {
    let Some(env_dir) = std::env::var("ALGOAGENT_SANDBOX_ENV").ok() else { return };
    let app = spawn_app_with(&[
        ("SANDBOX_WORKERS", "0"),
        ("SANDBOX_ENV_DIR", "/nonexistent/sandbox-env"),
        ("AI_DEADLINE_SECS", "2"),
        ("REQUEST_TIMEOUT_SECS", "4"),
    ])
    .await;
    let user = app.register("queue-only").await;
    let body = json!({"strategy_code": SMA_CROSS, "symbol": "EURUSD"});
    // No sandbox here and no worker anywhere: refused, never queued forever.
    let refused =
        expect_status(quick_run(&app, &user.access, body.clone()).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(refused.to_string().contains("no backtest worker"), "{refused}");

    let env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), app.database_url.clone()),
        ("JWT_SECRET".into(), app.jwt_secret.clone()),
        ("DATA_DIR".into(), app.data_dir.path().display().to_string()),
        ("SANDBOX_ENV_DIR".into(), env_dir),
        ("SANDBOX_WORKERS".into(), "1".into()),
        ("RUN_MIGRATIONS".into(), "false".into()),
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
    ];
    let mut command = crate::cli::algoagent(&env);
    command.arg("worker");
    let mut worker = command.spawn().unwrap();
    let mut status = String::new();
    for _ in 0..150 {
        let response = quick_run(&app, &user.access, body.clone()).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            // The worker has not reported in yet.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        let run = response.json::<Value>().await.unwrap();
        status = run["status"].as_str().unwrap_or_default().to_string();
        break;
    }
    worker.kill().await.unwrap();
    assert_eq!(status, "completed", "the worker ran it; the replica answered with its result");
}

/// `run_backtest` runs a strategy's own Python on several symbols, and the
/// completed run leaves a `performance` record per symbol.
#[tokio::test]
async fn run_backtest_runs_a_strategy_on_each_symbol_and_records_its_performance() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("strategist").await;
    let created = app
        .post(
            "/api/strategies/strategies/",
            Some(&user.access),
            &json!({"name": "Crossover", "strategy_code": SMA_CROSS}),
        )
        .await;
    let strategy = expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap();
    let body =
        json!({"strategy_id": strategy, "symbols": ["goog", "eurusd", "goog", "b@d"], "start_date": "2012-01-01"});
    let run = app.post("/api/backtests/api/run_backtest/", Some(&user.access), &body).await;
    let run = expect_status(run, StatusCode::OK).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["symbols"], json!(["GOOG", "EURUSD"]), "uppercased, deduplicated, the bad one dropped");
    assert!(run["result_summary"]["total_trades"].is_u64(), "{run}");

    let performance =
        app.get(&format!("/api/strategies/performance/?strategy_id={strategy}"), Some(&user.access)).await;
    let performance = expect_status(performance, StatusCode::OK).await;
    assert_eq!(performance["count"], 2, "{performance}");
    let symbols: Vec<&str> =
        performance["results"].as_array().unwrap().iter().map(|p| p["symbol"].as_str().unwrap()).collect();
    assert!(symbols.contains(&"GOOG") && symbols.contains(&"EURUSD"), "{performance}");

    let missing = app
        .post(
            "/api/backtests/api/run_backtest/",
            Some(&user.access),
            &json!({"strategy_id": 999_999, "symbols": ["GOOG"]}),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let no_symbols = app
        .post("/api/backtests/api/run_backtest/", Some(&user.access), &json!({"strategy_id": strategy, "symbols": []}))
        .await;
    assert_eq!(no_symbols.status(), StatusCode::BAD_REQUEST);
}

/// A daily series of `bars` bars from 2020-01-01, a slow sine around 100.
fn synthetic_csv(bars: usize) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    let mut csv = String::from("Date,Open,High,Low,Close,Volume\n");
    for n in 0..bars {
        let day = start + chrono::Duration::days(n as i64);
        let close = 100.0 + 10.0 * (n as f64 / 15.0).sin();
        csv.push_str(&format!("{day},{close},{},{},{close},1000\n", close + 1.0, close - 1.0));
    }
    csv
}

/// Users upload their own OHLCV CSV and run on it by symbol; it is theirs
/// alone, validated on the way in, and can be deleted.
#[tokio::test]
async fn users_backtest_their_own_uploaded_series() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("data-owner").await;
    let upload = |symbol: &str, csv: String| {
        app.client
            .post(app.url(&format!("/api/backtests/data/upload/?symbol={symbol}")))
            .bearer_auth(&user.access)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
    };
    let stored = expect_status(upload("mine.x", synthetic_csv(300)).await.unwrap(), StatusCode::CREATED).await;
    assert_eq!((stored["symbol"].as_str(), stored["bars"].as_i64()), (Some("MINE.X"), Some(300)), "{stored}");
    assert_eq!(stored["first_bar"], "2020-01-01");

    let listed = expect_status(app.get("/api/backtests/data/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(listed["datasets"][0]["symbol"], "MINE.X");
    assert!(listed["samples"].as_array().unwrap().contains(&json!("GOOG")));

    let run = quick_run(&app, &user.access, json!({"strategy_code": SMA_CROSS, "symbol": "mine.x"})).await;
    let run = expect_status(run, StatusCode::OK).await;
    assert_eq!(run["symbol_stats"][0]["symbol"], "MINE.X");
    assert_eq!(run["symbol_stats"][0]["bars"], 300, "{run}");
    assert!(run["metrics"]["start_date"].as_str().unwrap().starts_with("2020-01-01"), "{run}");

    // Another user's runs cannot name it.
    let other = app.register("data-stranger").await;
    let refused = quick_run(&app, &other.access, json!({"strategy_code": SMA_CROSS, "symbol": "MINE.X"})).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    // Bad files and names are refused with the reason; nothing is stored.
    let bad = upload("BAD", "Date,Open,High,Low,Close\n2020-01-02,1,2,1,1\n2020-01-01,1,2,1,1\n".into()).await.unwrap();
    let bad = expect_status(bad, StatusCode::BAD_REQUEST).await;
    assert!(bad.to_string().contains("rise"), "{bad}");
    let named = upload("no%20spaces", synthetic_csv(5)).await.unwrap();
    assert_eq!(named.status(), StatusCode::BAD_REQUEST);

    let id = stored["id"].as_i64().unwrap();
    let deleted = app.send(Method::DELETE, &format!("/api/backtests/data/{id}/"), Some(&user.access), &json!({})).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = quick_run(&app, &user.access, json!({"strategy_code": SMA_CROSS, "symbol": "MINE.X"})).await;
    assert_eq!(gone.status(), StatusCode::BAD_REQUEST);
}

/// Every indicator the translator knows, both sides, lines by name, prices
/// and numbers: the code it writes runs in the real backtesting.py.
fn every_indicator() -> Value {
    json!({
        "strategy_name": "Everything at once",
        "indicators": {
            "fast": {"type": "ema", "period": 10}, "slow": {"type": "moving_average", "period": 30},
            "rsi": {"type": "rsi"}, "macd": {"type": "macd"}, "bands": {"type": "bollinger_bands", "std_dev": 2.5},
            "atr": {"type": "atr"}, "stoch": {"type": "stochastic", "period": 14, "signal": 3},
            "close": {"type": "price"}
        },
        "entry_rules": {
            "long": [{"type": "crossover", "indicator1": "fast", "indicator2": "slow"}],
            "short": [{"type": "crossunder", "indicator1": "macd", "indicator2": "macd.signal"},
                      {"type": "crossunder", "indicator1": "close", "indicator2": "bands.upper"}]
        },
        "exit_rules": {
            "long": [{"type": "crossunder", "indicator1": "fast", "indicator2": "slow"},
                     {"type": "crossover", "indicator1": "rsi", "indicator2": "75"}],
            "short": [{"type": "crossover", "indicator1": "stoch", "indicator2": "stoch.d"},
                      {"type": "crossover", "indicator1": "atr", "indicator2": "50"}]
        },
        "risk_management": {"stop_loss": 0.03, "take_profit": 0.08, "position_sizing": 1}
    })
}

/// `quick_run` takes executable canonical JSON and runs it translated
/// locally: no AI call (this server has no Gemini behind it at all).
#[tokio::test]
async fn quick_run_translates_executable_canonical_json_locally() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("canonical").await;
    let crossing = crate::helpers::two_emas("Two EMAs");
    let body = json!({"strategy_code": crossing.to_string(), "symbol": "GOOG"});
    let done = expect_status(quick_run(&app, &user.access, body).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["strategy_class"], "TwoEMAs");
    assert!(done["summary"]["total_trades"].as_u64().is_some_and(|n| n > 0), "{}", done["summary"]);

    let body = json!({"strategy_code": every_indicator().to_string(), "symbol": "EURUSD"});
    let done = expect_status(quick_run(&app, &user.access, body).await, StatusCode::OK).await;
    assert_eq!(done["status"], "completed", "{}", done["error"]);
    assert!(done["summary"]["total_trades"].as_u64().is_some_and(|n| n > 0), "{}", done["summary"]);

    // What it cannot translate is a 400 naming the field; nothing is queued.
    let mut in_words = crossing.clone();
    in_words["entry_rules"] = json!(["Buy when the trend turns up"]);
    let refused = quick_run(&app, &user.access, json!({"strategy_code": in_words.to_string()})).await;
    let refused = expect_status(refused, StatusCode::BAD_REQUEST).await;
    assert!(refused["strategy_code.entry_rules[0]"].is_array(), "{refused}");
    let mut unknown = crossing.clone();
    unknown["exit_rules"][0]["indicator2"] = json!("ghost");
    let refused = quick_run(&app, &user.access, json!({"strategy_code": unknown.to_string()})).await;
    let refused = expect_status(refused, StatusCode::BAD_REQUEST).await;
    assert!(refused.to_string().contains("ghost"), "{refused}");
    let steps = json!({"title": "x", "steps": [{"order": 1, "text": "Buy low", "kind": "entry"}]});
    let refused = quick_run(&app, &user.access, json!({"strategy_code": steps.to_string()})).await;
    assert!(expect_status(refused, StatusCode::BAD_REQUEST).await.to_string().contains("generate_executable_code"));
    let broken = quick_run(&app, &user.access, json!({"strategy_code": "{\"strategy_name\": "})).await;
    assert_eq!(expect_status(broken, StatusCode::BAD_REQUEST).await["error"], "Invalid JSON format");
    let runs = expect_status(app.get("/api/backtests/runs/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 2, "only the two good ones ran: {runs}");
}

const SLOW: &str = "import time\nfrom backtesting import Strategy\n\nclass Slow(Strategy):\n    def init(self):\n        time.sleep(SECONDS)\n\n    def next(self):\n        pass\n";

/// `GET runs/{id}/?stream=true`: `progress` at each change of state, then
/// `done` with the run and its result.
#[tokio::test]
async fn a_run_streams_its_progress_until_it_ends() {
    let Some(app) = with_sandbox(&[("AI_DEADLINE_SECS", "1"), ("REQUEST_TIMEOUT_SECS", "2")]).await else { return };
    let user = app.register("follower").await;
    let slow = SLOW.replace("SECONDS", "3");
    let queued = quick_run(&app, &user.access, json!({"strategy_code": slow, "symbol": "GOOG"})).await;
    let id = expect_status(queued, StatusCode::ACCEPTED).await["id"].as_i64().unwrap();

    let path = format!("/api/backtests/runs/{id}/?stream=true");
    let mut events = crate::helpers::EventReader::new(app.get(&path, Some(&user.access)).await);
    let events = events.rest().await;
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last.name, "done", "{events:?}");
    assert_eq!(last.data["status"], "completed", "{last:?}");
    assert_eq!(last.data["result"]["run_id"], last.data["run_id"], "{last:?}");
    assert!(last.data["result"]["metrics"]["equity_final"].is_number(), "{last:?}");
    let stages: Vec<&str> = progress.iter().map(|e| e.data["stage"].as_str().unwrap()).collect();
    assert!(progress.iter().all(|e| e.name == "progress"), "{events:?}");
    assert!(stages.contains(&"running") && stages.last() == Some(&"completed"), "{stages:?}");
    assert!(progress.iter().any(|e| e.data["detail"].as_str().unwrap().contains("attempt 1 of 3")), "{events:?}");

    // A finished run streams at once; someone else's is a 404.
    let mut again = crate::helpers::EventReader::new(app.get(&path, Some(&user.access)).await);
    let names: Vec<String> = again.rest().await.into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["progress", "done"]);
    let stranger = app.register("stranger").await;
    assert_eq!(app.get(&path, Some(&stranger.access)).await.status(), StatusCode::NOT_FOUND);
}

/// A server that stops while a backtest runs gives it back to the queue,
/// the attempt refunded, for another worker at once (not when the lease
/// runs out).
#[tokio::test]
async fn shutdown_gives_a_running_backtest_back_to_the_queue() {
    let Some(mut app) = with_sandbox(&[("AI_DEADLINE_SECS", "1"), ("REQUEST_TIMEOUT_SECS", "2")]).await else {
        return;
    };
    let user = app.register("interrupted").await;
    let slow = SLOW.replace("SECONDS", "60");
    let queued = quick_run(&app, &user.access, json!({"strategy_code": slow, "symbol": "GOOG"})).await;
    let id = expect_status(queued, StatusCode::ACCEPTED).await["id"].as_i64().unwrap();
    let mut running = json!(null);
    for _ in 0..50 {
        running =
            expect_status(app.get(&format!("/api/backtests/runs/{id}/"), Some(&user.access)).await, StatusCode::OK)
                .await;
        if running["status"] == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(running["attempts"], 1);

    let stopping = std::time::Instant::now();
    app.shutdown().await;
    assert!(stopping.elapsed() < std::time::Duration::from_secs(10), "the sandbox was stopped, not waited for");
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let run = store.backtest_run(id, user.id).await.unwrap().unwrap();
    assert_eq!((run.status.as_str(), run.attempts, run.worker.as_deref()), ("queued", 0, None), "{run:?}");
    // Its workers signed off: HTTP-only replicas stop counting on them at once.
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(store.live_backtest_worker_slots(an_hour_ago).await.unwrap(), 0);
}

/// Code that passes every static check and fails only when it runs.
pub(crate) const FAILS_WHEN_RUN: &str = "```python\nfrom backtesting import Strategy\n\n\nclass EmaCross(Strategy):\n    def init(self):\n        self.levels = {}\n\n    def next(self):\n        if self.levels['support'] > self.data.Close[-1]:\n            self.buy()\n```\n";

/// With a `test_config`, generation backtests the code it wrote; the fixer
/// gets the run's real traceback; `fix_errors` runs the code to confirm.
#[tokio::test]
async fn generation_backtests_its_code_and_fixes_from_the_real_traceback() {
    use gemini_sim::Scripted;
    let sim = crate::helpers::start_sim().await;
    let Some(app) = with_sandbox_and_sim(&sim).await else { return };
    let user = app.register("closing-the-loop").await;
    let token = Some(user.access.as_str());
    let created = app.post("/api/strategies/strategies/", token, &json!({"name": "EMA cross"})).await;
    let strategy = expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap();
    let test_config = json!({"symbol": "GOOG", "period": "2y", "interval": "1d"});

    // Runs and passes: real metrics, and a performance record.
    let body = json!({"canonical_json": crate::helpers::two_emas("EMA cross"), "strategy_id": strategy,
                      "test_config": test_config});
    let answer = app.post("/api/strategies/api/generate_executable_code/", token, &body).await;
    let answer = expect_status(answer, StatusCode::OK).await;
    let execution = &answer["execution"];
    assert_eq!(
        (execution["attempted"].as_bool(), execution["success"].as_bool()),
        (Some(true), Some(true)),
        "{answer}"
    );
    assert_eq!(execution["validation_status"], "backtest_passed");
    assert!(execution["metrics"]["equity_final"].is_number(), "{answer}");
    assert_eq!(execution["symbols"], json!(["GOOG"]));
    assert!(answer["message"].as_str().unwrap().contains("backtest on GOOG completed"), "{answer}");
    let performance = app.get(&format!("/api/strategies/performance/?strategy_id={strategy}"), token).await;
    assert_eq!(expect_status(performance, StatusCode::OK).await["count"], 1);

    // Fails when run: the fixer is sent the traceback, and its fix runs.
    sim.sim.script([Scripted::Text { text: FAILS_WHEN_RUN.into() }]);
    let calls = sim.sim.requests().len();
    let body = json!({"canonical_json": crate::helpers::two_emas("EMA cross"), "strategy_id": strategy,
                      "test_config": test_config, "max_fix_attempts": 2});
    let answer = app.post("/api/strategies/api/generate_with_auto_fix/", token, &body).await;
    let answer = expect_status(answer, StatusCode::OK).await;
    assert_eq!(answer["error_fixing"]["final_status"], "fixed", "{answer}");
    assert_eq!(answer["fix_history"][0]["error_type"], "key_error", "{answer}");
    assert!(answer["fix_history"][0]["error_message"].as_str().unwrap().contains("Traceback"), "{answer}");
    assert_eq!(answer["execution"]["success"], true, "{answer}");
    let fixer = &sim.sim.requests()[calls + 1].prompt;
    assert!(fixer.contains("KeyError: 'support'") && fixer.contains("in next"), "{fixer}");

    // generate_executable_code does not fix: the failed run is reported as it is.
    sim.sim.script([Scripted::Text { text: FAILS_WHEN_RUN.into() }]);
    let body = json!({"canonical_json": crate::helpers::two_emas("EMA cross"), "strategy_id": strategy,
                      "test_config": test_config});
    let answer = app.post("/api/strategies/api/generate_executable_code/", token, &body).await;
    let answer = expect_status(answer, StatusCode::OK).await;
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["execution"]["success"], false, "{answer}");
    assert_eq!(answer["execution"]["validation_status"], "backtest_failed");
    assert!(answer["execution"]["error_message"].as_str().unwrap().contains("KeyError"), "{answer}");

    // fix_errors runs the latest (failing) code, fixes it, runs the fix.
    let fixed = app
        .post(
            &format!("/api/strategies/strategies/{strategy}/fix_errors/"),
            token,
            &json!({"test_config": test_config}),
        )
        .await;
    let fixed = expect_status(fixed, StatusCode::OK).await;
    assert_eq!((fixed["success"].as_bool(), fixed["final_status"].as_str()), (Some(true), Some("fixed")), "{fixed}");
    assert_eq!(fixed["execution"]["validation_status"], "backtest_passed", "{fixed}");
    assert!(fixed["fixes"][0]["error_message"].as_str().unwrap().contains("KeyError: 'support'"), "{fixed}");

    // A symbol without data is a 400 before any AI call is paid for.
    let calls = sim.sim.requests().len();
    let body = json!({"canonical_json": crate::helpers::two_emas("x"), "test_config": {"symbol": "AAPL"}});
    let refused = app.post("/api/strategies/api/generate_executable_code/", token, &body).await;
    assert!(expect_status(refused, StatusCode::BAD_REQUEST).await.to_string().contains("GOOG"));
    assert_eq!(sim.sim.requests().len(), calls, "nothing reached Gemini");
}

/// The rest of the old surface: configs, and a run's results, trades and
/// alerts as rows to filter; search and health.
#[tokio::test]
async fn configs_results_trades_alerts_search_and_health() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("surface").await;
    let token = Some(user.access.as_str());
    let body = json!({"name": "Two years", "start_date": "2011-01-01", "end_date": "2013-01-01",
                      "initial_capital": 50000, "commission": 0.001, "is_template": true});
    let config = app.post("/api/backtests/api/create_config/", token, &body).await;
    let config = expect_status(config, StatusCode::CREATED).await;
    assert_eq!((config["initial_capital"].as_f64(), config["slippage"].as_f64()), (Some(50000.0), Some(0.0005)));
    let config_id = config["id"].as_i64().unwrap();
    let templates = expect_status(app.get("/api/backtests/configs/templates/", token).await, StatusCode::OK).await;
    assert_eq!(templates["count"], 1);
    for bad in [
        json!({"name": "x", "start_date": "2013-01-01", "end_date": "2012-01-01"}),
        json!({"name": "x", "commission": 2}),
        json!({"start_date": "2012-01-01"}),
    ] {
        let refused = app.post("/api/backtests/configs/", token, &bad).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let patched = app
        .send(Method::PATCH, &format!("/api/backtests/configs/{config_id}/"), token, &json!({"description": "GOOG"}))
        .await;
    assert_eq!(expect_status(patched, StatusCode::OK).await["description"], "GOOG");

    let created =
        app.post("/api/strategies/strategies/", token, &json!({"name": "Crossing", "strategy_code": SMA_CROSS})).await;
    let strategy = expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap();
    let run = app
        .post(
            "/api/backtests/api/run_backtest/",
            token,
            &json!({"strategy_id": strategy, "config_id": config_id, "symbols": ["GOOG"]}),
        )
        .await;
    let run = expect_status(run, StatusCode::OK).await;
    assert_eq!(run["parameters"]["config_id"], config_id);
    assert_eq!(
        (run["parameters"]["initial_capital"].as_f64(), run["parameters"]["start_date"].as_str()),
        (Some(50000.0), Some("2011-01-01"))
    );
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let id = run["id"].as_i64().unwrap();
    // Without a config: an "Auto-config for <name>" is made for it.
    let auto = app
        .post("/api/backtests/api/run_backtest/", token, &json!({"strategy_id": strategy, "symbols": ["EURUSD"]}))
        .await;
    let auto = expect_status(auto, StatusCode::OK).await;
    assert_eq!(auto["parameters"]["config_name"], "Auto-config for Crossing");
    let configs = expect_status(app.get("/api/backtests/configs/", token).await, StatusCode::OK).await;
    assert_eq!(configs["count"], 2);

    let results = expect_status(app.get("/api/backtests/results/", token).await, StatusCode::OK).await;
    assert_eq!(results["count"], 2);
    let result = expect_status(app.get(&format!("/api/backtests/results/{id}/"), token).await, StatusCode::OK).await;
    assert_eq!(result["run_id"], run_id.as_str());
    let total = result["total_trades"].as_i64().unwrap();
    assert!(total > 0 && result["final_portfolio_value"].is_number(), "{result}");
    let trades =
        expect_status(app.get(&format!("/api/backtests/trades/?run_id={run_id}"), token).await, StatusCode::OK).await;
    assert_eq!(trades["count"].as_i64(), Some(total));
    assert_eq!(
        (trades["results"][0]["symbol"].as_str(), trades["results"][0]["status"].as_str()),
        (Some("GOOG"), Some("closed"))
    );
    let longs =
        expect_status(app.get("/api/backtests/trades/?symbol=eurusd&trade_type=long", token).await, StatusCode::OK)
            .await;
    assert!(longs["results"].as_array().unwrap().iter().all(|t| t["symbol"] == "EURUSD" && t["trade_type"] == "long"));
    let trade_id = trades["results"][0]["id"].as_i64().unwrap();
    let alerts =
        expect_status(app.get(&format!("/api/backtests/runs/{id}/alerts/"), token).await, StatusCode::OK).await;
    assert!(alerts.as_array().unwrap().iter().any(|a| a["alert_type"] == "success"), "{alerts}");
    let all_alerts = expect_status(app.get("/api/backtests/alerts/", token).await, StatusCode::OK).await;
    assert!(all_alerts["count"].as_i64().unwrap() >= 2);

    let listed =
        expect_status(app.get("/api/backtests/runs/?status=completed&symbols=goog", token).await, StatusCode::OK).await;
    assert_eq!((listed["count"].as_i64(), listed["results"][0]["run_id"].as_str()), (Some(1), Some(run_id.as_str())));
    let found =
        app.post("/api/backtests/api/search/", token, &json!({"symbols": ["EURUSD"], "strategy_id": strategy})).await;
    let found = expect_status(found, StatusCode::OK).await;
    assert_eq!((found["count"].as_i64(), found["runs"][0]["run_id"].clone()), (Some(1), auto["run_id"].clone()));
    let bad_search = app.post("/api/backtests/api/search/", token, &json!({"start_date_from": "last week"})).await;
    assert!(expect_status(bad_search, StatusCode::BAD_REQUEST).await["start_date_from"].is_array());
    let health = expect_status(app.get("/api/backtests/api/health/", token).await, StatusCode::OK).await;
    assert_eq!((health["runs_count"].as_i64(), health["configs_count"].as_i64()), (Some(2), Some(2)));
    assert_eq!(health["runner_available"], true);

    let stranger = app.register("surface-stranger").await;
    for path in [
        format!("/api/backtests/configs/{config_id}/"),
        format!("/api/backtests/results/{id}/"),
        format!("/api/backtests/trades/{trade_id}/"),
        format!("/api/backtests/runs/{id}/alerts/"),
    ] {
        assert_eq!(app.get(&path, Some(&stranger.access)).await.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let theirs = app.get("/api/backtests/trades/", Some(&stranger.access)).await;
    assert_eq!(expect_status(theirs, StatusCode::OK).await["count"], 0);
    let foreign = app
        .post(
            "/api/backtests/api/run_backtest/",
            Some(&stranger.access),
            &json!({"strategy_id": strategy, "symbols": ["GOOG"]}),
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
}

/// A validation run whose workers keep dying is failed by the lease sweep,
/// and its strategy hears it: `invalid`, with the reason recorded, not
/// `validating` for ever. (This server's workers never claim: no sandbox.)
#[tokio::test]
async fn a_validation_run_failed_by_the_lease_sweep_settles_its_strategy() {
    use chrono::{Duration, Utc};
    let app = spawn_app().await;
    let user = app.register("orphaned").await;
    let token = Some(user.access.as_str());
    let created =
        app.post("/api/strategies/strategies/", token, &json!({"name": "Stuck", "status": "validating"})).await;
    let strategy = expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap();
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let (symbols, parameters) = (json!(["GOOG"]), json!({"purpose": "validate_strategy"}));
    let run = store
        .queue_backtest(&store::backtests::NewBacktestRun {
            run_id: "bt_0000dead",
            user_id: user.id,
            strategy_id: Some(strategy),
            code: "pass",
            symbols: &symbols,
            parameters: &parameters,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    for _ in 0..3 {
        let past = Utc::now() - Duration::seconds(1);
        let claimed = store.claim_backtest("dead-worker", 2, past, Utc::now()).await.unwrap().unwrap();
        assert_eq!(claimed.id, run.id);
        // The server's own sweep (every 2 s) takes the expired lease back.
        for _ in 0..50 {
            if store.backtest_status(run.id).await.unwrap().as_deref() != Some("running") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert_eq!(store.backtest_status(run.id).await.unwrap().as_deref(), Some("failed"));
    let mut status = String::new();
    for _ in 0..50 {
        let detail =
            expect_status(app.get(&format!("/api/strategies/strategies/{strategy}/"), token).await, StatusCode::OK)
                .await;
        status = detail["status"].as_str().unwrap().to_string();
        if status != "validating" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "invalid");
    let history = app.get(&format!("/api/strategies/strategies/{strategy}/validation_history/"), token).await;
    let history = expect_status(history, StatusCode::OK).await;
    assert_eq!(history[0]["validation_type"], "backtest");
    assert!(history[0]["errors"][0].as_str().unwrap().contains("stopped 3 times"), "{history}");
    let alerts =
        expect_status(app.get(&format!("/api/backtests/runs/{}/alerts/", run.id), token).await, StatusCode::OK).await;
    assert_eq!(alerts[0]["alert_type"], "error");
}
