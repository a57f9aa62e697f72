//! The key pool's configuration: `keys.json` (limits, models, projects,
//! selection) joined with secrets from a [`SecretSource`].
//!
//! Loading is strict: an unknown field, a zero limit, a burst above the
//! rate, a duplicate id, an unknown strategy, or keys of one project that
//! disagree on a model's limits are errors naming the key and the field.
//! Fields whose name starts with `_` are documentation and ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::secrets::{ApiKeySecret, SecretSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// Quick, cheap calls (chat, formatting): flash models.
    Light,
    /// Long generations (strategy code): pro models.
    Heavy,
}

impl Workload {
    pub fn parse(text: &str) -> Option<Workload> {
        match text {
            "light" => Some(Workload::Light),
            "heavy" => Some(Workload::Heavy),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Light => "light",
            Workload::Heavy => "heavy",
        }
    }

    /// The workload a model serves when the config does not say.
    pub fn for_model(model: &str) -> Workload {
        if model.contains("pro") {
            Workload::Heavy
        } else {
            Workload::Light
        }
    }

    pub fn other(self) -> Workload {
        match self {
            Workload::Light => Workload::Heavy,
            Workload::Heavy => Workload::Light,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Priority,
    RoundRobin,
    LeastLoaded,
}

impl Strategy {
    pub fn parse(text: &str) -> Option<Strategy> {
        match text {
            "priority" => Some(Strategy::Priority),
            "round_robin" => Some(Strategy::RoundRobin),
            "least_loaded" => Some(Strategy::LeastLoaded),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
        }
    }
}

/// The limits of one (project, model) bucket, shared by every key in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketLimits {
    pub rpm: u32,
    pub tpm: u64,
    pub rpd: Option<u32>,
    /// GCRA burst; `rpm` when not configured.
    pub burst: u32,
}

/// One key of the pool, secret included. `Debug` shows only its id and the
/// last four characters of the secret.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub project: String,
    pub limits: BucketLimits,
    pub max_in_flight: Option<u32>,
    pub priority: i64,
    pub workload: Workload,
    pub active: bool,
    pub tags: Vec<String>,
    pub secret: ApiKeySecret,
}

impl KeySpec {
    /// The quota bucket: Google counts per project and model.
    pub fn bucket(&self) -> BucketId {
        BucketId { project: self.project.clone(), model: self.model.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId {
    pub project: String,
    pub model: String,
}

impl std::fmt::Display for BucketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.project, self.model)
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub keys: Vec<KeySpec>,
    pub fallback_order: Vec<String>,
    pub strategy: Strategy,
    pub window: Duration,
    /// Added to the window: the time between our admission and Google's count.
    pub guard: Duration,
    pub health_check_interval: Duration,
    pub quota_warning_threshold: f64,
}

impl PoolConfig {
    /// An empty pool: AI calls answer "no API keys configured".
    pub fn empty() -> Self {
        Self {
            keys: Vec::new(),
            fallback_order: Vec::new(),
            strategy: Strategy::Priority,
            window: DEFAULT_WINDOW,
            guard: DEFAULT_GUARD,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            quota_warning_threshold: DEFAULT_QUOTA_WARNING,
        }
    }

    /// The sliding window plus its guard: the span admissions are counted over.
    pub fn effective_window(&self) -> Duration {
        self.window + self.guard
    }
}

pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_GUARD: Duration = Duration::from_millis(250);
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_QUOTA_WARNING: f64 = 0.8;

/// Limits given to keys found in the environment when there is no keys.json:
/// Gemini 2.5 Flash's free tier, the most conservative common case.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";
pub const DEFAULT_RPM: u32 = 10;
pub const DEFAULT_TPM: u64 = 250_000;
pub const DEFAULT_RPD: u32 = 250;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolConfigError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("key {key} field {field}: {reason}")]
    Key { key: String, field: String, reason: String },
    #[error("field {field}: {reason}")]
    Pool { field: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key_id: String,
    model_name: String,
    provider: String,
    rpm: i64,
    tpm: i64,
    rpd: Option<i64>,
    burst_capacity: Option<i64>,
    max_in_flight: Option<i64>,
    priority: Option<i64>,
    workload_type: Option<String>,
    project: Option<String>,
    active: Option<bool>,
    /// A list of strings, or (the old app's shape) an object whose
    /// `workload` entry names the workload.
    tags: Option<Value>,
    /// The old app's bookkeeping; accepted and unused.
    created_at: Option<Value>,
    updated_at: Option<Value>,
}

