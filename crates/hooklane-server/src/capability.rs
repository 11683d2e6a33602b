//! Which capability (Svix's app-portal capabilities) each operation under an application
//! needs, so that an application token issued with a list of them (`readOnly`,
//! `capabilities`) does only what they allow. [`crate::extract::Tenant`] checks it for
//! every route under `/api/v1/app/{app_id}` and `/api/v1/stats/app/{app_id}`, by the
//! route's pattern, so no handler can forget it.

use axum::http::Method;
use hooklane_core::model::Capability;

/// What `method` on the route `pattern` (as axum matched it, e.g.
/// `/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret`) needs; `None`: no capability
/// grants it (changing the application, posting or deleting messages, a route this table
/// does not know), so only tokens that may do everything may.
pub fn required(method: &Method, pattern: &str) -> Option<Capability> {
    let read = method == Method::GET || method == Method::HEAD;
    if pattern.starts_with("/api/v1/stats/app/{app_id}/") {
        // The statistics are all reads.
        return read.then_some(Capability::ViewBase);
    }
    let tail = pattern.strip_prefix("/api/v1/app/{app_id}")?;
    match tail {
        // Secrets, and custom headers and OAuth settings, which name the receiver's
        // credentials (even with the secrets left out).
        "/endpoint/{endpoint_id}/secret"
        | "/endpoint/{endpoint_id}/headers"
        | "/endpoint/{endpoint_id}/oauth"
        | "/endpoint/{endpoint_id}/mtls"
            if read =>
        {
            Some(Capability::ViewEndpointSecret)
        }
        // The reads, each named: a read route this table does not know needs full access,
        // so that a new one cannot show a read-only token what it should not.
        ""
        | "/endpoint"
        | "/endpoint/{endpoint_id}"
        | "/endpoint/{endpoint_id}/stats"
        | "/endpoint/{endpoint_id}/attempt-stats"
        | "/endpoint/{endpoint_id}/msg"
        | "/msg"
        | "/msg/{msg_id}"
        | "/msg/{msg_id}/endpoint"
        | "/msg/{msg_id}/endpoint/{endpoint_id}/attempt"
        | "/msg/{msg_id}/attempt"
        | "/msg/{msg_id}/attempt/{attempt_id}"
        | "/attempt/msg/{msg_id}"
        | "/attempt/endpoint/{endpoint_id}"
        | "/events"
        | "/events/stream"
        | "/poller/{endpoint_id}"
        // Variables' values are hidden without `ViewEndpointSecret`.
        | "/endpoint/{endpoint_id}/transformation"
            if read =>
        {
            Some(Capability::ViewBase)
        }
        // Reads sent as POST: they change nothing.
        "/endpoint/{endpoint_id}/preview" | "/msg/precheck/active" => Some(Capability::ViewBase),
        "/endpoint/{endpoint_id}/secret/rotate" => Some(Capability::ManageEndpointSecret),
        "/endpoint/{endpoint_id}/transformation" => Some(Capability::ManageTransformations),
        "/endpoint/{endpoint_id}/recover"
        | "/endpoint/{endpoint_id}/replay-missing"
        | "/endpoint/{endpoint_id}/bulk-replay"
        | "/endpoint/{endpoint_id}/send-example"
        | "/msg/{msg_id}/endpoint/{endpoint_id}/resend" => Some(Capability::CreateAttempts),
        t if t == "/endpoint" || t.starts_with("/endpoint/") => Some(Capability::ManageEndpoint),
        _ => None,
    }
}

