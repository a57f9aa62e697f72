use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_status, spawn_app, GOOD_PASSWORD};

#[tokio::test]
async fn register_returns_the_user_tokens_and_a_default_profile() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/auth/register/",
            None,
            &json!({
                "username": "ada", "email": "ada@example.com",
                "password": GOOD_PASSWORD, "password2": GOOD_PASSWORD,
                "first_name": "Ada", "last_name": "Lovelace",
            }),
        )
        .await;
    let body = expect_status(response, StatusCode::CREATED).await;
    assert_eq!(body["message"], "User registered successfully");
    assert_eq!(body["user"]["username"], "ada");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["first_name"], "Ada");
    assert_eq!(body["user"]["last_name"], "Lovelace");
    assert!(body["user"]["id"].is_i64());
    assert!(body["user"].get("password").is_none() && body["user"].get("password_hash").is_none());
    let access = body["tokens"]["access"].as_str().unwrap();
    assert!(body["tokens"]["refresh"].is_string());

    let me = expect_status(app.get("/api/auth/user/me/", Some(access)).await, StatusCode::OK).await;
    assert_eq!(me["user"]["username"], "ada");
    assert!(me["user"]["date_joined"].as_str().unwrap().ends_with('Z'));
    let profile = &me["profile"];
    assert_eq!(profile["username"], "ada");
    assert_eq!(profile["default_risk_tolerance"], "moderate");
    assert_eq!(profile["default_timeframe"], "1d");
    assert_eq!(profile["preferred_symbols"], json!([]));
    assert_eq!(profile["risk_parameters"], json!({}));
}

#[tokio::test]
async fn registration_enforces_the_password_rules_in_djangos_words() {
    let app = spawn_app().await;
    let attempt = |password: &'static str, password2: &'static str| json!({"username": "grace", "email": "grace@example.com", "password": password, "password2": password2});
    let cases = [
        (attempt(GOOD_PASSWORD, "something-else-77"), json!(["Password fields didn't match."])),
        (attempt("xK9#q", "xK9#q"), json!(["This password is too short. It must contain at least 8 characters."])),
        (attempt("password123", "password123"), json!(["This password is too common."])),
        (attempt("73619284051", "73619284051"), json!(["This password is entirely numeric."])),
        (attempt("grace12!", "grace12!"), json!(["The password is too similar to the username."])),
    ];
    for (body, expected) in cases {
        let response = app.post("/api/auth/register/", None, &body).await;
        let error = expect_status(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["password"], expected, "for {body}");
        assert_eq!(error["code"], "invalid");
    }
}

