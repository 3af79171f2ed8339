//! The events the API Gateway shim hands a function are API Gateway's REST
//! proxy events (`events/*.json` are real ones), and the function's proxy
//! response comes back as HTTP. The shim is pointed at an Invoke endpoint
//! of this test (`Options::lambda_endpoint`), which records what it is sent.

mod common;

use std::sync::{Arc, Mutex};

use aws_local::AwsLocal;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

const TEMPLATE: &str = r#"
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: dev
  GetPurchaseFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: get-purchase
    Properties:
      Events:
        Api:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /purchase-orchestrator/purchases/{purchaseId}
            Method: GET
"#;

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Records the invocation and answers a proxy response with a binary body
/// and headers both single and multi-valued.
async fn invoke(
    State(received): State<Received>,
    Path(function): Path<String>,
    body: Bytes,
) -> axum::Json<Value> {
    let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
    received.lock().unwrap().push((function, event));
    axum::Json(json!({
        "statusCode": 418,
        "headers": {"content-type": "text/plain", "x-one": "1"},
        "multiValueHeaders": {"x-many": ["a", "b"]},
        "body": "aGk=",
        "isBase64Encoded": true,
    }))
}

/// Every key of `expected`, recursively (objects only), with where it is.
fn keys(value: &Value, at: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            let here = format!("{at}.{key}");
            out.push(here.clone());
            if matches!(key.as_str(), "requestContext" | "identity") {
                keys(inner, &here, out);
            }
        }
    }
}

#[tokio::test]
async fn the_shim_sends_rest_proxy_events_and_maps_proxy_responses_back() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .with_state(received.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.yaml");
    std::fs::write(&template, TEMPLATE).unwrap();
    let mut options = common::options(template, dir.path().to_path_buf(), "http://127.0.0.1:9");
    options.lambda_endpoint = Some(endpoint);
    let shape = AwsLocal::start(options).await.unwrap();

    let response = reqwest::Client::new()
        .get(format!(
            "{}/purchase-orchestrator/purchases/p%201?limit=5&tag=a&tag=b",
            shape.api_url
        ))
        .header("Authorization", "Bearer x")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 418);
    let header = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(header("x-one"), vec!["1"]);
    assert_eq!(header("x-many"), vec!["a", "b"]);
    assert_eq!(header("content-type"), vec!["text/plain"]);
    assert_eq!(response.bytes().await.unwrap(), Bytes::from_static(b"hi"));

    let (function, event) = received.lock().unwrap().pop().unwrap();
    assert_eq!(
        function,
        shape
            .template()
            .function("GetPurchaseFunction")
            .unwrap()
            .name
    );
    // The same fields as a real API Gateway event, at every level.
    let real: Value = serde_json::from_str(
        &std::fs::read_to_string(common::workspace().join("events/get-purchase.json")).unwrap(),
    )
    .unwrap();
    let (mut expected, mut sent) = (Vec::new(), Vec::new());
    keys(&real, "", &mut expected);
    keys(&event, "", &mut sent);
    expected.sort();
    sent.sort();
    assert_eq!(sent, expected);
    // And the values a function reads.
    assert_eq!(
        event["resource"],
        "/purchase-orchestrator/purchases/{purchaseId}"
    );
    assert_eq!(event["path"], "/purchase-orchestrator/purchases/p%201");
    assert_eq!(event["httpMethod"], "GET");
    assert_eq!(event["pathParameters"], json!({"purchaseId": "p 1"}));
    assert_eq!(
        event["queryStringParameters"],
        json!({"limit": "5", "tag": "b"})
    );
    assert_eq!(
        event["multiValueQueryStringParameters"],
        json!({"limit": ["5"], "tag": ["a", "b"]})
    );
    assert_eq!(event["headers"]["authorization"], "Bearer x");
    assert_eq!(
        event["multiValueHeaders"]["accept"],
        json!(["application/json"])
    );
    assert_eq!(event["headers"]["x-forwarded-proto"], "http");
    let context = &event["requestContext"];
    assert_eq!(context["stage"], "dev");
    assert_eq!(context["resourcePath"], event["resource"]);
    assert_eq!(
        context["path"],
        "/dev/purchase-orchestrator/purchases/p%201"
    );
    assert_eq!(context["identity"]["sourceIp"], "127.0.0.1");
    assert!(
        context["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(event["body"], Value::Null);
    assert_eq!(event["isBase64Encoded"], false);
    shape.shutdown().await;
}
