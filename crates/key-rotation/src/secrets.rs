//! Where key secrets come from, and the type that holds one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// An API key. It prints as `…` and its last four characters, never whole.
#[derive(Clone)]
pub struct ApiKeySecret {
    secret: SecretString,
    last4: String,
}

impl ApiKeySecret {
    pub fn new(secret: impl Into<String>) -> Self {
        let secret: String = secret.into();
        let chars: Vec<char> = secret.chars().collect();
        let last4: String = chars[chars.len().saturating_sub(4)..].iter().collect();
        Self { secret: SecretString::from(secret), last4 }
    }

    /// The secret itself, for the one header that carries it upstream.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// `…abcd`: enough to tell keys apart on a dashboard.
    pub fn masked(&self) -> String {
        format!("…{}", self.last4)
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Why a secret store could not be read. Never holds a secret: the store,
/// its address and the cause, for an operator to act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store}: {cause}")]
pub struct StoreFailure {
    /// The store and where it is, e.g. `vault at http://127.0.0.1:8200`.
    pub store: String,
    pub cause: String,
    /// The store answered, and refused our credentials.
    pub denied: bool,
}

/// The secrets a store held at one moment, as a [`SecretSource`] for the
/// keys.json loader.
#[derive(Clone, Default)]
pub struct SecretSnapshot {
    found: BTreeMap<String, ApiKeySecret>,
    /// Where each key's secret was looked for, for the warning an operator
    /// reads when it was not there.
    places: BTreeMap<String, String>,
}

impl SecretSnapshot {
    pub fn new(found: BTreeMap<String, ApiKeySecret>, places: BTreeMap<String, String>) -> Self {
        Self { found, places }
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

impl fmt::Debug for SecretSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids and masks only.
        f.debug_map().entries(self.found.iter().map(|(id, secret)| (id, secret.masked()))).finish()
    }
}

impl SecretSource for SecretSnapshot {
    fn secret_for(&self, key_id: &str) -> Option<ApiKeySecret> {
        self.found.get(key_id).cloned()
    }

    fn discover(&self) -> Vec<(String, ApiKeySecret)> {
        self.found.iter().map(|(id, secret)| (id.clone(), secret.clone())).collect()
    }

    fn looked_in(&self, key_id: &str) -> String {
        self.places.get(key_id).cloned().unwrap_or_else(|| "the secret store".to_string())
    }
}

/// Where key secrets live: read at start-up, and again at every refresh, so
/// a rotated secret is picked up without a restart.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// The store and its address, for logs and errors (never a credential).
    fn describe(&self) -> String;

    /// The secrets of `key_ids` as the store holds them now; a key it does
    /// not hold is absent from the snapshot (and so retired). `None`: every
    /// key the store can list, for a deployment without keys.json. An error
    /// means the store could not be read, and nothing should change.
    async fn fetch(&self, key_ids: Option<&[String]>) -> Result<SecretSnapshot, StoreFailure>;
}

/// The secrets of a local source (environment, file), as a snapshot.
fn local_snapshot(source: &dyn SecretSource, key_ids: Option<&[String]>) -> SecretSnapshot {
    let Some(ids) = key_ids else {
        return SecretSnapshot::new(source.discover().into_iter().collect(), BTreeMap::new());
    };
    let found = ids.iter().filter_map(|id| Some((id.clone(), source.secret_for(id)?))).collect();
    let places = ids.iter().map(|id| (id.clone(), source.looked_in(id))).collect();
    SecretSnapshot::new(found, places)
}

#[async_trait::async_trait]
impl SecretStore for EnvSecrets {
    fn describe(&self) -> String {
        "the environment".to_string()
    }

    async fn fetch(&self, key_ids: Option<&[String]>) -> Result<SecretSnapshot, StoreFailure> {
        Ok(local_snapshot(self, key_ids))
    }
}

#[async_trait::async_trait]
impl SecretStore for FileSecrets {
    fn describe(&self) -> String {
        "KEY_SECRETS_FILE".to_string()
    }

