//! The API Gateway REST shim: routes from the functions' `Api` events,
//! Lambda proxy integration events built as API Gateway builds them
//! (`events/*.json` are real ones), the functions invoked through the
//! Invoke API, their proxy responses mapped back, and API Gateway's own
//! answers (`GatewayResponses`) where it would give them:
//!
//! - no route for the method and path: `MISSING_AUTHENTICATION_TOKEN`;
//! - a body over API Gateway's 10 MB: `REQUEST_TOO_LARGE`;
//! - a function error or a malformed proxy response: `DEFAULT_5XX` (502);
//! - no answer within API Gateway's 29 s: `INTEGRATION_TIMEOUT` (504).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::Utc;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use crate::lambda::client::LambdaClient;
use crate::template::{Function, RestApi};

/// API Gateway's payload limit.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// API Gateway's integration timeout.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Parameter(String),
    /// `{name+}`: the rest of the path, one segment at least.
    Greedy(String),
}

#[derive(Debug, Clone)]
struct Route {
    method: String,
    /// The path template, as `resource` and `resourcePath` carry it.
    resource: String,
    segments: Vec<Segment>,
    function: String,
    resource_id: String,
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

impl Route {
    /// The path parameters if `path` matches, and how specific the match is
    /// (literals over parameters over greedy ones, as API Gateway prefers).
    fn matches(&self, path: &[&str]) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
        let mut parameters = BTreeMap::new();
        let mut rank = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if path.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                    rank.push(2);
                }
                Segment::Parameter(name) => {
                    let value = path.get(i)?;
                    parameters.insert(name.clone(), decode(value));
                    rank.push(1);
                }
                Segment::Greedy(name) => {
                    if path.len() <= i {
                        return None;
                    }
                    parameters.insert(name.clone(), decode(&path[i..].join("/")));
                    rank.push(0);
                    return Some((parameters, rank));
                }
            }
        }
        (path.len() == self.segments.len()).then_some((parameters, rank))
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

pub struct Gateway {
    routes: Vec<Route>,
    api: RestApi,
    lambda: LambdaClient,
    account_id: String,
    api_id: String,
}

/// What a gateway response's template may mention (`$context.…`).
struct Context<'a> {
    method: &'a str,
    path: String,
    request_id: &'a str,
    resource_path: &'a str,
    stage: &'a str,
    error_message: &'a str,
    response_type: &'a str,
}

impl Gateway {
    pub fn new(
        functions: &[Function],
        api: RestApi,
        lambda: LambdaClient,
        account_id: &str,
    ) -> Gateway {
        let routes = functions
            .iter()
            .flat_map(|function| {
                function.routes.iter().map(|route| Route {
                    method: route.method.clone(),
                    resource: route.path.clone(),
                    segments: segments(&route.path)
                        .into_iter()
                        .map(
                            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                                Some(name) => match name.strip_suffix('+') {
                                    Some(name) => Segment::Greedy(name.to_owned()),
                                    None => Segment::Parameter(name.to_owned()),
                                },
                                None => Segment::Literal(s.to_owned()),
                            },
                        )
                        .collect(),
                    function: function.name.clone(),
                    resource_id: format!("{:06x}", fxhash(&route.path) & 0xff_ffff),
                })
            })
            .collect();
        Gateway {
            routes,
            api,
            lambda,
            account_id: account_id.to_owned(),
            api_id: "localapi01".to_owned(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self)
    }

    fn route(&self, method: &str, path: &str) -> Option<(&Route, BTreeMap<String, String>)> {
        let path = segments(path);
        self.routes
            .iter()
            .filter(|r| r.method == method || r.method == "ANY")
            .filter_map(|r| {
                r.matches(&path)
                    .map(|(parameters, rank)| (r, parameters, rank))
            })
            .max_by(|a, b| a.2.cmp(&b.2))
            .map(|(route, parameters, _)| (route, parameters))
    }

