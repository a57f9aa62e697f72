//! Code generation (`generate_executable_code`, `generate_with_auto_fix`,
//! `generate_code`, `strategies/{id}/fix_errors`) through the key pool,
//! with the static checks, the fix loop, progress streams, idempotency, and
//! the read-only validation runs and backtest results they leave behind.

use gemini_sim::Scripted;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app_with_sim, start_sim, EventReader, TestApp, TestUser};

const EXECUTABLE: &str = "/api/strategies/api/generate_executable_code/";
const AUTO_FIX: &str = "/api/strategies/api/generate_with_auto_fix/";
const GENERATE: &str = "/api/strategies/api/generate_code/";
const STRATEGIES: &str = "/api/strategies/strategies/";
const VALIDATIONS: &str = "/api/strategies/validations/";
const PERFORMANCE: &str = "/api/strategies/performance/";

fn ema_cross() -> Value {
    json!({
        "strategy_name": "EMA Cross",
        "description": "Trend following on two EMAs with an RSI filter",
        "timeframe": "1h",
        "indicators": {
            "ema_fast": {"type": "ema", "period": 12},
            "ema_slow": {"type": "ema", "period": 26},
            "rsi": {"type": "rsi", "period": 14}
        },
        "entry_rules": {"long": [{"type": "crossover", "indicator1": "ema_fast", "indicator2": "ema_slow",
                                  "description": "golden cross while RSI is below 70"}]},
        "exit_rules": [{"type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow"}],
        "risk_management": {"stop_loss": 0.02, "take_profit": 0.05, "position_sizing": 0.1}
    })
}

/// Python that parses but breaks the rules: a forbidden import and `open`.
const FORBIDDEN: &str = concat!(
    "```python\n",
    "import os\n",
    "from backtesting import Strategy\n\n",
    "class Leaky(Strategy):\n",
    "    def init(self):\n",
    "        self.secrets = open('/etc/passwd').read()\n\n",
    "    def next(self):\n",
    "        os.system('true')\n",
    "```\n",
);

async fn new_strategy(app: &TestApp, user: &TestUser, name: &str) -> i64 {
    let created =
        expect_status(app.post(STRATEGIES, Some(&user.access), &json!({"name": name})).await, StatusCode::CREATED)
            .await;
    created["id"].as_i64().unwrap()
}

