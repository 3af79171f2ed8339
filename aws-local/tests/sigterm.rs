//! The `aws-local` command runs in the foreground and SIGTERM stops it with
//! every function process it started: none is left behind.
//!
//! Needs the moto server (`AWS_TEST_ENDPOINT`) and the function binaries
//! (`cargo build --workspace --bins`); scripts/test.sh provides both.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::auth::Scope;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn sigterm_stops_the_shape_and_leaves_no_function_process_behind() {
    let Some(moto) = common::moto("sigterm_stops_the_shape_and_leaves_no_function_process_behind")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_aws-local"));
    command
        .env("DYNAMODB_ENDPOINT", &moto)
        .env("PORT", "0")
        .env("DATA_DIR", dir.path())
        .env("JWT_HS256_SECRET", common::SECRET)
        .env("STACK_NAME", format!("t{:08x}", fastrand::u32(..)))
        .env("TEMPLATE_FILE", common::template_file())
        .env("RETRY_DELAY_SCALE", "0.01")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut shape = command.spawn().unwrap();
    let pid = shape.id().unwrap();

    // The API's address is in the log; keep reading it so the pipe never fills.
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let mut lines = BufReader::new(shape.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        let mut address_tx = Some(address_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find("API Gateway shim on ")
                && let Some(tx) = address_tx.take()
            {
                let url = line[at + "API Gateway shim on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(url);
            }
        }
    });
    let base = tokio::time::timeout(Duration::from_secs(60), address_rx)
        .await
        .expect("aws-local never said where it listens")
        .unwrap();

    // A purchase through every step starts a process for each function on its path.
    let client = reqwest::Client::new();
    let token = common::token("c-1", &[Scope::Read, Scope::Write]);
    let created: Value = client
        .post(format!("{base}/purchases"))
        .bearer_auth(&token)
        .json(&json!({
            "customerId": "c-1",
            "products": [{"id": "ebook-rust", "quantity": 1}],
            "paymentDetails": {"method": "card", "transactionId": "tok_visa"},
            "shippingAddress": {"name": "Ada", "address": "1 Main St", "city": "London", "country": "GB", "postalCode": "SW1A 1AA"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["purchaseId"].as_str().expect("created").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p: Value = client
            .get(format!("{base}/purchases/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if p["status"] == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {p:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let functions = children(pid);
    assert!(functions.len() >= 5, "function processes: {functions:?}");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), shape.wait())
        .await
        .expect("aws-local did not stop on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    let left: Vec<u32> = functions
        .into_iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(left.is_empty(), "function processes left behind: {left:?}");
}
