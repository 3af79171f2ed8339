//! The trees under test ("before" = a git revision exported by
//! `scripts/bench.sh`, "after" = the working tree), each with its own
//! release binaries, template, events and catalog.
//!
//! Everything a benchmark does to a tree goes through that tree's own
//! binaries and files: its local server creates its DynamoDB tables, its
//! functions bring purchases into the states a run needs, its template names
//! the variables. The driver's own (current) code never writes a tree's data,
//! so the two trees may disagree on the item layout without the comparison
//! noticing anything but the numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::fixtures;
use bench::invoke::{Invocation, Invoked, StopAt, invoke_once};
use bench::template::{Stack, Template};
use bench::{Result, http_client};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::free_port;

pub const HELLO_HTTP: &str = "hello-lambda-http";
pub const HELLO_RUNTIME: &str = "hello-lambda-runtime";
pub const LOCAL_SERVER: &str = "purchase-orchestrator";

/// The purchase id `events/` use; replaced by a real one per run.
pub const EVENTS_PURCHASE_ID: &str = fixtures::EVENTS_PURCHASE_ID;

pub struct Tree {
    pub label: String,
    /// Source root: `template.yaml`, `events/`, `catalog/`, `statemachine/`.
    pub root: PathBuf,
    /// Release binaries.
    pub bin_dir: PathBuf,
    pub template: Template,
}

impl Tree {
    /// `label=SOURCE_DIR:BIN_DIR`, e.g. `before=target/bench/before/src:target/bench/before/target/release`.
    pub fn parse(arg: &str) -> Result<Tree> {
        let (label, dirs) = arg
            .split_once('=')
            .ok_or_else(|| format!("--tree {arg:?}: expected LABEL=SOURCE_DIR:BIN_DIR"))?;
        let (root, bin_dir) = dirs
            .split_once(':')
            .ok_or_else(|| format!("--tree {arg:?}: expected LABEL=SOURCE_DIR:BIN_DIR"))?;
        let root = PathBuf::from(root);
        let template = Template::load(&root.join("template.yaml"))?;
        Ok(Tree {
            label: label.to_owned(),
            root,
            bin_dir: PathBuf::from(bin_dir),
            template,
        })
    }

    /// The template's functions whose binary exists in `bin_dir`.
    pub fn functions(&self) -> Vec<bench::template::Function> {
        self.template
            .functions()
            .into_iter()
            .filter(|f| {
                let exists = self.bin_dir.join(&f.binary).exists();
                if !exists {
                    eprintln!(
                        "{}: {} is not built ({}); skipped",
                        self.label,
                        f.binary,
                        self.bin_dir.display()
                    );
                }
                exists
            })
            .collect()
    }

    /// A stack of this tree: unique names, the bench's parameter values.
    pub fn stack(&self) -> Stack {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        Stack {
            name: format!("bench-{}-{}", self.label, &suffix[suffix.len() - 8..]),
            parameters: bench_parameters(),
        }
    }

    /// What Lambda and the template give `binary` in `stack`, with AWS at `endpoint`.
    pub fn lambda_env(
        &self,
        stack: &Stack,
        binary: &str,
        endpoint: &str,
    ) -> Result<Vec<(String, String)>> {
        let memory = self
            .template
            .function(binary)
            .map(|f| f.memory_mb)
            .unwrap_or(128);
        let mut env = lambda_runtime_env(binary, memory);
        let mut own = self.template.environment(stack, binary)?;
        // No JWKS server here: API functions verify the bench's HS256 tokens,
        // which they accept only with LOCAL_DEVELOPMENT.
        if own.iter().any(|(k, _)| k == "JWKS_URL") {
            own.retain(|(k, _)| k != "JWKS_URL");
            own.push(("JWT_HS256_SECRET".into(), fixtures::SECRET.into()));
            own.push(("LOCAL_DEVELOPMENT".into(), "1".into()));
        }
        env.extend(own);
        env.extend(endpoint_env(endpoint));
        Ok(env)
    }

    pub fn events_dir(&self) -> PathBuf {
        self.root.join("events")
    }

    /// The tree's demo catalog with practically unlimited stock, so runs
    /// never run out; written under `dir`.
    pub fn bench_catalog(&self, dir: &Path) -> Result<PathBuf> {
        let source = self.root.join("catalog").join("demo.json");
        let mut products: Value = serde_json::from_str(
            &std::fs::read_to_string(&source).map_err(|e| format!("{}: {e}", source.display()))?,
        )?;
        for product in products.as_array_mut().into_iter().flatten() {
            product["stock"] = json!(1_000_000_000_000u64);
        }
        let path = dir.join(format!("catalog-{}.json", self.label));
        std::fs::write(&path, serde_json::to_vec(&products)?)?;
        Ok(path)
    }
}

