//! `SECRET_STORE_TYPE=aws` against moto in server mode on loopback (PyPI's
//! `moto[server]`; `.ci/run` installs it). The secrets are written with
//! boto3, AWS's own Python SDK, and read by our client.
//!
//! Found through `ALGOAGENT_MOTO` (the `moto_server` binary; boto3 is the
//! `python` beside it) or the `PATH`; `ALGOAGENT_STORE_TESTS` as for Vault.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::cli::{failed_start, keys_status};
use crate::helpers::TestDatabase;
use crate::vault::{keys_json, rotation_and_outage, sim, store_env, StoreUnderTest, OLD_SECRET, SECOND_SECRET};

const ACCESS_KEY: &str = "AKIAALGOAGENTTEST";
const SECRET_KEY: &str = "aws-secret-access-key-of-the-test";

struct Moto {
    child: Option<Child>,
    endpoint: String,
    python: PathBuf,
}

impl Moto {
    /// A moto server; `iam_auth` makes it check credentials and signatures
    /// after the first three calls (which create the test's IAM user).
    #[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
    async fn start(iam_auth: bool) -> Option<Moto> {
        let setting = std::env::var("ALGOAGENT_STORE_TESTS").unwrap_or_default();
        if setting == "0" {
            eprintln!("SKIPPED: ALGOAGENT_STORE_TESTS=0");
            return None;
        }
        let binary = std::env::var_os("ALGOAGENT_MOTO").map(PathBuf::from).or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("moto_server")).find(|p| p.is_file())
        });
        let Some(binary) = binary else {
            assert!(setting != "1", "ALGOAGENT_STORE_TESTS=1 but no moto_server (pip install 'moto[server]')");
            eprintln!("SKIPPED: the AWS tests need moto_server (pip install 'moto[server]')");
            return None;
        };
        let python = binary.with_file_name("python");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(&binary);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if iam_auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child =
            command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn().expect("moto_server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if reqwest::get(format!("{endpoint}/moto-api/")).await.is_ok() {
                return Some(Moto { child: Some(child), endpoint, python });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not start");
    }

    /// Creates or updates a secret with boto3.
    async fn put(&self, name: &str, value: &str) {
        let script = r#"
import sys, boto3
c = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="AKIAALGOAGENTTEST", aws_secret_access_key="aws-secret-access-key-of-the-test")
try:
    c.create_secret(Name=sys.argv[2], SecretString=sys.argv[3])
except c.exceptions.ResourceExistsException:
    c.put_secret_value(SecretId=sys.argv[2], SecretString=sys.argv[3])
