//! Calling the Invoke API over HTTP, as Step Functions and API Gateway do:
//! whatever endpoint is configured, ours or another.

use bytes::Bytes;

/// A completed `Invoke` (HTTP 200): the function's answer, or its error.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoked {
    pub request_id: String,
    pub executed_version: String,
    /// `X-Amz-Function-Error` (`Unhandled`, `Handled`), when the function failed.
    pub function_error: Option<String>,
    pub payload: Bytes,
}

/// An `Invoke` that did not reach the function, or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeFailure {
    /// The service answered an error (`x-amzn-ErrorType`).
    #[error("{error_type} (HTTP {status}): {message}")]
    Service {
        status: u16,
        error_type: String,
        message: String,
    },
    /// No answer: connection refused, reset, or unreadable.
    #[error("{0}")]
    Transport(String),
}

#[derive(Clone)]
pub struct LambdaClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
}

impl LambdaClient {
    pub fn new(endpoint: &str) -> Result<LambdaClient, String> {
        let endpoint = reqwest::Url::parse(endpoint)
            .map_err(|e| format!("Lambda endpoint {endpoint:?}: {e}"))?;
        // No overall deadline: an invocation lasts as long as the function's
        // timeout, which the service enforces.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(LambdaClient { http, endpoint })
    }

    pub async fn invoke(&self, function: &str, payload: Bytes) -> Result<Invoked, InvokeFailure> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| {
                InvokeFailure::Transport("the Lambda endpoint cannot be a base URL".into())
            })?
            .pop_if_empty()
            .extend(["2015-03-31", "functions", function, "invocations"]);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-amz-invocation-type", "RequestResponse")
            .body(payload)
            .send()
            .await
            .map_err(|e| InvokeFailure::Transport(e.to_string()))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let request_id = header("x-amzn-requestid").unwrap_or_default();
        let executed_version = header("x-amz-executed-version").unwrap_or_else(|| "$LATEST".into());
        let function_error = header("x-amz-function-error");
        let error_type = header("x-amzn-errortype");
        let body = response
            .bytes()
            .await
            .map_err(|e| InvokeFailure::Transport(e.to_string()))?;
        if status == 200 {
            return Ok(Invoked {
                request_id,
                executed_version,
                function_error,
                payload: body,
            });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(InvokeFailure::Service {
            status,
            // `x-amzn-ErrorType` may carry a suffix (`Name:http://...`).
            error_type: error_type
                .map(|t| t.split(':').next().unwrap_or_default().to_owned())
                .unwrap_or_else(|| {
                    if status >= 500 {
                        "ServiceException"
                    } else {
                        "AWSLambdaException"
                    }
                    .to_owned()
                }),
            message,
        })
    }
}
