use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use key_rotation::config::BucketLimits;
use key_rotation::limiter::Decision;

use crate::{admit, admitted, backends, candidate, limits, refused, request, WINDOW_MS};

#[tokio::test]
async fn rpm_admits_the_limit_then_names_the_wait() {
    for (backend, limiter) in backends().await {
        let template = request(vec![candidate("k", "p", limits(3, 1_000_000))], 1);
        for _ in 0..3 {
            admitted(admit(&*limiter, &template).await, backend);
        }
        let wait = refused(admit(&*limiter, &template).await, backend).expect("a wait");
        assert!(wait > 0 && wait <= WINDOW_MS, "{backend}: wait {wait}");
        tokio::time::sleep(Duration::from_millis(wait + 20)).await;
        admitted(admit(&*limiter, &template).await, backend);
    }
}

#[tokio::test]
async fn tpm_counts_reserved_tokens_and_refuses_the_impossible() {
    for (backend, limiter) in backends().await {
        let key = candidate("k", "p", limits(100, 100));
        admitted(admit(&*limiter, &request(vec![key.clone()], 60)).await, backend);
        let wait = refused(admit(&*limiter, &request(vec![key.clone()], 50)).await, backend);
        assert!(wait.is_some_and(|w| w > 0 && w <= WINDOW_MS), "{backend}: {wait:?}");
        admitted(admit(&*limiter, &request(vec![key.clone()], 40)).await, backend);
        // Larger than the bucket can ever hold: no wait helps.
        assert_eq!(refused(admit(&*limiter, &request(vec![key], 101)).await, backend), None, "{backend}");
    }
}

#[tokio::test]
async fn reconcile_replaces_the_estimate_with_the_real_count() {
    for (backend, limiter) in backends().await {
        let key = candidate("k", "p", limits(100, 100));
        let ticket = admitted(admit(&*limiter, &request(vec![key.clone()], 90)).await, backend);
        refused(admit(&*limiter, &request(vec![key.clone()], 20)).await, backend);
        limiter.reconcile(&ticket, 10, WINDOW_MS).await.unwrap();
        admitted(admit(&*limiter, &request(vec![key.clone()], 80)).await, backend);
        let usage = limiter.usage("gemini-test", "p", WINDOW_MS).await.unwrap();
        assert_eq!((usage.requests_in_window, usage.tokens_in_window), (2, 90), "{backend}");
    }
}

#[tokio::test]
async fn a_refund_returns_the_unit_and_the_day_count() {
    for (backend, limiter) in backends().await {
        let mut bucket = limits(1, 1000);
        bucket.rpd = Some(5);
        let template = request(vec![candidate("k", "p", bucket)], 10);
        let ticket = admitted(admit(&*limiter, &template).await, backend);
        refused(admit(&*limiter, &template).await, backend);
        limiter.refund(&ticket).await.unwrap();
        admitted(admit(&*limiter, &template).await, backend);
        let usage = limiter.usage("gemini-test", "p", WINDOW_MS).await.unwrap();
        assert_eq!((usage.requests_in_window, usage.requests_today), (1, 1), "{backend}");
    }
}

#[tokio::test]
async fn rpd_refuses_until_the_pacific_day_ends() {
    for (backend, limiter) in backends().await {
        let mut bucket = limits(10, 1000);
        bucket.rpd = Some(2);
        let template = request(vec![candidate("k", "p", bucket)], 1);
        admitted(admit(&*limiter, &template).await, backend);
        admitted(admit(&*limiter, &template).await, backend);
        let wait = refused(admit(&*limiter, &template).await, backend).expect("a wait");
        let (_, day_end) =
            key_rotation::pacific::day_bounds_ms(u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap());
        let expected = day_end - u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        assert!(wait.abs_diff(expected) < 5_000, "{backend}: wait {wait}, expected about {expected}");
    }
}

#[tokio::test]
async fn gcra_paces_beyond_the_burst() {
    for (backend, limiter) in backends().await {
        let bucket = BucketLimits { rpm: 4, tpm: 1000, rpd: None, burst: 1 };
        let template = request(vec![candidate("k", "p", bucket)], 1);
        admitted(admit(&*limiter, &template).await, backend);
        // Burst 1: the next slot is one emission interval (window / rpm) away.
        let wait = refused(admit(&*limiter, &template).await, backend).expect("a wait");
        assert!(wait > 0 && wait <= WINDOW_MS / 4, "{backend}: wait {wait}");
        tokio::time::sleep(Duration::from_millis(wait + 20)).await;
        admitted(admit(&*limiter, &template).await, backend);
    }
}

