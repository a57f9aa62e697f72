//! Yahoo Finance's public chart API:
//! `GET {base}/v8/finance/chart/{symbol}?range=&interval=`. Its answer
//! holds parallel arrays (`timestamp`, and `open`/`high`/`low`/`close`/
//! `volume` under `indicators.quote[0]`), with nulls where a bar has no
//! trade; those bars are left out. An unknown symbol is a 404 whose
//! `chart.error` says so.

use chrono::{TimeZone, Utc};
use serde_json::Value;

use crate::{Bar, SourceError};

pub(crate) async fn chart(
    client: &reqwest::Client,
    base_url: &str,
    symbol: &str,
    period: &str,
    interval: &str,
) -> Result<Vec<Bar>, SourceError> {
    let url = format!("{}/v8/finance/chart/{}", base_url.trim_end_matches('/'), symbol);
    let response = client
        .get(&url)
        .query(&[("range", period), ("interval", interval), ("includeAdjustedClose", "true")])
        .send()
        .await
        .map_err(|err| SourceError::Upstream(format!("Yahoo Finance did not answer: {}", err.without_url())))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|_| SourceError::Upstream(format!("Yahoo Finance answered {status} without a chart")))?;
    let error = &body["chart"]["error"];
    if !error.is_null() {
        let description = error["description"].as_str().unwrap_or("no description").to_string();
        return Err(if status == reqwest::StatusCode::NOT_FOUND || error["code"] == "Not Found" {
            SourceError::UnknownSymbol(symbol.to_uppercase())
        } else {
            SourceError::Upstream(format!("Yahoo Finance: {description}"))
        });
    }
    if !status.is_success() {
        return Err(SourceError::Upstream(format!("Yahoo Finance answered {status}")));
    }
    let result = &body["chart"]["result"][0];
    let stamps = result["timestamp"].as_array().cloned().unwrap_or_default();
    let quote = &result["indicators"]["quote"][0];
    let adjusted = &result["indicators"]["adjclose"][0]["adjclose"];
    let at = |series: &Value, n: usize| series.get(n).and_then(Value::as_f64).filter(|v| v.is_finite());
    let bars = stamps
        .iter()
        .enumerate()
        .filter_map(|(n, stamp)| {
            let timestamp = Utc.timestamp_opt(stamp.as_i64()?, 0).single()?;
            Some(Bar {
                timestamp,
                open: at(&quote["open"], n)?,
                high: at(&quote["high"], n)?,
                low: at(&quote["low"], n)?,
                close: at(&quote["close"], n)?,
                volume: at(&quote["volume"], n),
                adj_close: at(adjusted, n),
            })
        })
        .collect();
    Ok(bars)
}
