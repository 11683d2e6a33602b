//! The web dashboard (`/dashboard`, admin token) and application portal (`/portal`, an
//! application token from the URL fragment `#token=…`): one single-page app in plain
//! HTML, CSS and JavaScript, embedded in the binary (no build step), that calls `/api/v1`
//! with the bearer token the user signed in with.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");

/// Scripts, styles and API calls only from this origin; the portal may be framed by the
/// SaaS that embeds it (the pages `portal_frame_ancestors` lists; any when it lists none),
/// the admin dashboard may not. No string reaches a sink that makes markup or script of it
/// (`innerHTML`, `eval`…: Trusted Types, with no policy to make them): the pages build their
/// elements and set text only, and a slip that did otherwise fails rather than open a hole.
const CSP_COMMON: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; require-trusted-types-for 'script'; trusted-types 'none'";
const CSP_DASHBOARD: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; require-trusted-types-for 'script'; trusted-types 'none'; \
     frame-ancestors 'none'";

/// The portal's `Content-Security-Policy`: its `frame-ancestors` are `sources`, or `*`
/// (any page may frame it) when there are none. Sources `check_frame_ancestors` refuses
/// (the configuration does not start with them) give `'none'`: the portal is then framed
/// by no one rather than by pages not chosen.
pub fn portal_csp(sources: &[String]) -> HeaderValue {
    let ancestors = if sources.is_empty() { "*".to_string() } else { sources.join(" ") };
    match check_frame_ancestors(sources) {
        Ok(()) => HeaderValue::from_str(&format!("{CSP_COMMON}; frame-ancestors {ancestors}"))
            .unwrap_or_else(|_| HeaderValue::from_static(CSP_DASHBOARD)),
        Err(_) => HeaderValue::from_static(CSP_DASHBOARD),
    }
}

/// What is wrong with `sources` as the portal's `frame-ancestors`, if anything: each must be
/// `'self'`, `*`, a scheme (`https:`) or an origin (`https://app.example.com`, a port and a
/// leading `*.` in the host allowed, no path); `'none'` alone is also taken.
pub fn check_frame_ancestors(sources: &[String]) -> Result<(), String> {
    if sources.len() > 1 && sources.iter().any(|s| s == "'none'") {
        return Err("'none' must be the only entry".into());
    }
    for source in sources {
        if !(matches!(source.as_str(), "'self'" | "'none'" | "*") || is_scheme(source) || is_origin(source)) {
            return Err(format!(
                "{source:?} is not 'self', 'none', a scheme (https:) or an origin (https://app.example.com)"
            ));
        }
    }
    Ok(())
}

fn is_scheme(s: &str) -> bool {
    s.strip_suffix(':').is_some_and(|name| {
        name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    is_scheme(&format!("{scheme}:"))
        && !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && port.is_none_or(|p| p == "*" || (!p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(|| async { unframed(page(HeaderValue::from_static(CSP_DASHBOARD))) }))
        .route("/portal", get(|State(s): State<AppState>| async move { page(s.0.portal_csp.clone()) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn page(csp: HeaderValue) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        INDEX,
    )
        .into_response()
}

/// The admin dashboard also says `X-Frame-Options: DENY`, for browsers that do not read
/// `frame-ancestors`, and keeps no opener in common with pages of other origins
/// (`Cross-Origin-Opener-Policy`): a page that opened it, or that it opens, cannot reach
/// its window, where the admin token is. (Not the portal, which a SaaS may open in a popup
/// it talks to.)
fn unframed(mut page: Response) -> Response {
    let headers = page.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn list(sources: &[&str]) -> Vec<String> {
        sources.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn frame_ancestors_are_origins_schemes_or_keywords() {
        for good in [
            &[][..],
            &["https://app.example.com"],
            &["https://app.example.com:8443", "https://*.example.com", "'self'"],
            &["https:"],
            &["http://localhost:3000/"],
            &["'none'"],
            &["*"],
        ] {
            assert_eq!(check_frame_ancestors(&list(good)), Ok(()), "{good:?}");
        }
        for bad in [
            &["https://a.example; script-src *"][..],
            &["https://a.example https://b.example"],
            &["app.example.com"],
            &["https://a.example/path"],
            &["https://"],
            &["https://a..example"],
            &["https://a.example:99999x"],
            &["'unsafe-inline'"],
            &["'none'", "'self'"],
            &[""],
            &["https://a.example\r\nx: y"],
        ] {
            assert!(check_frame_ancestors(&list(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_portal_csp_lists_them_or_any_by_default() {
        let csp = |s: &[&str]| portal_csp(&list(s)).to_str().unwrap_or_default().to_string();
        assert!(csp(&[]).ends_with("; frame-ancestors *"), "{}", csp(&[]));
        let listed = csp(&["https://app.example.com", "'self'"]);
        assert!(listed.ends_with("; frame-ancestors https://app.example.com 'self'"), "{listed}");
        assert!(listed.starts_with("default-src 'none'; script-src 'self';"), "{listed}");
        // Sources the configuration refuses frame it for no one.
        assert!(csp(&["https://a.example; script-src *"]).ends_with("frame-ancestors 'none'"));
    }
}
