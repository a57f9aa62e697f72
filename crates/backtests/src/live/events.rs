//! A finished run as the old app's live-stream messages, and the pacing of
//! those messages to one client.
//!
//! The list is a pure function of the run's bars and result: every replica
//! that builds it builds the same one, and each replica builds it once per
//! run however many clients watch ([`api_core::live_runs`]).

use std::time::Duration;

use market_data::Bar;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

/// An indicator drawn beside the candles: its key in each candle's
/// `indicators`, and what to compute.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndicatorSpec {
    pub key: String,
    pub name: String,
    pub parameters: Value,
}

/// What the list is built from.
pub struct RunView<'a> {
    pub run_id: i64,
    pub symbol: &'a str,
    pub period: &'a str,
    pub interval: &'a str,
    pub initial_balance: f64,
    /// Exactly the bars the run saw, in order (trades index into them).
    pub bars: &'a [Bar],
    /// The runner's result for the symbol: `metrics`, `trades`.
    pub result: &'a Value,
    pub indicators: &'a [IndicatorSpec],
}

fn time(bar: &Bar) -> String {
    api_core::time::iso8601(&bar.timestamp)
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// Running totals of closed trades, as `stats` says them.
#[derive(Debug, Default)]
struct Tally {
    trades: u64,
    wins: u64,
    losses: u64,
    pnl: f64,
}

impl Tally {
    fn add(&mut self, pnl: f64) {
        self.trades += 1;
        self.pnl += pnl;
        if pnl > 0.0 {
            self.wins += 1;
        } else if pnl < 0.0 {
            self.losses += 1;
        }
    }

    fn win_rate(&self) -> f64 {
        if self.trades == 0 {
            0.0
        } else {
            round(self.wins as f64 * 100.0 / self.trades as f64, 2)
        }
    }

    fn event(&self) -> Value {
        json!({
            "type": "stats",
            "total_trades": self.trades,
            "winning_trades": self.wins,
            "losing_trades": self.losses,
            "pnl": round(self.pnl, 2),
            "win_rate": self.win_rate(),
        })
    }
}

/// Each indicator's value at each bar, computed over the run's bars.
fn indicator_columns(view: &RunView<'_>) -> Vec<(String, Vec<Value>)> {
    view.indicators
        .iter()
        .filter_map(|spec| {
            market_data::indicators::calculate(&spec.name, &spec.parameters, view.bars)
                .ok()
                .map(|(values, _)| (spec.key.clone(), values))
        })
        .collect()
}

/// Where a signal falls among a bar's messages: a trade closing that was
/// opened earlier, then entries, then trades opened and closed on the bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    EarlierExit,
    Entry,
    SameBarExit,
}

