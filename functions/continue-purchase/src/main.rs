//! Step task `ContinuePurchase` of `statemachine/review.asl.json` on AWS
//! Lambda. The step itself is `shared::steps`, which the local runner runs
//! too; its errors reach Step Functions under their stable names.

use shared::steps::Step;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::observability::telemetry::init_lambda();
    let deps = shared::lambda::config::lambda_step_deps().await?;
    shared::lambda::run_step(Step::ContinuePurchase, deps).await
}