    /// API Gateway's own answer of `kind`, customized as the template says
    /// (or inheriting `DEFAULT_4XX` / `DEFAULT_5XX`'s customization).
    fn gateway_response(
        &self,
        kind: &str,
        status: u16,
        message: &str,
        context: &Context<'_>,
    ) -> Response {
        let default = if status >= 500 {
            "DEFAULT_5XX"
        } else {
            "DEFAULT_4XX"
        };
        let own = self.api.gateway_responses.get(kind);
        let customized = own.or_else(|| self.api.gateway_responses.get(default));
        let status = own.and_then(|r| r.status).unwrap_or(status);
        let body = customized
            .and_then(|r| r.templates.get("application/json"))
            .map(|template| render(template, context))
            .unwrap_or_else(|| json!({ "message": message }).to_string());
        let mut response = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in customized.map(|r| r.headers.as_slice()).unwrap_or_default() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        if let Ok(id) = HeaderValue::from_str(context.request_id) {
            headers.insert("x-amzn-requestid", id);
        }
        if let Ok(kind) = HeaderValue::from_str(context.response_type) {
            headers.insert("x-amzn-errortype", kind);
        }
        response
    }
}

/// A small stable hash for resource ids.
fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `$context.…` variables of a gateway response template.
fn render(template: &str, context: &Context<'_>) -> String {
    let message_string = serde_json::to_string(context.error_message).unwrap_or_default();
    // Longest names first, so `$context.path` does not eat `$context.pathX`.
    let variables: [(&str, &str); 8] = [
        ("$context.error.messageString", &message_string),
        ("$context.error.responseType", context.response_type),
        ("$context.error.message", context.error_message),
        ("$context.resourcePath", context.resource_path),
        ("$context.httpMethod", context.method),
        ("$context.requestId", context.request_id),
        ("$context.stage", context.stage),
        ("$context.path", &context.path),
    ];
    variables
        .iter()
        .fold(template.to_owned(), |text, (name, value)| {
            text.replace(name, value)
        })
}

fn headers_json(headers: &HeaderMap) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        single.insert(name.as_str().to_owned(), json!(value));
        match multi.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(json!(value)),
            _ => {
                multi.insert(name.as_str().to_owned(), json!([value]));
            }
        }
    }
    if single.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (Value::Object(single), Value::Object(multi))
    }
}

fn query_json(query: Option<&str>) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        single.insert(key.clone(), json!(value));
        match multi.get_mut(&key) {
            Some(Value::Array(values)) => values.push(json!(value)),
            _ => {
                multi.insert(key, json!([value]));
            }
        }
    }
    if single.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (Value::Object(single), Value::Object(multi))
    }
}

