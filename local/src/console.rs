//! The review console in local mode: its static files (crate
//! `console-assets`, the same the `console` Lambda serves) under
//! `/purchase-orchestrator/console/`, and a developer sign-in that exists
//! only here.
//!
//! The developer sign-in (`GET`/`POST .../console/dev-sign-in`) mints an
//! admin token, and so is refused (403) unless all of these hold:
//! - the server verifies tokens with the development secret it generated
//!   under `DATA_DIR` (the `token` command's secret): not with `JWKS_URL`,
//!   nor with a `JWT_HS256_SECRET` of someone else's;
//! - the request names a loopback host (`localhost`, `127.x.x.x`, `[::1]`),
//!   so a page on another machine's name (DNS rebinding) gets nothing;
//! - a browser's `Origin`, when sent, is this server's own.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::{MethodRouter, get};
use console_assets::{CONSOLE_PATH, DEV_SIGN_IN};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use shared::api::request::BASE_PATH;
use shared::auth::{AuthConfig, KeySource, LOCAL_DEV_SECRET_FILE, Scope};

/// Whom developer tokens name (`sub`), as README's admin examples do.
pub const DEV_SUBJECT: &str = "back-office";
/// What a developer token may do: everything the console calls.
pub const DEV_SCOPES: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];
/// How long a developer token lives.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What the developer sign-in signs with: the generated development secret.
#[derive(Clone)]
pub struct DevSignIn {
    secret: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for DevSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSignIn")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl DevSignIn {
    /// `Some` only when `auth` verifies HS256 tokens with the secret
    /// generated in `data_dir` (`dev-jwt-secret`, see
    /// `shared::auth::local_dev_secret`): local development mode. Nothing is
    /// created here.
    pub fn detect(data_dir: &Path, auth: &AuthConfig) -> Option<DevSignIn> {
        let KeySource::Hs256 { secret } = &auth.keys else {
            return None;
        };
        let generated = std::fs::read_to_string(data_dir.join(LOCAL_DEV_SECRET_FILE)).ok()?;
        (generated.trim() == secret).then(|| DevSignIn {
            secret: secret.clone(),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
        })
    }

    fn mint(&self) -> Result<String, shared::auth::MintError> {
        shared::auth::mint_hs256_token(
            &self.secret,
            &self.issuer,
            &self.audience,
            DEV_SUBJECT,
            &DEV_SCOPES,
            DEV_TOKEN_TTL,
        )
    }
}

type DevState = Option<Arc<DevSignIn>>;

async fn files(request: Request) -> axum::response::Response {
    console_assets::respond(request.uri().path()).map(Body::from)
}

fn method_not_allowed(allow: &'static str) -> axum::response::Response {
    let mut response = console_assets::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("the console answers {allow} only here"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response.map(Body::from)
}

fn file_routes() -> MethodRouter<DevState> {
    get(files).fallback(|| async { method_not_allowed("GET, HEAD") })
}

/// The console's routes; `dev` is the developer sign-in when the server
/// runs in local development mode ([`DevSignIn::detect`]).
pub fn router(dev: Option<DevSignIn>) -> Router {
    let root = [BASE_PATH, CONSOLE_PATH].concat();
    Router::new()
        .route(&root, file_routes())
        .route(&format!("{root}/"), file_routes())
        .route(&format!("{root}/{{*file}}"), file_routes())
        .route(
            &format!("{root}/{DEV_SIGN_IN}"),
            get(dev_sign_in)
                .post(dev_sign_in)
                .fallback(|| async { method_not_allowed("GET, HEAD, POST") }),
        )
        .with_state(dev.map(Arc::new))
}

/// `GET`: whether the developer sign-in is available (the page shows its
/// button then). `POST`: a fresh admin token.
async fn dev_sign_in(
    State(dev): State<DevState>,
    method: Method,
    headers: HeaderMap,
) -> axum::response::Response {
    dev_answer(dev.as_deref(), &method, &headers).map(Body::from)
}

fn dev_answer(
    dev: Option<&DevSignIn>,
    method: &Method,
    headers: &HeaderMap,
) -> http::Response<String> {
    let refuse = |message: &str| console_assets::error(StatusCode::FORBIDDEN, "FORBIDDEN", message);
    let Some(dev) = dev else {
        return refuse(
            "developer sign-in is off: this server does not verify tokens with the development \
             secret it generated (JWKS_URL or JWT_HS256_SECRET is set); paste a token instead",
        );
    };
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
    else {
        return refuse("developer sign-in needs a Host header");
    };
    if !is_loopback_host(host) {
        return refuse(
            "developer sign-in answers on a loopback address only (localhost, 127.0.0.1, [::1])",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.to_str().ok() != Some(format!("http://{host}").as_str())
    {
        return refuse("developer sign-in refuses requests from other origins");
    }
    let body = if method == Method::POST {
        match dev.mint() {
            Ok(token) => serde_json::json!({
                "token": token,
                "tokenType": "Bearer",
                "expiresIn": DEV_TOKEN_TTL.as_secs(),
                "customerId": DEV_SUBJECT,
                "scope": Scope::join(&DEV_SCOPES),
            }),
            Err(error) => {
                tracing::error!(%error, "developer sign-in could not mint a token");
                return console_assets::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "could not mint a development token",
                );
            }
        }
    } else {
        serde_json::json!({
            "available": true,
            "customerId": DEV_SUBJECT,
            "scope": Scope::join(&DEV_SCOPES),
        })
    };
    let mut response = console_assets::with_headers(StatusCode::OK, body.to_string());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name == "::1"
        || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "127.0.0.1",
            "127.0.0.1:3000",
            "127.1.2.3:80",
            "[::1]:3000",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:3000",
            "0.0.0.0:3000",
            "localhost.example.com",
            "[::2]:3000",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
