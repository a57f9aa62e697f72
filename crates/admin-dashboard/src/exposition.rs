//! One scrape: a registry of its own, filled from the shared state and this
//! replica's counters, then encoded. No global registry: every test (and
//! every app in one process) sees only its own numbers.

use std::sync::atomic::{AtomicU64, Ordering};

use api_core::AppState;
use key_rotation::pool::{BucketView, PoolView};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Every state a key can be in; `algoagent_key_state` has a series for each.
const KEY_STATES: [&str; 5] = ["available", "cooling_down", "disabled", "leaked", "inactive"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    key_id: String,
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    result: &'static str,
}

type Ratio = Gauge<f64, AtomicU64>;

pub async fn render(state: &AppState) -> String {
    let mut registry = Registry::with_prefix("algoagent");
    registry.register(
        "build",
        "The running build",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
    );
    pool_wide(state, &mut registry).await;
    this_replica(state, &mut registry);
    let mut text = String::new();
    if let Err(err) = encode(&mut text, &registry) {
        tracing::error!(error = %err, "could not encode the metrics");
    }
    text
}

/// The gauges read from the shared state: the same on every replica.
async fn pool_wide(state: &AppState, registry: &mut Registry) {
    let config = state.pool.config();
    let threshold = Ratio::default();
    threshold.set(config.quota_warning_threshold);
    registry.register(
        "bucket_warning_threshold_ratio",
        "keys.json's quota_warning_threshold: a bucket at or past it is near its limit",
        threshold,
    );
    if let Some(degraded) = state.pool.limiter().degraded() {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::from(degraded));
        registry.register("limiter_degraded", "1 while this replica admits alone, Redis out of reach", gauge);
    }
    if state.secret_store.store().is_some() {
        let up = Gauge::<i64>::default();
        up.set(i64::from(state.secret_store.failing_since_ms().is_none()));
        registry.register(
            "secret_store_up",
            "1 when the key secrets' store answered this replica's last refresh (the last secrets stay in use while it is 0)",
            up,
        );
    }
    if let Some(redis) = &state.redis {
        let up = Gauge::<i64>::default();
        up.set(i64::from(redis.ping().await.is_ok()));
        registry.register("redis_up", "1 when Redis answered this scrape's PING", up);
    }
    backtests(state, registry).await;
    match state.pool.view().await {
        Ok(view) => {
            let (_, day_end_ms) = key_rotation::pacific::day_bounds_ms(now_ms());
            let day_end_s = i64::try_from(day_end_ms / 1000).unwrap_or(i64::MAX);
            registry.register_collector(Box::new(PoolSeries { view, day_end_s }));
        }
        // Unknown is left out, never exported as a made-up value.
        Err(err) => tracing::warn!(error = %err, "metrics: the pool's state could not be read"),
    }
}

/// The backtest queue, read from the database: the same on every replica.
async fn backtests(state: &AppState, registry: &mut Registry) {
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(backtests::worker::SEEN_WITHIN).unwrap_or(chrono::Duration::seconds(15));
    let queue = match state.store.backtest_queue(since).await {
        Ok(queue) => queue,
        // Unknown is left out, never exported as a made-up value.
        Err(err) => return tracing::warn!(error = %err, "metrics: the backtest queue could not be read"),
    };
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StatusLabels {
        status: &'static str,
    }
    let runs = Family::<StatusLabels, Gauge>::default();
    runs.get_or_create(&StatusLabels { status: "queued" }).set(queue.queued);
    runs.get_or_create(&StatusLabels { status: "running" }).set(queue.running);
    registry.register("backtest_runs", "Backtest runs waiting for a worker and running", runs);
    let waited = Gauge::<f64, AtomicU64>::default();
    let age = queue.oldest_queued_at.map_or(0.0, |at| (chrono::Utc::now() - at).as_seconds_f64().max(0.0));
    waited.set(age);
    registry.register_with_unit(
        "backtest_oldest_queued",
        "How long the oldest queued backtest has waited (0 when none waits)",
        Unit::Seconds,
        waited,
    );
    let slots = Gauge::<i64>::default();
    slots.set(queue.worker_slots);
    registry.register("backtest_worker_slots", "Backtest workers of the processes that reported in lately", slots);
}

/// The per-key and per-bucket series, encoded straight from the view: with
/// 1,000 keys that is some 13,000 series, and building a labelled family
/// for each (clones, a hash map) per scrape cost more than the encoding.
#[derive(Debug)]
struct PoolSeries {
    view: PoolView,
    /// Pacific midnight, when every bucket's day count starts again.
    day_end_s: i64,
}

impl Collector for PoolSeries {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let keys = &self.view.keys;
        let mut up =
            encoder.encode_descriptor("key_up", "1 when the key can take a call now", None, MetricType::Gauge)?;
        for key in keys {
            let labels = [("key_id", key.key_id.as_str()), ("project", &key.project), ("model", &key.model)];
            up.encode_family(&labels)?.encode_gauge(&i64::from(key.state == "available"))?;
        }
        let mut states = encoder.encode_descriptor(
            "key_state",
            "1 for the key's current state, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for key in keys {
            for state in KEY_STATES {
                let labels = [
                    ("key_id", key.key_id.as_str()),
                    ("project", &key.project),
                    ("model", &key.model),
                    ("state", state),
                ];
                states.encode_family(&labels)?.encode_gauge(&i64::from(key.state == state))?;
            }
        }

