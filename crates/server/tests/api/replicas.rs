//! Replicas sharing Redis never mistake each other's entries for their own.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_status, redis_url, spawn_app_with_sim_and, start_sim};

/// The review's finding: fair-use entries were named `u{pid}-{seq}`, and
/// every container of the compose file is PID 1, so two replicas wrote the
/// same entries and one user got each replica's allowance.
#[tokio::test]
async fn two_replicas_share_one_users_token_allowance() {
    if redis_url().is_none() {
        eprintln!("skipped: replicas share state only through Redis (set TEST_REDIS_URL)");
        return;
    }
    let sim = start_sim().await;
    let prefix = format!("replicas-{}", uuid::Uuid::new_v4().simple());
    let settings = [("REDIS_KEY_PREFIX", prefix.as_str()), ("USER_TPM_DEFAULT", "500")];
    let first = spawn_app_with_sim_and(&sim, &settings).await;
    let second = spawn_app_with_sim_and(&sim, &settings).await;
    // Each replica has its own database here, so the first user of each is
    // user 1: one user, as far as the shared fair-use state can tell.
    let on_first = first.register("shared").await;
    let on_second = second.register("shared").await;
    assert_eq!(on_first.id, on_second.id);

    // About 215 input tokens each: two fit the user's 500 a minute, three do not.
    let body = json!({"message": "x".repeat(600)});
    expect_status(first.post("/api/auth/chat/", Some(&on_first.access), &body).await, StatusCode::OK).await;
    // The second replica's first entry must not overwrite the first's.
    expect_status(second.post("/api/auth/chat/", Some(&on_second.access), &body).await, StatusCode::OK).await;
    let refused = first.post("/api/auth/chat/", Some(&on_first.access), &body).await;
    let answer = expect_status(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(answer["code"], "user_rate_limited", "{answer}");
    assert_eq!(sim.sim.requests().len(), 2);
}

/// Behind a load balancer every replica's dashboard shows the same
/// numbers: the hour and day counts live in Redis, not in a replica.
#[tokio::test]
async fn every_replica_shows_the_calls_of_all() {
    if redis_url().is_none() {
        eprintln!("skipped: replicas share state only through Redis (set TEST_REDIS_URL)");
        return;
    }
    let sim = start_sim().await;
    let prefix = format!("replicas-{}", uuid::Uuid::new_v4().simple());
    let settings = [("REDIS_KEY_PREFIX", prefix.as_str())];
    let first = spawn_app_with_sim_and(&sim, &settings).await;
    let second = spawn_app_with_sim_and(&sim, &settings).await;
    let caller = first.register("caller").await;
    let admin = second.register_admin("watcher").await;
    let body = json!({"message": "hello"});
    expect_status(first.post("/api/auth/chat/", Some(&caller.access), &body).await, StatusCode::OK).await;
    expect_status(first.post("/api/auth/chat/", Some(&caller.access), &body).await, StatusCode::OK).await;

    // The first replica flushes its batch within a second.
    let mut seen = serde_json::Value::Null;
    for _ in 0..50 {
        let keys = expect_status(second.get("/api/admin/keys/", Some(&admin.access)).await, StatusCode::OK).await;
        seen = keys[0]["hour"]["successes"].clone();
        if seen == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 2, "the second replica sees the first's calls");
    let usage = expect_status(second.get("/api/admin/usage/", Some(&admin.access)).await, StatusCode::OK).await;
    let rpm = &usage["buckets"][0]["limits"][0];
    assert_eq!((rpm["limit"].as_str(), rpm["used"].as_u64()), (Some("rpm"), Some(2)), "{usage}");
}
