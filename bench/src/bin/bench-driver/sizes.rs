//! Binary sizes (stripped release) and peak RSS per function (from the
//! cold-start runs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bench::Result;
use bench::stats::median;
use serde_json::Value;

use crate::{Args, write_fragment};

fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

fn size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Whether the file still has a symbol table (`.symtab`), i.e. is not stripped.
fn has_symbols(path: &Path) -> bool {
    std::fs::read(path)
        .map(|bytes| bytes.windows(8).any(|w| w == b".symtab\0"))
        .unwrap_or(false)
}

pub fn run(args: &Args) -> Result<()> {
    let bin_dir = PathBuf::from(args.value("bin-dir").unwrap_or("target/release"));
    let hello_dir = PathBuf::from(args.value("hello-dir").unwrap_or("target/release"));
    let lambda_dirs: Vec<PathBuf> = args
        .value("lambda-dir")
        .unwrap_or("target/lambda")
        .split(':')
        .map(PathBuf::from)
        .collect();
    let rss: Vec<(String, f64)> = std::fs::read_to_string(args.out_dir().join("coldstart.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v["targets"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let samples: Vec<f64> = t["rss_kib"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            (
                t["name"].as_str().unwrap_or("").to_owned(),
                median(&samples) / 1024.0,
            )
        })
        .collect();

    let mut names: Vec<String> = std::fs::read_dir("functions")?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    let mut rows: Vec<(String, PathBuf)> = vec![
        (
            "hello-lambda-http".into(),
            hello_dir.join("hello-lambda-http"),
        ),
        (
            "hello-lambda-runtime".into(),
            hello_dir.join("hello-lambda-runtime"),
        ),
    ];
    rows.extend(names.iter().map(|n| (n.clone(), bin_dir.join(n))));
    rows.push((
        "purchase-orchestrator (local server)".into(),
        bin_dir.join("purchase-orchestrator"),
    ));

    let arm64 = |name: &str| {
        lambda_dirs
            .iter()
            .map(|dir| dir.join(name).join("bootstrap"))
            .find(|p| p.exists())
    };
    let any_arm64 = names.iter().any(|n| arm64(n).is_some());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Release profile as in the workspace `Cargo.toml` (`strip = true`). *x86_64* are this \
         run's host builds; *arm64* are `bootstrap` files of a cargo-lambda build ({}). Peak RSS is \
         the median `VmHWM` of the cold-start runs (init + one invocation).\n",
        if any_arm64 {
            format!(
                "found under {}",
                lambda_dirs
                    .iter()
                    .map(|d| format!("`{}`", d.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            "none found in this run; host sizes only".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "| binary | x86_64 (MiB) | arm64 bootstrap (MiB) | zip of bootstrap (MiB) | peak RSS (MiB) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (name, path) in &rows {
        let host = size(path).map(mib).unwrap_or_else(|| "–".into());
        let host = if size(path).is_some() && has_symbols(path) {
            format!("{host} (not stripped)")
        } else {
            host
        };
        let arm = arm64(name);
        let arm_size = arm
            .as_ref()
            .and_then(|p| size(p))
            .map(mib)
            .unwrap_or_else(|| "–".into());
        let zip = arm
            .as_ref()
            .and_then(|p| size(&p.with_file_name("bootstrap.zip")))
            .map(mib)
            .unwrap_or_else(|| "–".into());
        let rss = rss
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| format!("{v:.1}"))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(out, "| `{name}` | {host} | {arm_size} | {zip} | {rss} |");
    }
    write_fragment(args, "sizes.md", &out)?;
    Ok(())
}
