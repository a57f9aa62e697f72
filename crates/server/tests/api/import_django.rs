//! `algoagent import-django` against the real database the old Django app
//! wrote (`fixtures/django/`), with its FACTS.json.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::helpers::{base_env, expect_status, spawn_app, TestApp};

const BINARY: &str = env!("CARGO_BIN_EXE_algoagent");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/django");

fn facts() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURE}/FACTS.json")).unwrap()).unwrap()
}

/// A private copy of the old database: the fixture is read-only.
fn old_database(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("old-django.sqlite3");
    std::fs::copy(format!("{FIXTURE}/db.sqlite3"), &path).unwrap();
    path.display().to_string()
}

async fn import(app: &TestApp, args: &[&str]) -> std::process::Output {
    let env = base_env(&app.data_dir, &app.database_url, &app.jwt_secret);
    Command::new(BINARY)
        .env_clear()
        .envs(env)
        .arg("import-django")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.post("/api/auth/login/", None, &json!({"username": username, "password": password})).await
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let (n,): (i64,) = store::on_pool!(store, pool => sqlx::query_as(&sql).fetch_one(pool).await.unwrap());
    store.close().await;
    n
}

#[tokio::test]
async fn the_old_database_comes_across_whole_and_its_users_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let from = old_database(&dir);
    let app = spawn_app().await;
    let facts = facts();

    let dry = import(&app, &["--from", &from, "--dry-run"]).await;
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run"));
    assert_eq!(count(&app, "users").await, 0, "a dry run writes nothing");

    let done = import(&app, &["--from", &from]).await;
    let report = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(done.status.success(), "{}\n{report}", String::from_utf8_lossy(&done.stderr));
    // Every old table is in the summary, with its rows read.
    for (table, rows) in facts["row_counts"].as_object().unwrap() {
        let line = report.lines().find(|l| l.split_whitespace().next() == Some(table.as_str()));
        let line = line.unwrap_or_else(|| panic!("{table} is not in the summary:\n{report}"));
        let numbers: Vec<i64> = line.split_whitespace().skip(1).take(4).map(|n| n.parse().unwrap()).collect();
        assert_eq!(numbers[0], rows.as_i64().unwrap(), "{line}");
        assert_eq!(numbers[1] + numbers[2] + numbers[3], numbers[0], "every row accounted for: {line}");
    }
    for case in [
        "disagree",
        "latest backtest result",
        "no symbol or timeframe",
        "ends on a user turn",
        "another user's strategy",
    ] {
        assert!(report.contains(case), "the summary does not list {case:?}:\n{report}");
    }

    // Counts.
    for (ours, expected) in [
        ("users", 5),
        ("user_profiles", 5),
        ("ai_contexts", 2),
        ("chat_sessions", 2),
        ("chat_messages", 6),
        ("strategies", 3),
        ("strategy_templates", 1),
        ("strategy_comments", 1),
        ("strategy_validations", 1),
        // The performance row and the latest backtest result.
        ("strategy_performance", 2),
        ("strategy_chat_sessions", 1),
        ("strategy_chat_messages", 4),
        // rsi and mean-reversion (alice), momentum (alice and bob); the unused one has no owner.
        ("strategy_tags", 4),
    ] {
        assert_eq!(count(&app, ours).await, expected, "{ours}");
    }

    // Every user with a usable password logs in with it; the inactive one
    // and the unusable one do not.
    for user in facts["users"].as_array().unwrap() {
        let username = user["username"].as_str().unwrap();
        let Some(password) = user["password_plain"].as_str() else {
            let refused = login(&app, username, "").await;
            assert_ne!(refused.status(), StatusCode::OK, "{username}");
            continue;
        };
        let response = login(&app, username, password).await;
        if user["is_active"] == true {
            assert_eq!(response.status(), StatusCode::OK, "{username}");
        } else {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{username} is inactive");
        }
    }
    // Re-hashed at that first login, and still the same password.
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let alice = store.user_by_username("alice").await.unwrap().unwrap();
    assert!(alice.password_hash.starts_with("$argon2id$"), "{}", alice.password_hash);
    store.close().await;
    let alice = expect_status(login(&app, "alice", "Alice-pass-2024!").await, StatusCode::OK).await;
    let token = alice["tokens"]["access"].as_str().unwrap().to_string();

    // Ids are kept: clients' links still work, owner-scoped.
    let strategy = expect_status(app.get("/api/strategies/strategies/1/", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(strategy["name"], "Alice RSI Reversion");
    let tags: Vec<&str> = strategy["tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for tag in ["rsi", "mean_reversion", "equities", "mean-reversion"] {
        assert!(tags.contains(&tag), "{tags:?}");
    }
    expect_status(app.get("/api/strategies/strategies/3/", Some(&token)).await, StatusCode::NOT_FOUND).await;

    // Chat history keeps its order.
    let session = expect_status(app.get("/api/auth/chat-sessions/1/", Some(&token)).await, StatusCode::OK).await;
    let contents: Vec<String> =
        session["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = facts["chat_sessions"][0]["chat_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(contents, expected);

    // The superuser is an admin here.
    let carol = expect_status(login(&app, "carol", "Carol-admin-2024!").await, StatusCode::OK).await;
    let carol = carol["tokens"]["access"].as_str().unwrap();
    expect_status(app.get("/api/admin/keys/", Some(carol)).await, StatusCode::OK).await;
    expect_status(app.get("/api/admin/keys/", Some(&token)).await, StatusCode::FORBIDDEN).await;

    // New rows continue after the imported ids.
    let created = app.register("newcomer").await;
    assert!(created.id > 5, "{}", created.id);

    // The same import again changes nothing.
    let again = import(&app, &["--from", &from]).await;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already imported"));
    assert_eq!(count(&app, "strategies").await, 3);
}

#[tokio::test]
async fn a_database_with_users_needs_merge_and_a_username_collision_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let from = old_database(&dir);
    let app = spawn_app().await;
    let here = app.register("zed").await;

    let refused = import(&app, &["--from", &from]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--merge"));
    assert_eq!(count(&app, "users").await, 1, "nothing written");

    let map = dir.path().join("map.json");
    let merged = import(&app, &["--from", &from, "--merge", "--map-file", map.to_str().unwrap()]).await;
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert_eq!(count(&app, "users").await, 6);
    let map: Value = serde_json::from_str(&std::fs::read_to_string(&map).unwrap()).unwrap();
    let alice_id = map["users"]["1"].as_i64().unwrap();
    assert!(alice_id > here.id, "{map}");
    let alice = expect_status(login(&app, "alice", "Alice-pass-2024!").await, StatusCode::OK).await;
    assert_eq!(alice["user"]["id"], alice_id);
    let token = alice["tokens"]["access"].as_str().unwrap().to_string();
    let strategy_id = map["strategies"]["1"].as_i64().unwrap();
    let strategy = expect_status(
        app.get(&format!("/api/strategies/strategies/{strategy_id}/"), Some(&token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(strategy["name"], "Alice RSI Reversion");

    // A second deployment holding an "alice" of its own collides.
    let other = spawn_app().await;
    other.register("alice").await;
    let collision = import(&other, &["--from", &from, "--merge"]).await;
    assert_eq!(collision.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&collision.stderr).contains("\"alice\""));
    assert_eq!(count(&other, "users").await, 1, "nothing written");
}

#[tokio::test]
async fn a_database_that_is_not_the_old_apps_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    // Our own database is not a Django one.
    let ours = app.database_url.clone();
    let refused = import(&app, &["--from", &ours]).await;
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(message.contains("missing table(s) auth_user"), "{message}");

    let missing = dir.path().join("nothing-here.sqlite3");
    let refused = import(&app, &["--from", missing.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(count(&app, "users").await, 0);
}

#[tokio::test]
async fn strategies_without_an_owner_stop_the_import_until_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let from = old_database(&dir);
    // The old app did not require an owner: make one such strategy.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{from}")).await.unwrap();
    sqlx::query("UPDATE strategy_api_strategy SET created_by_id = NULL WHERE id = 3").execute(&pool).await.unwrap();
    pool.close().await;

    let app = spawn_app().await;
    let refused = import(&app, &["--from", &from]).await;
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(message.contains("#3") && message.contains("--orphans-to"), "{message}");
    assert_eq!(count(&app, "users").await, 0, "nothing written");

    let unknown = import(&app, &["--from", &from, "--orphans-to", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(1));

    let done = import(&app, &["--from", &from, "--orphans-to", "carol"]).await;
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("given to carol"));
    let carol = expect_status(login(&app, "carol", "Carol-admin-2024!").await, StatusCode::OK).await;
    let token = carol["tokens"]["access"].as_str().unwrap();
    let strategy = expect_status(app.get("/api/strategies/strategies/3/", Some(token)).await, StatusCode::OK).await;
    assert_eq!(strategy["name"], "Bob Breakout");
}