    async fn fetch(&self, key_ids: Option<&[String]>) -> Result<SecretSnapshot, StoreFailure> {
        Ok(local_snapshot(self, key_ids))
    }
}

pub trait SecretSource: Send + Sync {
    /// The secret of the key `key_id` named in keys.json.
    fn secret_for(&self, key_id: &str) -> Option<ApiKeySecret>;
    /// Every key this source knows, for a pool without keys.json.
    fn discover(&self) -> Vec<(String, ApiKeySecret)>;
    /// Where [`SecretSource::secret_for`] looked for `key_id`, for the
    /// warning an operator reads when it found nothing.
    fn looked_in(&self, key_id: &str) -> String;
}

/// The prefixes of per-key variables, in the order they win.
const KEY_PREFIXES: [&str; 2] = ["GEMINI_KEY_", "API_KEY_"];

/// Secrets from environment variables:
/// - `GEMINI_KEY_<id>` or `API_KEY_<id>`, the id matched case-insensitively
///   with `-` read as `_` (the old deployment wrote `GEMINI_KEY_flash_01`);
///   `GEMINI_KEY_` wins over `API_KEY_`, as in the old app;
/// - `GEMINI_API_KEYS`, a comma list whose entries are the keys `key_1`, `key_2`, …;
/// - `GEMINI_API_KEY`, the key `default`.
#[derive(Default)]
pub struct EnvSecrets {
    /// `(prefix, normalised id)` → the secret, from per-key variables.
    named: BTreeMap<(&'static str, String), String>,
    list: Vec<String>,
    single: Option<String>,
}

/// Two variables name one key with different secrets: which to use cannot
/// be guessed. Names the variables, never the values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{first} and {second} name the same key with different secrets; keep one of them")]
pub struct ConflictingSecrets {
    pub first: String,
    pub second: String,
}

/// How a per-key variable's id and a keys.json id are compared.
fn normalised_id(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}

impl EnvSecrets {
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConflictingSecrets> {
        let mut secrets = Self::default();
        // Variable names per slot, to name both sides of a conflict.
        let mut sources: HashMap<(&'static str, String), String> = HashMap::new();
        let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(_, value)| !value.trim().is_empty()).collect();
        vars.sort();
        for (name, value) in vars {
            let value = value.trim().to_string();
            match name.as_str() {
                "GEMINI_API_KEYS" => {
                    secrets.list =
                        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
                    continue;
                }
                "GEMINI_API_KEY" => {
                    secrets.single = Some(value);
                    continue;
                }
                _ => {}
            }
            let Some((prefix, id)) =
                KEY_PREFIXES.iter().find_map(|prefix| name.strip_prefix(prefix).map(|id| (*prefix, id)))
            else {
                continue;
            };
            if id.is_empty() {
                continue;
            }
            let slot = (prefix, normalised_id(id));
            if let Some(existing) = secrets.named.get(&slot) {
                if *existing != value {
                    return Err(ConflictingSecrets { first: sources[&slot].clone(), second: name });
                }
                continue;
            }
            sources.insert(slot.clone(), name);
            secrets.named.insert(slot, value);
        }
        Ok(secrets)
    }

    pub fn from_process() -> Result<Self, ConflictingSecrets> {
        Self::new(std::env::vars())
    }
}

impl SecretSource for EnvSecrets {
    fn secret_for(&self, key_id: &str) -> Option<ApiKeySecret> {
        let id = normalised_id(key_id);
        let named = KEY_PREFIXES.iter().find_map(|prefix| self.named.get(&(*prefix, id.clone())));
        let listed = || {
            let index: usize = key_id.strip_prefix("key_")?.parse().ok()?;
            self.list.get(index.checked_sub(1)?)
        };
        let single = || self.single.as_ref().filter(|_| key_id == "default");
        named.or_else(listed).or_else(single).map(|s| ApiKeySecret::new(s.as_str()))
    }

    fn discover(&self) -> Vec<(String, ApiKeySecret)> {
        let mut found: BTreeMap<String, ApiKeySecret> = BTreeMap::new();
        // API_KEY_ first, so GEMINI_KEY_ overwrites it.
        for prefix in KEY_PREFIXES.iter().rev() {
            for ((_, id), secret) in self.named.iter().filter(|((p, _), _)| p == prefix) {
                found.insert(id.to_ascii_lowercase(), ApiKeySecret::new(secret.as_str()));
            }
        }
        for (index, secret) in self.list.iter().enumerate() {
            found.entry(format!("key_{}", index + 1)).or_insert_with(|| ApiKeySecret::new(secret.as_str()));
        }
        if let Some(single) = &self.single {
            found.entry("default".to_string()).or_insert_with(|| ApiKeySecret::new(single.as_str()));
        }
        found.into_iter().collect()
    }

    fn looked_in(&self, key_id: &str) -> String {
        let id = normalised_id(key_id);
        let mut names = format!("GEMINI_KEY_{id} and API_KEY_{id} (any case, - as _)");
        if key_id.strip_prefix("key_").is_some_and(|n| n.parse::<usize>().is_ok()) {
            names.push_str(", GEMINI_API_KEYS");
        }
        if key_id == "default" {
            names.push_str(", GEMINI_API_KEY");
        }
        names
    }
}

/// Secrets from a JSON file `{"<key_id>": "<secret>", …}`.
pub struct FileSecrets {
    secrets: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("secrets file {path}: {reason}")]
pub struct FileSecretsError {
    pub path: String,
    pub reason: String,
}

impl FileSecrets {
    pub fn load(path: &Path) -> Result<Self, FileSecretsError> {
        let error = |reason: String| FileSecretsError { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|err| error(err.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the secrets file is readable by other users; chmod 600 it");
                }
            }
        }
        // The parse error is not shown: serde quotes the input, which is secret.
        let secrets: BTreeMap<String, String> = serde_json::from_str(&text)
            .map_err(|_| error("expected a JSON object of key id to secret string".into()))?;
        Ok(Self { secrets })
    }
}

impl SecretSource for FileSecrets {
    fn secret_for(&self, key_id: &str) -> Option<ApiKeySecret> {
        self.secrets.get(key_id).map(|s| ApiKeySecret::new(s.trim()))
    }