#[tokio::test]
async fn registration_rejects_bad_fields_and_taken_usernames() {
    let app = spawn_app().await;
    let body = |username: &str, email: &str| json!({"username": username, "email": email, "password": GOOD_PASSWORD, "password2": GOOD_PASSWORD});
    let error = expect_status(
        app.post("/api/auth/register/", None, &body("no spaces allowed", "a@example.com")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["username"][0].as_str().unwrap().starts_with("Enter a valid username"));
    let error = expect_status(
        app.post("/api/auth/register/", None, &body("linus", "not-an-email")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["email"], json!(["Enter a valid email address."]));
    let error = expect_status(
        app.post("/api/auth/register/", None, &json!({"username": "linus", "password": "x", "password2": "x"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["email"], json!(["This field is required."]));

    expect_status(app.post("/api/auth/register/", None, &body("linus", "l@example.com")).await, StatusCode::CREATED)
        .await;
    let error = expect_status(
        app.post("/api/auth/register/", None, &body("linus", "other@example.com")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["username"], json!(["A user with that username already exists."]));
}

#[tokio::test]
async fn login_answers_tokens_or_a_uniform_401() {
    let app = spawn_app().await;
    let user = app.register("barbara").await;
    let body = expect_status(
        app.post("/api/auth/login/", None, &json!({"username": user.username, "password": user.password})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["message"], "Login successful");
    assert_eq!(body["user"]["id"], user.id);
    let access = body["tokens"]["access"].as_str().unwrap();
    expect_status(app.get("/api/auth/user/me/", Some(access)).await, StatusCode::OK).await;

    for (username, password) in [("barbara", "wrong-password-1"), ("nobody-here", "whatever-123")] {
        let error = expect_status(
            app.post("/api/auth/login/", None, &json!({"username": username, "password": password})).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(error["error"], "Invalid credentials");
    }
}

#[tokio::test]
async fn protected_routes_refuse_missing_bad_expired_and_wrong_kind_tokens() {
    let app = spawn_app().await;
    let user = app.register("edsger").await;

    let error = expect_status(app.get("/api/auth/user/me/", None).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error["detail"], "Authentication credentials were not provided.");
    let error = expect_status(app.get("/api/auth/user/me/", Some("garbage")).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error["code"], "token_not_valid");
    // A refresh token is not an access token.
    expect_status(app.get("/api/auth/user/me/", Some(&user.refresh)).await, StatusCode::UNAUTHORIZED).await;

    // Forged tokens name the user's real session, so only what is forged differs.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["algoagent-api"]);
    let real = jsonwebtoken::decode::<serde_json::Value>(
        &user.access,
        &jsonwebtoken::DecodingKey::from_secret(app.jwt_secret.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    let forge = |exp_offset: i64, algorithm: jsonwebtoken::Algorithm, secret: &str| {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"token_type": "access", "exp": now + exp_offset, "iat": now - 7200,
                            "jti": "forged", "user_id": user.id, "iss": "algoagent-api", "fam": real["fam"]});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(algorithm),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    // Correctly signed but an hour past its expiry.
    let expired = forge(-3600, jsonwebtoken::Algorithm::HS256, &app.jwt_secret);
    expect_status(app.get("/api/auth/user/me/", Some(&expired)).await, StatusCode::UNAUTHORIZED).await;
    // Right secret, another algorithm: the algorithm is pinned.
    let other_alg = forge(3600, jsonwebtoken::Algorithm::HS512, &app.jwt_secret);
    expect_status(app.get("/api/auth/user/me/", Some(&other_alg)).await, StatusCode::UNAUTHORIZED).await;
    // Valid shape, wrong secret.
    let foreign = forge(3600, jsonwebtoken::Algorithm::HS256, "some-other-secret-of-32-bytes-or-more");
    expect_status(app.get("/api/auth/user/me/", Some(&foreign)).await, StatusCode::UNAUTHORIZED).await;
    // And the control: a well-formed token with our secret works.
    let good = forge(3600, jsonwebtoken::Algorithm::HS256, &app.jwt_secret);
    expect_status(app.get("/api/auth/user/me/", Some(&good)).await, StatusCode::OK).await;
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_token_revokes_its_family() {
    let app = spawn_app().await;
    let user = app.register("hedy").await;

    let first = expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": user.refresh})).await,
        StatusCode::OK,
    )
    .await;
    let second_refresh = first["refresh"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, user.refresh);
    expect_status(app.get("/api/auth/user/me/", first["access"].as_str()).await, StatusCode::OK).await;

    // The rotated-out token is revoked...
    let error = expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": user.refresh})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(error["code"], "token_not_valid");
    // ...and replaying it revoked the whole family, the live successor too.
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": second_refresh})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // A separate login starts a separate family that still works.
    let login = expect_status(
        app.post("/api/auth/login/", None, &json!({"username": "hedy", "password": user.password})).await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": login["tokens"]["refresh"]})).await,
        StatusCode::OK,
    )
    .await;

    // An access token is not a refresh token; garbage is refused the same way.
    for bad in [user.access.as_str(), "not.a.token"] {
        expect_status(
            app.post("/api/auth/token/refresh/", None, &json!({"refresh": bad})).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
}

#[tokio::test]
async fn logout_revokes_the_given_refresh_token() {
    let app = spawn_app().await;
    let user = app.register("alan").await;
    let other = app.register("alonzo").await;

    // Someone else's refresh token cannot be revoked through my session.
    let error = expect_status(
        app.post("/api/auth/logout/", Some(&user.access), &json!({"refresh": other.refresh})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["error"], "Invalid refresh token");

    let body = expect_status(
        app.post("/api/auth/logout/", Some(&user.access), &json!({"refresh": user.refresh})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["message"], "Logout successful");
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": user.refresh})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Other's session was untouched.
    expect_status(app.get("/api/auth/user/me/", Some(&other.access)).await, StatusCode::OK).await;

    // The logged-out session's access token is dead too.
    expect_status(app.get("/api/auth/user/me/", Some(&user.access)).await, StatusCode::UNAUTHORIZED).await;

    // A logout with no body at all is fine; without a token it is a 401.
    let response = app.client.post(app.url("/api/auth/logout/")).bearer_auth(&other.access).send().await.unwrap();
    expect_status(response, StatusCode::OK).await;
    expect_status(app.post("/api/auth/logout/", None, &json!({})).await, StatusCode::UNAUTHORIZED).await;
}

/// The review's reproduction: after logout the access token still read
/// `/api/auth/user/me/`.
#[tokio::test]
async fn logout_ends_that_sessions_access_tokens_and_spares_other_devices() {
    let app = spawn_app().await;
    let user = app.register("grace").await;
    let login = |app: &crate::helpers::TestApp| {
        let body = json!({"username": "grace", "password": user.password});
        let request = app.client.post(app.url("/api/auth/login/")).json(&body);
        async move { expect_status(request.send().await.unwrap(), StatusCode::OK).await["tokens"].clone() }
    };
    let laptop = login(&app).await;
    let rotated = expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": user.refresh})).await,
        StatusCode::OK,
    )
    .await;

    // Logging out the first session (with its rotated refresh token)...
    expect_status(
        app.post("/api/auth/logout/", rotated["access"].as_str(), &json!({"refresh": rotated["refresh"]})).await,
        StatusCode::OK,
    )
    .await;
    // ...ends every access token of that session, old and new.
    for access in [user.access.as_str(), rotated["access"].as_str().unwrap()] {
        let error = expect_status(app.get("/api/auth/user/me/", Some(access)).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(error["code"], "token_not_valid");
    }
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": rotated["refresh"]})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The laptop's session lives on.
    expect_status(app.get("/api/auth/user/me/", laptop["access"].as_str()).await, StatusCode::OK).await;

    // A logout without a body ends the caller's own session; a login in the
    // same second works.
    let response = app.client.post(app.url("/api/auth/logout/")).bearer_auth(laptop["access"].as_str().unwrap());
    expect_status(response.send().await.unwrap(), StatusCode::OK).await;
    expect_status(app.get("/api/auth/user/me/", laptop["access"].as_str()).await, StatusCode::UNAUTHORIZED).await;
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": laptop["refresh"]})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let again = login(&app).await;
    expect_status(app.get("/api/auth/user/me/", again["access"].as_str()).await, StatusCode::OK).await;
}

#[tokio::test]
async fn changing_the_password_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let user = app.register("ada2").await;
    let other = app.register("bystander2").await;
    let second = expect_status(
        app.post("/api/auth/login/", None, &json!({"username": "ada2", "password": user.password})).await,
        StatusCode::OK,
    )
    .await;
    let new_password = "orbital-Mechanics-62";
    expect_status(
        app.post(
            "/api/auth/change-password/",
            Some(&user.access),
            &json!({"current_password": user.password, "new_password": new_password}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for access in [user.access.as_str(), second["tokens"]["access"].as_str().unwrap()] {
        expect_status(app.get("/api/auth/user/me/", Some(access)).await, StatusCode::UNAUTHORIZED).await;
    }
    let fresh = expect_status(
        app.post("/api/auth/login/", None, &json!({"username": "ada2", "password": new_password})).await,
        StatusCode::OK,
    )
    .await;
    expect_status(app.get("/api/auth/user/me/", fresh["tokens"]["access"].as_str()).await, StatusCode::OK).await;
    expect_status(app.get("/api/auth/user/me/", Some(&other.access)).await, StatusCode::OK).await;
}

#[tokio::test]
async fn change_password_checks_the_current_one_and_revokes_sessions() {
    let app = spawn_app().await;
    let user = app.register("katherine").await;
    let path = "/api/auth/change-password/";
    let token = Some(user.access.as_str());

    let error = expect_status(
        app.post(path, token, &json!({"current_password": user.password})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["error"].as_str().unwrap().contains("required"));
    let error = expect_status(
        app.post(path, token, &json!({"current_password": "not-it-at-all", "new_password": "orbital-Mechanics-62"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["error"], "Current password is incorrect");
    let error = expect_status(
        app.post(path, token, &json!({"current_password": user.password, "new_password": "x1"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["error"].as_str().unwrap().contains("too short"), "{error}");

    let body = expect_status(
        app.post(path, token, &json!({"current_password": user.password, "new_password": "orbital-Mechanics-62"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["message"], "Password changed successfully");

    expect_status(
        app.post("/api/auth/login/", None, &json!({"username": "katherine", "password": user.password})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect_status(
        app.post("/api/auth/login/", None, &json!({"username": "katherine", "password": "orbital-Mechanics-62"})).await,
        StatusCode::OK,
    )
    .await;
    // Every refresh token issued before the change is dead.
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": user.refresh})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn auth_health_names_the_caller_when_there_is_one() {
    let app = spawn_app().await;
    let anonymous = expect_status(app.get("/api/auth/health/", None).await, StatusCode::OK).await;
    assert_eq!(anonymous["status"], "healthy");
    assert_eq!(anonymous["service"], "auth_api");
    assert!(anonymous["user"].is_null());
    assert!(anonymous["timestamp"].is_string());
    let user = app.register("tim").await;
    let known = expect_status(app.get("/api/auth/health/", Some(&user.access)).await, StatusCode::OK).await;
    assert_eq!(known["user"], "tim");
}

#[tokio::test]
async fn the_api_index_lists_only_routes_that_exist() {
    let app = spawn_app().await;
    let index = expect_status(app.get("/api/", None).await, StatusCode::OK).await;
    assert_eq!(index["message"], "AlgoAgent API");
    assert!(index["version"].is_string() && index["timestamp"].is_string());
    let mut paths = Vec::new();
    for group in index["endpoints"].as_object().unwrap().values() {
        for path in group.as_object().unwrap().values() {
            paths.push(path.as_str().unwrap().to_string());
        }
    }
    assert!(paths.len() >= 10, "{paths:?}");
    for path in paths {
        let status = app.get(&path, None).await.status();
        assert_ne!(status, StatusCode::NOT_FOUND, "{path} is listed but does not exist");
    }
}

/// The review's finding: with only the old `.env`'s `SECRET_KEY`, tokens
/// were signed with it as it was, so a token the old app signed (or anyone
/// holding the old key forged) verified here.
#[tokio::test]
async fn a_token_signed_with_the_legacy_secret_key_itself_is_refused() {
    let legacy = format!("old-django-secret-key-{}", "k".repeat(40));
    let app = crate::helpers::spawn_app_with(&[("JWT_SECRET", ""), ("SECRET_KEY", &legacy)]).await;
    let user = app.register("migrated").await;
    expect_status(app.get("/api/auth/user/me/", Some(&user.access)).await, StatusCode::OK).await;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.insecure_disable_signature_validation();
    validation.set_issuer(&["algoagent-api"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &user.access,
        &jsonwebtoken::DecodingKey::from_secret(b"unused"),
        &validation,
    )
    .unwrap()
    .claims;
    // The same claims, a live session's: only the key differs.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(legacy.as_bytes()),
    )
    .unwrap();
    expect_status(app.get("/api/auth/user/me/", Some(&forged)).await, StatusCode::UNAUTHORIZED).await;
}
