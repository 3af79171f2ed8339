//! Reads criterion's estimates (`target/criterion/**/new/estimates.json`)
//! of each tree and writes the warm handler cost tables, with ratios to the
//! same tree's hello world.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bench::Result;
use serde_json::{Value, json};

use crate::{Args, write_fragment};

#[derive(Clone, Copy)]
struct Estimate {
    median_ns: f64,
    low_ns: f64,
    high_ns: f64,
}

type Found = BTreeMap<String, BTreeMap<String, Estimate>>;

pub fn run(args: &Args) -> Result<()> {
    // `label=DIR`: each tree's own `cargo bench -p bench --bench handlers` results.
    let mut trees: Vec<(String, Found)> = Vec::new();
    for value in args.values("criterion") {
        let (label, dir) = value
            .split_once('=')
            .ok_or_else(|| format!("--criterion {value:?}: expected LABEL=DIR"))?;
        let mut found = Found::new();
        collect(&PathBuf::from(dir), &mut found)?;
        if found.is_empty() {
            eprintln!("criterion: no results under {dir} ({label})");
        }
        trees.push((label.to_owned(), found));
    }
    if trees.iter().all(|(_, f)| f.is_empty()) {
        return Err("no criterion results".into());
    }
    let get = |found: &Found, group: &str, name: &str| {
        found.get(group).and_then(|g| g.get(name)).copied()
    };
    let mut out = String::new();

    // Handlers, each tree's disk and tmpfs side by side.
    let mut names: Vec<String> = trees
        .iter()
        .flat_map(|(_, f)| {
            f.get("handler/disk")
                .into_iter()
                .flat_map(|g| g.keys().cloned())
        })
        .collect();
    names.sort();
    names.dedup();
    let order = [
        "hello",
        "get_purchase",
        "list_purchases",
        "create_purchase",
        "create_purchase_idempotency_key",
        "update_purchase",
        "cancel_purchase",
        "apply_rules",
        "review_purchase",
        "list_rule_sets",
        "get_rule_set",
        "update_rule_set",
    ];
    let mut ordered: Vec<&str> = order
        .iter()
        .copied()
        .filter(|n| names.iter().any(|m| m == n))
        .collect();
    ordered.extend(
        names
            .iter()
            .map(String::as_str)
            .filter(|n| !order.contains(n)),
    );
    let _ = writeln!(
        out,
        "Each tree's own `cargo bench -p bench --bench handlers` (criterion), run in this run; \
         medians per call with the 95% CI in brackets, and the ratio to that tree's hello \
         handler. `Endpoint::handle(&app, &ApiRequest)` on a multi-threaded tokio runtime, real \
         HS256 JWT verification, validation and the embedded redb store; the workflow is a \
         no-op. *disk*: the store on the machine's disk (what a local `DATA_DIR` gets); *tmpfs*: \
         on `/dev/shm`, where fsync costs nothing — the difference is the durable commit.\n"
    );
    let _ = write!(out, "| handler |");
    for (label, _) in &trees {
        let _ = write!(out, " {label} disk | {label} tmpfs |");
    }
    let _ = writeln!(out, " writes (redb commits, before) |");
    let _ = writeln!(out, "|---|{}---|", "---|---|".repeat(trees.len()));
    for name in &ordered {
        let _ = write!(out, "| `{name}` |");
        for (_, found) in &trees {
            for group in ["handler/disk", "handler/tmpfs"] {
                let e = get(found, group, name);
                let hello = get(found, group, "hello");
                let _ = write!(out, " {} ({}) |", cell(e), ratio(e, hello));
            }
        }
        let _ = writeln!(out, " {} |", commits(name));
    }

    let _ = writeln!(
        out,
        "\n**Whole warm invocation** (what a warm Lambda does per request, minus the Runtime API \
         round trip): API Gateway event JSON → `lambda_http` adapter → handler → response JSON, \
         store on disk. Target ≤ 2× hello.\n"
    );
    let _ = write!(out, "| invocation |");
    for (label, _) in &trees {
        let _ = write!(out, " {label} | × hello |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---|---|".repeat(trees.len()));
    let mut invocations: Vec<String> = trees
        .iter()
        .flat_map(|(_, f)| {
            f.get("invocation")
                .into_iter()
                .flat_map(|g| g.keys().cloned())
        })
        .collect();
    invocations.sort_by_key(|n| (n.as_str() != "hello", n.clone()));
    invocations.dedup();
    let mut summary = serde_json::Map::new();
    for name in &invocations {
        let _ = write!(out, "| `{name}` |");
        for (label, found) in &trees {
            let e = get(found, "invocation", name);
            let hello = get(found, "invocation", "hello");
            let _ = write!(out, " {} | {} |", cell(e), ratio(e, hello));
            if let (true, Some(e), Some(h)) = (name == "get_purchase", e, hello) {
                summary.insert(
                    label.clone(),
                    json!({"get_purchase_invocation_ratio": e.median_ns / h.median_ns,
                           "get_purchase_ns": e.median_ns, "hello_ns": h.median_ns}),
                );
            }
        }
        let _ = writeln!(out);
    }

    let mut parts: Vec<String> = trees
        .iter()
        .flat_map(|(_, f)| f.get("parts").into_iter().flat_map(|g| g.keys().cloned()))
        .collect();
    parts.sort();
    parts.dedup();
    if !parts.is_empty() {
        let _ = writeln!(out, "\n**Parts** (where the time goes):\n");
        let _ = write!(out, "| part |");
        for (label, _) in &trees {
            let _ = write!(out, " {label} |");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "|---|{}", "---|".repeat(trees.len()));
        for name in &parts {
            let _ = write!(out, "| `{name}` |");
            for (_, found) in &trees {
                let _ = write!(out, " {} |", cell(get(found, "parts", name)));
            }
            let _ = writeln!(out);
        }
    }
    write_fragment(args, "criterion.md", &out)?;
    write_fragment(
        args,
        "criterion.json",
        &serde_json::to_string_pretty(&Value::Object(summary))?,
    )?;
    Ok(())
}

/// Durable commits per call, from reading the handlers and the store.
fn commits(name: &str) -> &'static str {
    match name {
        "hello" | "get_purchase" | "list_purchases" | "list_rule_sets" | "get_rule_set" => "0",
        "create_purchase" => "1",
        "create_purchase_idempotency_key" => "3 (claim, create, complete)",
        "update_purchase" | "cancel_purchase" | "apply_rules" | "review_purchase"
        | "update_rule_set" => "1",
        _ => "",
    }
}

