//! The identity provider's JSON Web Key Set: fetched over HTTPS, cached,
//! refreshed on an unknown `kid` at most once per interval.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;

use super::{AuthConfigError, AuthError, unauthorized};

/// The algorithms a JWKS key can be pinned to. Everything else (HMAC, none,
/// PS*, EdDSA...) is refused before any key lookup.
pub(crate) const ACCEPTED_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// A JWKS is a handful of keys; a megabyte answer is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// How the JWKS is fetched and cached.
///
/// - **Lazily, on first use**, not at construction: `JwtAuthenticator::new`
///   stays synchronous and a cold start never fails or stalls on the identity
///   provider. `JwtAuthenticator::prefetch_keys` can warm the cache during a
///   Lambda's init phase if wanted. The HTTPS client too is built by the
///   first fetch: building it parses the machine's whole CA store, which a
///   cold start should not pay before it has a token to check.
/// - **Refreshed** when a token names a `kid` not in the cache (key rotation)
///   or the cache is older than `max_age` (keys withdrawn from the set stop
///   working within that time) — but never more often than once per
///   `min_refresh_interval`, whatever the tokens say, so forged `kid`s cannot
///   turn us into a load generator against the identity provider. The
///   initial load does not count against that limit (a key rotated just
///   after a cold start is still picked up); until a first load succeeds,
///   attempts are paced by the same interval. Concurrent requests share one
///   fetch.
/// - **A failed fetch never lets a token through.** If the keys we already
///   hold include the token's `kid`, they are still used (a key the provider
///   once published is as trustworthy after a failed refresh as before it).
///   Otherwise the request answers **503** with `Retry-After`, not 401: the
///   token may well be valid and we just cannot check it, and a 401 would send
///   clients to re-authenticate, which cannot help. A `kid` that is absent
///   from a JWKS we did fetch successfully is a plain 401.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksOptions {
    /// Minimum time between two refreshes of a loaded set (successful or
    /// not), and between two failed attempts at the initial load. Default 30 s.
    pub min_refresh_interval: Duration,
    /// After this long, the next request refreshes the set. Default 1 hour.
    pub max_age: Duration,
    /// TCP/TLS connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Whole-request timeout. Default 5 s: a request waiting on the JWKS
    /// must still answer well within API Gateway's 29 s.
    pub request_timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            min_refresh_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(60 * 60),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// `https`, or `http` on a loopback host only (tests, a local IdP): over
/// plain HTTP anyone on the path could substitute their own keys.
pub(crate) fn parse_jwks_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    // IPv6 hosts come bracketed (`[::1]`).
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        "http" => Err(format!(
            "{url:?} must use https (plain http is allowed for loopback hosts only)"
        )),
        other => Err(format!("{url:?} has unsupported scheme {other:?}")),
    }
}

/// One usable key: the algorithm it verifies is fixed when it is loaded.
pub(crate) struct VerificationKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

pub(crate) struct KeySet {
    keys: Vec<Arc<VerificationKey>>,
}

impl KeySet {
    /// The key named by `kid`; a token without `kid` only matches a set of
    /// exactly one key, so it is never ambiguous.
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .cloned(),
            None => match self.keys.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        }
    }
}

#[derive(Default)]
struct CacheState {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    /// Any fetch attempt: paces retries while no key set was ever loaded.
    last_attempt: Option<Instant>,
    /// Fetch attempts made while a key set was held (unknown `kid`, or
    /// older than `max_age`): paces refreshes. The initial load does not
    /// count, so a rotation right after a cold start is still picked up.
    last_refresh: Option<Instant>,
    /// Why the last attempt failed; `None` after a success.
    last_error: Option<String>,
}

impl CacheState {
    /// The attempt the rate limit counts from: see the field docs.
    fn pacing(&self) -> Option<Instant> {
        if self.keys.is_some() {
            self.last_refresh
        } else {
            self.last_attempt
        }
    }
}

