//! The live backtest stream, `ws/backtest/stream/`, driven by a real
//! WebSocket client (tokio-tungstenite), and its SSE twin: the messages in
//! order, their figures against the same run done directly, one run shared
//! by its watchers, a run nobody watches cancelled, each bad message's
//! answer, and the memory 50 concurrent streams take.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::backtests::SMA_CROSS;
use crate::cli::ServerProcess;
use crate::helpers::{
    base_env, expect_status, register_at, spawn_app_with, with_sandbox, EventReader, TestApp, TestDatabase, TestUser,
};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const STREAM: &str = "/ws/backtest/stream/";

fn ws_url(base: &str, token: Option<&str>) -> String {
    let query = token.map(|token| format!("?token={token}")).unwrap_or_default();
    format!("{}{STREAM}{query}", base.replacen("http://", "ws://", 1))
}

async fn connect(app: &TestApp, token: Option<&str>) -> Socket {
    connect_to(&app.base, token).await
}

async fn connect_to(base: &str, token: Option<&str>) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(ws_url(base, token)).await.expect("the WebSocket connects");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::Text(message.to_string().into())).await.unwrap();
}

/// The next JSON message; `None` once the server closed the connection.
async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        let received = tokio::time::timeout(Duration::from_secs(90), socket.next()).await.expect("a message in time");
        match received {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).expect("messages are JSON")),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Messages until a stream ends: the `stats` after `complete`, or an `error`.
async fn until_end(socket: &mut Socket) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::new();
    while let Some(message) = next(socket).await {
        let kind = message["type"].as_str().unwrap_or_default().to_string();
        let after_complete = messages.last().is_some_and(|last| last["type"] == "complete");
        messages.push(message);
        if kind == "error" || (kind == "stats" && after_complete) {
            return messages;
        }
    }
    panic!("the stream closed before it ended: {messages:?}");
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

fn close_to(ours: &Value, theirs: &Value, what: &str) {
    match (ours.as_f64(), theirs.as_f64()) {
        (Some(ours), Some(theirs)) => {
            assert!((ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0), "{what}: {ours} streamed, {theirs} direct");
        }
        _ => assert_eq!(ours, theirs, "{what}"),
    }
}

