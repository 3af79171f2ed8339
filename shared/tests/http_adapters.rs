//! The production HTTP adapters (`HttpPaymentGateway`, `HttpProvisioner`)
//! against a provider written here: a small HTTP/1.1 server on 127.0.0.1
//! that records every request (method, path, headers, body) and answers
//! what each test scripts.
//!
//! Checked, for capture, refund, provision and revoke:
//! - the request: `POST` to the right path under the base URL, a JSON body
//!   with exactly the documented fields, and one `Idempotency-Key`: the
//!   capture's and the refund's own keys, `provision:<purchaseId>:<productId>`
//!   and `revoke:<purchaseId>:<productId>`, the same on every retry;
//! - every answer: 2xx; 408, 409, 429 and 5xx (transient); 401 and 403
//!   (misconfigured); other 4xx (a capture declined, a provision or revoke
//!   rejected, a refund retried; a refund's 404: nothing to refund; a
//!   revoke's 404: done); a success whose body cannot be read; an answer
//!   slower than the deadline; a dropped connection; nobody listening;
//! - each call is exactly one request: retrying is the workflow's job.
//!
//! Most tests use the production client (`http_client()`); the deadline test
//! uses a client with a short timeout so it finishes quickly, and a separate
//! test pins the production deadlines.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::adapters::http_client::{
    CALL_DEADLINE, CONNECT_DEADLINE, StatusClass, classify_status, http_client,
};
use shared::adapters::http_payment::HttpPaymentGateway;
use shared::adapters::http_provisioning::HttpProvisioner;
use shared::domain::PurchaseId;
use shared::domain::lifecycle::{capture_key, refund_key};
use shared::domain::purchase::{LineStatus, ProductKind, PurchaseLine};
use shared::domain::{Currency, Money, ProductId};
use shared::ports::payment::{
    Capture, CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};
