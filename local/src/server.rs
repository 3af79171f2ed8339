//! The local HTTP server: the spec's routes under `/purchase-orchestrator`,
//! each handing the request to the same handler the Lambda runs.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::routing::{MethodFilter, MethodRouter};
use shared::api::app::App;
use shared::api::endpoint::{Endpoint, PURCHASE_ID_PARAMETER, RULE_SET_NAME_PARAMETER};
use shared::api::error::ApiError;
use shared::api::request::{ApiRequest, ApiResponse, BASE_PATH};
use shared::domain::validation::limits::MAX_BODY_BYTES;

async fn dispatch(
    endpoint: Endpoint,
    app: &App,
    params: &HashMap<String, String>,
    request: Request,
) -> ApiResponse {
    let request_id = uuid::Uuid::now_v7().to_string();
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().map(url_pairs).unwrap_or_default();
    // Read one byte past the limit so an oversized body is told apart from
    // one exactly at the limit, and answered like every other bad input.
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::invalid("body", format!("must be at most {MAX_BODY_BYTES} bytes"))
                .into_response(&request_id);
        }
    };
    let api_request = ApiRequest {
        headers: parts.headers,
        body,
        purchase_id: params.get(PURCHASE_ID_PARAMETER).cloned(),
        rule_set_name: params.get(RULE_SET_NAME_PARAMETER).cloned(),
        query,
        request_id: request_id.clone(),
    };
    let mut response = endpoint.handle(app, &api_request).await;
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Decodes `a=1&b=x%20y` (API Gateway hands the Lambda decoded pairs too).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response(response: ApiResponse) -> axum::response::Response {
    response.map(Body::from)
}

/// The API's routes, built from the same endpoint table the Lambda
/// functions and `template.yaml` follow, under `/purchase-orchestrator`.
pub fn router(app: App) -> Router {
    let mut paths: BTreeMap<&'static str, MethodRouter<App>> = BTreeMap::new();
    for endpoint in Endpoint::ALL {
        let (method, path) = endpoint.route();
        let Ok(filter) = MethodFilter::try_from(method) else {
            continue; // every method in the table is one axum routes
        };
        let handler = move |State(app): State<App>,
                            Path(params): Path<HashMap<String, String>>,
                            request: Request| async move {
            response(dispatch(endpoint, &app, &params, request).await)
        };
        let routes = paths.remove(path).unwrap_or_default();
        paths.insert(path, routes.on(filter, handler));
    }
    let mut api = Router::new();
    for (path, routes) in paths {
        api = api.route(path, routes);
    }
    Router::new()
        .nest(BASE_PATH, api.with_state(app))
        .fallback(|request: Request| async move {
            let id = uuid::Uuid::now_v7().to_string();
            response(
                ApiError::NotFound(format!(
                    "route {} {}",
                    request.method(),
                    request.uri().path()
                ))
                .into_response(&id),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        assert_eq!(
            url_pairs("customerId=c%2D1&status=PENDING&x=a+b&bad=%zz"),
            vec![
                ("customerId".to_owned(), "c-1".to_owned()),
                ("status".to_owned(), "PENDING".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
            ]
        );
    }
}
