//! The JWT attack matrix against `JwtAuthenticator`: RS256 and ES256 through
//! a JWKS served on 127.0.0.1 by the test itself, and HS256 with a shared
//! secret. Keys are generated at run time; no private key is in the repo.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::api::error::ApiError;
use shared::auth::{
    AuthConfig, AuthError, Authenticator, Caller, JwksOptions, JwtAuthenticator, KeySource, Scope,
    mint_hs256_token,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "purchase-orchestrator";
const LEEWAY: u64 = 30;
const SECRET: &str = "test-only-secret-0123456789abcdef0123456789";

// ---------------------------------------------------------------- keys

struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK, as a JWKS would publish it.
    jwk: Value,
    /// The public key as X.509 SubjectPublicKeyInfo DER.
    public_der: Vec<u8>,
}

fn rsa_key(kid: &'static str) -> TestKey {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    // jsonwebtoken's RSA signer wants PKCS#1 DER; its PEM reader unwraps PKCS#8.
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let public_der = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
        .unwrap()
        .as_ref()
        .to_vec();
    test_key(kid, Algorithm::RS256, encoding, public_der)
}

fn ec_key(kid: &'static str) -> TestKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
    let public_der = pair.public_key().as_ref().to_vec();
    test_key(kid, Algorithm::ES256, encoding, public_der)
}

fn test_key(
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    public_der: Vec<u8>,
) -> TestKey {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    TestKey {
        kid,
        alg,
        encoding,
        jwk,
        public_der,
    }
}

// RSA key generation is slow in debug builds: one set per test binary.
static RSA: LazyLock<TestKey> = LazyLock::new(|| rsa_key("rsa-1"));
static RSA_ROTATED: LazyLock<TestKey> = LazyLock::new(|| rsa_key("rsa-2"));
/// An attacker's key, published nowhere.
static RSA_ATTACKER: LazyLock<TestKey> = LazyLock::new(|| rsa_key("rsa-1"));
static EC: LazyLock<TestKey> = LazyLock::new(|| ec_key("ec-1"));
static EC_ATTACKER: LazyLock<TestKey> = LazyLock::new(|| ec_key("ec-1"));

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>() })
}

// ---------------------------------------------------------------- tokens

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": "openid purchases:read purchases:write profile",
        "iat": now(),
        "exp": now() + 300,
    })
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

fn sign_as(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn sign(key: &TestKey, claims: &Value) -> String {
    sign_as(key.alg, Some(key.kid), claims, &key.encoding)
}

fn hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    sign_as(
        Algorithm::HS256,
        kid,
        claims,
        &EncodingKey::from_secret(secret),
    )
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// An unsigned token, as an attacker would write it by hand.
fn unsigned(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{}", b64(&header), b64(claims), signature)
}

fn bearer(token: &str) -> HeaderMap {
    authorization(&format!("Bearer {token}"))
}

fn authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    headers
}

async fn check(auth: &JwtAuthenticator, token: &str) -> Result<Caller, AuthError> {
    auth.authenticate(&bearer(token)).await
}

#[track_caller]
fn assert_unauthorized(result: Result<Caller, AuthError>, case: &str) {
    match result {
        Err(AuthError::Unauthorized { reason }) => {
            assert!(!reason.is_empty(), "{case}: empty reason");
            // The API answers 401 and logs the reason, never sends it.
            let response = ApiError::from(AuthError::Unauthorized {
                reason: reason.clone(),
            })
            .into_response("test");
            assert_eq!(response.status(), 401, "{case}");
            assert!(!response.body().contains(&reason), "{case}: reason sent");
        }
        other => panic!("{case}: expected 401 Unauthorized, got {other:?}"),
    }
}