/// Fields the old app's keys.json files carry that we accept without using,
/// and what an operator is told about each (once per load).
const OLD_FIELDS: [(&str, &str); 3] = [
    ("created_at", "the old app's bookkeeping; ignored"),
    ("updated_at", "the old app's bookkeeping; ignored"),
    ("tags", "an object (the old app's shape): its entries become \"name=value\" tags, and its workload entry is the workload when workload_type is absent"),
];

/// Models Google has retired: such a key loads (nothing is rewritten
/// silently), and the operator is told which.
fn is_retired(model: &str) -> bool {
    ["gemini-1.0-", "gemini-1.5-", "gemini-pro"].iter().any(|prefix| model.starts_with(prefix))
}

const POOL_FIELDS: [&str; 7] = [
    "keys",
    "fallback_order",
    "rotation_strategy",
    "window_seconds",
    "guard_ms",
    "health_check_interval",
    "quota_warning_threshold",
];

fn strip_doc_fields(object: &mut Map<String, Value>) {
    object.retain(|name, _| !name.starts_with('_'));
}

fn pool_error(field: &str, reason: impl Into<String>) -> PoolConfigError {
    PoolConfigError::Pool { field: field.to_string(), reason: reason.into() }
}

fn key_error(key: &str, field: &str, reason: impl Into<String>) -> PoolConfigError {
    PoolConfigError::Key { key: key.to_string(), field: field.to_string(), reason: reason.into() }
}

/// Reads `path`, or, when it does not exist, builds the pool from the keys the
/// secret source discovers, with the documented default limits.
pub fn load_pool(path: &Path, secrets: &dyn SecretSource) -> Result<PoolConfig, PoolConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_pool(&text, secrets).map_err(|err| match err {
            PoolConfigError::File { reason, .. } => PoolConfigError::File { path: path.display().to_string(), reason },
            other => other,
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(pool_from_discovered(secrets)),
        Err(err) => Err(PoolConfigError::File { path: path.display().to_string(), reason: err.to_string() }),
    }
}

fn pool_from_discovered(secrets: &dyn SecretSource) -> PoolConfig {
    let mut pool = PoolConfig::empty();
    for (key_id, secret) in secrets.discover() {
        pool.keys.push(KeySpec {
            project: key_id.clone(),
            key_id,
            model: DEFAULT_MODEL.to_string(),
            provider: "gemini".to_string(),
            limits: BucketLimits { rpm: DEFAULT_RPM, tpm: DEFAULT_TPM, rpd: Some(DEFAULT_RPD), burst: DEFAULT_RPM },
            max_in_flight: None,
            priority: 0,
            workload: Workload::Light,
            active: true,
            tags: Vec::new(),
            secret,
        });
    }
    pool
}

