//! Authentication (who is calling: a verified JWT) and the authorization
//! facts handlers need (which scopes the caller holds, whose purchases it may
//! touch).
//!
//! - [`JwtAuthenticator`] checks `Authorization: Bearer <jwt>`: the signature,
//!   `exp`/`nbf` (with a small leeway), `iss` and `aud`. The algorithm always
//!   comes from our side, never from the token: HS256 for a shared secret, and
//!   for a JWKS the algorithm its key declares (RS256 for RSA, ES256 for EC
//!   P-256). So `alg: none`, HS256 tokens signed with an RSA public key (key
//!   confusion) and unknown algorithms are all rejected.
//! - Every failure is [`AuthError::Unauthorized`] (401 at the API): the reason
//!   is logged, never sent. The one exception is a JWKS that cannot be
//!   fetched ([`AuthError::Unavailable`]): see [`JwksOptions`] for why that
//!   answers 503.
//! - Handlers decide which scope an endpoint needs (`caller.require(..)`) and
//!   use [`Caller::may_access`] for ownership.
//! - Local development uses HS256 with a secret from `JWT_HS256_SECRET` or,
//!   failing that, [`local_dev_secret`]; [`mint_hs256_token`] makes tokens.

mod jwks;
mod local;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Why a caller was not let in. The API maps it to 401, 403 or 503 and logs
/// the reason with the request id; the reason is never sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No or unusable credentials.
    #[error("authentication required: {reason}")]
    Unauthorized { reason: String },
    /// Valid credentials without the needed scope.
    #[error("insufficient scope: {reason}")]
    Forbidden { reason: String },
    /// The keys to verify with cannot be fetched; the token may be fine.
    #[error("token keys unavailable: {reason}")]
    Unavailable {
        retry_after_seconds: u32,
        reason: String,
    },
}

pub use jwks::JwksOptions;
pub use local::{LOCAL_DEV_SECRET_FILE, MintError, local_dev_secret, mint_hs256_token};

/// Environment variable names, also used to name a bad setting in errors.
pub const ENV_ISSUER: &str = "JWT_ISSUER";
pub const ENV_AUDIENCE: &str = "JWT_AUDIENCE";
pub const ENV_LEEWAY_SECONDS: &str = "JWT_LEEWAY_SECONDS";
pub const ENV_JWKS_URL: &str = "JWKS_URL";
pub const ENV_HS256_SECRET: &str = "JWT_HS256_SECRET";

pub const DEFAULT_ISSUER: &str = "purchase-orchestrator-local";
pub const DEFAULT_AUDIENCE: &str = "purchase-orchestrator";
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Clock skew beyond a few minutes is a broken clock, and a large leeway
/// quietly extends every token's life, so larger values are refused.
pub const MAX_LEEWAY_SECONDS: u64 = 300;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Tokens are a few hundred bytes to a few KB; anything far larger is not a
/// token we issued, and is refused before any parsing or crypto.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// An OAuth2-style permission carried in the token's `scope` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `purchases:read`
    Read,
    /// `purchases:write`
    Write,
    /// `purchases:admin`: back-office callers; may act on any customer's purchases.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope named by one OAuth2 scope token. Scope tokens are
    /// case-sensitive (RFC 6749 §3.3), so `Purchases:Read` is not a scope.
    pub fn parse(token: &str) -> Option<Scope> {
        match token {
            "purchases:read" => Some(Scope::Read),
            "purchases:write" => Some(Scope::Write),
            "purchases:admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "purchases:read",
            Scope::Write => "purchases:write",
            Scope::Admin => "purchases:admin",
        }
    }

    /// Parses a space-separated `scope` claim. Unknown scopes are ignored
    /// (the identity provider may grant scopes for other APIs); duplicates
    /// are dropped; the result is sorted.
    pub fn parse_list(scopes: &str) -> Vec<Scope> {
        let mut parsed: Vec<Scope> = scopes
            .split_ascii_whitespace()
            .filter_map(Scope::parse)
            .collect();
        parsed.sort_unstable();
        parsed.dedup();
        parsed
    }

    /// Joins scopes into a `scope` claim value.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|scope| scope.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: the verified token's subject and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: the customer id.
    pub customer_id: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn new(customer_id: impl Into<String>, scopes: &[Scope]) -> Caller {
        Caller {
            customer_id: customer_id.into(),
            scopes: scopes.to_vec(),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// `Forbidden` (403) unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                reason: format!("caller {} lacks scope {scope}", self.customer_id),
            })
        }
    }

    /// Whether this caller may see or change the given customer's purchases:
    /// its own, or anyone's with `purchases:admin`. Handlers answer 404 (not
    /// 403) when this is false, so purchase ids cannot be probed.
    pub fn may_access(&self, customer_id: &str) -> bool {
        self.has(Scope::Admin) || self.customer_id == customer_id
    }
}