#[track_caller]
fn assert_unavailable(result: Result<Caller, AuthError>, case: &str) {
    match result {
        Err(error @ AuthError::Unavailable { .. }) => {
            // The API's one mapping turns it into 503 + Retry-After.
            let response = ApiError::from(error).into_response("test");
            assert_eq!(response.status(), 503, "{case}");
            assert!(
                response.headers().contains_key(http::header::RETRY_AFTER),
                "{case}"
            );
        }
        other => panic!("{case}: expected 503 Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------- JWKS server

/// A minimal HTTP/1.1 server on 127.0.0.1 answering every request with the
/// current body and status, counting requests. While held, it reads and
/// counts requests but answers none until released.
struct JwksServer {
    url: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

struct ServerState {
    hits: AtomicUsize,
    body: Mutex<String>,
    status: AtomicU16,
    /// `true` while answers are held back.
    held: tokio::sync::watch::Sender<bool>,
}

impl JwksServer {
    async fn start(body: Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let state = Arc::new(ServerState {
            hits: AtomicUsize::new(0),
            body: Mutex::new(body.to_string()),
            status: AtomicU16::new(200),
            held: tokio::sync::watch::Sender::new(false),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, shared.clone()));
            }
        });
        JwksServer { url, state, task }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, body: Value) {
        *self.state.body.lock().unwrap() = body.to_string();
    }

    fn fail_with(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Requests from now on are received (and counted) but not answered...
    fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// ...until this answers them all.
    fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Waits until the server has received `hits` requests, polling with a
    /// deadline (an event, not a guess at how long it takes).
    async fn wait_for_hits(&self, hits: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.hits() < hits {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the JWKS server saw {} requests, never {hits}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn answer(mut socket: tokio::net::TcpStream, state: Arc<ServerState>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let _ = state.held.subscribe().wait_for(|held| !held).await;
    let body = state.body.lock().unwrap().clone();
    let response = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        state.status.load(Ordering::SeqCst),
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options(min_refresh_interval: Duration) -> JwksOptions {
    let mut options = JwksOptions::default();
    options.min_refresh_interval = min_refresh_interval;
    options.connect_timeout = Duration::from_secs(2);
    options.request_timeout = Duration::from_secs(3);
    options
}

fn jwks_auth(url: &str, options: JwksOptions) -> JwtAuthenticator {
    let config = AuthConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: LEEWAY,
        keys: KeySource::Jwks { url: url.into() },
    };
    JwtAuthenticator::with_jwks_options(config, options).unwrap()
}

/// A server with the RSA and EC keys, and an authenticator that refetches at
/// most once a minute (so hit counts in a test are exact).
async fn rsa_setup() -> (JwksServer, JwtAuthenticator) {
    let server = JwksServer::start(jwks(&[&RSA, &EC])).await;
    let auth = jwks_auth(&server.url, options(Duration::from_secs(60)));
    (server, auth)
}

fn hs256_auth() -> JwtAuthenticator {
    JwtAuthenticator::new(AuthConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: LEEWAY,
        keys: KeySource::Hs256 {
            secret: SECRET.into(),
        },
    })
    .unwrap()
}

// ---------------------------------------------------------------- RS256 / ES256

#[tokio::test]
async fn rs256_valid_token_is_accepted_and_keys_are_cached() {
    let (server, auth) = rsa_setup().await;
    assert_eq!(server.hits(), 0, "construction must not fetch");
    let caller = check(&auth, &sign(&RSA, &claims("c-123"))).await.unwrap();
    assert_eq!(caller.customer_id, "c-123");
    // Unknown scopes (openid, profile) are ignored.
    assert_eq!(caller.scopes, vec![Scope::Read, Scope::Write]);
    for _ in 0..5 {
        check(&auth, &sign(&RSA, &claims("c-123"))).await.unwrap();
    }
    assert_eq!(server.hits(), 1, "the JWKS is fetched once and cached");
    // Clones share the cache.
    check(&auth.clone(), &sign(&RSA, &claims("c-9")))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn rs256_time_claims_are_checked_with_leeway() {
    let (_server, auth) = rsa_setup().await;
    let expired = with(claims("c-1"), "exp", json!(now() - LEEWAY as i64 - 60));
    assert_unauthorized(
        check(&auth, &sign(&RSA, &expired)).await,
        "expired beyond leeway",
    );
    let just_expired = with(claims("c-1"), "exp", json!(now() - 5));
    check(&auth, &sign(&RSA, &just_expired))
        .await
        .expect("expired within leeway");
    let early = with(claims("c-1"), "nbf", json!(now() + LEEWAY as i64 + 60));
    assert_unauthorized(check(&auth, &sign(&RSA, &early)).await, "nbf in the future");
    let nearly = with(claims("c-1"), "nbf", json!(now() + 5));
    check(&auth, &sign(&RSA, &nearly))
        .await
        .expect("nbf within leeway");
    let no_exp = without(claims("c-1"), "exp");
    assert_unauthorized(check(&auth, &sign(&RSA, &no_exp)).await, "no exp");
    let text_exp = with(claims("c-1"), "exp", json!("tomorrow"));
    assert_unauthorized(
        check(&auth, &sign(&RSA, &text_exp)).await,
        "exp not a number",
    );
}

#[tokio::test]
async fn rs256_issuer_and_audience_are_checked() {
    let (_server, auth) = rsa_setup().await;
    let cases = [
        (
            "wrong iss",
            with(claims("c-1"), "iss", json!("https://evil.test/")),
        ),
        ("missing iss", without(claims("c-1"), "iss")),
        (
            "wrong aud",
            with(claims("c-1"), "aud", json!("another-api")),
        ),
        (
            "wrong aud list",
            with(claims("c-1"), "aud", json!(["a", "b"])),
        ),
        ("missing aud", without(claims("c-1"), "aud")),
    ];
    for (case, claims) in cases {
        assert_unauthorized(check(&auth, &sign(&RSA, &claims)).await, case);
    }
    let several = with(claims("c-1"), "aud", json!(["another-api", AUDIENCE]));
    check(&auth, &sign(&RSA, &several))
        .await
        .expect("our audience among others");
}

#[tokio::test]
async fn rs256_bad_signatures_are_rejected() {
    let (_server, auth) = rsa_setup().await;
    // Same kid, a key we never published.
    let forged = sign(&RSA_ATTACKER, &claims("c-1"));
    assert_unauthorized(check(&auth, &forged).await, "signed by another key");
    // A genuine token whose payload was swapped for another customer's.
    let genuine = sign(&RSA, &claims("c-1"));
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims("c-2")), parts[2]);
    assert_unauthorized(check(&auth, &tampered).await, "tampered payload");
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_unauthorized(check(&auth, &stripped).await, "signature removed");
    let truncated = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() / 2]
    );
    assert_unauthorized(check(&auth, &truncated).await, "signature truncated");
}

#[tokio::test]
async fn alg_none_is_rejected_without_fetching_keys() {
    let (server, auth) = rsa_setup().await;
    let genuine = sign(&RSA, &claims("c-1"));
    let genuine_signature = genuine.rsplit('.').next().unwrap();
    for alg in ["none", "None", "NONE", ""] {
        for signature in ["", genuine_signature] {
            let token = unsigned(
                json!({ "alg": alg, "typ": "JWT", "kid": RSA.kid }),
                &claims("c-1"),
                signature,
            );
            assert_unauthorized(check(&auth, &token).await, &format!("alg {alg:?}"));
        }
    }
    let no_alg = unsigned(json!({ "typ": "JWT", "kid": RSA.kid }), &claims("c-1"), "");
    assert_unauthorized(check(&auth, &no_alg).await, "no alg");
    assert_eq!(
        server.hits(),
        0,
        "forged headers must not cause JWKS fetches"
    );
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    // Classic key confusion: the attacker uses the published RSA public key
    // as an HMAC secret, hoping the server lets the token pick HS256.
    let (server, auth) = rsa_setup().await;
    let n = RSA.jwk["n"].as_str().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&RSA.public_der)
    );
    let secrets: Vec<Vec<u8>> = vec![
        RSA.public_der.clone(),
        pem.into_bytes(),
        n.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(n).unwrap(),
        RSA.jwk.to_string().into_bytes(),
    ];
    for (i, secret) in secrets.iter().enumerate() {
        for kid in [Some(RSA.kid), None] {
            let token = hs256(secret, kid, &claims("c-1"));
            assert_unauthorized(
                check(&auth, &token).await,
                &format!("HS256 with public key form {i}, kid {kid:?}"),
            );
        }
    }
    assert_eq!(
        server.hits(),
        0,
        "an HS256 token must not even reach the key lookup"
    );
}

