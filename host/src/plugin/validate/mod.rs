//! Checks on what plugins return. A plugin can narrow what the configuration allows
//! (deny, abstain, redact) but never widen it:
//! - every string that may become an HTTP header is a legal header name or value;
//! - a principal or impersonated identity stays within size limits, and an impersonated
//!   identity within the stage's [`Policy`];
//! - a routing choice names one of the candidates passed in, and sets only headers the
//!   policy allows (never hop-by-hop, `host`, `authorization` or `impersonate-*`);
//! - an audit redaction only names headers; the host applies it.

use super::types::{AuditEvent, Candidate, Denial, DenialKind, Principal, Redaction, RouteChoice};

/// A glob pattern: `*` matches any run of characters, everything else matches itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Pattern(text.into())
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        glob(self.0.as_bytes(), s.as_bytes())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with single backtrack point (classic algorithm).
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn any(patterns: &[Pattern], s: &str) -> bool {
    patterns.iter().any(|p| p.matches(s))
}

/// What the host lets a stage's output contain (`[stage.policy]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Impersonation: users that may be impersonated. Default `["*"]`.
    pub allow_users: Vec<Pattern>,
    /// Impersonation: users that may never be impersonated. Default empty.
    pub deny_users: Vec<Pattern>,
    /// Impersonation: groups that may be set. Default `["*"]`.
    pub allow_groups: Vec<Pattern>,
    /// Impersonation: groups that may never be set. Default `["system:masters"]`;
    /// whatever is set here, [`ALWAYS_DENIED_GROUPS`] are refused too.
    pub deny_groups: Vec<Pattern>,
    /// Impersonation: extra keys that may be set. Default `["*"]`.
    pub allow_extra: Vec<Pattern>,
    /// Impersonation: uids that may be set (an empty uid always may). Default `["*"]`;
    /// `[]` forbids impersonating any uid.
    pub allow_uids: Vec<Pattern>,
    /// Routing: upstream headers a routing choice may set. Default empty (none).
    pub allow_headers: Vec<Pattern>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_users: vec![Pattern::new("*")],
            deny_users: Vec::new(),
            allow_groups: vec![Pattern::new("*")],
            deny_groups: vec![Pattern::new("system:masters")],
            allow_extra: vec![Pattern::new("*")],
            allow_uids: vec![Pattern::new("*")],
            allow_headers: Vec::new(),
        }
    }
}

const MAX_MESSAGE: usize = 1024;
const MAX_NAME: usize = 512;
const MAX_GROUPS: usize = 256;
const MAX_EXTRA_KEYS: usize = 32;
const MAX_EXTRA_VALUES: usize = 64;
const MAX_SET_HEADERS: usize = 16;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_REDACTED_HEADERS: usize = 256;

/// Headers no plugin may set on the upstream request. `audit-id` joins the hub's,
/// the agent's and the API server's audit events of one request.
const FORBIDDEN_HEADERS: &[&str] = &[
    "audit-id",
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Prefixes of headers no plugin may set, whatever the stage policy allows: the
/// impersonation headers (only the impersonation phase sets them), the front-proxy
/// identity headers the API server may trust, and Hawser's tunnel-internal headers
/// (`proxy::headers::INTERNAL_PREFIX`), which carry the hub's access decision.
const FORBIDDEN_PREFIXES: &[&str] = &["impersonate-", "x-remote-", "x-hawser-tunnel-"];

/// A plugin-supplied string as quoted in an error: at most 64 characters, so a
/// plugin cannot make its failure message (sent to the client and logged) any size.
fn shown(s: &str) -> String {
    let mut cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// A legal, lower-case HTTP header name (RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// A legal HTTP header value: visible ASCII, space and tab, no surrounding whitespace.
pub fn is_header_value(value: &str) -> bool {
    value.len() <= MAX_HEADER_VALUE
        && value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
}

/// Characters that change how text around them is shown without being seen
/// themselves: bidirectional overrides and isolates, zero-width characters, line and
/// paragraph separators. kubectl prints denial messages and logs record them, so a
/// plugin could use these to make either read differently.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

pub(crate) fn denial(d: &Denial) -> Result<(), String> {
    if d.message.len() > MAX_MESSAGE {
        return Err(format!("denial message longer than {MAX_MESSAGE} bytes"));
    }
    if d.message
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err("denial message contains control or invisible formatting characters".into());
    }
    match &d.principal {
        None => Ok(()),
        Some(_) if d.kind != DenialKind::Forbidden => {
            Err("a denial names a principal only with kind forbidden".into())
        }
        Some(p) => principal(p).map_err(|e| format!("denial principal: {e}")),
    }
}

/// A principal that may later be sent as `Impersonate-*` headers.
pub(crate) fn principal(p: &Principal) -> Result<(), String> {
    if p.user.is_empty() {
        return Err("principal has an empty user".into());
    }
    value("user", &p.user)?;
    if !p.uid.is_empty() {
        value("uid", &p.uid)?;
    }
    if p.groups.len() > MAX_GROUPS {
        return Err(format!("more than {MAX_GROUPS} groups"));
    }
    for g in &p.groups {
        if g.is_empty() {
            return Err("empty group name".into());
        }
        value("group", g)?;
    }
    if p.extra.len() > MAX_EXTRA_KEYS {
        return Err(format!("more than {MAX_EXTRA_KEYS} extra keys"));
    }
    for e in &p.extra {
        // Sent as `Impersonate-Extra-<key>` with the key percent-encoded (as client-go
        // does), so any visible ASCII is fine; `authentication.kubernetes.io/pod-name`
        // is a typical key.
        if e.key.is_empty() || e.key.len() > 256 || !e.key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "extra key {} is not 1-256 visible ASCII characters",
                shown(&e.key)
            ));
        }
        if e.values.len() > MAX_EXTRA_VALUES {
            return Err(format!(
                "extra {} has more than {MAX_EXTRA_VALUES} values",
                shown(&e.key)
            ));
        }
        for v in &e.values {
            value("extra value", v)?;
        }
    }
    Ok(())
}

