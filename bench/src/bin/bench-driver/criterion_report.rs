//! Reads criterion's estimates (`target/criterion/**/new/estimates.json`)
//! and writes the warm handler cost tables with ratios to the hello world.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bench::Result;
use serde_json::Value;

use crate::coldstart::verdict;
use crate::{Args, write_fragment};

#[derive(Clone, Copy)]
struct Estimate {
    median_ns: f64,
    low_ns: f64,
    high_ns: f64,
}

pub fn run(args: &Args) -> Result<()> {
    let dir = PathBuf::from(args.value("criterion-dir").unwrap_or("target/criterion"));
    let mut found: BTreeMap<String, BTreeMap<String, Estimate>> = BTreeMap::new();
    collect(&dir, &mut found)?;
    if found.is_empty() {
        return Err(format!("no criterion results under {}", dir.display()).into());
    }
    let mut out = String::new();
    let get = |group: &str, name: &str| found.get(group).and_then(|g| g.get(name)).copied();

    // Handlers, disk and tmpfs side by side.
    let names: Vec<String> = found
        .get("handler/disk")
        .map(|g| g.keys().cloned().collect())
        .unwrap_or_default();
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
        "Median per call (criterion, 95% CI in brackets), `Endpoint::handle(&app, &ApiRequest)` on \
         a multi-threaded tokio runtime, real HS256 JWT verification, validation and the embedded \
         redb store; the workflow is a no-op. *disk*: the store on the machine's disk (what a \
         local `DATA_DIR` gets); *tmpfs*: on `/dev/shm`, where redb's fsync at commit costs \
         nothing — the difference between the columns is the durable commit.\n"
    );
    let _ = writeln!(
        out,
        "| handler | disk | × hello | tmpfs | × hello | writes (redb commits) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let hello_disk = get("handler/disk", "hello");
    let hello_tmpfs = get("handler/tmpfs", "hello");
    for name in &ordered {
        let disk = get("handler/disk", name);
        let tmpfs = get("handler/tmpfs", name);
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {} | {} | {} |",
            cell(disk),
            ratio(disk, hello_disk),
            cell(tmpfs),
            ratio(tmpfs, hello_tmpfs),
            commits(name),
        );
    }

    let _ = writeln!(
        out,
        "\n**Whole warm invocation** (what a warm Lambda does per request, minus the Runtime API \
         round trip): API Gateway event JSON → `lambda_http` adapter → handler → response JSON, \
         store on disk.\n"
    );
    let _ = writeln!(out, "| invocation | median | × hello | target ≤ 2× |");
    let _ = writeln!(out, "|---|---|---|---|");
    let hello_invocation = get("invocation", "hello");
    if let Some(group) = found.get("invocation") {
        let mut names: Vec<&String> = group.keys().collect();
        names.sort_by_key(|n| (n.as_str() != "hello", n.to_string()));
        for name in names {
            let e = group.get(name).copied();
            let met = match (e, hello_invocation) {
                (Some(e), Some(h)) if name != "hello" => verdict(e.median_ns <= 2.0 * h.median_ns),
                _ => "",
            };
            let _ = writeln!(
                out,
                "| `{name}` | {} | {} | {met} |",
                cell(e),
                ratio(e, hello_invocation)
            );
        }
    }

    if let Some(group) = found.get("parts") {
        let _ = writeln!(out, "\n**Parts** (where the time goes):\n");
        let _ = writeln!(out, "| part | median |");
        let _ = writeln!(out, "|---|---|");
        for (name, e) in group {
            let _ = writeln!(out, "| `{name}` | {} |", cell(Some(*e)));
        }
    }
    write_fragment(args, "criterion.md", &out)?;
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

fn collect(dir: &Path, found: &mut BTreeMap<String, BTreeMap<String, Estimate>>) -> Result<()> {
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
