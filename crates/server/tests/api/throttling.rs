use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_status, spawn_app, spawn_app_with, GOOD_PASSWORD};

async fn login_from(app: &crate::helpers::TestApp, ip: &str, username: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/login/"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers().get("retry-after").expect("a 429 carries Retry-After").to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn five_failed_logins_lock_the_username_for_a_minute() {
    let app = spawn_app().await;
    app.register("victim").await;
    for attempt in 0..5 {
        // Each from a different address: the lock is on the username.
        let response = login_from(&app, &format!("203.0.113.{attempt}"), "victim", "wrong-guess-000").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = login_from(&app, "203.0.113.50", "victim", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&response);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body = expect_status(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["code"], "throttled");

    // Another account is unaffected.
    app.register("bystander").await;
    let response = login_from(&app, "203.0.113.60", "bystander", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn twenty_failed_logins_lock_the_client_address() {
    let app = spawn_app().await;
    app.register("target").await;
    for attempt in 0..20 {
        let response = login_from(&app, "192.0.2.77", &format!("guess{attempt}"), "wrong-guess-000").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let response = login_from(&app, "192.0.2.77", "target", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&response) <= 60);
    // The same account from another address still works.
    let response = login_from(&app, "192.0.2.78", "target", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn ten_registrations_per_address_per_hour() {
    let app = spawn_app().await;
    let register = |n: usize, ip: &'static str| {
        let request = app
            .client
            .post(app.url("/api/auth/register/"))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": format!("bulk{n}"), "email": format!("bulk{n}@example.com"),
                          "password": GOOD_PASSWORD, "password2": GOOD_PASSWORD}));
        async move { request.send().await.unwrap() }
    };
    for n in 0..10 {
        assert_eq!(register(n, "198.51.100.1").await.status(), StatusCode::CREATED);
    }
    let response = register(10, "198.51.100.1").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&response);
    assert!(wait > 3000 && wait <= 3600, "Retry-After {wait}");
    assert_eq!(register(11, "198.51.100.2").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn forwarded_addresses_from_untrusted_peers_are_ignored() {
    // No trusted proxies: every request is from 127.0.0.1 whatever it claims.
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "")]).await;
    for attempt in 0..20 {
        let response = login_from(&app, &format!("192.0.2.{attempt}"), &format!("u{attempt}"), "wrong-guess-000").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = login_from(&app, "192.0.2.200", "someone", "wrong-guess-000").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}
