//! Baseline for the cold-start benchmark: a hello-world `lambda_http`
//! function built with the same release profile as the real functions.

use std::convert::Infallible;

use lambda_http::http::HeaderValue;
use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_request: Request| async {
        let mut response = Response::new(Body::from(r#"{"message":"hello"}"#));
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        Ok::<_, Infallible>(response)
    }))
    .await
}
