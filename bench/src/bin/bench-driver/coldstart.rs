//! Cold start of every function of every tree against the hello-world
//! baselines, runs interleaved (before, after and the hellos, run by run) so
//! machine load affects all of them alike. Each run: exec → first poll of a
//! Runtime API of its own (init), → first response; peak RSS; every AWS call
//! the function made, and how many came before the first poll.
//!
//! Writes `coldstart.md` (sections 1 and 3 of the report) and
//! `coldstart.json` (raw samples and the summary the report's table uses).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bench::Result;
use bench::invoke::{Invocation, Invoked, StopAt, invoke_once};
use bench::proxy::{CountingProxy, Exchange, Recording};
use bench::stats::{median, p90};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::trees::{
    Deployed, EVENTS_PURCHASE_ID, HELLO_HTTP, HELLO_RUNTIME, Tree, endpoint_env, event_from,
    lambda_runtime_env, set_header,
};
use crate::{Args, fmt_ms, write_fragment};

/// Whose binary a target is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Hello,
    Tree(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    /// `create-purchase` without `Idempotency-Key`.
    NoKey,
}

struct Target {
    owner: Owner,
    binary_name: String,
    variant: Variant,
    binary: PathBuf,
}

impl Target {
    fn label(&self) -> String {
        match self.variant {
            Variant::Plain => self.binary_name.clone(),
            Variant::NoKey => format!("{} (no Idempotency-Key)", self.binary_name),
        }
    }
}

#[derive(Default)]
struct Samples {
    poll_ms: Vec<f64>,
    response_ms: Vec<f64>,
    invocation_ms: Vec<f64>,
    backend_ms: Vec<f64>,
    own_ms: Vec<f64>,
    calls: Vec<f64>,
    calls_before_poll: Vec<f64>,
    rss_kib: Vec<f64>,
    /// Per run: "1 DynamoDB.GetItem, 1 StepFunctions.StartExecution".
    operations: Vec<String>,
    outcomes: Vec<String>,
    failures: Vec<String>,
}

/// What a function's run needs in place first; done untimed, through the
/// same tree's functions.
enum Prepare {
    Nothing,
    /// The tree's one purchase created at the start (reads).
    Shared,
    Fresh,
    Held,
    Steps(&'static [&'static str]),
    RuleSet,
    NoRuleSet,
    RuleSetAndFresh,
}

fn prepare_for(binary: &str) -> Prepare {
    match binary {
        "create-purchase" | "reconcile-purchases" | "console" => Prepare::Nothing,
        "update-purchase" | "cancel-purchase" | "apply-rules" | "reserve-stock" => Prepare::Fresh,
        // continue-purchase ends a review (the review machine's last step).
        "review-purchase" | "await-review" | "continue-purchase" => Prepare::Held,
        "create-rule-set" => Prepare::NoRuleSet,
        "get-rule-set" | "update-rule-set" | "delete-rule-set" => Prepare::RuleSet,
        "evaluate-rules" => Prepare::RuleSetAndFresh,
        "capture-payment" | "release-stock" => Prepare::Steps(&["reserve-stock"]),
        "provision-products" | "refund-payment" | "revoke-products" | "needs-attention" => {
            Prepare::Steps(&["reserve-stock", "capture-payment"])
        }
        "finalize-purchase" => Prepare::Steps(&[
            "reserve-stock",
            "capture-payment",
            "refund-payment",
            "release-stock",
        ]),
        // Reads (get, list), redrive, and anything added later.
        _ => Prepare::Shared,
    }
}

async fn prepare(deployed: &Deployed<'_>, binary: &str, shared: &str) -> Result<String> {
    Ok(match prepare_for(binary) {
        Prepare::Nothing => EVENTS_PURCHASE_ID.to_owned(),
        Prepare::Shared => shared.to_owned(),
        Prepare::Fresh => deployed.create_purchase().await?,
        Prepare::Held => {
            let id = deployed.create_purchase().await?;
            deployed.hold(&id).await?;
            id
        }
        Prepare::Steps(steps) => {
            let id = deployed.create_purchase().await?;
            deployed.run_steps(&id, steps).await?;
            id
        }
        Prepare::RuleSet => {
            deployed.ensure_rule_set().await?;
            shared.to_owned()
        }
        Prepare::NoRuleSet => {
            deployed.remove_rule_set().await?;
            shared.to_owned()
        }
        Prepare::RuleSetAndFresh => {
            deployed.ensure_rule_set().await?;
            deployed.create_purchase().await?
        }
    })
}