fn value(what: &str, v: &str) -> Result<(), String> {
    if v.len() > MAX_NAME || !is_header_value(v) {
        return Err(format!(
            "{what} {:?} is not a legal header value of at most {MAX_NAME} bytes",
            v.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

/// An identity to impersonate: legal, and within the stage's policy.
pub(crate) fn impersonation(p: &Principal, policy: &Policy) -> Result<(), String> {
    principal(p)?;
    within_policy(p, policy)
}

/// Groups no identity the host sends upstream may carry, whatever a stage policy
/// says (a `deny_groups` list adds to these, it does not replace them): members of
/// `system:masters` bypass every authorization check of kube-apiserver.
pub const ALWAYS_DENIED_GROUPS: &[&str] = &["system:masters"];

/// Whether the host's floor allows sending `p` upstream: none of
/// [`ALWAYS_DENIED_GROUPS`]. Stage policies include it; with no impersonation stage it
/// is all that bounds the caller's own identity.
pub(crate) fn within_floor(p: &Principal) -> Result<(), String> {
    match p
        .groups
        .iter()
        .find(|g| ALWAYS_DENIED_GROUPS.contains(&g.as_str()))
    {
        Some(g) => Err(format!("impersonating group {g:?} is never allowed")),
        None => Ok(()),
    }
}

/// Whether the stage policy allows impersonating `p` (who may already be known legal).
pub(crate) fn within_policy(p: &Principal, policy: &Policy) -> Result<(), String> {
    within_floor(p)?;
    if !any(&policy.allow_users, &p.user) || any(&policy.deny_users, &p.user) {
        return Err(format!(
            "impersonating user {} is not allowed by the stage policy",
            shown(&p.user)
        ));
    }
    for g in &p.groups {
        if !any(&policy.allow_groups, g) || any(&policy.deny_groups, g) {
            return Err(format!(
                "impersonating group {} is not allowed by the stage policy",
                shown(g)
            ));
        }
    }
    if !p.uid.is_empty() && !any(&policy.allow_uids, &p.uid) {
        return Err(format!(
            "impersonating uid {} is not allowed by the stage policy",
            shown(&p.uid)
        ));
    }
    for e in &p.extra {
        if !any(&policy.allow_extra, &e.key) {
            return Err(format!(
                "extra key {} is not allowed by the stage policy",
                shown(&e.key)
            ));
        }
    }
    Ok(())
}

/// A routing choice: one of `candidates`, with only allowed headers, none of them one
/// of the chain's `credential_headers` (a stage could otherwise mint a credential).
pub(crate) fn route_choice(
    c: &RouteChoice,
    candidates: &[Candidate],
    policy: &Policy,
    credential_headers: &[String],
) -> Result<(), String> {
    if !candidates
        .iter()
        .any(|k| k.cluster == c.cluster && k.endpoint == c.endpoint)
    {
        return Err(format!(
            "route to {}/{} is not one of the configured candidates",
            shown(&c.cluster),
            shown(&c.endpoint)
        ));
    }
    if c.set_headers.len() > MAX_SET_HEADERS {
        return Err(format!("more than {MAX_SET_HEADERS} headers set"));
    }
    for h in &c.set_headers {
        if !is_header_name(&h.name) {
            return Err(format!(
                "{} is not a legal lower-case header name",
                shown(&h.name)
            ));
        }
        if FORBIDDEN_HEADERS.contains(&h.name.as_str())
            || FORBIDDEN_PREFIXES.iter().any(|p| h.name.starts_with(p))
            || credential_headers.contains(&h.name)
        {
            return Err(format!(
                "header {} may not be set by a plugin",
                shown(&h.name)
            ));
        }
        if !any(&policy.allow_headers, &h.name) {
            return Err(format!(
                "header {} is not allowed by the stage policy",
                shown(&h.name)
            ));
        }
        if !is_header_value(&h.value) {
            return Err(format!(
                "value of header {} is not a legal header value",
                shown(&h.name)
            ));
        }
    }
    Ok(())
}

pub(crate) fn redaction(r: &Redaction) -> Result<(), String> {
    if r.headers.len() > MAX_REDACTED_HEADERS {
        return Err(format!(
            "redaction names more than {MAX_REDACTED_HEADERS} headers"
        ));
    }
    for h in &r.headers {
        if !is_header_name(&h.to_ascii_lowercase()) {
            return Err(format!(
                "redaction names {}, not a legal header name",
                shown(h)
            ));
        }
    }
    Ok(())
}

/// The text that replaces redacted values.
pub const REDACTED: &str = "[REDACTED]";

/// Applies a validated redaction to `ev`.
pub(crate) fn apply_redaction(ev: &mut AuditEvent, r: &Redaction) {
    for h in ev.headers.iter_mut() {
        if r.headers.iter().any(|n| n.eq_ignore_ascii_case(&h.name)) {
            h.value = REDACTED.into();
        }
    }
    if r.query && !ev.query.is_empty() {
        ev.query = REDACTED.into();
    }
    if r.extra {
        for p in ev.principal.iter_mut().chain(ev.impersonated.iter_mut()) {
            p.extra.clear();
        }
    }
}

#[cfg(test)]
mod tests;