/// The one extractor every handler uses to learn who is calling.
#[async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError>;
}

/// How tokens are verified. Built from the environment once at cold start.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The `aud` a token must name (alone or among others).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
    pub keys: KeySource,
}

/// Where verification keys come from; this also pins the algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A shared secret: HS256 only. For local development and tests.
    Hs256 { secret: String },
    /// The identity provider's JSON Web Key Set: RS256 (RSA keys) and ES256
    /// (EC P-256 keys). Must be `https`, except on a loopback host.
    Jwks { url: String },
}

// Hand-written so a secret never reaches a log through `{:?}`.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Hs256 { .. } => f
                .debug_struct("Hs256")
                .field("secret", &"[redacted]")
                .finish(),
            KeySource::Jwks { url } => f.debug_struct("Jwks").field("url", url).finish(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("keys", &self.keys)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "no JWT key source configured: set {ENV_JWKS_URL} (the identity provider's JWKS, RS256/ES256) \
         or {ENV_HS256_SECRET} (a shared HS256 secret for local development)"
    )]
    MissingKeySource,
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("could not read or create the local development JWT secret: {0}")]
    LocalSecret(#[source] std::io::Error),
}

impl AuthConfig {
    /// Reads `JWT_ISSUER` (default `purchase-orchestrator-local`),
    /// `JWT_AUDIENCE` (default `purchase-orchestrator`), `JWT_LEEWAY_SECONDS`
    /// (default 30, at most 300) and the key source: `JWKS_URL` or
    /// `JWT_HS256_SECRET`, `JWKS_URL` winning if both are set. Neither set is
    /// [`AuthConfigError::MissingKeySource`], naming both variables. Empty
    /// values count as unset, because deployment templates tend to pass
    /// unset parameters as empty strings.
    pub fn from_env() -> Result<AuthConfig, AuthConfigError> {
        check_env_is_unicode()?;
        AuthConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`AuthConfig::from_env`], but without a key source falls back to
    /// HS256 with [`local_dev_secret`] in `data_dir`, for the local server and
    /// its `token` command, so they agree without any secret in the repo.
    pub fn from_env_or_local_dev(data_dir: &Path) -> Result<AuthConfig, AuthConfigError> {
        match AuthConfig::from_env() {
            Err(AuthConfigError::MissingKeySource) => {
                check_env_is_unicode()?;
                let secret = local_dev_secret(data_dir).map_err(AuthConfigError::LocalSecret)?;
                AuthConfig::from_vars(|name| {
                    if name == ENV_HS256_SECRET {
                        Some(secret.clone())
                    } else {
                        std::env::var(name).ok()
                    }
                })
            }
            other => other,
        }
    }

    /// [`AuthConfig::from_env`] over any variable lookup (tests, or a map).
    pub fn from_vars(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<AuthConfig, AuthConfigError> {
        let var = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let leeway_seconds = match var(ENV_LEEWAY_SECONDS) {
            None => DEFAULT_LEEWAY_SECONDS,
            Some(text) => text.parse::<u64>().map_err(|_| AuthConfigError::Invalid {
                var: ENV_LEEWAY_SECONDS,
                reason: format!("{text:?} is not a whole number of seconds"),
            })?,
        };
        let keys = match (var(ENV_JWKS_URL), var(ENV_HS256_SECRET)) {
            (Some(url), _) => KeySource::Jwks { url },
            // Not trimmed: a secret is used byte for byte, as the issuer uses it.
            (None, Some(_)) => KeySource::Hs256 {
                secret: lookup(ENV_HS256_SECRET).unwrap_or_default(),
            },
            (None, None) => return Err(AuthConfigError::MissingKeySource),
        };
        let config = AuthConfig {
            issuer: var(ENV_ISSUER).unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            audience: var(ENV_AUDIENCE).unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
            leeway_seconds,
            keys,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without the network; also run by
    /// [`JwtAuthenticator::new`], so a hand-built config gets the same checks.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(invalid(ENV_ISSUER, "must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(invalid(ENV_AUDIENCE, "must not be empty"));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(invalid(
                ENV_LEEWAY_SECONDS,
                format!(
                    "{} s is more than the maximum of {MAX_LEEWAY_SECONDS} s",
                    self.leeway_seconds
                ),
            ));
        }
        match &self.keys {
            KeySource::Hs256 { secret } => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(invalid(
                        ENV_HS256_SECRET,
                        format!("must be at least {MIN_HS256_SECRET_BYTES} bytes long"),
                    ));
                }
            }
            KeySource::Jwks { url } => {
                jwks::parse_jwks_url(url).map_err(|reason| invalid(ENV_JWKS_URL, reason))?;
            }
        }
        Ok(())
    }
}