/// Whether a polling endpoint's key ([`hooklane_core::model::Principal::Poller`]) may call
/// the route `pattern`: its poller's reads and consumers, and who it is. (Which endpoint it
/// names is checked by the poller.)
pub fn poller_key_may(method: &Method, pattern: &str) -> bool {
    let get = method == Method::GET || method == Method::HEAD;
    match pattern {
        "/api/v1/app/{app_id}/poller/{endpoint_id}"
        | "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}"
        | "/api/v1/auth/whoami" => get,
        "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek" | "/api/v1/auth/logout" => {
            method == Method::POST
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "/api/v1/app/{app_id}";

    #[test]
    fn reads_need_view_base_but_secrets() {
        for tail in ["", "/endpoint", "/msg", "/endpoint/{endpoint_id}/stats", "/events/stream"] {
            assert_eq!(required(&Method::GET, &format!("{APP}{tail}")), Some(Capability::ViewBase), "{tail}");
        }
        for tail in ["secret", "headers", "oauth", "mtls"] {
            let path = format!("{APP}/endpoint/{{endpoint_id}}/{tail}");
            assert_eq!(required(&Method::GET, &path), Some(Capability::ViewEndpointSecret), "{tail}");
        }
        let subscription = format!("{APP}/events/subscription/{{subscription_id}}");
        assert_eq!(required(&Method::GET, &subscription), None, "it moves a shared position");
        assert_eq!(required(&Method::GET, &format!("{APP}/poller/{{endpoint_id}}")), Some(Capability::ViewBase));
        let consumer = format!("{APP}/poller/{{endpoint_id}}/consumer/{{consumer_id}}");
        assert_eq!(required(&Method::GET, &consumer), None, "it moves a shared position");
        assert_eq!(required(&Method::POST, &format!("{consumer}/seek")), None);
        assert_eq!(required(&Method::GET, "/api/v1/stats/app/{app_id}/timeline"), Some(Capability::ViewBase));
        assert_eq!(required(&Method::POST, &format!("{APP}/msg/precheck/active")), Some(Capability::ViewBase));
    }

    #[test]
    fn writes_need_their_capability_or_full_access() {
        let need = |m: Method, tail: &str| required(&m, &format!("{APP}{tail}"));
        assert_eq!(need(Method::POST, "/endpoint/{endpoint_id}/secret/rotate"), Some(Capability::ManageEndpointSecret));
        assert_eq!(
            need(Method::PATCH, "/endpoint/{endpoint_id}/transformation"),
            Some(Capability::ManageTransformations)
        );
        assert_eq!(need(Method::GET, "/endpoint/{endpoint_id}/transformation"), Some(Capability::ViewBase));
        assert_eq!(need(Method::POST, "/msg/{msg_id}/endpoint/{endpoint_id}/resend"), Some(Capability::CreateAttempts));
        assert_eq!(need(Method::POST, "/endpoint/{endpoint_id}/recover"), Some(Capability::CreateAttempts));
        assert_eq!(need(Method::POST, "/endpoint"), Some(Capability::ManageEndpoint));
        assert_eq!(need(Method::PATCH, "/endpoint/{endpoint_id}/headers"), Some(Capability::ManageEndpoint));
        assert_eq!(need(Method::PUT, "/endpoint/{endpoint_id}/oauth"), Some(Capability::ManageEndpoint));
        assert_eq!(need(Method::DELETE, "/endpoint/{endpoint_id}/oauth"), Some(Capability::ManageEndpoint));
        assert_eq!(need(Method::DELETE, "/endpoint/{endpoint_id}"), Some(Capability::ManageEndpoint));
        assert_eq!(need(Method::POST, "/msg"), None);
        assert_eq!(need(Method::DELETE, ""), None);
        assert_eq!(need(Method::POST, "/msg/expunge-all-contents"), None);
    }

    #[test]
    fn a_poller_key_reads_its_poller_only() {
        let poller = format!("{APP}/poller/{{endpoint_id}}");
        for pattern in [poller.clone(), format!("{poller}/consumer/{{consumer_id}}"), "/api/v1/auth/whoami".into()] {
            assert!(poller_key_may(&Method::GET, &pattern), "{pattern}");
            assert!(!poller_key_may(&Method::DELETE, &pattern), "{pattern}");
        }
        assert!(poller_key_may(&Method::POST, &format!("{poller}/consumer/{{consumer_id}}/seek")));
        assert!(!poller_key_may(&Method::GET, &format!("{poller}/consumer/{{consumer_id}}/seek")));
        for pattern in [format!("{APP}/events"), format!("{APP}/endpoint/{{endpoint_id}}"), APP.into(), "".into()] {
            assert!(!poller_key_may(&Method::GET, &pattern), "{pattern}");
        }
    }

    #[test]
    fn unknown_routes_need_full_access() {
        let under_app = format!("{APP}/something/new");
        for pattern in ["", "/api/v1/event-type", "/api/v1/source/{source_id}", "/api/v1/stats/usage/app", &under_app] {
            assert_eq!(required(&Method::GET, pattern), None, "{pattern:?}");
        }
        // A named subscription's read moves its shared position: a write.
        assert_eq!(required(&Method::GET, &format!("{APP}/events/subscription/{{subscription_id}}")), None);
    }
}
