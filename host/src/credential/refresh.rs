//! The hub's refresh endpoint, `POST /hawser/v1/credential/refresh`.
//!
//! The caller (the kubectl exec plugin, `hawser credential exec`) presents a
//! refresh credential as its bearer token and gets back an `ExecCredential` whose
//! token is a new short-lived access token for the same identity. The access
//! token carries the refresh credential's id (`rid`), never outlives it, and dies
//! with it when it is revoked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::issue::IssueError;
use super::keys::HubKeys;
use super::kubeconfig::exec_credential;
use super::revocation::Revocations;
use super::token::{sign, Claims, CredentialError, SecretToken, TokenUse};
use super::verifier::{bearer, unauthorized, KeySource, Verifier};
use super::{MAX_ACCESS_TTL, MIN_REFRESHED_TTL};
use crate::files::{from_unix, unix};
use crate::proxy::body::{full, Body};
use crate::proxy::status::Status;

/// The path the hub's front listener routes to [`handle_refresh`] (outside
/// `/clusters/`, so it never reaches an agent).
pub const REFRESH_PATH: &str = "/hawser/v1/credential/refresh";

/// Mints access tokens from refresh credentials.
#[derive(Debug, Clone)]
pub struct Refresher {
    keys: Arc<HubKeys>,
    verifier: Verifier,
    access_ttl: Duration,
}

// === impl Refresher ===

impl Refresher {
    /// A refresher signing with the hub's keys, minting access tokens that live
    /// `access_ttl` ([`MIN_REFRESHED_TTL`] to 24 h) or until the refresh credential
    /// expires.
    pub fn new(
        keys: Arc<HubKeys>,
        revocations: Arc<Revocations>,
        issuer: impl Into<String>,
        access_ttl: Duration,
    ) -> Result<Refresher, IssueError> {
        if !(MIN_REFRESHED_TTL..=MAX_ACCESS_TTL).contains(&access_ttl) {
            return Err(IssueError::Invalid {
                field: "refreshed_ttl",
                reason: format!(
                    "{} is outside 5s..=24h",
                    humantime::format_duration(access_ttl)
                ),
            });
        }
        let verifier = Verifier::new(KeySource::Issuer(keys.clone()), revocations, issuer);
        Ok(Refresher {
            keys,
            verifier,
            access_ttl,
        })
    }

    /// The verifier over the same keys and revocations, for the hub's front
    /// listener to check access tokens with.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Checks the refresh credential in `authorization` and mints an access token.
    pub fn refresh(
        &self,
        authorization: &str,
        now: SystemTime,
    ) -> Result<(SecretToken, Claims), CredentialError> {
        let token = bearer(authorization)?;
        let parent = self.verifier.verify_token(token, TokenUse::Refresh, now)?;
        // No leeway here: an access token must not be minted past its parent.
        if unix(now) >= parent.exp {
            return Err(CredentialError::Expired);
        }
        let iat = unix(now);
        let claims = Claims {
            token_use: TokenUse::Access,
            jti: uuid::Uuid::new_v4().to_string(),
            rid: Some(parent.jti.clone()),
            iat,
            nbf: iat,
            exp: unix(now + self.access_ttl).min(parent.exp),
            ..parent
        };
        let token = sign(&claims, self.keys.get().signing_key());
        Ok((token, claims))
    }

    /// Serves one refresh request. The request body is ignored.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        if req.method() != Method::POST {
            let mut resp = Status::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the refresh endpoint takes POST",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        let Some(auth) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            tracing::debug!(reason = %CredentialError::Missing, "credential refresh refused");
            return unauthorized();
        };
        match self.refresh(auth, SystemTime::now()) {
            Ok((token, claims)) => {
                tracing::info!(user = %claims.sub, id = %claims.jti, refresh_id = ?claims.rid, "access credential refreshed");
                let mut resp = Response::new(full(exec_credential(&token, from_unix(claims.exp))));
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                // The body is a bearer token: no cache may keep it.
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            Err(e) => {
                tracing::debug!(reason = %e, "credential refresh refused");
                unauthorized()
            }
        }
    }
}

