//! The back-office review console: a small web page (plain HTML, CSS and
//! JavaScript modules, no build step, no library) for the purchases that
//! wait for a person, `ON_HOLD` and `NEEDS_ATTENTION`.
//!
//! Its files are embedded here once and served, byte for byte the same, by
//! the local server (`local::console`) and on AWS by the `console` Lambda
//! (`functions/console`), under `/purchase-orchestrator/console/`. Every
//! answer carries [`CONTENT_SECURITY_POLICY`], which allows scripts, styles
//! and requests from the page's own origin only: the page has no inline
//! script, style or event handler, and makes no request to another host.
//!
//! The files need no authentication; the API calls the page makes carry the
//! reviewer's bearer token. The workflow graph is drawn from the state
//! machine definitions, served as `purchase.asl.json` and `review.asl.json`
//! ([`shared::ports::workflow::DEFINITION`] and `REVIEW_DEFINITION`, the
//! ones the workflows run), drawn as one graph.

use http::{HeaderValue, Response, StatusCode, header};
use shared::api::request::BASE_PATH;

/// Sent with every console answer (files, redirects, errors, the local
/// developer sign-in).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// Where the console lives, below [`BASE_PATH`].
pub const CONSOLE_PATH: &str = "/console";

/// The local server's developer sign-in, below the console's path. Only the
/// local server has it (`local::console`); on AWS it is not a file, so 404.
pub const DEV_SIGN_IN: &str = "dev-sign-in";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name below `console/`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The page's files. All text, so API Gateway needs no binary media types.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../static/index.html"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../static/console.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../static/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../static/api.js"),
    },
    Asset {
        name: "format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../static/format.js"),
    },
    Asset {
        name: "graph.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../static/graph.js"),
    },
    Asset {
        name: "purchase.asl.json",
        content_type: "application/json",
        body: shared::ports::workflow::DEFINITION,
    },
    Asset {
        name: "review.asl.json",
        content_type: "application/json",
        body: shared::ports::workflow::REVIEW_DEFINITION,
    },
];

/// The embedded file `name` (`""` is `index.html`).
pub fn asset(name: &str) -> Option<&'static Asset> {
    let name = if name.is_empty() { "index.html" } else { name };
    ASSETS.iter().find(|asset| asset.name == name)
}

/// What a request path asks of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `.../console` without the trailing slash: the page's relative links
    /// need it, so it is redirected to `console/`.
    Slash,
    /// `.../console/<name>` (`""` for the page itself).
    File(&'a str),
}

/// Reads a request path, whatever precedes [`BASE_PATH`] (API Gateway may
/// put the stage in front); `None` when it is not below the console.
pub fn target(path: &str) -> Option<Target<'_>> {
    let prefix = [BASE_PATH, CONSOLE_PATH].concat();
    let at = path.find(&prefix)?;
    match &path[at + prefix.len()..] {
        "" => Some(Target::Slash),
        rest => rest.strip_prefix('/').map(Target::File),
    }
}

/// The answer to `GET` (or `HEAD`) of `path`: a file, the redirect to
/// `console/`, or a 404.
pub fn respond(path: &str) -> Response<String> {
    match target(path) {
        Some(Target::Slash) => {
            // Relative, so it works behind any stage prefix.
            let mut response = with_headers(StatusCode::PERMANENT_REDIRECT, String::new());
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("console/"));
            response
        }
        Some(Target::File(name)) => match asset(name) {
            Some(asset) => {
                let mut response = with_headers(StatusCode::OK, asset.body.to_owned());
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(asset.content_type),
                );
                // Small files: always revalidated, so a deploy shows at once.
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
            None => error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("the console has no file {name:?}"),
            ),
        },
        None => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("{path} is not a console path"),
        ),
    }
}

/// An error in the API's shape (`{"error", "message", "details"}`), with the
/// console's headers; never cached.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<String> {
    let body = serde_json::json!({"error": code, "message": message, "details": []});
    let mut response = with_headers(status, body.to_string());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A response with the console's security headers.
pub fn with_headers(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_behind_any_stage() {
        assert_eq!(
            target("/purchase-orchestrator/console"),
            Some(Target::Slash)
        );
        assert_eq!(
            target("/dev/purchase-orchestrator/console/"),
            Some(Target::File(""))
        );
        assert_eq!(
            target("/purchase-orchestrator/console/app.js"),
            Some(Target::File("app.js"))
        );
        assert_eq!(target("/purchase-orchestrator/consoles"), None);
        assert_eq!(target("/purchase-orchestrator/purchases"), None);
    }

    #[test]
    fn every_file_is_served_with_its_type_and_the_policy() {
        for asset in ASSETS {
            let response = respond(&format!("/purchase-orchestrator/console/{}", asset.name));
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(response.body(), asset.body);
        }
        assert_eq!(
            respond("/purchase-orchestrator/console/").body(),
            asset("index.html").unwrap().body
        );
        let redirect = respond("/dev/purchase-orchestrator/console");
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "console/");
        let missing = respond("/purchase-orchestrator/console/../secret");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(
            missing
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }

    #[test]
    fn the_definitions_are_the_ones_the_workflows_run() {
        for (name, runs) in [
            ("purchase.asl.json", shared::ports::workflow::DEFINITION),
            (
                "review.asl.json",
                shared::ports::workflow::REVIEW_DEFINITION,
            ),
        ] {
            let served = asset(name).unwrap();
            assert_eq!(served.body, runs, "{name}");
            let definition: serde_json::Value = serde_json::from_str(served.body).unwrap();
            assert!(definition["States"][definition["StartAt"].as_str().unwrap()].is_object());
        }
    }
}
