//! The AWS JSON 1.0 protocol of Step Functions: `POST /` with
//! `X-Amz-Target: AWSStepFunctions.<Operation>`, camelCase JSON in and
//! out, timestamps in epoch seconds, errors as `{"__type", "message"}`.
//! What the AWS SDK (aws-sdk-sfn, and so `shared::adapters::sfn`) reads.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{SfnError, StepFunctionsService};

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

pub fn router(service: Arc<StepFunctionsService>) -> Router {
    Router::new().route("/", post(handle)).with_state(service)
}

fn reply(status: StatusCode, body: Value) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    (
        status,
        [
            ("content-type", CONTENT_TYPE.to_owned()),
            ("x-amzn-requestid", request_id),
        ],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for SfnError {
    fn into_response(self) -> Response {
        reply(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            json!({ "__type": self.code, "message": self.message }),
        )
    }
}

fn text<'a>(request: &'a Value, field: &str) -> Result<&'a str, SfnError> {
    request.get(field).and_then(Value::as_str).ok_or_else(|| SfnError {
        status: 400,
        code: "ValidationException",
        message: format!("1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"),
    })
}

fn optional(request: &Value, field: &str) -> Option<String> {
    request
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn seconds(at: chrono::DateTime<chrono::Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

async fn handle(
    State(service): State<Arc<StepFunctionsService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix("AWSStepFunctions.") else {
        return SfnError {
            status: 400,
            code: "UnknownOperationException",
            message: format!("unknown target {target:?}"),
        }
        .into_response();
    };
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return SfnError {
                    status: 400,
                    code: "SerializationException",
                    message: e.to_string(),
                }
                .into_response();
            }
        }
    };
    let answer = match operation {
        "StartExecution" => text(&request, "stateMachineArn").and_then(|arn| {
            service
                .start_execution(arn, optional(&request, "name"), optional(&request, "input"))
                .map(|started| {
                    json!({
                        "executionArn": started.execution_arn,
                        "startDate": seconds(started.start_date),
                    })
                })
        }),
        "DescribeExecution" => {
            text(&request, "executionArn").and_then(|arn| service.describe_execution(arn))
        }
        "SendTaskSuccess" => text(&request, "taskToken").and_then(|token| {
            let output = text(&request, "output")?;
            service.send_task_success(token, output).map(|()| json!({}))
        }),
        "SendTaskFailure" => text(&request, "taskToken").and_then(|token| {
            let error = optional(&request, "error").unwrap_or_default();
            let cause = optional(&request, "cause").unwrap_or_default();
            service
                .send_task_failure(token, &error, &cause)
                .map(|()| json!({}))
        }),
        "SendTaskHeartbeat" => text(&request, "taskToken")
            .and_then(|token| service.send_task_heartbeat(token).map(|()| json!({}))),
        "RedriveExecution" => text(&request, "executionArn").and_then(|arn| {
            service
                .redrive_execution(arn)
                .map(|at| json!({ "redriveDate": seconds(at) }))
        }),
        other => Err(SfnError {
            status: 400,
            code: "UnknownOperationException",
            message: format!("aws-local does not implement {other}"),
        }),
    };
    match answer {
        Ok(body) => reply(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}