pub(crate) struct JwksCache {
    url: Url,
    /// Built by the first fetch (see [`JwksOptions`]).
    client: OnceLock<reqwest::Client>,
    options: JwksOptions,
    /// Read on every request; held only for a copy, never across an await.
    state: Mutex<CacheState>,
    /// Held across a fetch, so concurrent misses share a single fetch.
    refresh: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub(crate) fn new(url: &str, options: JwksOptions) -> Result<JwksCache, AuthConfigError> {
        let url = parse_jwks_url(url).map_err(|reason| AuthConfigError::Invalid {
            var: super::ENV_JWKS_URL,
            reason,
        })?;
        Ok(JwksCache {
            url,
            client: OnceLock::new(),
            options,
            state: Mutex::new(CacheState::default()),
            refresh: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The HTTPS client, built on the first call. A failed build is not
    /// kept: it fails this fetch (503, like an unreachable provider) and the
    /// next fetch tries again.
    fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let built = reqwest::Client::builder()
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
            // A redirect could downgrade to http or leave the provider's host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("purchase-orchestrator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client failed: {e}"))?;
        Ok(self.client.get_or_init(|| built))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state is a few plain assignments; a panic elsewhere while it
        // was held cannot leave it half-updated, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached key for `kid` if the set is fresh enough to use without
    /// asking the provider.
    fn fresh_key(&self, kid: Option<&str>, now: Instant) -> Option<Arc<VerificationKey>> {
        let state = self.state();
        let fresh = state
            .fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.options.max_age);
        if !fresh {
            return None;
        }
        state.keys.as_ref().and_then(|keys| keys.find(kid))
    }

    /// The cached key for `kid`, however old.
    fn any_key(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        self.state().keys.as_ref().and_then(|keys| keys.find(kid))
    }

    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
    ) -> Result<Arc<VerificationKey>, AuthError> {
        if let Some(key) = self.fresh_key(kid, Instant::now()) {
            return Ok(key);
        }
        let _refreshing = match self.refresh.try_lock() {
            Ok(guard) => guard,
            Err(_) => match self.any_key(kid) {
                // Someone else is refreshing an expired set: rather than
                // wait for them, use the key we hold, which is still genuine.
                Some(key) => return Ok(key),
                None => self.refresh.lock().await,
            },
        };
        // Another request may have refreshed while this one waited.
        if let Some(key) = self.fresh_key(kid, Instant::now()) {
            return Ok(key);
        }
        if self.may_fetch(Instant::now()) {
            // The outcome is recorded in the state, read just below.
            let _ = self.refresh_now().await;
        }
        if let Some(key) = self.any_key(kid) {
            // Possibly stale if the refresh failed or was rate-limited: still
            // a key the provider published, so still fine to verify with.
            return Ok(key);
        }
        let state = self.state();
        let kid_shown = kid.map(shorten).unwrap_or_else(|| "(none)".to_owned());
        match &state.last_error {
            Some(error) => Err(AuthError::Unavailable {
                retry_after_seconds: self.retry_after_seconds(&state),
                reason: format!(
                    "cannot verify token with kid {kid_shown}: JWKS unavailable: {error}"
                ),
            }),
            None => Err(unauthorized(format!(
                "no key with kid {kid_shown} in the JWKS (refetched at most every {} s)",
                self.options.min_refresh_interval.as_secs()
            ))),
        }
    }

    pub(crate) async fn prefetch(&self) -> Result<(), String> {
        let _refreshing = self.refresh.lock().await;
        if self.may_fetch(Instant::now()) {
            return self.refresh_now().await;
        }
        // Rate-limited: report whether we hold keys at all.
        let state = self.state();
        match (&state.keys, &state.last_error) {
            (Some(_), _) => Ok(()),
            (None, Some(error)) => Err(error.clone()),
            (None, None) => Err("the JWKS has not been fetched yet".to_owned()),
        }
    }

    fn may_fetch(&self, now: Instant) -> bool {
        CacheState::pacing(&self.state())
            .is_none_or(|at| now.saturating_duration_since(at) >= self.options.min_refresh_interval)
    }

    fn retry_after_seconds(&self, state: &CacheState) -> u32 {
        let waited = state.pacing().map_or(Duration::MAX, |at| at.elapsed());
        let remaining = self.options.min_refresh_interval.saturating_sub(waited);
        u32::try_from(remaining.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Fetches once and records the outcome. Call with `refresh` held.
    async fn refresh_now(&self) -> Result<(), String> {
        let started = Instant::now();
        let outcome = self.fetch().await;
        let mut state = self.state();
        state.last_attempt = Some(started);
        if state.keys.is_some() {
            state.last_refresh = Some(started);
        }
        match outcome {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.keys.len(), "fetched JWKS");
                state.keys = Some(Arc::new(keys));
                state.fetched_at = Some(started);
                state.last_error = None;
                Ok(())
            }
            Err(error) => {
                // The old keys, if any, stay: a failed refresh loses nothing.
                tracing::warn!(url = %self.url, error = %error, "JWKS fetch failed");
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let mut response = self
            .client()?
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {status}"));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("body is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading body failed: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("body is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// Parses a JWKS, keeping the keys we can use and skipping (with a log line)
/// the rest: one odd key must not lock everyone out. A set with no usable
/// key at all is an error, so it never replaces a good cached set.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        let kid = value.get("kid").and_then(|kid| kid.as_str()).map(shorten);
        let loaded = serde_json::from_value::<Jwk>(value)
            .map_err(|e| format!("malformed JWK: {e}"))
            .and_then(|jwk| verification_key(&jwk));
        match loaded {
            Ok(key) => keys.push(Arc::new(key)),
            Err(reason) => tracing::info!(kid = ?kid, reason = %reason, "skipping JWK"),
        }
    }
    if keys.is_empty() {
        return Err(
            "the JWKS has no usable signing key (RSA for RS256 or EC P-256 for ES256)".to_owned(),
        );
    }
    Ok(KeySet { keys })
}

/// Pins each key to one algorithm from what the key itself is: RSA →
/// RS256, EC P-256 → ES256. A declared `alg` must agree; symmetric keys are
/// never taken from a JWKS (it is public, so its secret would be too).
fn verification_key(jwk: &Jwk) -> Result<VerificationKey, String> {
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err(format!("key use is {usage:?}, not sig"));
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops does not include verify".to_owned());
    }
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) if matches!(declared, None | Some(KeyAlgorithm::RS256)) => {
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(params)
            if params.curve == EllipticCurve::P256
                && matches!(declared, None | Some(KeyAlgorithm::ES256)) =>
        {
            Algorithm::ES256
        }
        _ => {
            return Err(format!(
                "unsupported key type or alg {declared:?} (RS256 and ES256 only)"
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key material: {e}"))?;
    Ok(VerificationKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// `kid`s come from tokens and IdPs: keep log lines short.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real 2048-bit modulus is not needed to test selection: parsing only
    // decodes base64url, and verification is covered by tests/auth.rs.
    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    const E: &str = "AQAB";
    const X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
    const Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";

    fn set(keys: serde_json::Value) -> Result<KeySet, String> {
        parse_jwks(serde_json::json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn keys_are_pinned_by_type_and_unusable_ones_skipped() {
        let keys = set(serde_json::json!([
            { "kty": "RSA", "kid": "rsa", "n": N, "e": E },
            { "kty": "RSA", "kid": "rsa-declared", "alg": "RS256", "use": "sig", "n": N, "e": E },
            { "kty": "EC", "kid": "ec", "crv": "P-256", "x": X, "y": Y },
            { "kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": N, "e": E },
            { "kty": "RSA", "kid": "rsa-ps", "alg": "PS256", "n": N, "e": E },
            { "kty": "RSA", "kid": "rsa-says-es", "alg": "ES256", "n": N, "e": E },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "x": X, "y": Y },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": X },
            { "kty": "RSA", "kid": "broken", "n": 42 },
            "not even an object"
        ]))
        .unwrap();
        let found = |kid: &str| keys.find(Some(kid)).map(|key| key.alg);
        assert_eq!(found("rsa"), Some(Algorithm::RS256));
        assert_eq!(found("rsa-declared"), Some(Algorithm::RS256));
        assert_eq!(found("ec"), Some(Algorithm::ES256));
        for skipped in [
            "rsa-enc",
            "rsa-ps",
            "rsa-says-es",
            "p384",
            "hmac",
            "ed",
            "broken",
            "unknown",
        ] {
            assert!(found(skipped).is_none(), "{skipped} should not be usable");
        }
        // Three keys: a token without kid is ambiguous.
        assert!(keys.find(None).is_none());
    }

    #[test]
    fn single_key_serves_tokens_without_kid() {
        let keys = set(serde_json::json!([{ "kty": "RSA", "n": N, "e": E }])).unwrap();
        assert_eq!(keys.find(None).map(|key| key.alg), Some(Algorithm::RS256));
        assert!(keys.find(Some("other")).is_none());
    }

    #[test]
    fn empty_or_unusable_set_is_an_error() {
        assert!(set(serde_json::json!([])).is_err());
        assert!(set(serde_json::json!([{ "kty": "oct", "k": "c2VjcmV0" }])).is_err());
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(b"{}").is_err());
    }

    #[test]
    fn long_kids_are_shortened_for_logs() {
        assert_eq!(shorten("abc"), "abc");
        let long = "k".repeat(500);
        assert_eq!(shorten(&long).chars().count(), 65);
    }
}
