//! Lambda glue: from the Lambda runtimes to the shared handlers, so each
//! function's `main.rs` is three lines: set up logs, build dependencies once
//! ([`config`]), run.

pub mod config;

use std::convert::Infallible;

use lambda_http::{Request, RequestExt, service_fn};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;

use crate::api::app::App;
use crate::api::endpoint::Endpoint;
use crate::api::request::ApiRequest;
use crate::steps::{Step, StepDeps, StepError};

/// Converts an API Gateway proxy event into the handlers' request type.
pub fn api_request(event: Request) -> ApiRequest {
    let request_id = event
        .lambda_context_ref()
        .map(|context| context.request_id.clone())
        .unwrap_or_default();
    let path_parameter = |name: &str| {
        event
            .path_parameters_ref()
            .and_then(|params| params.first(name))
            .map(str::to_owned)
    };
    let purchase_id = path_parameter("purchaseId");
    let rule_set_name = path_parameter("ruleSetName");
    let query = event
        .query_string_parameters_ref()
        .map(|params| {
            params
                .iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let (parts, body) = event.into_parts();
    ApiRequest {
        headers: parts.headers,
        body: bytes::Bytes::copy_from_slice(body.as_ref()),
        purchase_id,
        rule_set_name,
        query,
        request_id,
    }
}

/// Serves one API endpoint on `lambda_http`.
pub async fn run_endpoint(endpoint: Endpoint, app: App) -> Result<(), lambda_http::Error> {
    let app = &app;
    lambda_http::run(service_fn(move |event: Request| async move {
        let request = api_request(event);
        let span = tracing::info_span!(
            "request",
            endpoint = endpoint.function_name(),
            request_id = %request.request_id,
            purchase_id = request.purchase_id.as_deref().unwrap_or(""),
        );
        Ok::<_, Infallible>(endpoint.handle(app, &request).instrument(span).await)
    }))
    .await
}

/// Lets a step's error reach Step Functions with its stable name as
/// `errorType` instead of the Rust type name.
impl From<StepError> for Diagnostic {
    fn from(error: StepError) -> Diagnostic {
        Diagnostic {
            error_type: error.name().to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Serves one step task on `lambda_runtime`.
pub async fn run_step(step: Step, deps: StepDeps) -> Result<(), lambda_runtime::Error> {
    let deps = &deps;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| async move {
            let deadline = remaining(event.context.deadline);
            step.run(deps, event.payload, deadline).await
        },
    ))
    .await
}

/// Serves the reconciler on `lambda_runtime`: each scheduled invocation is
/// one pass. Its findings are the invocation's result (and logged).
pub async fn run_reconciler(reconciler: config::Reconciler) -> Result<(), lambda_runtime::Error> {
    let reconciler = &reconciler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: LambdaEvent<Value>| async move {
            let findings = crate::service::reconcile::reconcile(
                reconciler.purchases.as_ref(),
                reconciler.workflow.as_ref(),
                reconciler.stale_after,
            )
            .await
            .map_err(|e| StepError::Transient(e.to_string()))?;
            Ok::<_, StepError>(serde_json::json!({
                "examined": findings.examined,
                "started": findings.started,
                "restarted": findings.restarted,
                "running": findings.running,
                "notified": findings.notified,
                "flagged": findings.flagged,
                "skipped": findings.skipped,
            }))
        },
    ))
    .await
}

/// The invocation's deadline (epoch milliseconds) as an instant, so a step
/// can stop in time.
fn remaining(deadline_ms: u64) -> Option<tokio::time::Instant> {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).ok()?;
    let left = std::time::Duration::from_millis(deadline_ms.checked_sub(now_ms)?);
    Some(tokio::time::Instant::now() + left)
}
