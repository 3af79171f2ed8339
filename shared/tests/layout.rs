//! The shared crate's layers, kept honest: every `use` of another module is
//! an edge between two files, and the edges must point inward (README and
//! `docs/architecture.md` describe the layers) with no loop anywhere. The
//! domain imports no transport, SDK or storage crate at all.
//!
//! Test modules (`#[cfg(test)]`, always at the end of a file here) are left
//! out: a test may build whatever it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["domain", "purchase"]`) per file under `src/`.
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let mut segments: Vec<String> = relative
                .iter()
                .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
                segments.pop();
            }
            found.insert(segments, path);
        }
    }
    found
}

/// The code of a file without comments, strings and its test module.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names through `crate::`, `super::` or a `use`
/// tree, as absolute module paths (segments after `crate`).
fn referenced_paths(module: &[String], is_mod_file: bool, code: &str) -> Vec<Vec<String>> {
    // The module `super` refers to: the parent of this module.
    let base = |kind: &str| -> Option<Vec<String>> {
        match kind {
            "crate" => Some(Vec::new()),
            "super" => {
                let _ = is_mod_file;
                let mut parent = module.to_vec();
                parent.pop()?;
                Some(parent)
            }
            "self" => Some(module.to_vec()),
            _ => None,
        }
    };
    let mut paths = Vec::new();
    // `use` statements, with their brace groups expanded.
    for statement in code.split(';') {
        let statement = statement.trim();
        let Some(tree) = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
            .or_else(|| statement.strip_prefix("use "))
        else {
            continue;
        };
        for path in expand(&tree.split_whitespace().collect::<String>()) {
            let mut segments = path.split("::");
            let first = segments.next().unwrap_or_default();
            if let Some(mut absolute) = base(first) {
                let mut rest: Vec<String> = segments.map(str::to_owned).collect();
                // `super::super::x`
                while rest.first().map(String::as_str) == Some("super") {
                    rest.remove(0);
                    absolute.pop();
                }
                absolute.extend(rest);
                paths.push(absolute);
            }
        }
    }
    // Paths written inline: `crate::observability::metrics::record(..)`.
    for kind in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(kind) {
            let before = rest[..at].chars().last();
            rest = &rest[at + kind.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if let Some(mut absolute) = base(kind.trim_end_matches("::")) {
                absolute.extend(
                    path.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                paths.push(absolute);
            }
        }
    }
    paths
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.trim_end_matches("::").to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .map(|p| p.trim_end_matches("::self").to_owned())
        .collect()
}

/// The file a path lands in: its longest prefix that is a module.
fn resolve<'a>(
    path: &[String],
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

/// module → the modules its code uses (not itself, not its own children,
/// which it declares rather than uses).
fn edges() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let is_mod_file = file.ends_with("mod.rs");
        let mut targets = BTreeSet::new();
        for path in referenced_paths(module, is_mod_file, &code_of(file)) {
            if let Some(target) = resolve(&path, &modules)
                && target != module
                && !target.is_empty()
            {
                targets.insert(target.clone());
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = edges();
    // Depth-first search for a back edge, reporting the loop it closes.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        loops: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let cycle: Vec<String> = path[at..].iter().chain([node]).map(|m| name(m)).collect();
            loops.push(cycle.join(" → "));
            return;
        }
        if !done.insert(node.clone()) {
            return;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, loops);
        }
        path.pop();
    }
    let mut loops = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut loops);
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

/// Which layers a layer's code may use (besides itself).
fn allowed(layer: &str) -> &'static [&'static str] {
    match layer {
        "domain" => &[],
        "ports" => &["domain"],
        "observability" => &["domain"],
        "service" => &["ports", "domain", "observability"],
        "adapters" => &["ports", "domain"],
        "auth" => &[],
        "api" => &["service", "auth", "ports", "domain", "observability"],
        "steps" => &["service", "ports", "domain"],
        "lambda" => &[
            "adapters",
            "api",
            "auth",
            "domain",
            "observability",
            "ports",
            "service",
            "steps",
        ],
        _ => &[],
    }
}