async fn post_with_key(app: &TestApp, path: &str, user: &TestUser, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&user.access)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn executable_json_becomes_a_precise_prompt_and_statically_checked_code() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("generator").await;
    let token = Some(user.access.as_str());
    let strategy_id = new_strategy(&app, &user, "EMA cross").await;

    let body = json!({"canonical_json": ema_cross(), "strategy_id": strategy_id,
                      "test_config": {"symbol": "AAPL", "period": "1y", "interval": "1d"}});
    let answer = expect_status(app.post(EXECUTABLE, token, &body).await, StatusCode::OK).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["strategy_name"], "EmaCross");
    assert_eq!(answer["file_name"], "ema_cross.py");
    assert_eq!(answer["strategy_id"], strategy_id);
    let code = answer["strategy_code"].as_str().unwrap();
    assert!(code.contains("class EmaCross(Strategy):"), "{code}");
    assert!(code.contains("self.I(EMA, self.data.Close, 12)") && code.contains("self.I(EMA, self.data.Close, 26)"));
    assert!(!code.contains("```"), "only the python block is kept");
    // Honest about what happened: checked, never run.
    assert_eq!(answer["execution"]["attempted"], false);
    assert_eq!(answer["execution"]["success"], Value::Null);
    assert_eq!(answer["execution"]["metrics"], Value::Null);
    assert_eq!(answer["execution"]["validation_status"], "static_checks_passed");
    assert_eq!(answer["static_checks"]["passed"], true);
    assert_eq!(answer["static_checks"]["strategy_class"], "EmaCross");
    assert_eq!(answer["error_fixing"]["attempted"], false);
    assert_eq!(answer["error_fixing"]["final_status"], "not_needed");

    // The prompt named every rule, indicator, period and risk figure.
    let requests = sim.sim.requests();
    assert_eq!(requests.len(), 1);
    let prompt = &requests[0].prompt;
    for expected in [
        "Strategy name: EmaCross",
        "EMA(12) as `ema_fast`",
        "EMA(26) as `ema_slow`",
        "RSI(14) as `rsi`",
        "`ema_fast` crosses above `ema_slow` — golden cross while RSI is below 70",
        "`ema_fast` crosses below `ema_slow`",
        "Stop loss: 2%",
        "Take profit: 5%",
        "Timeframe: 1h",
        "\"symbol\":\"AAPL\"",
    ] {
        assert!(prompt.contains(expected), "the prompt lacks {expected:?}:\n{prompt}");
    }

    // Stored with the strategy, not in its strategy_code; a validation run;
    // a note in its parameters.
    let strategy = expect_status(app.get(&format!("{STRATEGIES}{strategy_id}/"), token).await, StatusCode::OK).await;
    assert_eq!(strategy["strategy_code"], "", "generated code lives in its own table");
    assert_eq!(strategy["validation_status"], "passed");
    assert!(strategy["last_validated"].is_string());
    let note = &strategy["parameters"]["generated_code"];
    assert_eq!(note["code_id"], answer["code_id"]);
    assert_eq!(note["strategy_name"], "EmaCross");
    assert_eq!(note["validation_status"], "static_checks_passed");
    let runs =
        expect_status(app.get(&format!("{VALIDATIONS}?strategy={strategy_id}"), token).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 1);
    let run = &runs["results"][0];
    assert_eq!(run["validation_type"], "static_checks");
    assert_eq!(run["status"], "passed");
    assert_eq!(run["details"]["executed"], false);
    let detail = expect_status(app.get(&format!("{VALIDATIONS}{}/", run["id"]), token).await, StatusCode::OK).await;
    assert_eq!(detail["id"], run["id"]);

    // The same JSON as a string is accepted too.
    let as_string = json!({"canonical_json": ema_cross().to_string(), "strategy_name": "Stringly"});
    let answer = expect_status(app.post(EXECUTABLE, token, &as_string).await, StatusCode::OK).await;
    assert_eq!(answer["strategy_name"], "Stringly");
    assert_eq!(answer["strategy_id"], Value::Null);
    assert!(sim.sim.requests()[1].prompt.contains("EMA(26) as `ema_slow`"));
}

