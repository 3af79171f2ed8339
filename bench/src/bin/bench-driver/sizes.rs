//! Binary sizes: every function of every tree as built for this run
//! (x86_64, release, each with `-p <function>` so its own features are what
//! is measured), and the arm64 `bootstrap` of each tree's largest function
//! from a cargo-lambda build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bench::Result;
use serde_json::{Value, json};

use crate::trees::{HELLO_HTTP, HELLO_RUNTIME, LOCAL_SERVER, Tree};
use crate::{Args, write_fragment};

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
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

fn cell(path: &Path) -> String {
    match size(path) {
        Some(bytes) if has_symbols(path) => format!("{:.2} (not stripped)", mib(bytes)),
        Some(bytes) => format!("{:.2}", mib(bytes)),
        None => "–".into(),
    }
}

/// The largest function binary of a tree (x86_64), by name.
pub fn largest(tree: &Tree) -> Option<String> {
    tree.template
        .functions()
        .into_iter()
        .filter_map(|f| Some((size(&tree.bin_dir.join(&f.binary))?, f.binary)))
        .max()
        .map(|(_, name)| name)
}

pub fn run(args: &Args) -> Result<()> {
    let hello_dir = PathBuf::from(args.value("hello-dir").unwrap_or("target/release"));
    let trees = args.trees()?;
    // `label=DIR`: where cargo lambda put `<function>/bootstrap` for that tree.
    let lambda_dirs: Vec<(String, PathBuf)> = args
        .values("lambda-dir")
        .iter()
        .filter_map(|v| v.split_once('='))
        .map(|(label, dir)| (label.to_owned(), PathBuf::from(dir)))
        .collect();

    let mut names: Vec<String> = trees
        .iter()
        .flat_map(|t| t.template.functions().into_iter().map(|f| f.binary))
        .collect();
    names.sort();
    names.dedup();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Release profile of each tree's `Cargo.toml`; every function built on its own \
         (`cargo build --release -p <function>`), so it links only its own features. MiB, \
         x86_64 stripped, as built for this run.\n"
    );
    let _ = write!(out, "| binary |");
    for tree in &trees {
        let _ = write!(out, " {} |", tree.label);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---|".repeat(trees.len()));
    for hello in [HELLO_HTTP, HELLO_RUNTIME] {
        let _ = writeln!(
            out,
            "| `{hello}` (baseline) | {} |",
            vec![cell(&hello_dir.join(hello)); trees.len()].join(" | ")
        );
    }
    for name in names
        .iter()
        .chain(std::iter::once(&LOCAL_SERVER.to_owned()))
    {
        let cells: Vec<String> = trees.iter().map(|t| cell(&t.bin_dir.join(name))).collect();
        let label = if name == LOCAL_SERVER {
            format!("`{name}` (local server)")
        } else {
            format!("`{name}`")
        };
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }

    let _ = writeln!(
        out,
        "\n**arm64 `bootstrap` of the largest function** (what Lambda runs: `cargo lambda build \
         --release --arm64 -p <function>` of that tree; only the largest, a full cross-build \
         takes ≈ 45 min here):\n"
    );
    let _ = writeln!(
        out,
        "| tree | largest function (x86_64) | arm64 bootstrap (MiB) |"
    );
    let _ = writeln!(out, "|---|---|---|");
    // Why no arm64 build is here, when there is none (bench.sh says: e.g.
    // no aarch64 standard library on this machine).
    let arm64_note = args
        .value("arm64-note")
        .unwrap_or("not built in this run")
        .to_owned();
    let mut summary = serde_json::Map::new();
    for tree in &trees {
        let name = largest(tree);
        let bootstrap = lambda_dirs
            .iter()
            .find(|(label, _)| label == &tree.label)
            .zip(name.as_ref())
            .map(|((_, dir), name)| dir.join(name).join("bootstrap"));
        let arm = bootstrap.as_ref().and_then(|p| size(p)).map(mib);
        let _ = writeln!(
            out,
            "| {} | `{}` | {} |",
            tree.label,
            name.as_deref().unwrap_or("?"),
            arm.map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| arm64_note.clone())
        );
        summary.insert(
            tree.label.clone(),
            json!({"largest": name, "arm64_bootstrap_mib": arm, "arm64_note": arm64_note,
                   "x86_64_mib": name.as_ref().and_then(|n| size(&tree.bin_dir.join(n))).map(mib)}),
        );
    }
    write_fragment(args, "sizes.md", &out)?;
    write_fragment(
        args,
        "sizes.json",
        &serde_json::to_string_pretty(&Value::Object(summary))?,
    )?;
    Ok(())
}
