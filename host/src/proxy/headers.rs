//! Header rules shared by the hub and the agent, after Go's reverse proxy and
//! kube-apiserver's authentication filters.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::plugin::{self, Principal};
use std::net::IpAddr;

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1, Go's
/// `httputil.ReverseProxy`).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Prefix of headers Hawser uses between hub and agent; never accepted from a client.
pub const INTERNAL_PREFIX: &str = "x-hawser-tunnel-";

/// Carries the client's `Upgrade` value across the tunnel (HTTP/2 has no upgrades).
pub const TUNNEL_UPGRADE: &str = "x-hawser-tunnel-upgrade";

/// Set by the agent on a tunnel response when the API server switched protocols.
pub const TUNNEL_UPGRADED: &str = "x-hawser-tunnel-upgraded";

/// The user a client asked to impersonate, relayed by the hub once its access
/// policy allowed it; the agent checks its own policy again.
pub const TUNNEL_AS_USER: &str = "x-hawser-tunnel-as-user";

/// One line per group a client asked to impersonate (see [`TUNNEL_AS_USER`]).
pub const TUNNEL_AS_GROUP: &str = "x-hawser-tunnel-as-group";

/// Reads a client impersonation request: `Impersonate-User` (first value) and one
/// group per `Impersonate-Group` line. `Err` names a kind Hawser never relays
/// (`Impersonate-Uid`, `Impersonate-Extra-*`).
pub fn client_impersonation(
    headers: &HeaderMap,
    user: &str,
    group: &str,
) -> Result<crate::access::ClientImpersonation, String> {
    if let Some(other) = headers.keys().find(|n| {
        let n = n.as_str();
        n == "impersonate-uid" || n.starts_with("impersonate-extra-")
    }) {
        return Err(format!(
            "client impersonation with `{other}` is not supported"
        ));
    }
    let text = |v: &HeaderValue| {
        v.to_str()
            .map(str::to_string)
            .map_err(|_| "impersonation header is not text".to_string())
    };
    Ok(crate::access::ClientImpersonation {
        user: headers.get(user).map(text).transpose()?,
        groups: headers
            .get_all(group)
            .iter()
            .map(text)
            .collect::<Result<_, _>>()?,
    })
}

/// The request ID that joins hub, agent and API-server audit records.
pub const AUDIT_ID: &str = "audit-id";

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The `Upgrade` value when the request asks for a protocol switch: `Connection`
/// contains the token "upgrade" (case-insensitive) and `Upgrade` is present.
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// True for headers through which a caller could claim an identity toward the API
/// server: `Authorization`, `Impersonate-*` and `X-Remote-*`.
pub fn is_identity_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization" || n.starts_with("impersonate-") || n.starts_with("x-remote-")
}

/// Removes every identity header (see [`is_identity_header`]).
pub fn strip_identity(headers: &mut HeaderMap) {
    remove_where(headers, is_identity_header);
}

/// Removes Hawser's internal headers, which only the hub may set.
pub fn strip_internal(headers: &mut HeaderMap) {
    remove_where(headers, |n| n.as_str().starts_with(INTERNAL_PREFIX));
}

fn remove_where(headers: &mut HeaderMap, pred: impl Fn(&HeaderName) -> bool) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| pred(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Appends the client address to `X-Forwarded-For`, as Go's reverse proxy does.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let prior: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        client.to_string()
    } else {
        format!("{}, {client}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

/// The size of a header block as sent on the wire (name, ": ", value, CRLF).
pub fn block_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// The request's `Audit-ID`, or a new one set on it.
pub fn ensure_audit_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers
        .get(AUDIT_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
    {
        return v.clone();
    }
    let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    headers.insert(AUDIT_ID, id.clone());
    id
}

/// `Impersonate-*` lines for an identity, as client-go writes them: one
/// `Impersonate-Group` line per group, one `Impersonate-Extra-<key>` line per
/// value with the key lower-cased and escaped.
pub fn impersonation_headers(who: &Principal) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let value = |v: &str| {
        HeaderValue::from_str(v).map_err(|_| format!("`{v}` is not a legal header value"))
    };
    let mut out = vec![(
        HeaderName::from_static("impersonate-user"),
        value(&who.user)?,
    )];
    if !who.uid.is_empty() {
        out.push((HeaderName::from_static("impersonate-uid"), value(&who.uid)?));
    }
    for g in &who.groups {
        out.push((HeaderName::from_static("impersonate-group"), value(g)?));
    }
    for extra in &who.extra {
        let name = format!(
            "impersonate-extra-{}",
            escape_extra_key(&extra.key.to_ascii_lowercase())
        );
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("extra key `{}` cannot be a header", extra.key))?;
        for v in &extra.values {
            out.push((name.clone(), value(v)?));
        }
    }
    Ok(out)
}