fn is_binary(headers: &HeaderMap, binary_media_types: &[String]) -> bool {
    let Some(content_type) = headers.get("content-type").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    binary_media_types.iter().any(|kind| {
        kind == "*/*"
            || kind.eq_ignore_ascii_case(essence)
            || kind
                .strip_suffix("/*")
                .is_some_and(|prefix| essence.split('/').next() == Some(prefix))
    })
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let mut context = Context {
        method: &method,
        path: format!("/{}{path}", gateway.api.stage),
        request_id: &request_id,
        resource_path: "",
        stage: &gateway.api.stage,
        error_message: "",
        response_type: "",
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        context.response_type = "REQUEST_TOO_LARGE";
        context.error_message = "Request Too Long";
        return gateway.gateway_response("REQUEST_TOO_LARGE", 413, "Request Too Long", &context);
    };
    let Some((route, parameters)) = gateway.route(&method, &path) else {
        context.response_type = "MISSING_AUTHENTICATION_TOKEN";
        context.error_message = "Missing Authentication Token";
        return gateway.gateway_response(
            "MISSING_AUTHENTICATION_TOKEN",
            403,
            "Missing Authentication Token",
            &context,
        );
    };
    context.resource_path = &route.resource;

    let mut headers = parts.headers.clone();
    let forwarded = [
        ("x-forwarded-for", client.ip().to_string()),
        (
            "x-forwarded-port",
            parts
                .uri
                .port_u16()
                .map_or_else(|| "80".into(), |p| p.to_string()),
        ),
        ("x-forwarded-proto", "http".to_owned()),
        (
            "x-amzn-trace-id",
            format!(
                "Root=1-{:08x}-{:024x}",
                Utc::now().timestamp(),
                fastrand::u128(..) >> 32
            ),
        ),
    ];
    for (name, value) in forwarded {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let (single_headers, multi_headers) = headers_json(&headers);
    let (single_query, multi_query) = query_json(parts.uri.query());
    let (body_text, base64_encoded) = if body.is_empty() {
        (Value::Null, false)
    } else if is_binary(&parts.headers, &gateway.api.binary_media_types) {
        (json!(BASE64.encode(&body)), true)
    } else {
        (json!(String::from_utf8_lossy(&body)), false)
    };
    let now = Utc::now();
    let event = json!({
        "resource": route.resource,
        "path": path,
        "httpMethod": method,
        "headers": single_headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": single_query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": if parameters.is_empty() { Value::Null } else { json!(parameters) },
        "stageVariables": null,
        "requestContext": {
            "resourceId": route.resource_id,
            "resourcePath": route.resource,
            "httpMethod": method,
            "extendedRequestId": format!("{:016x}=", fastrand::u64(..)),
            "requestTime": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "path": context.path,
            "accountId": gateway.account_id,
            "protocol": "HTTP/1.1",
            "stage": gateway.api.stage,
            "domainPrefix": host.split(['.', ':']).next().unwrap_or_default(),
            "requestTimeEpoch": now.timestamp_millis(),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": null,
                "accountId": null,
                "cognitoIdentityId": null,
                "caller": null,
                "sourceIp": client.ip().to_string(),
                "principalOrgId": null,
                "accessKey": null,
                "cognitoAuthenticationType": null,
                "cognitoAuthenticationProvider": null,
                "userArn": null,
                "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()),
                "user": null,
            },
            "domainName": host,
            "apiId": gateway.api_id,
        },
        "body": body_text,
        "isBase64Encoded": base64_encoded,
    });

    let invocation = tokio::time::timeout(
        INTEGRATION_TIMEOUT,
        gateway
            .lambda
            .invoke(&route.function, Bytes::from(event.to_string())),
    )
    .await;
    let failed =
        |context: &mut Context<'_>, kind: &'static str, status: u16, message: &'static str| {
            context.response_type = kind;
            context.error_message = message;
            gateway.gateway_response(kind, status, message, context)
        };
    let invoked = match invocation {
        Err(_) => {
            return failed(
                &mut context,
                "INTEGRATION_TIMEOUT",
                504,
                "Endpoint request timed out",
            );
        }
        Ok(Err(error)) => {
            tracing::warn!(function = %route.function, %error, request_id = %request_id, "integration failed");
            return failed(&mut context, "DEFAULT_5XX", 500, "Internal server error");
        }
        Ok(Ok(invoked)) => invoked,
    };
    if invoked.function_error.is_some() {
        tracing::warn!(
            function = %route.function,
            request_id = %request_id,
            error = %String::from_utf8_lossy(&invoked.payload),
            "function error"
        );
        return failed(&mut context, "DEFAULT_5XX", 502, "Internal server error");
    }
    match proxy_response(&invoked.payload) {
        Some(mut response) => {
            if let Ok(id) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-amzn-requestid", id);
            }
            response
        }
        None => {
            tracing::warn!(function = %route.function, request_id = %request_id, "malformed Lambda proxy response");
            failed(&mut context, "DEFAULT_5XX", 502, "Internal server error")
        }
    }
}