pub async fn run(args: &Args) -> Result<()> {
    let moto = args.required("moto")?;
    let runs: usize = args.number("runs", 20)?;
    let hello_dir = PathBuf::from(args.value("hello-dir").unwrap_or("target/release"));
    let out = args.out_dir();
    let work = out.join("coldstart");
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let trees = args.trees()?;
    let baseline_tree = trees.last().ok_or("at least one --tree is needed")?;

    // Profiling runs: one function, its binary replaced (e.g. by `probe`,
    // which keeps symbols) and started under a wrapper (valgrind, perf).
    let only = args.value("only").map(str::to_owned);
    let wrapper: Vec<String> = args
        .value("wrapper")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let timeout = Duration::from_secs(args.number("timeout", 30)?);

    let mut targets = vec![
        Target {
            owner: Owner::Hello,
            binary_name: HELLO_HTTP.into(),
            variant: Variant::Plain,
            binary: hello_dir.join(HELLO_HTTP),
        },
        Target {
            owner: Owner::Hello,
            binary_name: HELLO_RUNTIME.into(),
            variant: Variant::Plain,
            binary: hello_dir.join(HELLO_RUNTIME),
        },
    ];
    for (index, tree) in trees.iter().enumerate() {
        for function in tree.functions() {
            let binary = tree.bin_dir.join(&function.binary);
            if function.binary == "create-purchase" {
                targets.push(Target {
                    owner: Owner::Tree(index),
                    binary_name: function.binary.clone(),
                    variant: Variant::NoKey,
                    binary: binary.clone(),
                });
            }
            targets.push(Target {
                owner: Owner::Tree(index),
                binary_name: function.binary,
                variant: Variant::Plain,
                binary,
            });
        }
    }
    if let Some(only) = &only {
        targets.retain(|t| &t.binary_name == only && t.variant == Variant::Plain);
        if targets.is_empty() {
            return Err(format!("--only {only}: no such function").into());
        }
        if let Some(binary) = args.value("binary") {
            for target in &mut targets {
                target.binary = PathBuf::from(binary);
            }
        }
    }
    for target in &targets {
        if !target.binary.exists() {
            return Err(format!("{} is missing: build it first", target.binary.display()).into());
        }
    }

    let proxy = CountingProxy::start(moto, Recording::Counts).await?;
    let mut deployed = Vec::new();
    let mut shared = Vec::new();
    for tree in &trees {
        let stack = Deployed::deploy(tree, moto, &work).await?;
        shared.push(stack.create_purchase().await?);
        deployed.push(stack);
    }
    let baseline = deployed.last().ok_or("at least one --tree is needed")?;

    let runner = Runner {
        deployed: &deployed,
        shared: &shared,
        baseline,
        baseline_events: baseline_tree.events_dir(),
        proxy: &proxy,
        wrapper: &wrapper,
        timeout,
        logs: &logs,
    };
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for run in 0..runs {
        // Rotate the order so no binary always runs right after another.
        for offset in 0..targets.len() {
            let index = (run + offset) % targets.len();
            let target = &targets[index];
            let measured = runner.measure(target).await;
            let s = &mut samples[index];
            match measured {
                Ok((seen, exchanges)) => record(s, &seen, &exchanges),
                Err(error) => s.failures.push(format!("run {run}: {error}")),
            }
        }
        eprintln!("coldstart: run {}/{runs} done", run + 1);
    }
    if only.is_some() {
        for (target, s) in targets.iter().zip(&samples) {
            eprintln!(
                "{} {}: first poll {} ms, first response {} ms, failures {:?}",
                owner_label(target.owner, &trees),
                target.label(),
                fmt_ms(median(&s.poll_ms)),
                fmt_ms(median(&s.response_ms)),
                s.failures
            );
        }
        return Ok(());
    }
    let summary = summarize(&targets, &samples, &trees, runs);
    write_fragment(
        args,
        "coldstart.md",
        &render(&targets, &samples, &trees, &summary),
    )?;
    write_fragment(args, "calls.md", &render_calls(&targets, &samples, &trees))?;
    write_fragment(
        args,
        "coldstart.json",
        &serde_json::to_string_pretty(&json!({
            "runs": runs,
            "summary": summary,
            "targets": raw(&targets, &samples, &trees),
        }))?,
    )?;
    Ok(())
}