/// client-go's `headerKeyEscape`: bytes that are not HTTP token characters, and
/// `%` itself, become upper-case `%XX`.
pub fn escape_extra_key(key: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
    key.bytes()
        .map(|b| {
            if token(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The request headers plugins may read, as plugin records: those some stage declared
/// (`wanted`; `None` is every header), skipping values that are not visible ASCII.
pub fn for_plugins(headers: &HeaderMap, wanted: Option<&[String]>) -> Vec<plugin::Header> {
    headers
        .iter()
        .filter(|(n, _)| wanted.is_none_or(|w| w.iter().any(|x| x == n.as_str())))
        .filter_map(|(n, v)| {
            let value = v.to_str().ok()?;
            Some(plugin::Header {
                name: n.as_str().to_string(),
                value: value.to_string(),
            })
        })
        .collect()
}

/// `headers` for an audit event: credential headers (the standard ones and the
/// `credentials` plugins declared) never reach audit records in clear.
pub fn masked(headers: &[plugin::Header], credentials: &[String]) -> Vec<plugin::Header> {
    headers
        .iter()
        .map(|h| match h.name.as_str() {
            "authorization" | "cookie" | "proxy-authorization" => mask(h),
            name if credentials.iter().any(|c| c == name) => mask(h),
            _ => h.clone(),
        })
        .collect()
}

fn mask(h: &plugin::Header) -> plugin::Header {
    plugin::Header {
        name: h.name.clone(),
        value: "[MASKED]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "application/json"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
        ]);
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept", "accept-encoding", "content-type"]);
    }

    #[test]
    fn upgrade_detection_is_token_based() {
        assert!(upgrade_request(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "SPDY/3.1")
        ]))
        .is_some());
        assert!(upgrade_request(&map(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_request(&map(&[
            ("connection", "upgraded"),
            ("upgrade", "websocket")
        ]))
        .is_none());
    }

    #[test]
    fn identity_headers_are_stripped() {
        let mut h = map(&[
            ("authorization", "Bearer x"),
            ("impersonate-user", "root"),
            ("impersonate-group", "system:masters"),
            ("impersonate-extra-scopes", "a"),
            ("x-remote-user", "root"),
            ("x-remote-extra-foo", "a"),
            ("accept", "*/*"),
        ]);
        strip_identity(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        append_forwarded_for(&mut h, "192.0.2.7".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "192.0.2.7".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn audit_id_kept_or_created() {
        let mut h = map(&[("audit-id", "abc")]);
        assert_eq!(ensure_audit_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let id = ensure_audit_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h["audit-id"], id);
    }

    #[test]
    fn extra_keys_are_escaped_like_client_go() {
        assert_eq!(escape_extra_key("acme.com/project"), "acme.com%2Fproject");
        assert_eq!(escape_extra_key("100%"), "100%25");
        assert_eq!(escape_extra_key("scopes"), "scopes");
    }

    #[test]
    fn impersonation_lines() {
        let who = Principal {
            user: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["devs".into(), "a, b".into()],
            extra: vec![crate::plugin::Extra {
                key: "Acme.com/Project".into(),
                values: vec!["x".into(), "y".into()],
            }],
        };
        let lines: Vec<(String, String)> = impersonation_headers(&who)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let expect = [
            ("impersonate-user", "alice"),
            ("impersonate-uid", "u-1"),
            ("impersonate-group", "devs"),
            ("impersonate-group", "a, b"),
            ("impersonate-extra-acme.com%2fproject", "x"),
            ("impersonate-extra-acme.com%2fproject", "y"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(lines, expect);
    }

    #[test]
    fn audit_events_mask_standard_and_declared_credential_headers() {
        let h = |n: &str, v: &str| plugin::Header {
            name: n.into(),
            value: v.into(),
        };
        let seen = masked(
            &[
                h("authorization", "Bearer t"),
                h("x-acme-token", "secret"),
                h("cookie", "c"),
                h("accept", "application/json"),
            ],
            &["x-acme-token".to_string()],
        );
        let values: Vec<&str> = seen.iter().map(|h| h.value.as_str()).collect();
        assert_eq!(
            values,
            ["[MASKED]", "[MASKED]", "[MASKED]", "application/json"]
        );
    }
}