/// Serves `POST` [`REFRESH_PATH`]: see [`Refresher::handle`].
pub async fn handle_refresh<B>(refresher: &Refresher, req: Request<B>) -> Response<Body> {
    refresher.handle(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::issue::{issue_with, IssueRequest};
    use crate::credential::keys::IssuerKeys;
    use crate::credential::revocation::{revocations_path, revoke};
    use crate::credential::testing::ISSUER;
    use http_body_util::BodyExt;

    fn setup(access_ttl: Duration) -> (tempfile::TempDir, Refresher) {
        let dir = tempfile::tempdir().expect("tempdir");
        IssuerKeys::load_or_create(dir.path()).expect("keys");
        let keys = Arc::new(HubKeys::open(IssuerKeys::manifest_path(dir.path())).expect("keys"));
        let revocations =
            Arc::new(Revocations::open(revocations_path(dir.path())).expect("revocations"));
        let refresher = Refresher::new(keys, revocations, ISSUER, access_ttl).expect("refresher");
        (dir, refresher)
    }

    fn refresh_token(r: &Refresher, ttl: Duration) -> crate::credential::Issued {
        let req = IssueRequest {
            user: "alice".into(),
            groups: vec!["dev".into()],
            clusters: vec!["eu1".into()],
            ttl,
            exec: true,
            ..IssueRequest::default()
        };
        issue_with(&r.keys.get(), ISSUER, &req, SystemTime::now()).expect("issue")
    }

    fn post(auth: &str) -> Request<()> {
        Request::post(REFRESH_PATH)
            .header(header::AUTHORIZATION, auth)
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn a_refresh_credential_buys_an_access_token_for_the_same_identity() {
        let (_dir, r) = setup(Duration::from_secs(600));
        let parent = refresh_token(&r, Duration::from_secs(86_400));
        let resp = handle_refresh(&r, post(&format!("Bearer {}", parent.token.expose()))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["kind"], "ExecCredential");
        let token = v["status"]["token"].as_str().expect("token");
        let id = r
            .verifier()
            .check(&format!("Bearer {token}"))
            .expect("access token verifies");
        assert_eq!(
            (id.user.as_str(), id.clusters.as_slice()),
            ("alice", ["eu1".to_string()].as_slice())
        );
        assert_eq!(id.session.as_deref(), Some(parent.id.as_str()));
        assert!(id.expires_at <= SystemTime::now() + Duration::from_secs(601));
        // An access token cannot buy another one.
        let again = handle_refresh(&r, post(&format!("Bearer {token}"))).await;
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_access_token_never_outlives_its_refresh_credential() {
        let (_dir, r) = setup(Duration::from_secs(3600));
        let parent = refresh_token(&r, Duration::from_secs(120));
        let (_, claims) = r
            .refresh(
                &format!("Bearer {}", parent.token.expose()),
                SystemTime::now(),
            )
            .expect("refresh");
        assert_eq!(from_unix(claims.exp), parent.expires_at);
        let late = parent.expires_at + Duration::from_secs(30);
        assert_eq!(
            r.refresh(&format!("Bearer {}", parent.token.expose()), late)
                .map(|_| ()),
            Err(CredentialError::Expired)
        );
    }

    #[tokio::test]
    async fn revoked_refresh_credentials_and_other_methods_are_refused() {
        let (dir, r) = setup(Duration::from_secs(600));
        let parent = refresh_token(&r, Duration::from_secs(86_400));
        let (minted, _) = r
            .refresh(
                &format!("Bearer {}", parent.token.expose()),
                SystemTime::now(),
            )
            .expect("refresh");
        revoke(dir.path(), &parent.id, Some(parent.expires_at)).expect("revoke");
        assert!(r.verifier().reload_if_changed().expect("reload"));
        let resp = handle_refresh(&r, post(&format!("Bearer {}", parent.token.expose()))).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, crate::credential::UNAUTHORIZED_BODY.as_bytes());
        // Access tokens already minted from it die with it.
        assert_eq!(
            r.verifier().check(&format!("Bearer {}", minted.expose())),
            Err(CredentialError::Revoked)
        );
        let get = Request::get(REFRESH_PATH).body(()).expect("request");
        assert_eq!(
            handle_refresh(&r, get).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert!(Refresher::new(
            r.keys.clone(),
            Arc::new(Revocations::open(revocations_path(dir.path())).expect("rev")),
            ISSUER,
            Duration::from_secs(2 * 86_400)
        )
        .is_err());
    }
}
