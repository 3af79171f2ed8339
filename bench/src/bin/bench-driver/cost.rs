//! Cost model: every DynamoDB request of a purchase's life, with its read and
//! write units counted the way DynamoDB bills them (global secondary indexes
//! per their projection in the tree's `template.yaml`, transactions ×2, the
//! larger of the old and new item), state transitions, Lambda invocations
//! and API Gateway requests, priced per million purchases, all in.
//!
//! Each tree runs its own release local server with `STORE=dynamodb` on
//! moto behind the counting proxy; with `WORKFLOW_TYPE=EXPRESS` as well when
//! the tree's template offers the Express option.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bench::proxy::{CountingProxy, Exchange, ItemImage, Recording};
use bench::stats::median;
use bench::template::{Projection, Table};
use bench::{Result, fixtures, http_client};
use serde_json::{Value, json};

use crate::trees::{Deployed, LocalServer, Tree};
use crate::{Args, write_fragment};

/// us-east-1 list prices, from the pages cited in the report (read 2026-11).
pub mod price {
    /// Step Functions Standard, per state transition.
    pub const SFN_STANDARD_TRANSITION: f64 = 0.025 / 1000.0;
    /// Step Functions Express, per execution started.
    pub const SFN_EXPRESS_REQUEST: f64 = 1.00 / 1e6;
    /// Express duration: $0.06 per GB-hour (first 1,000 GB-hours).
    pub const SFN_EXPRESS_GB_SECOND: f64 = 0.06 / 3600.0;
    /// Express memory is billed in 64-MB chunks (≈ 50 MB + definition + payload: one chunk).
    pub const SFN_EXPRESS_GB: f64 = 64.0 / 1024.0;
    /// Express duration is billed in 100-ms steps; the modelled duration of
    /// one purchase's execution on AWS (five Lambda tasks and their invokes).
    pub const SFN_EXPRESS_BILLED_SECONDS: f64 = 1.0;
    /// DynamoDB on-demand, Standard table class.
    pub const DDB_WRU: f64 = 0.625 / 1e6;
    pub const DDB_RRU: f64 = 0.125 / 1e6;
    /// Lambda, arm64: requests and duration (first 7.5 billion GB-s).
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    /// API Gateway REST API, first 333 million requests a month.
    pub const API_GATEWAY_REST_REQUEST: f64 = 3.50 / 1e6;
}

/// Request units, by where they were spent.
#[derive(Default, Clone, Debug)]
struct Units {
    rru: f64,
    /// Table writes (transactions counted twice).
    wru_table: f64,
    /// Index name → its writes.
    wru_index: BTreeMap<String, f64>,
}

impl Units {
    fn wru(&self) -> f64 {
        self.wru_table + self.wru_index.values().sum::<f64>()
    }

    fn add(&mut self, other: &Units) {
        self.rru += other.rru;
        self.wru_table += other.wru_table;
        for (index, units) in &other.wru_index {
            *self.wru_index.entry(index.clone()).or_default() += units;
        }
    }
}

#[derive(Default, Clone, Debug)]
struct Tally {
    calls: BTreeMap<String, f64>,
    units: Units,
    transitions: f64,
    retries: f64,
    /// Function binary → invocations (Lambda task states entered, retries included).
    lambda: BTreeMap<String, f64>,
    workflow_ms: Vec<f64>,
}

impl Tally {
    fn add_exchanges(&mut self, exchanges: &[Exchange], model: &TableModel) {
        for exchange in exchanges {
            *self.calls.entry(exchange.operation.clone()).or_default() += 1.0;
            self.units.add(&model.capacity(exchange));
        }
    }

    fn per(&self, n: f64) -> Tally {
        let mut t = self.clone();
        t.calls.values_mut().for_each(|v| *v /= n);
        t.lambda.values_mut().for_each(|v| *v /= n);
        t.units.rru /= n;
        t.units.wru_table /= n;
        t.units.wru_index.values_mut().for_each(|v| *v /= n);
        t.transitions /= n;
        t.retries /= n;
        t
    }
}

