//! Cold start: exec → first poll of the Runtime API, and exec → first
//! response, for every function binary against hello-world binaries, runs
//! interleaved so machine load affects all of them alike.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::fixtures::{self, DynamoFixture, EVENTS_PURCHASE_ID};
use bench::proxy::CountingProxy;
use bench::runtime_api::{OutcomeKind, RuntimeApi};
use bench::stats::{median, p90};
use bench::{Result, http_client};
use bytes::Bytes;
use serde_json::{Value, json};
use shared::api::endpoint::Endpoint;
use shared::steps::Step;

use crate::{Args, fmt_ms, write_fragment};

pub const HELLO_HTTP: &str = "hello-lambda-http";
pub const HELLO_RUNTIME: &str = "hello-lambda-runtime";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Api(Endpoint),
    Step(Step),
    HelloHttp,
    HelloRuntime,
}

struct Target {
    name: String,
    binary: PathBuf,
    kind: Kind,
}

#[derive(Default)]
struct Samples {
    poll_ms: Vec<f64>,
    response_ms: Vec<f64>,
    backend_ms: Vec<f64>,
    backend_calls: Vec<f64>,
    own_ms: Vec<f64>,
    rss_kib: Vec<f64>,
    outcomes: Vec<String>,
    failures: Vec<String>,
}