/// Values for the template's parameters that have no default.
pub fn bench_parameters() -> BTreeMap<String, String> {
    [
        ("JwtIssuer", fixtures::ISSUER),
        ("JwtAudience", fixtures::AUDIENCE),
        ("JwksUrl", "https://jwks.invalid/.well-known/jwks.json"),
        ("PaymentUrl", "simulator"),
        ("ProvisioningUrl", "simulator"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A tree's stack on moto: tables (created by the tree's own local server,
/// with its catalog), state machines, and the environment its functions get.
pub struct Deployed<'t> {
    pub tree: &'t Tree,
    pub stack: Stack,
    pub moto: String,
    pub work: PathBuf,
}

impl<'t> Deployed<'t> {
    pub async fn deploy(tree: &'t Tree, moto: &str, work: &Path) -> Result<Deployed<'t>> {
        std::fs::create_dir_all(work)?;
        let deployed = Deployed {
            tree,
            stack: tree.stack(),
            moto: moto.to_owned(),
            work: work.to_owned(),
        };
        // The tree's local server creates its tables and seeds its catalog
        // (STORE=dynamodb), then stops.
        let server = LocalServer::start(
            tree,
            &work.join(format!("setup-{}", tree.label)),
            &deployed.store_env(moto)?,
        )
        .await?;
        drop(server);
        for machine in tree.template.state_machines() {
            let arn = tree
                .template
                .physical_name(&deployed.stack, &machine.logical_id)?;
            let name = arn.rsplit(':').next().unwrap_or(&arn).to_owned();
            let path = tree.root.join(&machine.definition_uri);
            let mut definition =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (key, value) in tree
                .template
                .substitutions(&deployed.stack, &machine.logical_id)?
            {
                definition = definition.replace(&format!("${{{key}}}"), &value);
            }
            let kind = tree
                .template
                .state_machine_type(&deployed.stack, &machine.logical_id)?;
            aws_json(
                moto,
                "AWSStepFunctions.CreateStateMachine",
                "states",
                &json!({"name": name, "definition": definition, "type": kind,
                        "roleArn": "arn:aws:iam::123456789012:role/bench"}),
            )
            .await
            .map_err(|e| format!("{}: creating {}: {e}", tree.label, machine.logical_id))?;
        }
        Ok(deployed)
    }

    /// The table variables (every `*_TABLE` the template gives a function).
    pub fn table_env(&self) -> Result<Vec<(String, String)>> {
        let mut tables = BTreeMap::new();
        for function in self.tree.template.functions() {
            for (name, value) in self
                .tree
                .template
                .environment(&self.stack, &function.binary)?
            {
                if name.ends_with("_TABLE") {
                    tables.insert(name, value);
                }
            }
        }
        Ok(tables.into_iter().collect())
    }

    /// The local server's environment for `STORE=dynamodb` on `endpoint`.
    pub fn store_env(&self, endpoint: &str) -> Result<Vec<(String, String)>> {
        let mut env = self.table_env()?;
        env.push(("STORE".into(), "dynamodb".into()));
        env.push(("DYNAMODB_ENDPOINT".into(), endpoint.into()));
        Ok(env)
    }

    /// What Lambda and the template give `binary`, with AWS at `endpoint`.
    pub fn lambda_env(&self, binary: &str, endpoint: &str) -> Result<Vec<(String, String)>> {
        self.tree.lambda_env(&self.stack, binary, endpoint)
    }

    /// The event of `events/<binary>.json` for `purchase_id`, with a fresh
    /// token and request id, and a fresh `Idempotency-Key` if it has one.
    pub fn event(&self, binary: &str, purchase_id: &str) -> Result<Value> {
        event_from(
            &self.tree.events_dir(),
            binary,
            purchase_id,
            self.route(binary),
        )
    }

    pub fn route(&self, binary: &str) -> Option<(String, String)> {
        self.tree.template.function(binary).and_then(|f| f.route)
    }

    /// One untimed invocation straight to moto, for bringing data into shape.
    pub async fn call(&self, binary: &str, event: &Value) -> Result<Invoked> {
        let env = self.lambda_env(binary, &self.moto)?;
        let invoked = invoke_once(Invocation {
            name: binary,
            binary: &self.tree.bin_dir.join(binary),
            env: &env,
            event: Bytes::from(serde_json::to_vec(event)?),
            wrapper: &[],
            timeout: Duration::from_secs(30),
            log: self
                .work
                .join(format!("prepare-{}-{binary}.log", self.tree.label)),
            stop_at: StopAt::Response,
        })
        .await
        .map_err(|e| format!("{} {binary}: {e}", self.tree.label))?;
        Ok(invoked)
    }

    async fn call_ok(&self, binary: &str, event: &Value) -> Result<Invoked> {
        let invoked = self.call(binary, event).await?;
        if invoked.succeeded() {
            Ok(invoked)
        } else {
            Err(format!(
                "{} {binary}: {}: {}",
                self.tree.label,
                invoked.describe(),
                invoked.body
            )
            .into())
        }
    }

    /// A new purchase (`create-purchase`), as `events/create-purchase.json` makes it.
    pub async fn create_purchase(&self) -> Result<String> {
        let event = self.event("create-purchase", EVENTS_PURCHASE_ID)?;
        let invoked = self.call_ok("create-purchase", &event).await?;
        invoked.api_body()["purchaseId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("create-purchase answered {}", invoked.body).into())
    }

    /// Puts a purchase `ON_HOLD` (`apply-rules` with a hold rule).
    pub async fn hold(&self, purchase_id: &str) -> Result<()> {
        let mut event = self.event("apply-rules", purchase_id)?;
        event["body"] = json!(fixtures::hold_rules_body().to_string());
        self.call_ok("apply-rules", &event).await.map(drop)
    }

    /// Runs step functions in order on one purchase.
    pub async fn run_steps(&self, purchase_id: &str, steps: &[&str]) -> Result<()> {
        for step in steps {
            let event = self.event(step, purchase_id)?;
            self.call_ok(step, &event).await?;
        }
        Ok(())
    }

    /// Makes sure the `default` rule set exists (201, or 409 if it does).
    pub async fn ensure_rule_set(&self) -> Result<()> {
        let event = self.event("create-rule-set", EVENTS_PURCHASE_ID)?;
        let invoked = self.call("create-rule-set", &event).await?;
        match invoked.status() {
            Some(201 | 409) => Ok(()),
            _ => Err(format!("create-rule-set: {}", invoked.body).into()),
        }
    }

    /// Makes sure the `default` rule set does not exist (204, or 404).
    pub async fn remove_rule_set(&self) -> Result<()> {
        let event = self.event("delete-rule-set", EVENTS_PURCHASE_ID)?;
        let invoked = self.call("delete-rule-set", &event).await?;
        match invoked.status() {
            Some(200 | 204 | 404) => Ok(()),
            _ => Err(format!("delete-rule-set: {}", invoked.body).into()),
        }
    }
}

/// The variables Lambda sets for every function (`provided.al2023`), with
/// fake credentials.
pub fn lambda_runtime_env(name: &str, memory_mb: u64) -> Vec<(String, String)> {
    [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]bench".into(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("_HANDLER", "bootstrap".into()),
        ("AWS_REGION", bench::template::REGION.into()),
        ("AWS_DEFAULT_REGION", bench::template::REGION.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("TZ", ":UTC".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Every AWS client (DynamoDB, Step Functions, anything else) at `endpoint`.
pub fn endpoint_env(endpoint: &str) -> Vec<(String, String)> {
    [
        "AWS_ENDPOINT_URL",
        "DYNAMODB_ENDPOINT",
        "STEP_FUNCTIONS_ENDPOINT",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), endpoint.to_owned()))
    .collect()
}

/// Whether an API route is for the back office (admin token) rather than
/// the buyer (user token).
fn admin_route(path: &str) -> bool {
    path.contains("/rules")
        || ["/apply-rules", "/review", "/redrive"]
            .iter()
            .any(|suffix| path.ends_with(suffix))
}

/// `events/<name>.json` with `purchase_id`; for an API event a fresh token
/// and request id, and a fresh `Idempotency-Key` where the event has one.
pub fn event_from(
    events_dir: &Path,
    name: &str,
    purchase_id: &str,
    route: Option<(String, String)>,
) -> Result<Value> {
    let path = events_dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut event: Value = serde_json::from_str(&text.replace(EVENTS_PURCHASE_ID, purchase_id))?;
    if let Some((_, path)) = route {
        let token = if admin_route(&path) {
            fixtures::admin_token()?
        } else {
            fixtures::user_token()?
        };
        set_header(
            &mut event,
            "Authorization",
            Some(&format!("Bearer {token}")),
            true,
        );
        let key = uuid::Uuid::now_v7().to_string();
        set_header(&mut event, "Idempotency-Key", Some(&key), false);
        if let Some(context) = event.get_mut("requestContext") {
            context["requestId"] = json!(uuid::Uuid::now_v7().to_string());
        }
    }
    Ok(event)
}

/// Sets (or with `None` removes) a header in `headers` and
/// `multiValueHeaders`, matching the name case-insensitively; adds it only if `add`.
pub fn set_header(event: &mut Value, name: &str, value: Option<&str>, add: bool) {
    for field in ["headers", "multiValueHeaders"] {
        let Some(map) = event.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        let existing = map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
        let new = value.map(|v| {
            if field == "headers" {
                json!(v)
            } else {
                json!([v])
            }
        });
        match (existing, new) {
            (Some(key), Some(new)) => {
                map.insert(key, new);
            }
            (Some(key), None) => {
                map.remove(&key);
            }
            (None, Some(new)) if add => {
                map.insert(name.to_owned(), new);
            }
            _ => {}
        }
    }
}

/// One AWS JSON-protocol call straight to moto (which does not check
/// signatures; the credential scope names the region).
pub async fn aws_json(endpoint: &str, target: &str, service: &str, body: &Value) -> Result<Value> {
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut headers = http::HeaderMap::new();
    headers.insert("x-amz-target", target.parse()?);
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-amz-json-1.0".parse()?,
    );
    headers.insert(
        http::header::AUTHORIZATION,
        format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{}/{service}/aws4_request, SignedHeaders=host, Signature=0",
            bench::template::REGION
        )
        .parse()?,
    );
    let response = http_client::send(
        authority,
        http::Method::POST,
        "/",
        &headers,
        Bytes::from(body.to_string()),
    )
    .await?;
    let value: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    if response.status().is_success() {
        Ok(value)
    } else {
        Err(format!("{target}: {} {value}", response.status()).into())
    }
}

/// A tree's release local server (`purchase-orchestrator`), stopped on drop.
pub struct LocalServer {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalServer {
    /// Starts it with its data under `dir` (the disk, not tmpfs), the bench
    /// secret and `env`, and waits until it serves.
    pub async fn start(tree: &Tree, dir: &Path, env: &[(String, String)]) -> Result<LocalServer> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let binary = tree.bin_dir.join(LOCAL_SERVER);
        let child = Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", dir.join("data"))
            .env("CATALOG_FILE", tree.bench_catalog(dir)?)
            .env("JWT_HS256_SECRET", fixtures::SECRET)
            .env("RUST_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", bench::template::REGION)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let server = LocalServer {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        server.wait_until_serving().await?;
        Ok(server)
    }

    async fn wait_until_serving(&self) -> Result<()> {
        let token = fixtures::user_token()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = http_client::call(
                &self.addr,
                http::Method::GET,
                "/purchase-orchestrator/purchases?limit=1",
                &token,
                None,
            )
            .await;
            if let Ok((200, _)) = probe {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not serve within 60 s: {probe:?}{}",
                    self.addr,
                    bench::invoke::log_tail(&self.log)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_set_replaced_and_removed_in_both_maps() {
        let mut event = json!({"headers": {"idempotency-key": "a"}, "multiValueHeaders": {"idempotency-key": ["a"]}});
        set_header(&mut event, "Idempotency-Key", Some("b"), false);
        assert_eq!(event["headers"]["idempotency-key"], "b");
        assert_eq!(event["multiValueHeaders"]["idempotency-key"], json!(["b"]));
        set_header(&mut event, "Authorization", Some("Bearer t"), false);
        assert!(event["headers"].get("Authorization").is_none());
        set_header(&mut event, "Authorization", Some("Bearer t"), true);
        assert_eq!(event["headers"]["Authorization"], "Bearer t");
        set_header(&mut event, "IDEMPOTENCY-KEY", None, false);
        assert!(event["headers"].get("idempotency-key").is_none());
        assert!(event["multiValueHeaders"].get("idempotency-key").is_none());
    }

    #[test]
    fn back_office_routes_get_the_admin_token() {
        assert!(admin_route("/purchase-orchestrator/rules/{ruleSetName}"));
        assert!(admin_route(
            "/purchase-orchestrator/purchases/{purchaseId}/review"
        ));
        assert!(!admin_route(
            "/purchase-orchestrator/purchases/{purchaseId}"
        ));
        assert!(!admin_route(
            "/purchase-orchestrator/purchases/{purchaseId}/cancel"
        ));
    }
}