/// What every run needs: the trees' stacks, their shared purchases, the
/// proxy, and how to start and wait for a process.
struct Runner<'a, 't> {
    deployed: &'a [Deployed<'t>],
    shared: &'a [String],
    /// The stack whose events the hellos get.
    baseline: &'a Deployed<'t>,
    baseline_events: PathBuf,
    proxy: &'a CountingProxy,
    wrapper: &'a [String],
    timeout: Duration,
    logs: &'a Path,
}

impl Runner<'_, '_> {
    /// Prepares (untimed) and runs one cold start of `target`.
    async fn measure(&self, target: &Target) -> Result<(Invoked, Vec<Exchange>)> {
        let (event, env, log) = match target.owner {
            Owner::Hello => {
                // The hellos get the events of the functions they stand for.
                let (file, route) = match target.binary_name.as_str() {
                    HELLO_HTTP => ("get-purchase", self.baseline.route("get-purchase")),
                    _ => ("reserve-stock", None),
                };
                let event = event_from(&self.baseline_events, file, EVENTS_PURCHASE_ID, route)?;
                let mut env = lambda_runtime_env(&target.binary_name, 128);
                env.extend(endpoint_env(&self.proxy.url()));
                let log = self.logs.join(format!("{}.log", target.binary_name));
                (event, env, log)
            }
            Owner::Tree(index) => {
                let stack = &self.deployed[index];
                let id = prepare(stack, &target.binary_name, &self.shared[index]).await?;
                let mut event = stack.event(&target.binary_name, &id)?;
                if target.variant == Variant::NoKey {
                    set_header(&mut event, "Idempotency-Key", None, false);
                }
                let env = stack.lambda_env(&target.binary_name, &self.proxy.url())?;
                let log = self
                    .logs
                    .join(format!("{}-{}.log", stack.tree.label, target.binary_name));
                (event, env, log)
            }
        };
        self.proxy.take();
        let seen = invoke_once(Invocation {
            name: &target.binary_name,
            binary: &target.binary,
            env: &env,
            event: Bytes::from(serde_json::to_vec(&event)?),
            wrapper: self.wrapper,
            timeout: self.timeout,
            log,
            stop_at: StopAt::Response,
        })
        .await?;
        Ok((seen, self.proxy.take()))
    }
}

