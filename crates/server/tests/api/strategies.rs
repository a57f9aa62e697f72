//! `/api/strategies/strategies/` and `/api/strategies/tags/`: CRUD, the list
//! filters, per-user uniqueness answered as a 400 naming the field, and
//! owner scoping.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{expect_status, spawn_app};

const STRATEGIES: &str = "/api/strategies/strategies/";

fn names(page: &Value) -> Vec<&str> {
    page["results"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn strategies_are_created_filtered_updated_and_deleted() {
    let app = spawn_app().await;
    let user = app.register("quant").await;
    let token = Some(user.access.as_str());

    let created = expect_status(
        app.post(
            STRATEGIES,
            token,
            &json!({"name": "EMA cross", "description": "Fast over slow", "tags": ["trend", "ema", "trend"],
                    "parameters": {"fast": 12}, "risk_level": "medium", "expected_return": 0.12}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["version"], "1.0.0");
    assert_eq!(created["status"], "draft");
    assert_eq!(created["tags"], json!(["trend", "ema"]), "tags are a list of strings, without repeats");
    assert_eq!(created["created_by"], user.id);
    assert_eq!(created["created_by_username"], "quant");
    assert_eq!(created["template"], Value::Null);
    assert_eq!(created["validation_status"], Value::Null, "no validation has run");
    for (name, status, tags, description) in [
        ("RSI bounce", "valid", json!(["mean-reversion"]), "Buy oversold"),
        ("Breakout", "draft", json!(["trend"]), "Donchian channel breakout"),
    ] {
        let body = json!({"name": name, "status": status, "tags": tags, "description": description});
        expect_status(app.post(STRATEGIES, token, &body).await, StatusCode::CREATED).await;
    }

    let all = expect_status(app.get(STRATEGIES, token).await, StatusCode::OK).await;
    assert_eq!(all["count"], 3);
    assert_eq!(names(&all), ["Breakout", "RSI bounce", "EMA cross"], "newest first");
    let filtered = |query: &'static str| {
        let app = &app;
        async move { expect_status(app.get(&format!("{STRATEGIES}?{query}"), token).await, StatusCode::OK).await }
    };
    assert_eq!(names(&filtered("status=valid").await), ["RSI bounce"]);
    assert_eq!(names(&filtered("tags=trend").await), ["Breakout", "EMA cross"]);
    assert_eq!(names(&filtered("search=SLOW").await), ["EMA cross"], "description, any case");
    assert_eq!(names(&filtered("search=break&tags=trend").await), ["Breakout"]);
    assert_eq!(names(&filtered("search=100%25").await), Vec::<&str>::new(), "% matches literally");

    let id = created["id"].as_i64().unwrap();
    let path = format!("{STRATEGIES}{id}/");
    let patched = expect_status(
        app.send(Method::PATCH, &path, token, &json!({"status": "active", "expected_return": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["status"], "active");
    assert_eq!(patched["expected_return"], Value::Null, "null clears");
    assert_eq!(patched["description"], "Fast over slow", "PATCH keeps what it does not name");
    let error = expect_status(
        app.send(Method::PUT, &path, token, &json!({"description": "no name"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["name"][0], "This field is required.");
    assert_eq!(app.send(Method::DELETE, &path, token, &json!({})).await.status(), StatusCode::NO_CONTENT);
    expect_status(app.get(&path, token).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn bad_strategy_fields_are_400s_naming_the_field() {
    let app = spawn_app().await;
    let user = app.register("sloppy").await;
    let token = Some(user.access.as_str());
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "x", "status": "shipping"}), "status"),
        (json!({"name": "x", "risk_level": "extreme"}), "risk_level"),
        (json!({"name": "x", "parameters": [1, 2]}), "parameters"),
        (json!({"name": "x", "tags": [""]}), "tags"),
        (json!({"name": "x", "template": 999}), "template"),
        (json!({"name": "x", "version": ""}), "version"),
    ] {
        let error = expect_status(app.post(STRATEGIES, token, &body).await, StatusCode::BAD_REQUEST).await;
        assert!(error[field].is_array(), "{body} → {error}");
    }
    let error = expect_status(app.post(STRATEGIES, token, &json!({"name": 5})).await, StatusCode::BAD_REQUEST).await;
    assert!(error.to_string().contains("name"), "{error}");
}

#[tokio::test]
async fn name_and_version_are_unique_per_user() {
    let app = spawn_app().await;
    let alice = app.register("alicequant").await;
    let bob = app.register("bobquant").await;
    let body = json!({"name": "Same", "version": "2.0"});
    expect_status(app.post(STRATEGIES, Some(&alice.access), &body).await, StatusCode::CREATED).await;
    let error = expect_status(app.post(STRATEGIES, Some(&alice.access), &body).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["name"][0], "You already have a strategy with this name and version.");
    // Another version, or another user, is free to use the name.
    let v3 = json!({"name": "Same", "version": "3.0"});
    let other = expect_status(app.post(STRATEGIES, Some(&alice.access), &v3).await, StatusCode::CREATED).await;
    expect_status(app.post(STRATEGIES, Some(&bob.access), &body).await, StatusCode::CREATED).await;
    // Renaming into a taken pair is refused the same way, and changes nothing.
    let path = format!("{STRATEGIES}{}/", other["id"]);
    let error = expect_status(
        app.send(Method::PATCH, &path, Some(&alice.access), &json!({"version": "2.0"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["name"].is_array(), "{error}");
    let unchanged = expect_status(app.get(&path, Some(&alice.access)).await, StatusCode::OK).await;
    assert_eq!(unchanged["version"], "3.0");
}

#[tokio::test]
async fn another_users_strategies_and_tags_are_404() {
    let app = spawn_app().await;
    let owner = app.register("stratowner").await;
    let intruder = app.register("stratintruder").await;
    let strategy =
        expect_status(app.post(STRATEGIES, Some(&owner.access), &json!({"name": "Mine"})).await, StatusCode::CREATED)
            .await;
    let tag = expect_status(
        app.post("/api/strategies/tags/", Some(&owner.access), &json!({"name": "mine"})).await,
        StatusCode::CREATED,
    )
    .await;
    for path in [format!("{STRATEGIES}{}/", strategy["id"]), format!("/api/strategies/tags/{}/", tag["id"])] {
        for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
            let body = json!({"name": "Stolen"});
            let response = app.send(method.clone(), &path, Some(&intruder.access), &body).await;
            expect_status(response, StatusCode::NOT_FOUND).await;
        }
        let still = expect_status(app.get(&path, Some(&owner.access)).await, StatusCode::OK).await;
        assert_ne!(still["name"], "Stolen");
    }
    let theirs = expect_status(app.get(STRATEGIES, Some(&intruder.access)).await, StatusCode::OK).await;
    assert_eq!(theirs["count"], 0);
}

#[tokio::test]
async fn tags_are_a_users_own_named_colours() {
    let app = spawn_app().await;
    let user = app.register("tagger").await;
    let token = Some(user.access.as_str());
    let tag = expect_status(
        app.post("/api/strategies/tags/", token, &json!({"name": "momentum", "description": "Rides trends"})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(tag["color"], "#007bff");
    let error = expect_status(
        app.post("/api/strategies/tags/", token, &json!({"name": "momentum"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["name"][0], "You already have a tag with this name.");
    let error = expect_status(
        app.post("/api/strategies/tags/", token, &json!({"name": "x", "color": "red"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["color"].is_array());
    let path = format!("/api/strategies/tags/{}/", tag["id"]);
    let patched =
        expect_status(app.send(Method::PATCH, &path, token, &json!({"color": "#ff8800"})).await, StatusCode::OK).await;
    assert_eq!((patched["name"].as_str(), patched["color"].as_str()), (Some("momentum"), Some("#ff8800")));
    let list = expect_status(app.get("/api/strategies/tags/", token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 1);
    assert_eq!(app.send(Method::DELETE, &path, token, &json!({})).await.status(), StatusCode::NO_CONTENT);
    expect_status(app.get(&path, token).await, StatusCode::NOT_FOUND).await;
}

const TEMPLATES: &str = "/api/strategies/templates/";

#[tokio::test]
async fn system_templates_are_read_by_all_and_written_by_admins() {
    let app = spawn_app().await;
    let admin = app.register("templateadmin").await;
    let user = app.register("templateuser").await;
    let other = app.register("templateother").await;
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    store.set_role(admin.id, store::accounts::ROLE_ADMIN).await.unwrap();
    store.close().await;

    let system = json!({"name": "Golden cross", "category": "trend", "is_system_template": true,
                        "template_code": "class GoldenCross(Strategy): ..."});
    let error = expect_status(app.post(TEMPLATES, Some(&user.access), &system).await, StatusCode::FORBIDDEN).await;
    assert_eq!(error["code"], "permission_denied");
    let shared = expect_status(app.post(TEMPLATES, Some(&admin.access), &system).await, StatusCode::CREATED).await;
    let own = expect_status(
        app.post(TEMPLATES, Some(&user.access), &json!({"name": "My RSI", "category": "mean-reversion"})).await,
        StatusCode::CREATED,
    )
    .await;
    let taken = json!({"name": "Golden cross"});
    let error = expect_status(app.post(TEMPLATES, Some(&user.access), &taken).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["name"][0], "A template with this name already exists.");

    // Everyone sees the system template; only the owner sees a private one.
    let mine = expect_status(app.get(TEMPLATES, Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(names(&mine), ["My RSI", "Golden cross"]);
    let theirs = expect_status(app.get(TEMPLATES, Some(&other.access)).await, StatusCode::OK).await;
    assert_eq!(names(&theirs), ["Golden cross"]);
    let trend =
        expect_status(app.get(&format!("{TEMPLATES}?category=trend"), Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(names(&trend), ["Golden cross"]);
    let own_path = format!("{TEMPLATES}{}/", own["id"]);
    expect_status(app.get(&own_path, Some(&other.access)).await, StatusCode::NOT_FOUND).await;

    // A system template: visible, so a 403 to users and changeable by admins.
    let shared_path = format!("{TEMPLATES}{}/", shared["id"]);
    let edit = json!({"description": "edited"});
    expect_status(app.send(Method::PATCH, &shared_path, Some(&user.access), &edit).await, StatusCode::FORBIDDEN).await;
    let edited =
        expect_status(app.send(Method::PATCH, &shared_path, Some(&admin.access), &edit).await, StatusCode::OK).await;
    assert_eq!(edited["description"], "edited");
    let promote = json!({"is_system_template": true});
    expect_status(app.send(Method::PATCH, &own_path, Some(&user.access), &promote).await, StatusCode::FORBIDDEN).await;

    // sync_from_strategy copies the caller's strategy; get_context returns it.
    let strategy = expect_status(
        app.post(
            STRATEGIES,
            Some(&user.access),
            &json!({"name": "RSI v1", "strategy_code": "print(1)",
                                                          "parameters": {"period": 14}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let sync = format!("{TEMPLATES}{}/sync_from_strategy/", own["id"]);
    let error = expect_status(app.post(&sync, Some(&user.access), &json!({})).await, StatusCode::BAD_REQUEST).await;
    assert!(error["strategy_id"].is_array(), "nothing linked yet");
    let synced = expect_status(
        app.post(&sync, Some(&user.access), &json!({"strategy_id": strategy["id"]})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(synced["template"]["latest_strategy_code"], "print(1)");
    assert_eq!(synced["template"]["linked_strategy"], strategy["id"]);
    let context =
        expect_status(app.get(&format!("{own_path}get_context/"), Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(context["latest_parameters"], json!({"period": 14}));
    assert_eq!(context["linked_strategy"]["name"], "RSI v1");
    // Another user's strategy cannot be synced in.
    let foreign =
        expect_status(app.post(STRATEGIES, Some(&other.access), &json!({"name": "Theirs"})).await, StatusCode::CREATED)
            .await;
    let error = expect_status(
        app.post(&sync, Some(&user.access), &json!({"strategy_id": foreign["id"]})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["strategy_id"].is_array());

    // Deleting: the owner's own; a system one only by an admin.
    expect_status(app.send(Method::DELETE, &shared_path, Some(&user.access), &json!({})).await, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(
        app.send(Method::DELETE, &shared_path, Some(&admin.access), &json!({})).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send(Method::DELETE, &own_path, Some(&user.access), &json!({})).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn health_categories_and_indicators_answer() {
    let app = spawn_app().await;
    let user = app.register("catalogue").await;
    let token = Some(user.access.as_str());
    let health = expect_status(app.get("/api/strategies/api/health/", token).await, StatusCode::OK).await;
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["ai"]["keys_configured"], 0);
    assert_eq!(health["ai"]["status"], "unavailable");
    for (name, category) in [("A", "trend"), ("B", "mean-reversion"), ("C", "trend"), ("D", "")] {
        let body = json!({"name": name, "category": category});
        expect_status(app.post(TEMPLATES, token, &body).await, StatusCode::CREATED).await;
    }
    let categories = expect_status(app.get("/api/strategies/api/categories/", token).await, StatusCode::OK).await;
    assert_eq!(categories["categories"], json!(["mean-reversion", "trend"]));
    let indicators =
        expect_status(app.get("/api/strategies/strategies/available_indicators/", token).await, StatusCode::OK).await;
    let names: Vec<&str> =
        indicators["indicators"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ema", "sma", "rsi", "macd", "bollinger_bands", "atr", "stochastic"]);
    expect_status(app.get("/api/strategies/api/health/", None).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn search_matches_every_given_criterion() {
    let app = spawn_app().await;
    let user = app.register("searcher").await;
    let token = Some(user.access.as_str());
    let template = expect_status(
        app.post(TEMPLATES, token, &json!({"name": "Trend base", "category": "trend"})).await,
        StatusCode::CREATED,
    )
    .await;
    for (name, risk, timeframe, tags, with_template) in [
        ("Alpha trend", "low", "1d", json!(["trend", "ema"]), true),
        ("Beta trend", "high", "1h", json!(["trend"]), true),
        ("Gamma revert", "low", "1d", json!(["rsi"]), false),
    ] {
        let mut body = json!({"name": name, "risk_level": risk, "timeframe": timeframe, "tags": tags});
        if with_template {
            body["template"] = template["id"].clone();
        }
        expect_status(app.post(STRATEGIES, token, &body).await, StatusCode::CREATED).await;
    }
    let search = |body: Value| {
        let app = &app;
        async move { expect_status(app.post("/api/strategies/api/search/", token, &body).await, StatusCode::OK).await }
    };
    let found = |page: &Value| -> Vec<String> {
        page["strategies"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
    };
    let all = search(json!({})).await;
    assert_eq!(all["count"], 3);
    assert_eq!(found(&search(json!({"category": "trend"})).await), ["Beta trend", "Alpha trend"]);
    assert_eq!(found(&search(json!({"risk_level": "low", "timeframe": "1d"})).await), ["Gamma revert", "Alpha trend"]);
    assert_eq!(found(&search(json!({"tags": ["trend", "ema"]})).await), ["Alpha trend"]);
    assert_eq!(found(&search(json!({"tags": "trend"})).await), ["Beta trend", "Alpha trend"]);
    assert_eq!(found(&search(json!({"query": "REVERT"})).await), ["Gamma revert"]);
    let other = app.register("othersearcher").await;
    let theirs =
        expect_status(app.post("/api/strategies/api/search/", Some(&other.access), &json!({})).await, StatusCode::OK)
            .await;
    assert_eq!(theirs["count"], 0);
}

#[tokio::test]
async fn comments_are_rated_threaded_and_kept_to_ones_own_strategies() {
    let app = spawn_app().await;
    let user = app.register("commenter").await;
    let other = app.register("othercommenter").await;
    let token = Some(user.access.as_str());
    let strategy =
        expect_status(app.post(STRATEGIES, token, &json!({"name": "Noted"})).await, StatusCode::CREATED).await;
    let second =
        expect_status(app.post(STRATEGIES, token, &json!({"name": "Other one"})).await, StatusCode::CREATED).await;
    let comments = "/api/strategies/comments/";
    let root = expect_status(
        app.post(comments, token, &json!({"strategy": strategy["id"], "content": "Works in trends", "rating": 4}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!((root["rating"].as_i64(), root["username"].as_str()), (Some(4), Some("commenter")));
    let reply = expect_status(
        app.post(
            comments,
            token,
            &json!({"strategy": strategy["id"], "content": "Not in ranges", "parent": root["id"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(reply["parent"], root["id"]);
    for (body, field) in [
        (json!({"strategy": strategy["id"], "content": "x", "rating": 6}), "rating"),
        (json!({"strategy": strategy["id"], "content": " "}), "content"),
        (json!({"content": "x"}), "strategy"),
        (json!({"strategy": second["id"], "content": "x", "parent": root["id"]}), "parent"),
    ] {
        let error = expect_status(app.post(comments, token, &body).await, StatusCode::BAD_REQUEST).await;
        assert!(error[field].is_array(), "{body} → {error}");
    }
    // Another user can neither comment on this strategy nor see the comments.
    let error = expect_status(
        app.post(comments, Some(&other.access), &json!({"strategy": strategy["id"], "content": "hi"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["strategy"].is_array());
    let path = format!("{comments}{}/", root["id"]);
    expect_status(app.get(&path, Some(&other.access)).await, StatusCode::NOT_FOUND).await;
    let patched =
        expect_status(app.send(Method::PATCH, &path, token, &json!({"rating": null})).await, StatusCode::OK).await;
    assert_eq!(patched["rating"], Value::Null);
    let list = expect_status(app.get(comments, token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 2);
    // Deleting the strategy takes its comments with it.
    let strategy_path = format!("{STRATEGIES}{}/", strategy["id"]);
    assert_eq!(app.send(Method::DELETE, &strategy_path, token, &json!({})).await.status(), StatusCode::NO_CONTENT);
    let list = expect_status(app.get(comments, token).await, StatusCode::OK).await;
    assert_eq!(list["count"], 0);
}
