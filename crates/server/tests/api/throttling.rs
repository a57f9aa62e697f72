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

/// The review's reproduction: 40 concurrent wrong logins for one username
/// all got 401. The throttle reserves before the password is checked.
#[tokio::test]
async fn concurrent_guesses_for_one_username_get_at_most_the_limit_checked() {
    let app = spawn_app().await;
    app.register("raced").await;
    let guesses = (0..40).map(|n| {
        let app = &app;
        async move { login_from(app, &format!("203.0.113.{n}"), "raced", "wrong-guess-000").await.status() }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((checked, throttled), (5, 35), "{statuses:?}");
    let response = login_from(&app, "203.0.113.200", "raced", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_successful_login_does_not_count_against_the_limit() {
    let app = spawn_app().await;
    app.register("careful").await;
    for n in 0..4 {
        let response = login_from(&app, &format!("203.0.113.{n}"), "careful", "wrong-guess-000").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    for n in 0..3 {
        let response = login_from(&app, &format!("203.0.113.{}", 10 + n), "careful", GOOD_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "success {n} was reserved, then refunded");
    }
    let response = login_from(&app, "203.0.113.20", "careful", "wrong-guess-000").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "the fifth failure is still checked");
    let response = login_from(&app, "203.0.113.21", "careful", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    app.register("target6").await;
    for n in 0..20 {
        // One subscriber rotating through its /64.
        let ip = format!("2001:db8:1:2::{:x}", n + 1);
        let response = login_from(&app, &ip, &format!("guess{n}"), "wrong-guess-000").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    let response = login_from(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff", "target6", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = login_from(&app, "2001:db8:1:3::1", "target6", GOOD_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "the neighbouring /64 is another client");
}

#[tokio::test]
async fn overlong_usernames_are_refused_before_any_throttle() {
    let app = spawn_app().await;
    let response = login_from(&app, "203.0.113.9", &"u".repeat(151), "whatever-000").await;
    let body = expect_status(response, StatusCode::BAD_REQUEST).await;
    assert!(body["username"][0].as_str().unwrap().contains("150"), "{body}");
}

#[tokio::test]
async fn concurrent_wrong_current_passwords_are_throttled_too() {
    let app = spawn_app().await;
    let user = app.register("changer").await;
    let attempts = (0..12).map(|_| {
        let (app, token) = (&app, user.access.clone());
        async move {
            app.post(
                "/api/auth/change-password/",
                Some(&token),
                &json!({"current_password": "wrong-guess-000", "new_password": "another-Long-pass-77"}),
            )
            .await
            .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count();
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((checked, throttled), (5, 7), "{statuses:?}");
}
