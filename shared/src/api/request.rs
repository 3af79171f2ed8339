//! A request as the handlers see it, whatever the transport (API Gateway's
//! proxy event, the local server's hyper request), and what they answer.

use bytes::Bytes;
use http::HeaderMap;

/// The base path every route lives under, on API Gateway and locally.
pub const BASE_PATH: &str = "/purchase-orchestrator";

#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `{purchaseId}` path parameter, where the route has one.
    pub purchase_id: Option<String>,
    /// The `{ruleSetName}` path parameter, where the route has one.
    pub rule_set_name: Option<String>,
    pub query: Vec<(String, String)>,
    /// Lambda's request id, or one made up by the local server; logged with every error.
    pub request_id: String,
}

pub type ApiResponse = http::Response<String>;
