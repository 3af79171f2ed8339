//! The back-office review console on AWS Lambda (API Gateway REST proxy
//! integration): `GET /purchase-orchestrator/console` and
//! `/purchase-orchestrator/console/{proxy+}`. It serves the embedded static
//! files of `console-assets`, the same the local server serves, with their
//! Content-Security-Policy. No authentication and no AWS calls: the page's
//! API calls carry the reviewer's token. The local developer sign-in does
//! not exist here.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response, service_fn};

async fn handle(request: Request) -> Result<Response<Body>, Infallible> {
    let response = console_assets::respond(request.uri().path());
    Ok(response.map(Body::from))
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::observability::telemetry::init_lambda();
    lambda_http::run(service_fn(handle)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_page_behind_a_stage_with_its_policy() {
        let request = lambda_http::http::Request::builder()
            .uri("https://example.test/dev/purchase-orchestrator/console/")
            .body(Body::Empty)
            .unwrap();
        let response = handle(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-security-policy"],
            console_assets::CONTENT_SECURITY_POLICY
        );
        let Body::Text(html) = response.body() else {
            panic!("text body")
        };
        assert!(html.contains("<script type=\"module\" src=\"app.js\">"));
    }
}
