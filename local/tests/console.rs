//! The review console as the local server serves it: every answer carries
//! the Content-Security-Policy, the page has no inline script (nor inline
//! handlers or styles, which the policy would block), and the developer
//! sign-in exists only in local development mode, i.e. when the server
//! verifies tokens with the secret it generated under `DATA_DIR`.
//! (The page itself is driven in a browser by console/tests/, through
//! scripts/console-tests.sh.)

mod common;

use common::{Harness, Setup};
use console_assets::{ASSETS, CONTENT_SECURITY_POLICY};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY as CSP, CONTENT_TYPE, HOST, LOCATION, ORIGIN};
use serde_json::Value;

fn console(h: &Harness, rest: &str) -> String {
    format!("{}/console{rest}", h.base)
}

fn assert_policy(response: &reqwest::Response, what: &str) {
    assert_eq!(
        response.headers().get(CSP).and_then(|v| v.to_str().ok()),
        Some(CONTENT_SECURITY_POLICY),
        "{what}: Content-Security-Policy"
    );
    assert_eq!(
        response.headers()["x-content-type-options"],
        "nosniff",
        "{what}"
    );
}

/// A harness whose JWT secret is the development secret generated in its
/// data directory, as `purchase-orchestrator` without JWT variables runs.
async fn dev_mode() -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = shared::auth::local_dev_secret(dir.path()).unwrap();
    let h = Harness::start_with(Setup {
        data_dir: Some(dir.path().to_path_buf()),
        secret: Some(secret),
        ..Setup::default()
    })
    .await;
    (h, dir)
}

#[tokio::test]
async fn every_console_answer_carries_the_content_security_policy() {
    let h = Harness::start().await;
    for asset in ASSETS {
        let response = h
            .client
            .get(console(&h, &format!("/{}", asset.name)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
        assert_policy(&response, asset.name);
        assert_eq!(response.headers()[CONTENT_TYPE], asset.content_type);
        assert_eq!(response.text().await.unwrap(), asset.body, "{}", asset.name);
    }
    // The page itself, the redirect to it, a missing file, a wrong method,
    // and the refused developer sign-in: all with the policy.
    let page = h.client.get(console(&h, "/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_policy(&page, "console/");
    assert!(page.text().await.unwrap().starts_with("<!doctype html>"));

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects.get(console(&h, "")).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()[LOCATION], "console/");
    assert_policy(&redirect, "console");

    let missing = h.client.get(console(&h, "/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_policy(&missing, "a missing file");
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "NOT_FOUND");

    let post = h.client.post(console(&h, "/app.js")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_policy(&post, "POST app.js");

    let refused = h
        .client
        .post(console(&h, "/dev-sign-in"))
        .send()
        .await
        .unwrap();
    assert_policy(&refused, "dev-sign-in");

    // The API's own routes are untouched by the console's.
    let api = h
        .client
        .get(format!("{}/purchases", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn the_page_has_no_inline_script_handler_or_style() {
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-"));
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "default-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    let html = ASSETS
        .iter()
        .find(|a| a.name == "index.html")
        .unwrap()
        .body
        .to_ascii_lowercase();
    // Every <script> loads a file and has no body.
    let mut scripts = 0;
    for (at, _) in html.match_indices("<script") {
        scripts += 1;
        let tag_end = at + html[at..].find('>').unwrap();
        let tag = &html[at..=tag_end];
        assert!(tag.contains(" src=\""), "inline script: {tag}");
        assert!(
            html[tag_end + 1..].starts_with("</script>"),
            "a script with a body: {tag}"
        );
    }
    assert_eq!(scripts, 1, "one module script, app.js");
    assert!(html.contains("<script type=\"module\" src=\"app.js\"></script>"));
    // No inline handlers, styles or script URLs.
    for (at, _) in html.match_indices(" on") {
        let name: String = html[at + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            !html[at + 3 + name.len()..].starts_with('='),
            "inline handler on{name}"
        );
    }
    for forbidden in [" style=", "<style", "javascript:", "http://", "https://"] {
        assert!(
            !html.contains(forbidden),
            "index.html contains {forbidden:?}"
        );
    }
    // Nothing the API says is parsed as HTML, and nothing is loaded from
    // another host or evaluated as code.
    for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
        // The SVG namespace is a name, not an address.
        let code = asset.body.replace("\"http://www.w3.org/2000/svg\"", "");
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "http://",
            "https://",
            "setAttribute(\"style\"",
            "localStorage",
        ] {
            assert!(
                !code.contains(forbidden),
                "{} contains {forbidden:?}",
                asset.name
            );
        }
    }
}

#[tokio::test]
async fn the_developer_sign_in_is_refused_unless_the_generated_secret_is_in_use() {
    // A secret that is not the generated one (as with JWT_HS256_SECRET).
    let h = Harness::start().await;
    assert!(!h.system.dev_sign_in_available());
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = h
            .client
            .request(method.clone(), console(&h, "/dev-sign-in"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "FORBIDDEN");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("development secret"),
            "{body}"
        );
        assert!(body.get("token").is_none());
    }

    // A generated secret on disk is not enough: it must be the one in use.
    let dir = tempfile::tempdir().unwrap();
    shared::auth::local_dev_secret(dir.path()).unwrap();
    let other = Harness::start_with(Setup {
        data_dir: Some(dir.path().to_path_buf()),
        ..Setup::default()
    })
    .await;
    assert!(!other.system.dev_sign_in_available());
    let response = other
        .client
        .post(console(&other, "/dev-sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn in_local_dev_mode_the_developer_sign_in_mints_a_working_admin_token() {
    let (h, _dir) = dev_mode().await;
    assert!(h.system.dev_sign_in_available());

    let probe = h
        .client
        .get(console(&h, "/dev-sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
    assert_policy(&probe, "GET dev-sign-in");
    let probe: Value = probe.json().await.unwrap();
    assert_eq!(probe["available"], true);
    assert!(probe.get("token").is_none(), "a GET mints nothing");

    let answer = h
        .client
        .post(console(&h, "/dev-sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["customerId"], "back-office");
    assert_eq!(
        answer["scope"],
        "purchases:read purchases:write purchases:admin"
    );
    let token = answer["token"].as_str().unwrap();

    // The token is an admin's: it lists everyone's purchases.
    let list = h
        .client
        .get(format!("{}/purchases?status=ON_HOLD&order=oldest", h.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);

    // Only for this server's own pages, on a loopback name.
    let foreign = h
        .client
        .post(console(&h, "/dev-sign-in"))
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let rebound = h
        .client
        .post(console(&h, "/dev-sign-in"))
        .header(HOST, "evil.example:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    let own_origin = h.base.split("/purchase-orchestrator").next().unwrap();
    let same = h
        .client
        .post(console(&h, "/dev-sign-in"))
        .header(ORIGIN, own_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
}