/// A Lambda proxy response mapped back to HTTP; `None` if malformed.
fn proxy_response(payload: &[u8]) -> Option<Response> {
    let document: Value = serde_json::from_slice(payload).ok()?;
    let document = document.as_object()?;
    let status = document.get("statusCode")?;
    let status = status
        .as_u64()
        .or_else(|| status.as_str().and_then(|s| s.parse().ok()))?;
    let status = StatusCode::from_u16(u16::try_from(status).ok()?).ok()?;
    let body = match document.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(text)) => {
            if document.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                Bytes::from(BASE64.decode(text).ok()?)
            } else {
                Bytes::from(text.clone())
            }
        }
        Some(_) => return None,
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.remove("content-type");
    let skip = |name: &HeaderName| {
        matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        )
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(multi)) = document.get("multiValueHeaders") {
        for (name, values) in multi {
            let Ok(header) = HeaderName::try_from(name.as_str()) else {
                continue;
            };
            if skip(&header) {
                continue;
            }
            for value in values.as_array().into_iter().flatten() {
                let Some(text) = value
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| value.as_number().map(|n| n.to_string()))
                else {
                    continue;
                };
                if let Ok(value) = HeaderValue::from_str(&text) {
                    headers.append(header.clone(), value);
                    seen.push((header.as_str().to_owned(), text));
                }
            }
        }
    }
    if let Some(Value::Object(single)) = document.get("headers") {
        for (name, value) in single {
            let Ok(header) = HeaderName::try_from(name.as_str()) else {
                continue;
            };
            let Some(text) = value
                .as_str()
                .map(str::to_owned)
                .or_else(|| value.as_number().map(|n| n.to_string()))
            else {
                continue;
            };
            if skip(&header) || seen.contains(&(header.as_str().to_owned(), text.clone())) {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.append(header, value);
            }
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Route as TemplateRoute;

    fn function(name: &str, routes: &[(&str, &str)]) -> Function {
        Function {
            logical_id: name.into(),
            name: name.into(),
            arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            binary: name.into(),
            code_uri: None,
            environment: BTreeMap::new(),
            timeout: Duration::from_secs(3),
            memory_mb: 128,
            handler: "bootstrap".into(),
            routes: routes
                .iter()
                .map(|(method, path)| TemplateRoute {
                    method: (*method).into(),
                    path: (*path).into(),
                })
                .collect(),
            schedules: Vec::new(),
            log_group: String::new(),
        }
    }

    fn gateway() -> Gateway {
        Gateway::new(
            &[
                function("list", &[("GET", "/p/purchases")]),
                function("get", &[("GET", "/p/purchases/{purchaseId}")]),
                function("cancel", &[("POST", "/p/purchases/{purchaseId}/cancel")]),
                function("page", &[("GET", "/p/console")]),
                function("files", &[("GET", "/p/console/{proxy+}")]),
            ],
            RestApi::default(),
            LambdaClient::new("http://127.0.0.1:1").unwrap(),
            "123456789012",
        )
    }

    #[test]
    fn routes_match_methods_literals_parameters_and_greedy_paths() {
        let gateway = gateway();
        let (route, parameters) = gateway.route("GET", "/p/purchases/abc%20d").unwrap();
        assert_eq!(route.function, "get");
        assert_eq!(parameters["purchaseId"], "abc d");
        assert_eq!(
            gateway.route("GET", "/p/purchases").unwrap().0.function,
            "list"
        );
        assert_eq!(
            gateway
                .route("POST", "/p/purchases/x/cancel")
                .unwrap()
                .0
                .function,
            "cancel"
        );
        assert!(gateway.route("DELETE", "/p/purchases/x").is_none());
        assert!(gateway.route("GET", "/p/nothing").is_none());
        assert_eq!(
            gateway.route("GET", "/p/console/").unwrap().0.function,
            "page"
        );
        let (route, parameters) = gateway.route("GET", "/p/console/js/app.js").unwrap();
        assert_eq!(route.function, "files");
        assert_eq!(parameters["proxy"], "js/app.js");
    }

    #[test]
    fn query_strings_keep_the_last_value_and_every_value() {
        let (single, multi) = query_json(Some("a=1&a=2&b=x%2By&c"));
        assert_eq!(single, json!({"a": "2", "b": "x+y", "c": ""}));
        assert_eq!(multi, json!({"a": ["1", "2"], "b": ["x+y"], "c": [""]}));
        assert_eq!(query_json(None), (Value::Null, Value::Null));
    }

    #[test]
    fn proxy_responses_merge_headers_and_decode_base64_bodies() {
        let response = proxy_response(
            br#"{"statusCode":201,"headers":{"a":"1","b":"2"},"multiValueHeaders":{"a":["1"],"c":["x","y"]},"body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(response.status(), 201);
        let values = |name: &str| -> Vec<String> {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(values("a"), vec!["1"], "the same pair in both appears once");
        assert_eq!(values("b"), vec!["2"]);
        assert_eq!(values("c"), vec!["x", "y"]);
        assert!(proxy_response(br#"{"body":"no status"}"#).is_none());
        assert!(proxy_response(b"not json").is_none());
    }

    #[test]
    fn gateway_response_templates_see_the_context() {
        let context = Context {
            method: "GET",
            path: "/dev/p/x".into(),
            request_id: "r-1",
            resource_path: "",
            stage: "dev",
            error_message: "Missing \"token\"",
            response_type: "MISSING_AUTHENTICATION_TOKEN",
        };
        assert_eq!(
            render(
                r#"{"m":"no such route: $context.httpMethod $context.path ($context.requestId)","e":$context.error.messageString}"#,
                &context
            ),
            r#"{"m":"no such route: GET /dev/p/x (r-1)","e":"Missing \"token\""}"#
        );
    }
}
