//! `bench-driver`: runs one benchmark section and writes its Markdown
//! fragment under `--out` (default `target/bench`); `report` stitches the
//! fragments into `docs/benchmarks.md`. Driven by `scripts/bench.sh`.
//!
//! ```text
//! bench-driver coldstart --moto URL [--runs 20] [--bin-dir target/release] [--hello-dir DIR]
//! bench-driver load [--wrk wrk] [--duration 10] [--connections 16]
//! bench-driver cost --moto URL [--purchases 5]
//! bench-driver criterion [--criterion-dir target/criterion]
//! bench-driver sizes [--bin-dir target/release] [--hello-dir DIR] [--lambda-dir target/lambda]
//! bench-driver report --doc docs/benchmarks.md
//! ```

mod coldstart;
mod cost;
mod criterion_report;
mod load;
mod report;
mod sizes;

use std::collections::HashMap;
use std::path::PathBuf;

use bench::Result;

pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args> {
        let mut values = HashMap::new();
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {flag:?}"))?;
            let value = rest
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_owned(), value.clone());
        }
        Ok(Args { values })
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
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

const USAGE: &str =
    "usage: bench-driver coldstart|load|cost|criterion|sizes|report [--option value]...";

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
            "load" => load::run(&options).await,
            "cost" => cost::run(&options).await,
            "criterion" => criterion_report::run(&options),
            "sizes" => sizes::run(&options),
            "report" => report::run(&options),
            other => Err(format!("unknown command {other:?}\n{USAGE}").into()),
        }
    });
    if let Err(error) = result {
        eprintln!("error: bench-driver {command}: {error}");
        std::process::exit(1);
    }
}
