//! A function binary for profiling: does exactly what `functions/<name>/src/main.rs`
//! does for the function named by `AWS_LAMBDA_FUNCTION_NAME`, but is built
//! with symbols (the bench crate is not stripped), so callgrind and perf can
//! name where a cold start spends its time.

use shared::api::endpoint::Endpoint;
use shared::steps::Step;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")?;
    shared::observability::telemetry::init_lambda();
    if let Some(endpoint) = Endpoint::ALL
        .into_iter()
        .find(|e| e.function_name() == name)
    {
        let app = shared::lambda::config::lambda_app().await?;
        shared::lambda::run_endpoint(endpoint, app).await
    } else if let Some(step) = Step::from_function_name(&name) {
        let deps = shared::lambda::config::lambda_step_deps().await?;
        shared::lambda::run_step(step, deps).await
    } else {
        Err(format!("unknown function {name:?}").into())
    }
}
