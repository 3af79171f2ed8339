//! What aws-local's tests share: the workspace's template, the function
//! binaries next to the test binary, the moto server of scripts/test.sh.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_local::Options;
use shared::adapters::simulators::{SimulatedPaymentGateway, SimulatedProvisioner};
use shared::auth::{AuthConfig, KeySource, Scope};

pub const SECRET: &str = "aws-local-tests-secret-of-at-least-32-bytes";

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn template_file() -> PathBuf {
    workspace().join("template.yaml")
}

/// Writes line past the test harness's capture (seen in CI logs).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The moto server, or `None` outside CI when it is not running (the test
/// then passes without running, and says so; with CI=true it fails).
pub fn moto(test: &str) -> Option<String> {
    match std::env::var("AWS_TEST_ENDPOINT") {
        Ok(endpoint) => Some(endpoint),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "AWS_TEST_ENDPOINT is not set: in CI {test} must run (scripts/test.sh starts moto)"
            )
        }
        Err(_) => {
            say(&format!(
                "note: {test} passes WITHOUT RUNNING: AWS_TEST_ENDPOINT is not set (scripts/test.sh starts moto)"
            ));
            None
        }
    }
}

pub fn auth() -> AuthConfig {
    AuthConfig {
        issuer: local::DEFAULT_ISSUER.into(),
        audience: local::DEFAULT_AUDIENCE.into(),
        leeway_seconds: 5,
        keys: KeySource::Hs256 {
            secret: SECRET.into(),
        },
    }
}

pub fn token(customer: &str, scopes: &[Scope]) -> String {
    shared::auth::mint_hs256_token(
        SECRET,
        local::DEFAULT_ISSUER,
        local::DEFAULT_AUDIENCE,
        customer,
        scopes,
        Duration::from_secs(600),
    )
    .unwrap()
}

/// Options for a shape of its own (stack, tables, data directory).
pub fn options(template: PathBuf, data_dir: PathBuf, dynamodb_endpoint: &str) -> Options {
    Options {
        template,
        bin_dir: aws_local::bin_dir_of_test_binary().unwrap(),
        data_dir,
        stack_name: format!("t{:08x}", fastrand::u32(..)),
        region: "us-east-1".into(),
        dynamodb_endpoint: dynamodb_endpoint.into(),
        api_address: "127.0.0.1:0".parse().unwrap(),
        catalog_file: None,
        auth: auth(),
        parameters: Default::default(),
        payments: Arc::new(SimulatedPaymentGateway::default()),
        provisioning: Arc::new(SimulatedProvisioner::default()),
        step_hook: None,
        delay_scale: 0.01,
        run_schedules: false,
        lambda_endpoint: None,
    }
}

/// A copy of the workspace's template in `dir`, with `edit` applied to its
/// text, and the definitions it names copied beside it.
pub fn edited_template(dir: &std::path::Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(template_file()).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    let definitions = dir.join("statemachine");
    std::fs::create_dir_all(&definitions).unwrap();
    for entry in std::fs::read_dir(workspace().join("statemachine")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), definitions.join(entry.file_name())).unwrap();
    }
    let path = dir.join("template.yaml");
    std::fs::write(&path, edited).unwrap();
    path
}
