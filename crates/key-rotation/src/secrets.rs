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

pub trait SecretSource: Send + Sync {
    /// The secret of the key `key_id` named in keys.json.
    fn secret_for(&self, key_id: &str) -> Option<ApiKeySecret>;
    /// Every key this source knows, for a pool without keys.json.
    fn discover(&self) -> Vec<(String, ApiKeySecret)>;
}

/// Secrets from environment variables:
/// - `GEMINI_KEY_<ID>` or `API_KEY_<ID>` (the id upper-cased, `-` read as `_`);
/// - `GEMINI_API_KEYS`, a comma list whose entries are the keys `key_1`, `key_2`, …;
/// - `GEMINI_API_KEY`, the key `default`.
#[derive(Default)]
pub struct EnvSecrets {
    vars: HashMap<String, String>,
}

impl EnvSecrets {
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { vars: vars.into_iter().filter(|(_, value)| !value.trim().is_empty()).collect() }
    }

    pub fn from_process() -> Self {
        Self::new(std::env::vars())
    }

    fn list_entries(&self) -> Vec<String> {
        self.vars
            .get("GEMINI_API_KEYS")
            .map(|list| list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }
}

fn env_suffix(key_id: &str) -> String {
    key_id.to_ascii_uppercase().replace('-', "_")
}

impl SecretSource for EnvSecrets {
    fn secret_for(&self, key_id: &str) -> Option<ApiKeySecret> {
        let suffix = env_suffix(key_id);
        let named =
            ["GEMINI_KEY_", "API_KEY_"].iter().find_map(|prefix| self.vars.get(&format!("{prefix}{suffix}")).cloned());
        let listed = || {
            let index: usize = key_id.strip_prefix("key_")?.parse().ok()?;
            self.list_entries().get(index.checked_sub(1)?).cloned()
        };
        let single = || (key_id == "default").then(|| self.vars.get("GEMINI_API_KEY").cloned()).flatten();
        named.or_else(listed).or_else(single).map(|s| ApiKeySecret::new(s.trim()))
    }

    fn discover(&self) -> Vec<(String, ApiKeySecret)> {
        let mut found: BTreeMap<String, ApiKeySecret> = BTreeMap::new();
        for (name, value) in &self.vars {
            let id =
                name.strip_prefix("GEMINI_KEY_").or_else(|| name.strip_prefix("API_KEY_")).filter(|id| !id.is_empty());
            if let Some(id) = id {
                found.insert(id.to_ascii_lowercase(), ApiKeySecret::new(value.trim()));
            }
        }
        for (index, secret) in self.list_entries().into_iter().enumerate() {
            found.entry(format!("key_{}", index + 1)).or_insert_with(|| ApiKeySecret::new(secret));
        }
        if let Some(single) = self.vars.get("GEMINI_API_KEY") {
            found.entry("default".to_string()).or_insert_with(|| ApiKeySecret::new(single.trim()));
        }
        found.into_iter().collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvSecrets {
        EnvSecrets::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
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
