//! The market data a run may name: backtesting.py's bundled series, and
//! each user's own OHLCV CSVs (`/api/backtests/data/`), validated and kept
//! normalised in the database so a worker on any machine can read them.

use std::path::PathBuf;

use api_core::{ApiError, ApiResult, AppState, AuthUser, ResourceId};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use market_data::Bar;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::backtests::{DatasetRow, NewDataset};

/// Most bars one series may hold (the body limit, `MAX_BODY_BYTES`,
/// bounds its size first).
const MAX_BARS: usize = 200_000;
const SYMBOL_MAX_CHARS: usize = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/backtests/data", get(list))
        .route("/api/backtests/data/upload", post(upload))
        .route("/api/backtests/data/{id}", delete(remove))
}

/// A series checked and rewritten as `,Open,High,Low,Close,Volume`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub csv: String,
    pub bars: usize,
    pub first: String,
    pub last: String,
}

fn timestamp(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim().trim_matches('"');
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok())
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok())
}

/// Checks an uploaded OHLCV CSV: a header naming Open, High, Low and Close
/// (Volume optional), dates first (or in a Date column) rising strictly,
/// prices finite and positive with High ≥ Low, at least 2 bars.
pub fn parse_ohlcv(text: &str) -> Result<Series, String> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines.next().ok_or("the file is empty")?;
    let names: Vec<String> = header.split(',').map(|name| name.trim().trim_matches('"').to_ascii_lowercase()).collect();
    let column = |name: &str| names.iter().position(|n| n == name);
    let (Some(open), Some(high), Some(low), Some(close)) =
        (column("open"), column("high"), column("low"), column("close"))
    else {
        return Err("the header must name Open, High, Low and Close columns".into());
    };
    let volume = column("volume");
    let date = ["date", "datetime", "time", "timestamp"].iter().find_map(|name| column(name)).unwrap_or(0);
    let mut csv = String::from(",Open,High,Low,Close,Volume\n");
    let (mut bars, mut first, mut previous) = (0usize, None, None::<NaiveDateTime>);
    for (index, line) in lines {
        let row = index + 1;
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |at: usize| cells.get(at).map(|c| c.trim().trim_matches('"')).unwrap_or_default();
        let at = timestamp(cell(date)).ok_or_else(|| format!("line {row}: {:?} is not a date", cell(date)))?;
        if previous.is_some_and(|previous| at <= previous) {
            return Err(format!("line {row}: dates must rise strictly"));
        }
        let number = |at: usize, name: &str| -> Result<f64, String> {
            cell(at)
                .parse::<f64>()
                .ok()
                .filter(|value| value.is_finite())
                .ok_or_else(|| format!("line {row}: {name} is not a number"))
        };
        let (o, h, l, c) = (number(open, "Open")?, number(high, "High")?, number(low, "Low")?, number(close, "Close")?);
        if [o, h, l, c].iter().any(|price| *price <= 0.0) || h < l {
            return Err(format!("line {row}: prices must be positive with High at least Low"));
        }
        let v = match volume {
            Some(at) if !cell(at).is_empty() => number(at, "Volume")?.max(0.0),
            _ => 0.0,
        };
        bars += 1;
        if bars > MAX_BARS {
            return Err(format!("more than {MAX_BARS} bars"));
        }
        let stamp = if at.time() == chrono::NaiveTime::MIN {
            at.date().to_string()
        } else {
            at.format("%Y-%m-%d %H:%M:%S").to_string()
        };
        csv.push_str(&format!("{stamp},{o},{h},{l},{c},{v}\n"));
        first.get_or_insert(stamp.clone());
        previous = Some(at);
    }
    if bars < 2 {
        return Err("a series needs at least 2 bars".into());
    }
    let last = csv.lines().last().and_then(|line| line.split(',').next()).unwrap_or_default().to_string();
    Ok(Series { csv, bars, first: first.unwrap_or_default(), last })
}

/// A symbol as runs name it: upper case letters, digits, `.` and `-`.
pub fn normalise_symbol(symbol: &str) -> ApiResult<String> {
    let symbol = symbol.trim().to_uppercase();
    let valid = !symbol.is_empty()
        && symbol.chars().count() <= SYMBOL_MAX_CHARS
        && symbol.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if valid {
        Ok(symbol)
    } else {
        Err(ApiError::bad_request(format!("symbol must be 1 to {SYMBOL_MAX_CHARS} letters, digits, '.' or '-'")))
    }
}

/// Whether the user can run on `symbol`: their own series, or a sample
/// (every worker's environment has them, whether or not this replica has
/// one).
pub async fn available(state: &AppState, user_id: i64, symbol: &str) -> ApiResult<bool> {
    let sample = sandbox::SAMPLE_SYMBOLS.iter().any(|known| known.eq_ignore_ascii_case(symbol));
    Ok(sample || state.store.has_dataset(user_id, symbol).await?)
}

/// `parameters.interval` of a run on market data (a live backtest): its
/// symbols' bars are the owner's own series, else the bars stored for the
/// symbol at that interval, not the samples.
pub const MARKET_INTERVAL: &str = "interval";

