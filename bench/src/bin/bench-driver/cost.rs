//! Cost model: DynamoDB requests and capacity units, and state transitions,
//! per purchase lifecycle, counted from a real run of the local server on
//! the DynamoDB store (moto behind the counting proxy), priced for Step
//! Functions Standard and Express.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::fixtures;
use bench::proxy::{CountingProxy, Exchange};
use bench::{Result, http_client};
use serde_json::{Value, json};

use crate::coldstart::wait_until_serving;
use crate::{Args, free_port, write_fragment};

/// Prices used below, us-east-1, as published on the pages cited (read 2026-11).
pub const SFN_STANDARD_PER_TRANSITION: f64 = 0.025 / 1000.0;
pub const SFN_EXPRESS_PER_REQUEST: f64 = 1.00 / 1e6;
pub const SFN_EXPRESS_PER_GB_SECOND: f64 = 0.06 / 3600.0; // $0.06 per GB-hour (first 1,000 GB-hours)
pub const SFN_EXPRESS_BILLED_GB: f64 = 64.0 / 1024.0; // 64-MB chunks; ~50 MB + definition + payload
pub const DDB_PER_WRU: f64 = 0.625 / 1e6;
pub const DDB_PER_RRU: f64 = 0.125 / 1e6;

static NULL: Value = Value::Null;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default, Clone)]
struct Tally {
    /// operation → count
    calls: BTreeMap<String, f64>,
    rru: f64,
    wru: f64,
    transitions: f64,
    retries: f64,
    workflow_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, exchanges: &[Exchange], tables: &Tables) {
        for exchange in exchanges {
            *self.calls.entry(exchange.operation.clone()).or_default() += 1.0;
            let (r, w) = capacity(exchange, tables);
            self.rru += r;
            self.wru += w;
        }
    }

    fn scaled(&self, by: f64) -> Tally {
        let mut t = self.clone();
        t.calls.values_mut().for_each(|v| *v /= by);
        t.rru /= by;
        t.wru /= by;
        t.transitions /= by;
        t.retries /= by;
        t
    }
}

struct Tables {
    purchases: String,
}