use shared::ports::provisioning::{Provisioner, ProvisioningError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- provider

/// One request as the provider received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// Names in lower case, in the order sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    /// The one value of a header; two values are a failure of their own.
    #[track_caller]
    fn header(&self, name: &str) -> Option<&str> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect();
        assert!(values.len() <= 1, "{name} sent {} times", values.len());
        values.first().copied()
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// What the provider does with a request.
#[derive(Debug, Clone)]
enum Answer {
    Respond {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Reads the request, then answers only after this long: longer than
    /// any client here waits.
    Late(Duration),
    /// Answers 200 with headers promising a body, sends half of it, stalls.
    StalledBody,
    /// Reads the request, then closes the connection without a word.
    HangUp,
    /// Closes the connection as soon as it is accepted, reading nothing.
    Slam,
}

fn json_answer(status: u16, body: Value) -> Answer {
    Answer::Respond {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

fn text_answer(status: u16, body: &str) -> Answer {
    Answer::Respond {
        status,
        content_type: "text/plain",
        body: body.to_owned(),
    }
}

/// The provider: answers requests with the scripted answers in order (the
/// last one again once the script runs out) and records them.
struct Provider {
    /// The base URL the adapters are given: with a path prefix and a
    /// trailing slash, as an operator might write it.
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Provider {
    async fn start(answers: Vec<Answer>) -> Provider {
        assert!(!answers.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1/", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(answers)));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let answer = {
                        let mut script = script.lock().unwrap();
                        if script.len() > 1 {
                            script.pop_front().unwrap()
                        } else {
                            script[0].clone()
                        }
                    };
                    tokio::spawn(serve(socket, answer, received.clone()));
                }
            }
        });
        Provider {
            base,
            received,
            task,
        }
    }

    async fn answering(answer: Answer) -> Provider {
        Provider::start(vec![answer]).await
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The one request received.
    #[track_caller]
    fn only_request(&self) -> Received {
        let received = self.received();
        assert_eq!(received.len(), 1, "one call, one request: {received:?}");
        received.into_iter().next().unwrap()
    }

    fn payments(&self) -> HttpPaymentGateway {
        HttpPaymentGateway::new(&self.base, http_client().unwrap())
    }

    fn provisioner(&self) -> HttpProvisioner {
        HttpProvisioner::new(&self.base, http_client().unwrap())
    }
}

async fn serve(mut socket: TcpStream, answer: Answer, received: Arc<Mutex<Vec<Received>>>) {
    if let Answer::Slam = answer {
        return; // dropping the socket closes it
    }
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    received.lock().unwrap().push(request);
    let (status, content_type, body) = match answer {
        Answer::Respond {
            status,
            content_type,
            body,
        } => (status, content_type, body),
        Answer::Late(delay) => {
            tokio::time::sleep(delay).await;
            (200, "application/json", "{}".to_owned())
        }
        Answer::StalledBody => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"paymentReference\":";
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.flush().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        Answer::HangUp | Answer::Slam => return,
    };
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Reads one HTTP/1.1 request with a `Content-Length` body (what reqwest
/// sends for a JSON body).
async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(key, _)| key == "transfer-encoding" || key == "expect"),
        "this provider reads Content-Length bodies only: {headers:?}"
    );
    let length: usize = headers
        .iter()
        .find(|(key, _)| key == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    while data.len() < head_end + length {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    }
    Some(Received {
        method,
        path,
        headers,
        body: data[head_end..head_end + length].to_vec(),
    })
}

// ---------------------------------------------------------------- requests

const CAPTURE_STATUSES_DECLINED: [u16; 6] = [400, 402, 404, 405, 410, 422];
const TRANSIENT_STATUSES: [u16; 8] = [408, 409, 429, 500, 501, 502, 503, 504];
const MISCONFIGURED_STATUSES: [u16; 2] = [401, 403];

fn purchase_id() -> PurchaseId {
    PurchaseId::new("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
}

fn capture_request() -> CaptureRequest {
    CaptureRequest {
        purchase_id: purchase_id(),
        idempotency_key: capture_key(&purchase_id()),
        amount: 4_250,
        currency: "EUR".into(),
        method: "card".into(),
        transaction_id: "tok_visa".into(),
    }
}

fn refund_request() -> RefundRequest {
    RefundRequest::new(
        purchase_id(),
        refund_key(&purchase_id()),
        Money {
            amount: 4_250,
            currency: Currency::new("EUR"),
        },
    )
}

fn line(product: &str, kind: ProductKind) -> PurchaseLine {
    PurchaseLine {
        id: ProductId::new(product),
        quantity: 3,
        status: LineStatus::Provisioned,
        unit_price: 1_000,
        kind,
    }
}

#[track_caller]
fn assert_json_post(request: &Received, path: &str, key: &str, body: Value) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, path);
    assert_eq!(request.header("idempotency-key"), Some(key));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.json(), body, "body of {path}");
}

// ---------------------------------------------------------------- payment

#[tokio::test]
async fn capture_posts_its_own_key_and_reads_the_reference() {
    let provider =
        Provider::answering(json_answer(201, json!({ "paymentReference": "pay_123" }))).await;
    let capture = provider.payments().capture(&capture_request()).await;
    assert_eq!(
        capture,
        Ok(Capture {
            payment_reference: "pay_123".into()
        })
    );
    assert_json_post(
        &provider.only_request(),
        "/v1/captures",
        "capture-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        json!({
            "purchaseId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "amount": 4_250,
            "currency": "EUR",
            "method": "card",
            "transactionId": "tok_visa",
        }),
    );
}

#[tokio::test]
async fn refund_posts_its_own_distinct_key() {
    for status in [200, 201, 202, 204] {
        let provider = Provider::answering(text_answer(status, "")).await;
        assert_eq!(
            provider.payments().refund(&refund_request()).await,
            Ok(RefundOutcome::Refunded),
            "{status}"
        );
        let request = provider.only_request();
        assert_json_post(
            &request,
            "/v1/refunds",
            "refund-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            json!({
                "purchaseId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                "amount": 4_250,
                "currency": "EUR",
            }),
        );
        assert_ne!(
            request.header("idempotency-key"),
            Some(capture_request().idempotency_key.as_str()),
            "a refund must never reuse the capture's key"
        );
    }
}

