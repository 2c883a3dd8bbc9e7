//! The request headers a plugin declared it reads (`plugin-info.request-headers`), and
//! the narrowed request heads and audit events the host passes to it.
//!
//! Passing only declared headers keeps credentials (`authorization`, cookies) away from
//! plugins that do not need them, and it is the cheapest call: every header the host
//! passes is two strings copied into the plugin's memory, each through a call to the
//! guest's allocator.

use super::types::{AuditEvent, Header, RequestHead};
use super::validate::is_header_name;
use super::view::{AuditEventView, RequestView};

/// Most header names a plugin may declare.
const MAX_NAMES: usize = 64;

/// The declared header names, lower-case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderFilter(Vec<String>);

impl HeaderFilter {
    /// Checks a plugin's declaration. `Ok(None)`: the plugin reads every header.
    pub(crate) fn from_declared(names: Option<&[String]>) -> Result<Option<Self>, String> {
        let Some(names) = names else { return Ok(None) };
        Ok(Some(HeaderFilter(header_names(
            "plugin-info.request-headers",
            names,
            MAX_NAMES,
        )?)))
    }

    /// The filter with `names` (a plugin's credential headers) added: a plugin always
    /// sees the credential headers it declared, listed in `request-headers` or not.
    pub(crate) fn with(mut self, names: &[String]) -> Self {
        for n in names {
            if !self.0.contains(n) {
                self.0.push(n.clone());
            }
        }
        self
    }

    /// The declared names.
    pub(crate) fn names(&self) -> &[String] {
        &self.0
    }

    fn keeps(&self, h: &Header) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(&h.name))
    }
}

/// Checks a plugin's `plugin-info.credential-headers`: lower-case names, no duplicates.
pub(crate) fn credential_headers(names: &[String]) -> Result<Vec<String>, String> {
    header_names(
        "plugin-info.credential-headers",
        names,
        MAX_CREDENTIAL_NAMES,
    )
}

/// Most credential header names a plugin may declare.
const MAX_CREDENTIAL_NAMES: usize = 16;

/// Legal header names, lower-cased and without duplicates; `field` names the
/// declaration in errors.
fn header_names(field: &str, names: &[String], max: usize) -> Result<Vec<String>, String> {
    if names.len() > max {
        return Err(format!("{field}: {} names, at most {max}", names.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let n = n.to_ascii_lowercase();
        if !is_header_name(&n) {
            return Err(format!(
                "{field}: {:?} is not a header name",
                n.escape_debug().to_string()
            ));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The headers of `headers` a stage with `filter` may see (all when it declared none).
fn visible<'a>(filter: Option<&HeaderFilter>, headers: &'a [Header]) -> Vec<&'a Header> {
    match filter {
        None => headers.iter().collect(),
        Some(f) => headers.iter().filter(|h| f.keeps(h)).collect(),
    }
}

/// `req` as the stage with `filter` sees it.
pub(crate) fn request<'a>(filter: Option<&HeaderFilter>, req: &'a RequestHead) -> RequestView<'a> {
    RequestView::new(req, visible(filter, &req.headers))
}

/// `event` as the stage with `filter` sees it.
pub(crate) fn event<'a>(
    filter: Option<&HeaderFilter>,
    event: &'a AuditEvent,
) -> AuditEventView<'a> {
    AuditEventView::new(event, visible(filter, &event.headers))
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
        assert_eq!(seen.headers.len(), 1);
        assert_eq!(seen.headers[0].name, "accept");
        assert_eq!(seen.path(), "/api");

        let none = request(Some(&filter(&[])), &req);
        assert!(none.headers.is_empty());

        let ev = audit_event(&req);
        let seen = event(Some(&filter(&["cookie"])), &ev);
        assert_eq!(seen.headers.len(), 1);
        assert_eq!(seen.request_id, ev.request_id);
    }

    #[test]
    fn a_stage_that_declared_nothing_sees_every_header() {
        let req = head("/api", &[("accept", "a"), ("authorization", "Bearer x")]);
        assert_eq!(request(None, &req).headers.len(), 2);
        assert_eq!(
            request(Some(&filter(&["accept", "x"])), &req).headers.len(),
            1
        );
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
        let creds = vec!["X-Token".to_string(), "x-token".to_string()];
        assert_eq!(credential_headers(&creds).unwrap(), ["x-token"]);
        assert!(credential_headers(&many[..17])
            .unwrap_err()
            .contains("plugin-info.credential-headers: 17 names"));
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
