//! The Lambda service running the real function binaries: a variable the
//! template forgets fails that function's path at once with a message naming
//! the function and the variable; an invocation past the function's
//! `Timeout` is killed, and the definition retries the step it ran; the
//! Invoke API answers with Lambda's error names.
//!
//! Needs the moto server (`AWS_TEST_ENDPOINT`) and the function binaries
//! (`cargo build --workspace --bins`); scripts/test.sh provides both.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_local::AwsLocal;
use local::{Attempt, StepHook};
use serde_json::{Value, json};
use shared::adapters::simulators::SimulatedPaymentGateway;
use shared::auth::Scope;
use shared::ports::payment::{
    Capture, CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};
use shared::steps::Step;
use tokio::sync::Notify;

/// Removes the first `line` after `after` in the template.
fn without_line(text: &str, after: &str, line: &str) -> String {
    let start = text.find(after).expect("anchor in template.yaml");
    let offset = text[start..].find(line).expect("line in template.yaml") + start;
    format!("{}{}", &text[..offset], &text[offset + line.len()..])
}

fn purchase(token: &str) -> Value {
    json!({
        "customerId": "c-1",
        "products": [{"id": "ebook-rust", "quantity": 1}],
        "paymentDetails": {"method": "card", "transactionId": token},
        "shippingAddress": {"name": "Ada", "address": "1 Main St", "city": "London", "country": "GB", "postalCode": "SW1A 1AA"}
    })
}

async fn create(shape: &AwsLocal, body: &Value) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/purchase-orchestrator/purchases", shape.api_url))
        .bearer_auth(common::token("c-1", &[Scope::Read, Scope::Write]))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["purchaseId"].as_str().unwrap().to_owned()
}