fn invalid(var: &'static str, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// `std::env::var(..).ok()` reads a non-UTF-8 value as unset, which for
/// `JWKS_URL` would silently switch to the HS256 secret; refuse instead.
fn check_env_is_unicode() -> Result<(), AuthConfigError> {
    for var in [
        ENV_ISSUER,
        ENV_AUDIENCE,
        ENV_LEEWAY_SECONDS,
        ENV_JWKS_URL,
        ENV_HS256_SECRET,
    ] {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(var) {
            return Err(invalid(var, "is not valid UTF-8"));
        }
    }
    Ok(())
}

/// Verifies bearer JWTs. Cheap to clone and share (an `Arc` inside); build it
/// once at cold start so the JWKS cache outlives single requests.
#[derive(Clone)]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    leeway_seconds: u64,
    keys: Keys,
}

enum Keys {
    Hs256(DecodingKey),
    // Boxed: the cache is much larger than a key (clippy::large_enum_variant).
    Jwks(Box<jwks::JwksCache>),
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.inner.keys {
            Keys::Hs256(_) => "HS256 shared secret".to_owned(),
            Keys::Jwks(cache) => format!("JWKS {}", cache.url()),
        };
        f.debug_struct("JwtAuthenticator")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("leeway_seconds", &self.inner.leeway_seconds)
            .field("keys", &keys)
            .finish()
    }
}

/// The claims we read beyond what `jsonwebtoken` validates itself.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
}

/// `scope` is a space-separated string (RFC 8693 §4.2); a list of strings is
/// accepted too, as some identity providers send one.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl JwtAuthenticator {
    /// Validates `config` and prepares the keys. Does no network I/O: a JWKS
    /// is fetched on first use (see [`JwksOptions`]), so a cold start does not
    /// fail or stall when the identity provider is briefly unreachable.
    pub fn new(config: AuthConfig) -> Result<JwtAuthenticator, AuthConfigError> {
        JwtAuthenticator::with_jwks_options(config, JwksOptions::default())
    }

    /// [`JwtAuthenticator::new`] with JWKS caching, rate limit and timeouts
    /// of your choosing (tests use short intervals). Ignored for HS256.
    pub fn with_jwks_options(
        config: AuthConfig,
        options: JwksOptions,
    ) -> Result<JwtAuthenticator, AuthConfigError> {
        config.validate()?;
        let keys = match &config.keys {
            KeySource::Hs256 { secret } => Keys::Hs256(DecodingKey::from_secret(secret.as_bytes())),
            KeySource::Jwks { url } => Keys::Jwks(Box::new(jwks::JwksCache::new(url, options)?)),
        };
        Ok(JwtAuthenticator {
            inner: Arc::new(Inner {
                issuer: config.issuer,
                audience: config.audience,
                leeway_seconds: config.leeway_seconds,
                keys,
            }),
        })
    }

    /// Optionally fetches the JWKS now (e.g. during a cold start's init
    /// phase) so the first request does not wait for it. Failure is not fatal:
    /// requests will try again, rate-limited. A no-op for HS256.
    pub async fn prefetch_keys(&self) -> Result<(), String> {
        match &self.inner.keys {
            Keys::Hs256(_) => Ok(()),
            Keys::Jwks(cache) => cache.prefetch().await,
        }
    }

    /// Verifies a bare token (no `Bearer ` prefix) and returns its caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized(format!(
                "token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        // The header is unauthenticated: it is used only to pick a key (kid)
        // and is then checked against the algorithm that key is pinned to.
        // `alg: none` and unknown algorithms fail right here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthorized(format!("malformed token header: {e}")))?;
        let claims = match &self.inner.keys {
            Keys::Hs256(key) => self.decode(token, header.alg, Algorithm::HS256, key)?,
            Keys::Jwks(cache) => {
                // Refuse other algorithms before looking the kid up, so
                // HS256/forged tokens never cause a JWKS fetch.
                if !jwks::ACCEPTED_ALGORITHMS.contains(&header.alg) {
                    return Err(unauthorized(format!(
                        "token alg {:?} is not accepted with a JWKS (RS256, ES256 only)",
                        header.alg
                    )));
                }
                let key = cache.key_for(header.kid.as_deref()).await?;
                self.decode(token, header.alg, key.alg, &key.key)?
            }
        };
        let customer_id = claims
            .sub
            .filter(|sub| !sub.trim().is_empty())
            .ok_or_else(|| unauthorized("token has an empty `sub`"))?;
        let scopes = match claims.scope {
            None => Vec::new(),
            Some(ScopeClaim::Text(text)) => Scope::parse_list(&text),
            Some(ScopeClaim::List(list)) => Scope::parse_list(&list.join(" ")),
        };
        Ok(Caller {
            customer_id,
            scopes,
        })
    }

    fn decode(
        &self,
        token: &str,
        token_alg: Algorithm,
        pinned: Algorithm,
        key: &DecodingKey,
    ) -> Result<Claims, AuthError> {
        // Belt and braces: `Validation::new(pinned)` below refuses any other
        // alg too; checking here gives the log a clear reason.
        if token_alg != pinned {
            return Err(unauthorized(format!(
                "token alg {token_alg:?} does not match the key's {pinned:?}"
            )));
        }
        let mut validation = Validation::new(pinned);
        validation.leeway = self.inner.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        // Without these, a token lacking `iss` or `aud` would skip those checks.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| unauthorized(format!("token rejected: {e}")))
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        self.verify(token).await
    }
}