#[tokio::test]
async fn a_websocket_stream_shows_the_whole_run_and_matches_the_same_run_done_directly() {
    let Some(app) = with_sandbox(&[("STREAM_BAR_MS", "1")]).await else { return };
    let user = app.register("streamer").await;
    let mut socket = connect(&app, Some(&user.access)).await;
    // The old UI's spellings: an alias period and interval, a number as a string.
    let config = json!({"symbol": "goog", "period": "1year", "interval": "daily", "strategy_code": SMA_CROSS,
                        "initial_balance": "20000", "commission": 0.001, "indicators": {"sma": [10, 30]}});
    send(&mut socket, json!({"action": "start_backtest", "config": config})).await;
    let messages = until_end(&mut socket).await;

    let loading = &messages[0];
    assert_eq!(
        (loading["type"].as_str(), loading["status"].as_str(), loading["symbol"].as_str()),
        (Some("metadata"), Some("loading_data"), Some("GOOG"))
    );
    assert_eq!((loading["period"].as_str(), loading["interval"].as_str()), (Some("1y"), Some("1d")));
    let streaming = &messages[1];
    assert_eq!(streaming["status"], "streaming_visualization", "{streaming}");
    let bars = streaming["total_bars"].as_u64().unwrap() as usize;
    let trades = streaming["total_trades"].as_u64().unwrap() as usize;
    assert!((240..=260).contains(&bars), "a year of daily bars: {bars}");
    assert!(trades > 0, "the SMA cross trades over a year");
    assert_eq!(
        messages[2],
        json!({"type": "stats", "total_trades": 0, "winning_trades": 0, "losing_trades": 0,
                                   "pnl": 0.0, "win_rate": 0.0})
    );

    let candles = of_type(&messages, "candle");
    assert_eq!(candles.len(), bars, "a candle per bar");
    for (n, candle) in candles.iter().enumerate() {
        assert_eq!(candle["bar_number"].as_u64(), Some(n as u64 + 1));
        assert!(candle["high"].as_f64() >= candle["low"].as_f64());
    }
    assert_eq!(candles.last().unwrap()["progress"], json!(100.0));
    assert_eq!(candles[0]["indicators"]["sma_10"], Value::Null, "warming up");
    assert!(candles[29]["indicators"]["sma_30"].is_number(), "{}", candles[29]);
    // Every signal follows the candle of its bar.
    for (n, message) in messages.iter().enumerate().filter(|(_, m)| m["type"] == "signal") {
        let candle = messages[..n].iter().rev().find(|m| m["type"] == "candle").expect("a candle before each signal");
        assert_eq!(candle["timestamp"], message["timestamp"], "{message}");
    }
    let signals = of_type(&messages, "signal");
    assert_eq!(signals.iter().filter(|s| s["action"] == "ENTRY").count(), trades);
    assert_eq!(signals.iter().filter(|s| s["action"] == "EXIT" && s["side"] == "CLOSE").count(), trades);

    let complete = &messages[messages.len() - 2];
    assert_eq!(complete["type"], "complete");
    assert_eq!(complete["total_bars"].as_u64(), Some(bars as u64));
    assert_eq!(complete["trades"].as_array().unwrap().len(), trades);
    let metrics = &complete["metrics"];
    assert_eq!(metrics["total_trades"].as_u64(), Some(trades as u64));
    let last = messages.last().unwrap();
    assert_eq!(last["total_trades"].as_u64(), Some(trades as u64));
    assert_eq!(
        last["winning_trades"].as_u64().unwrap() + last["losing_trades"].as_u64().unwrap(),
        metrics["winning_trades"].as_u64().unwrap() + metrics["losing_trades"].as_u64().unwrap()
    );
    let profit = metrics["final_equity"].as_f64().unwrap() - 20000.0;
    assert!((metrics["net_profit"].as_f64().unwrap() - profit).abs() <= 0.005, "net profit, to the cent: {metrics}");

    // The same run done directly: the same code on the same bars.
    let date = |candle: &Value| candle["timestamp"].as_str().unwrap()[..10].to_string();
    let body = json!({"strategy_code": SMA_CROSS, "symbol": "GOOG", "start_date": date(candles[0]),
                      "end_date": date(candles[bars - 1]), "initial_capital": 20000, "commission": 0.001});
    let direct = app.send(Method::POST, "/api/backtests/api/quick_run/", Some(&user.access), &body).await;
    let direct = expect_status(direct, StatusCode::OK).await;
    assert_eq!(direct["symbol_stats"][0]["bars"].as_u64(), Some(bars as u64), "the same bars");
    let theirs = &direct["metrics"];
    close_to(&metrics["total_return_pct"], &theirs["return_pct"], "return");
    close_to(&metrics["final_equity"], &theirs["equity_final"], "final equity");
    close_to(&metrics["sharpe_ratio"], &theirs["sharpe_ratio"], "Sharpe");
    close_to(&metrics["max_drawdown"], &theirs["max_drawdown"], "drawdown");
    close_to(&metrics["win_rate"], &theirs["win_rate"], "win rate");
    assert_eq!(metrics["total_trades"], theirs["total_trades"]);
    for (ours, theirs) in complete["trades"].as_array().unwrap().iter().zip(direct["trades"].as_array().unwrap()) {
        close_to(&ours["entry_price"], &theirs["entry_price"], "entry price");
        close_to(&ours["pnl"], &theirs["pnl"], "trade P&L");
    }
    // The run is kept like any other.
    let run = app.get(&format!("/api/backtests/runs/{}/", complete["run_id"]), Some(&user.access)).await;
    assert_eq!(expect_status(run, StatusCode::OK).await["status"], "completed");
}

async fn new_strategy(app: &TestApp, user: &TestUser) -> i64 {
    let created = app.post("/api/strategies/strategies/", Some(&user.access), &json!({"name": "Live SMA"})).await;
    expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap()
}