/// The run's messages after `metadata{loading_data}`: `metadata` with the
/// totals, `stats`, per bar a `candle` and the `signal`s on it (with
/// `stats` after each exit), then `complete` and the final `stats`.
pub fn build(view: &RunView<'_>) -> Vec<Value> {
    let trades: Vec<&Value> = view.result["trades"].as_array().map(|t| t.iter().collect()).unwrap_or_default();
    let last_bar = view.bars.len().saturating_sub(1);
    let bar_of = |value: &Value| value.as_u64().and_then(|n| usize::try_from(n).ok()).map(|n| n.min(last_bar));
    let mut signals: Vec<(usize, Phase, usize)> = Vec::new();
    for (n, trade) in trades.iter().enumerate() {
        let entry = bar_of(&trade["entry_bar"]);
        if let Some(entry) = entry {
            signals.push((entry, Phase::Entry, n));
        }
        if let Some(exit) = bar_of(&trade["exit_bar"]) {
            let phase = if Some(exit) == entry { Phase::SameBarExit } else { Phase::EarlierExit };
            signals.push((exit, phase, n));
        }
    }
    signals.sort_unstable();

    let total = view.bars.len();
    let mut events = Vec::with_capacity(total + signals.len() * 2 + 4);
    events.push(json!({
        "type": "metadata",
        "status": "streaming_visualization",
        "run_id": view.run_id,
        "symbol": view.symbol,
        "period": view.period,
        "interval": view.interval,
        "total_bars": total,
        "total_trades": trades.len(),
        "start": view.bars.first().map(time),
        "end": view.bars.last().map(time),
    }));
    let mut tally = Tally::default();
    events.push(tally.event());
    let columns = indicator_columns(view);
    let mut next_signal = signals.iter().peekable();
    for (n, bar) in view.bars.iter().enumerate() {
        let mut candle = json!({
            "type": "candle",
            "bar_number": n + 1,
            "progress": round((n + 1) as f64 * 100.0 / total as f64, 2),
            "timestamp": time(bar),
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume.unwrap_or(0.0),
        });
        if !columns.is_empty() {
            let values: Map<String, Value> = columns
                .iter()
                .map(|(key, values)| (key.clone(), values.get(n).cloned().unwrap_or(Value::Null)))
                .collect();
            candle["indicators"] = Value::Object(values);
        }
        events.push(candle);
        while let Some((_, phase, trade)) = next_signal.next_if(|(at, _, _)| *at == n) {
            let trade = trades[*trade];
            let size = trade["size"].as_f64().unwrap_or(0.0);
            if *phase == Phase::Entry {
                events.push(json!({
                    "type": "signal",
                    "timestamp": time(bar),
                    "action": "ENTRY",
                    "side": if size < 0.0 { "SELL" } else { "BUY" },
                    "price": trade["entry_price"],
                    "size": size.abs(),
                }));
            } else {
                let pnl = trade["pnl"].as_f64().unwrap_or(0.0);
                events.push(json!({
                    "type": "signal",
                    "timestamp": time(bar),
                    "action": "EXIT",
                    "side": "CLOSE",
                    "price": trade["exit_price"],
                    "size": size.abs(),
                    "pnl": pnl,
                    "return_pct": trade["return_pct"],
                }));
                tally.add(pnl);
                events.push(tally.event());
            }
        }
    }
    let metrics = &view.result["metrics"];
    let final_equity = metrics["equity_final"].as_f64();
    events.push(json!({
        "type": "complete",
        "run_id": view.run_id,
        "total_bars": total,
        "metrics": {
            "total_trades": metrics["total_trades"].as_u64().unwrap_or(tally.trades),
            "winning_trades": tally.wins,
            "losing_trades": tally.losses,
            "win_rate": metrics["win_rate"].as_f64().unwrap_or(0.0),
            "net_profit": final_equity.map(|equity| round(equity - view.initial_balance, 2)),
            "total_return_pct": metrics["return_pct"],
            "final_equity": final_equity,
            "max_drawdown": metrics["max_drawdown"],
            "sharpe_ratio": metrics["sharpe_ratio"],
        },
        "trades": view.result["trades"],
    }));
    events.push(tally.event());
    events
}

fn is_candle(event: &Value) -> bool {
    event["type"] == "candle"
}

/// Candles a slow client missed, as one: the first's open and time, the
/// highest high, lowest low, the last close, the volumes summed, and how
/// many bars it stands for (`coalesced`).
fn merge(mut into: Value, next: &Value) -> Value {
    let number = |value: &Value, key: &str| value[key].as_f64().unwrap_or(0.0);
    into["high"] = json!(number(&into, "high").max(number(next, "high")));
    into["low"] = json!(number(&into, "low").min(number(next, "low")));
    into["close"] = next["close"].clone();
    into["volume"] = json!(number(&into, "volume") + number(next, "volume"));
    for key in ["bar_number", "progress", "indicators"] {
        if !next[key].is_null() {
            into[key] = next[key].clone();
        }
    }
    let bars = into["coalesced"].as_u64().unwrap_or(1) + 1;
    into["coalesced"] = json!(bars);
    into
}

/// Why pacing stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The client went away.
    ClientGone,
    /// The client read nothing for [`api_core::streaming::WRITE_TIMEOUT`].
    ClientStalled,
}