        // Each bucket's limits: (name, used, limit, remaining); rpd only when configured.
        let limits = |bucket: &BucketView| {
            let mut limits = vec![
                ("rpm", f64::from(bucket.requests_in_window), f64::from(bucket.rpm), i64::from(bucket.remaining_rpm)),
                (
                    "tpm",
                    bucket.tokens_in_window as f64,
                    bucket.tpm as f64,
                    i64::try_from(bucket.remaining_tpm).unwrap_or(i64::MAX),
                ),
            ];
            if let (Some(rpd), Some(left)) = (bucket.rpd, bucket.remaining_rpd) {
                limits.push(("rpd", f64::from(bucket.requests_today), f64::from(rpd), i64::from(left)));
            }
            limits
        };
        let buckets = &self.view.buckets;
        let mut utilization = encoder.encode_descriptor(
            "bucket_utilization_ratio",
            "Used fraction of a (project, model) bucket's limit: rpm and tpm in the window, rpd today",
            None,
            MetricType::Gauge,
        )?;
        for bucket in buckets {
            for (limit, used, of, _) in limits(bucket) {
                let labels = [("project", bucket.project.as_str()), ("model", &bucket.model), ("limit", limit)];
                let ratio = if of > 0.0 { used / of } else { 0.0 };
                utilization.encode_family(&labels)?.encode_gauge(&ratio)?;
            }
        }
        let mut remaining = encoder.encode_descriptor(
            "bucket_remaining",
            "Requests (rpm, rpd) or input tokens (tpm) the bucket has left",
            None,
            MetricType::Gauge,
        )?;
        for bucket in buckets {
            for (limit, _, _, left) in limits(bucket) {
                let labels = [("project", bucket.project.as_str()), ("model", &bucket.model), ("limit", limit)];
                remaining.encode_family(&labels)?.encode_gauge(&left)?;
            }
        }
        // The day's count resets at Pacific midnight. A sliding window has
        // no one reset time, so rpm and tpm have no series here.
        let mut reset = encoder.encode_descriptor(
            "bucket_reset_timestamp",
            "When the limit's count starts again (rpd: Pacific midnight)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for bucket in buckets.iter().filter(|b| b.rpd.is_some()) {
            let labels = [("project", bucket.project.as_str()), ("model", &bucket.model), ("limit", "rpd")];
            reset.encode_family(&labels)?.encode_gauge(&self.day_end_s)?;
        }
        Ok(())
    }
}

/// This replica's own counters and histograms.
fn this_replica(state: &AppState, registry: &mut Registry) {
    let config = state.pool.config();
    let upstream = Family::<UpstreamLabels, Counter>::default();
    for ((key_id, outcome), count) in state.pool.metrics().outcomes() {
        let model = config.keys.iter().find(|k| k.key_id == key_id).map(|k| k.model.clone());
        // A key reloaded away keeps no series: its model is no longer known.
        if let Some(model) = model {
            upstream.get_or_create(&UpstreamLabels { key_id, model, outcome }).inc_by(count);
        }
    }
    registry.register("upstream_requests", "Upstream calls by key and classified outcome (this replica)", upstream);

    let pool = state.pool.metrics();
    let admissions = Family::<AdmissionLabels, Counter>::default();
    for (result, count) in
        [("admitted", &pool.admitted), ("full", &pool.full), ("too_large", &pool.too_large), ("no_key", &pool.no_key)]
    {
        admissions.get_or_create(&AdmissionLabels { result }).inc_by(count.load(Ordering::Relaxed));
    }
    registry.register("admissions", "Admission attempts by result (this replica)", admissions);

    let refresh_failures = Counter::<u64>::default();
    refresh_failures.inc_by(state.secret_store.failures());
    registry.register(
        "secret_refresh_failures",
        "Refreshes of the key secrets that failed, the last secrets kept (this replica)",
        refresh_failures,
    );

    let sandbox = Gauge::<i64>::default();
    sandbox.set(i64::from(state.sandbox.readiness().is_ready()));
    registry.register("sandbox_ready", "1 when this replica could run a backtest in its sandbox", sandbox);

    let throttled = Counter::<u64>::default();
    throttled.inc_by(state.counters.too_many_requests());
    registry.register("http_too_many_requests", "Responses answered 429 to clients (this replica)", throttled);

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct DeliveryLabels {
        result: &'static str,
    }
    let deliveries = Family::<DeliveryLabels, Counter>::default();
    let (sent, failed) = state.counters.alert_deliveries();
    deliveries.get_or_create(&DeliveryLabels { result: "sent" }).inc_by(sent);
    deliveries.get_or_create(&DeliveryLabels { result: "failed" }).inc_by(failed);
    registry.register(
        "alert_webhook_deliveries",
        "Alerts posted to ALERT_WEBHOOK_URL, by result after retries (this replica)",
        deliveries,
    );

    let executor = state.gemini.metrics();
    registry.register_with_unit(
        "admission_wait",
        "From asking for a key to getting one, waits for room included (this replica)",
        Unit::Seconds,
        executor.admission_wait.clone(),
    );
    registry.register_with_unit(
        "upstream_latency",
        "One upstream attempt, to its answer or first chunk (this replica)",
        Unit::Seconds,
        executor.upstream_latency.clone(),
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
