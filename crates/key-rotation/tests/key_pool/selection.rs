use key_rotation::limiter::Pick;

use crate::{admit, admitted, backends, candidate, limits, refused, request};

#[tokio::test]
async fn first_fit_walks_in_order_past_full_buckets() {
    for (backend, limiter) in backends().await {
        let a = candidate("a", "pa", limits(1, 100_000));
        let b = candidate("b", "pb", limits(1, 100_000));
        let template = request(vec![a, b], 1);
        assert_eq!(admitted(admit(&*limiter, &template).await, backend).key_id, "a");
        assert_eq!(admitted(admit(&*limiter, &template).await, backend).key_id, "b");
        let wait = refused(admit(&*limiter, &template).await, backend);
        assert!(wait.is_some(), "{backend}");
    }
}

#[tokio::test]
async fn a_cooled_bucket_spills_to_the_next_candidate() {
    for (backend, limiter) in backends().await {
        let template =
            request(vec![candidate("a", "pa", limits(10, 100_000)), candidate("b", "pb", limits(10, 100_000))], 1);
        limiter.cool_down("gemini-test", "pa", 10_000, "429").await.unwrap();
        assert_eq!(admitted(admit(&*limiter, &template).await, backend).key_id, "b");
    }
}

#[tokio::test]
async fn keys_of_one_project_share_its_quota() {
    for (backend, limiter) in backends().await {
        let template = request(
            vec![candidate("a1", "shared", limits(2, 100_000)), candidate("a2", "shared", limits(2, 100_000))],
            1,
        );
        admitted(admit(&*limiter, &template).await, backend);
        admitted(admit(&*limiter, &template).await, backend);
        // Two keys, one project, one bucket of 2: full.
        refused(admit(&*limiter, &template).await, backend);
    }
}

#[tokio::test]
async fn least_loaded_picks_the_emptiest_bucket() {
    for (backend, limiter) in backends().await {
        let a = candidate("a", "pa", limits(10, 100_000));
        let b = candidate("b", "pb", limits(10, 100_000));
        // Load a with two requests.
        for _ in 0..2 {
            admitted(admit(&*limiter, &request(vec![a.clone()], 1)).await, backend);
        }
        let mut template = request(vec![a, b], 1);
        template.pick = Pick::LeastLoaded;
        assert_eq!(admitted(admit(&*limiter, &template).await, backend).key_id, "b");
    }
}

#[tokio::test]
async fn round_robin_rotates_the_starting_key() {
    for (backend, limiter) in backends().await {
        let mut template = request(
            vec![
                candidate("a", "pa", limits(100, 100_000)),
                candidate("b", "pb", limits(100, 100_000)),
                candidate("c", "pc", limits(100, 100_000)),
            ],
            1,
        );
        template.rotate = true;
        let mut chosen = Vec::new();
        for _ in 0..6 {
            chosen.push(admitted(admit(&*limiter, &template).await, backend).key_id);
        }
        for key in ["a", "b", "c"] {
            assert_eq!(chosen.iter().filter(|k| *k == key).count(), 2, "{backend}: {chosen:?}");
        }
        assert_ne!(chosen[0], chosen[1], "{backend}: {chosen:?}");
    }
}