fn record(s: &mut Samples, seen: &Invoked, exchanges: &[Exchange]) {
    // An empty sum is -0.0.
    let backend: f64 = exchanges
        .iter()
        .map(|e| e.upstream.as_secs_f64() * 1000.0)
        .sum::<f64>()
        + 0.0;
    let before_poll = exchanges.iter().filter(|e| e.at < seen.first_poll).count();
    let mut operations: BTreeMap<&str, usize> = BTreeMap::new();
    for exchange in exchanges {
        *operations.entry(exchange.operation.as_str()).or_default() += 1;
    }
    s.poll_ms.push(seen.poll_ms());
    s.response_ms.push(seen.response_ms());
    s.invocation_ms.push(seen.response_ms() - seen.poll_ms());
    s.backend_ms.push(backend);
    s.own_ms.push(seen.response_ms() - backend);
    s.calls.push(exchanges.len() as f64);
    s.calls_before_poll.push(before_poll as f64);
    s.rss_kib.push(seen.rss_kib);
    s.operations.push(
        operations
            .iter()
            .map(|(op, n)| format!("{n} {op}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.outcomes.push(seen.describe());
}

fn owner_label(owner: Owner, trees: &[Tree]) -> String {
    match owner {
        Owner::Hello => "baseline".into(),
        Owner::Tree(index) => trees[index].label.clone(),
    }
}

fn most_common(values: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for value in values {
        match counts.iter_mut().find(|(o, _)| o == value) {
            Some((_, n)) => *n += 1,
            None => counts.push((value.clone(), 1)),
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
        .join("; ")
}

fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 && value.is_finite() {
        format!("{:.2}×", value / baseline)
    } else {
        "–".into()
    }
}

fn hello(targets: &[Target], samples: &[Samples]) -> (f64, f64, f64) {
    targets
        .iter()
        .zip(samples)
        .find(|(t, _)| t.owner == Owner::Hello && t.binary_name == HELLO_HTTP)
        .map(|(_, s)| {
            (
                median(&s.poll_ms),
                median(&s.response_ms),
                median(&s.rss_kib),
            )
        })
        .unwrap_or((f64::NAN, f64::NAN, f64::NAN))
}

/// Worst ratios per tree (over its functions), the create-purchase call
/// counts, and the hello baseline: what the report's table needs.
fn summarize(targets: &[Target], samples: &[Samples], trees: &[Tree], runs: usize) -> Value {
    let (hello_poll, hello_response, hello_rss) = hello(targets, samples);
    let mut per_tree = serde_json::Map::new();
    for (index, tree) in trees.iter().enumerate() {
        let worst = |metric: &dyn Fn(&Samples) -> f64, base: f64| {
            targets
                .iter()
                .zip(samples)
                .filter(|(t, _)| t.owner == Owner::Tree(index))
                .map(|(t, s)| (metric(s) / base, t.label()))
                .filter(|(v, _)| v.is_finite())
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(value, function)| json!({"ratio": value, "function": function}))
                .unwrap_or(Value::Null)
        };
        let init = worst(&|s| median(&s.poll_ms), hello_poll);
        let own = worst(&|s| median(&s.own_ms), hello_response);
        let rss = worst(&|s| median(&s.rss_kib), hello_rss);
        let calls = |variant: Variant| {
            targets
                .iter()
                .zip(samples)
                .find(|(t, _)| {
                    t.owner == Owner::Tree(index)
                        && t.binary_name == "create-purchase"
                        && t.variant == variant
                })
                .map(|(_, s)| median(&s.calls))
                .filter(|v| v.is_finite())
        };
        let before_poll = targets
            .iter()
            .zip(samples)
            .filter(|(t, _)| t.owner == Owner::Tree(index))
            .flat_map(|(_, s)| s.calls_before_poll.iter().copied())
            .fold(0.0, f64::max);
        let failures: usize = targets
            .iter()
            .zip(samples)
            .filter(|(t, _)| t.owner == Owner::Tree(index))
            .map(|(_, s)| s.failures.len())
            .sum();
        per_tree.insert(
            tree.label.clone(),
            json!({
                "worst_init": init, "worst_own": own, "worst_rss": rss,
                "create_calls_with_key": calls(Variant::Plain),
                "create_calls_without_key": calls(Variant::NoKey),
                "max_calls_before_first_poll": before_poll,
                "failed_runs": failures,
            }),
        );
    }
    json!({
        "runs": runs,
        "hello": {"poll_ms": hello_poll, "response_ms": hello_response, "rss_kib": hello_rss},
        "trees": per_tree,
    })
}

fn raw(targets: &[Target], samples: &[Samples], trees: &[Tree]) -> Value {
    targets
        .iter()
        .zip(samples)
        .map(|(t, s)| {
            json!({
                "tree": owner_label(t.owner, trees), "name": t.binary_name, "label": t.label(),
                "poll_ms": s.poll_ms, "response_ms": s.response_ms,
                "invocation_ms": s.invocation_ms, "backend_ms": s.backend_ms,
                "own_ms": s.own_ms, "calls": s.calls, "calls_before_poll": s.calls_before_poll,
                "rss_kib": s.rss_kib, "operations": s.operations, "outcomes": s.outcomes,
                "failures": s.failures,
            })
        })
        .collect()
}

/// Rows in report order: the hellos, then each function with its trees side by side.
fn ordered(targets: &[Target]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by_key(|&i| {
        let t = &targets[i];
        let tree = match t.owner {
            Owner::Hello => 0,
            Owner::Tree(index) => index + 1,
        };
        (t.owner != Owner::Hello, t.label(), tree)
    });
    order
}

fn render(targets: &[Target], samples: &[Samples], trees: &[Tree], summary: &Value) -> String {
    let (hello_poll, hello_response, hello_rss) = hello(targets, samples);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} runs per binary, interleaved (both trees and the hellos, run by run). Times are \
         milliseconds from `exec` of the binary; ratios are medians over the `{HELLO_HTTP}` \
         median (first poll {}, first response {}, peak RSS {:.1} MiB). *Own* is the first \
         response minus *backend*, the time the function waited on DynamoDB/Step Functions (moto \
         on 127.0.0.1, measured by the counting proxy). *AWS calls* counts every request the \
         function sent; the number in brackets were sent before its first poll (init).\n",
        summary["runs"],
        fmt_ms(hello_poll),
        fmt_ms(hello_response),
        hello_rss / 1024.0
    );
    let _ = writeln!(
        out,
        "| binary | tree | first poll median / p90 | init × hello | first response median | own median | own × hello | AWS calls (before first poll) | peak RSS (MiB) | RSS × hello | first response |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for index in ordered(targets) {
        let (t, s) = (&targets[index], &samples[index]);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} / {} | {} | {} | {} | {} | {} ({}) | {:.1} | {} | {} |",
            t.label(),
            owner_label(t.owner, trees),
            fmt_ms(median(&s.poll_ms)),
            fmt_ms(p90(&s.poll_ms)),
            ratio(median(&s.poll_ms), hello_poll),
            fmt_ms(median(&s.response_ms)),
            fmt_ms(median(&s.own_ms)),
            ratio(median(&s.own_ms), hello_response),
            median(&s.calls),
            s.calls_before_poll.iter().copied().fold(0.0, f64::max),
            median(&s.rss_kib) / 1024.0,
            ratio(median(&s.rss_kib), hello_rss),
            most_common(&s.outcomes),
        );
    }
    let _ = writeln!(out);
    for tree in trees {
        let t = &summary["trees"][&tree.label];
        let worst = |key: &str| {
            format!(
                "**{:.2}×** (`{}`)",
                t[key]["ratio"].as_f64().unwrap_or(f64::NAN),
                t[key]["function"].as_str().unwrap_or("?")
            )
        };
        let _ = writeln!(
            out,
            "- **{}**: worst first poll {}, worst first response without backend {}, worst peak \
             RSS {}; AWS calls before a first poll: at most {}.",
            tree.label,
            worst("worst_init"),
            worst("worst_own"),
            worst("worst_rss"),
            t["max_calls_before_first_poll"]
                .as_f64()
                .unwrap_or(f64::NAN)
        );
    }
    let failures: Vec<String> = targets
        .iter()
        .zip(samples)
        .flat_map(|(t, s)| {
            s.failures
                .iter()
                .map(move |f| format!("{} `{}` {f}", owner_label(t.owner, trees), t.label()))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs (excluded):\n");
        for failure in failures {
            let _ = writeln!(out, "- {}", failure.replace('\n', " "));
        }
    }
    out
}

