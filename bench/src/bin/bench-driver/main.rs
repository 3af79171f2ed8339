//! `bench-driver`: runs one benchmark section and writes its Markdown
//! fragment (and a JSON summary where the report's table needs numbers)
//! under `--out` (default `target/bench`); `report` stitches the fragments
//! into `docs/benchmarks.md`. Driven by `scripts/bench.sh`.
//!
//! A *tree* is `LABEL=SOURCE_DIR:BIN_DIR` (`--tree` may repeat): the source
//! gives the template, events and catalog, the directory the release
//! binaries built from it.
//!
//! ```text
//! bench-driver coldstart --moto URL --tree T... [--runs 20] [--hello-dir DIR]
//! bench-driver runtime-race --binary PATH [--runs 1000]
//! bench-driver smoke --tree T [--upstream URL]
//! bench-driver cost --moto URL --tree T... [--purchases 5]
//! bench-driver throughput --tree T... [--purchases 3000] [--clients 16]
//! bench-driver load --tree T... [--wrk wrk] [--duration 10] [--connections 16]
//! bench-driver criterion --criterion LABEL=DIR...
//! bench-driver sizes --tree T... [--hello-dir DIR] [--lambda-dir LABEL=DIR...]
//! bench-driver trees --tree LABEL=DESCRIPTION:SOURCE_DIR...
//! bench-driver report --doc docs/benchmarks.md [--trees before,after]
//! ```
//!
//! Modules: `trees` (a tree's stack on moto, its functions' environment and
//! events, its local server), one module per command.

mod coldstart;
mod cost;
mod criterion_report;
mod load;
mod race;
mod report;
mod sizes;
mod smoke;
mod throughput;
mod trees;

use std::collections::HashMap;
use std::path::PathBuf;

use bench::Result;

pub struct Args {
    values: HashMap<String, Vec<String>>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {flag:?}"))?;
            let value = rest
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            values
                .entry(name.to_owned())
                .or_default()
                .push(value.clone());
        }
        Ok(Args { values })
    }

    /// The (last) value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a repeated `--name`.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn required(&self, name: &str) -> Result<&str> {
        self.value(name)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name} {text:?} is not a number").into()),
        }
    }

    pub fn out_dir(&self) -> PathBuf {
        PathBuf::from(self.value("out").unwrap_or("target/bench"))
    }

    /// `<out>/<name>`, emptied first: an earlier run's files must not mix
    /// with this one's.
    pub fn fresh_work_dir(&self, name: &str) -> Result<PathBuf> {
        let work = self.out_dir().join(name);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        Ok(work)
    }

    /// Every `--tree`, parsed.
    pub fn trees(&self) -> Result<Vec<trees::Tree>> {
        self.values("tree")
            .iter()
            .map(|t| trees::Tree::parse(t))
            .collect()
    }
}

pub fn write_fragment(args: &Args, name: &str, text: &str) -> Result<()> {
    let dir = args.out_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "–".into()
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

const USAGE: &str = "usage: bench-driver coldstart|runtime-race|smoke|cost|throughput|load|criterion|sizes|trees|report [--option value]...";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let options = Args::parse(&args[1..])?;
        match command.as_str() {
            "coldstart" => coldstart::run(&options).await,
            "runtime-race" => race::run(&options).await,
            "smoke" => smoke::run(&options).await,
            "cost" => cost::run(&options).await,
            "throughput" => throughput::run(&options).await,
            "load" => load::run(&options).await,
            "criterion" => criterion_report::run(&options),
            "sizes" => sizes::run(&options),
            "trees" => report::describe_trees(&options),
            "report" => report::run(&options),
            other => Err(format!("unknown command {other:?}\n{USAGE}").into()),
        }
    });
    if let Err(error) = result {
        eprintln!("error: bench-driver {command}: {error}");
        std::process::exit(1);
    }
}
