//! `GET /metrics`: the Prometheus exposition, read over HTTP after real
//! calls through the pool.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{redis_url, spawn_app_with_sim, spawn_app_with_sim_and, start_sim, SIM_KEY};

const KEY: &str = r#"key_id="default",project="default",model="gemini-2.5-flash""#;

#[tokio::test]
async fn the_exposition_shows_the_pool_and_this_replicas_calls() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("measured").await;
    let chat = app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "Hello"})).await;
    assert_eq!(chat.status(), StatusCode::OK);

    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK, "the test client is on loopback");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    for line in [
        format!(r#"algoagent_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
        format!("algoagent_key_up{{{KEY}}} 1"),
        format!(r#"algoagent_key_state{{{KEY},state="available"}} 1"#),
        format!(r#"algoagent_key_state{{{KEY},state="cooling_down"}} 0"#),
        // One call of the discovered key's 10 a minute.
        r#"algoagent_bucket_utilization_ratio{project="default",model="gemini-2.5-flash",limit="rpm"} 0.1"#.into(),
        r#"algoagent_bucket_remaining{project="default",model="gemini-2.5-flash",limit="rpm"} 9"#.into(),
        "algoagent_bucket_warning_threshold_ratio 0.8".into(),
        r#"algoagent_upstream_requests_total{key_id="default",model="gemini-2.5-flash",outcome="success"} 1"#.into(),
        r#"algoagent_admissions_total{result="admitted"} 1"#.into(),
        "algoagent_upstream_latency_seconds_count 1".into(),
        "algoagent_admission_wait_seconds_count 1".into(),
        "algoagent_http_too_many_requests_total 0".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with(r#"algoagent_bucket_reset_timestamp_seconds{project="default""#)),
        "the day's reset: {text}"
    );
    assert!(!text.contains(SIM_KEY) && !text.contains(&SIM_KEY[SIM_KEY.len() - 8..]), "a secret was exported");
    if redis_url().is_some() {
        assert!(text.lines().any(|l| l == "algoagent_redis_up 1"), "{text}");
        assert!(text.lines().any(|l| l == "algoagent_limiter_degraded 0"), "{text}");
    } else {
        assert!(!text.contains("algoagent_redis_up") && !text.contains("algoagent_limiter_degraded"), "{text}");
    }
}

#[tokio::test]
async fn user_facing_429s_are_counted() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("USER_RPM_DEFAULT", "1"), ("USER_BURST_DEFAULT", "1")]).await;
    let user = app.register("hurried").await;
    let first = app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "one"})).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "two"})).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let text = app.get("/metrics", None).await.text().await.unwrap();
    assert!(text.lines().any(|l| l == "algoagent_http_too_many_requests_total 1"), "{text}");
}

#[tokio::test]
async fn a_metrics_token_is_required_once_set() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("METRICS_TOKEN", "scrape-token-of-the-test")]).await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.get("/metrics", Some("another-token")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.get("/metrics", Some("scrape-token-of-the-test")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("algoagent_key_up"));
}

/// The alert rules shipped in deploy/prometheus/ use only series this
/// server exports (promtool checks the rules themselves in `.ci/run`).
#[tokio::test]
async fn the_shipped_alert_rules_name_only_exported_series() {
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml")).unwrap();
    let mut names: Vec<&str> = rules
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("algoagent_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 5, "{names:?}");

    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("alerted").await;
    app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "Hello"})).await;
    let text = app.get("/metrics", None).await.text().await.unwrap();
    let exported = |name: &str| {
        text.lines().any(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
    };
    for name in names {
        // Degraded mode exists only where there is shared state to lose.
        if name == "algoagent_limiter_degraded" && redis_url().is_none() {
            continue;
        }
        // Exported only with a secret store that can fail (the Vault tests check it).
        if name == "algoagent_secret_store_up" {
            continue;
        }
        assert!(exported(name), "{name} is alerted on but not exported:\n{text}");
    }
}

/// The backtest queue, read from the database: the same on every replica.
#[tokio::test]
async fn the_exposition_shows_the_backtest_queue() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("queued-backtests").await;
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let (symbols, parameters) = (json!(["GOOG"]), json!({}));
    let waiting_since = chrono::Utc::now() - chrono::Duration::minutes(3);
    let run = store::backtests::NewBacktestRun {
        run_id: "bt_0000abcd",
        user_id: user.id,
        strategy_id: None,
        code: "pass",
        symbols: &symbols,
        parameters: &parameters,
        created_at: waiting_since,
    };
    store.queue_backtest(&run).await.unwrap();

    let text = app.get("/metrics", None).await.text().await.unwrap();
    let value = |series: &str| -> f64 {
        let line = text.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("no {series}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("algoagent_backtest_runs{status=\"queued\"}"), 1.0);
    assert_eq!(value("algoagent_backtest_runs{status=\"running\"}"), 0.0);
    let waited = value("algoagent_backtest_oldest_queued_seconds ");
    assert!((180.0..240.0).contains(&waited), "{waited}");
    // This server has no sandbox: it runs nothing and no worker reports in.
    assert_eq!(value("algoagent_backtest_worker_slots "), 0.0);
    assert_eq!(value("algoagent_sandbox_ready "), 0.0);
}