pub(crate) fn unauthorized(reason: impl Into<String>) -> AuthError {
    AuthError::Unauthorized {
        reason: reason.into(),
    }
}

/// The token of the one `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 7235 §2.1); the token must be a single word.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| unauthorized("no Authorization header"))?;
    if values.next().is_some() {
        // Two credentials are ambiguous; a proxy might check the other one.
        return Err(unauthorized("more than one Authorization header"));
    }
    // Reasons never echo the header: it is a credential.
    let value = value
        .to_str()
        .map_err(|_| unauthorized("Authorization header is not visible ASCII"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthorized("Authorization header is not `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("Authorization scheme is not Bearer"));
    }
    let token = token.trim_start();
    if token.is_empty() || token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(unauthorized("Authorization header is not `Bearer <token>`"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::collections::HashMap;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn scope_round_trips_and_is_case_sensitive() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(scope.to_string(), scope.as_str());
        }
        assert_eq!(Scope::parse("Purchases:Read"), None);
        assert_eq!(Scope::parse("purchases:delete"), None);
        assert_eq!(Scope::parse(""), None);
    }

    #[test]
    fn scope_list_ignores_unknown_and_duplicates() {
        assert_eq!(
            Scope::parse_list("openid purchases:write  purchases:read purchases:write profile"),
            vec![Scope::Read, Scope::Write]
        );
        assert_eq!(Scope::parse_list(""), Vec::<Scope>::new());
        assert_eq!(
            Scope::parse_list("purchases:admin\tpurchases:read"),
            vec![Scope::Read, Scope::Admin]
        );
        assert_eq!(
            Scope::join(&[Scope::Read, Scope::Write]),
            "purchases:read purchases:write"
        );
    }

    #[test]
    fn caller_require_and_ownership() {
        let customer = Caller::new("c-1", &[Scope::Read]);
        assert!(customer.require(Scope::Read).is_ok());
        assert!(matches!(
            customer.require(Scope::Write),
            Err(AuthError::Forbidden { .. })
        ));
        assert!(customer.may_access("c-1"));
        assert!(!customer.may_access("c-2"));
        let admin = Caller::new("ops", &[Scope::Admin]);
        assert!(admin.may_access("c-2"));
    }

    #[test]
    fn config_defaults_with_a_secret() {
        let config = AuthConfig::from_vars(vars(&[(ENV_HS256_SECRET, SECRET)])).unwrap();
        assert_eq!(config.issuer, DEFAULT_ISSUER);
        assert_eq!(config.audience, DEFAULT_AUDIENCE);
        assert_eq!(config.leeway_seconds, DEFAULT_LEEWAY_SECONDS);
        assert_eq!(
            config.keys,
            KeySource::Hs256 {
                secret: SECRET.into()
            }
        );
        assert!(
            !format!("{config:?}").contains(SECRET),
            "Debug must not show the secret"
        );
    }

    #[test]
    fn config_jwks_wins_over_secret() {
        let config = AuthConfig::from_vars(vars(&[
            (ENV_HS256_SECRET, SECRET),
            (
                ENV_JWKS_URL,
                "https://idp.example.com/.well-known/jwks.json",
            ),
            (ENV_ISSUER, "https://idp.example.com/"),
            (ENV_AUDIENCE, "orders"),
            (ENV_LEEWAY_SECONDS, "5"),
        ]))
        .unwrap();
        assert_eq!(
            config.keys,
            KeySource::Jwks {
                url: "https://idp.example.com/.well-known/jwks.json".into()
            }
        );
        assert_eq!(config.issuer, "https://idp.example.com/");
        assert_eq!(config.audience, "orders");
        assert_eq!(config.leeway_seconds, 5);
    }

    #[test]
    fn config_without_keys_names_both_variables() {
        let error = AuthConfig::from_vars(vars(&[(ENV_JWKS_URL, "  "), (ENV_HS256_SECRET, "")]))
            .unwrap_err();
        assert!(matches!(error, AuthConfigError::MissingKeySource));
        let message = error.to_string();
        assert!(
            message.contains("JWKS_URL") && message.contains("JWT_HS256_SECRET"),
            "{message}"
        );
    }

    #[test]
    fn config_rejects_bad_values() {
        let bad = |pairs: &[(&str, &str)]| match AuthConfig::from_vars(vars(pairs)) {
            Err(AuthConfigError::Invalid { var, .. }) => var,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(bad(&[(ENV_HS256_SECRET, "short")]), ENV_HS256_SECRET);
        assert_eq!(
            bad(&[(ENV_HS256_SECRET, SECRET), (ENV_LEEWAY_SECONDS, "soon")]),
            ENV_LEEWAY_SECONDS
        );
        assert_eq!(
            bad(&[(ENV_HS256_SECRET, SECRET), (ENV_LEEWAY_SECONDS, "3600")]),
            ENV_LEEWAY_SECONDS
        );
        assert_eq!(bad(&[(ENV_JWKS_URL, "not a url")]), ENV_JWKS_URL);
        assert_eq!(
            bad(&[(ENV_JWKS_URL, "ftp://idp.example.com/jwks")]),
            ENV_JWKS_URL
        );
        // Keys over plain HTTP could be swapped in transit: loopback only.
        assert_eq!(
            bad(&[(ENV_JWKS_URL, "http://idp.example.com/jwks")]),
            ENV_JWKS_URL
        );
        assert!(
            AuthConfig::from_vars(vars(&[(ENV_JWKS_URL, "http://127.0.0.1:9000/jwks")])).is_ok()
        );
        assert!(
            AuthConfig::from_vars(vars(&[(ENV_JWKS_URL, "http://localhost:9000/jwks")])).is_ok()
        );
        assert!(AuthConfig::from_vars(vars(&[(ENV_JWKS_URL, "http://[::1]:9000/jwks")])).is_ok());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(
            bearer_token(&headers("Bearer abc.def.ghi")).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(
            bearer_token(&headers("bearer   abc.def.ghi ")).unwrap(),
            "abc.def.ghi"
        );
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Token abc",
            "Bearer a b",
            "abc.def.ghi",
        ] {
            assert!(
                matches!(
                    bearer_token(&headers(bad)),
                    Err(AuthError::Unauthorized { .. })
                ),
                "{bad:?} should be refused"
            );
        }
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(AuthError::Unauthorized { .. })
        ));
        let mut two = headers("Bearer a.b.c");
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer d.e.f"),
        );
        assert!(matches!(
            bearer_token(&two),
            Err(AuthError::Unauthorized { .. })
        ));
    }

    #[tokio::test]
    async fn minted_token_verifies_and_oversized_token_is_refused() {
        let config = AuthConfig::from_vars(vars(&[(ENV_HS256_SECRET, SECRET)])).unwrap();
        let auth = JwtAuthenticator::new(config).unwrap();
        let token = mint_hs256_token(
            SECRET,
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
            "c-123",
            &[Scope::Read, Scope::Write],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let caller = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(caller, Caller::new("c-123", &[Scope::Read, Scope::Write]));
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            auth.verify(&huge).await,
            Err(AuthError::Unauthorized { .. })
        ));
    }
}