/// The key ids a keys.json names, to ask a secret store for (the file is
/// validated in full by [`parse_pool`]).
pub fn key_ids(text: &str) -> Result<Vec<String>, PoolConfigError> {
    let root: Value = serde_json::from_str(text)
        .map_err(|err| PoolConfigError::File { path: String::new(), reason: format!("not valid JSON: {err}") })?;
    Ok(root["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|key| key["key_id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

/// Parses the text of a keys.json.
pub fn parse_pool(text: &str, secrets: &dyn SecretSource) -> Result<PoolConfig, PoolConfigError> {
    let mut root: Value = serde_json::from_str(text)
        .map_err(|err| PoolConfigError::File { path: String::new(), reason: format!("not valid JSON: {err}") })?;
    let object = root.as_object_mut().ok_or_else(|| pool_error("(root)", "expected a JSON object"))?;
    strip_doc_fields(object);
    if let Some(unknown) = object.keys().find(|name| !POOL_FIELDS.contains(&name.as_str())) {
        return Err(pool_error(unknown, "unknown field"));
    }

    let strategy = match object.get("rotation_strategy") {
        None | Some(Value::Null) => Strategy::Priority,
        Some(Value::String(name)) => Strategy::parse(name).ok_or_else(|| {
            pool_error(
                "rotation_strategy",
                format!("unknown strategy {name:?} (expected priority, round_robin or least_loaded)"),
            )
        })?,
        Some(_) => return Err(pool_error("rotation_strategy", "expected a string")),
    };
    let window = positive_seconds(object.get("window_seconds"), "window_seconds", DEFAULT_WINDOW)?;
    let guard = match object.get("guard_ms") {
        None | Some(Value::Null) => DEFAULT_GUARD,
        Some(value) => value
            .as_u64()
            .filter(|ms| Duration::from_millis(*ms) < window)
            .map(Duration::from_millis)
            .ok_or_else(|| pool_error("guard_ms", "expected whole milliseconds, shorter than the window"))?,
    };
    let health_check_interval =
        positive_seconds(object.get("health_check_interval"), "health_check_interval", DEFAULT_HEALTH_CHECK_INTERVAL)?;
    let quota_warning_threshold = match object.get("quota_warning_threshold") {
        None | Some(Value::Null) => DEFAULT_QUOTA_WARNING,
        Some(value) => value
            .as_f64()
            .filter(|v| *v > 0.0 && *v < 1.0)
            .ok_or_else(|| pool_error("quota_warning_threshold", "expected a fraction between 0 and 1"))?,
    };
    let fallback_order: Vec<String> = match object.get("fallback_order") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|_| pool_error("fallback_order", "expected a list of key ids"))?,
    };

    let raw_keys = match object.get_mut("keys") {
        Some(Value::Array(keys)) => std::mem::take(keys),
        None => Vec::new(),
        Some(_) => return Err(pool_error("keys", "expected a list")),
    };
    let mut keys = Vec::with_capacity(raw_keys.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut old_fields = std::collections::BTreeSet::new();
    for (index, mut raw) in raw_keys.into_iter().enumerate() {
        let label = raw.get("key_id").and_then(Value::as_str).map_or_else(|| format!("#{index}"), str::to_string);
        if let Some(object) = raw.as_object_mut() {
            strip_doc_fields(object);
        }
        let raw: RawKey = serde_json::from_value(raw).map_err(|err| {
            let message = err.to_string();
            // serde names the offending field between backticks.
            let field = message.split('`').nth(1).unwrap_or("(entry)");
            key_error(&label, field, message.clone())
        })?;
        if raw.key_id.trim().is_empty() {
            return Err(key_error(&label, "key_id", "must not be empty"));
        }
        if seen.insert(raw.key_id.clone(), index).is_some() {
            return Err(key_error(&raw.key_id, "key_id", "duplicate id"));
        }
        if raw.created_at.is_some() {
            old_fields.insert("created_at");
        }
        if raw.updated_at.is_some() {
            old_fields.insert("updated_at");
        }
        if raw.tags.as_ref().is_some_and(Value::is_object) {
            old_fields.insert("tags");
        }
        if let Some(spec) = validate_key(raw, secrets)? {
            keys.push(spec);
        }
    }
    for (field, what) in OLD_FIELDS.iter().filter(|(field, _)| old_fields.contains(field)) {
        tracing::warn!(field, "keys.json field from the old app accepted: {what}");
    }
    if keys.is_empty() && !seen.is_empty() {
        // One line an operator will see, not just one warning per key.
        tracing::warn!(
            configured = seen.len(),
            "none of the keys in keys.json has a secret: the pool is EMPTY and every AI endpoint will answer 503 \
             \"no API keys configured\"; set GEMINI_KEY_<key_id> for each key (see the warnings above)"
        );
    }
    for id in &fallback_order {
        if !seen.contains_key(id) {
            return Err(pool_error("fallback_order", format!("names unknown key {id:?}")));
        }
    }
    check_projects_agree(&keys)?;

    Ok(PoolConfig { keys, fallback_order, strategy, window, guard, health_check_interval, quota_warning_threshold })
}

fn positive_seconds(value: Option<&Value>, field: &str, default: Duration) -> Result<Duration, PoolConfigError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_f64()
            .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| pool_error(field, "expected a positive number of seconds")),
    }
}

fn positive(key: &str, field: &'static str, value: i64) -> Result<u64, PoolConfigError> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| key_error(key, field, format!("must be greater than zero, got {value}")))
}

fn positive_u32(key: &str, field: &'static str, value: i64) -> Result<u32, PoolConfigError> {
    let value = positive(key, field, value)?;
    u32::try_from(value).map_err(|_| key_error(key, field, "is too large"))
}