#[tokio::test]
async fn sse_gives_the_same_messages_another_client_can_watch_and_the_result_is_saved_to_the_strategy() {
    let Some(app) = with_sandbox(&[("STREAM_BAR_MS", "2")]).await else { return };
    let user = app.register("sse-watcher").await;
    let strategy = new_strategy(&app, &user).await;
    let config = json!({"symbol": "GOOG", "period": "6months", "strategy_code": SMA_CROSS, "strategy_id": strategy});
    let started = app
        .post("/api/backtests/stream/", Some(&user.access), &json!({"action": "start_backtest", "config": config}))
        .await;
    let mut first = EventReader::new(started);
    let loading = first.next().await.unwrap();
    assert_eq!((loading.name.as_str(), loading.data["status"].as_str()), ("metadata", Some("loading_data")));
    assert_eq!(loading.data["period"], "6mo");
    let streaming = first.next().await.unwrap();
    let run_id = streaming.data["run_id"].as_i64().expect("the run's id, for other watchers");
    // Another client of the user's watches the same run.
    let watched = app.get(&format!("/api/backtests/runs/{run_id}/live/"), Some(&user.access)).await;
    let mut second = EventReader::new(watched);
    let mut ours: Vec<Value> = vec![streaming.data.clone()];
    ours.extend(first.rest().await.into_iter().map(|event| {
        assert_eq!(event.data["type"].as_str(), Some(event.name.as_str()), "the event names the message's type");
        event.data
    }));
    let theirs: Vec<Value> = second.rest().await.into_iter().map(|event| event.data).collect();
    assert_eq!(ours, theirs, "one list of messages per run, whoever watches");
    let complete = &ours[ours.len() - 2];
    assert_eq!(complete["type"], "complete");

    let latest = app
        .get(&format!("/api/strategies/backtest-results/by_strategy/?strategy_id={strategy}"), Some(&user.access))
        .await;
    let latest = expect_status(latest, StatusCode::OK).await;
    assert_eq!(
        (latest["symbol"].as_str(), latest["period"].as_str(), latest["timeframe"].as_str()),
        (Some("GOOG"), Some("6mo"), Some("1d"))
    );
    assert_eq!(latest["total_trades"], complete["metrics"]["total_trades"]);
    close_to(&latest["total_return_pct"], &complete["metrics"]["total_return_pct"], "saved return");

    // Someone else's run is not theirs to watch.
    let stranger = app.register("stranger").await;
    let refused = app.get(&format!("/api/backtests/runs/{run_id}/live/"), Some(&stranger.access)).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
}

fn sleeping(seconds: u32) -> String {
    format!(
        "import time\nfrom backtesting import Strategy\n\nclass Slow(Strategy):\n    def init(self):\n        time.sleep({seconds})\n\n    def next(self):\n        pass\n"
    )
}

async fn only_run(app: &TestApp, user: &TestUser) -> Value {
    only_run_at(&app.client, &app.base, user).await
}

