//! Constructors and accessors on the WIT records, so plugins read and build them
//! without spelling out every field.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{Candidate, Denial, DenialKind, Extra, Header, Principal, RequestHead, RouteChoice};

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

impl Principal {
    /// A principal with only a user name.
    pub fn new(user: impl Into<String>) -> Self {
        Principal {
            user: user.into(),
            uid: String::new(),
            groups: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds groups.
    pub fn with_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Adds an extra attribute.
    pub fn with_extra(mut self, key: impl Into<String>, values: Vec<String>) -> Self {
        self.extra.push(Extra {
            key: key.into(),
            values,
        });
        self
    }

    /// The values of extra attribute `key`.
    pub fn extra(&self, key: &str) -> Option<&[String]> {
        self.extra
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.values.as_slice())
    }
}

impl Denial {
    /// 401: missing or invalid credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::of(DenialKind::Unauthorized, message)
    }

    /// 403: known identity, not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::of(DenialKind::Forbidden, message)
    }

    /// 404: no such target for this caller.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::of(DenialKind::NotFound, message)
    }

    /// 429: over a limit.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::of(DenialKind::TooManyRequests, message)
    }

    /// 503: no healthy target.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::of(DenialKind::Unavailable, message)
    }

    /// Names who a verified credential belongs to, on a 403 from a credential stage
    /// (for example a token that is valid but not for this cluster): the audit record
    /// then shows who was refused instead of an anonymous caller.
    ///
    /// Only for [`Denial::forbidden`]: the host refuses a named principal on any other
    /// kind (a 500 that counts towards quarantine), so debug builds, native tests
    /// included, panic here.
    pub fn naming(mut self, who: Principal) -> Self {
        debug_assert!(
            self.kind == DenialKind::Forbidden,
            "Denial::naming is only allowed on Denial::forbidden, not {:?}",
            self.kind
        );
        self.principal = Some(who);
        self
    }

    fn of(kind: DenialKind, message: impl Into<String>) -> Self {
        Denial {
            kind,
            message: message.into(),
            principal: None,
        }
    }
}

impl RouteChoice {
    /// A choice of `candidate`, setting no headers.
    pub fn to(candidate: &Candidate) -> Self {
        RouteChoice {
            cluster: candidate.cluster.clone(),
            endpoint: candidate.endpoint.clone(),
            set_headers: Vec::new(),
        }
    }

    /// Adds an upstream header (the stage's policy must allow it).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }
}
