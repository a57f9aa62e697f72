//! The JWT signing secret of the embedded deployment.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;

const SECRET_FILE: &str = "jwt_secret";

/// The configured secret, or one generated once and kept (mode 0600) in the
/// data directory, so tokens survive restarts without anyone choosing a
/// secret by hand. Configuration has already refused Postgres without one.
pub fn jwt_secret(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.clone());
    }
    load_or_create(&config.data_dir.join(SECRET_FILE))
}

fn load_or_create(path: &Path) -> anyhow::Result<SecretString> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let generated = api_core::bytes::hex(&bytes);
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match created {
        Ok(mut file) => {
            file.write_all(generated.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a JWT signing secret");
            Ok(SecretString::from(generated))
        }
        // Another process (or an earlier run) made it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let secret = SecretString::from(text.trim().to_string());
            anyhow::ensure!(
                secret.expose_secret().len() >= api_core::jwt::MIN_SECRET_BYTES,
                "{} holds a secret shorter than {} bytes; delete it to generate a new one",
                path.display(),
                api_core::jwt::MIN_SECRET_BYTES
            );
            Ok(secret)
        }
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/jwt_secret");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 96);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
