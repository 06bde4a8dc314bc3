//! The dashboard at `GET /` of the admin router (`/admin/` in the demo):
//! one HTML page, its script and its style, embedded in the binary; nothing
//! is loaded from elsewhere. The page holds no data: it asks for the admin
//! token (kept in the tab's `sessionStorage`) and reads everything through
//! the API. Served with a Content-Security-Policy that allows only its own
//! files, no inline script, and no framing.

use axum::extract::OriginalUri;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = ([(CONTENT_TYPE, content_type)], body).into_response();
    let headers = res.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The page, with a `<base>` of the path it was asked at (wherever the app
/// nested the router), so that its relative links (`api/...`,
/// `assets/...`) stay under it.
async fn page(OriginalUri(uri): OriginalUri) -> Response {
    let path = uri.path();
    let base = if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    };
    let escaped: String = base
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let html = HTML.replacen("<head>", &format!("<head>\n<base href=\"{escaped}\">"), 1);
    let mut res = asset("text/html; charset=utf-8", "");
    *res.body_mut() = axum::body::Body::from(html);
    res
}

/// The dashboard's routes (public: the page holds no data).
pub(crate) fn routes() -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
