//! `/api/data/`: the three market data sources (the bundled samples, a
//! directory of CSVs, and Yahoo Finance's chart API against a stand-in on
//! loopback built from its documented answers), stored bars, indicators
//! checked against pandas, and who may write what.

use axum::extract::{Path, Query};
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app_with, TestApp};

const FETCH: &str = "/api/data/api/fetch_data/";

fn sandbox_env() -> Option<String> {
    std::env::var("ALGOAGENT_SANDBOX_ENV").ok()
}

async fn bundled_app(extra: &[(&str, &str)]) -> Option<TestApp> {
    let env_dir = sandbox_env()?;
    let mut env = vec![("SANDBOX_ENV_DIR", env_dir.as_str()), ("SANDBOX_WORKERS", "0")];
    env.extend_from_slice(extra);
    Some(spawn_app_with(&env).await)
}

/// pandas' own SMA, EMA, Bollinger and (with `ta`'s seeding) RSI over GOOG,
/// from the sandbox environment's Python.
fn pandas_reference(env_dir: &str) -> Value {
    let script = r#"
import json, glob, pandas as pd
path = glob.glob(r'ENV/lib/python*/site-packages/backtesting/test/GOOG.csv')[0]
close = pd.read_csv(path, index_col=0)['Close'].iloc[-251:].reset_index(drop=True)
up = close.diff().clip(lower=0); up.iloc[0] = 0.1
down = (-close.diff()).clip(lower=0); down.iloc[0] = 0.1
rsi = 100 * up.ewm(span=14, adjust=False).mean() / (up.ewm(span=14, adjust=False).mean() + down.ewm(span=14, adjust=False).mean())
mid = close.rolling(20).mean(); sd = close.rolling(20).std(ddof=0)
print(json.dumps({"sma": close.rolling(20).mean().tolist()[-50:], "ema": close.ewm(span=20, adjust=False).mean().tolist()[-50:],
                  "rsi": rsi.tolist()[-50:], "upper": (mid + 2 * sd).tolist()[-50:]}))
"#
    .replace("ENV", env_dir);
    let output = std::process::Command::new(format!("{env_dir}/bin/python")).arg("-c").arg(script).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn close_enough(ours: &[Value], theirs: &Value, line: Option<&str>) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (ours, theirs) in ours.iter().zip(theirs) {
        let ours = match line {
            Some(line) => ours["value"][line].as_f64().unwrap(),
            None => ours["value"].as_f64().unwrap(),
        };
        let theirs = theirs.as_f64().unwrap();
        assert!((ours - theirs).abs() <= 1e-6 * theirs.abs().max(1.0), "{ours} vs pandas {theirs}");
    }
}