#[test]
fn every_layer_uses_only_the_layers_inside_it() {
    let mut wrong = Vec::new();
    for (module, targets) in edges() {
        let Some(layer) = module.first() else {
            continue; // lib.rs declares the layers
        };
        for target in targets {
            let other = &target[0];
            if other != layer && !allowed(layer).contains(&other.as_str()) {
                wrong.push(format!("{} uses {}", name(&module), name(&target)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies pointing outward:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_domain_imports_no_transport_sdk_or_storage_crate() {
    let forbidden = [
        "http::",
        "aws_",
        "redb",
        "lambda_http",
        "lambda_runtime",
        "reqwest",
        "axum",
        "tokio",
        "jsonwebtoken",
        "async_trait",
    ];
    let mut found = Vec::new();
    for (module, file) in modules() {
        if module.first().map(String::as_str) != Some("domain") {
            continue;
        }
        let code = code_of(&file);
        for word in forbidden {
            if code.contains(word) {
                found.push(format!("{} mentions {word}", name(&module)));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The crates behind a Cargo feature (shared/Cargo.toml, the crate doc's
/// table) and the only modules whose code may name them. A function built
/// without the feature then links none of the crate; naming it anywhere
/// else (the always-built core, another feature's module) would either not
/// compile in some function's build or quietly widen the feature.
const OPTIONAL_CRATES: &[(&str, &str, &[&str])] = &[
    ("redb", "embedded", &["adapters::embedded"]),
    ("jsonwebtoken", "api", &["auth"]),
    (
        "reqwest",
        "api, steps",
        &[
            "auth::jwks",
            "adapters::http_client",
            "adapters::http_payment",
            "adapters::http_provisioning",
        ],
    ),
    (
        "aws_sdk_dynamodb",
        "dynamodb",
        &["adapters::dynamodb", "lambda::config"],
    ),
    ("aws_sdk_sfn", "sfn", &["adapters::sfn", "lambda::config"]),
    (
        "aws_config",
        "aws-sdk",
        &[
            "adapters::aws_sdk",
            "adapters::dynamodb",
            "adapters::sfn",
            "lambda::config",
        ],
    ),
    ("aws_smithy_http_client", "aws-sdk", &["adapters::aws_sdk"]),
    (
        "aws_credential_types",
        "aws-sdk",
        &["adapters::aws_sdk", "lambda::config"],
    ),
    ("lambda_http", "lambda-http", &["lambda::endpoint"]),
    ("lambda_runtime", "lambda-runtime", &["lambda::task"]),
];

#[test]
fn optional_crates_are_named_only_by_the_modules_their_feature_gates() {
    let mut found = Vec::new();
    for (module, file) in modules() {
        let module_name = name(&module);
        let code = code_of(&file);
        for (krate, feature, allowed) in OPTIONAL_CRATES {
            let inside = allowed
                .iter()
                .any(|a| module_name == *a || module_name.starts_with(&format!("{a}::")));
            if !inside && names_crate(&code, krate) {
                found.push(format!(
                    "{module_name} names {krate} (feature {feature}; allowed in {})",
                    allowed.join(", ")
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// `krate::` or `use krate` as a whole word (not `my_redb::`).
fn names_crate(code: &str, krate: &str) -> bool {
    code.match_indices(krate).any(|(at, _)| {
        let before = code[..at].chars().last();
        let after = &code[at + krate.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as "))
    })
}

#[test]
fn the_checker_sees_edges_it_must_see() {
    // Guards the parsing above: edges the code certainly has.
    let graph = edges();
    let has = |from: &str, to: &str| {
        let split = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        graph
            .get(&split(from))
            .is_some_and(|t| t.contains(&split(to)))
    };
    assert!(has("api::purchases", "domain::lifecycle"));
    assert!(has("service", "observability::metrics"));
    assert!(has(
        "adapters::dynamodb::purchases",
        "adapters::dynamodb::codec"
    ));
    assert!(has("steps", "ports::payment"));
    assert!(names_crate("use redb::{Database};", "redb"));
    assert!(names_crate("x: lambda_runtime::Error", "lambda_runtime"));
    assert!(!names_crate("purchases.redb", "redb"));
    assert!(!names_crate("my_redb::x", "redb"));
    assert_eq!(
        expand("a::{b,c::{d,e},f::self}"),
        ["a::b", "a::c::d", "a::c::e", "a::f"]
    );
}