pub async fn run(args: &Args) -> Result<()> {
    let moto = args.required("moto")?;
    let per_scenario: usize = args.number("purchases", 5)?;
    let bin_dir = PathBuf::from(args.value("bin-dir").unwrap_or("target/release"));
    let work = PathBuf::from(args.value("out").unwrap_or("target/bench")).join("cost");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let proxy = CountingProxy::start(moto, true).await?;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let tables = Tables {
        purchases: format!("cost-purchases-{suffix}"),
    };
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let catalog = work.join("catalog.json");
    std::fs::write(&catalog, serde_json::to_vec(&fixtures::bench_catalog()?)?)?;
    let log_path = work.join("server.log");
    let log = std::fs::File::create(&log_path)?;
    let _server = Server(
        Command::new(bin_dir.join("purchase-orchestrator"))
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", work.join("data"))
            .env("CATALOG_FILE", &catalog)
            .env("JWT_HS256_SECRET", fixtures::SECRET)
            .env("RUST_LOG", "info")
            .env("STORE", "dynamodb")
            .env("DYNAMODB_ENDPOINT", proxy.url())
            .env("PURCHASES_TABLE", &tables.purchases)
            .env("PRODUCTS_TABLE", format!("cost-products-{suffix}"))
            .env("IDEMPOTENCY_TABLE", format!("cost-idempotency-{suffix}"))
            .env("RULE_SETS_TABLE", format!("cost-rule-sets-{suffix}"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("purchase-orchestrator: {e}"))?,
    );
    let token = fixtures::user_token()?;
    wait_until_serving(&addr, &token).await?;
    proxy.take(); // table creation and catalog seeding

    let scenarios = [
        ("happy path (COMPLETED)", "tok_visa"),
        ("payment declined (FAILED, compensated)", "tok_decline"),
    ];
    let mut results = Vec::new();
    for (name, card) in scenarios {
        let mut create = Tally::default();
        let mut workflow = Tally::default();
        let mut get = Tally::default();
        for _ in 0..per_scenario {
            let mut body = fixtures::create_body();
            body["paymentDetails"]["transactionId"] = json!(card);
            proxy.take();
            let id = create_with_key(&addr, &token, &body).await?;
            create.add(&proxy.take(), &tables);
            let (transitions, retries, ms) = wait_for_execution(&log_path, &id).await?;
            workflow.add(&proxy.take(), &tables);
            workflow.transitions += transitions;
            workflow.retries += retries;
            workflow.workflow_ms.push(ms);
            let (status, _) = http_client::call(
                &addr,
                http::Method::GET,
                &format!("/purchase-orchestrator/purchases/{id}"),
                &token,
                None,
            )
            .await?;
            if status != 200 {
                return Err(format!("GET {id} answered {status}").into());
            }
            get.add(&proxy.take(), &tables);
        }
        let n = per_scenario as f64;
        results.push((name, create.scaled(n), workflow.scaled(n), get.scaled(n)));
    }
    let fragment = render(&results, per_scenario);
    write_fragment(args, "cost.md", &fragment)?;
    Ok(())
}

async fn create_with_key(addr: &str, token: &str, body: &Value) -> Result<String> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    headers.insert(http::header::CONTENT_TYPE, "application/json".parse()?);
    headers.insert("idempotency-key", uuid::Uuid::now_v7().to_string().parse()?);
    let response = http_client::send(
        addr,
        http::Method::POST,
        "/purchase-orchestrator/purchases",
        &headers,
        bytes::Bytes::from(body.to_string()),
    )
    .await?;
    let value: Value = serde_json::from_slice(response.body())?;
    value["purchaseId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("create answered {} {value}", response.status()).into())
}

/// Waits for the runner's `execution ended` log line for `id`; returns the
/// states entered, the retries and the execution's duration from the log's
/// timestamps.
async fn wait_for_execution(log: &Path, id: &str) -> Result<(f64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log)?;
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(id)).collect();
        if lines.iter().any(|l| l.contains("execution ended")) {
            let entered: Vec<&&str> = lines
                .iter()
                .filter(|l| l.contains("state entered"))
                .collect();
            let retries = lines.iter().filter(|l| l.contains("retrying")).count();
            let time = |line: &str| {
                line.split_whitespace()
                    .next()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            let start = entered.first().and_then(|l| time(l));
            let end = lines
                .iter()
                .rev()
                .find(|l| l.contains("execution ended"))
                .and_then(|l| time(l));
            let ms = match (start, end) {
                (Some(s), Some(e)) => (e - s).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                _ => f64::NAN,
            };
            return Ok((entered.len() as f64, retries as f64, ms));
        }
        if Instant::now() > deadline {
            return Err(format!("execution {id} did not end within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// DynamoDB's item size rule, applied to DynamoDB JSON: attribute name
/// lengths plus value sizes (strings by UTF-8 length, numbers ~1 byte per
/// two digits + 1, maps and lists 3 bytes + 1 per element).
fn item_size(item: &Value) -> f64 {
    item.as_object()
        .map(|map| {
            map.iter()
                .map(|(name, value)| name.len() as f64 + value_size(value))
                .sum()
        })
        .unwrap_or(0.0)
}

fn value_size(value: &Value) -> f64 {
    let Some((kind, inner)) = value.as_object().and_then(|m| m.iter().next()) else {
        return 0.0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len) as f64,
        "N" => (inner.as_str().map_or(1, str::len) as f64 / 2.0).ceil() + 1.0,
        "B" => inner.as_str().map_or(0, str::len) as f64 * 0.75,
        "BOOL" | "NULL" => 1.0,
        "SS" | "NS" | "BS" => inner
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().map_or(0, str::len) as f64)
                    .sum()
            })
            .unwrap_or(0.0),
        "M" => {
            3.0 + inner.as_object().map_or(0.0, |m| {
                m.iter()
                    .map(|(k, v)| k.len() as f64 + value_size(v) + 1.0)
                    .sum()
            })
        }
        "L" => {
            3.0 + inner
                .as_array()
                .map_or(0.0, |a| a.iter().map(|v| value_size(v) + 1.0).sum())
        }
        _ => 0.0,
    }
}

