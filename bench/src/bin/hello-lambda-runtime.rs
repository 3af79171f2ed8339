//! Baseline for the step functions' cold start: a hello-world
//! `lambda_runtime` function (JSON in, JSON out).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(json!({ "purchaseId": event.payload["purchaseId"], "status": "OK" }))
    }))
    .await
}