/// Validates one entry; `None` when it has no secret (skipped with a warning).
fn validate_key(raw: RawKey, secrets: &dyn SecretSource) -> Result<Option<KeySpec>, PoolConfigError> {
    let id = raw.key_id.as_str();
    let rpm = positive_u32(id, "rpm", raw.rpm)?;
    let tpm = positive(id, "tpm", raw.tpm)?;
    let rpd = raw.rpd.map(|v| positive_u32(id, "rpd", v)).transpose()?;
    let burst = raw.burst_capacity.map(|v| positive_u32(id, "burst_capacity", v)).transpose()?;
    if let Some(burst) = burst {
        if burst > rpm {
            return Err(key_error(id, "burst_capacity", format!("{burst} is greater than rpm {rpm}")));
        }
    }
    let max_in_flight = raw.max_in_flight.map(|v| positive_u32(id, "max_in_flight", v)).transpose()?;
    if raw.model_name.trim().is_empty() {
        return Err(key_error(id, "model_name", "must not be empty"));
    }
    if raw.provider != "gemini" {
        return Err(key_error(id, "provider", format!("unsupported provider {:?} (expected gemini)", raw.provider)));
    }
    let (tags, tagged_workload) = tags(id, raw.tags.as_ref())?;
    let workload = match raw.workload_type.as_deref() {
        None => tagged_workload.unwrap_or_else(|| Workload::for_model(&raw.model_name)),
        Some(name) => Workload::parse(name)
            .ok_or_else(|| key_error(id, "workload_type", format!("expected light or heavy, got {name:?}")))?,
    };
    if is_retired(&raw.model_name) {
        tracing::warn!(
            key_id = id,
            model = %raw.model_name,
            "this key names a model Google has retired; it is loaded as written, but its calls will fail until \
             keys.json names a current model"
        );
    }
    let project = match raw.project {
        Some(project) if project.trim().is_empty() => return Err(key_error(id, "project", "must not be empty")),
        Some(project) => project,
        None => raw.key_id.clone(),
    };
    let Some(secret) = secrets.secret_for(id) else {
        tracing::warn!(key_id = id, looked_in = %secrets.looked_in(id), "no secret found for this key; it is skipped");
        return Ok(None);
    };
    Ok(Some(KeySpec {
        key_id: raw.key_id,
        model: raw.model_name,
        provider: raw.provider,
        project,
        limits: BucketLimits { rpm, tpm, rpd, burst: burst.unwrap_or(rpm) },
        max_in_flight,
        priority: raw.priority.unwrap_or(0),
        workload,
        active: raw.active.unwrap_or(true),
        tags,
        secret,
    }))
}

/// A key's tags, and the workload an object of tags names.
fn tags(id: &str, tags: Option<&Value>) -> Result<(Vec<String>, Option<Workload>), PoolConfigError> {
    match tags {
        None | Some(Value::Null) => Ok((Vec::new(), None)),
        Some(Value::Array(list)) => list
            .iter()
            .map(|tag| tag.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|list| (list, None))
            .ok_or_else(|| key_error(id, "tags", "expected a list of strings or an object")),
        Some(Value::Object(entries)) => {
            let workload = match entries.get("workload") {
                None => None,
                Some(value) => Some(value.as_str().and_then(Workload::parse).ok_or_else(|| {
                    key_error(id, "tags", format!("tags.workload: expected light or heavy, got {value}"))
                })?),
            };
            let list = entries
                .iter()
                .map(|(name, value)| match value {
                    Value::String(text) => format!("{name}={text}"),
                    other => format!("{name}={other}"),
                })
                .collect();
            Ok((list, workload))
        }
        Some(_) => Err(key_error(id, "tags", "expected a list of strings or an object")),
    }
}

