//! The AWS SDK clients trust Amazon's roots and nothing else (issue 14):
//! the cold start no longer parses the machine's CA store, and TLS
//! verification stays fully on.
//!
//! A DynamoDB client built the production way (`adapters::aws_sdk::
//! sdk_config` + `lambda::config::dynamodb_client`) calls an HTTPS server on
//! 127.0.0.1 whose certificate chains to a CA made by this test:
//!
//! - refused at TLS when that CA is only the server's (it is not one of
//!   Amazon's roots), and the server never sees a request;
//! - served when that CA is in the extra bundle (`AWS_CA_BUNDLE` in
//!   production; passed to the constructor here, so no test sets a
//!   process-wide variable);
//! - refused again, CA trusted, when the certificate names another host.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use shared::adapters::aws_sdk::{SdkSettings, check_ca_bundle, sdk_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA of the test's own, and a server certificate it issued.
struct TestPki {
    ca_pem: String,
    server_cert: rcgen::Certificate,
    server_key: KeyPair,
}

/// `server_names`: what the server certificate is valid for.
fn test_pki(server_names: &[&str]) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "aws_tls test CA (not Amazon's)");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let names: Vec<String> = server_names.iter().map(|n| n.to_string()).collect();
    let mut server_params = CertificateParams::new(names).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "aws_tls test server");
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server_cert,
        server_key,
    }
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// TLS handshakes that did not complete (the client refused us).
    failed_handshakes: AtomicUsize,
    /// The head (request line and headers) of every request served.
    requests: Mutex<Vec<String>>,
}

/// An HTTPS server on 127.0.0.1 that answers every request as DynamoDB
/// answers `ListTables` on an empty account.
async fn dynamodb_lookalike(pki: &TestPki) -> (String, Arc<Seen>) {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.serialize_der()));
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_cert.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let server_seen = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = server_seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let Some(head) = read_request(&mut tls).await else {
                    return;
                };
                seen.requests.lock().unwrap().push(head);
                let body = r#"{"TableNames":[]}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     x-amzn-requestid: aws-tls-test\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, seen)
}

/// Reads one HTTP/1.1 request (head and `content-length` body); its head.
async fn read_request(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Some(head)
}

/// A DynamoDB client as the functions build theirs, with fixed test
/// credentials instead of the environment's.
async fn dynamodb_client(url: &str, extra_roots_pem: Option<&str>) -> aws_sdk_dynamodb::Client {
    let sdk = sdk_config(SdkSettings {
        region: Some("eu-west-1".into()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "AKIDAWSTLSTEST",
            "aws-tls-test-secret",
            None,
            None,
            "aws_tls test",
        ))),
        extra_roots_pem: extra_roots_pem.map(|pem| pem.as_bytes().to_vec()),
    })
    .await
    .unwrap();
    shared::lambda::config::dynamodb_client(&sdk, Some(url))
}

/// Waits (with a deadline) until the server has counted a refused
/// handshake: the client's error can reach the test before the server's
/// side of the failed handshake is recorded.
async fn wait_for_failed_handshake(seen: &Seen) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.failed_handshakes.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server saw no failed TLS handshake"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_server_outside_amazons_roots_is_refused_at_tls() {
    let pki = test_pki(&["127.0.0.1"]);
    let (url, seen) = dynamodb_lookalike(&pki).await;

    let error = dynamodb_client(&url, None)
        .await
        .list_tables()
        .send()
        .await
        .expect_err("a certificate from a CA outside Amazon's roots must be refused");

    let text = DisplayErrorContext(&error).to_string();
    assert!(
        matches!(error, SdkError::DispatchFailure(_)),
        "not a connection failure: {text}"
    );
    assert!(
        text.contains("UnknownIssuer"),
        "not refused for its issuer: {text}"
    );
    wait_for_failed_handshake(&seen).await;
    assert!(
        seen.requests.lock().unwrap().is_empty(),
        "a request was sent over an unverified connection"
    );
}

#[tokio::test]
async fn the_same_server_is_trusted_when_its_ca_is_in_the_extra_bundle() {
    let pki = test_pki(&["127.0.0.1"]);
    assert_eq!(check_ca_bundle(pki.ca_pem.as_bytes()).unwrap(), 1);
    let (url, seen) = dynamodb_lookalike(&pki).await;

    let tables = dynamodb_client(&url, Some(&pki.ca_pem))
        .await
        .list_tables()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)));

    assert!(tables.table_names().is_empty());
    let requests = seen.requests.lock().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("x-amz-target: dynamodb_20120810.listtables"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("authorization: aws4-hmac-sha256 credential=akidawstlstest/"),
        "not signed with the given credentials: {}",
        requests[0]
    );
    assert_eq!(seen.failed_handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_trusted_ca_does_not_vouch_for_a_certificate_naming_another_host() {
    let pki = test_pki(&["dynamodb.eu-west-1.amazonaws.com"]);
    let (url, seen) = dynamodb_lookalike(&pki).await;

    let error = dynamodb_client(&url, Some(&pki.ca_pem))
        .await
        .list_tables()
        .send()
        .await
        .expect_err("a certificate for another host must be refused");

    let text = DisplayErrorContext(&error).to_string();
    assert!(
        text.contains("NotValidForName"),
        "not refused for its name: {text}"
    );
    wait_for_failed_handshake(&seen).await;
    assert!(seen.requests.lock().unwrap().is_empty());
}
