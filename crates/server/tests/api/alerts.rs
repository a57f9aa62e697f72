//! The alert webhook, against a receiver on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with_sim_and, start_sim};

pub(crate) type Received = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// Waits (at most 20 s: the machine may be busy) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A webhook receiver on 127.0.0.1 answering `status`.
pub(crate) async fn receiver(status: AxumStatus) -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let signature = headers.get("x-algoagent-signature").and_then(|v| v.to_str().ok()).map(str::to_string);
                sink.lock().unwrap().push((signature, body));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn a_dead_key_is_posted_once_signed_and_counted() {
    let (url, received) = receiver(AxumStatus::OK).await;
    let sim = start_sim().await;
    let settings = [
        ("ALERT_WEBHOOK_URL", url.as_str()),
        ("ALERT_WEBHOOK_SECRET", "webhook-signing-secret"),
        ("ALERT_CHECK_SECS", "1"),
    ];
    let app = spawn_app_with_sim_and(&sim, &settings).await;
    let user = app.register("alarmed").await;
    // Google calls the pool's only key invalid: it is disabled, and the
    // model has no usable key left.
    sim.sim.script([gemini_sim::Scripted::InvalidKey]);
    let answer = app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "hello"})).await;
    assert_ne!(answer.status(), StatusCode::OK);

    eventually(|| received.lock().unwrap().len() >= 2).await;
    // Two more checks: a condition that still holds is not posted again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let posts = received.lock().unwrap().clone();
    let mut alerts: Vec<String> = posts
        .iter()
        .map(|(signature, body)| {
            let expected = admin_dashboard::alerts::signature("webhook-signing-secret", body);
            assert_eq!(signature.as_deref(), Some(expected.as_str()), "signed over the exact body");
            let body: Value = serde_json::from_str(body).unwrap();
            assert!(body["text"].as_str().unwrap().starts_with('['), "{body}");
            body["alert"].as_str().unwrap().to_string()
        })
        .collect();
    alerts.sort();
    assert_eq!(alerts, ["key_disabled:default", "no_usable_key:gemini-2.5-flash"], "each once, not every check");

    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.lines().any(|l| l == r#"algoagent_alert_webhook_deliveries_total{result="sent"} 2"#), "{metrics}");
}

#[tokio::test]
async fn a_refusing_receiver_is_retried_then_counted_as_failed() {
    let (url, received) = receiver(AxumStatus::INTERNAL_SERVER_ERROR).await;
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("ALERT_WEBHOOK_URL", url.as_str()), ("ALERT_CHECK_SECS", "1")]).await;
    let user = app.register("unheard").await;
    sim.sim.script([gemini_sim::Scripted::LeakedKey]);
    app.post("/api/auth/chat/", Some(&user.access), &json!({"message": "hello"})).await;

    let failed = r#"algoagent_alert_webhook_deliveries_total{result="failed"} 2"#;
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = app.get("/metrics", None).await.text().await.unwrap();
        if metrics.lines().any(|l| l == failed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.lines().any(|l| l == failed),
        "two conditions (no usable key, the leak), each failed after its retries:\n{metrics}"
    );
    let posts = received.lock().unwrap().clone();
    let leaked = posts.iter().filter(|(_, body)| body.contains("key_leaked:default")).count();
    assert_eq!(leaked, 3, "one post and two retries");
    assert!(posts.iter().all(|(signature, _)| signature.is_none()), "unsigned without a secret");
}