/// Google counts per project and model, so every key of a project must
/// describe that model's quota the same way.
fn check_projects_agree(keys: &[KeySpec]) -> Result<(), PoolConfigError> {
    let mut first: BTreeMap<BucketId, &KeySpec> = BTreeMap::new();
    for key in keys {
        match first.get(&key.bucket()) {
            None => {
                first.insert(key.bucket(), key);
            }
            Some(other) if other.limits != key.limits => {
                let field = if other.limits.rpm != key.limits.rpm {
                    "rpm"
                } else if other.limits.tpm != key.limits.tpm {
                    "tpm"
                } else if other.limits.rpd != key.limits.rpd {
                    "rpd"
                } else {
                    "burst_capacity"
                };
                return Err(key_error(
                    &key.key_id,
                    field,
                    format!(
                        "disagrees with key {} of the same project {} for model {}",
                        other.key_id, key.project, key.model
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::EnvSecrets;

    fn all_secrets() -> EnvSecrets {
        let ids = ["a", "b", "c", "flash_01", "flash_02", "flash_03", "pro_01", "pro_02", "pro_03", "pro_04", "pro_05"];
        EnvSecrets::new(ids.iter().map(|id| (format!("GEMINI_KEY_{}", id.to_uppercase()), format!("secret-{id}-xyz1"))))
            .unwrap()
    }

    fn key(id: &str, extra: &str) -> String {
        format!(
            r#"{{"key_id": "{id}", "model_name": "gemini-2.5-flash", "provider": "gemini", "rpm": 10, "tpm": 1000{extra}}}"#
        )
    }

    fn pool(keys: &[String], extra: &str) -> String {
        format!(r#"{{"keys": [{}]{extra}}}"#, keys.join(","))
    }

    fn error(text: &str) -> String {
        parse_pool(text, &all_secrets()).expect_err("expected a config error").to_string()
    }

    #[test]
    fn the_shipped_example_mirrors_the_old_eight_key_pool() {
        let text = include_str!("../../../keys.example.json");
        let pool = parse_pool(text, &all_secrets()).unwrap();
        assert_eq!(pool.keys.len(), 8);
        let total_rpm: u32 = pool.keys.iter().map(|k| k.limits.rpm).sum();
        assert_eq!(total_rpm, 3 * 15 + 5 * 60);
        assert_eq!(pool.keys.iter().filter(|k| k.workload == Workload::Light).count(), 3);
        assert_eq!(pool.window, Duration::from_secs(60));
        assert_eq!(pool.strategy, Strategy::Priority);
    }

    #[test]
    fn each_bad_entry_is_reported_by_key_and_field() {
        let cases = [
            (pool(&[key("a", r#", "rpmm": 3"#)], ""), "key a field rpmm"),
            (pool(&[key("a", r#", "rpd": 0"#)], ""), "key a field rpd"),
            (pool(&[key("a", r#", "burst_capacity": 11"#)], ""), "key a field burst_capacity"),
            (pool(&[key("a", r#", "max_in_flight": -1"#)], ""), "key a field max_in_flight"),
            (pool(&[key("a", r#", "workload_type": "medium""#)], ""), "key a field workload_type"),
            (pool(&[key("a", ""), key("a", "")], ""), "key a field key_id"),
            (pool(&[key("a", "")], r#", "rotation_strategy": "random""#), "field rotation_strategy"),
            (pool(&[key("a", "")], r#", "window_seconds": 0"#), "field window_seconds"),
            (pool(&[key("a", "")], r#", "window_seconds": 6, "guard_ms": 6000"#), "field guard_ms"),
            (pool(&[key("a", "")], r#", "guard_ms": -1"#), "field guard_ms"),
            (pool(&[key("a", "")], r#", "fallback_order": ["zz"]"#), "field fallback_order"),
            (pool(&[key("a", "")], r#", "colour": "blue""#), "field colour"),
            (
                pool(&[key("a", r#", "project": "p""#), key("b", r#", "project": "p", "tpm": 999"#)], ""),
                "key b field tpm",
            ),
        ];
        for (text, expected) in cases {
            let message = error(&text);
            assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        }
        let negative = error(&pool(
            &[r#"{"key_id": "a", "model_name": "m", "provider": "gemini", "rpm": -5, "tpm": 10}"#.to_string()],
            "",
        ));
        assert!(negative.contains("key a field rpm") && negative.contains("-5"), "{negative}");
    }

    #[test]
    fn a_key_without_a_secret_is_skipped_and_an_empty_pool_is_allowed() {
        let text = pool(&[key("a", ""), key("nosecret", "")], "");
        let loaded = parse_pool(&text, &all_secrets()).unwrap();
        assert_eq!(loaded.keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(parse_pool(r#"{"keys": []}"#, &all_secrets()).unwrap().keys.is_empty());
    }

    #[test]
    fn keys_of_one_project_share_a_bucket() {
        let text = pool(&[key("a", r#", "project": "p""#), key("b", r#", "project": "p""#), key("c", "")], "");
        let loaded = parse_pool(&text, &all_secrets()).unwrap();
        assert_eq!(loaded.keys[0].bucket(), loaded.keys[1].bucket());
        assert_ne!(loaded.keys[0].bucket(), loaded.keys[2].bucket());
        assert_eq!(loaded.keys[2].project, "c");
    }

    #[test]
    fn without_keys_json_environment_keys_get_the_documented_defaults() {
        let secrets = EnvSecrets::new([("GEMINI_API_KEY".to_string(), "only-one-key-abcd".to_string())]).unwrap();
        let loaded = load_pool(Path::new("/nonexistent/keys.json"), &secrets).unwrap();
        assert_eq!(loaded.keys.len(), 1);
        let only = &loaded.keys[0];
        assert_eq!((only.key_id.as_str(), only.model.as_str()), ("default", DEFAULT_MODEL));
        assert_eq!((only.limits.rpm, only.limits.tpm, only.limits.rpd), (DEFAULT_RPM, DEFAULT_TPM, Some(DEFAULT_RPD)));
        assert_eq!(format!("{:?}", only.secret), "…abcd");
        let empty = load_pool(Path::new("/nonexistent/keys.json"), &EnvSecrets::default()).unwrap();
        assert!(empty.keys.is_empty());
    }

    #[test]
    fn a_secret_never_appears_in_debug_output() {
        let text = pool(&[key("a", "")], "");
        let loaded = parse_pool(&text, &all_secrets()).unwrap();
        let debug = format!("{loaded:?}");
        assert!(!debug.contains("secret-a-xyz1"), "{debug}");
        assert!(debug.contains("…xyz1"));
    }

    /// Issue 13: the old deployment's keys.json files load as they are.
    #[test]
    fn the_old_apps_keys_files_load_as_they_are() {
        let example = parse_pool(include_str!("../../../fixtures/legacy-config/keys_example.json"), &all_secrets())
            .expect("keys_example.json loads");
        assert_eq!(example.keys.len(), 3);
        let pro = example.keys.iter().find(|k| k.key_id == "pro_01").unwrap();
        assert_eq!(pro.workload, Workload::Heavy, "tags.workload names the workload");
        assert!(pro.tags.contains(&"region=us-east".to_string()), "{:?}", pro.tags);
        assert!(pro.tags.contains(&"tier=premium".to_string()), "{:?}", pro.tags);

        let report = parse_pool(include_str!("../../../fixtures/legacy-config/keys.report.json"), &all_secrets())
            .expect("keys.report.json loads, retired models and all");
        assert_eq!(report.keys.len(), 8);
        assert_eq!(report.keys[0].model, "gemini-1.5-flash", "nothing is rewritten silently");
        assert_eq!(report.keys[0].limits.burst, 5);
    }

    #[test]
    fn old_fields_are_accepted_and_a_field_nobody_wrote_is_still_an_error() {
        let tags_object =
            pool(&[key("a", r#", "tags": {"workload": "heavy", "tier": "x"}, "workload_type": "light""#)], "");
        let loaded = parse_pool(&tags_object, &all_secrets()).unwrap();
        assert_eq!(loaded.keys[0].workload, Workload::Light, "workload_type wins over tags.workload");
        let dated =
            pool(&[key("a", r#", "created_at": "2024-01-01T00:00:00", "updated_at": "2024-01-02T00:00:00""#)], "");
        assert!(parse_pool(&dated, &all_secrets()).is_ok());
        let message = error(&pool(&[key("a", r#", "created_by": "me""#)], ""));
        assert!(message.contains("key a field created_by"), "{message}");
        let message = error(&pool(&[key("a", r#", "tags": {"workload": "medium"}"#)], ""));
        assert!(message.contains("key a field tags"), "{message}");
        let message = error(&pool(&[key("a", r#", "tags": 7"#)], ""));
        assert!(message.contains("key a field tags"), "{message}");
    }

    #[test]
    fn the_old_apps_list_keys_are_named_key_01_or_key_1() {
        let secrets =
            EnvSecrets::new([("GEMINI_API_KEYS".to_string(), "first-aaaa, second-bbbb".to_string())]).unwrap();
        let text = pool(&[key("key_01", ""), key("key_2", "")], "");
        let loaded = parse_pool(&text, &secrets).unwrap();
        assert_eq!(loaded.keys.len(), 2);
        assert_eq!(loaded.keys[0].secret.masked(), "…aaaa");
        assert_eq!(loaded.keys[1].secret.masked(), "…bbbb");
    }
}
