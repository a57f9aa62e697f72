//! `/api/production/`: the old hardening API on what exists (the schemas,
//! the static checks, the sandboxed job runner, versions in the database).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::backtests::SMA_CROSS;
use crate::helpers::{expect_status, spawn_app, with_sandbox, TestApp, TestUser};

const P: &str = "/api/production/";

async fn strategy(app: &TestApp, user: &TestUser, code: &str) -> i64 {
    let created = app
        .post("/api/strategies/strategies/", Some(&user.access), &json!({"name": "Prod", "strategy_code": code}))
        .await;
    expect_status(created, StatusCode::CREATED).await["id"].as_i64().unwrap()
}

#[tokio::test]
async fn schemas_code_checks_versions_and_health_without_a_sandbox() {
    let app = spawn_app().await;
    let user = app.register("operator-of-old").await;
    let token = Some(user.access.as_str());

    let valid = app
        .post(&format!("{P}strategies/validate-schema/"), token, &json!({"name": "Trend", "entry_rules": ["x"]}))
        .await;
    let valid = expect_status(valid, StatusCode::OK).await;
    assert_eq!(valid["status"], "valid");
    assert_eq!(
        (valid["validated_data"]["framework"].as_str(), valid["validated_data"]["schema_version"].as_str()),
        (Some("backtesting.py"), Some("2.0.0"))
    );
    let invalid = app
        .post(
            &format!("{P}strategies/validate-schema/"),
            token,
            &json!({"name": "", "framework": "zipline", "entry_rules": [1]}),
        )
        .await;
    let invalid = expect_status(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(invalid["status"], "invalid");
    let details = invalid["details"].as_str().unwrap();
    assert!(
        details.contains("definition.name")
            && details.contains("definition.framework")
            && details.contains("definition.entry_rules[0]"),
        "{details}"
    );

    let checked = app.post(&format!("{P}strategies/validate-code/"), token, &json!({"code": SMA_CROSS})).await;
    let checked = expect_status(checked, StatusCode::OK).await;
    assert_eq!((checked["status"].as_str(), checked["safe"].as_bool()), (Some("validated"), Some(true)));
    assert_eq!(checked["checks_passed"].as_array().unwrap().len(), 4);
    let leaky = app
        .post(&format!("{P}strategies/validate-code/"), token, &json!({"code": "import os\nos.system('id')\n"}))
        .await;
    let leaky = expect_status(leaky, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        (leaky["status"].as_str(), leaky["safe"].as_bool(), leaky["severity"].as_str()),
        (Some("rejected"), Some(false), Some("high"))
    );
    // Without strict mode, a missing strategy class is only a warning.
    let helper = json!({"code": "def helper(x):\n    return x * 2\n", "strict_mode": false});
    let relaxed =
        expect_status(app.post(&format!("{P}strategies/validate-code/"), token, &helper).await, StatusCode::OK).await;
    assert!(!relaxed["warnings"].as_array().unwrap().is_empty(), "{relaxed}");
    let missing = app.post(&format!("{P}strategies/validate-code/"), token, &json!({})).await;
    assert!(expect_status(missing, StatusCode::BAD_REQUEST).await["code"].is_array());

    // Versions: deploy twice, roll back to the first.
    let id = strategy(&app, &user, SMA_CROSS).await;
    let deploy = |message: &str, tag: bool| {
        let (app, path, body) = (
            &app,
            format!("{P}strategies/{id}/deploy/"),
            json!({"commit_message": message, "create_tag": tag, "tag_version": "v1"}),
        );
        async move { app.post(&path, token, &body).await }
    };
    let first = expect_status(deploy("first", true).await, StatusCode::CREATED).await;
    assert_eq!(first["tag"], "v1");
    let first_hash = first["commit_hash"].as_str().unwrap().to_string();
    let changed = SMA_CROSS.replace("10)", "12)");
    let patched = app
        .send(
            reqwest::Method::PATCH,
            &format!("/api/strategies/strategies/{id}/"),
            token,
            &json!({"strategy_code": changed}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let second = expect_status(deploy("second", false).await, StatusCode::CREATED).await;
    assert_ne!(second["commit_hash"], first["commit_hash"], "different code, different hash");
    let life = expect_status(app.get(&format!("{P}strategies/{id}/lifecycle/"), token).await, StatusCode::OK).await;
    assert_eq!(
        (life["versions"].as_array().unwrap().len(), life["current_commit"].clone()),
        (2, second["commit_hash"].clone())
    );
    let back = app.post(&format!("{P}strategies/{id}/rollback/"), token, &json!({"reason": "worse"})).await;
    let back = expect_status(back, StatusCode::OK).await;
    assert_eq!(back["restored_commit"], first_hash.as_str());
    // The restored code is what runs now, and it is the first version's again.
    let redeployed = expect_status(deploy("after rollback", false).await, StatusCode::CREATED).await;
    assert_eq!(redeployed["commit_hash"], first_hash.as_str());
    let unknown =
        app.post(&format!("{P}strategies/{id}/rollback/"), token, &json!({"commit_hash": "ffffffffffff"})).await;
    assert!(expect_status(unknown, StatusCode::BAD_REQUEST).await["commit_hash"].is_array());
    let no_message = app.post(&format!("{P}strategies/{id}/deploy/"), token, &json!({})).await;
    assert!(expect_status(no_message, StatusCode::BAD_REQUEST).await["commit_message"].is_array());

    let config =
        app.post(&format!("{P}backtests/validate-config/"), token, &json!({"name": "x", "commission": 0.001})).await;
    assert_eq!(expect_status(config, StatusCode::OK).await["status"], "valid");
    let config =
        app.post(&format!("{P}backtests/validate-config/"), token, &json!({"name": "x", "commission": 3})).await;
    assert!(expect_status(config, StatusCode::BAD_REQUEST).await["errors"].as_str().unwrap().contains("commission"));

    // No sandbox here: health says which component is down, with a 503.
    let health =
        expect_status(app.get(&format!("{P}strategies/health/"), token).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(health["overall"], "degraded");
    assert_eq!(health["components"]["sandbox_runner"]["status"], "unavailable");
    assert_eq!(health["components"]["state_manager"]["status"], "healthy");
    let refused = app.post(&format!("{P}strategies/sandbox-test/"), token, &json!({"strategy_id": id})).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    let stranger = app.register("prod-stranger").await;
    for path in [format!("{P}strategies/{id}/lifecycle/")] {
        assert_eq!(app.get(&path, Some(&stranger.access)).await.status(), StatusCode::NOT_FOUND);
    }
    let theirs =
        app.post(&format!("{P}strategies/{id}/deploy/"), Some(&stranger.access), &json!({"commit_message": "x"})).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("{P}strategies/health/"), None).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sandbox_tests_and_runs_really_run() {
    let Some(app) = with_sandbox(&[]).await else { return };
    let user = app.register("prod-runner").await;
    let token = Some(user.access.as_str());
    let id = strategy(&app, &user, SMA_CROSS).await;
    let tested =
        app.post(&format!("{P}strategies/sandbox-test/"), token, &json!({"strategy_id": id, "timeout": 60})).await;
    let tested = expect_status(tested, StatusCode::OK).await;
    assert_eq!((tested["status"].as_str(), tested["success"].as_bool()), (Some("completed"), Some(true)), "{tested}");
    assert!(tested["metrics"]["num_trades"].is_u64());
    assert!(tested["limits"]["wall_seconds"].is_u64());

    let queued = app
        .post(&format!("{P}backtests/run-sandbox/"), token, &json!({"strategy_id": id, "symbols": ["EURUSD"]}))
        .await;
    let queued = expect_status(queued, StatusCode::ACCEPTED).await;
    let status_url = queued["status_url"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = expect_status(app.get(&status_url, token).await, StatusCode::OK).await;
        if status["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status["success"], true, "{status}");
    let health = expect_status(app.get(&format!("{P}backtests/health/"), token).await, StatusCode::OK).await;
    assert_eq!(health["overall"], "healthy");
    let stranger = app.register("prod-runner-stranger").await;
    assert_eq!(app.get(&status_url, Some(&stranger.access)).await.status(), StatusCode::NOT_FOUND);
    let missing = app.post(&format!("{P}backtests/run-sandbox/"), token, &json!({"symbols": ["GOOG"]})).await;
    assert!(expect_status(missing, StatusCode::BAD_REQUEST).await["strategy_id"].is_array());
}