#[tokio::test]
async fn bundled_data_is_fetched_once_stored_and_its_indicators_match_pandas() {
    let Some(app) = bundled_app(&[("MARKET_FETCHES_PER_HOUR", "5")]).await else { return };
    let user = app.register("quant").await;
    let token = Some(user.access.as_str());
    let body = json!({"symbol": "goog", "period": "1y", "interval": "1d", "indicators": ["sma", {"name": "rsi", "parameters": {"period": 14}}]});
    let fetched = expect_status(app.post(FETCH, token, &body).await, StatusCode::OK).await;
    assert_eq!(
        (fetched["status"].as_str(), fetched["source"].as_str(), fetched["symbol"].as_str()),
        (Some("completed"), Some("bundled"), Some("GOOG"))
    );
    let saved = fetched["records_saved"].as_i64().unwrap();
    assert!((240..=260).contains(&saved), "a year of daily bars: {saved}");
    assert!(fetched["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(fetched["data_sample"].as_array().unwrap().len(), 5);
    assert!(fetched["indicators"]["rsi"]["latest"][4]["value"].is_number(), "{}", fetched["indicators"]);
    // Stored once: the same fetch again saves nothing new.
    let again = expect_status(app.post(FETCH, token, &body).await, StatusCode::OK).await;
    assert_eq!((again["records_saved"].as_i64(), again["total_records"].as_i64()), (Some(0), Some(saved)));

    let listed = app
        .get("/api/data/market-data/?symbol=GOOG&interval=1d&start_date=2013-01-01&end_date=2013-01-31", token)
        .await;
    let listed = expect_status(listed, StatusCode::OK).await;
    assert!((18..=22).contains(&listed["count"].as_i64().unwrap()), "January 2013's trading days: {}", listed["count"]);
    assert!(listed["results"][0]["timestamp"].as_str().unwrap().starts_with("2013-01-02"));

    // Indicators over the stored bars, checked against pandas.
    let reference = pandas_reference(&sandbox_env().unwrap());
    let calculate = |indicator: &str, parameters: Value| {
        let (app, body) = (&app, json!({"symbol": "GOOG", "indicator": indicator, "parameters": parameters}));
        async move {
            expect_status(app.post("/api/data/api/calculate_indicator/", token, &body).await, StatusCode::OK).await
        }
    };
    let tail = |answer: &Value| {
        answer["result"].as_array().unwrap()[answer["result"].as_array().unwrap().len() - 50..].to_vec()
    };
    close_enough(&tail(&calculate("sma", json!({"period": 20})).await), &reference["sma"], None);
    close_enough(&tail(&calculate("ema", json!({"period": 20})).await), &reference["ema"], None);
    close_enough(&tail(&calculate("rsi", json!({})).await), &reference["rsi"], None);
    close_enough(
        &tail(&calculate("bollinger_bands", json!({"period": 20, "std_dev": 2})).await),
        &reference["upper"],
        Some("upper"),
    );
    let stored =
        expect_status(app.get("/api/data/indicator-data/?symbol=GOOG&indicator=sma", token).await, StatusCode::OK)
            .await;
    assert!(stored["count"].as_i64().unwrap() > 200, "{}", stored["count"]);

    // Bad input names its field; the unknown is a 404 saying what exists.
    for (body, field) in [
        (json!({"symbol": "GOOG", "period": "7w"}), "period"),
        (json!({"symbol": "GOOG", "interval": "1h"}), "interval"),
        (json!({"symbol": "GOOG", "indicators": ["vwap"]}), "indicators[0]"),
        (json!({"period": "1y"}), "symbol"),
    ] {
        let refused = expect_status(app.post(FETCH, token, &body).await, StatusCode::BAD_REQUEST).await;
        assert!(refused[field].is_array(), "{field}: {refused}");
    }
    let unknown = expect_status(app.post(FETCH, token, &json!({"symbol": "NOPE"})).await, StatusCode::NOT_FOUND).await;
    assert!(unknown["source"]["symbols"].as_array().unwrap().contains(&json!("GOOG")), "{unknown}");
    let refused = app
        .post(
            "/api/data/api/calculate_indicator/",
            token,
            &json!({"symbol": "GOOG", "indicator": "sma", "parameters": {"period": 0}}),
        )
        .await;
    assert!(expect_status(refused, StatusCode::BAD_REQUEST).await["parameters"].is_array());
    let unfetched =
        app.post("/api/data/api/calculate_indicator/", token, &json!({"symbol": "EURUSD", "indicator": "sma"})).await;
    assert_eq!(unfetched.status(), StatusCode::NOT_FOUND);

    // Fetches that reach the source are counted per user: two fetches, the
    // 1h one and NOPE so far; the fifth is the last of this hour.
    let user_b = app.register("quant-b").await;
    let fourth = app.post(FETCH, token, &json!({"symbol": "GOOG"})).await;
    assert_eq!(fourth.status(), StatusCode::OK);
    let throttled = app.post(FETCH, token, &json!({"symbol": "GOOG"})).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
    assert_eq!(
        app.post(FETCH, Some(&user_b.access), &json!({"symbol": "GOOG"})).await.status(),
        StatusCode::OK,
        "another user's own budget"
    );
    let requests = expect_status(app.get("/api/data/data-requests/", token).await, StatusCode::OK).await;
    assert_eq!(requests["count"], 3, "the three that fetched: {requests}");

    let health = expect_status(app.get("/api/data/api/health/", token).await, StatusCode::OK).await;
    assert_eq!((health["status"].as_str(), health["data_fetcher_available"].as_bool()), (Some("healthy"), Some(true)));
    let available = expect_status(app.get("/api/data/api/available_indicators/", token).await, StatusCode::OK).await;
    assert_eq!(available["indicators"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn symbols_are_shared_and_written_by_administrators() {
    let app = spawn_app_with(&[]).await;
    let user = app.register("reader").await;
    let admin = app.register_admin("curator").await;
    let body = json!({"symbol": "acme", "name": "Acme Corp", "exchange": "NYSE"});
    let refused = app.post("/api/data/symbols/", Some(&user.access), &body).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let created =
        expect_status(app.post("/api/data/symbols/", Some(&admin.access), &body).await, StatusCode::CREATED).await;
    assert_eq!(created["symbol"], "ACME");
    let twice = app.post("/api/data/symbols/", Some(&admin.access), &body).await;
    assert!(expect_status(twice, StatusCode::BAD_REQUEST).await["symbol"].is_array());
    let bulk = json!({"symbols": ["ACME", "INIT", {"symbol": "BETA", "name": "Beta Inc"}]});
    let made = expect_status(
        app.post("/api/data/symbols/bulk_create/", Some(&admin.access), &bulk).await,
        StatusCode::CREATED,
    )
    .await;
    let names: Vec<&str> = made.as_array().unwrap().iter().map(|s| s["symbol"].as_str().unwrap()).collect();
    assert_eq!(names, ["INIT", "BETA"], "only the new ones");
    let found =
        expect_status(app.get("/api/data/symbols/search/?q=beta", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(found["results"][0]["name"], "Beta Inc");
    assert_eq!(app.get("/api/data/symbols/search/", Some(&user.access)).await.status(), StatusCode::BAD_REQUEST);
    let listed = expect_status(app.get("/api/data/symbols/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(listed["count"], 3);
    let id = created["id"].as_i64().unwrap();
    let patch = app
        .send(reqwest::Method::PATCH, &format!("/api/data/symbols/{id}/"), Some(&user.access), &json!({"sector": "x"}))
        .await;
    assert_eq!(patch.status(), StatusCode::FORBIDDEN);
    let patch = app
        .send(
            reqwest::Method::PATCH,
            &format!("/api/data/symbols/{id}/"),
            Some(&admin.access),
            &json!({"sector": "Tech"}),
        )
        .await;
    assert_eq!(expect_status(patch, StatusCode::OK).await["sector"], "Tech");
    let categories =
        expect_status(app.get("/api/data/indicators/categories/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(categories["categories"], json!(["momentum", "trend", "volatility"]));
    assert_eq!(app.get("/api/data/indicators/macd/", Some(&user.access)).await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/data/symbols/", None).await.status(), StatusCode::UNAUTHORIZED);
    // Without the sandbox environment, the bundled source has nothing, and says why.
    let health = expect_status(app.get("/api/data/api/health/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(health["data_fetcher_available"], false);
    assert!(health["source"]["note"].as_str().unwrap().contains("sandbox setup"));
}

#[tokio::test]
async fn a_directory_of_csv_files_is_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("Date,Open,High,Low,Close,Volume\n");
    for day in 1..=28 {
        csv.push_str(&format!("2024-02-{day:02},10,11,9,{}.5,100\n", 10 + day % 3));
    }
    std::fs::write(dir.path().join("acme.csv"), csv).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not data").unwrap();
    let path = dir.path().display().to_string();
    let app = spawn_app_with(&[("MARKET_DATA_SOURCE", "csv"), ("MARKET_DATA_DIR", path.as_str())]).await;
    let user = app.register("csv-reader").await;
    let token = Some(user.access.as_str());
    let fetched =
        expect_status(app.post(FETCH, token, &json!({"symbol": "ACME", "period": "max"})).await, StatusCode::OK).await;
    assert_eq!((fetched["records_saved"].as_i64(), fetched["source"].as_str()), (Some(28), Some("csv")));
    let health = expect_status(app.get("/api/data/api/health/", token).await, StatusCode::OK).await;
    assert_eq!(health["source"]["symbols"], json!(["ACME"]));
}

#[tokio::test]
async fn a_users_own_upload_is_their_source_and_stays_theirs() {
    let app = spawn_app_with(&[("MARKET_FETCHES_PER_HOUR", "1")]).await;
    let owner = app.register("uploader").await;
    let mut csv = String::from("Date,Open,High,Low,Close,Volume\n");
    for day in 1..=40 {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Duration::days(day);
        csv.push_str(&format!("{at},10,12,9,{}.25,100\n", 10 + day % 5));
    }
    let uploaded = app
        .client
        .post(app.url("/api/backtests/data/upload/?symbol=mycoin"))
        .bearer_auth(&owner.access)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    expect_status(uploaded, StatusCode::CREATED).await;
    let token = Some(owner.access.as_str());
    let body = json!({"symbol": "MYCOIN", "period": "1mo", "interval": "1d", "indicators": [{"name": "sma", "parameters": {"period": 5}}]});
    // Served from the upload, again and again: no upstream, so no fetch counted.
    for _ in 0..3 {
        let fetched = expect_status(app.post(FETCH, token, &body).await, StatusCode::OK).await;
        assert_eq!((fetched["source"].as_str(), fetched["records_saved"].as_i64()), (Some("upload"), Some(0)));
        assert_eq!(fetched["total_records"].as_i64(), Some(30), "a month back from the last bar: {fetched}");
        assert_eq!(fetched["data_sample"][4]["close_price"], json!(10.25 + 0.0), "{fetched}");
        assert!(fetched["indicators"]["sma"]["latest"][4]["value"].is_number());
    }
    let hourly = app.post(FETCH, token, &json!({"symbol": "MYCOIN", "interval": "1h"})).await;
    let hourly = expect_status(hourly, StatusCode::BAD_REQUEST).await;
    assert!(hourly["interval"][0].as_str().unwrap().contains("has 1d bars"), "{hourly}");
    // It stays the owner's: nothing in the shared market data, nothing for anyone else.
    let shared = expect_status(app.get("/api/data/market-data/?symbol=MYCOIN", token).await, StatusCode::OK).await;
    assert_eq!(shared["count"], 0);
    let other = app.register("neighbour").await;
    let theirs = app.post(FETCH, Some(&other.access), &json!({"symbol": "MYCOIN"})).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
}

/// A stand-in for Yahoo Finance's chart API, shaped as its documented
/// answers: parallel arrays with a null where a bar has no trade, and a
/// 404 whose `chart.error` names an unknown symbol.
async fn yahoo_stand_in() -> String {
    async fn chart(
        Path(symbol): Path<String>,
        Query(query): Query<std::collections::HashMap<String, String>>,
    ) -> axum::response::Response {
        match symbol.as_str() {
            "AAPL" => {
                assert_eq!((query["range"].as_str(), query["interval"].as_str()), ("5d", "1d"));
                let body = json!({"chart": {"result": [{
                    "meta": {"symbol": "AAPL", "currency": "USD", "dataGranularity": "1d", "range": "5d"},
                    "timestamp": [1_704_205_800, 1_704_292_200, 1_704_378_600, 1_704_465_000, 1_704_724_200],
                    "indicators": {
                        "quote": [{"open": [187.15, 184.22, null, 181.99, 182.09], "high": [188.44, 185.88, null, 182.76, 185.6],
                                   "low": [183.89, 183.43, null, 180.17, 181.5], "close": [185.64, 184.25, null, 181.18, 185.56],
                                   "volume": [82_488_700, 58_414_500, null, 62_379_700, 59_144_500]}],
                        "adjclose": [{"adjclose": [184.94, 183.55, null, 180.5, 184.86]}]
                    }}], "error": null}});
                axum::Json(body).into_response()
            }
            "BROKEN" => (AxumStatus::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
            _ => (
                AxumStatus::NOT_FOUND,
                axum::Json(json!({"chart": {"result": null, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}})),
            )
                .into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/v8/finance/chart/{symbol}", axum::routing::get(chart));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn yahoo_finance_is_a_source_and_its_failures_are_honest() {
    let base = yahoo_stand_in().await;
    let app = spawn_app_with(&[("MARKET_DATA_SOURCE", "yahoo"), ("YAHOO_BASE_URL", base.as_str())]).await;
    let user = app.register("yahoo-reader").await;
    let token = Some(user.access.as_str());
    let fetched =
        expect_status(app.post(FETCH, token, &json!({"symbol": "aapl", "period": "5d"})).await, StatusCode::OK).await;
    assert_eq!(
        (fetched["records_fetched"].as_i64(), fetched["source"].as_str()),
        (Some(4), Some("yahoo")),
        "the null bar is left out"
    );
    let last = &fetched["data_sample"][3];
    assert_eq!((last["close_price"].as_f64(), last["adj_close"].as_f64()), (Some(185.56), Some(184.86)));
    assert!(last["timestamp"].as_str().unwrap().starts_with("2024-01-08"));
    let unknown = app.post(FETCH, token, &json!({"symbol": "ZZZZ", "period": "5d"})).await;
    assert_eq!(expect_status(unknown, StatusCode::NOT_FOUND).await["error"], "No data found for symbol ZZZZ");
    let broken = app.post(FETCH, token, &json!({"symbol": "BROKEN", "period": "5d"})).await;
    assert_eq!(broken.status(), StatusCode::SERVICE_UNAVAILABLE);
    let requests = expect_status(app.get("/api/data/data-requests/", token).await, StatusCode::OK).await;
    assert_eq!(requests["results"][0]["status"], "failed", "{requests}");
}
