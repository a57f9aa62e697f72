//! Password rules (Django's four default validators) and argon2id hashing.

use std::collections::HashSet;
use std::sync::LazyLock;

use api_core::HashingPermit;
use std::cell::RefCell;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

pub const MIN_LENGTH: usize = 8;
const MAX_SIMILARITY: f64 = 0.7;

/// Django's list of 20,000 common passwords, lower-cased.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// The account attributes a password must not resemble.
pub struct UserAttributes<'a> {
    pub username: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
}

/// Every rule the password breaks, in Django's order and wording.
pub fn password_problems(password: &str, user: &UserAttributes<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(attribute) = too_similar_attribute(password, user) {
        problems.push(format!("The password is too similar to the {attribute}."));
    }
    if password.chars().count() < MIN_LENGTH {
        problems.push(format!("This password is too short. It must contain at least {MIN_LENGTH} characters."));
    }
    if COMMON_PASSWORDS.contains(password.trim().to_lowercase().as_str()) {
        problems.push("This password is too common.".to_string());
    }
    if !password.is_empty() && password.chars().all(char::is_numeric) {
        problems.push("This password is entirely numeric.".to_string());
    }
    problems
}

fn too_similar_attribute(password: &str, user: &UserAttributes<'_>) -> Option<&'static str> {
    let password = password.to_lowercase();
    let attributes = [
        ("username", user.username),
        ("first name", user.first_name),
        ("last name", user.last_name),
        ("email address", user.email),
    ];
    attributes.into_iter().find_map(|(name, value)| {
        let value = value.to_lowercase();
        if value.is_empty() {
            return None;
        }
        let similar = value
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .chain(std::iter::once(value.as_str()))
            .filter(|part| !exceeds_maximum_length_ratio(&password, part))
            .any(|part| quick_ratio(&password, part) >= MAX_SIMILARITY);
        similar.then_some(name)
    })
}

/// Django skips a comparison that can never reach the threshold because the
/// attribute is tiny next to the password.
fn exceeds_maximum_length_ratio(password: &str, value: &str) -> bool {
    let password_len = password.chars().count() as f64;
    let value_len = value.chars().count() as f64;
    password_len >= 10.0 * value_len && value_len < MAX_SIMILARITY / 2.0 * password_len
}

/// Python's `SequenceMatcher.quick_ratio`: twice the size of the character
/// multiset intersection over the total length.
fn quick_ratio(a: &str, b: &str) -> f64 {
    let total = a.chars().count() + b.chars().count();
    if total == 0 {
        return 1.0;
    }
    let mut available: std::collections::HashMap<char, usize> = std::collections::HashMap::new();
    for c in b.chars() {
        *available.entry(c).or_default() += 1;
    }
    let mut matches = 0usize;
    for c in a.chars() {
        if let Some(count) = available.get_mut(&c).filter(|count| **count > 0) {
            *count -= 1;
            matches += 1;
        }
    }
    2.0 * matches as f64 / total as f64
}

thread_local! {
    /// This thread's argon2 memory. The hashing threads allocate their
    /// 19 MiB once and reuse it: allocating it afresh for every hash lets
    /// glibc's allocator keep the freed blocks (its mmap threshold rises
    /// after the first free), and a burst of 500 logins grew the process
    /// by ~500 MiB with four threads hashing; reused, by ~90.
    static ARGON2_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// argon2 into `out`, on this thread's reusable memory.
fn argon2_into(argon: &Argon2<'_>, block_count: usize, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        // Every block is written before it is read: old contents never matter.
        memory.resize(block_count, Block::default());
        argon.hash_password_into_with_memory(password, salt, out, &mut memory[..]).is_ok()
    })
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let failed = |err: password_hash::Error| anyhow::anyhow!("password hashing failed: {err}");
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).map_err(failed)?;
    let output = Output::init_with(params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN), |out| {
        argon2_into(&argon, params.block_count(), password.as_bytes(), salt_bytes, out)
            .then_some(())
            .ok_or(password_hash::Error::Crypto)
    })
    .map_err(failed)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// The most PBKDF2 iterations a stored Django hash may ask for: Django
/// writes 600,000 to 1,000,000; more is a corrupt or hostile row.
const MAX_PBKDF2_ITERATIONS: u32 = 5_000_000;

/// Checks `password` against a stored hash: ours (argon2id), or one moved in
/// from the old Django app (`pbkdf2_sha256$…`, `argon2$…`,
/// `bcrypt_sha256$…`); Django's unusable passwords (`!…`) and anything
/// malformed never match.
fn verify_now(password: &str, hash: &str) -> bool {
    if let Some(django) = hash.strip_prefix("pbkdf2_sha256$") {
        return verify_django_pbkdf2(password, django);
    }
    if let Some(phc) = hash.strip_prefix("argon2$") {
        return verify_phc(password, &format!("${phc}"));
    }
    if let Some(bcrypt_hash) = hash.strip_prefix("bcrypt_sha256$") {
        use sha2::Digest as _;
        let digest = api_core::bytes::hex(&sha2::Sha256::digest(password.as_bytes()));
        return bcrypt::verify(digest, bcrypt_hash).unwrap_or(false);
    }
    verify_phc(password, hash)
}

/// Whether a stored hash is one to replace with ours at the next successful
/// login: everything that is not argon2id as we write it.
pub fn needs_rehash(hash: &str) -> bool {
    !hash.starts_with("$argon2id$")
}

