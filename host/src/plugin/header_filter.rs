//! The request headers a plugin declared it reads (`plugin-info.request-headers`), and
//! the narrowed request heads and audit events the host passes to it.
//!
//! Passing only declared headers keeps credentials (`authorization`, cookies) away from
//! plugins that do not need them, and it is the cheapest call: every header the host
//! passes is two strings copied into the plugin's memory, each through a call to the
//! guest's allocator.

use std::borrow::Cow;

use super::types::{AuditEvent, Header, RequestHead};
use super::validate::is_header_name;

/// Most header names a plugin may declare.
const MAX_NAMES: usize = 64;

/// The declared header names, lower-case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderFilter(Vec<String>);

impl HeaderFilter {
    /// Checks a plugin's declaration. `Ok(None)`: the plugin reads every header.
    pub(crate) fn from_declared(names: Option<&[String]>) -> Result<Option<Self>, String> {
        let Some(names) = names else { return Ok(None) };
        if names.len() > MAX_NAMES {
            return Err(format!(
                "plugin-info.request-headers: {} names, at most {MAX_NAMES}",
                names.len()
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let n = n.to_ascii_lowercase();
            if !is_header_name(&n) {
                return Err(format!(
                    "plugin-info.request-headers: {:?} is not a header name",
                    n.escape_debug().to_string()
                ));
            }
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(Some(HeaderFilter(out)))
    }

    /// The declared names.
    pub(crate) fn names(&self) -> &[String] {
        &self.0
    }

    fn keeps(&self, h: &Header) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(&h.name))
    }

    fn narrow(&self, headers: &[Header]) -> Option<Vec<Header>> {
        if headers.iter().all(|h| self.keeps(h)) {
            return None;
        }
        Some(headers.iter().filter(|h| self.keeps(h)).cloned().collect())
    }
}

/// `req` as a plugin with `filter` sees it: borrowed when nothing is filtered out.
pub(crate) fn request<'a>(
    filter: Option<&HeaderFilter>,
    req: &'a RequestHead,
) -> Cow<'a, RequestHead> {
    match filter.and_then(|f| f.narrow(&req.headers)) {
        None => Cow::Borrowed(req),
        Some(headers) => Cow::Owned(RequestHead {
            role: req.role,
            request_id: req.request_id.clone(),
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers,
            client_addr: req.client_addr.clone(),
            cluster: req.cluster.clone(),
        }),
    }
}

/// `event` as a plugin with `filter` sees it: borrowed when nothing is filtered out.
pub(crate) fn event<'a>(
    filter: Option<&HeaderFilter>,
    event: &'a AuditEvent,
) -> Cow<'a, AuditEvent> {
    match filter.and_then(|f| f.narrow(&event.headers)) {
        None => Cow::Borrowed(event),
        Some(headers) => Cow::Owned(AuditEvent {
            headers,
            ..event.clone_without_headers()
        }),
    }
}

impl AuditEvent {
    fn clone_without_headers(&self) -> AuditEvent {
        AuditEvent {
            request_id: self.request_id.clone(),
            phase: self.phase,
            timestamp_ms: self.timestamp_ms,
            role: self.role,
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: Vec::new(),
            client_addr: self.client_addr.clone(),
            principal: self.principal.clone(),
            impersonated: self.impersonated.clone(),
            route: self.route.clone(),
            status: self.status,
            latency_us: self.latency_us,
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::testing::{audit_event, request as head};

    fn filter(names: &[&str]) -> HeaderFilter {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        HeaderFilter::from_declared(Some(&names)).unwrap().unwrap()
    }

    #[test]
    fn only_declared_headers_reach_the_plugin() {
        let req = head(
            "/api",
            &[
                ("authorization", "Bearer x"),
                ("accept", "a"),
                ("cookie", "c"),
            ],
        );
        let seen = request(Some(&filter(&["Accept"])), &req);
        assert!(matches!(seen, Cow::Owned(_)));
        assert_eq!(seen.headers.len(), 1);
        assert_eq!(seen.headers[0].name, "accept");
        assert_eq!((seen.path.as_str(), seen.method.as_str()), ("/api", "GET"));

        let none = request(Some(&filter(&[])), &req);
        assert!(none.headers.is_empty());

        let ev = audit_event(&req);
        let seen = event(Some(&filter(&["cookie"])), &ev);
        assert_eq!(seen.headers.len(), 1);
        assert_eq!(seen.request_id, ev.request_id);
    }

    #[test]
    fn nothing_is_copied_when_nothing_is_filtered_out() {
        let req = head("/api", &[("accept", "a")]);
        assert!(matches!(request(None, &req), Cow::Borrowed(_)));
        assert!(matches!(
            request(Some(&filter(&["accept", "x"])), &req),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn declarations_are_checked() {
        assert_eq!(HeaderFilter::from_declared(None).unwrap(), None);
        let bad = vec!["x y".to_string()];
        assert!(HeaderFilter::from_declared(Some(&bad))
            .unwrap_err()
            .contains("not a header name"));
        let many: Vec<String> = (0..65).map(|i| format!("h{i}")).collect();
        assert!(HeaderFilter::from_declared(Some(&many)).is_err());
        let dup = vec!["A".to_string(), "a".to_string()];
        assert_eq!(
            HeaderFilter::from_declared(Some(&dup))
                .unwrap()
                .unwrap()
                .names(),
            ["a"]
        );
    }
}
