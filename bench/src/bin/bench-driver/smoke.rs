//! `smoke`: the init half of `scripts/bench-smoke.sh`. Every function of the
//! template is started (the debug binaries `cargo test --workspace` builds)
//! until its first `next` poll, with the counting proxy in front of its AWS
//! endpoint (a dead port, or moto) and its trust store pointed at a trap.
//! It fails when a function's init makes an AWS call or reads a CA trust
//! store: init must stay as cheap as the hello world's.

use std::time::Duration;

use bench::Result;
use bench::invoke::{Invocation, StopAt, invoke_once};
use bench::proxy::{CountingProxy, Recording};
use bench::trust_store::TrustStoreTrap;
use bytes::Bytes;

use crate::Args;
use crate::trees::{EVENTS_PURCHASE_ID, Tree, event_from};

/// Where the trap's readers get a real certificate from (any will do).
const SOME_CERTIFICATE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub async fn run(args: &Args) -> Result<()> {
    let tree = Tree::parse(args.required("tree")?)?;
    let timeout = Duration::from_secs(args.number("timeout", 60)?);
    let logs = args.out_dir().join("smoke");
    std::fs::create_dir_all(&logs)?;
    // No upstream by default: a port nothing listens on. Calls are counted
    // all the same (the proxy answers 502).
    let upstream = match args.value("upstream") {
        Some(url) => url.to_owned(),
        None => format!("http://127.0.0.1:{}", crate::free_port()?),
    };
    let proxy = CountingProxy::start(&upstream, Recording::Counts).await?;
    let pem = std::fs::read(SOME_CERTIFICATE)
        .map(|bundle| first_certificate(&bundle))
        .unwrap_or_default();
    let trap = TrustStoreTrap::start(pem)?;
    control(&trap).await?;

    let stack = tree.stack();
    let functions = tree.template.functions();
    let missing: Vec<&str> = functions
        .iter()
        .filter(|f| !tree.bin_dir.join(&f.binary).exists())
        .map(|f| f.binary.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not built in {}: {} (cargo test --workspace --no-run builds them)",
            tree.bin_dir.display(),
            missing.join(", ")
        )
        .into());
    }
    let mut problems = Vec::new();
    for function in &functions {
        let mut env = tree.lambda_env(&stack, &function.binary, &proxy.url())?;
        env.extend(trap.env());
        let event = event_from(
            &tree.events_dir(),
            &function.binary,
            EVENTS_PURCHASE_ID,
            function.route.clone(),
        )
        .unwrap_or(serde_json::Value::Null);
        trap.reset()?;
        proxy.take();
        let result = invoke_once(Invocation {
            name: &function.binary,
            binary: &tree.bin_dir.join(&function.binary),
            env: &env,
            event: Bytes::from(serde_json::to_vec(&event)?),
            wrapper: &[],
            timeout,
            log: logs.join(format!("{}.log", function.binary)),
            stop_at: StopAt::FirstPoll,
        })
        .await;
        let (file_reads, dir_read) = trap.reads();
        let exchanges = proxy.take();
        let mut found = Vec::new();
        match &result {
            Ok(seen) => {
                let early: Vec<&str> = exchanges
                    .iter()
                    .filter(|e| e.at < seen.first_poll)
                    .map(|e| e.operation.as_str())
                    .collect();
                if !early.is_empty() {
                    found.push(format!(
                        "{} AWS call(s) before its first poll: {}",
                        early.len(),
                        early.join(", ")
                    ));
                }
            }
            Err(error) => found.push(format!("no first poll: {error}")),
        }
        if file_reads > 0 || dir_read {
            found.push(format!(
                "read the CA trust store at init (SSL_CERT_FILE opened {file_reads} time(s){})",
                if dir_read {
                    ", SSL_CERT_DIR listed"
                } else {
                    ""
                }
            ));
        }
        let verdict = if found.is_empty() { "ok" } else { "FAIL" };
        let init = result
            .as_ref()
            .map(|seen| format!("{:.1} ms", seen.poll_ms()))
            .unwrap_or_else(|_| "–".into());
        println!(
            "{verdict:4} {:22} init {init:>9}  {}",
            function.binary,
            found.join("; ")
        );
        problems.extend(
            found
                .into_iter()
                .map(|f| format!("{}: {f}", function.binary)),
        );
    }
    if problems.is_empty() {
        println!(
            "init smoke: {} functions, no AWS call and no trust-store read before the first poll",
            functions.len()
        );
        Ok(())
    } else {
        Err(format!(
            "init smoke failed ({} problem(s)):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
        .into())
    }
}

/// The trap must see a known reader, or a pass would prove nothing.
async fn control(trap: &TrustStoreTrap) -> Result<()> {
    let env = trap.env();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args([
                "-c",
                "cat \"$SSL_CERT_FILE\" >/dev/null; ls \"$SSL_CERT_DIR\" >/dev/null",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .status()
    })
    .await??;
    let seen = trap.reads();
    if !status.success() || seen != (1, true) {
        return Err(format!(
            "the trust-store trap does not work here (control reader: {status}, seen {seen:?})"
        )
        .into());
    }
    Ok(())
}

/// The first PEM certificate of a bundle.
fn first_certificate(bundle: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bundle);
    const END: &str = "-----END CERTIFICATE-----";
    match (text.find("-----BEGIN CERTIFICATE-----"), text.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}\n", &text[start..end + END.len()]).into_bytes()
        }
        _ => Vec::new(),
    }
}