"#;
        let output =
            Command::new(&self.python).args(["-c", script, &self.endpoint, name, value]).output().await.unwrap();
        assert!(output.status.success(), "boto3: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// With IAM checks on: an IAM user allowed Secrets Manager, its access
    /// key, and a secret written with it; returns (key id, secret key).
    async fn iam_user_with_secret(&self, name: &str, value: &str) -> (String, String) {
        let script = r#"
import sys, json, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key="x")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="algoagent")
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}
iam.put_user_policy(UserName="algoagent", PolicyName="secrets", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName="algoagent")["AccessKey"]
sm = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
sm.create_secret(Name=sys.argv[2], SecretString=sys.argv[3])
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;
        let output =
            Command::new(&self.python).args(["-c", script, &self.endpoint, name, value]).output().await.unwrap();
        assert!(output.status.success(), "boto3: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let mut parts = text.split_whitespace();
        (parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

fn aws_env(dir: &tempfile::TempDir, database: &str, moto: &Moto, keys_file: &str, sim: &str) -> Vec<(String, String)> {
    let store = [
        ("SECRET_STORE_TYPE", "aws"),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    store_env(dir, database, keys_file, sim, &store)
}

impl StoreUnderTest for Moto {
    async fn write_flash_01(&self, secret: &str) {
        self.put("algoagent/flash_01", secret).await;
    }

    async fn stop(&mut self) {
        Moto::stop(self).await;
    }
}

/// The old layout (`algoagent/<key_id>`).
#[tokio::test]
async fn aws_secrets_rotate_without_a_restart_and_outlive_the_store() {
    let Some(mut moto) = Moto::start(false).await else { return };
    moto.write_flash_01(OLD_SECRET).await;
    let sim = sim(1_500).await;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = keys_json(&dir, &["flash_01"]);
    let env = aws_env(&dir, &database.url, &moto, &keys_file, &sim.base_url());
    rotation_and_outage(&mut moto, env, &sim, &[SECRET_KEY]).await;
}

/// `AWS_SECRET_ID`: one secret holding every key; a key that leaves it is
/// retired, with the warning naming where it was looked for.
#[tokio::test]
async fn one_json_secret_holds_every_key_and_a_missing_one_is_retired() {
    let Some(moto) = Moto::start(false).await else { return };
    let both = format!(r#"{{"flash_01": "{OLD_SECRET}", "flash_02": "{SECOND_SECRET}"}}"#);
    moto.put("team/gemini", &both).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01", "flash_02"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let mut env = aws_env(&dir, &database, &moto, &keys_file, "http://127.0.0.1:9");
    env.push(("AWS_SECRET_ID".into(), "team/gemini".into()));
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("flash_01 …OLD1") && table.contains("flash_02 …TWO3"), "{table}");

    moto.put("team/gemini", &format!(r#"{{"flash_01": "{OLD_SECRET}"}}"#)).await;
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(table.contains("flash_01") && !table.contains("flash_02"), "{table}");
    assert!(logs.contains("no secret found") && logs.contains("team/gemini"), "{logs}");
    for secret in [OLD_SECRET, SECOND_SECRET, SECRET_KEY] {
        assert!(!logs.contains(secret) && !table.contains(secret), "a secret was printed");
    }
}

/// With moto's IAM checks on: a real access key signs its way in (our
/// SigV4 is checked by the server), and credentials it does not know get a
/// clear error at start-up, never the secret key, and a non-zero exit.
#[tokio::test]
async fn signed_requests_pass_iam_checks_and_denied_credentials_stop_start_up() {
    let Some(moto) = Moto::start(true).await else { return };
    let (key_id, secret_key) = moto.iam_user_with_secret("algoagent/flash_01", OLD_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let mut env = aws_env(&dir, &database, &moto, &keys_file, "http://127.0.0.1:9");
    env.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_ACCESS_KEY_ID".into(), key_id));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), secret_key.clone()));
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("flash_01 …OLD1"), "{table}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains(&secret_key));

    let message = failed_start(&aws_env(&dir, &database, &moto, &keys_file, "http://127.0.0.1:9")).await;
    assert!(
        message.contains(&format!("aws secrets manager at {}", moto.endpoint)) && message.contains("permission denied"),
        "{message}"
    );
    assert!(!message.contains(SECRET_KEY), "the secret key was printed");
}

/// Further down the credential chain: web identity (STS
/// `AssumeRoleWithWebIdentity` with a token file, moto's STS) and the
/// instance metadata service (moto's IMDSv2), which is asked only when
/// `AWS_EC2_METADATA_DISABLED` is not `true`.
#[tokio::test]
async fn web_identity_and_instance_metadata_supply_credentials() {
    let Some(moto) = Moto::start(false).await else { return };
    moto.put("algoagent/flash_01", OLD_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let mut chain_only = aws_env(&dir, &database, &moto, &keys_file, "http://127.0.0.1:9");
    chain_only.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");

    let web_token = "eyJhbGciOiJSUzI1NiJ9.web-identity-token-of-the-test";
    let token_file = dir.path().join("web-identity-token");
    std::fs::write(&token_file, web_token).unwrap();
    let mut env = chain_only.clone();
    env.push(("AWS_WEB_IDENTITY_TOKEN_FILE".into(), token_file.display().to_string()));
    env.push(("AWS_ROLE_ARN".into(), "arn:aws:iam::123456789012:role/algoagent".into()));
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{logs}");
    assert!(table.contains("flash_01 …OLD1"), "{table}");
    assert!(!logs.contains(web_token) && !table.contains(web_token), "the web identity token was printed");

    // With metadata disabled (as the other tests run) nothing is left to try.
    let output = keys_status(&chain_only).await;
    let message = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success() && message.contains("no AWS credentials"), "{message}");

    let mut env = chain_only.clone();
    env.retain(|(k, _)| k != "AWS_EC2_METADATA_DISABLED");
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), moto.endpoint.clone()));
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("flash_01 …OLD1"), "{table}");
}