#[tokio::test]
async fn unknown_or_mismatched_algorithms_are_rejected() {
    let (_server, auth) = rsa_setup().await;
    // The genuine RSA key, but an algorithm the JWK does not declare.
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign_as(alg, Some(RSA.kid), &claims("c-1"), &RSA.encoding);
        assert_unauthorized(
            check(&auth, &token).await,
            &format!("{alg:?} with the RS256 key"),
        );
    }
    // An ES256 token pointing at the RSA key's kid (and vice versa).
    let es_on_rsa_kid = sign_as(
        Algorithm::ES256,
        Some(RSA.kid),
        &claims("c-1"),
        &EC.encoding,
    );
    assert_unauthorized(
        check(&auth, &es_on_rsa_kid).await,
        "ES256 token naming the RSA kid",
    );
    let rs_on_ec_kid = sign_as(
        Algorithm::RS256,
        Some(EC.kid),
        &claims("c-1"),
        &RSA.encoding,
    );
    assert_unauthorized(
        check(&auth, &rs_on_ec_kid).await,
        "RS256 token naming the EC kid",
    );
    let made_up = unsigned(
        json!({ "alg": "XS999", "kid": RSA.kid }),
        &claims("c-1"),
        "c2ln",
    );
    assert_unauthorized(check(&auth, &made_up).await, "made-up alg");
}