#[tokio::test]
async fn a_retried_capture_sends_the_same_key_and_body() {
    // Transient, transient, then captured: what the workflow's retries see.
    let provider = Provider::start(vec![
        text_answer(503, "busy"),
        text_answer(409, "in progress"),
        json_answer(200, json!({ "paymentReference": "pay_1" })),
    ])
    .await;
    let payments = provider.payments();
    let request = capture_request();
    assert!(matches!(
        payments.capture(&request).await,
        Err(PaymentError::Transient(_))
    ));
    assert!(matches!(
        payments.capture(&request).await,
        Err(PaymentError::Transient(_))
    ));
    assert_eq!(
        payments.capture(&request).await.unwrap().payment_reference,
        "pay_1"
    );
    let received = provider.received();
    assert_eq!(received.len(), 3);
    for retry in &received[1..] {
        assert_eq!(
            retry.header("idempotency-key"),
            received[0].header("idempotency-key")
        );
        assert_eq!(retry.body, received[0].body);
    }
}

#[tokio::test]
async fn a_refused_capture_is_declined_with_the_providers_words() {
    for status in CAPTURE_STATUSES_DECLINED {
        let provider = Provider::answering(text_answer(status, "insufficient funds")).await;
        match provider.payments().capture(&capture_request()).await {
            Err(PaymentError::Declined(text)) => {
                assert!(text.contains(&status.to_string()), "{text}");
                assert!(text.contains("insufficient funds"), "{text}");
            }
            other => panic!("{status}: expected Declined, got {other:?}"),
        }
        provider.only_request();
    }
}

