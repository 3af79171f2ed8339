//! `aws-local`: the AWS deployment of `template.yaml` run on this machine
//! (see the crate doc). Runs in the foreground; SIGTERM or Ctrl-C stops it
//! and every function process. `scripts/aws-local.sh` starts moto and runs it.
//!
//! Configuration: [`Options::from_env`].

use aws_local::{AwsLocal, Options};

#[tokio::main]
async fn main() {
    shared::observability::telemetry::init_local();
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run() -> Result<(), String> {
    let options = Options::from_env()?;
    let shape = AwsLocal::start(options).await.map_err(|e| e.to_string())?;
    tracing::info!(
        "API Gateway shim on {}{} ({} functions, stage {})",
        shape.api_url,
        shared::api::request::BASE_PATH,
        shape.template().functions.len(),
        shape.template().api.stage,
    );
    tracing::info!("Lambda Invoke API on {}", shape.lambda_url);
    tracing::info!("Step Functions endpoint on {}", shape.states_url);
    tracing::info!(
        "payment and provisioning simulators on {}",
        shape.providers_url
    );
    stopped().await;
    tracing::info!("stopping: executions resume on the next start; killing function processes");
    shape.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
