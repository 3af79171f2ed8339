//! `runtime-race`: the reproduction of the cold-start run that got no
//! response within 30 s. Back-to-back cold starts of one binary (a hello
//! world: no AWS, no moto, no proxy involved), first sharing one Runtime API
//! listener re-armed per run (the old driver), then with a listener per run
//! (today's). A run whose event a previous, killed process's last poll took
//! is counted; its own process then waits for an event that never comes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::Result;
use bench::invoke::{Invocation, StopAt, invoke_once};
use bench::runtime_api::RuntimeApi;
use bytes::Bytes;

use crate::trees::lambda_runtime_env;
use crate::{Args, write_fragment};

#[derive(Default, Debug)]
struct Tally {
    runs: usize,
    stolen: usize,
    no_response: usize,
}

pub async fn run(args: &Args) -> Result<()> {
    let binary = PathBuf::from(args.required("binary")?);
    let runs: usize = args.number("runs", 1000)?;
    let timeout = Duration::from_millis(args.number("timeout-ms", 2000)?);
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("function")
        .to_owned();
    let event = Bytes::from_static(br#"{"purchaseId":"0197a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"}"#);
    let env = lambda_runtime_env(&name, 128);
    let logs = args.out_dir().join("runtime-race");
    std::fs::create_dir_all(&logs)?;

    // The old way: one listener for every run.
    let shared = RuntimeApi::start(&name, event.clone()).await?;
    let mut old = Tally::default();
    for run in 0..runs {
        if run > 0 {
            shared.rearm(&name, event.clone());
        }
        let mut child = Command::new(&binary)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", shared.address())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let deadline = Instant::now() + timeout;
        while shared.observation().done.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = shared.observation();
        let _ = child.kill();
        let _ = child.wait();
        old.runs += 1;
        old.stolen += usize::from(seen.taken_by_stale_connection);
        old.no_response += usize::from(seen.done.is_none());
    }
    drop(shared);

    // Today's way: a listener per run (what every benchmark uses).
    let mut new = Tally::default();
    for _ in 0..runs {
        let result = invoke_once(Invocation {
            name: &name,
            binary: &binary,
            env: &env,
            event: event.clone(),
            wrapper: &[],
            timeout,
            log: logs.join("run.log"),
            stop_at: StopAt::Response,
        })
        .await;
        new.runs += 1;
        new.no_response += usize::from(result.is_err());
    }
    eprintln!("runtime-race: shared listener {old:?}; listener per run {new:?}");

    let mut out = String::new();
    let _ = writeln!(
        out,
        "`bench-driver runtime-race`: {runs} back-to-back cold starts of `{name}` (no AWS calls; \
         no moto or proxy involved), the process killed as soon as its response arrived, as the \
         cold-start runs do.\n"
    );
    let _ = writeln!(
        out,
        "| Runtime API | runs | event taken by the previous (killed) process's last poll | no response within {timeout:?} |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| one listener, re-armed per run (before) | {} | {} | {} |",
        old.runs, old.stolen, old.no_response
    );
    let _ = writeln!(
        out,
        "| a listener per run (now) | {} | – (cannot happen) | {} |",
        new.runs, new.no_response
    );
    write_fragment(args, "runtime-race.md", &out)?;
    Ok(())
}