#[tokio::test]
async fn payment_statuses_worth_retrying_are_transient() {
    for status in TRANSIENT_STATUSES {
        let provider = Provider::answering(text_answer(status, "try later")).await;
        let payments = provider.payments();
        let capture = payments.capture(&capture_request()).await;
        assert!(
            matches!(&capture, Err(PaymentError::Transient(text)) if text.contains(&status.to_string())),
            "capture {status}: {capture:?}"
        );
        let refund = payments.refund(&refund_request()).await;
        assert!(
            matches!(&refund, Err(PaymentError::Transient(text)) if text.contains(&status.to_string())),
            "refund {status}: {refund:?}"
        );
        assert_eq!(provider.received().len(), 2, "no hidden retries");
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_but_read_as_a_set_up_to_fix() {
    let provider = Provider::answering(text_answer(302, "moved")).await;
    let payments = HttpPaymentGateway::new(
        &provider.base,
        shared::adapters::http_client::http_client().unwrap(),
    );
    let capture = payments.capture(&capture_request()).await;
    assert!(
        matches!(&capture, Err(PaymentError::Misconfigured(_))),
        "capture 302: {capture:?}"
    );
    // One POST, and no GET to wherever it pointed.
    assert_eq!(provider.received().len(), 1);
}

#[tokio::test]
async fn payment_credentials_refused_are_misconfigured_never_declined() {
    for status in MISCONFIGURED_STATUSES {
        let provider = Provider::answering(text_answer(status, "bad api key")).await;
        let payments = provider.payments();
        let capture = payments.capture(&capture_request()).await;
        assert!(
            matches!(&capture, Err(PaymentError::Misconfigured(text)) if text.contains("bad api key")),
            "capture {status}: {capture:?}"
        );
        let refund = payments.refund(&refund_request()).await;
        assert!(
            matches!(&refund, Err(PaymentError::Misconfigured(_))),
            "refund {status}: {refund:?}"
        );
    }
}

#[tokio::test]
async fn a_refund_of_nothing_is_done_and_a_refused_refund_is_retried() {
    let provider = Provider::answering(text_answer(404, "no such capture")).await;
    assert_eq!(
        provider.payments().refund(&refund_request()).await,
        Ok(RefundOutcome::NothingToRefund)
    );
    provider.only_request();
    // Other 4xx: a refund is never "declined" (the step retries it, then the
    // purchase needs attention): the adapter answers Transient.
    for status in [400, 402, 410, 422] {
        let provider = Provider::answering(text_answer(status, "refused")).await;
        let refund = provider.payments().refund(&refund_request()).await;
        assert!(
            matches!(&refund, Err(PaymentError::Transient(text)) if text.contains(&status.to_string())),
            "refund {status}: {refund:?}"
        );
    }
}

#[tokio::test]
async fn a_capture_success_whose_body_cannot_be_read_is_transient() {
    // The capture happened, but we cannot tell its reference: retrying with
    // the same key reads the same capture again.
    let bodies = [
        text_answer(200, "captured!"),
        text_answer(200, ""),
        text_answer(204, ""),
        json_answer(200, json!({ "reference": "pay_1" })),
        json_answer(200, json!({ "paymentReference": 17 })),
        json_answer(200, json!({ "paymentReference": null })),
    ];
    for answer in bodies {
        let provider = Provider::answering(answer.clone()).await;
        let capture = provider.payments().capture(&capture_request()).await;
        assert!(
            matches!(capture, Err(PaymentError::Transient(_))),
            "{answer:?}: {capture:?}"
        );
        provider.only_request();
    }
}

// ---------------------------------------------------------------- provisioning

#[tokio::test]
async fn provision_and_revoke_post_line_keys() {
    let provider = Provider::answering(text_answer(200, "")).await;
    let provisioner = provider.provisioner();
    let digital = line("ebook-rust", ProductKind::Digital);
    let physical = line("mug", ProductKind::Physical);
    provisioner
        .provision(&purchase_id(), &digital)
        .await
        .unwrap();
    provisioner
        .provision(&purchase_id(), &physical)
        .await
        .unwrap();
    provisioner.revoke(&purchase_id(), &digital).await.unwrap();
    // A retry of the same line: the same key, the same body.
    provisioner
        .provision(&purchase_id(), &digital)
        .await
        .unwrap();

    let received = provider.received();
    assert_eq!(received.len(), 4);
    let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let body = |product: &str, kind: &str| json!({ "purchaseId": id, "productId": product, "quantity": 3, "kind": kind });
    assert_json_post(
        &received[0],
        "/v1/provisions",
        &format!("provision:{id}:ebook-rust"),
        body("ebook-rust", "digital"),
    );
    assert_json_post(
        &received[1],
        "/v1/provisions",
        &format!("provision:{id}:mug"),
        body("mug", "physical"),
    );
    assert_json_post(
        &received[2],
        "/v1/revocations",
        &format!("revoke:{id}:ebook-rust"),
        body("ebook-rust", "digital"),
    );
    assert_eq!(
        received[3].header("idempotency-key"),
        received[0].header("idempotency-key")
    );
    assert_eq!(received[3].body, received[0].body);
}

#[tokio::test]
async fn provisioning_successes_are_any_2xx() {
    for status in [200, 201, 202, 204] {
        let provider = Provider::answering(text_answer(status, "")).await;
        let provisioner = provider.provisioner();
        let line = line("ebook-rust", ProductKind::Digital);
        assert_eq!(provisioner.provision(&purchase_id(), &line).await, Ok(()));
        assert_eq!(provisioner.revoke(&purchase_id(), &line).await, Ok(()));
    }
}

#[tokio::test]
async fn a_refused_line_is_rejected_but_revoking_nothing_is_done() {
    let line = line("ebook-rust", ProductKind::Digital);
    for status in [400, 404, 410, 422] {
        let provider = Provider::answering(text_answer(status, "unknown product")).await;
        let result = provider
            .provisioner()
            .provision(&purchase_id(), &line)
            .await;
        assert!(
            matches!(&result, Err(ProvisioningError::Rejected(text)) if text.contains("unknown product")),
            "provision {status}: {result:?}"
        );
        provider.only_request();
    }
    // Nothing was delivered: taking it back is done.
    let provider = Provider::answering(text_answer(404, "not delivered")).await;
    assert_eq!(
        provider.provisioner().revoke(&purchase_id(), &line).await,
        Ok(())
    );
    provider.only_request();
    for status in [400, 410, 422] {
        let provider = Provider::answering(text_answer(status, "cannot revoke")).await;
        let result = provider.provisioner().revoke(&purchase_id(), &line).await;
        assert!(
            matches!(&result, Err(ProvisioningError::Rejected(_))),
            "revoke {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn provisioning_statuses_worth_retrying_are_transient() {
    let line = line("ebook-rust", ProductKind::Digital);
    for status in TRANSIENT_STATUSES {
        let provider = Provider::answering(text_answer(status, "try later")).await;
        let provisioner = provider.provisioner();
        let provision = provisioner.provision(&purchase_id(), &line).await;
        assert!(
            matches!(&provision, Err(ProvisioningError::Transient(text)) if text.contains(&status.to_string())),
            "provision {status}: {provision:?}"
        );
        let revoke = provisioner.revoke(&purchase_id(), &line).await;
        assert!(
            matches!(&revoke, Err(ProvisioningError::Transient(_))),
            "revoke {status}: {revoke:?}"
        );
        assert_eq!(provider.received().len(), 2, "no hidden retries");
    }
}

#[tokio::test]
async fn provisioning_credentials_refused_are_misconfigured_never_rejected() {
    let line = line("ebook-rust", ProductKind::Digital);
    for status in MISCONFIGURED_STATUSES {
        let provider = Provider::answering(text_answer(status, "bad api key")).await;
        let provisioner = provider.provisioner();
        let provision = provisioner.provision(&purchase_id(), &line).await;
        assert!(
            matches!(&provision, Err(ProvisioningError::Misconfigured(text)) if text.contains("bad api key")),
            "provision {status}: {provision:?}"
        );
        let revoke = provisioner.revoke(&purchase_id(), &line).await;
        assert!(
            matches!(&revoke, Err(ProvisioningError::Misconfigured(_))),
            "revoke {status}: {revoke:?}"
        );
    }
}

// ---------------------------------------------------------------- transport

/// What the four operations answered.
type FourResults = (
    Result<Capture, PaymentError>,
    Result<RefundOutcome, PaymentError>,
    Result<(), ProvisioningError>,
    Result<(), ProvisioningError>,
);

/// Calls all four operations through `client`, concurrently.
async fn all_four(provider: &Provider, client: reqwest::Client) -> FourResults {
    let payments = HttpPaymentGateway::new(&provider.base, client.clone());
    let provisioner = HttpProvisioner::new(&provider.base, client);
    let (capture, refund) = (capture_request(), refund_request());
    let (id, line) = (purchase_id(), line("ebook-rust", ProductKind::Digital));
    tokio::join!(
        payments.capture(&capture),
        payments.refund(&refund),
        provisioner.provision(&id, &line),
        provisioner.revoke(&id, &line),
    )
}

#[track_caller]
fn assert_all_transient(results: FourResults, case: &str) {
    let (capture, refund, provision, revoke) = results;
    assert!(
        matches!(capture, Err(PaymentError::Transient(_))),
        "{case}: capture {capture:?}"
    );
    assert!(
        matches!(refund, Err(PaymentError::Transient(_))),
        "{case}: refund {refund:?}"
    );
    assert!(
        matches!(provision, Err(ProvisioningError::Transient(_))),
        "{case}: provision {provision:?}"
    );
    assert!(
        matches!(revoke, Err(ProvisioningError::Transient(_))),
        "{case}: revoke {revoke:?}"
    );
}

#[tokio::test]
async fn an_answer_slower_than_the_deadline_is_transient() {
    // The production deadline is 10 s (pinned below); this client's is
    // short so the test is quick. The provider would answer after 30 s.
    const DEADLINE: Duration = Duration::from_millis(300);
    let client = reqwest::Client::builder()
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let provider = Provider::answering(Answer::Late(Duration::from_secs(30))).await;
    let started = Instant::now();
    assert_all_transient(all_four(&provider, client.clone()).await, "late answer");
    let elapsed = started.elapsed();
    assert!(elapsed >= DEADLINE, "gave up after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "waited {elapsed:?}");
    assert_eq!(provider.received().len(), 4, "every call was sent");

    // Headers on time, then the body stalls: the deadline covers it too.
    let provider = Provider::answering(Answer::StalledBody).await;
    let started = Instant::now();
    let capture = HttpPaymentGateway::new(&provider.base, client)
        .capture(&capture_request())
        .await;
    assert!(
        matches!(capture, Err(PaymentError::Transient(_))),
        "{capture:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    let provider = Provider::answering(Answer::HangUp).await;
    assert_all_transient(
        all_four(&provider, http_client().unwrap()).await,
        "hung up after reading",
    );
    assert_eq!(provider.received().len(), 4);

    let provider = Provider::answering(Answer::Slam).await;
    assert_all_transient(
        all_four(&provider, http_client().unwrap()).await,
        "closed on accept",
    );
}

#[tokio::test]
async fn a_provider_nobody_answers_for_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let client = http_client().unwrap();
    let payments = HttpPaymentGateway::new(&base, client.clone());
    let provisioner = HttpProvisioner::new(&base, client);
    let line = line("ebook-rust", ProductKind::Digital);
    assert!(matches!(
        payments.capture(&capture_request()).await,
        Err(PaymentError::Transient(_))
    ));
    assert!(matches!(
        payments.refund(&refund_request()).await,
        Err(PaymentError::Transient(_))
    ));
    assert!(matches!(
        provisioner.provision(&purchase_id(), &line).await,
        Err(ProvisioningError::Transient(_))
    ));
    assert!(matches!(
        provisioner.revoke(&purchase_id(), &line).await,
        Err(ProvisioningError::Transient(_))
    ));
}

// ---------------------------------------------------------------- the client

#[test]
fn production_deadlines_are_the_documented_ones() {
    // shared/src/adapters/http_client.rs: "10 s per call, connection
    // included; 3 s to connect".
    assert_eq!(CALL_DEADLINE, Duration::from_secs(10));
    assert_eq!(CONNECT_DEADLINE, Duration::from_secs(3));
    assert!(CONNECT_DEADLINE < CALL_DEADLINE);
    // ... and that the production client applies the call deadline (the
    // deadline test below uses a shorter one to stay quick). reqwest shows
    // no getter, only its Debug output; should that format change, check
    // `http_client()` by hand and update this line.
    let client = format!("{:?}", http_client().expect("the production client builds"));
    assert!(
        client.contains(&format!("Timeout: {CALL_DEADLINE:?}")),
        "http_client() does not apply CALL_DEADLINE: {client}"
    );

    // "Well inside a step's function timeout": every function given a
    // provider URL in template.yaml has a Lambda timeout above one call.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let template: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let global = template["Globals"]["Function"]["Timeout"]
        .as_u64()
        .expect("a global function timeout");
    let mut checked = 0;
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let variables = &resource["Properties"]["Environment"]["Variables"];
        let calls_a_provider = ["PAYMENT_URL", "PROVISIONING_URL"]
            .iter()
            .any(|var| variables.get(*var).is_some());
        if !calls_a_provider {
            continue;
        }
        let timeout = resource["Properties"]["Timeout"].as_u64().unwrap_or(global);
        assert!(
            Duration::from_secs(timeout) > CALL_DEADLINE,
            "{name:?}: a {timeout} s function cannot wait out a {CALL_DEADLINE:?} call"
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no function in template.yaml calls a provider?"
    );
}

#[test]
fn status_classes_are_the_documented_ones() {
    let class = |status: u16| classify_status(reqwest::StatusCode::from_u16(status).unwrap());
    for status in [200, 201, 202, 204, 299] {
        assert_eq!(class(status), StatusClass::Success, "{status}");
    }
    for status in [408, 409, 429, 500, 501, 502, 503, 504, 599] {
        assert_eq!(class(status), StatusClass::Retry, "{status}");
    }
    for status in [300, 301, 302, 307, 308, 401, 403] {
        assert_eq!(class(status), StatusClass::Misconfigured, "{status}");
    }
    for status in [400, 402, 404, 405, 410, 413, 422, 451, 499] {
        assert_eq!(class(status), StatusClass::Refused, "{status}");
    }
}
