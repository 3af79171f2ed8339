//! Local throughput: completed purchases per second. N purchases from M
//! client tasks against each tree's release local server (embedded store on
//! the disk, `RETRY_DELAY_SCALE` as deployed); each task creates a purchase
//! and polls `GET` until it is `COMPLETED` (or final otherwise, or its
//! deadline passes). The clock runs from the first create to the last
//! completion: the number is create → `COMPLETED`, not the 201s.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bench::http_client::Connection;
use bench::stats::{median, quantile};
use bench::{Result, fixtures};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::trees::LocalServer;
use crate::{Args, write_fragment};

/// Statuses after which a purchase never changes again.
const FINAL: [&str; 4] = ["COMPLETED", "FAILED", "CANCELLED", "REJECTED"];

#[derive(Default)]
struct Outcome {
    /// Seconds after the start at which each purchase completed.
    completed_at: Vec<f64>,
    /// create → COMPLETED per purchase, ms.
    latency_ms: Vec<f64>,
    polls: usize,
    other_final: Vec<String>,
    timed_out: usize,
    errors: Vec<String>,
}

pub async fn run(args: &Args) -> Result<()> {
    let purchases: usize = args.number("purchases", 3000)?;
    let clients: usize = args.number("clients", 16)?;
    let deadline = Duration::from_secs(args.number("deadline-secs", 120)?);
    let work = args.fresh_work_dir("throughput")?;
    let trees = args.trees()?;

    let mut results = Vec::new();
    for tree in &trees {
        let dir = work.join(&tree.label);
        let server = LocalServer::start(tree, &dir, &[("RUST_LOG".into(), "warn".into())]).await?;
        let started = Instant::now();
        let outcome = drive(&server.addr, purchases, clients, deadline).await?;
        let wall = outcome.completed_at.iter().copied().fold(0.0, f64::max);
        drop(server);
        let per_second = outcome.completed_at.len() as f64 / wall;
        eprintln!(
            "throughput {}: {} completed in {wall:.1} s = {per_second:.0}/s ({:.1} s in all)",
            tree.label,
            outcome.completed_at.len(),
            started.elapsed().as_secs_f64()
        );
        results.push((tree.label.clone(), outcome, wall, per_second));
    }

    let filesystem = filesystem_of(&work);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`bench-driver throughput`: {purchases} purchases from {clients} client tasks (keep-alive \
         connections) against each tree's release local server: embedded store on disk \
         (`DATA_DIR` under `target/bench/throughput`, {filesystem}), `RETRY_DELAY_SCALE` unset \
         (1, as deployed), `RUST_LOG=warn`, the bench catalog (unlimited stock). Each task \
         creates a purchase (`POST`, real JWT) and polls `GET` until it is `COMPLETED` (first \
         poll after 2 ms, then ×1.5 up to 25 ms; deadline {deadline:?}). Purchases per second \
         = completed ÷ (last completion − first create).\n"
    );
    let _ = writeln!(
        out,
        "| tree | completed | other final / timed out / errors | wall (s) | **completed purchases/s** | create → COMPLETED p50 / p90 / p99 (ms) | GETs per purchase |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let mut summary = serde_json::Map::new();
    for (label, o, wall, per_second) in &results {
        let _ = writeln!(
            out,
            "| {label} | {} | {} / {} / {} | {wall:.1} | **{per_second:.0}** | {:.0} / {:.0} / {:.0} | {:.1} |",
            o.completed_at.len(),
            o.other_final.len(),
            o.timed_out,
            o.errors.len(),
            median(&o.latency_ms),
            quantile(&o.latency_ms, 0.9),
            quantile(&o.latency_ms, 0.99),
            o.polls as f64 / purchases as f64,
        );
        summary.insert(
            label.clone(),
            json!({"purchases_per_second": per_second, "completed": o.completed_at.len(),
                   "purchases": purchases, "clients": clients}),
        );
        for problem in o.errors.iter().chain(&o.other_final).take(5) {
            let _ = writeln!(out, "\n- {label}: {problem}");
        }
    }
    write_fragment(args, "throughput.md", &out)?;
    write_fragment(
        args,
        "throughput.json",
        &serde_json::to_string_pretty(&Value::Object(summary))?,
    )?;
    Ok(())
}

async fn drive(
    addr: &str,
    purchases: usize,
    clients: usize,
    deadline: Duration,
) -> Result<Outcome> {
    let token = Arc::new(fixtures::user_token()?);
    let next = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (token, next, outcome) = (token.clone(), next.clone(), outcome.clone());
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(&addr);
            while next.fetch_add(1, Ordering::SeqCst) < purchases {
                let result = one_purchase(&mut connection, &token, start, deadline).await;
                let mut o = outcome.lock().await;
                match result {
                    Ok((Finish::Completed { at, latency_ms }, polls)) => {
                        o.completed_at.push(at);
                        o.latency_ms.push(latency_ms);
                        o.polls += polls;
                    }
                    Ok((Finish::Other(status), polls)) => {
                        o.other_final.push(format!("ended {status}"));
                        o.polls += polls;
                    }
                    Ok((Finish::TimedOut, polls)) => {
                        o.timed_out += 1;
                        o.polls += polls;
                    }
                    Err(e) => o.errors.push(e.to_string()),
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let outcome = Arc::try_unwrap(outcome)
        .map_err(|_| "client tasks still hold the outcome")?
        .into_inner();
    Ok(outcome)
}

enum Finish {
    Completed { at: f64, latency_ms: f64 },
    Other(String),
    TimedOut,
}

async fn one_purchase(
    connection: &mut Connection,
    token: &str,
    start: Instant,
    deadline: Duration,
) -> Result<(Finish, usize)> {
    let created = Instant::now();
    let (status, body) = connection
        .call(
            http::Method::POST,
            "/purchase-orchestrator/purchases",
            token,
            Some(&fixtures::create_body()),
        )
        .await?;
    let id = body["purchaseId"]
        .as_str()
        .ok_or_else(|| format!("create answered {status} {body}"))?
        .to_owned();
    let path = format!("/purchase-orchestrator/purchases/{id}");
    let mut wait = Duration::from_millis(2);
    let mut polls = 0;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait.mul_f64(1.5)).min(Duration::from_millis(25));
        polls += 1;
        let (code, purchase) = connection
            .call(http::Method::GET, &path, token, None)
            .await?;
        let status = purchase["status"].as_str().unwrap_or_default();
        if status == "COMPLETED" {
            let now = Instant::now();
            return Ok((
                Finish::Completed {
                    at: (now - start).as_secs_f64(),
                    latency_ms: (now - created).as_secs_f64() * 1000.0,
                },
                polls,
            ));
        }
        if FINAL.contains(&status) {
            return Ok((Finish::Other(status.to_owned()), polls));
        }
        if code != 200 {
            return Err(format!("GET {id} answered {code} {purchase}").into());
        }
        if created.elapsed() > deadline {
            return Ok((Finish::TimedOut, polls));
        }
    }
}

/// The file system type `path` lives on, from /proc/mounts.
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{kind} on {device}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, text)| text)
        .unwrap_or_else(|| "file system unknown".into())
}