pub(super) async fn send_waiting<T>(sink: &mpsc::Sender<T>, message: T) -> Result<(), Stopped> {
    match tokio::time::timeout(api_core::streaming::WRITE_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stopped::ClientGone),
        Err(_) => Err(Stopped::ClientStalled),
    }
}

/// Sends `events` to one client, a candle every `bar`. The sink is
/// bounded: when it is full a candle is not queued but merged into the
/// next one, so a slow client gets fewer, coalesced candles and never an
/// unbounded buffer. Every other message (signals, stats, the end) waits
/// for room and is never dropped. With `bar` zero nothing is merged: the
/// client's own reading paces the stream.
pub async fn pace<T>(
    events: &[Value],
    bar: Duration,
    sink: &mpsc::Sender<T>,
    wrap: impl Fn(&Value) -> T,
) -> Result<(), Stopped> {
    let mut pending: Option<Value> = None;
    for event in events {
        if !is_candle(event) {
            if let Some(candle) = pending.take() {
                send_waiting(sink, wrap(&candle)).await?;
            }
            send_waiting(sink, wrap(event)).await?;
            continue;
        }
        if bar.is_zero() {
            send_waiting(sink, wrap(event)).await?;
            continue;
        }
        let candle = match pending.take() {
            Some(earlier) => merge(earlier, event),
            None => event.clone(),
        };
        match sink.try_send(wrap(&candle)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => pending = Some(candle),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stopped::ClientGone),
        }
        tokio::select! {
            () = sink.closed() => return Err(Stopped::ClientGone),
            () = tokio::time::sleep(bar) => {}
        }
    }
    if let Some(candle) = pending.take() {
        send_waiting(sink, wrap(&candle)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn bars(n: usize) -> Vec<Bar> {
        (0..n)
            .map(|i| {
                let close = 100.0 + i as f64;
                Bar {
                    timestamp: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(i as i64),
                    open: close - 0.5,
                    high: close + 1.0,
                    low: close - 1.0,
                    close,
                    volume: Some(10.0),
                    adj_close: None,
                }
            })
            .collect()
    }

    fn result() -> Value {
        json!({
            "metrics": {"total_trades": 3, "win_rate": 66.67, "equity_final": 10150.0, "return_pct": 1.5,
                        "max_drawdown": -2.0, "sharpe_ratio": 0.9},
            "trades": [
                {"size": 10, "entry_bar": 1, "exit_bar": 3, "entry_price": 101.5, "exit_price": 103.0, "pnl": 15.0, "return_pct": 1.4},
                {"size": -5, "entry_bar": 3, "exit_bar": 3, "entry_price": 103.0, "exit_price": 104.0, "pnl": -5.0, "return_pct": -1.0},
                {"size": 2, "entry_bar": 4, "exit_bar": 5, "entry_price": 104.5, "exit_price": 105.0, "pnl": 1.0, "return_pct": 0.5},
            ]
        })
    }

    fn kinds(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e["type"].as_str().unwrap() {
                "signal" => format!("{}@{}", e["action"].as_str().unwrap(), &e["timestamp"].as_str().unwrap()[8..10]),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_run_becomes_candles_with_its_signals_in_order_and_running_stats() {
        let bars = bars(6);
        let result = result();
        let specs = vec![IndicatorSpec { key: "sma_2".into(), name: "sma".into(), parameters: json!({"period": 2}) }];
        let events = build(&RunView {
            run_id: 9,
            symbol: "GOOG",
            period: "6mo",
            interval: "1d",
            initial_balance: 10_000.0,
            bars: &bars,
            result: &result,
            indicators: &specs,
        });
        assert_eq!(
            kinds(&events),
            [
                "metadata", "stats", "candle", "candle", "ENTRY@02", "candle", "candle", "EXIT@04", "stats",
                "ENTRY@04", "EXIT@04", "stats", "candle", "ENTRY@05", "candle", "EXIT@06", "stats", "complete",
                "stats"
            ]
        );
        assert_eq!((events[0]["total_bars"].as_u64(), events[0]["total_trades"].as_u64()), (Some(6), Some(3)));
        assert_eq!(events[2]["indicators"]["sma_2"], Value::Null, "warming up");
        assert_eq!(events[3]["indicators"]["sma_2"], json!(100.5));
        assert_eq!(events[6]["progress"], json!(66.67));
        assert_eq!((events[9]["side"].as_str(), events[9]["size"].as_f64()), (Some("SELL"), Some(5.0)));
        let last = events.last().unwrap();
        assert_eq!((last["total_trades"].as_u64(), last["winning_trades"].as_u64()), (Some(3), Some(2)));
        assert_eq!((last["pnl"].as_f64(), last["win_rate"].as_f64()), (Some(11.0), Some(66.67)));
        let complete = &events[events.len() - 2];
        assert_eq!(complete["metrics"]["net_profit"], json!(150.0));
        assert_eq!(complete["metrics"]["losing_trades"], json!(1));
        assert_eq!(complete["trades"].as_array().unwrap().len(), 3);
    }

    fn candles_then_end(n: usize) -> Vec<Value> {
        let mut events: Vec<Value> = bars(n)
            .iter()
            .enumerate()
            .map(|(i, b)| {
                json!({"type": "candle", "bar_number": i + 1, "open": b.open, "high": b.high, "low": b.low,
                       "close": b.close, "volume": 10.0})
            })
            .collect();
        // Late enough that a client reading nothing for a while misses candles first.
        events.insert(n - 5, json!({"type": "signal", "action": "ENTRY"}));
        events.push(json!({"type": "complete"}));
        events
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_gets_coalesced_candles_and_every_other_message() {
        let events = candles_then_end(40);
        let (sink, mut receiver) = mpsc::channel::<Value>(2);
        let pacing = tokio::spawn(async move { pace(&events, Duration::from_millis(20), &sink, Value::clone).await });
        // The client reads nothing for a while, then everything.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut got = Vec::new();
        while let Some(event) = receiver.recv().await {
            got.push(event);
        }
        assert_eq!(pacing.await.unwrap(), Ok(()));
        let candles: Vec<&Value> = got.iter().filter(|e| e["type"] == "candle").collect();
        assert!(candles.len() < 40, "some candles were merged: {}", candles.len());
        let bars: u64 = candles.iter().map(|c| c["coalesced"].as_u64().unwrap_or(1)).sum();
        assert_eq!(bars, 40, "every bar is in some candle");
        assert_eq!(candles.last().unwrap()["bar_number"], json!(40));
        assert_eq!(candles.last().unwrap()["close"], json!(139.0));
        let merged = candles.iter().find(|c| c["coalesced"].as_u64() > Some(1)).unwrap();
        let span = merged["coalesced"].as_u64().unwrap() as f64;
        let first_close = merged["close"].as_f64().unwrap() - (span - 1.0);
        assert_eq!(merged["open"].as_f64(), Some(first_close - 0.5), "the first bar's open");
        assert_eq!(merged["high"].as_f64(), Some(merged["close"].as_f64().unwrap() + 1.0), "the highest high");
        assert_eq!(got.iter().filter(|e| e["type"] == "signal").count(), 1);
        assert_eq!(got.last().unwrap()["type"], "complete");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_gets_every_candle_and_one_that_leaves_stops_the_pacing() {
        let events = candles_then_end(10);
        let (sink, mut receiver) = mpsc::channel::<Value>(2);
        let all = events.clone();
        let pacing = tokio::spawn(async move { pace(&all, Duration::from_millis(20), &sink, Value::clone).await });
        let mut got = Vec::new();
        while let Some(event) = receiver.recv().await {
            got.push(event);
        }
        assert_eq!(pacing.await.unwrap(), Ok(()));
        assert_eq!(got, events, "nothing merged for a client that keeps up");

        let (sink, mut receiver) = mpsc::channel::<Value>(2);
        let pacing = tokio::spawn(async move { pace(&events, Duration::from_millis(20), &sink, Value::clone).await });
        receiver.recv().await.unwrap();
        drop(receiver);
        assert_eq!(pacing.await.unwrap(), Err(Stopped::ClientGone));
    }
}
