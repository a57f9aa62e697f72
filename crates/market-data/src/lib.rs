//! Market data for `/api/data/`: where it comes from
//! (`MARKET_DATA_SOURCE`) and the indicators computed over it.
//!
//! - `bundled` (the default): the series backtesting.py ships, read from
//!   the sandbox's environment, offline;
//! - `csv`: a directory of OHLCV files, `<SYMBOL>.csv`;
//! - `yahoo`: Yahoo Finance's public chart API, for deployments with
//!   internet.
//!
//! Every source says what it has ([`Source::describe`]); a fetch returns
//! bars, which the caller stores and reuses.

pub mod indicators;
mod ohlcv;
mod yahoo;

use std::path::PathBuf;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use serde::Serialize;
use serde_json::{json, Value};

pub use ohlcv::read_ohlcv;

/// One bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    pub timestamp: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: Option<f64>,
    pub adj_close: Option<f64>,
}

/// The old `fetch_data` periods.
pub const PERIODS: [&str; 11] = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"];
/// The old `fetch_data` intervals.
pub const INTERVALS: [&str; 13] = ["1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("no data for {0} here")]
    UnknownSymbol(String),
    /// The source cannot serve what was asked (an interval its files do not have).
    #[error("{0}")]
    Unsupported(String),
    #[error("the market data source failed: {0}")]
    Upstream(String),
}

/// Where `fetch_data` gets its bars.
#[derive(Debug, Clone)]
pub enum Source {
    /// backtesting.py's samples, from this directory (the sandbox
    /// environment's `backtesting/test`), when it exists.
    Bundled {
        dir: Option<PathBuf>,
    },
    Csv {
        dir: PathBuf,
    },
    Yahoo {
        base_url: String,
        client: reqwest::Client,
    },
}

/// The samples backtesting.py ships, and their native interval.
pub const BUNDLED: [(&str, &str); 3] = [("GOOG", "1d"), ("EURUSD", "1h"), ("BTCUSD", "1d")];

impl Source {
    /// Yahoo Finance's chart API at `base_url`, with a client of its own.
    pub fn yahoo(base_url: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("algoagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Source::Yahoo { base_url: base_url.trim_end_matches('/').to_string(), client }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Source::Bundled { .. } => "bundled",
            Source::Csv { .. } => "csv",
            Source::Yahoo { .. } => "yahoo",
        }
    }

    /// Symbols a file source has, with their native interval.
    fn files(&self) -> Vec<(String, PathBuf)> {
        match self {
            Source::Bundled { dir: Some(dir) } => BUNDLED
                .iter()
                .map(|(symbol, _)| (symbol.to_string(), dir.join(format!("{symbol}.csv"))))
                .filter(|(_, path)| path.exists())
                .collect(),
            Source::Csv { dir } => {
                let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|entry| {
                        let path = entry.path();
                        let stem = path.file_stem()?.to_str()?.to_uppercase();
                        let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
                        let named = stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                        (is_csv && named && !stem.is_empty()).then_some((stem, path))
                    })
                    .collect();
                files.sort();
                files
            }
            _ => Vec::new(),
        }
    }

    /// What the source has, for `api/health/` and the error that names
    /// what exists.
    pub fn describe(&self) -> Value {
        match self {
            Source::Yahoo { base_url, .. } => json!({
                "source": "yahoo", "symbols": "any symbol Yahoo Finance knows", "endpoint": base_url,
                "periods": PERIODS, "intervals": INTERVALS,
            }),
            Source::Bundled { dir: None } => json!({
                "source": "bundled", "symbols": [],
                "note": "the samples are read from the sandbox environment, which is not set up here (algoagent sandbox setup)",
            }),
            _ => json!({
                "source": self.name(),
                "symbols": self.files().into_iter().map(|(symbol, _)| symbol).collect::<Vec<_>>(),
                "periods": PERIODS,
            }),
        }
    }

    /// `symbol`'s bars over `period`, at `interval` (both checked by the caller).
    pub async fn fetch(&self, symbol: &str, period: &str, interval: &str) -> Result<Vec<Bar>, SourceError> {
        if let Source::Yahoo { base_url, client } = self {
            return yahoo::chart(client, base_url, symbol, period, interval).await;
        }
        let (_, path) = self
            .files()
            .into_iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(symbol))
            .ok_or_else(|| SourceError::UnknownSymbol(symbol.to_uppercase()))?;
        let text = read_file(&path).map_err(SourceError::Upstream)?;
        let bars = read_ohlcv(&text).map_err(|err| SourceError::Upstream(format!("{}: {err}", path.display())))?;
        let native = native_interval(&bars);
        if native.as_deref().is_some_and(|native| native != interval) {
            return Err(SourceError::Unsupported(format!(
                "{} is {} bars here; ask for interval {} (bars are not resampled)",
                symbol.to_uppercase(),
                native.as_deref().unwrap_or("irregular"),
                native.as_deref().unwrap_or("1d"),
            )));
        }
        Ok(within_period(bars, period))
    }
}

/// Files are small (the samples are under 200 KB) and read once per fetch.
fn read_file(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))
}

/// The series' spacing, named as an interval: the most common gap.
pub fn native_interval(bars: &[Bar]) -> Option<String> {
    let mut gaps: Vec<i64> =
        bars.windows(2).map(|pair| (pair[1].timestamp - pair[0].timestamp).num_minutes()).collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    let typical = gaps[gaps.len() / 2];
    Some(
        match typical {
            m if m >= 28 * 24 * 60 => "1mo",
            m if m >= 7 * 24 * 60 => "1wk",
            // Daily bars skip weekends; their median gap is still a day.
            m if m >= 24 * 60 => "1d",
            60 => "1h",
            m => return Some(format!("{m}m")),
        }
        .to_string(),
    )
}

/// The bars in `period`, counted back from the last one.
pub fn within_period(bars: Vec<Bar>, period: &str) -> Vec<Bar> {
    let Some(last) = bars.last().map(|bar| bar.timestamp) else { return bars };
    let from = match period {
        "max" => return bars,
        // From the first moment of the year (bars after `from` are kept).
        "ytd" => Utc.with_ymd_and_hms(last.year(), 1, 1, 0, 0, 0).single().unwrap_or(last) - Duration::seconds(1),
        _ => {
            let (count, unit) = period.split_at(period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len()));
            let count: i64 = count.parse().unwrap_or(1);
            match unit {
                "d" => last - Duration::days(count),
                "mo" => last - Duration::days(count * 30),
                "y" => last - Duration::days(count * 365),
                _ => return bars,
            }
        }
    };
    bars.into_iter().filter(|bar| bar.timestamp > from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(days: i64) -> Vec<Bar> {
        (0..days)
            .map(|n| Bar {
                timestamp: Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap() + Duration::days(n),
                open: 1.0,
                high: 2.0,
                low: 0.5,
                close: 1.5,
                volume: Some(10.0),
                adj_close: None,
            })
            .collect()
    }

    #[test]
    fn periods_count_back_from_the_last_bar() {
        assert_eq!(within_period(bars(800), "1y").len(), 365);
        assert_eq!(within_period(bars(800), "5d").len(), 5);
        assert_eq!(within_period(bars(800), "max").len(), 800);
        let ytd = within_period(bars(800), "ytd");
        assert_eq!(ytd[0].timestamp, Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(native_interval(&bars(10)).as_deref(), Some("1d"));
    }
}