/// Section 3: every AWS call of one invocation of each endpoint and step.
fn render_calls(targets: &[Target], samples: &[Samples], trees: &[Tree]) -> String {
    let mut out = String::new();
    let labels: Vec<&Tree> = trees.iter().collect();
    let _ = writeln!(
        out,
        "Every DynamoDB and Step Functions request of one invocation (the cold-start runs of \
         section 1, counted by the proxy), the most common set over the runs (`×n` when runs \
         differed). `create-purchase` runs with a fresh `Idempotency-Key`, and once more without.\n"
    );
    let _ = write!(out, "| function |");
    for tree in &labels {
        let _ = write!(out, " {} |", tree.label);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---|".repeat(labels.len()));
    let mut names: Vec<String> = targets
        .iter()
        .filter(|t| t.owner != Owner::Hello)
        .map(Target::label)
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let _ = write!(out, "| `{name}` |");
        for index in 0..labels.len() {
            let cell = targets
                .iter()
                .zip(samples)
                .find(|(t, _)| t.owner == Owner::Tree(index) && t.label() == name)
                .map(|(_, s)| {
                    format!(
                        "{} ({})",
                        median(&s.calls),
                        if s.operations.iter().all(String::is_empty) {
                            "none".to_owned()
                        } else {
                            most_common(&s.operations)
                        }
                    )
                })
                .unwrap_or_else(|| "–".into());
            let _ = write!(out, " {cell} |");
        }
        let _ = writeln!(out);
    }
    out
}