    fn discover(&self) -> Vec<(String, ApiKeySecret)> {
        self.secrets.iter().map(|(id, s)| (id.clone(), ApiKeySecret::new(s.trim()))).collect()
    }

    fn looked_in(&self, key_id: &str) -> String {
        format!("the entry {key_id:?} of KEY_SECRETS_FILE")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvSecrets {
        EnvSecrets::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn a_secret_shows_only_its_last_four_characters() {
        let secret = ApiKeySecret::new("AIzaSyD-very-secret-value-WXYZ");
        assert_eq!(format!("{secret:?}"), "…WXYZ");
        assert_eq!(secret.masked(), "…WXYZ");
        assert_eq!(ApiKeySecret::new("ab").masked(), "…ab");
    }

    #[test]
    fn env_names_match_ids_case_insensitively_with_dashes_as_underscores() {
        let source = env(&[("GEMINI_KEY_FLASH_01", "s1"), ("API_KEY_PRO_02", "s2")]);
        assert_eq!(source.secret_for("flash-01").unwrap().expose(), "s1");
        assert_eq!(source.secret_for("Flash_01").unwrap().expose(), "s1");
        assert_eq!(source.secret_for("pro_02").unwrap().expose(), "s2");
        assert!(source.secret_for("pro_03").is_none());
    }

    #[test]
    fn the_old_deployments_lower_case_names_match() {
        let source = env(&[("GEMINI_KEY_flash_01", "s1"), ("GEMINI_KEY_Pro-02", "s2"), ("API_KEY_pro_03", "s3")]);
        assert_eq!(source.secret_for("flash_01").unwrap().expose(), "s1");
        assert_eq!(source.secret_for("FLASH-01").unwrap().expose(), "s1");
        assert_eq!(source.secret_for("pro_02").unwrap().expose(), "s2");
        assert_eq!(source.secret_for("pro_03").unwrap().expose(), "s3");
        let ids: Vec<String> = source.discover().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["flash_01", "pro_02", "pro_03"]);
    }

    #[test]
    fn gemini_key_wins_over_api_key() {
        let source = env(&[("API_KEY_flash_01", "from-api-key"), ("GEMINI_KEY_FLASH_01", "from-gemini-key")]);
        assert_eq!(source.secret_for("flash_01").unwrap().expose(), "from-gemini-key");
        assert_eq!(source.discover()[0].1.expose(), "from-gemini-key");
    }

    #[test]
    fn two_spellings_of_one_key_with_different_secrets_are_refused_by_name() {
        let vars = [("GEMINI_KEY_flash_01", "one-secret"), ("GEMINI_KEY_FLASH_01", "another-secret")];
        let err = EnvSecrets::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).err().unwrap();
        let message = err.to_string();
        assert!(message.contains("GEMINI_KEY_FLASH_01") && message.contains("GEMINI_KEY_flash_01"), "{message}");
        assert!(!message.contains("secret-"), "{message}");
        // The same value twice is harmless.
        env(&[("GEMINI_KEY_flash_01", "same"), ("GEMINI_KEY_FLASH_01", "same")]);
        // Different prefixes are not a conflict: GEMINI_KEY_ wins.
        env(&[("GEMINI_KEY_flash_01", "a"), ("API_KEY_flash_01", "b")]);
    }

    #[test]
    fn discovery_names_list_and_single_keys() {
        let source = env(&[
            ("GEMINI_KEY_A", "sa"),
            ("GEMINI_API_KEYS", "l1, l2"),
            ("GEMINI_API_KEY", "single"),
            ("UNRELATED", "x"),
        ]);
        let found: Vec<(String, String)> =
            source.discover().into_iter().map(|(id, s)| (id, s.expose().to_string())).collect();
        assert_eq!(
            found,
            vec![
                ("a".to_string(), "sa".to_string()),
                ("default".to_string(), "single".to_string()),
                ("key_1".to_string(), "l1".to_string()),
                ("key_2".to_string(), "l2".to_string()),
            ]
        );
        assert_eq!(source.secret_for("key_2").unwrap().expose(), "l2");
        assert_eq!(source.secret_for("default").unwrap().expose(), "single");
    }
}
