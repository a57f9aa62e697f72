//! The old app's strategy actions (`validate_strategy`, `execute`, their
//! histories, `generate_with_ai`), working as they were meant to: the code
//! really runs, in the sandbox, as backtest jobs.

use gemini_sim::Scripted;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::backtests::{FAILS_WHEN_RUN, SMA_CROSS};
use crate::helpers::{expect_status, spawn_app_with_sim, start_sim, with_sandbox_and_sim, TestApp, TestUser};

const STRATEGIES: &str = "/api/strategies/strategies/";

async fn strategy_with_code(app: &TestApp, user: &TestUser, name: &str, code: &str) -> i64 {
    let body = json!({"name": name, "strategy_code": code});
    let created = app.post(STRATEGIES, Some(&user.access), &body).await;
    expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap()
}

async fn action(app: &TestApp, user: &TestUser, id: i64, name: &str, body: Value) -> reqwest::Response {
    app.post(&format!("{STRATEGIES}{id}/{name}/"), Some(&user.access), &body).await
}

async fn strategy_status(app: &TestApp, user: &TestUser, id: i64) -> String {
    let strategy = app.get(&format!("{STRATEGIES}{id}/"), Some(&user.access)).await;
    expect_status(strategy, StatusCode::OK).await["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn validate_and_execute_run_the_strategy_in_the_sandbox() {
    let sim = start_sim().await;
    let Some(app) = with_sandbox_and_sim(&sim).await else { return };
    let user = app.register("actor").await;
    let good = strategy_with_code(&app, &user, "SMA cross", SMA_CROSS).await;

    let validated =
        expect_status(action(&app, &user, good, "validate_strategy", json!({})).await, StatusCode::OK).await;
    assert_eq!(validated["overall_result"]["valid"], true, "{validated}");
    let results = validated["validation_results"].as_array().unwrap();
    let kinds: Vec<&str> = results.iter().map(|r| r["validation_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["syntax", "logic", "security"]);
    let logic = &results[1];
    assert_eq!((logic["status"].as_str(), logic["details"]["executed"].as_bool()), (Some("passed"), Some(true)));
    assert!(logic["details"]["metrics"]["num_trades"].is_u64(), "{logic}");
    assert_eq!(strategy_status(&app, &user, good).await, "valid");

    let executed =
        expect_status(action(&app, &user, good, "execute", json!({"test_symbol": "eurusd"})).await, StatusCode::OK)
            .await;
    assert_eq!(executed["success"], true, "{executed}");
    for field in ["return_pct", "num_trades", "win_rate", "sharpe_ratio", "max_drawdown", "execution_time"] {
        assert!(executed["metrics"].get(field).is_some(), "metrics.{field}: {executed}");
    }
    assert!(executed["run_id"].as_str().unwrap().starts_with("bt_"));
    assert_eq!(strategy_status(&app, &user, good).await, "executed");

    let history = app.get(&format!("{STRATEGIES}{good}/execution_history/"), Some(&user.access)).await;
    let history = expect_status(history, StatusCode::OK).await;
    assert_eq!((history["strategy_name"].as_str(), history["total_executions"].as_i64()), (Some("SMA cross"), Some(2)));
    assert_eq!(history["executions"][0]["run_id"], executed["run_id"], "newest first");
    assert_eq!(history["executions"][0]["success"], true);
    assert!(history["executions"][0]["num_trades"].is_u64(), "{history}");
    let validations = app.get(&format!("{STRATEGIES}{good}/validation_history/"), Some(&user.access)).await;
    assert_eq!(expect_status(validations, StatusCode::OK).await.as_array().unwrap().len(), 3);
    // The latest run is the strategy's latest backtest result.
    let latest =
        app.get(&format!("/api/strategies/backtest-results/by_strategy/?strategy_id={good}"), Some(&user.access)).await;
    let latest = expect_status(latest, StatusCode::OK).await;
    assert_eq!((latest["run_id"].as_str(), latest["symbol"].as_str()), (executed["run_id"].as_str(), Some("EURUSD")));
    let trades = latest["total_trades"].as_i64().unwrap();
    assert_eq!(latest["winning_trades"].as_i64().unwrap() + latest["losing_trades"].as_i64().unwrap(), trades);
    assert_eq!(latest["trades"].as_array().unwrap().len() as i64, trades);
    let performance = app.get(&format!("{STRATEGIES}{good}/performance_history/"), Some(&user.access)).await;
    let performance = expect_status(performance, StatusCode::OK).await;
    assert_eq!(performance.as_array().unwrap().len(), 2, "one per completed run: {performance}");

    // Code that fails only when it runs: logic fails with the real error.
    let failing = FAILS_WHEN_RUN.trim_start_matches("```python\n").trim_end_matches("```\n");
    let bad = strategy_with_code(&app, &user, "Breaks", failing).await;
    let validated = expect_status(action(&app, &user, bad, "validate_strategy", json!({})).await, StatusCode::OK).await;
    assert_eq!(validated["overall_result"]["valid"], false, "{validated}");
    assert_eq!(validated["overall_result"]["failed"], json!(["logic"]));
    assert!(validated["validation_results"][1]["errors"][0].as_str().unwrap().contains("KeyError: 'support'"));
    assert_eq!(strategy_status(&app, &user, bad).await, "invalid");
    let executed = expect_status(action(&app, &user, bad, "execute", json!({})).await, StatusCode::OK).await;
    assert_eq!(executed["success"], false, "{executed}");
    assert_eq!(executed["metrics"], Value::Null);
    assert!(executed["error_message"].as_str().unwrap().contains("KeyError"), "{executed}");
    assert_eq!(strategy_status(&app, &user, bad).await, "failed");

    // Bad input names the field; another user's strategy is a 404.
    let refused =
        action(&app, &user, good, "validate_strategy", json!({"validation_types": ["syntax", "vibes"]})).await;
    assert!(expect_status(refused, StatusCode::BAD_REQUEST).await["validation_types"].is_array());
    let refused = action(&app, &user, good, "execute", json!({"test_symbol": "NOPE"})).await;
    assert!(expect_status(refused, StatusCode::BAD_REQUEST).await.to_string().contains("GOOG"));
    let refused = action(&app, &user, good, "execute", json!({"start_date": "soon"})).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let empty = strategy_with_code(&app, &user, "Empty", "").await;
    let refused = action(&app, &user, empty, "execute", json!({})).await;
    assert!(expect_status(refused, StatusCode::BAD_REQUEST).await.to_string().contains("generate its code"));
    let stranger = app.register("stranger").await;
    for name in ["validate_strategy", "execute"] {
        assert_eq!(action(&app, &stranger, good, name, json!({})).await.status(), StatusCode::NOT_FOUND, "{name}");
    }
    for name in ["validation_history", "performance_history", "execution_history"] {
        let response = app.get(&format!("{STRATEGIES}{good}/{name}/"), Some(&stranger.access)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{name}");
    }
}

/// Without a sandbox, validation checks what it can and says what it could
/// not; execute is a 503 that says why.
#[tokio::test]
async fn without_a_sandbox_validation_is_static_and_execute_says_why() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("no-sandbox-actor").await;
    let id = strategy_with_code(&app, &user, "SMA cross", SMA_CROSS).await;
    let validated = expect_status(
        action(&app, &user, id, "validate_strategy", json!({"validation_types": ["logic"]})).await,
        StatusCode::OK,
    )
    .await;
    let logic = &validated["validation_results"][0];
    assert_eq!((logic["status"].as_str(), logic["details"]["executed"].as_bool()), (Some("passed"), Some(false)));
    assert!(logic["warnings"][0].as_str().unwrap().starts_with("Not run:"), "{logic}");
    let refused = action(&app, &user, id, "execute", json!({})).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let history = app.get(&format!("{STRATEGIES}{id}/execution_history/"), Some(&user.access)).await;
    let history = expect_status(history, StatusCode::OK).await;
    assert_eq!(
        (history["total_executions"].as_i64(), history["executions"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
}

const GENERATE_WITH_AI: &str = "/api/strategies/strategies/generate_with_ai/";

/// A description becomes a new strategy with checked code: 201 in the old
/// app's intended shape; names are made free; nothing is left behind when
/// the AI call fails.
#[tokio::test]
async fn generate_with_ai_makes_a_strategy_from_a_description() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("describer").await;
    let token = Some(user.access.as_str());

    let missing = app.post(GENERATE_WITH_AI, token, &json!({"auto_fix": true})).await;
    assert_eq!(expect_status(missing, StatusCode::BAD_REQUEST).await["error"], "Description is required");
    assert!(sim.sim.requests().is_empty());

    let body =
        json!({"description": "Buy when the SMA(10) crosses above SMA(30); sell on the reverse.", "name": "Golden"});
    let made = expect_status(app.post(GENERATE_WITH_AI, token, &body).await, StatusCode::CREATED).await;
    assert_eq!((made["name"].as_str(), made["status"].as_str()), (Some("Golden"), Some("draft")), "{made}");
    assert_eq!(made["generation_result"]["success"], true);
    assert_eq!(made["file_path"], "golden.py");
    assert_eq!(made["execution_result"], Value::Null, "not asked to run");
    assert_eq!(made["execution"]["attempted"], false);
    assert!(sim.sim.requests()[0].prompt.contains("SMA(10) crosses above SMA(30)"));
    let id = made["id"].as_i64().unwrap();
    let strategy = expect_status(app.get(&format!("{STRATEGIES}{id}/"), token).await, StatusCode::OK).await;
    assert_eq!(strategy["parameters"]["generated_code"]["code_id"], made["generation_result"]["code_id"]);

    // The same name again is made free; broken code goes through the fix loop.
    sim.sim.script([Scripted::BrokenCode]);
    let again = expect_status(app.post(GENERATE_WITH_AI, token, &body).await, StatusCode::CREATED).await;
    assert_eq!(again["name"], "Golden v2");
    assert_eq!(again["fix_attempts"], 1, "{again}");
    assert_eq!(again["fix_details"][0]["error_type"], "syntax_error");
    assert_eq!(again["fix_details"][0]["success"], true);

    // An AI failure leaves no strategy behind.
    sim.sim.script(std::iter::repeat_n(Scripted::Unavailable, 4));
    let failed =
        app.post(GENERATE_WITH_AI, token, &json!({"description": "Buy low, sell high", "name": "Doomed"})).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let listed = expect_status(app.get(&format!("{STRATEGIES}?search=Doomed"), token).await, StatusCode::OK).await;
    assert_eq!(listed["count"], 0, "{listed}");

    let too_many = json!({"description": "x", "max_fix_attempts": 99});
    assert!(expect_status(app.post(GENERATE_WITH_AI, token, &too_many).await, StatusCode::BAD_REQUEST).await
        ["max_fix_attempts"]
        .is_array());
}

/// With `execute_after_generation`, the new strategy's code runs in the sandbox.
#[tokio::test]
async fn generate_with_ai_can_execute_what_it_generated() {
    let sim = start_sim().await;
    let Some(app) = with_sandbox_and_sim(&sim).await else { return };
    let user = app.register("describer-runner").await;
    let body = json!({"description": "Buy when the SMA(10) crosses above SMA(30); sell on the reverse.",
                      "execute_after_generation": true});
    let made = app.post(GENERATE_WITH_AI, Some(&user.access), &body).await;
    let made = expect_status(made, StatusCode::CREATED).await;
    assert_eq!(made["status"], "executed", "{made}");
    assert_eq!(made["execution_result"]["success"], true);
    assert!(made["execution_result"]["num_trades"].is_u64(), "{made}");
    let id = made["id"].as_i64().unwrap();
    let history = app.get(&format!("{STRATEGIES}{id}/execution_history/"), Some(&user.access)).await;
    assert_eq!(expect_status(history, StatusCode::OK).await["total_executions"], 1);
}

const CREATE: &str = "/api/strategies/api/create_strategy/";

async fn wait_for_status(app: &TestApp, user: &TestUser, id: i64, from: &str) -> String {
    for _ in 0..150 {
        let status = strategy_status(app, user, id).await;
        if status != from {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    from.to_string()
}

/// `create_strategy`: a template made for it (linked both ways, numbered
/// when taken), `validating` until a backtest job decides.
#[tokio::test]
async fn create_strategy_makes_a_template_and_validates_in_the_background() {
    let sim = start_sim().await;
    let Some(app) = with_sandbox_and_sim(&sim).await else { return };
    let user = app.register("creator").await;
    let token = Some(user.access.as_str());
    let body = json!({"name": "Crossing", "strategy_code": SMA_CROSS, "tags": ["trend"]});
    let created = expect_status(app.post(CREATE, token, &body).await, StatusCode::CREATED).await;
    assert_eq!(created["status"], "validating", "{created}");
    assert!(created["validation_message"].as_str().unwrap().contains("in the background"), "{created}");
    let template = &created["auto_created_template"];
    assert_eq!(template["name"], "Template: Crossing");
    assert_eq!(created["template"], template["id"], "linked back");
    let id = created["id"].as_i64().unwrap();
    let template_id = template["id"].as_i64().unwrap();
    let detail = app.get(&format!("/api/strategies/templates/{template_id}/"), token).await;
    let detail = expect_status(detail, StatusCode::OK).await;
    assert_eq!(
        (detail["category"].as_str(), detail["linked_strategy"].as_i64()),
        (Some("trend"), Some(id)),
        "{detail}"
    );

    assert_eq!(wait_for_status(&app, &user, id, "validating").await, "valid");
    let validations = app.get(&format!("{STRATEGIES}{id}/validation_history/"), token).await;
    let validations = expect_status(validations, StatusCode::OK).await;
    assert_eq!(validations[0]["validation_type"], "backtest", "{validations}");
    assert_eq!(validations[0]["details"]["executed"], true);

    // Code that fails when it runs ends invalid, with the error recorded.
    let failing = FAILS_WHEN_RUN.trim_start_matches("```python\n").trim_end_matches("```\n");
    let other = app.register("creator-two").await;
    let body = json!({"name": "Crossing", "strategy_code": failing});
    let created = expect_status(app.post(CREATE, Some(&other.access), &body).await, StatusCode::CREATED).await;
    assert_eq!(created["auto_created_template"]["name"], "Template: Crossing (2)", "template names are global");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(wait_for_status(&app, &other, id, "validating").await, "invalid");
    let validations = app.get(&format!("{STRATEGIES}{id}/validation_history/"), Some(&other.access)).await;
    let validations = expect_status(validations, StatusCode::OK).await;
    assert!(validations[0]["errors"][0].as_str().unwrap().contains("KeyError"), "{validations}");

    // Given a template: none is made. Bad input: named fields, or 404.
    let body = json!({"name": "On a template", "strategy_code": SMA_CROSS, "template_id": template_id});
    let created = expect_status(app.post(CREATE, token, &body).await, StatusCode::CREATED).await;
    assert!(created.get("auto_created_template").is_none(), "{created}");
    let missing =
        app.post(CREATE, token, &json!({"name": "x", "strategy_code": SMA_CROSS, "template_id": 999_999})).await;
    assert_eq!(expect_status(missing, StatusCode::NOT_FOUND).await, json!({"error": "Template not found"}));
    let foreign = json!({"name": "x", "strategy_code": SMA_CROSS, "template_id": template_id});
    assert_eq!(app.post(CREATE, Some(&other.access), &foreign).await.status(), StatusCode::NOT_FOUND, "not theirs");
    let refused =
        expect_status(app.post(CREATE, token, &json!({"name": "No code"})).await, StatusCode::BAD_REQUEST).await;
    assert!(refused["strategy_code"].is_array(), "{refused}");
    let refused =
        expect_status(app.post(CREATE, token, &json!({"strategy_code": "x"})).await, StatusCode::BAD_REQUEST).await;
    assert!(refused["name"].is_array(), "{refused}");
}

/// Without a sandbox, `create_strategy` decides by the static checks at
/// once, and says it did not run the code.
#[tokio::test]
async fn create_strategy_without_a_sandbox_decides_statically() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("static-creator").await;
    let body = json!({"name": "Crossing", "strategy_code": SMA_CROSS, "skip_template_creation": true});
    let created = expect_status(app.post(CREATE, Some(&user.access), &body).await, StatusCode::CREATED).await;
    assert_eq!(created["status"], "valid", "{created}");
    assert!(created.get("auto_created_template").is_none());
    assert!(created["validation_message"].as_str().unwrap().contains("not run"), "{created}");
    let body = json!({"name": "Leaky", "strategy_code": "import os\nos.system('id')\n"});
    let created = expect_status(app.post(CREATE, Some(&user.access), &body).await, StatusCode::CREATED).await;
    assert_eq!(created["status"], "invalid", "{created}");
}

const VALIDATE: &str = "/api/strategies/validate/";

/// `validate/`: code in, a verdict and a real test run out.
#[tokio::test]
async fn validate_runs_the_code_and_judges_it() {
    let sim = start_sim().await;
    let Some(app) = with_sandbox_and_sim(&sim).await else { return };
    let user = app.register("judge").await;
    let token = Some(user.access.as_str());
    let verdict =
        expect_status(app.post(VALIDATE, token, &json!({"strategy_code": SMA_CROSS})).await, StatusCode::OK).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!((verdict["test_symbol"].as_str(), verdict["test_period"].as_str()), (Some("GOOG"), Some("1y")));
    assert!(verdict["trades_executed"].as_i64().unwrap() > 0, "{verdict}");
    assert_eq!(verdict["indicators_initialized"], 2);
    for field in ["return", "trades", "win_rate", "sharpe", "max_drawdown"] {
        assert!(verdict["test_results"].get(field).is_some(), "test_results.{field}: {verdict}");
    }

    let failing = FAILS_WHEN_RUN.trim_start_matches("```python\n").trim_end_matches("```\n");
    let body = json!({"strategy_code": failing, "test_symbol": "EURUSD", "test_period_days": 60});
    let verdict = expect_status(app.post(VALIDATE, token, &body).await, StatusCode::OK).await;
    assert_eq!((verdict["valid"].as_bool(), verdict["test_period"].as_str()), (Some(false), Some("3mo")));
    assert!(verdict["errors"][0].as_str().unwrap().contains("KeyError: 'support'"), "{verdict}");

    // Canonical JSON is translated and judged the same way.
    let canonical = crate::helpers::two_emas("Two EMAs").to_string();
    let verdict =
        expect_status(app.post(VALIDATE, token, &json!({"strategy_code": canonical})).await, StatusCode::OK).await;
    assert_eq!(verdict["valid"], true, "{verdict}");

    let missing = app.post(VALIDATE, token, &json!({"strategy_name": "x"})).await;
    assert_eq!(expect_status(missing, StatusCode::BAD_REQUEST).await["error"], "strategy_code is required");
    let unknown = app.post(VALIDATE, token, &json!({"strategy_code": SMA_CROSS, "test_symbol": "AAPL"})).await;
    assert!(expect_status(unknown, StatusCode::BAD_REQUEST).await.to_string().contains("GOOG"));
    let gone = app.post("/api/strategies/validate-file/", token, &json!({"file_path": "x.py"})).await;
    let gone = expect_status(gone, StatusCode::GONE).await;
    assert_eq!(gone["replacement"], "/api/strategies/validate/");
    assert_eq!(app.post(VALIDATE, None, &json!({"strategy_code": SMA_CROSS})).await.status(), StatusCode::UNAUTHORIZED);
}

const RESULTS: &str = "/api/strategies/backtest-results/";

/// `save_result/` upserts one row per strategy; `by_strategy/` reads it.
#[tokio::test]
async fn backtest_results_keep_one_row_per_strategy() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("results-keeper").await;
    let token = Some(user.access.as_str());
    let id = strategy_with_code(&app, &user, "Kept", SMA_CROSS).await;
    let by_strategy = format!("{RESULTS}by_strategy/?strategy_id={id}");
    let none = expect_status(app.get(&by_strategy, token).await, StatusCode::NOT_FOUND).await;
    assert_eq!(none["strategy_id"], id);
    let missing = app.get(&format!("{RESULTS}by_strategy/"), token).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    let save = format!("{RESULTS}save_result/");
    let body = json!({"strategy_id": id, "symbol": "goog", "total_trades": 4, "winning_trades": 3, "losing_trades": 1,
                      "win_rate": 75.0, "trades": [], "equity_curve": []});
    let saved = expect_status(app.post(&save, token, &body).await, StatusCode::OK).await;
    assert_eq!((saved["symbol"].as_str(), saved["initial_balance"].as_f64()), (Some("GOOG"), Some(10_000.0)));
    let again = json!({"strategy_id": id, "total_trades": 9});
    let replaced = expect_status(app.post(&save, token, &again).await, StatusCode::OK).await;
    assert_eq!((replaced["id"].clone(), replaced["total_trades"].as_i64()), (saved["id"].clone(), Some(9)), "one row");
    let listed = expect_status(app.get(RESULTS, token).await, StatusCode::OK).await;
    assert_eq!(listed["count"], 1);
    let detail = expect_status(app.get(&format!("{RESULTS}{id}/"), token).await, StatusCode::OK).await;
    assert_eq!(detail["total_trades"], 9);

    let bad = json!({"strategy_id": id, "total_trades": -1, "trades": "many"});
    let bad = expect_status(app.post(&save, token, &bad).await, StatusCode::BAD_REQUEST).await;
    assert!(bad["total_trades"].is_array() && bad["trades"].is_array(), "{bad}");
    let no_id = expect_status(app.post(&save, token, &json!({"symbol": "GOOG"})).await, StatusCode::BAD_REQUEST).await;
    assert!(no_id["strategy_id"].is_array());
    let stranger = app.register("results-stranger").await;
    assert_eq!(
        app.post(&save, Some(&stranger.access), &json!({"strategy_id": id})).await.status(),
        StatusCode::NOT_FOUND
    );
    let theirs = app.get(&format!("{RESULTS}by_strategy/?strategy_id={id}"), Some(&stranger.access)).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
}

const BOTS: &str = "/api/strategies/bot-performance/";

/// A code that trades exactly once in GOOG's last year (buy on the first
/// bar it can, never sell): the old rule calls that "testing".
const ONE_TRADE: &str = "from backtesting import Strategy\n\n\nclass Once(Strategy):\n    def init(self):\n        pass\n\n    def next(self):\n        if not self.position and len(self.data) == 5:\n            self.buy()\n";

/// Bot verification: runs in the sandbox, the old rule, badges, history,
/// and verify_all queueing runs that settle on their own.
#[tokio::test]
async fn bots_are_verified_by_real_runs_under_the_old_rule() {
    let sim = start_sim().await;
    let Some(app) = with_sandbox_and_sim(&sim).await else { return };
    let user = app.register("verifier").await;
    let token = Some(user.access.as_str());
    let good = strategy_with_code(&app, &user, "Crossing", SMA_CROSS).await;
    let once = strategy_with_code(&app, &user, "Once", ONE_TRADE).await;
    let failing = FAILS_WHEN_RUN.trim_start_matches("```python\n").trim_end_matches("```\n");
    let broken = strategy_with_code(&app, &user, "Broken", failing).await;

    let verify = |id: i64| {
        let (app, path) = (&app, format!("{BOTS}verify_bot/"));
        async move { app.post(&path, token, &json!({"strategy_id": id})).await }
    };
    let verified = expect_status(verify(good).await, StatusCode::OK).await;
    assert_eq!(verified["status"], "completed", "{verified}");
    let performance = &verified["performance"];
    assert_eq!(
        (performance["verification_status"].as_str(), performance["is_verified"].as_bool()),
        (Some("verified"), Some(true))
    );
    assert_eq!(performance["badge"]["label"], "Verified");
    assert!(performance["total_trades"].as_i64().unwrap() >= 2, "{performance}");
    let testing = expect_status(verify(once).await, StatusCode::OK).await;
    assert_eq!(testing["performance"]["verification_status"], "testing", "{testing}");
    let failed = expect_status(verify(broken).await, StatusCode::OK).await;
    assert_eq!(failed["performance"]["badge"]["status"], "failed", "{failed}");
    assert!(failed["message"].as_str().unwrap().contains("KeyError"), "{failed}");

    let listed = expect_status(app.get(&format!("{BOTS}verified_bots/"), token).await, StatusCode::OK).await;
    assert_eq!((listed["count"].as_i64(), listed["verified_bots"][0]["strategy_id"].as_i64()), (Some(1), Some(good)));
    let bot_id = performance["id"].as_i64().unwrap();
    let history = expect_status(app.get(&format!("{BOTS}{bot_id}/test_history/"), token).await, StatusCode::OK).await;
    assert_eq!((history["strategy_name"].as_str(), history["is_verified"].as_bool()), (Some("Crossing"), Some(true)));
    assert_eq!(history["test_runs"][0]["verdict"], "verified", "{history}");

    // verify_all: the verified one is skipped, the others queued and settled by the worker.
    let all = app.post(&format!("{BOTS}verify_all/"), token, &json!({"strategy_ids": [good, once, 999_999]})).await;
    let all = expect_status(all, StatusCode::OK).await;
    let summary = &all["summary"];
    assert_eq!(
        (summary["total"].as_i64(), summary["queued"].as_i64(), summary["skipped"].as_i64()),
        (Some(2), Some(1), Some(1)),
        "{all}"
    );
    assert_eq!(summary["errors"][0]["strategy_id"], 999_999);
    let mut settled = Value::Null;
    for _ in 0..100 {
        let list = expect_status(app.get(BOTS, token).await, StatusCode::OK).await;
        settled = list["results"].as_array().unwrap().iter().find(|b| b["strategy_id"] == once).cloned().unwrap();
        if settled["verification_status"] != "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(settled["verification_status"], "testing", "{settled}");

    let missing = app.post(&format!("{BOTS}verify_bot/"), token, &json!({"strategy_id": 999_999})).await;
    assert_eq!(expect_status(missing, StatusCode::NOT_FOUND).await["error"], "Strategy not found");
    let no_id = app.post(&format!("{BOTS}verify_bot/"), token, &json!({})).await;
    assert!(expect_status(no_id, StatusCode::BAD_REQUEST).await["strategy_id"].is_array());
    let stranger = app.register("verifier-stranger").await;
    assert_eq!(
        app.post(&format!("{BOTS}verify_bot/"), Some(&stranger.access), &json!({"strategy_id": good})).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("{BOTS}{bot_id}/test_history/"), Some(&stranger.access)).await.status(),
        StatusCode::NOT_FOUND
    );
}
