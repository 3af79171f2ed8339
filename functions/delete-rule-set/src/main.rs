//! API endpoint `DeleteRuleSet` on AWS Lambda (API Gateway REST proxy integration).
//! The handler itself is `shared::api`, which the local server runs too.

use shared::api::endpoint::Endpoint;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::observability::telemetry::init_lambda();
    // Built once per cold start and reused by every invocation.
    let app = shared::lambda::config::lambda_app().await?;
    shared::lambda::run_endpoint(Endpoint::DeleteRuleSet, app).await
}
