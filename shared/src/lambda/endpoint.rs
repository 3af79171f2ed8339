//! API endpoints on `lambda_http` (feature `lambda-http`): an API Gateway
//! proxy event in, the shared handler, its response out.

use std::convert::Infallible;

use lambda_http::{Request, RequestExt, service_fn};
use tracing::Instrument;

use crate::api::app::App;
use crate::api::endpoint::Endpoint;
use crate::api::request::ApiRequest;

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
