//! The API Gateway shim in front of the real functions: API Gateway's own
//! answers as the template's `GatewayResponses` define them, the console's
//! greedy route, and a function that cannot start answered as `DEFAULT_5XX`.
//!
//! Needs the moto server (`AWS_TEST_ENDPOINT`) and the function binaries
//! (`cargo build --workspace --bins`); scripts/test.sh provides both.

mod common;

use aws_local::AwsLocal;
use serde_json::Value;
use shared::auth::Scope;

#[tokio::test]
async fn the_gateway_answers_as_the_template_defines() {
    let Some(moto) = common::moto("the_gateway_answers_as_the_template_defines") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // ListPurchasesFunction loses JWKS_URL: it gets no development secret
    // either (that stands in for the JWKS only), so it cannot start.
    let template = common::edited_template(dir.path(), |text| {
        let at = text.find("  ListPurchasesFunction:").unwrap();
        let line = "          JWKS_URL: !Ref JwksUrl\n";
        let offset = text[at..].find(line).unwrap() + at;
        format!("{}{}", &text[..offset], &text[offset + line.len()..])
    });
    let shape = AwsLocal::start(common::options(template, dir.path().join("data"), &moto))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let api = format!("{}/purchase-orchestrator", shape.api_url);
    let token = common::token("c-1", &[Scope::Read, Scope::Write]);

    // MISSING_AUTHENTICATION_TOKEN, templated: 404 naming the stage's path.
    let response = client
        .delete(format!("{api}/purchases"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "NOT_FOUND");
    assert_eq!(
        body["message"],
        "no such route: DELETE /dev/purchase-orchestrator/purchases"
    );

    // REQUEST_TOO_LARGE past API Gateway's 10 MB, before any function runs.
    let response = client
        .post(format!("{api}/purchases"))
        .bearer_auth(&token)
        .body(vec![b' '; aws_local::gateway::MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "VALIDATION_FAILED");
    assert_eq!(body["details"][0]["field"], "body");

    // A function that cannot start: DEFAULT_5XX's body, with the request id.
    let response = client
        .get(format!("{api}/purchases?limit=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "INTERNAL_ERROR");
    assert_eq!(
        body["message"],
        format!("an unexpected error occurred (request id {request_id})")
    );

    // The console's page and files, through its two routes.
    let page = client.get(format!("{api}/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().await.unwrap().contains("app.js"));
    let script = client
        .get(format!("{api}/console/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    shape.shutdown().await;
}
