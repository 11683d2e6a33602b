//! The web dashboard (`/dashboard`, admin token) and application portal (`/portal`, an
//! application token from the URL fragment `#token=…`): one single-page app in plain
//! HTML, CSS and JavaScript, embedded in the binary (no build step), that calls `/api/v1`
//! with the bearer token the user signed in with.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");

/// Scripts, styles and API calls only from this origin; the portal may be framed by the
/// SaaS that embeds it, the admin dashboard may not.
const CSP_DASHBOARD: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const CSP_PORTAL: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors *";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(|| async { unframed(page(CSP_DASHBOARD)) }))
        .route("/portal", get(|| async { page(CSP_PORTAL) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn page(csp: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        INDEX,
    )
        .into_response()
}

/// The admin dashboard also says `X-Frame-Options: DENY`, for browsers that do not read
/// `frame-ancestors`.
fn unframed(mut page: Response) -> Response {
    page.headers_mut().insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    page
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}
