//! `purchase-orchestrator`: the local orchestrator.
//!
//! - `purchase-orchestrator [serve]` — serves the API on `HOST:PORT`
//!   (default 127.0.0.1:3000) under `/purchase-orchestrator`.
//! - `purchase-orchestrator token --customer ID [--scope "purchases:read purchases:write"] [--ttl SECONDS]`
//!   — prints a development JWT the local server accepts.

use std::time::Duration;

use local::{LocalOptions, LocalSystem};
use shared::auth::{KeySource, Scope};

const USAGE: &str = "usage:
  purchase-orchestrator [serve]
  purchase-orchestrator token --customer ID [--scope \"purchases:read purchases:write\"] [--ttl SECONDS]";

#[tokio::main]
async fn main() {
    shared::observability::telemetry::init_local();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        Some("token") => token(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<(), String> {
    let options = LocalOptions::from_env().map_err(|e| e.to_string())?;
    let data_dir = options.data_dir.clone();
    let system = LocalSystem::start(options)
        .await
        .map_err(|e| e.to_string())?;
    let host = shared::lambda::config::env("HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port = shared::lambda::config::env("PORT").unwrap_or_else(|| "3000".into());
    let address = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    tracing::info!(
        "purchase orchestrator listening on http://{address}{} (data in {})",
        shared::api::request::BASE_PATH,
        data_dir.display()
    );
    tracing::info!(
        "review console on http://{address}{}/console/ (developer sign-in {})",
        shared::api::request::BASE_PATH,
        if system.dev_sign_in_available() {
            "on"
        } else {
            "off: tokens are not verified with the generated development secret"
        }
    );
    axum::serve(listener, system.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down; unfinished executions resume on next start");
        })
        .await
        .map_err(|e| e.to_string())
}

fn token(args: &[String]) -> Result<(), String> {
    let mut customer = None;
    let mut scope = "purchases:read purchases:write".to_owned();
    let mut ttl = 3600u64;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--customer" => customer = Some(value.clone()),
            "--scope" => scope = value.clone(),
            "--ttl" => {
                ttl = value
                    .parse()
                    .map_err(|_| format!("--ttl {value:?} is not a number of seconds"))?
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let customer = customer.ok_or_else(|| format!("--customer is required\n{USAGE}"))?;
    let scopes = scope
        .split_whitespace()
        .map(|s| Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let data_dir = std::path::PathBuf::from(
        shared::lambda::config::env("DATA_DIR").unwrap_or_else(|| "./.data".into()),
    );
    let config = local::auth_config(&data_dir).map_err(|e| e.to_string())?;
    let KeySource::Hs256 { secret } = &config.keys else {
        return Err(
            "JWKS_URL is set: tokens come from your authorization server, not from this command"
                .into(),
        );
    };
    let token = shared::auth::mint_hs256_token(
        secret,
        &config.issuer,
        &config.audience,
        &customer,
        &scopes,
        Duration::from_secs(ttl),
    )
    .map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}