fn collect(dir: &Path, found: &mut Found) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let benchmark = path.join("new").join("benchmark.json");
        let estimates = path.join("new").join("estimates.json");
        if benchmark.exists() && estimates.exists() {
            let b: Value = serde_json::from_str(&std::fs::read_to_string(&benchmark)?)?;
            let e: Value = serde_json::from_str(&std::fs::read_to_string(&estimates)?)?;
            let group = b["group_id"].as_str().unwrap_or("").to_owned();
            let name = b["function_id"]
                .as_str()
                .or_else(|| b["full_id"].as_str())
                .unwrap_or("")
                .to_owned();
            let median = &e["median"];
            found.entry(group).or_default().insert(
                name,
                Estimate {
                    median_ns: median["point_estimate"].as_f64().unwrap_or(f64::NAN),
                    low_ns: median["confidence_interval"]["lower_bound"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    high_ns: median["confidence_interval"]["upper_bound"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                },
            );
        } else {
            collect(&path, found)?;
        }
    }
    Ok(())
}

fn duration(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn cell(e: Option<Estimate>) -> String {
    match e {
        Some(e) => format!(
            "{} [{}–{}]",
            duration(e.median_ns),
            duration(e.low_ns),
            duration(e.high_ns)
        ),
        None => "–".into(),
    }
}

fn ratio(e: Option<Estimate>, baseline: Option<Estimate>) -> String {
    match (e, baseline) {
        (Some(e), Some(b)) if b.median_ns > 0.0 => format!("{:.1}×", e.median_ns / b.median_ns),
        _ => "–".into(),
    }
}
