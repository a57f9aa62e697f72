//! HS256 JSON Web Tokens with the algorithm pinned.

use chrono::{Duration as ChronoDuration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const ISSUER: &str = "algoagent-api";
/// What the legacy `SECRET_KEY` is mixed with to make our signing key.
const LEGACY_DERIVATION: &[u8] = b"algoagent-jwt-v1";
/// Shorter than this and an HS256 secret can be brute-forced offline.
pub const MIN_SECRET_BYTES: usize = 32;

/// The signing secret made from the old Django deployment's `SECRET_KEY`:
/// `HMAC-SHA256(SECRET_KEY, "algoagent-jwt-v1")`, hex. The old app signed
/// its tokens with `SECRET_KEY` itself, in a shape close to ours; deriving
/// a key of our own means none of its tokens ever verifies here, while an
/// operator who only copied the old `.env` still gets a stable secret.
pub fn secret_from_legacy_key(secret_key: &str) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret_key.as_bytes()) else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(LEGACY_DERIVATION);
    crate::bytes::hex(&mac.finalize().into_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub token_type: TokenKind,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub user_id: i64,
    pub iss: String,
    /// The session (refresh-token family) the token belongs to. Access
    /// tokens without one are refused: their session cannot be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token rejected: {0}")]
    Rejected(#[from] jsonwebtoken::errors::Error),
    #[error("expected a {expected:?} token")]
    WrongKind { expected: TokenKind },
}

/// Signing and verification keys plus the token lifetimes. Holds no
/// printable copy of the secret, and is deliberately not `Debug`.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn issue(
        &self,
        user_id: i64,
        kind: TokenKind,
        family: &str,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let ttl = match kind {
            TokenKind::Access => self.access_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        };
        let now = Utc::now();
        let ttl = ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::hours(1));
        let claims = Claims {
            token_type: kind,
            exp: (now + ttl).timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            user_id,
            iss: ISSUER.to_string(),
            fam: Some(family.to_string()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(IssuedToken { token, claims })
    }

    /// Verifies signature, algorithm, expiry, issuer and the token's kind.
    pub fn verify(&self, token: &str, expected: TokenKind) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.claims.token_type != expected {
            return Err(TokenError::WrongKind { expected });
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32], Duration::from_secs(3600), Duration::from_secs(7 * 86400))
    }

    #[test]
    fn a_token_round_trips_and_keeps_its_kind() {
        let keys = keys();
        let issued = keys.issue(42, TokenKind::Access, "family").unwrap();
        let claims = keys.verify(&issued.token, TokenKind::Access).unwrap();
        assert_eq!(claims.user_id, 42);
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.exp - claims.iat, 3600);
        assert!(matches!(keys.verify(&issued.token, TokenKind::Refresh), Err(TokenError::WrongKind { .. })));
    }

    #[test]
    fn another_algorithm_or_secret_is_refused() {
        let keys = keys();
        let claims = keys.issue(1, TokenKind::Access, "family").unwrap().claims;
        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(&[7u8; 32]))
                .unwrap();
        assert!(keys.verify(&hs512, TokenKind::Access).is_err());
        let other_secret = JwtKeys::new(&[8u8; 32], Duration::from_secs(60), Duration::from_secs(60));
        let forged = other_secret.issue(1, TokenKind::Access, "family").unwrap().token;
        assert!(keys.verify(&forged, TokenKind::Access).is_err());
    }

    #[test]
    fn the_legacy_key_is_derived_and_never_used_as_it_is() {
        let derived = secret_from_legacy_key("django-insecure-abc");
        assert_eq!(derived.len(), 64);
        assert_ne!(derived, "django-insecure-abc");
        assert_eq!(derived, secret_from_legacy_key("django-insecure-abc"), "stable across restarts and replicas");
        assert_ne!(derived, secret_from_legacy_key("django-insecure-abd"));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let mut claims = keys.issue(1, TokenKind::Access, "family").unwrap().claims;
        claims.exp = Utc::now().timestamp() - 1;
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&[7u8; 32]))
                .unwrap();
        assert!(keys.verify(&token, TokenKind::Access).is_err());
    }
}