async fn get(shape: &AwsLocal, id: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!(
            "{}/purchase-orchestrator/purchases/{id}",
            shape.api_url
        ))
        .bearer_auth(common::token("c-1", &[Scope::Read]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The purchase once final, polled until `within` has passed.
async fn final_purchase(shape: &AwsLocal, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let p = get(shape, id).await;
        if p.get("finalizedAt").is_some_and(|at| !at.is_null()) {
            return p;
        }
        assert!(Instant::now() < deadline, "never final: {p:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The template with one second for `CapturePaymentFunction`.
fn capture_times_out_after_one_second(dir: &std::path::Path) -> std::path::PathBuf {
    common::edited_template(dir, |text| {
        text.replace(
            "      Description: Step task CapturePayment\n",
            "      Description: Step task CapturePayment\n      Timeout: 1\n",
        )
    })
}

/// `POST /2015-03-31/functions/{name}/invocations`: status, function error
/// header, error type header, body.
async fn invoke(
    shape: &AwsLocal,
    function: &str,
    payload: &str,
) -> (u16, Option<String>, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/2015-03-31/functions/{function}/invocations",
            shape.lambda_url
        ))
        .body(payload.to_owned())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = response.status().as_u16();
    let (function_error, error_type) = (header("x-amz-function-error"), header("x-amzn-errortype"));
    let body = response.json().await.unwrap_or(Value::Null);
    (status, function_error, error_type, body)
}

fn function_name(shape: &AwsLocal, logical_id: &str) -> String {
    shape.template().function(logical_id).unwrap().name.clone()
}

#[tokio::test]
async fn a_variable_the_template_forgets_fails_that_functions_path_with_a_clear_message() {
    let test = "a_variable_the_template_forgets_fails_that_functions_path_with_a_clear_message";
    let Some(moto) = common::moto(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let template = common::edited_template(dir.path(), |text| {
        without_line(
            text,
            "  CapturePaymentFunction:",
            "          PAYMENT_URL: !Ref PaymentUrl\n",
        )
    });
    let shape = AwsLocal::start(common::options(template, dir.path().join("data"), &moto))
        .await
        .unwrap();
    let capture = function_name(&shape, "CapturePaymentFunction");

    // Through the API, as a customer sees it: the purchase fails, promptly
    // (no retries of a function that cannot start), and nothing is charged.
    let id = create(&shape, &purchase("tok_visa")).await;
    let p = final_purchase(&shape, &id, Duration::from_secs(20)).await;
    assert_eq!(p["status"], "FAILED", "{p:#}");
    assert_eq!(p["paymentStatus"], "NOT_CHARGED", "{p:#}");

    // Through the Invoke API, as Step Functions saw it: the error names the
    // function and the variable.
    let started = Instant::now();
    let (status, function_error, _, body) =
        invoke(&shape, &capture, &json!({"purchaseId": id}).to_string()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (status, function_error.as_deref()),
        (200, Some("Unhandled"))
    );
    assert_eq!(body["errorType"], "Runtime.InitError", "{body:#}");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("CapturePaymentFunction"), "{message}");
    assert!(message.contains("PAYMENT_URL"), "{message}");

    // Lambda's own errors.
    let (status, _, error_type, _) = invoke(&shape, "no-such-function", "{}").await;
    assert_eq!(
        (status, error_type.as_deref()),
        (404, Some("ResourceNotFoundException"))
    );
    let get_purchase = function_name(&shape, "GetPurchaseFunction");
    let (status, _, error_type, _) = invoke(&shape, &get_purchase, "{not json").await;
    assert_eq!(
        (status, error_type.as_deref()),
        (400, Some("InvalidRequestContentException"))
    );
    shape.shutdown().await;
}

/// Holds every workflow before `CapturePayment`, for good.
struct HoldBeforeCapture(Arc<Notify>);

#[async_trait]
impl StepHook for HoldBeforeCapture {
    async fn before(&self, step: Step, _: &str) -> Attempt {
        if step == Step::CapturePayment {
            self.0.notify_one();
            std::future::pending::<()>().await;
        }
        Attempt::Run
    }
}

#[tokio::test]
async fn an_invocation_past_the_functions_timeout_is_killed_and_fails_as_sandbox_timedout() {
    let test = "an_invocation_past_the_functions_timeout_is_killed_and_fails_as_sandbox_timedout";
    let Some(moto) = common::moto(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The simulator takes 15 s for tok_slow.
    let template = capture_times_out_after_one_second(dir.path());
    let reached = Arc::new(Notify::new());
    let mut options = common::options(template, dir.path().join("data"), &moto);
    options.step_hook = Some(Arc::new(HoldBeforeCapture(reached.clone())));
    let shape = AwsLocal::start(options).await.unwrap();
    let id = create(&shape, &purchase("tok_slow")).await;
    tokio::time::timeout(Duration::from_secs(30), reached.notified())
        .await
        .expect("the workflow never reached CapturePayment");
    let capture = function_name(&shape, "CapturePaymentFunction");
    let payload = json!({"purchaseId": id}).to_string();
    for attempt in 0..2 {
        let started = Instant::now();
        let (status, function_error, _, body) = invoke(&shape, &capture, &payload).await;
        let took = started.elapsed();
        assert_eq!(
            (status, function_error.as_deref()),
            (200, Some("Unhandled"))
        );
        assert_eq!(
            body["errorType"], "Sandbox.Timedout",
            "attempt {attempt}: {body:#}"
        );
        assert!(
            body["errorMessage"]
                .as_str()
                .unwrap()
                .contains("Task timed out after 1.00 seconds"),
            "{body:#}"
        );
        assert!(
            took < Duration::from_secs(10),
            "killed at its timeout, not the provider's: {took:?}"
        );
    }
    shape.shutdown().await;
}

/// The first capture hangs (past any function timeout); later ones go
/// straight to the simulator.
struct FirstCaptureHangs {
    simulator: Arc<SimulatedPaymentGateway>,
    calls: AtomicUsize,
}

#[async_trait]
impl PaymentGateway for FirstCaptureHangs {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        self.simulator.capture(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, PaymentError> {
        self.simulator.refund(request).await
    }
}

#[tokio::test]
async fn a_step_that_runs_past_its_functions_timeout_is_retried_by_the_definition() {
    let test = "a_step_that_runs_past_its_functions_timeout_is_retried_by_the_definition";
    let Some(moto) = common::moto(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // CapturePayment, whose first capture never answers, gets one second: the
    // function is killed and the task fails as Lambda fails it
    // (`Sandbox.Timedout`), which the definition's transient retrier must
    // name, or the purchase is undone for a provider's hiccup.
    let template = capture_times_out_after_one_second(dir.path());
    let simulator = Arc::new(SimulatedPaymentGateway::default());
    let payments = Arc::new(FirstCaptureHangs {
        simulator: simulator.clone(),
        calls: AtomicUsize::new(0),
    });
    let mut options = common::options(template, dir.path().join("data"), &moto);
    options.payments = payments.clone();
    let shape = AwsLocal::start(options).await.unwrap();
    let id = create(&shape, &purchase("tok_visa")).await;
    let p = final_purchase(&shape, &id, Duration::from_secs(30)).await;
    assert_eq!(p["status"], "COMPLETED", "{p:#}");
    assert_eq!(
        payments.calls.load(Ordering::SeqCst),
        2,
        "one timed out, one retry"
    );
    assert_eq!(simulator.captures(), 1, "charged once");
    shape.shutdown().await;
}
