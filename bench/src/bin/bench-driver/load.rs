//! Local server throughput and latency under wrk, against a bare hyper
//! hello-world server, GET and POST, in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::fixtures;
use bench::{Result, http_client};
use serde_json::Value;

use crate::trees::LocalServer;
use crate::{Args, free_port, write_fragment};

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
struct WrkResult {
    requests: f64,
    seconds: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

impl WrkResult {
    fn rps(&self) -> f64 {
        self.requests / self.seconds
    }
}

pub async fn run(args: &Args) -> Result<()> {
    let wrk = args.value("wrk").unwrap_or("wrk").to_owned();
    let seconds: u64 = args.number("duration", 10)?;
    let connections: u64 = args.number("connections", 16)?;
    let hello_dir = PathBuf::from(args.value("hello-dir").unwrap_or("target/release"));
    let work = args.fresh_work_dir("load")?;
    let trees = args.trees()?;

    let token = fixtures::user_token()?;
    let create_body = fixtures::create_body().to_string();
    let auth = format!("Bearer {token}");
    let get_script = script(&work, "get", "GET", None, &auth)?;
    let post_script = script(&work, "post", "POST", Some(&create_body), &auth)?;
    let wrk_run = |script: &Path, url: String| {
        let (wrk, script) = (wrk.clone(), script.to_owned());
        async move { run_wrk(&wrk, &script, &url, seconds, connections).await }
    };

    // The bare hyper hello world.
    let hello_port = free_port()?;
    let hello_addr = format!("127.0.0.1:{hello_port}");
    let hello = Server {
        child: Command::new(hello_dir.join("hello-hyper"))
            .arg(hello_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("hello-hyper: {e}"))?,
    };
    wait_for_port(&hello_addr).await?;
    let hello_url = format!("http://{hello_addr}/purchase-orchestrator/purchases");
    let hello_get = wrk_run(&get_script, hello_url.clone()).await?;
    let hello_post = wrk_run(&post_script, hello_url).await?;
    drop(hello);

    // Each tree's local server: embedded store on disk, its own catalog.
    let mut gets = Vec::new();
    let mut posts = Vec::new();
    for tree in &trees {
        let dir = work.join(&tree.label);
        let server = LocalServer::start(tree, &dir, &[("RUST_LOG".into(), "warn".into())]).await?;
        let (status, created) = http_client::call(
            &server.addr,
            http::Method::POST,
            "/purchase-orchestrator/purchases",
            &token,
            Some(&fixtures::create_body()),
        )
        .await?;
        let purchase_id = created["purchaseId"]
            .as_str()
            .ok_or_else(|| format!("seeding POST answered {status} {created}"))?
            .to_owned();
        let get_url = format!(
            "http://{}/purchase-orchestrator/purchases/{purchase_id}",
            server.addr
        );
        let post_url = format!("http://{}/purchase-orchestrator/purchases", server.addr);
        gets.push((tree.label.clone(), wrk_run(&get_script, get_url).await?));
        posts.push((tree.label.clone(), wrk_run(&post_script, post_url).await?));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "`wrk -t1 -c{connections} -d{seconds}s` per row (closed loop, keep-alive), wrk and the \
         server sharing the machine's 2 cores, one after the other. The local servers run the \
         release `purchase-orchestrator` of each tree with the embedded store on disk, \
         `RUST_LOG=warn`, real JWT verification on every request. GET reads one purchase; POST \
         creates a purchase (201) and starts its in-process workflow, which keeps running after \
         the response, so POST numbers include that background work.\n"
    );
    let _ = writeln!(
        out,
        "| server | request | req/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | non-2xx/errors | req/s vs hello | p50 vs hello | p99 vs hello |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = vec![("hello-hyper".to_owned(), "GET", &hello_get, &hello_get)];
    rows.extend(gets.iter().map(|(label, r)| {
        (
            format!("{label}: purchase-orchestrator"),
            "GET /purchases/{id}",
            r,
            &hello_get,
        )
    }));
    rows.push(("hello-hyper".to_owned(), "POST", &hello_post, &hello_post));
    rows.extend(posts.iter().map(|(label, r)| {
        (
            format!("{label}: purchase-orchestrator"),
            "POST /purchases",
            r,
            &hello_post,
        )
    }));
    for (server, request, result, baseline) in rows {
        let _ = writeln!(
            out,
            "| {server} | {request} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.1}× | {:.1}× |",
            result.rps(),
            result.p50_ms,
            result.p90_ms,
            result.p99_ms,
            result.max_ms,
            result.errors,
            result.rps() / baseline.rps(),
            result.p50_ms / baseline.p50_ms,
            result.p99_ms / baseline.p99_ms,
        );
    }
    write_fragment(args, "load.md", &out)?;
    Ok(())
}

async fn wait_for_port(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn lua_string(text: &str) -> String {
    format!("{text:?}")
}

/// A wrk script: method, headers, body, and a `done` hook that prints the
/// results as one JSON line.
fn script(dir: &Path, name: &str, method: &str, body: Option<&str>, auth: &str) -> Result<PathBuf> {
    let mut lua = format!(
        "wrk.method = {}\nwrk.headers[\"Authorization\"] = {}\nwrk.headers[\"Accept\"] = \"application/json\"\n",
        lua_string(method),
        lua_string(auth)
    );
    if let Some(body) = body {
        let _ = writeln!(
            lua,
            "wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}",
            lua_string(body)
        );
    }
    lua.push_str(
        r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status + e.connect + e.read + e.write + e.timeout))
end
"#,
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua)?;
    Ok(path)
}

async fn run_wrk(
    wrk: &str,
    script: &Path,
    url: &str,
    seconds: u64,
    connections: u64,
) -> Result<WrkResult> {
    let output = tokio::task::spawn_blocking({
        let (wrk, script, url) = (wrk.to_owned(), script.to_owned(), url.to_owned());
        move || {
            Command::new(wrk)
                .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
                .args(["--timeout", "10s", "-s"])
                .arg(script)
                .arg(url)
                .output()
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCHJSON "))
        .ok_or_else(|| {
            format!(
                "wrk printed no result: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let v: Value = serde_json::from_str(line)?;
    let ms = |key: &str| v[key].as_f64().unwrap_or(f64::NAN) / 1000.0;
    Ok(WrkResult {
        requests: v["requests"].as_f64().unwrap_or(0.0),
        seconds: v["duration_us"].as_f64().unwrap_or(f64::NAN) / 1e6,
        p50_ms: ms("p50_us"),
        p90_ms: ms("p90_us"),
        p99_ms: ms("p99_us"),
        max_ms: ms("max_us"),
        errors: v["errors"].as_u64().unwrap_or(0),
    })
}