#[tokio::test]
async fn sub_is_required_and_non_empty() {
    let (_server, auth) = rsa_setup().await;
    let cases = [
        ("missing sub", without(claims("x"), "sub")),
        ("empty sub", claims("")),
        ("blank sub", claims("   ")),
        ("numeric sub", with(claims("x"), "sub", json!(42))),
        ("null sub", with(claims("x"), "sub", Value::Null)),
    ];
    for (case, claims) in cases {
        assert_unauthorized(check(&auth, &sign(&RSA, &claims)).await, case);
    }
}

#[tokio::test]
async fn scope_claim_variants() {
    let (_server, auth) = rsa_setup().await;
    let admin = with(claims("ops"), "scope", json!("purchases:admin"));
    assert_eq!(
        check(&auth, &sign(&RSA, &admin)).await.unwrap().scopes,
        vec![Scope::Admin]
    );
    let none = without(claims("c-1"), "scope");
    let caller = check(&auth, &sign(&RSA, &none)).await.unwrap();
    assert!(caller.scopes.is_empty());
    assert!(matches!(
        caller.require(Scope::Read),
        Err(AuthError::Forbidden { .. })
    ));
    let list = with(claims("c-1"), "scope", json!(["purchases:read", "email"]));
    assert_eq!(
        check(&auth, &sign(&RSA, &list)).await.unwrap().scopes,
        vec![Scope::Read]
    );
    let wrong_type = with(claims("c-1"), "scope", json!(7));
    assert_unauthorized(
        check(&auth, &sign(&RSA, &wrong_type)).await,
        "scope of the wrong type",
    );
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_rejected() {
    let (server, auth) = rsa_setup().await;
    assert_unauthorized(auth.authenticate(&HeaderMap::new()).await, "no header");
    let token = sign(&RSA, &claims("c-1"));
    let cases = [
        (
            "Basic scheme",
            format!("Basic {}", STANDARD.encode("c-1:password")),
        ),
        ("token without scheme", token.clone()),
        ("Token scheme", format!("Token {token}")),
        ("scheme only", "Bearer".to_owned()),
        ("empty token", "Bearer    ".to_owned()),
        ("two tokens", format!("Bearer {token} {token}")),
        ("garbage", "Bearer not-a-jwt".to_owned()),
        ("garbage with dots", "Bearer a.b.c".to_owned()),
        ("dots only", "Bearer ..".to_owned()),
        ("four parts", format!("Bearer {token}.extra")),
        ("bad base64 header", "Bearer !!!.e30.c2ln".to_owned()),
        (
            "header not JSON",
            format!("Bearer {}.e30.c2ln", URL_SAFE_NO_PAD.encode("hello")),
        ),
    ];
    for (case, value) in cases {
        assert_unauthorized(auth.authenticate(&authorization(&value)).await, case);
    }
    assert_eq!(
        server.hits(),
        0,
        "malformed requests must not cause JWKS fetches"
    );
    // Scheme is case-insensitive.
    auth.authenticate(&authorization(&format!("bearer {token}")))
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_kid_refetches_exactly_once_within_the_rate_limit() {
    let (server, auth) = rsa_setup().await;
    check(&auth, &sign(&RSA, &claims("c-1"))).await.unwrap();
    assert_eq!(server.hits(), 1);
    let unknown = sign_as(
        Algorithm::RS256,
        Some("no-such-kid"),
        &claims("c-1"),
        &RSA.encoding,
    );
    assert_unauthorized(check(&auth, &unknown).await, "unknown kid");
    assert_eq!(server.hits(), 2, "an unknown kid triggers one refetch");
    for _ in 0..5 {
        assert_unauthorized(check(&auth, &unknown).await, "unknown kid again");
    }
    let other_unknown = sign_as(
        Algorithm::RS256,
        Some("another-kid"),
        &claims("c-1"),
        &RSA.encoding,
    );
    assert_unauthorized(check(&auth, &other_unknown).await, "another unknown kid");
    assert_eq!(server.hits(), 2, "no further fetch within the rate limit");
    // Known keys keep working meanwhile.
    check(&auth, &sign(&RSA, &claims("c-1"))).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn rate_limit_allows_a_new_fetch_after_the_interval() {
    const INTERVAL: Duration = Duration::from_millis(300);
    let server = JwksServer::start(jwks(&[&RSA])).await;
    let auth = jwks_auth(&server.url, options(INTERVAL));
    let unknown = sign_as(
        Algorithm::RS256,
        Some("no-such-kid"),
        &claims("c-1"),
        &RSA.encoding,
    );
    // The initial load (not rate-limited).
    assert_unauthorized(check(&auth, &unknown).await, "unknown kid");
    assert_eq!(server.hits(), 1);
    // One refetch for the unknown kid; the interval counts from its start,
    // which is after `refetch_asked`.
    let refetch_asked = std::time::Instant::now();
    assert_unauthorized(check(&auth, &unknown).await, "unknown kid, refetch");
    assert_eq!(server.hits(), 2);
    // Ask again until the next fetch happens, however slow the machine: the
    // rate limit shows as a lower bound on when it happens, which no
    // scheduling delay can make fail.
    let deadline = refetch_asked + Duration::from_secs(10);
    let mut refused_without_fetching = 0;
    loop {
        assert_unauthorized(check(&auth, &unknown).await, "unknown kid, again");
        // Measured after the check, so an upper bound on when it fetched.
        let elapsed = refetch_asked.elapsed();
        match server.hits() {
            2 => refused_without_fetching += 1,
            3 => {
                assert!(
                    elapsed >= INTERVAL,
                    "refetched after {elapsed:?}, within the {INTERVAL:?} rate limit"
                );
                break;
            }
            hits => panic!("{hits} fetches"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refetch within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused_without_fetching > 0,
        "at least one request within the interval was answered from the cache"
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_through_the_unknown_kid_refetch() {
    let server = JwksServer::start(jwks(&[&RSA])).await;
    let auth = jwks_auth(&server.url, options(Duration::from_secs(60)));
    check(&auth, &sign(&RSA, &claims("c-1"))).await.unwrap();
    // The provider rotates: the new key is published, the old one withdrawn.
    server.serve(jwks(&[&RSA_ROTATED]));
    let caller = check(&auth, &sign(&RSA_ROTATED, &claims("c-2")))
        .await
        .unwrap();
    assert_eq!(caller.customer_id, "c-2");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let (server, auth) = rsa_setup().await;
    let token = sign(&RSA, &claims("c-1"));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (auth, token) = (auth.clone(), token.clone());
            tokio::spawn(async move { check(&auth, &token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn prefetch_warms_the_cache() {
    let (server, auth) = rsa_setup().await;
    auth.prefetch_keys().await.unwrap();
    assert_eq!(server.hits(), 1);
    check(&auth, &sign(&RSA, &claims("c-1"))).await.unwrap();
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn jwks_server_down_never_lets_a_token_through() {
    // A port nobody listens on: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let auth = jwks_auth(&url, options(Duration::from_secs(60)));
    let valid = sign(&RSA, &claims("c-1"));
    assert_unavailable(check(&auth, &valid).await, "JWKS unreachable");
    // Rate-limited: answers at once, still never success.
    assert_unavailable(check(&auth, &valid).await, "JWKS unreachable, again");
    assert!(
        auth.prefetch_keys().await.is_err(),
        "prefetch reports that no keys are held"
    );
    // Forged tokens are refused outright, whatever the JWKS's state.
    assert_unauthorized(
        check(
            &auth,
            &hs256(&RSA.public_der, Some(RSA.kid), &claims("c-1")),
        )
        .await,
        "HS256",
    );
}

#[tokio::test]
async fn jwks_errors_and_junk_never_let_a_token_through() {
    let valid = sign(&RSA, &claims("c-1"));
    let server = JwksServer::start(jwks(&[&RSA])).await;
    server.fail_with(500);
    let auth = jwks_auth(&server.url, options(Duration::from_secs(60)));
    assert_unavailable(check(&auth, &valid).await, "JWKS answers 500");
    assert_unavailable(check(&auth, &valid).await, "JWKS answers 500, rate-limited");
    assert_eq!(server.hits(), 1);

    for junk in [
        json!("<html>"),
        json!({}),
        json!({ "keys": [] }),
        json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] }),
    ] {
        let server = JwksServer::start(junk.clone()).await;
        let auth = jwks_auth(&server.url, options(Duration::from_secs(60)));
        assert_unavailable(check(&auth, &valid).await, &format!("JWKS body {junk}"));
    }

    // A symmetric key in the JWKS is never used, even for an HS256 token
    // signed with exactly that key.
    let secret = b"a-jwks-must-never-hold-a-secret-key";
    let leaky = json!({ "keys": [{ "kty": "oct", "kid": "hmac", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret) }, RSA.jwk] });
    let server = JwksServer::start(leaky).await;
    let auth = jwks_auth(&server.url, options(Duration::from_secs(60)));
    assert_unauthorized(
        check(&auth, &hs256(secret, Some("hmac"), &claims("c-1"))).await,
        "oct key from a JWKS",
    );
    check(&auth, &valid)
        .await
        .expect("the RSA key next to it still works");
}

#[tokio::test]
async fn cached_keys_survive_a_failed_refresh_but_unknown_kids_do_not() {
    let server = JwksServer::start(jwks(&[&RSA])).await;
    let mut options = options(Duration::ZERO);
    options.max_age = Duration::ZERO; // every request tries to refresh
    let auth = jwks_auth(&server.url, options);
    check(&auth, &sign(&RSA, &claims("c-1"))).await.unwrap();
    server.fail_with(503);
    let caller = check(&auth, &sign(&RSA, &claims("c-1")))
        .await
        .expect("stale but genuine key");
    assert_eq!(caller.customer_id, "c-1");
    assert!(server.hits() >= 2, "a refresh was attempted");
    let unknown = sign_as(
        Algorithm::RS256,
        Some("rsa-2"),
        &claims("c-1"),
        &RSA_ROTATED.encoding,
    );
    assert_unavailable(
        check(&auth, &unknown).await,
        "unknown kid while the JWKS is down",
    );
    assert_unauthorized(
        check(&auth, &sign(&RSA_ATTACKER, &claims("c-1"))).await,
        "forgery while the JWKS is down",
    );
    // The provider recovers; a JWKS that was fetched and lacks the kid is a 401.
    server.fail_with(200);
    assert_unauthorized(check(&auth, &unknown).await, "unknown kid, JWKS up");
}

#[tokio::test]
async fn an_expired_set_is_refreshed_by_one_request_while_others_use_it() {
    let server = JwksServer::start(jwks(&[&RSA])).await;
    let mut options = options(Duration::ZERO);
    // Always expired: every request wants a refresh, and one does it.
    options.max_age = Duration::ZERO;
    // Longer than this test's own deadline below, so a request that waits
    // for the refresh waits for the release, not for a client timeout.
    options.request_timeout = Duration::from_secs(60);
    let auth = jwks_auth(&server.url, options);
    let token = sign(&RSA, &claims("c-1"));
    check(&auth, &token).await.unwrap();
    assert_eq!(server.hits(), 1);

    // The provider stops answering; a request starts refreshing and hangs.
    server.hold();
    let refresher = tokio::spawn({
        let (auth, token) = (auth.clone(), token.clone());
        async move { check(&auth, &token).await }
    });
    // The refresh is in flight once the server has received it.
    server.wait_for_hits(2).await;

    // Another request, meanwhile, is answered from the held keys. If it
    // waited for the refresh it could not finish before `release` below:
    // the deadline only keeps a broken build from hanging.
    let other = tokio::time::timeout(Duration::from_secs(10), check(&auth, &token)).await;
    let caller = other
        .expect("waited for someone else's refresh")
        .expect("the held key is genuine");
    assert_eq!(caller.customer_id, "c-1");
    assert!(!refresher.is_finished(), "the refresh is still in flight");
    assert_eq!(server.hits(), 2, "the second request did not fetch");

    server.release();
    refresher.await.unwrap().unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn es256_works_and_is_checked() {
    let (_server, auth) = rsa_setup().await;
    let caller = check(&auth, &sign(&EC, &claims("c-ec"))).await.unwrap();
    assert_eq!(caller.customer_id, "c-ec");
    assert_unauthorized(
        check(&auth, &sign(&EC_ATTACKER, &claims("c-ec"))).await,
        "ES256 by another key",
    );
    let expired = with(claims("c-ec"), "exp", json!(now() - 600));
    assert_unauthorized(check(&auth, &sign(&EC, &expired)).await, "ES256 expired");
    let wrong_aud = with(claims("c-ec"), "aud", json!("elsewhere"));
    assert_unauthorized(
        check(&auth, &sign(&EC, &wrong_aud)).await,
        "ES256 wrong aud",
    );
    let hs_with_ec_key = hs256(&EC.public_der, Some(EC.kid), &claims("c-ec"));
    assert_unauthorized(
        check(&auth, &hs_with_ec_key).await,
        "HS256 with the EC public key",
    );
}

#[tokio::test]
async fn token_without_kid_needs_a_single_key_set() {
    let server = JwksServer::start(jwks(&[&RSA])).await;
    let auth = jwks_auth(&server.url, options(Duration::from_secs(60)));
    let no_kid = sign_as(Algorithm::RS256, None, &claims("c-1"), &RSA.encoding);
    check(&auth, &no_kid).await.expect("one key: unambiguous");

    let (_server, auth) = rsa_setup().await;
    assert_unauthorized(
        check(&auth, &no_kid).await,
        "no kid with two keys published",
    );
}

// ---------------------------------------------------------------- HS256

#[tokio::test]
async fn hs256_valid_minted_token_is_accepted() {
    let auth = hs256_auth();
    let token = mint_hs256_token(
        SECRET,
        ISSUER,
        AUDIENCE,
        "c-123",
        &[Scope::Read, Scope::Admin],
        Duration::from_secs(600),
    )
    .unwrap();
    let caller = check(&auth, &token).await.unwrap();
    assert_eq!(caller, Caller::new("c-123", &[Scope::Read, Scope::Admin]));
    assert!(caller.may_access("someone-else"), "admin");
}

#[tokio::test]
async fn hs256_attack_matrix() {
    let auth = hs256_auth();
    let key = SECRET.as_bytes();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired beyond leeway",
            hs256(
                key,
                None,
                &with(claims("c-1"), "exp", json!(now() - LEEWAY as i64 - 60)),
            ),
        ),
        (
            "nbf in the future",
            hs256(
                key,
                None,
                &with(claims("c-1"), "nbf", json!(now() + LEEWAY as i64 + 60)),
            ),
        ),
        (
            "wrong iss",
            hs256(
                key,
                None,
                &with(claims("c-1"), "iss", json!("someone-else")),
            ),
        ),
        (
            "missing iss",
            hs256(key, None, &without(claims("c-1"), "iss")),
        ),
        (
            "wrong aud",
            hs256(key, None, &with(claims("c-1"), "aud", json!("another-api"))),
        ),
        (
            "missing aud",
            hs256(key, None, &without(claims("c-1"), "aud")),
        ),
        (
            "bad signature",
            hs256(b"not-the-secret-0123456789abcdef0123", None, &claims("c-1")),
        ),
        (
            "alg none",
            unsigned(json!({ "alg": "none", "typ": "JWT" }), &claims("c-1"), ""),
        ),
        ("RS256 token", sign(&RSA, &claims("c-1"))),
        ("ES256 token", sign(&EC, &claims("c-1"))),
        (
            "HS512 with the secret",
            sign_as(
                Algorithm::HS512,
                None,
                &claims("c-1"),
                &EncodingKey::from_secret(key),
            ),
        ),
        (
            "missing sub",
            hs256(key, None, &without(claims("c-1"), "sub")),
        ),
        ("empty sub", hs256(key, None, &claims(""))),
        ("garbage", "garbage".to_owned()),
    ];
    for (case, token) in cases {
        assert_unauthorized(check(&auth, &token).await, case);
    }
    assert_unauthorized(auth.authenticate(&HeaderMap::new()).await, "no header");
    let valid = hs256(key, None, &claims("c-1"));
    assert_unauthorized(
        auth.authenticate(&authorization(&format!("Basic {valid}")))
            .await,
        "Basic scheme",
    );
    check(&auth, &valid)
        .await
        .expect("the same claims, properly signed");
}

#[test]
fn constructor_rejects_weak_secrets_and_insecure_jwks_urls() {
    let config = |keys| AuthConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: LEEWAY,
        keys,
    };
    assert!(
        JwtAuthenticator::new(config(KeySource::Hs256 {
            secret: "short".into()
        }))
        .is_err()
    );
    assert!(
        JwtAuthenticator::new(config(KeySource::Jwks {
            url: "http://idp.example.com/jwks".into()
        }))
        .is_err()
    );
    assert!(
        JwtAuthenticator::new(config(KeySource::Jwks {
            url: "https://idp.example.com/jwks".into()
        }))
        .is_ok()
    );
}

#[test]
fn authenticator_debug_output_hides_the_secret() {
    let text = format!("{:?}", hs256_auth());
    assert!(!text.contains(SECRET), "{text}");
}