/// Tables of one stack by physical name, as the template defines them.
struct TableModel {
    tables: HashMap<String, Table>,
}

impl TableModel {
    fn new(deployed: &Deployed<'_>) -> Result<TableModel> {
        let mut tables = HashMap::new();
        for table in deployed.tree.template.tables() {
            let name = deployed
                .tree
                .template
                .physical_name(&deployed.stack, &table.logical_id)?;
            tables.insert(name, table);
        }
        Ok(TableModel { tables })
    }

    fn keys(&self) -> HashMap<String, Vec<String>> {
        self.tables
            .iter()
            .map(|(name, t)| (name.clone(), t.key.clone()))
            .collect()
    }

    /// What one request cost in request units.
    fn capacity(&self, exchange: &Exchange) -> Units {
        let null = Value::Null;
        let request = exchange.request.as_ref().unwrap_or(&null);
        let response = exchange.response.as_ref().unwrap_or(&null);
        let mut units = Units::default();
        let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
        match exchange.operation.as_str() {
            "DynamoDB.GetItem" => {
                units.rru = read_units(item_size(&response["Item"]), consistent);
            }
            "DynamoDB.BatchGetItem" => {
                for (table, items) in response["Responses"].as_object().into_iter().flatten() {
                    let consistent = request["RequestItems"][table]["ConsistentRead"]
                        .as_bool()
                        .unwrap_or(false);
                    for item in items.as_array().into_iter().flatten() {
                        units.rru += read_units(item_size(item), consistent);
                    }
                }
            }
            "DynamoDB.Query" | "DynamoDB.Scan" => {
                let bytes: f64 = response["Items"]
                    .as_array()
                    .map(|items| items.iter().map(item_size).sum())
                    .unwrap_or(0.0);
                units.rru = read_units(bytes, consistent);
            }
            "DynamoDB.TransactGetItems" => {
                for item in response["Responses"].as_array().into_iter().flatten() {
                    units.rru += 2.0 * read_units(item_size(&item["Item"]), true);
                }
            }
            "DynamoDB.PutItem"
            | "DynamoDB.UpdateItem"
            | "DynamoDB.DeleteItem"
            | "DynamoDB.BatchWriteItem" => {
                for image in &exchange.images {
                    self.write(image, 1.0, &mut units);
                }
            }
            "DynamoDB.TransactWriteItems" => {
                for image in &exchange.images {
                    self.write(image, 2.0, &mut units);
                }
            }
            _ => {}
        }
        units
    }

    /// One item written: the table by the larger image, times `factor`
    /// (2 in a transaction); each index by what changed in its entry.
    fn write(&self, image: &ItemImage, factor: f64, units: &mut Units) {
        let size = |item: &Option<Value>| item.as_ref().map_or(0.0, item_size);
        units.wru_table += factor * write_units(size(&image.before).max(size(&image.after)));
        let Some(table) = self.tables.get(&image.table) else {
            return;
        };
        for index in &table.indexes {
            let entry = |item: &Option<Value>| {
                item.as_ref()
                    .and_then(|item| index_entry(table, index, item))
            };
            let (old, new) = (entry(&image.before), entry(&image.after));
            let key = |e: &Value| index.key.iter().map(|k| e[k].clone()).collect::<Vec<_>>();
            let writes = match (&old, &new) {
                (None, None) => 0.0,
                (None, Some(n)) => write_units(item_size(n)),
                (Some(o), None) => write_units(item_size(o)),
                (Some(o), Some(n)) if key(o) != key(n) => {
                    write_units(item_size(o)) + write_units(item_size(n))
                }
                (Some(o), Some(n)) if o != n => write_units(item_size(o).max(item_size(n))),
                _ => 0.0,
            };
            if writes > 0.0 {
                *units.wru_index.entry(index.name.clone()).or_default() += writes;
            }
        }
    }
}