#[tokio::test]
async fn the_validators_canonical_json_becomes_a_prompt_of_its_steps() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("stepper").await;
    let token = Some(user.access.as_str());
    let text = "Buy when the 20-day SMA crosses above the 50-day SMA. Sell when the 20-day SMA crosses below the \
                50-day SMA. Use a stop loss at 3% below entry and risk 1% of equity per trade.";
    let validated = expect_status(
        app.post(
            "/api/strategies/api/validate_strategy_with_ai/",
            token,
            &json!({"strategy_text": text, "use_gemini": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let canonical = validated["canonical_json"].as_str().unwrap();
    let answer = expect_status(
        app.post(EXECUTABLE, token, &json!({"canonical_json": canonical, "strategy_name": "SmaSteps"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["success"], true, "{answer}");
    let prompt = &sim.sim.requests()[0].prompt;
    assert!(prompt.contains("1. [entry] Buy when the 20-day SMA crosses above the 50-day SMA"), "{prompt}");
    assert!(prompt.contains("2. [exit] Sell when the 20-day SMA crosses below the 50-day SMA"), "{prompt}");
    let code = answer["strategy_code"].as_str().unwrap();
    assert!(
        code.contains("self.I(SMA, self.data.Close, 20)") && code.contains("self.I(SMA, self.data.Close, 50)"),
        "{code}"
    );
}

#[tokio::test]
async fn a_malformed_canonical_json_is_a_400_naming_the_problem_and_never_reaches_gemini() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("malformed").await;
    let token = Some(user.access.as_str());

    let missing = expect_status(app.post(EXECUTABLE, token, &json!({})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(missing["error"], "canonical_json is required");
    let null =
        expect_status(app.post(AUTO_FIX, token, &json!({"canonical_json": null})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(null["error"], "canonical_json is required");

    let broken = expect_status(
        app.post(EXECUTABLE, token, &json!({"canonical_json": "{\"strategy_name\": "})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(broken["error"], "Invalid JSON format");
    assert!(broken["detail"].as_str().unwrap().contains("line 1"), "{broken}");

    let mut bad_period = ema_cross();
    bad_period["indicators"]["ema_fast"]["period"] = json!(0);
    let error = expect_status(
        app.post(EXECUTABLE, token, &json!({"canonical_json": bad_period})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["canonical_json.indicators.ema_fast.period"].is_array(), "{error}");

    let mut no_rules = ema_cross();
    no_rules.as_object_mut().unwrap().remove("exit_rules");
    let error =
        expect_status(app.post(EXECUTABLE, token, &json!({"canonical_json": no_rules})).await, StatusCode::BAD_REQUEST)
            .await;
    let text = error["canonical_json"][0].as_str().unwrap();
    assert!(text.contains("exit_rules"), "{error}");

    let error =
        expect_status(app.post(EXECUTABLE, token, &json!({"canonical_json": [1, 2]})).await, StatusCode::BAD_REQUEST)
            .await;
    assert!(error["canonical_json"].is_array(), "{error}");

    let error = expect_status(
        app.post(AUTO_FIX, token, &json!({"canonical_json": ema_cross(), "max_fix_attempts": 0})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["max_fix_attempts"].is_array(), "{error}");
    let error = expect_status(
        app.post(EXECUTABLE, token, &json!({"canonical_json": ema_cross(), "strategy_id": "seven"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error.to_string().contains("strategy_id"), "{error}");
    assert!(sim.sim.requests().is_empty(), "no malformed request reached Gemini");
}

#[tokio::test]
async fn broken_code_goes_through_the_fix_loop_with_the_checkers_message() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("fixer").await;
    let token = Some(user.access.as_str());

    sim.sim.script([Scripted::BrokenCode]);
    let answer =
        expect_status(app.post(AUTO_FIX, token, &json!({"canonical_json": ema_cross()})).await, StatusCode::OK).await;
    assert_eq!(answer["validation_passed"], true, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["fix_attempts"], 1);
    let fix = &answer["fix_history"][0];
    assert_eq!(fix["attempt"], 1);
    assert_eq!(fix["success"], true);
    assert_eq!(fix["error_type"], "syntax_error");
    assert!(fix["error_message"].as_str().unwrap().starts_with("SyntaxError:"), "{fix}");
    assert_eq!(answer["error_fixing"]["final_status"], "fixed");
    assert_eq!(answer["error_fixing"]["history"], answer["fix_history"]);
    assert_eq!(answer["execution"]["attempted"], false);

    // The fixer was sent the broken code and the checker's message.
    let requests = sim.sim.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].prompt.contains("class Broken(Strategy)"), "{}", requests[1].prompt);
    assert!(requests[1].prompt.contains("SyntaxError: invalid syntax"), "{}", requests[1].prompt);

    // Still broken after every attempt: an honest failure, with the code kept.
    sim.sim.script(std::iter::repeat_n(Scripted::BrokenCode, 3));
    let answer = expect_status(
        app.post(AUTO_FIX, token, &json!({"canonical_json": ema_cross(), "max_fix_attempts": 2})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["validation_passed"], false);
    assert_eq!(answer["success"], false);
    assert_eq!(answer["fix_attempts"], 2);
    assert_eq!(answer["error_fixing"]["final_status"], "failed");
    assert_eq!(answer["execution"]["validation_status"], "static_checks_failed");
    assert!(answer["execution"]["error_message"].as_str().unwrap().starts_with("SyntaxError"));
    assert!(answer["strategy_code"].as_str().unwrap().contains("class Broken(Strategy)"));
    assert!(answer["code_id"].is_i64());
}

#[tokio::test]
async fn forbidden_imports_and_builtins_are_rejected_then_fixed_on_the_strategy() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("forbidden").await;
    let token = Some(user.access.as_str());
    let strategy_id = new_strategy(&app, &user, "Leaky").await;
    let fix_path = format!("{STRATEGIES}{strategy_id}/fix_errors/");

    let error = expect_status(app.post(&fix_path, token, &json!({})).await, StatusCode::BAD_REQUEST).await;
    assert!(error["error"].as_str().unwrap().contains("no generated code"), "{error}");

    sim.sim.script([Scripted::Text { text: FORBIDDEN.into() }]);
    let answer = expect_status(
        app.post(EXECUTABLE, token, &json!({"canonical_json": ema_cross(), "strategy_id": strategy_id})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["success"], false);
    assert_eq!(answer["execution"]["validation_status"], "static_checks_failed");
    assert_eq!(answer["error_fixing"]["final_status"], "not_attempted");
    let problems: Vec<&str> = answer["static_checks"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert!(problems.iter().any(|m| m.starts_with("ImportError: import of 'os' is not allowed")), "{problems:?}");
    assert!(problems.iter().any(|m| m.starts_with("PermissionError: open() is not allowed")), "{problems:?}");
    let strategy = expect_status(app.get(&format!("{STRATEGIES}{strategy_id}/"), token).await, StatusCode::OK).await;
    assert_eq!(strategy["validation_status"], "failed");
    assert_eq!(strategy["parameters"]["generated_code"]["validation_status"], "static_checks_failed");

    let error =
        expect_status(app.post(&fix_path, token, &json!({"max_attempts": 11})).await, StatusCode::BAD_REQUEST).await;
    assert!(error["max_attempts"].is_array());

    let fixed = expect_status(app.post(&fix_path, token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(fixed["success"], true, "{fixed}");
    assert_eq!(fixed["attempts"], 1);
    assert_eq!(fixed["fixes"][0]["error_type"], "import_error");
    assert_eq!(fixed["fixes"][0]["success"], true);
    assert!(fixed["fixes"][0]["timestamp"].is_string());
    assert_eq!(fixed["validation_status"], "static_checks_passed");
    assert_ne!(fixed["code_id"], answer["code_id"]);
    assert!(!fixed["strategy_code"].as_str().unwrap().contains("import os"));
    let strategy = expect_status(app.get(&format!("{STRATEGIES}{strategy_id}/"), token).await, StatusCode::OK).await;
    assert_eq!(strategy["validation_status"], "passed");
    assert_eq!(strategy["parameters"]["generated_code"]["code_id"], fixed["code_id"]);

    // Passing code and no reported error: nothing to fix, nothing spent.
    let calls = sim.sim.requests().len();
    let clean = expect_status(app.post(&fix_path, token, &json!({})).await, StatusCode::OK).await;
    assert_eq!(clean["attempts"], 0);
    assert_eq!(clean["final_status"], "not_needed");
    assert_eq!(clean["code_id"], fixed["code_id"]);
    assert_eq!(sim.sim.requests().len(), calls);

    // A traceback the caller saw is classified and fixed.
    let traceback = "Traceback (most recent call last):\n  File \"ema_cross.py\", line 12, in next\nKeyError: 'Close'";
    let answer =
        expect_status(app.post(&fix_path, token, &json!({"error_message": traceback})).await, StatusCode::OK).await;
    assert_eq!(answer["attempts"], 1);
    assert_eq!(answer["fixes"][0]["error_type"], "key_error");
    assert!(sim.sim.requests().last().unwrap().prompt.contains("KeyError: 'Close'"));
    let runs =
        expect_status(app.get(&format!("{VALIDATIONS}?strategy={strategy_id}"), token).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 3, "the first generation and two fixes were validation runs: {runs}");
}

#[tokio::test]
async fn auto_fix_and_fix_errors_stream_their_progress() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("progress").await;

    sim.sim.script([Scripted::BrokenCode]);
    let response = app
        .client
        .post(app.url(&format!("{AUTO_FIX}?stream=true")))
        .bearer_auth(&user.access)
        .json(&json!({"canonical_json": ema_cross()}))
        .send()
        .await
        .unwrap();
    let events = EventReader::new(response).rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["progress", "progress", "progress", "progress", "done"], "{events:?}");
    let stages: Vec<&str> = events[..4].iter().map(|e| e.data["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["generating", "checking", "fixing", "checking"]);
    assert!(events[2].data["detail"].as_str().unwrap().starts_with("1/3"), "{:?}", events[2]);
    let done = &events[4].data;
    assert_eq!(done["validation_passed"], true);
    assert_eq!(done["fix_attempts"], 1);

    // A failure before any code exists arrives as an error event with the
    // status the JSON answer would have had.
    sim.sim.script(std::iter::repeat_n(Scripted::Unavailable, 4));
    let response = app
        .client
        .post(app.url(&format!("{AUTO_FIX}?stream=true")))
        .bearer_auth(&user.access)
        .json(&json!({"canonical_json": ema_cross()}))
        .send()
        .await
        .unwrap();
    let events = EventReader::new(response).rest().await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["status"], 502);
    assert!(last.data["code"].is_string());
}

#[tokio::test]
async fn upstream_failures_are_honest_and_idempotent_retries_spend_quota_once() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("retrier").await;
    let strategy_id = new_strategy(&app, &user, "Retried").await;
    let body = json!({"canonical_json": ema_cross(), "strategy_id": strategy_id});

    sim.sim.script(std::iter::repeat_n(Scripted::Unavailable, 4));
    let failed = post_with_key(&app, EXECUTABLE, &user, "gen-1", &body).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let runs = expect_status(app.get(VALIDATIONS, Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 0, "a failed generation stores nothing");

    // The failure released the key: the retry runs, and a repeat replays it.
    let first = expect_status(post_with_key(&app, EXECUTABLE, &user, "gen-1", &body).await, StatusCode::OK).await;
    let calls = sim.sim.requests().len();
    let again = expect_status(post_with_key(&app, EXECUTABLE, &user, "gen-1", &body).await, StatusCode::OK).await;
    assert_eq!(again, first);
    assert_eq!(sim.sim.requests().len(), calls, "the replay made no upstream call");
    let runs = expect_status(app.get(VALIDATIONS, Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 1, "and stored nothing twice");

    let other = json!({"canonical_json": ema_cross(), "strategy_name": "Other"});
    let error =
        expect_status(post_with_key(&app, EXECUTABLE, &user, "gen-1", &other).await, StatusCode::BAD_REQUEST).await;
    assert!(error["error"].as_str().unwrap().contains("different request"));
    // One endpoint's key does not replay on another.
    let error =
        expect_status(post_with_key(&app, AUTO_FIX, &user, "gen-1", &body).await, StatusCode::BAD_REQUEST).await;
    assert!(error["error"].as_str().unwrap().contains("different request"));
}

#[tokio::test]
async fn generate_code_turns_a_description_or_a_template_into_code() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("describer").await;
    let token = Some(user.access.as_str());

    let answer = expect_status(
        app.post(
            GENERATE,
            token,
            &json!({"strategy_description": "Buy when the SMA(10) crosses above SMA(30); sell on the reverse.",
                    "parameters": {"cash": 10000}, "strategy_name": "Sma Pair"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["strategy_name"], "SmaPair");
    assert!(answer["generated_code"].as_str().unwrap().contains("class SmaPair(Strategy):"), "{answer}");
    assert_eq!(answer["parameters"], json!({"cash": 10000}));
    assert_eq!(answer["metadata"]["generator"], "gemini");
    assert_eq!(answer["metadata"]["validation_status"], "static_checks_passed");
    assert_eq!(answer["metadata"]["execution"]["attempted"], false);
    assert!(sim.sim.requests()[0].prompt.contains("SMA(10) crosses above SMA(30)"));

    let error = expect_status(app.post(GENERATE, token, &json!({})).await, StatusCode::BAD_REQUEST).await;
    assert!(error["strategy_description"].is_array());
    let error = expect_status(
        app.post(GENERATE, token, &json!({"strategy_description": "x", "use_gemini": false})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["template_id"].is_array());
    let error = expect_status(
        app.post(GENERATE, token, &json!({"strategy_description": "x", "template_id": 999_999})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["template_id"].is_array());

    let template_code = "from backtesting import Strategy\n\nclass Hold(Strategy):\n    def init(self):\n        pass\n\n    def next(self):\n        if not self.position:\n            self.buy()\n";
    let template = expect_status(
        app.post("/api/strategies/templates/", token, &json!({"name": "Hold", "template_code": template_code})).await,
        StatusCode::CREATED,
    )
    .await;
    let calls = sim.sim.requests().len();
    let answer = expect_status(
        app.post(
            GENERATE,
            token,
            &json!({"strategy_description": "Buy and hold", "template_id": template["id"], "use_gemini": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["generated_code"], template_code);
    assert_eq!(answer["strategy_name"], "Hold");
    assert_eq!(answer["metadata"]["generator"], "template");
    assert_eq!(answer["metadata"]["validation_status"], "static_checks_passed");
    assert_eq!(sim.sim.requests().len(), calls, "no Gemini call without use_gemini");
}

#[tokio::test]
async fn another_users_strategies_and_runs_are_404() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let owner = app.register("owner").await;
    let intruder = app.register("intruder").await;
    let strategy_id = new_strategy(&app, &owner, "Mine").await;
    expect_status(
        app.post(EXECUTABLE, Some(&owner.access), &json!({"canonical_json": ema_cross(), "strategy_id": strategy_id}))
            .await,
        StatusCode::OK,
    )
    .await;
    let runs = expect_status(app.get(VALIDATIONS, Some(&owner.access)).await, StatusCode::OK).await;
    let run_id = runs["results"][0]["id"].as_i64().unwrap();
    let calls = sim.sim.requests().len();

    let token = Some(intruder.access.as_str());
    let body = json!({"canonical_json": ema_cross(), "strategy_id": strategy_id});
    expect_status(app.post(EXECUTABLE, token, &body).await, StatusCode::NOT_FOUND).await;
    expect_status(app.post(AUTO_FIX, token, &body).await, StatusCode::NOT_FOUND).await;
    expect_status(
        app.post(&format!("{STRATEGIES}{strategy_id}/fix_errors/"), token, &json!({})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_status(app.get(&format!("{VALIDATIONS}{run_id}/"), token).await, StatusCode::NOT_FOUND).await;
    let theirs =
        expect_status(app.get(&format!("{VALIDATIONS}?strategy={strategy_id}"), token).await, StatusCode::OK).await;
    assert_eq!(theirs["count"], 0);
    assert_eq!(sim.sim.requests().len(), calls, "nothing reached Gemini for the intruder");
    let strategy =
        expect_status(app.get(&format!("{STRATEGIES}{strategy_id}/"), Some(&owner.access)).await, StatusCode::OK).await;
    assert_eq!(strategy["parameters"]["generated_code"]["strategy_name"], "EmaCross");
}

#[tokio::test]
async fn validations_and_performance_are_read_only_records() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("records").await;
    let token = Some(user.access.as_str());

    // create_strategy_with_ai is a validation run of the new strategy.
    let created = expect_status(
        app.post(
            "/api/strategies/api/create_strategy_with_ai/",
            token,
            &json!({"strategy_text": "Buy when the 50-day EMA crosses above the 200-day EMA. Sell when it crosses \
                    below. Use a stop loss at 2% below entry and risk 1% of equity per trade.", "use_gemini": false}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let strategy_id = created["strategy"]["id"].as_i64().unwrap();
    assert_eq!(created["strategy"]["validation_status"], "passed");
    let runs =
        expect_status(app.get(&format!("{VALIDATIONS}?strategy={strategy_id}"), token).await, StatusCode::OK).await;
    assert_eq!(runs["count"], 1);
    assert_eq!(runs["results"][0]["validation_type"], "ai_validation");
    assert_eq!(runs["results"][0]["details"]["classification"], "trend-following");

    // A failed re-validation is recorded too, and the strategy is unchanged.
    let path = format!("/api/strategies/api/{strategy_id}/update_strategy_with_ai/");
    expect_status(
        app.send(reqwest::Method::PATCH, &path, token, &json!({"strategy_text": "Please provide your API key."})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let list = expect_status(app.get(STRATEGIES, token).await, StatusCode::OK).await;
    assert_eq!(list["results"][0]["validation_status"], "failed");
    assert_eq!(list["results"][0]["latest_performance"], Value::Null, "no backtest has run");

    let response = app.post(VALIDATIONS, token, &json!({"strategy": strategy_id, "status": "passed"})).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = app.send(reqwest::Method::DELETE, &format!("{VALIDATIONS}1/"), token, &json!({})).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    let performance = expect_status(app.get(PERFORMANCE, token).await, StatusCode::OK).await;
    assert_eq!(performance["count"], 0);
    assert_eq!(performance["results"], json!([]));
    expect_status(app.get(&format!("{PERFORMANCE}1/"), token).await, StatusCode::NOT_FOUND).await;
    let error =
        expect_status(app.get(&format!("{PERFORMANCE}?strategy=abc"), token).await, StatusCode::BAD_REQUEST).await;
    assert!(error["strategy"].is_array());
    let response = app.post(PERFORMANCE, token, &json!({"strategy": strategy_id})).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    expect_status(app.get(VALIDATIONS, None).await, StatusCode::UNAUTHORIZED).await;
}

/// Issue 13: the shapes of the executable JSON the old Django app accepted,
/// sent by its clients, work here too: indicators as a list with `params`,
/// `moving_average`, sizing as `{type: fixed_percent, value}`, and rules
/// given as plain text.
#[tokio::test]
async fn the_old_apps_executable_json_shapes_are_accepted() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("old-client").await;
    let token = Some(user.access.as_str());
    let old = json!({"strategy_name": "SMA Cross", "timeframe": "1d",
     "entry_rules": [{"type": "crossover", "indicator1": "sma_10", "indicator2": "sma_20", "description": "SMA10 crosses above SMA20"}],
     "exit_rules": [{"type": "crossunder", "indicator1": "sma_10", "indicator2": "sma_20"}],
     "indicators": [{"name": "sma_10", "type": "sma", "params": {"period": 10}}, {"name": "sma_20", "type": "sma", "params": {"period": 20}}],
     "risk_management": {"stop_loss": 0.02, "take_profit": 0.06, "position_sizing": {"type": "fixed_percent", "value": 0.95}}});
    let answer =
        expect_status(app.post(EXECUTABLE, token, &json!({"canonical_json": old})).await, StatusCode::OK).await;
    assert_eq!(answer["success"], true, "{answer}");
    let prompt = sim.sim.requests()[0].prompt.clone();
    for expected in [
        "SMA(10) as `sma_10`",
        "SMA(20) as `sma_20`",
        "`sma_10` crosses above `sma_20` — SMA10 crosses above SMA20",
        "Position size: 0.95 of equity",
        "Take profit: 6%",
    ] {
        assert!(prompt.contains(expected), "the prompt lacks {expected:?}:\n{prompt}");
    }

    // `moving_average` is an SMA, `timeperiod` a period, a bare number a
    // size; a rule in words goes into the prompt as written.
    let variants = json!({"strategy_name": "Words", "timeframe": "1h",
     "entry_rules": ["Buy when the close is above the 50-day average and volume rises"],
     "exit_rules": [{"type": "crossunder", "indicator1": "fast", "indicator2": "slow"}],
     "indicators": [{"name": "fast", "type": "moving_average", "params": {"timeperiod": 5}},
                    {"name": "slow", "type": "ema", "params": {"period": 30}}],
     "risk_management": {"position_sizing": 0.5}});
    let answer =
        expect_status(app.post(AUTO_FIX, token, &json!({"canonical_json": variants})).await, StatusCode::OK).await;
    assert_eq!(answer["success"], true, "{answer}");
    let prompt = sim.sim.requests()[1].prompt.clone();
    for expected in [
        "SMA(5) as `fast`",
        "EMA(30) as `slow`",
        "- Buy when the close is above the 50-day average and volume rises",
        "Position size: 0.5 of equity",
    ] {
        assert!(prompt.contains(expected), "the prompt lacks {expected:?}:\n{prompt}");
    }

    // Still wrong shapes are 400s naming the path.
    for (bad, path) in [
        (json!([{"type": "sma", "params": {"period": 10}}]), "canonical_json.indicators"),
        (json!([{"name": "x", "type": "sma", "params": {"period": 0}}]), "canonical_json.indicators"),
        (json!([{"name": "x", "type": "wavelet", "params": {}}]), "canonical_json.indicators"),
    ] {
        let mut strategy = old.clone();
        strategy["indicators"] = bad;
        let error = expect_status(
            app.post(EXECUTABLE, token, &json!({"canonical_json": strategy})).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(error.as_object().unwrap().keys().any(|k| k.starts_with(path)), "{error}");
    }
    let mut sizing = old.clone();
    sizing["risk_management"]["position_sizing"] = json!({"type": "fixed_percent", "value": 95});
    let error =
        expect_status(app.post(EXECUTABLE, token, &json!({"canonical_json": sizing})).await, StatusCode::BAD_REQUEST)
            .await;
    assert!(error.to_string().contains("position_sizing"), "{error}");
    assert_eq!(sim.sim.requests().len(), 2, "no malformed request reached Gemini");
}