pub async fn run(args: &Args) -> Result<()> {
    let moto = args.required("moto")?;
    let runs: usize = args.number("runs", 20)?;
    let bin_dir = PathBuf::from(args.value("bin-dir").unwrap_or("target/release"));
    let hello_dir = PathBuf::from(args.value("hello-dir").unwrap_or("target/release"));
    let events_dir = PathBuf::from(args.value("events").unwrap_or("events"));
    let logs = PathBuf::from(args.value("out").unwrap_or("target/bench")).join("coldstart-logs");
    std::fs::create_dir_all(&logs)?;

    // Profiling runs: one function, its binary replaced (e.g. by `probe`,
    // which keeps symbols) and started under a wrapper (valgrind, perf).
    let only = args.value("only").map(str::to_owned);
    let wrapper: Vec<String> = args
        .value("wrapper")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let timeout = Duration::from_secs(args.number("timeout", 30)?);
    let mut targets = discover(&bin_dir, &hello_dir)?;
    if let Some(only) = &only {
        targets.retain(|t| &t.name == only);
        if targets.is_empty() {
            return Err(format!("--only {only}: no such function").into());
        }
        if let Some(binary) = args.value("binary") {
            targets[0].binary = PathBuf::from(binary);
        }
    }
    for target in &targets {
        if !target.binary.exists() {
            return Err(format!("{} is missing: build it first", target.binary.display()).into());
        }
    }
    let proxy = CountingProxy::start(moto, false).await?;
    let runtime = RuntimeApi::start().await?;
    // Seeding goes straight to moto: only the functions' own requests are counted.
    let fixture = DynamoFixture::connect(moto).await?;
    let state_machine_arn = create_state_machine(moto).await?;
    let shared_purchase = fixtures::create_purchase(&fixture.app).await?;

    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for run in 0..runs {
        // Rotate the order so no binary always runs right after another.
        for offset in 0..targets.len() {
            let index = (run + offset) % targets.len();
            let target = &targets[index];
            let purchase_id = prepare(&fixture, target.kind, &shared_purchase).await?;
            let event = event_for(target, &events_dir, &purchase_id)?;
            let env = environment(target, &runtime, &proxy, &state_machine_arn);
            let log = logs.join(format!("{}.log", target.name));
            proxy.take();
            match invoke_once(target, &runtime, env, &log, event, &wrapper, timeout).await {
                Ok(seen) => {
                    let exchanges = proxy.take();
                    let backend: f64 = exchanges
                        .iter()
                        .map(|e| e.upstream.as_secs_f64() * 1000.0)
                        .sum::<f64>()
                        + 0.0; // an empty sum is -0.0
                    let s = &mut samples[index];
                    s.poll_ms.push(seen.poll_ms);
                    s.response_ms.push(seen.response_ms);
                    s.backend_ms.push(backend);
                    s.backend_calls.push(exchanges.len() as f64);
                    s.own_ms.push(seen.response_ms - backend);
                    s.rss_kib.push(seen.rss_kib);
                    s.outcomes.push(seen.outcome);
                }
                Err(error) => samples[index].failures.push(format!("run {run}: {error}")),
            }
        }
        eprintln!("coldstart: run {}/{runs} done", run + 1);
    }
    if only.is_some() {
        for (target, s) in targets.iter().zip(&samples) {
            eprintln!(
                "{}: first poll {} ms, first response {} ms, failures {:?}",
                target.name,
                fmt_ms(median(&s.poll_ms)),
                fmt_ms(median(&s.response_ms)),
                s.failures
            );
        }
        return Ok(());
    }
    let fragment = render(&targets, &samples, runs);
    write_fragment(args, "coldstart.md", &fragment)?;
    let json = summary_json(&targets, &samples);
    write_fragment(
        args,
        "coldstart.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

fn discover(bin_dir: &Path, hello_dir: &Path) -> Result<Vec<Target>> {
    let mut targets = vec![
        Target {
            name: HELLO_HTTP.into(),
            binary: hello_dir.join(HELLO_HTTP),
            kind: Kind::HelloHttp,
        },
        Target {
            name: HELLO_RUNTIME.into(),
            binary: hello_dir.join(HELLO_RUNTIME),
            kind: Kind::HelloRuntime,
        },
    ];
    let mut names: Vec<String> = std::fs::read_dir("functions")?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    for name in names {
        let kind = if let Some(endpoint) = Endpoint::ALL
            .into_iter()
            .find(|e| e.function_name() == name)
        {
            Kind::Api(endpoint)
        } else if let Some(step) = Step::from_function_name(&name) {
            Kind::Step(step)
        } else {
            eprintln!("coldstart: skipping functions/{name}: neither an endpoint nor a step");
            continue;
        };
        targets.push(Target {
            binary: bin_dir.join(&name),
            name,
            kind,
        });
    }
    Ok(targets)
}

/// Creates the workflow in moto so `StartExecution` succeeds, as on AWS.
async fn create_state_machine(moto: &str) -> Result<String> {
    let sdk = shared::lambda::config::aws_config().await?;
    let config = aws_sdk_sfn::config::Builder::from(&sdk)
        .endpoint_url(moto)
        .build();
    let client = aws_sdk_sfn::Client::from_conf(config);
    let mut definition = shared::ports::workflow::DEFINITION.to_owned();
    for step in Step::ALL {
        definition = definition.replace(
            &format!("${{{}}}", step.arn_placeholder()),
            &format!(
                "arn:aws:lambda:us-east-1:123456789012:function:{}",
                step.function_name()
            ),
        );
    }
    let name = format!("purchase-bench-{}", uuid::Uuid::now_v7().simple());
    let created = client
        .create_state_machine()
        .name(name)
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/bench-sfn")
        .send()
        .await
        .map_err(|e| format!("CreateStateMachine on moto: {e:?}"))?;
    Ok(created.state_machine_arn().to_owned())
}

/// Brings a fresh purchase to the state the function's real path needs,
/// in-process and untimed, so every run does the same work.
async fn prepare(fixture: &DynamoFixture, kind: Kind, shared: &str) -> Result<String> {
    use Step::*;
    let fresh = move || fixtures::create_purchase(&fixture.app);
    let with_steps = move |steps: &'static [Step]| async move {
        let id = fixtures::create_purchase(&fixture.app).await?;
        fixtures::run_steps(&fixture.steps, &id, steps).await?;
        Ok::<_, bench::Error>(id)
    };
    Ok(match kind {
        Kind::Api(Endpoint::UpdatePurchase | Endpoint::CancelPurchase | Endpoint::ApplyRules) => {
            fresh().await?
        }
        Kind::Api(Endpoint::ReviewPurchase) | Kind::Step(AwaitReview) => {
            let id = fresh().await?;
            fixtures::hold(&fixture.app, &id).await?;
            id
        }
        Kind::Api(Endpoint::CreateRuleSet) => {
            fixtures::remove_rule_set(&fixture.app).await?;
            shared.to_owned()
        }
        Kind::Api(Endpoint::GetRuleSet | Endpoint::UpdateRuleSet | Endpoint::DeleteRuleSet) => {
            fixtures::ensure_rule_set(&fixture.app).await?;
            shared.to_owned()
        }
        Kind::Step(EvaluateRules) => {
            fixtures::ensure_rule_set(&fixture.app).await?;
            fresh().await?
        }
        Kind::Step(ReserveStock) => fresh().await?,
        Kind::Step(CapturePayment | ReleaseStock) => with_steps(&[ReserveStock]).await?,
        Kind::Step(ProvisionProducts | RefundPayment) => {
            with_steps(&[ReserveStock, CapturePayment]).await?
        }
        Kind::Step(FinalizePurchase) => {
            with_steps(&[ReserveStock, CapturePayment, RefundPayment, ReleaseStock]).await?
        }
        // Reads (get, list) and anything added later: the shared purchase.
        _ => shared.to_owned(),
    })
}

/// The event from `events/<name>.json` (crafted if missing) with a real
/// token, purchase id and a fresh idempotency key.
fn event_for(target: &Target, events_dir: &Path, purchase_id: &str) -> Result<Bytes> {
    let (file, endpoint) = match target.kind {
        Kind::HelloHttp => ("get-purchase".to_owned(), Some(Endpoint::GetPurchase)),
        Kind::Api(endpoint) => (target.name.clone(), Some(endpoint)),
        Kind::HelloRuntime => ("reserve-stock".to_owned(), None),
        Kind::Step(_) => (target.name.clone(), None),
    };
    let path = events_dir.join(format!("{file}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text.replace(EVENTS_PURCHASE_ID, purchase_id),
        Err(_) => crafted_event(target.kind, purchase_id)?.to_string(),
    };
    let mut event: Value = serde_json::from_str(&text)?;
    if let Some(endpoint) = endpoint {
        let token = match endpoint {
            Endpoint::CreatePurchase
            | Endpoint::ListPurchases
            | Endpoint::GetPurchase
            | Endpoint::UpdatePurchase
            | Endpoint::CancelPurchase => fixtures::user_token()?,
            _ => fixtures::admin_token()?,
        };
        set_header(
            &mut event,
            "Authorization",
            &format!("Bearer {token}"),
            true,
        );
        let key = uuid::Uuid::now_v7().to_string();
        set_header(&mut event, "Idempotency-Key", &key, false);
        if let Some(context) = event.get_mut("requestContext") {
            context["requestId"] = json!(uuid::Uuid::now_v7().to_string());
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&event)?))
}

/// Sets a header in `headers` and `multiValueHeaders`, matching the name
/// case-insensitively; adds it only if `add`.
fn set_header(event: &mut Value, name: &str, value: &str, add: bool) {
    for (field, new) in [
        ("headers", json!(value)),
        ("multiValueHeaders", json!([value])),
    ] {
        let Some(map) = event.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        let existing = map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
        match existing {
            Some(key) => {
                map.insert(key, new);
            }
            None if add => {
                map.insert(name.to_owned(), new);
            }
            None => {}
        }
    }
}

/// A minimal API Gateway REST proxy event (or step input) when `events/`
/// does not have one.
fn crafted_event(kind: Kind, purchase_id: &str) -> Result<Value> {
    let endpoint = match kind {
        Kind::Api(endpoint) => endpoint,
        Kind::HelloHttp => Endpoint::GetPurchase,
        Kind::Step(Step::FinalizePurchase) => {
            return Ok(
                json!({"purchaseId": purchase_id, "outcome": {"status": "FAILED", "failureReason": "PROVISIONING_FAILED"}}),
            );
        }
        Kind::Step(Step::AwaitReview) => {
            return Ok(json!({"purchaseId": purchase_id, "taskToken": "bench-task-token"}));
        }
        Kind::Step(_) | Kind::HelloRuntime => return Ok(json!({ "purchaseId": purchase_id })),
    };
    let (method, template) = endpoint.route();
    let resource = format!("{}{template}", shared::api::request::BASE_PATH);
    let path = resource
        .replace("{purchaseId}", purchase_id)
        .replace("{ruleSetName}", shared::ports::store::DEFAULT_RULE_SET);
    let body = match endpoint {
        Endpoint::CreatePurchase => Some(fixtures::create_body()),
        Endpoint::UpdatePurchase => Some(fixtures::update_body()),
        Endpoint::ApplyRules => Some(fixtures::hold_rules_body()),
        Endpoint::ReviewPurchase => Some(fixtures::approve_body()),
        _ => None,
    };
    let has_id = template.contains("{purchaseId}");
    Ok(json!({
        "resource": resource,
        "path": path,
        "httpMethod": method.as_str(),
        "headers": {"Accept": "application/json", "Content-Type": "application/json"},
        "multiValueHeaders": {"Accept": ["application/json"], "Content-Type": ["application/json"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": if has_id { json!({"purchaseId": purchase_id}) } else { Value::Null },
        "stageVariables": null,
        "requestContext": {
            "resourcePath": resource, "httpMethod": method.as_str(), "path": format!("/dev{path}"),
            "accountId": "123456789012", "stage": "dev", "requestId": "crafted", "apiId": "bench",
            "identity": {"sourceIp": "127.0.0.1"}
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    }))
}

/// The environment Lambda gives a function, plus the function's own
/// configuration (as `template.yaml` sets it), pointed at moto via the proxy.
fn environment(
    target: &Target,
    runtime: &RuntimeApi,
    proxy: &CountingProxy,
    state_machine_arn: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(&str, String)> = vec![
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("AWS_LAMBDA_RUNTIME_API", runtime.address()),
        ("AWS_LAMBDA_FUNCTION_NAME", target.name.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", target.name),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]bench".into(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("TZ", ":UTC".into()),
        // Every AWS client (Step Functions included) goes through the proxy.
        ("AWS_ENDPOINT_URL", proxy.url()),
        ("DYNAMODB_ENDPOINT", proxy.url()),
    ];
    match target.kind {
        Kind::Api(endpoint) => {
            env.push(("JWT_HS256_SECRET", fixtures::SECRET.into()));
            env.push(("JWT_ISSUER", fixtures::ISSUER.into()));
            env.push(("JWT_AUDIENCE", fixtures::AUDIENCE.into()));
            if endpoint == Endpoint::CreatePurchase {
                env.push(("STATE_MACHINE_ARN", state_machine_arn.into()));
            }
        }
        Kind::Step(_) => {
            env.push(("PAYMENT_URL", shared::lambda::config::SIMULATOR.into()));
            env.push(("PROVISIONING_URL", shared::lambda::config::SIMULATOR.into()));
        }
        Kind::HelloHttp | Kind::HelloRuntime => {}
    }
    for table in ["PURCHASES_TABLE", "PRODUCTS_TABLE", "IDEMPOTENCY_TABLE"] {
        if let Ok(value) = std::env::var(table) {
            env.push((table, value));
        }
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

struct Seen {
    poll_ms: f64,
    response_ms: f64,
    rss_kib: f64,
    outcome: String,
}

async fn invoke_once(
    target: &Target,
    runtime: &RuntimeApi,
    env: Vec<(String, String)>,
    log: &Path,
    event: Bytes,
    wrapper: &[String],
    timeout: Duration,
) -> Result<Seen> {
    runtime.arm(&target.name, event);
    let log_file = std::fs::File::create(log)?;
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&target.binary);
            command
        }
        None => Command::new(&target.binary),
    };
    command
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", target.binary.display()))?;
    let result = wait_for_response(&mut child, runtime, started, timeout).await;
    let rss_kib = peak_rss_kib(child.id()).unwrap_or(f64::NAN);
    if !wrapper.is_empty() {
        // A wrapper (valgrind) writes its results only when it exits on its own.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (poll_ms, response_ms, outcome) = result?;
    Ok(Seen {
        poll_ms,
        response_ms,
        rss_kib,
        outcome,
    })
}

async fn wait_for_response(
    child: &mut Child,
    runtime: &RuntimeApi,
    started: Instant,
    timeout: Duration,
) -> Result<(f64, f64, String)> {
    let deadline = started + timeout;
    loop {
        let seen = runtime.observation();
        if let (Some(done), Some((kind, body))) = (seen.done, seen.outcome) {
            let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
            let poll = seen.first_poll.map(ms).unwrap_or(f64::NAN);
            return Ok((poll, ms(done), describe(kind, &body)));
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("exited with {status} before responding").into());
        }
        if Instant::now() > deadline {
            return Err(format!("no response within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `201`, `ok RESERVED`, `error OutOfStock`, ...: which path the run took.
fn describe(kind: OutcomeKind, body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match kind {
        OutcomeKind::InitError => format!("init error {}", value["errorType"]),
        OutcomeKind::Error => format!("error {}", value["errorType"].as_str().unwrap_or("unknown")),
        OutcomeKind::Response => match value.get("statusCode") {
            Some(code) => code.to_string(),
            None => format!("ok {}", value["status"].as_str().unwrap_or("")),
        },
    }
}

/// VmHWM: the resident set's high-water mark so far (the process is idle in
/// its second poll, so this is the peak through init and one invocation).
fn peak_rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn most_common(outcomes: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for outcome in outcomes {
        match counts.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((outcome.clone(), 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .map(|(o, n)| {
            if counts.len() == 1 {
                o.clone()
            } else {
                format!("{o} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 && value.is_finite() {
        format!("{:.2}×", value / baseline)
    } else {
        "–".into()
    }
}

fn render(targets: &[Target], samples: &[Samples], runs: usize) -> String {
    let baseline = |kind: Kind| {
        let index = targets.iter().position(|t| t.kind == kind).unwrap_or(0);
        &samples[index]
    };
    let hello = baseline(Kind::HelloHttp);
    let hello_poll = median(&hello.poll_ms);
    let hello_response = median(&hello.response_ms);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{runs} runs per binary, interleaved. Times are milliseconds from `exec` (spawn) of the \
         binary; ratios are medians over the `{HELLO_HTTP}` median (init {}, first response {}). \
         *Backend* is the time the function waited on DynamoDB/Step Functions (moto on \
         127.0.0.1, measured by the counting proxy); *own* = first response − backend.\n",
        fmt_ms(hello_poll),
        fmt_ms(hello_response)
    );
    let _ = writeln!(
        out,
        "| binary | first poll (init) median / p90 | init ratio | first response median / p90 | response ratio | AWS calls | backend median | own median | own ratio | peak RSS (MiB) | first response |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut worst_init: f64 = 0.0;
    let mut worst_own: f64 = 0.0;
    for (target, s) in targets.iter().zip(samples) {
        let poll = median(&s.poll_ms);
        let own = median(&s.own_ms);
        if !matches!(target.kind, Kind::HelloHttp | Kind::HelloRuntime) {
            worst_init = worst_init.max(poll / hello_poll);
            worst_own = worst_own.max(own / hello_response);
        }
        let _ = writeln!(
            out,
            "| `{}` | {} / {} | {} | {} / {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            target.name,
            fmt_ms(poll),
            fmt_ms(p90(&s.poll_ms)),
            ratio(poll, hello_poll),
            fmt_ms(median(&s.response_ms)),
            fmt_ms(p90(&s.response_ms)),
            ratio(median(&s.response_ms), hello_response),
            median(&s.backend_calls),
            fmt_ms(median(&s.backend_ms)),
            fmt_ms(own),
            ratio(own, hello_response),
            median(&s.rss_kib) / 1024.0,
            most_common(&s.outcomes),
        );
    }
    let failures: Vec<String> = targets
        .iter()
        .zip(samples)
        .flat_map(|(t, s)| s.failures.iter().map(move |f| format!("`{}` {f}", t.name)))
        .collect();
    let _ = writeln!(
        out,
        "\nWorst init ratio (first poll): **{worst_init:.2}×**; worst own-work ratio (first \
         response without backend time): **{worst_own:.2}×**; target ≤ 1.3×: init **{}**, \
         first response without backend **{}**.",
        verdict(worst_init <= 1.3),
        verdict(worst_own <= 1.3)
    );
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs (excluded):\n");
        for failure in failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn summary_json(targets: &[Target], samples: &[Samples]) -> Value {
    let rows: Vec<Value> = targets
        .iter()
        .zip(samples)
        .map(|(t, s)| {
            json!({
                "name": t.name,
                "poll_ms": s.poll_ms, "response_ms": s.response_ms,
                "backend_ms": s.backend_ms, "backend_calls": s.backend_calls,
                "rss_kib": s.rss_kib, "outcomes": s.outcomes, "failures": s.failures,
            })
        })
        .collect();
    json!({ "targets": rows })
}

/// Used by the cost model to wait for the local server.
pub async fn wait_until_serving(authority: &str, token: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = http_client::call(
            authority,
            http::Method::GET,
            "/purchase-orchestrator/purchases?limit=1",
            token,
            None,
        )
        .await;
        if let Ok((200, _)) = probe {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{authority} did not serve within 60 s: {probe:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