fn read_units(bytes: f64, consistent: bool) -> f64 {
    let units = (bytes / 4096.0).ceil().max(1.0);
    if consistent { units } else { units / 2.0 }
}

fn write_units(bytes: f64) -> f64 {
    (bytes / 1024.0).ceil().max(1.0)
}

/// Estimated (read, write) request units of one exchange, including the
/// purchases table's global secondary indexes (byCustomer projects ALL, so
/// every purchase write is also written there; allPurchases is KEYS_ONLY and
/// is written only when an item appears).
fn capacity(exchange: &Exchange, tables: &Tables) -> (f64, f64) {
    let parse = |b: &Option<bytes::Bytes>| {
        b.as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .unwrap_or(Value::Null)
    };
    let request = parse(&exchange.request);
    let response = parse(&exchange.response);
    let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
    let on_purchases = request["TableName"].as_str() == Some(tables.purchases.as_str());
    let op = exchange.operation.as_str();
    match op {
        "DynamoDB.GetItem" => (read_units(item_size(&response["Item"]), consistent), 0.0),
        "DynamoDB.BatchGetItem" => {
            let mut units = 0.0;
            if let Some(tables) = response["Responses"].as_object() {
                for (table, items) in tables {
                    let consistent = request["RequestItems"][table]["ConsistentRead"]
                        .as_bool()
                        .unwrap_or(false);
                    for item in items.as_array().into_iter().flatten() {
                        units += read_units(item_size(item), consistent);
                    }
                }
            }
            (units, 0.0)
        }
        "DynamoDB.Query" | "DynamoDB.Scan" => {
            let bytes: f64 = response["Items"]
                .as_array()
                .map(|items| items.iter().map(item_size).sum())
                .unwrap_or(0.0);
            (read_units(bytes, consistent), 0.0)
        }
        "DynamoDB.PutItem" => {
            let size = item_size(&request["Item"]);
            let mut units = write_units(size);
            if on_purchases {
                units += write_units(size); // byCustomer (ALL)
                let creating = request["ConditionExpression"]
                    .as_str()
                    .is_some_and(|c| c.contains("attribute_not_exists"));
                if creating {
                    units += 1.0; // allPurchases (KEYS_ONLY)
                }
            }
            (0.0, units)
        }
        "DynamoDB.UpdateItem" | "DynamoDB.DeleteItem" => {
            let size = item_size(&request["Key"])
                + request["ExpressionAttributeValues"]
                    .as_object()
                    .map_or(0.0, |m| m.values().map(value_size).sum());
            (0.0, write_units(size))
        }
        "DynamoDB.TransactWriteItems" => {
            let mut units = 0.0;
            for item in request["TransactItems"].as_array().into_iter().flatten() {
                let size = if let Some(put) = item.get("Put") {
                    item_size(&put["Item"])
                } else {
                    let part = item
                        .get("Update")
                        .or_else(|| item.get("Delete"))
                        .or_else(|| item.get("ConditionCheck"))
                        .unwrap_or(&NULL);
                    item_size(&part["Key"])
                        + part["ExpressionAttributeValues"]
                            .as_object()
                            .map_or(0.0, |m| m.values().map(value_size).sum())
                };
                units += 2.0 * write_units(size);
            }
            (0.0, units)
        }
        "DynamoDB.TransactGetItems" => {
            let units: f64 = response["Responses"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| 2.0 * read_units(item_size(&i["Item"]), true))
                        .sum()
                })
                .unwrap_or(0.0);
            (units, 0.0)
        }
        _ => (0.0, 0.0),
    }
}