async fn only_run_at(client: &reqwest::Client, base: &str, user: &TestUser) -> Value {
    for _ in 0..100 {
        let runs = client.get(format!("{base}/api/backtests/runs/")).bearer_auth(&user.access).send().await.unwrap();
        let runs = expect_status(runs, StatusCode::OK).await;
        if let Some(run) = runs["results"].as_array().and_then(|runs| runs.first()) {
            return run.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream queued no run");
}

async fn run_status(app: &TestApp, user: &TestUser, id: i64) -> String {
    let run = app.get(&format!("/api/backtests/runs/{id}/"), Some(&user.access)).await;
    expect_status(run, StatusCode::OK).await["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn leaving_stops_only_that_clients_stream_and_a_run_nobody_watches_is_cancelled() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("leaver").await;
    let mut socket = connect(&app, Some(&user.access)).await;
    send(&mut socket, json!({"action": "start_backtest", "config": {"symbol": "GOOG", "strategy_code": sleeping(60)}}))
        .await;
    assert_eq!(next(&mut socket).await.unwrap()["status"], "loading_data");
    let id = only_run(&app, &user).await["id"].as_i64().unwrap();
    let watched = app.get(&format!("/api/backtests/runs/{id}/live/"), Some(&user.access)).await;
    let mut watcher = EventReader::new(watched);
    assert_eq!(watcher.next().await.unwrap().data["run_id"], id);

    // The client that started it leaves; the other still watches.
    socket.close(None).await.unwrap();
    drop(socket);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = run_status(&app, &user, id).await;
    assert!(status == "queued" || status == "running", "a watched run goes on: {status}");

    // The last watcher leaves: the run is cancelled (once the replica's
    // word that it is watched, 5 s, runs out), its sandbox stopped.
    drop(watcher);
    let mut status = String::new();
    for _ in 0..200 {
        status = run_status(&app, &user, id).await;
        if status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "cancelled");
}

#[tokio::test]
async fn a_run_watched_on_another_replica_goes_on_when_its_starter_leaves() {
    let Some(first) = with_sandbox(&[("STREAM_BAR_MS", "1")]).await else { return };
    let env_dir = std::env::var("ALGOAGENT_SANDBOX_ENV").unwrap();
    // An HTTP-only replica on the same database.
    let second = spawn_app_with(&[
        ("DATABASE_URL", first.database_url.as_str()),
        ("JWT_SECRET", first.jwt_secret.as_str()),
        ("SANDBOX_ENV_DIR", env_dir.as_str()),
        ("SANDBOX_WORKERS", "0"),
        ("STREAM_BAR_MS", "1"),
    ])
    .await;
    let user = first.register("two-replicas").await;
    let mut socket = connect(&first, Some(&user.access)).await;
    let config = json!({"symbol": "GOOG", "period": "3mo", "strategy_code": sleeping(8)});
    send(&mut socket, json!({"action": "start_backtest", "config": config})).await;
    assert_eq!(next(&mut socket).await.unwrap()["status"], "loading_data");
    let id = only_run(&first, &user).await["id"].as_i64().unwrap();
    let watched = second.get(&format!("/api/backtests/runs/{id}/live/"), Some(&user.access)).await;
    let mut watcher = EventReader::new(watched);
    assert_eq!(watcher.next().await.unwrap().data["status"], "loading_data");

    // Its starter leaves the first replica; the second's client still watches.
    socket.close(None).await.unwrap();
    drop(socket);
    let rest: Vec<Value> = watcher.rest().await.into_iter().map(|event| event.data).collect();
    assert_eq!(rest[rest.len() - 2]["type"], "complete", "{:?}", rest.last());
    assert_eq!(run_status(&first, &user, id).await, "completed");
}

async fn error_of(socket: &mut Socket) -> String {
    let message = next(socket).await.expect("an answer");
    assert_eq!(message["type"], "error", "{message}");
    message["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_json_unknown_actions_unknown_symbols_and_missing_tokens_get_their_messages() {
    let app = spawn_app_with(&[("USER_MAX_STREAMS", "1")]).await;
    let user = app.register("careless").await;
    let mut socket = connect(&app, Some(&user.access)).await;
    socket.send(Message::Text("{not json".into())).await.unwrap();
    assert!(error_of(&mut socket).await.starts_with("Invalid JSON"));
    send(&mut socket, json!({"action": "dance"})).await;
    assert_eq!(error_of(&mut socket).await, "Unknown action: dance");
    send(&mut socket, json!({"config": {}})).await;
    assert_eq!(error_of(&mut socket).await, "Unknown action: None");
    send(&mut socket, json!({"action": "start_backtest", "config": {"symbol": "NOPE", "strategy_code": SMA_CROSS}}))
        .await;
    assert_eq!(next(&mut socket).await.unwrap()["status"], "loading_data");
    assert!(error_of(&mut socket).await.starts_with("No data found for symbol NOPE"));
    send(&mut socket, json!({"action": "start_backtest", "config": {"period": "forever", "strategy_code": SMA_CROSS}}))
        .await;
    assert!(error_of(&mut socket).await.starts_with("period: \"forever\" is not a period"));
    send(&mut socket, json!({"action": "start_backtest", "config": {"symbol": "GOOG"}})).await;
    assert!(error_of(&mut socket).await.starts_with("strategy_code: Send strategy_code"));
    send(
        &mut socket,
        json!({"action": "start_backtest", "config": {"strategy_code": "print('no strategy')", "strategy_id": 9999}}),
    )
    .await;
    assert_eq!(error_of(&mut socket).await, "Strategy 9999 not found");
    // The connection survived every mistake.
    send(&mut socket, json!({"action": "authenticate"})).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "authenticated");

    // One stream per user here (USER_MAX_STREAMS=1).
    let mut second = connect(&app, Some(&user.access)).await;
    assert!(error_of(&mut second).await.starts_with("You already have 1 streams open"));
    assert!(next(&mut second).await.is_none(), "and the connection is closed");
    drop(socket);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Without a token the first message must carry one.
    let mut anonymous = connect(&app, None).await;
    send(&mut anonymous, json!({"action": "start_backtest", "config": {"symbol": "GOOG"}})).await;
    assert!(error_of(&mut anonymous).await.starts_with("Authentication required"));
    assert!(next(&mut anonymous).await.is_none());
    let mut forged = connect(&app, Some("not-a-token")).await;
    assert_eq!(error_of(&mut forged).await, "Token is invalid or expired");
    assert!(next(&mut forged).await.is_none());
    let mut late = connect(&app, None).await;
    send(&mut late, json!({"action": "authenticate", "token": user.access})).await;
    assert_eq!(next(&mut late).await.unwrap(), json!({"type": "authenticated", "user_id": user.id}));
    send(&mut late, json!({"action": "stop"})).await;
    assert_eq!(error_of(&mut late).await, "Unknown action: stop");

    // Plain HTTP gets a JSON error, not an upgrade.
    let plain = app.get(STREAM, None).await;
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    assert!(plain.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("WebSocket"));
    // The SSE twin answers a bad config before it streams.
    let refused = app.post("/api/backtests/stream/", Some(&user.access), &json!({"interval": "fortnightly"})).await;
    let refused = expect_status(refused, StatusCode::BAD_REQUEST).await;
    assert!(refused["interval"][0].as_str().unwrap().contains("is not an interval"), "{refused}");
}

/// A process's memory figure from `/proc` (`VmRSS` now, `VmHWM` its peak), in bytes.
fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn fifty_concurrent_streams_stay_within_memory() {
    // Ten users, each starting one run that four more clients of theirs
    // watch, against a real `serve` process whose memory alone is read.
    const USERS: usize = 10;
    const WATCHERS: usize = 4;
    let Ok(env_dir) = std::env::var("ALGOAGENT_SANDBOX_ENV") else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let mut env = base_env(&dir, &database.url, &format!("jwt-{}", uuid::Uuid::new_v4().simple()));
    for (key, value) in [("SANDBOX_ENV_DIR", env_dir.as_str()), ("SANDBOX_WORKERS", "2"), ("USER_MAX_STREAMS", "5")] {
        env.push((key.to_string(), value.to_string()));
    }
    // The sandbox finds bubblewrap on the PATH.
    env.push(("PATH".to_string(), std::env::var("PATH").unwrap_or_default()));
    let server = ServerProcess::start(env).await;
    let client = reqwest::Client::new();
    let mut users = Vec::new();
    for n in 0..USERS {
        users.push(register_at(&client, &server.base, &format!("crowd{n}")).await);
    }
    let before = memory_of(server.pid(), "VmRSS:");
    let mut streams = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let mut starter = connect_to(&server.base, Some(&user.access)).await;
        let config =
            json!({"symbol": "GOOG", "period": "6mo", "strategy_code": SMA_CROSS, "initial_balance": 10000 + n});
        send(&mut starter, json!({"action": "start_backtest", "config": config})).await;
        streams.push(starter);
    }
    for user in &users {
        let id = only_run_at(&client, &server.base, user).await["id"].as_i64().unwrap();
        for _ in 0..WATCHERS {
            let mut watcher = connect_to(&server.base, Some(&user.access)).await;
            send(&mut watcher, json!({"action": "watch_backtest", "run_id": id})).await;
            streams.push(watcher);
        }
    }
    assert_eq!(streams.len(), 50);
    let ends = futures::future::join_all(streams.iter_mut().map(until_end)).await;
    let peak = memory_of(server.pid(), "VmHWM:");
    for messages in &ends {
        assert!(messages.len() > 2, "{messages:?}");
        let complete = &messages[messages.len() - 2];
        assert_eq!(complete["type"], "complete", "{:?}", messages.last());
        assert_eq!(
            of_type(messages, "candle").iter().map(|c| c["coalesced"].as_u64().unwrap_or(1)).sum::<u64>(),
            complete["total_bars"].as_u64().unwrap(),
            "every bar reaches every client"
        );
    }
    drop(streams);
    let (status, _) = server.terminate().await;
    assert!(status.success());
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    #[allow(clippy::print_stderr, reason = "the figure the issue asks to report")]
    {
        eprintln!(
            "50 concurrent live streams: the server's resident memory {:.1} MiB before, {:.1} MiB at its peak (+{:.1} MiB)",
            mib(before),
            mib(peak),
            mib(peak.saturating_sub(before))
        );
    }
    assert!(peak.saturating_sub(before) < 128 * 1024 * 1024, "50 streams took {} bytes", peak - before);
}