/// `<iterations>$<salt>$<base64 of PBKDF2-HMAC-SHA256, 32 bytes>`.
fn verify_django_pbkdf2(password: &str, encoded: &str) -> bool {
    use base64::Engine as _;
    let mut parts = encoded.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some(iterations) = iterations.parse::<u32>().ok().filter(|n| (1..=MAX_PBKDF2_ITERATIONS).contains(n)) else {
        return false;
    };
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(expected.trim()) else { return false };
    if expected.len() != 32 {
        return false;
    }
    let mut computed = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut computed);
    // `Output` compares in constant time.
    matches!((Output::new(&computed), Output::new(&expected)), (Ok(a), Ok(b)) if a == b)
}

/// Checks `password` against a PHC-format argon2 hash (any of its variants
/// and parameters); anything malformed never matches.
fn verify_phc(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else { return false };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut computed = vec![0u8; expected.len()];
    if !argon2_into(&argon, params.block_count(), password.as_bytes(), salt_bytes, &mut computed) {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// Hashes with argon2id at the OWASP parameters (19 MiB, t=2, p=1), off the
/// async runtime on the thread the permit names: a hash takes tens of
/// milliseconds of CPU.
pub async fn hash_password(password: String, permit: HashingPermit) -> anyhow::Result<String> {
    permit.run(move || hash_now(&password)).await?
}

/// Whether `password` matches `hash`. A malformed stored hash never matches.
pub async fn verify_password(password: String, hash: String, permit: HashingPermit) -> anyhow::Result<bool> {
    permit.run(move || verify_now(&password, &hash)).await
}

/// A real hash of a throwaway password. Checking a login for an unknown user
/// against it costs the same as for a known one, so response time does not
/// reveal which usernames exist.
pub async fn timing_decoy_hash() -> anyhow::Result<String> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY.get_or_try_init(|| hash_password(uuid::Uuid::new_v4().to_string(), HashingPermit::unbounded())).await.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserAttributes<'static> {
        UserAttributes {
            username: "margaret",
            first_name: "Margaret",
            last_name: "Hamilton",
            email: "mh@apollo.example",
        }
    }

    #[test]
    fn a_strong_password_passes() {
        assert!(password_problems("velvet-orbit-sextant-42", &user()).is_empty());
    }

    #[test]
    fn each_rule_is_reported_in_djangos_words() {
        assert_eq!(
            password_problems("short1x", &user()),
            vec!["This password is too short. It must contain at least 8 characters."]
        );
        assert_eq!(password_problems("password", &user()), vec!["This password is too common."]);
        let numeric = password_problems("80412345967", &user());
        assert_eq!(numeric, vec!["This password is entirely numeric."]);
        assert_eq!(password_problems("margaret.1969x", &user()), vec!["The password is too similar to the username."]);
        assert_eq!(password_problems("hamilton!!", &user()), vec!["The password is too similar to the last name."]);
    }

    #[test]
    fn quick_ratio_matches_python() {
        // SequenceMatcher(a="abcd", b="bcde").quick_ratio() == 0.75
        assert!((quick_ratio("abcd", "bcde") - 0.75).abs() < 1e-9);
        assert!((quick_ratio("aaaa", "a") - 0.4).abs() < 1e-9);
    }

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let first = hash_password("correct horse".into(), HashingPermit::unbounded()).await.unwrap();
        let second = hash_password("correct horse".into(), HashingPermit::unbounded()).await.unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse".into(), first.clone(), HashingPermit::unbounded()).await.unwrap());
        assert!(!verify_password("wrong horse".into(), first, HashingPermit::unbounded()).await.unwrap());
        assert!(!verify_password("x".into(), "not a hash".into(), HashingPermit::unbounded()).await.unwrap());
        // Hashes written by the argon2 crate's own hasher (every stored one) verify.
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let stored = Argon2::default().hash_password(b"older horse", &salt).unwrap().to_string();
        assert!(verify_password("older horse".into(), stored.clone(), HashingPermit::unbounded()).await.unwrap());
        assert!(!verify_password("other horse".into(), stored, HashingPermit::unbounded()).await.unwrap());
    }

    /// Hashes the old Django app wrote (FACTS.json of the fixture, and
    /// Django's own hasher test vectors) verify; unusable ones never do.
    #[test]
    fn django_hashes_verify() {
        let alice = "pbkdf2_sha256$600000$xVlYlGSV6fOyQ2Qy35IO9V$ABF5YgJgKtZ9Q4+X4tgaXYayOUPf2Bzo99i44wPHJcQ=";
        assert!(verify_now("Alice-pass-2024!", alice));
        assert!(!verify_now("Alice-pass-2024?", alice));
        assert!(needs_rehash(alice));
        // Django's test vector for its Argon2PasswordHasher.
        let argon = "argon2$argon2id$v=19$m=102400,t=2,p=8$Y041dExhNkljRUUy$TMa6A8fPJhCAUXRhJXCXdw";
        assert!(verify_now("secret", argon));
        assert!(!verify_now("secreT", argon));
        // As Django's BCryptSHA256PasswordHasher writes it (Python's bcrypt
        // over the hex SHA-256 of "secret", 4 rounds to keep the test quick).
        let bcrypt = "bcrypt_sha256$$2b$04$qmDw6UjituxU1Ny1jRL77OsE3d7rLc0279WVaOFl0mCKuVaXgrd..";
        assert!(verify_now("secret", bcrypt));
        assert!(!verify_now("Secret", bcrypt));
        assert!(!verify_now("", "!PQqo0SIwdduC9kna8qdUy8tc11b2JJX87g3cx8AL"), "unusable");
        assert!(!verify_now("x", "pbkdf2_sha256$999999999$salt$AAAA"), "absurd iterations are refused");
        assert!(!verify_now("x", "pbkdf2_sha256$600000$salt"), "malformed");
    }
}
