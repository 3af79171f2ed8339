//! The reconciler on AWS Lambda, run by an EventBridge schedule every few
//! minutes: purchases that are not final and have not changed for
//! `RECONCILE_AFTER_SECONDS` are checked against their executions
//! (`shared::service::reconcile`, which the local server runs too).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::observability::telemetry::init_lambda();
    let reconciler = shared::lambda::config::lambda_reconciler().await?;
    shared::lambda::run_reconciler(reconciler).await
}