/// The run's data files, written into `dir` or (samples) where they are.
pub async fn files(
    state: &AppState,
    user_id: i64,
    symbols: &[String],
    parameters: &Value,
    dir: &std::path::Path,
) -> Result<Vec<sandbox::DataFile>, String> {
    let market_interval = parameters[MARKET_INTERVAL].as_str();
    let mut files = Vec::new();
    for (n, symbol) in symbols.iter().enumerate() {
        let written = match market_interval {
            Some(interval) => {
                let bars = market_series(state, user_id, symbol, interval).await.map_err(|err| err.message())?;
                Some(csv_of(&bars))
            }
            None => state.store.dataset_csv(user_id, symbol).await.map_err(|err| err.to_string())?,
        };
        let path = match written {
            Some(csv) => {
                let path: PathBuf = dir.join(format!("own-{n}.csv"));
                std::fs::write(&path, csv).map_err(|err| err.to_string())?;
                path
            }
            None => state.sandbox.sample_data(symbol).ok_or_else(|| format!("no market data for symbol {symbol}"))?,
        };
        files.push(sandbox::DataFile { symbol: symbol.clone(), path });
    }
    Ok(files)
}

/// All the bars a market-data run of `symbol` may use, oldest first: the
/// owner's own series if they uploaded one, else what is stored for the
/// symbol at `interval`.
pub async fn market_series(state: &AppState, user_id: i64, symbol: &str, interval: &str) -> ApiResult<Vec<Bar>> {
    match own_series(state, user_id, symbol).await? {
        Some(bars) => Ok(bars),
        None => {
            Ok(crate::market::stored_bars(state, symbol, interval).await?.iter().map(crate::market::bar_of).collect())
        }
    }
}

/// The series the user uploaded for `symbol`, if any.
pub async fn own_series(state: &AppState, user_id: i64, symbol: &str) -> ApiResult<Option<Vec<Bar>>> {
    let Some(csv) = state.store.dataset_csv(user_id, symbol).await? else { return Ok(None) };
    market_data::read_ohlcv(&csv).map(Some).map_err(|err| ApiError::Internal(anyhow::anyhow!("a stored series: {err}")))
}

/// The timestamp a run's CSV and its date bounds use (naive, UTC).
pub fn run_timestamp(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Bars as the runner reads them.
fn csv_of(bars: &[Bar]) -> String {
    let mut csv = String::from(",Open,High,Low,Close,Volume\n");
    for bar in bars {
        let volume = bar.volume.unwrap_or(0.0);
        csv.push_str(&format!(
            "{},{},{},{},{},{volume}\n",
            run_timestamp(&bar.timestamp),
            bar.open,
            bar.high,
            bar.low,
            bar.close
        ));
    }
    csv
}

#[derive(Debug, Serialize)]
struct DatasetView {
    id: i64,
    symbol: String,
    bars: i32,
    first_bar: String,
    last_bar: String,
    #[serde(serialize_with = "api_core::time::serialize")]
    created_at: DateTime<Utc>,
}

impl From<DatasetRow> for DatasetView {
    fn from(row: DatasetRow) -> Self {
        Self {
            id: row.id,
            symbol: row.symbol,
            bars: row.bars,
            first_bar: row.first_bar,
            last_bar: row.last_bar,
            created_at: row.created_at,
        }
    }
}

async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let own: Vec<DatasetView> = state.store.datasets(user.user_id).await?.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "datasets": own, "samples": sandbox::SAMPLE_SYMBOLS })))
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    #[serde(default)]
    symbol: String,
}

/// `POST /api/backtests/data/upload/?symbol=XYZ` with the CSV as the body;
/// an upload for a symbol the user has replaces it.
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DatasetView>)> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let symbol = normalise_symbol(&query.symbol)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the CSV must be UTF-8 text"))?;
    let series = parse_ohlcv(text).map_err(|problem| ApiError::bad_request(format!("not an OHLCV CSV: {problem}")))?;
    let row = state
        .store
        .save_dataset(&NewDataset {
            user_id: user.user_id,
            symbol: &symbol,
            csv: &series.csv,
            bars: i32::try_from(series.bars).unwrap_or(i32::MAX),
            first_bar: &series.first,
            last_bar: &series.last,
            created_at: Utc::now(),
        })
        .await?;
    tracing::info!(symbol = %symbol, bars = series.bars, "market data uploaded");
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if state.store.delete_dataset(user.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_checked_and_normalised() {
        let series =
            parse_ohlcv("Date,Open,High,Low,Close\n2024-01-02,10,11,9,10.5\n2024-01-03,10.5,12,10,11\n").unwrap();
        assert_eq!(series.bars, 2);
        assert_eq!((series.first.as_str(), series.last.as_str()), ("2024-01-02", "2024-01-03"));
        assert!(series.csv.starts_with(",Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,0\n"));
        for (bad, why) in [
            ("", "empty"),
            ("Date,Open,High,Close\n2024-01-02,1,2,1\n2024-01-03,1,2,1\n", "header"),
            ("Date,Open,High,Low,Close\n2024-01-02,1,2,1,1\n", "2 bars"),
            ("Date,Open,High,Low,Close\n2024-01-03,1,2,1,1\n2024-01-02,1,2,1,1\n", "rise"),
            ("Date,Open,High,Low,Close\n2024-01-02,1,2,1,x\n2024-01-03,1,2,1,1\n", "number"),
            ("Date,Open,High,Low,Close\n2024-01-02,1,1,2,1\n2024-01-03,1,2,1,1\n", "High"),
            ("Date,Open,High,Low,Close\nsoon,1,2,1,1\n2024-01-03,1,2,1,1\n", "date"),
        ] {
            let problem = parse_ohlcv(bad).unwrap_err();
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
    }
}