fn calls_cell(tally: &Tally) -> String {
    if tally.calls.is_empty() {
        return "–".into();
    }
    tally
        .calls
        .iter()
        .map(|(op, n)| format!("{} {}", fmt_count(*n), op.trim_start_matches("DynamoDB.")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_count(n: f64) -> String {
    if (n - n.round()).abs() < 1e-9 {
        format!("{}", n.round())
    } else {
        format!("{n:.1}")
    }
}

fn render(results: &[(&str, Tally, Tally, Tally)], per_scenario: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Counted on the local server with `STORE=dynamodb` (moto behind the counting proxy), \
         {per_scenario} purchases per scenario, averages per purchase. The create request sends an \
         `Idempotency-Key` (claim + complete writes). Request units are estimated from the item \
         sizes in the requests/responses with DynamoDB's rules (reads: 4 KB units, strongly \
         consistent = 1, eventually = ½; writes: 1 KB units; transactions ×2; GSI writes added: \
         `byCustomer` projects ALL, so every purchase write is written twice). State transitions \
         are the runner's `state entered` lines (Step Functions counts one per state executed, \
         retries included).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | phase | DynamoDB requests | RRU | WRU | state transitions |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (name, create, workflow, get) in results {
        for (phase, tally) in [
            ("POST /purchases", create),
            ("workflow", workflow),
            ("GET (each)", get),
        ] {
            let transitions = if phase == "workflow" {
                format!(
                    "{} (retries {})",
                    fmt_count(tally.transitions),
                    fmt_count(tally.retries)
                )
            } else {
                "–".into()
            };
            let _ = writeln!(
                out,
                "| {name} | {phase} | {} | {:.1} | {:.1} | {transitions} |",
                calls_cell(tally),
                tally.rru,
                tally.wru,
            );
        }
    }
    let _ = writeln!(
        out,
        "\nCost per **million purchases** (one create, the workflow, one GET), us-east-1 list prices. \
         Express duration is billed per 100 ms in 64-MB chunks; locally the execution took the time \
         shown (simulators, loopback moto), on AWS each Lambda task adds its invoke latency, so the \
         1 s column is the conservative figure.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | transitions | SFN Standard | SFN Express (local duration) | SFN Express (1 s) | DynamoDB on-demand | total Standard | total Express (1 s) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (name, create, workflow, get) in results {
        let million = 1e6;
        let standard = workflow.transitions * SFN_STANDARD_PER_TRANSITION * million;
        let local_ms = bench::stats::median(&workflow.workflow_ms);
        let billed = |ms: f64| (ms / 100.0).ceil().max(1.0) * 0.1;
        let express = |ms: f64| {
            (SFN_EXPRESS_PER_REQUEST
                + billed(ms) * SFN_EXPRESS_BILLED_GB * SFN_EXPRESS_PER_GB_SECOND)
                * million
        };
        let rru = create.rru + workflow.rru + get.rru;
        let wru = create.wru + workflow.wru + get.wru;
        let dynamo = (rru * DDB_PER_RRU + wru * DDB_PER_WRU) * million;
        let _ = writeln!(
            out,
            "| {name} | {} | ${standard:.2} | ${:.2} ({local_ms:.0} ms) | ${:.2} | ${dynamo:.2} ({rru:.1} RRU + {wru:.1} WRU) | ${:.2} | ${:.2} |",
            fmt_count(workflow.transitions),
            express(local_ms),
            express(1000.0),
            standard + dynamo,
            express(1000.0) + dynamo,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_follow_dynamodb_rules() {
        let item = json!({"id": {"S": "abc"}, "n": {"N": "1234"}, "m": {"M": {"k": {"S": "v"}}}});
        // id: 2 + 3; n: 1 + 3; m: 1 + (3 + 1 + 1 + 1)
        assert_eq!(item_size(&item), 5.0 + 4.0 + 7.0);
        assert_eq!(read_units(5000.0, true), 2.0);
        assert_eq!(read_units(10.0, false), 0.5);
        assert_eq!(write_units(1025.0), 2.0);
    }
}