#[tokio::test]
async fn in_flight_leases_cap_concurrency_until_released() {
    for (backend, limiter) in backends().await {
        let mut key = candidate("k", "p", limits(100, 100_000));
        key.max_in_flight = Some(1);
        let template = request(vec![key], 1);
        let ticket = admitted(admit(&*limiter, &template).await, backend);
        assert!(ticket.leased);
        refused(admit(&*limiter, &template).await, backend);
        limiter.release(&ticket).await.unwrap();
        admitted(admit(&*limiter, &template).await, backend);
    }
}

#[tokio::test]
async fn a_cooldown_refuses_its_bucket_and_never_shrinks() {
    for (backend, limiter) in backends().await {
        let template = request(vec![candidate("k", "p", limits(100, 100_000))], 1);
        limiter.cool_down("gemini-test", "p", 5_000, "per-minute quota").await.unwrap();
        limiter.cool_down("gemini-test", "p", 100, "shorter").await.unwrap();
        let wait = refused(admit(&*limiter, &template).await, backend).expect("a wait");
        assert!(wait > 4_000 && wait <= 5_000, "{backend}: wait {wait}");
        let usage = limiter.usage("gemini-test", "p", WINDOW_MS).await.unwrap();
        assert_eq!(usage.cooldown.unwrap().reason, "per-minute quota", "{backend}");
        limiter.clear_cooldown("gemini-test", "p").await.unwrap();
        admitted(admit(&*limiter, &template).await, backend);
    }
}

#[tokio::test]
async fn a_disabled_key_is_never_chosen_until_enabled() {
    for (backend, limiter) in backends().await {
        let template = request(vec![candidate("dead", "p", limits(100, 100_000))], 1);
        limiter
            .disable("gemini-test", "dead", key_rotation::limiter::Lasting::Ms(60_000), "API_KEY_INVALID")
            .await
            .unwrap();
        assert_eq!(refused(admit(&*limiter, &template).await, backend), None, "{backend}");
        let restriction = limiter.disabled("gemini-test", "dead").await.unwrap().unwrap();
        assert_eq!(restriction.reason, "API_KEY_INVALID");
        limiter.enable("gemini-test", "dead").await.unwrap();
        admitted(admit(&*limiter, &template).await, backend);
        assert!(limiter.disabled("gemini-test", "dead").await.unwrap().is_none());
    }
}

/// Many concurrent callers hammer one bucket for several windows; in every
/// sliding window the admissions stay within the limit, and the limit is
/// actually reached (the limiter is not merely refusing everything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_window_holds_under_concurrency() {
    for (backend, limiter) in backends().await {
        let rpm = 10u32;
        let template = Arc::new(request(vec![candidate("k", "p", limits(rpm, 1_000_000))], 1));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(3 * WINDOW_MS + 200);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let limiter = limiter.clone();
            let template = template.clone();
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                while tokio::time::Instant::now() < deadline {
                    match admit(&*limiter, &template).await {
                        Decision::Admitted(ticket) => times.push(ticket.admitted_at_ms),
                        Decision::NoRoom { retry_after_ms } => {
                            let wait = retry_after_ms.unwrap_or(50).min(50);
                            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
                        }
                    }
                }
                times
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.extend(task.await.unwrap());
        }
        times.sort_unstable();
        let mut per_window_max = 0;
        for (i, start) in times.iter().enumerate() {
            let inside = times[i..].iter().take_while(|t| **t < start + WINDOW_MS).count();
            per_window_max = per_window_max.max(inside);
        }
        assert!(per_window_max <= rpm as usize, "{backend}: {per_window_max} admissions in one window");
        // Three windows allow at least 3 × rpm admissions.
        assert!(times.len() >= 3 * rpm as usize, "{backend}: only {} admissions", times.len());
        let mut unique = HashMap::new();
        for t in &times {
            *unique.entry(t).or_insert(0) += 1;
        }
        assert!(!unique.is_empty());
    }
}