/// The item as the index stores it, if the item has the index's key.
fn index_entry(table: &Table, index: &bench::template::Index, item: &Value) -> Option<Value> {
    if index.key.iter().any(|k| item.get(k).is_none()) {
        return None;
    }
    let keep = |name: &str| -> bool {
        table.key.iter().any(|k| k == name)
            || index.key.iter().any(|k| k == name)
            || match &index.projection {
                Projection::All => true,
                Projection::KeysOnly => false,
                Projection::Include(names) => names.iter().any(|n| n == name),
            }
    };
    let map = item.as_object()?;
    Some(Value::Object(
        map.iter()
            .filter(|(name, _)| keep(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
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

/// One scenario's averages per purchase.
struct Scenario {
    name: &'static str,
    create: Tally,
    workflow: Tally,
    get: Tally,
}

/// One tree in one workflow mode.
struct Run {
    tree: String,
    mode: &'static str,
    /// Express runs for real, or modelled from the Standard run's counts.
    measured: bool,
    scenarios: Vec<Scenario>,
    /// Function binary → MemorySize (template).
    memory: BTreeMap<String, u64>,
}

pub async fn run(args: &Args) -> Result<()> {
    let moto = args.required("moto")?;
    let per_scenario: usize = args.number("purchases", 5)?;
    let work = args.fresh_work_dir("cost")?;
    let trees = args.trees()?;
    let durations = lambda_durations(&args.out_dir().join("coldstart.json"));

    let mut runs = Vec::new();
    for tree in &trees {
        let mut modes = vec!["STANDARD"];
        if tree.template.supports_express() {
            modes.push("EXPRESS");
        }
        for mode in modes {
            let scenarios = measure(tree, moto, mode, per_scenario, &work).await?;
            runs.push(Run {
                tree: tree.label.clone(),
                mode,
                measured: true,
                scenarios,
                memory: memory_of(tree),
            });
        }
        if !tree.template.supports_express() {
            // Express modelled from the Standard run: the same requests,
            // billed per execution and duration instead of per transition.
            let standard = runs.last().ok_or("no standard run")?;
            let modelled = Run {
                tree: standard.tree.clone(),
                mode: "EXPRESS",
                measured: false,
                scenarios: standard
                    .scenarios
                    .iter()
                    .map(|s| Scenario {
                        name: s.name,
                        create: s.create.clone(),
                        workflow: s.workflow.clone(),
                        get: s.get.clone(),
                    })
                    .collect(),
                memory: standard.memory.clone(),
            };
            runs.push(modelled);
        }
    }
    let priced: Vec<Priced> = runs
        .iter()
        .flat_map(|run| {
            run.scenarios
                .iter()
                .map(|s| price_of(run, s, &durations))
                .collect::<Vec<_>>()
        })
        .collect();
    write_fragment(args, "cost.md", &render(&runs, &priced, per_scenario))?;
    let summary: serde_json::Map<String, Value> = trees
        .iter()
        .map(|tree| {
            let find = |mode: &str| {
                priced
                    .iter()
                    .find(|p| p.tree == tree.label && p.mode == mode && p.scenario == HAPPY)
            };
            let standard = find("STANDARD");
            let express = find("EXPRESS");
            (
                tree.label.clone(),
                json!({
                    "wru_create_and_workflow": standard.map(|p| p.wru_create_workflow),
                    "total_standard": standard.map(|p| p.total()),
                    "total_express": express.map(|p| p.total()),
                    "express_measured": express.map(|p| p.measured),
                    "sfn_and_dynamodb_standard": standard.map(|p| p.sfn + p.dynamodb),
                }),
            )
        })
        .collect();
    write_fragment(
        args,
        "cost.json",
        &serde_json::to_string_pretty(&Value::Object(summary))?,
    )?;
    Ok(())
}

const HAPPY: &str = "happy path (COMPLETED)";

fn memory_of(tree: &Tree) -> BTreeMap<String, u64> {
    tree.template
        .functions()
        .into_iter()
        .map(|f| (f.binary, f.memory_mb))
        .collect()
}

/// Median first-invocation time (first poll → response) per tree and
/// function, from this run's cold starts.
fn lambda_durations(path: &Path) -> HashMap<(String, String), f64> {
    let value: Value = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    value["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["label"] == t["name"])
        .filter_map(|t| {
            let samples: Vec<f64> = t["invocation_ms"]
                .as_array()?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            let ms = median(&samples);
            let key = (
                t["tree"].as_str()?.to_owned(),
                t["name"].as_str()?.to_owned(),
            );
            ms.is_finite().then_some((key, ms))
        })
        .collect()
}

async fn measure(
    tree: &Tree,
    moto: &str,
    mode: &'static str,
    per_scenario: usize,
    work: &Path,
) -> Result<Vec<Scenario>> {
    let dir = work.join(format!("{}-{}", tree.label, mode.to_lowercase()));
    let stack = Deployed {
        tree,
        stack: tree.stack(),
        moto: moto.to_owned(),
        work: dir.clone(),
    };
    std::fs::create_dir_all(&dir)?;
    let model = TableModel::new(&stack)?;
    let proxy = CountingProxy::start(moto, Recording::Items(model.keys())).await?;
    let mut env = stack.store_env(&proxy.url())?;
    env.push(("WORKFLOW_TYPE".into(), mode.into()));
    // Only the purchases' own requests are counted: no reconciler passes.
    env.push(("RECONCILE_EVERY_SECONDS".into(), "0".into()));
    let server = LocalServer::start(tree, &dir, &env).await?;
    let token = fixtures::user_token()?;
    proxy.take(); // table creation and catalog seeding

    let machine = definition_functions(&stack)?;
    let mut scenarios = Vec::new();
    for (name, card) in [
        (HAPPY, "tok_visa"),
        ("payment declined (FAILED, compensated)", "tok_decline"),
    ] {
        let mut create = Tally::default();
        let mut workflow = Tally::default();
        let mut get = Tally::default();
        for _ in 0..per_scenario {
            let mut body = fixtures::create_body();
            body["paymentDetails"]["transactionId"] = json!(card);
            proxy.take();
            let id = create_with_key(&server.addr, &token, &body).await?;
            create.add_exchanges(&proxy.take(), &model);
            let execution = wait_for_execution(&server.log, &id).await?;
            workflow.add_exchanges(&proxy.take(), &model);
            workflow.transitions += execution.states.len() as f64;
            workflow.retries += execution.retries.len() as f64;
            workflow.workflow_ms.push(execution.ms);
            for state in execution.states.iter().chain(&execution.retries) {
                if let Some(function) = machine.get(state) {
                    *workflow.lambda.entry(function.clone()).or_default() += 1.0;
                }
            }
            let (status, _) = http_client::call(
                &server.addr,
                http::Method::GET,
                &format!("/purchase-orchestrator/purchases/{id}"),
                &token,
                None,
            )
            .await?;
            if status != 200 {
                return Err(format!("GET {id} answered {status}").into());
            }
            get.add_exchanges(&proxy.take(), &model);
        }
        let n = per_scenario as f64;
        scenarios.push(Scenario {
            name,
            create: create.per(n),
            workflow: workflow.per(n),
            get: get.per(n),
        });
    }
    drop(server);
    Ok(scenarios)
}

/// State name → the function its Task invokes, for every state machine of
/// the tree (Lambda resources named by `${...}` substitutions).
fn definition_functions(stack: &Deployed<'_>) -> Result<HashMap<String, String>> {
    let template = &stack.tree.template;
    let mut out = HashMap::new();
    for machine in template.state_machines() {
        let subs: HashMap<String, String> = template
            .substitutions(&stack.stack, &machine.logical_id)?
            .into_iter()
            .collect();
        let path = stack.tree.root.join(&machine.definition_uri);
        let definition: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        )?;
        collect_tasks(&definition["States"], &subs, &mut out);
    }
    Ok(out)
}

fn collect_tasks(
    states: &Value,
    subs: &HashMap<String, String>,
    out: &mut HashMap<String, String>,
) {
    for (name, state) in states.as_object().into_iter().flatten() {
        let resource = state["Resource"].as_str().unwrap_or_default();
        let target = if resource.starts_with("arn:aws:states:::lambda:invoke") {
            state["Parameters"]["FunctionName"]
                .as_str()
                .unwrap_or_default()
        } else {
            resource
        };
        let resolved = target
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .and_then(|key| subs.get(key))
            .map(String::as_str)
            .unwrap_or(target);
        if let Some(function) = resolved.split(":function:").nth(1) {
            out.insert(
                name.clone(),
                function.split(':').next().unwrap_or(function).to_owned(),
            );
        }
        // Parallel and Map states nest their own states.
        for branch in state["Branches"].as_array().into_iter().flatten() {
            collect_tasks(&branch["States"], subs, out);
        }
        let iterator = state.get("ItemProcessor").or_else(|| state.get("Iterator"));
        if let Some(iterator) = iterator {
            collect_tasks(&iterator["States"], subs, out);
        }
    }
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

/// What the runner's log says about one purchase's executions.
struct Execution {
    /// States entered, in order (one state transition each).
    states: Vec<String>,
    /// States of retried tasks (one more invocation each).
    retries: Vec<String>,
    ms: f64,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"'))
}

/// Waits for the runner's `execution ended` line of `id`'s (last) execution.
async fn wait_for_execution(log: &Path, id: &str) -> Result<Execution> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled = false;
    loop {
        let text = std::fs::read_to_string(log)?;
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(id)).collect();
        if lines.iter().any(|l| l.contains("execution ended")) {
            if !settled {
                // A run that hands over to another (a review) logs that run
                // right after; give it a moment, then read again.
                settled = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let states = lines
                .iter()
                .filter(|l| l.contains("state entered"))
                .filter_map(|l| field(l, "state").map(str::to_owned))
                .collect();
            let retries = lines
                .iter()
                .filter(|l| l.contains("retrying"))
                .filter_map(|l| field(l, "state").map(str::to_owned))
                .collect();
            let time = |line: &str| {
                line.split_whitespace()
                    .next()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            let start = lines
                .iter()
                .find(|l| l.contains("state entered"))
                .and_then(|l| time(l));
            let end = lines
                .iter()
                .rev()
                .find(|l| l.contains("execution ended"))
                .and_then(|l| time(l));
            let ms = match (start, end) {
                (Some(s), Some(e)) => (e - s).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                _ => f64::NAN,
            };
            return Ok(Execution {
                states,
                retries,
                ms,
            });
        }
        if Instant::now() > deadline {
            return Err(format!("execution {id} did not end within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scenario priced per million purchases.
struct Priced {
    tree: String,
    mode: &'static str,
    measured: bool,
    scenario: &'static str,
    sfn: f64,
    dynamodb: f64,
    lambda: f64,
    api_gateway: f64,
    rru: f64,
    wru: f64,
    wru_create_workflow: f64,
    invocations: f64,
    /// Functions whose duration this run did not measure (priced at 100 ms).
    unmeasured: Vec<String>,
}

impl Priced {
    fn total(&self) -> f64 {
        self.sfn + self.dynamodb + self.lambda + self.api_gateway
    }
}

/// The Lambda duration assumed when cold starts did not measure a function.
const UNMEASURED_MS: f64 = 100.0;

fn price_of(run: &Run, s: &Scenario, durations: &HashMap<(String, String), f64>) -> Priced {
    let million = 1e6;
    let sfn = match run.mode {
        "EXPRESS" => {
            let billed = (price::SFN_EXPRESS_BILLED_SECONDS * 10.0).ceil() / 10.0;
            price::SFN_EXPRESS_REQUEST
                + billed * price::SFN_EXPRESS_GB * price::SFN_EXPRESS_GB_SECOND
        }
        _ => s.workflow.transitions * price::SFN_STANDARD_TRANSITION,
    } * million;
    let mut units = s.create.units.clone();
    units.add(&s.workflow.units);
    units.add(&s.get.units);
    let dynamodb = (units.rru * price::DDB_RRU + units.wru() * price::DDB_WRU) * million;
    // The API's two functions once each, and the workflow's Lambda tasks.
    let mut invocations: BTreeMap<String, f64> = s.workflow.lambda.clone();
    *invocations.entry("create-purchase".into()).or_default() += 1.0;
    *invocations.entry("get-purchase".into()).or_default() += 1.0;
    let mut lambda = 0.0;
    let mut unmeasured = Vec::new();
    for (function, count) in &invocations {
        let ms = match durations.get(&(run.tree.clone(), function.clone())) {
            Some(ms) => ms.ceil(),
            None => {
                unmeasured.push(function.clone());
                UNMEASURED_MS
            }
        };
        let gb = *run.memory.get(function).unwrap_or(&128) as f64 / 1024.0;
        lambda += count * (price::LAMBDA_REQUEST + gb * ms / 1000.0 * price::LAMBDA_ARM_GB_SECOND);
    }
    Priced {
        tree: run.tree.clone(),
        mode: run.mode,
        measured: run.measured,
        scenario: s.name,
        sfn,
        dynamodb,
        lambda: lambda * million,
        api_gateway: 2.0 * price::API_GATEWAY_REST_REQUEST * million,
        rru: units.rru,
        wru: units.wru(),
        wru_create_workflow: s.create.units.wru() + s.workflow.units.wru(),
        invocations: invocations.values().sum(),
        unmeasured,
    }
}

fn fmt_count(n: f64) -> String {
    if (n - n.round()).abs() < 1e-9 {
        format!("{}", n.round())
    } else {
        format!("{n:.1}")
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

fn wru_cell(units: &Units) -> String {
    let mut parts = vec![format!("table {}", fmt_count(units.wru_table))];
    parts.extend(
        units
            .wru_index
            .iter()
            .map(|(index, n)| format!("`{index}` {}", fmt_count(*n))),
    );
    format!("**{}** ({})", fmt_count(units.wru()), parts.join(", "))
}

fn render(runs: &[Run], priced: &[Priced], per_scenario: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Counted on each tree's release local server with `STORE=dynamodb` (moto behind the \
         counting proxy, reconciler off), {per_scenario} purchases per scenario, averages per \
         purchase; the create sends an `Idempotency-Key`. *Express (measured)*: the server ran with \
         `WORKFLOW_TYPE=EXPRESS`; *Express (modelled)*: the tree has no Express option, so the \
         Standard run's requests are priced as Express would bill them.\n"
    );
    let _ = writeln!(
        out,
        "| tree | workflow | scenario | phase | DynamoDB requests | RRU | WRU (table, per index) | state transitions | Lambda invocations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for run in runs.iter().filter(|r| r.measured) {
        for s in &run.scenarios {
            for (phase, tally) in [
                ("POST /purchases", &s.create),
                ("workflow", &s.workflow),
                ("GET (one)", &s.get),
            ] {
                let (transitions, lambdas) = if phase == "workflow" {
                    (
                        format!(
                            "{} (retries {})",
                            fmt_count(tally.transitions),
                            fmt_count(tally.retries)
                        ),
                        tally
                            .lambda
                            .iter()
                            .map(|(f, n)| format!("{} {f}", fmt_count(*n)))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                } else {
                    ("–".into(), "1".into())
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {phase} | {} | {:.1} | {} | {transitions} | {lambdas} |",
                    run.tree,
                    run.mode,
                    s.name,
                    calls_cell(tally),
                    tally.units.rru,
                    wru_cell(&tally.units),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nCost per **million purchases** (one create with `Idempotency-Key`, the workflow, one \
         GET), us-east-1 list prices:\n"
    );
    let _ = writeln!(
        out,
        "| tree | workflow | scenario | Step Functions | DynamoDB (RRU + WRU) | Lambda (invocations) | API Gateway | **total** |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for p in priced {
        let mode = match (p.mode, p.measured) {
            ("EXPRESS", true) => "Express (measured)",
            ("EXPRESS", false) => "Express (modelled)",
            _ => "Standard",
        };
        let _ = writeln!(
            out,
            "| {} | {mode} | {} | ${:.2} | ${:.2} ({:.1} + {:.1}) | ${:.2} ({}) | ${:.2} | **${:.2}** |",
            p.tree,
            p.scenario,
            p.sfn,
            p.dynamodb,
            p.rru,
            p.wru,
            p.lambda,
            fmt_count(p.invocations),
            p.api_gateway,
            p.total()
        );
    }
    let unmeasured: Vec<String> = priced
        .iter()
        .flat_map(|p| p.unmeasured.iter().map(move |f| format!("{} {f}", p.tree)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let _ = writeln!(
        out,
        "\n**How each line is counted.**\n\n\
         - *DynamoDB*: request units from the requests and the items they touched (the proxy \
           reads every written item before and after the write, uncounted): reads per 4 KB \
           (strongly consistent 1, eventually ½; transactions ×2), writes per 1 KB of the larger \
           of the old and new item, transactions ×2. Each global secondary index of the tree's \
           `template.yaml` costs what DynamoDB charges it: one write when an entry appears or \
           disappears, two when its key changes, one when a projected attribute changes, none \
           otherwise, sized by the entry's projection (`ALL`, `KEYS_ONLY`, `INCLUDE`). Index \
           writes caused by a transaction are counted once (index propagation is not part of the \
           transaction). `ConditionCheck` items of a transaction are not counted.\n\
         - *Step Functions*: Standard at $0.025 per 1,000 state transitions (the runner's \
           `state entered` lines, retries included); Express at $1.00 per million executions \
           plus $0.06 per GB-hour, billed in 64-MB chunks (one chunk) and 100-ms steps, for an \
           assumed {:.1} s per execution on AWS (five Lambda tasks and their invokes; locally, \
           in-process, the executions took {}).\n\
         - *Lambda* (arm64): $0.20 per million requests plus $0.0000133334 per GB-s, each \
           function at its `MemorySize` from `template.yaml`, for the duration of its first \
           invocation in this run's cold starts (first poll → response, median, rounded up to \
           the ms; DynamoDB there is moto on loopback, ≈ 2–3 ms a request, like DynamoDB in \
           region). Init time is not billed per invocation (cold starts are rare at volume).{}\n\
         - *API Gateway*: REST API, $3.50 per million requests (first 333 million a month): the \
           create and the GET.\n\
         - Not included: CloudWatch Logs and metrics, X-Ray, data transfer, the reconciler's \
           schedule, free tiers.",
        price::SFN_EXPRESS_BILLED_SECONDS,
        runs.iter()
            .filter(|r| r.measured)
            .flat_map(|r| r.scenarios.iter().map(move |s| format!(
                "{} {} {}: {:.0} ms",
                r.tree,
                r.mode.to_lowercase(),
                s.name.split(" (").next().unwrap_or(""),
                median(&s.workflow.workflow_ms)
            )))
            .collect::<Vec<_>>()
            .join(", "),
        if unmeasured.is_empty() {
            String::new()
        } else {
            format!(
                " Not measured in this run, priced at {UNMEASURED_MS:.0} ms: {}.",
                unmeasured.join(", ")
            )
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bench::template::Index;

    #[test]
    fn item_sizes_follow_dynamodb_rules() {
        let item = json!({"id": {"S": "abc"}, "n": {"N": "1234"}, "m": {"M": {"k": {"S": "v"}}}});
        // id: 2 + 3; n: 1 + 3; m: 1 + (3 + 1 + 1 + 1)
        assert_eq!(item_size(&item), 5.0 + 4.0 + 7.0);
        assert_eq!(read_units(5000.0, true), 2.0);
        assert_eq!(read_units(10.0, false), 0.5);
        assert_eq!(write_units(1025.0), 2.0);
    }

    fn model() -> TableModel {
        let table = Table {
            logical_id: "Purchases".into(),
            key: vec!["id".into()],
            indexes: vec![
                Index {
                    name: "all".into(),
                    key: vec!["customer".into(), "id".into()],
                    projection: Projection::All,
                },
                Index {
                    name: "keys".into(),
                    key: vec!["unfinished".into(), "id".into()],
                    projection: Projection::KeysOnly,
                },
            ],
        };
        TableModel {
            tables: [("t".to_owned(), table)].into(),
        }
    }

    fn write(before: Option<Value>, after: Option<Value>, factor: f64) -> Units {
        let mut units = Units::default();
        model().write(
            &ItemImage {
                table: "t".into(),
                before,
                after,
            },
            factor,
            &mut units,
        );
        units
    }

    #[test]
    fn a_new_item_writes_every_index_whose_key_it_has() {
        let item = json!({"id": {"S": "1"}, "customer": {"S": "c"}, "unfinished": {"S": "y"}});
        let units = write(None, Some(item), 1.0);
        assert_eq!(units.wru_table, 1.0);
        assert_eq!(units.wru_index["all"], 1.0);
        assert_eq!(units.wru_index["keys"], 1.0);
    }

    #[test]
    fn an_update_writes_an_index_only_when_its_entry_changes() {
        let before = json!({"id": {"S": "1"}, "customer": {"S": "c"}, "unfinished": {"S": "y"}, "status": {"S": "PENDING"}});
        let mut after = before.clone();
        after["status"] = json!({"S": "PAID"});
        let units = write(Some(before.clone()), Some(after.clone()), 2.0);
        // The table twice (a transaction); ALL sees the status; KEYS_ONLY does not.
        assert_eq!(units.wru_table, 2.0);
        assert_eq!(units.wru_index.get("all"), Some(&1.0));
        assert_eq!(units.wru_index.get("keys"), None);
        // Finalized: the sparse key disappears (one delete from that index).
        after.as_object_mut().unwrap().remove("unfinished");
        let units = write(Some(before.clone()), Some(after), 1.0);
        assert_eq!(units.wru_index.get("keys"), Some(&1.0));
        // A key change in an index: a delete and a put.
        let mut moved = before.clone();
        moved["customer"] = json!({"S": "d"});
        let units = write(Some(before), Some(moved), 1.0);
        assert_eq!(units.wru_index.get("all"), Some(&2.0));
    }

    #[test]
    fn a_write_is_billed_by_the_larger_of_the_old_and_new_item() {
        let big = json!({"id": {"S": "1"}, "blob": {"S": "x".repeat(3000)}});
        let small = json!({"id": {"S": "1"}});
        assert_eq!(write(Some(big), Some(small), 1.0).wru_table, 3.0);
    }

    #[test]
    fn tasks_are_mapped_to_their_functions() {
        let definition = json!({
            "A": {"Type": "Task", "Resource": "${AArn}"},
            "B": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                  "Parameters": {"FunctionName": "${BArn}"}},
            "C": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution"},
            "D": {"Type": "Succeed"}
        });
        let subs: HashMap<String, String> = [
            (
                "AArn".to_owned(),
                "arn:aws:lambda:us-east-1:1:function:reserve-stock".to_owned(),
            ),
            (
                "BArn".to_owned(),
                "arn:aws:lambda:us-east-1:1:function:await-review".to_owned(),
            ),
        ]
        .into();
        let mut out = HashMap::new();
        collect_tasks(&definition, &subs, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out["A"], "reserve-stock");
        assert_eq!(out["B"], "await-review");
    }

    #[test]
    fn log_fields_are_read_from_tracing_lines() {
        let line = "2026-12-06T04:40:00.123Z  INFO state entered execution=0197 state=ReserveStock";
        assert_eq!(field(line, "state"), Some("ReserveStock"));
        assert_eq!(field(line, "execution"), Some("0197"));
    }
}
