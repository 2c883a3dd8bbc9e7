use super::*;
use crate::credential::issue::{issue_with, IssueRequest};
use crate::credential::keys::IssuerKeys;
use crate::credential::revocation::{revocations_path, revoke};
use crate::credential::testing::{claims, ISSUER};
use crate::credential::token::sign;
use http_body_util::BodyExt;

struct Hub {
    dir: tempfile::TempDir,
    keys: Arc<HubKeys>,
    verifier: Verifier,
}

fn hub() -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    IssuerKeys::load_or_create(dir.path()).expect("keys");
    let keys = Arc::new(HubKeys::open(IssuerKeys::manifest_path(dir.path())).expect("watch keys"));
    let revocations =
        Arc::new(Revocations::open(revocations_path(dir.path())).expect("watch revocations"));
    let verifier = Verifier::new(KeySource::Issuer(keys.clone()), revocations, ISSUER);
    Hub {
        dir,
        keys,
        verifier,
    }
}

fn request(exec: bool) -> IssueRequest {
    IssueRequest {
        user: "alice".into(),
        groups: vec!["dev".into()],
        clusters: vec!["eu1".into()],
        ttl: Duration::from_secs(if exec { 86_400 } else { 3600 }),
        exec,
        ..IssueRequest::default()
    }
}

fn bearer_of(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn access_token_yields_the_identity_and_its_clusters() {
    let hub = hub();
    let issued =
        issue_with(&hub.keys.get(), ISSUER, &request(false), SystemTime::now()).expect("issue");
    let id = hub
        .verifier
        .check(&bearer_of(issued.token.expose()))
        .expect("check");
    assert_eq!(
        (id.user.as_str(), id.groups.as_slice(), id.id.as_str()),
        ("alice", ["dev".to_string()].as_slice(), issued.id.as_str())
    );
    assert!(id.allows_cluster("eu1"));
    assert!(!id.allows_cluster("us2"));
    assert!(!id.allows_cluster(""));
    let no_clusters = Identity {
        clusters: vec![],
        ..id
    };
    assert!(!no_clusters.allows_cluster("eu1"));
}

#[test]
fn refresh_tokens_are_not_access_tokens() {
    let hub = hub();
    let refresh =
        issue_with(&hub.keys.get(), ISSUER, &request(true), SystemTime::now()).expect("issue");
    assert_eq!(
        hub.verifier.check(&bearer_of(refresh.token.expose())),
        Err(CredentialError::WrongUse {
            expected: TokenUse::Access,
            found: TokenUse::Refresh
        })
    );
    let access =
        issue_with(&hub.keys.get(), ISSUER, &request(false), SystemTime::now()).expect("issue");
    assert!(matches!(
        hub.verifier
            .verify_token(access.token.expose(), TokenUse::Refresh, SystemTime::now()),
        Err(CredentialError::WrongUse { .. })
    ));
}

#[test]
fn revoking_the_credential_or_its_refresh_parent_takes_effect_after_reload() {
    let hub = hub();
    let now = SystemTime::now();
    let key = hub.keys.get();
    let issued = issue_with(&key, ISSUER, &request(false), now).expect("issue");
    let mut minted = claims(now, TokenUse::Access);
    let parent = uuid::Uuid::new_v4().to_string();
    minted.rid = Some(parent.clone());
    let minted = sign(&minted, key.signing_key());
    assert!(hub
        .verifier
        .check(&bearer_of(issued.token.expose()))
        .is_ok());
    assert!(hub.verifier.check(&bearer_of(minted.expose())).is_ok());

    revoke(hub.dir.path(), &issued.id, Some(issued.expires_at)).expect("revoke");
    revoke(hub.dir.path(), &parent, None).expect("revoke parent");
    assert!(hub
        .verifier
        .revocations
        .reload_if_changed()
        .expect("reload"));
    assert_eq!(
        hub.verifier.check(&bearer_of(issued.token.expose())),
        Err(CredentialError::Revoked)
    );
    assert_eq!(
        hub.verifier.check(&bearer_of(minted.expose())),
        Err(CredentialError::Revoked)
    );
}

#[test]
fn a_rotation_reaches_the_running_verifier() {
    let hub = hub();
    let mut keys = IssuerKeys::load(hub.dir.path()).expect("keys");
    keys.rotate(Duration::from_secs(3600)).expect("rotate");
    let new = issue_with(&keys, ISSUER, &request(false), SystemTime::now()).expect("issue");
    assert!(matches!(
        hub.verifier.check(&bearer_of(new.token.expose())),
        Err(CredentialError::UnknownKey { .. })
    ));
    assert!(hub.verifier.keys().reload_if_changed().expect("reload"));
    assert!(hub.verifier.check(&bearer_of(new.token.expose())).is_ok());
}

#[test]
fn the_agent_verifies_with_the_public_bundle_only() {
    let hub = hub();
    let keys = hub.keys.get();
    let bundle_path = hub.dir.path().join("agent-trust.toml");
    keys.export_public(&bundle_path).expect("export");
    let bundle = Arc::new(TrustBundle::open(&bundle_path).expect("bundle"));
    let revocations = Arc::new(
        Revocations::open(hub.dir.path().join("agent-revoked.toml")).expect("revocations"),
    );
    let agent = Verifier::new(KeySource::Bundle(bundle), revocations, ISSUER);
    let issued = issue_with(&keys, ISSUER, &request(false), SystemTime::now()).expect("issue");
    assert_eq!(
        agent
            .check(&bearer_of(issued.token.expose()))
            .map(|i| i.user),
        Ok("alice".to_string())
    );
}

#[test]
fn bearer_parsing_is_strict() {
    let hub = hub();
    let issued =
        issue_with(&hub.keys.get(), ISSUER, &request(false), SystemTime::now()).expect("issue");
    let t = issued.token.expose();
    assert!(hub.verifier.check(&format!("bearer  {t}")).is_ok());
    for bad in [
        t.to_string(),
        format!("Basic {t}"),
        "Bearer ".into(),
        format!("Bearer {t} extra"),
        String::new(),
    ] {
        assert!(
            matches!(hub.verifier.check(&bad), Err(CredentialError::Malformed(_))),
            "{bad:.20}"
        );
    }
    let mut headers = HeaderMap::new();
    assert_eq!(
        hub.verifier.check_headers(&headers),
        Err(CredentialError::Missing)
    );
    headers.append(
        header::AUTHORIZATION,
        HeaderValue::from_str(&bearer_of(t)).expect("value"),
    );
    assert!(hub.verifier.check_headers(&headers).is_ok());
    headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    assert_eq!(
        hub.verifier.check_headers(&headers),
        Err(CredentialError::Missing)
    );
}

#[tokio::test]
async fn unauthorized_is_kube_apiservers_exact_401() {
    assert_eq!(UNAUTHORIZED_BODY.len(), 129);
    assert_eq!(
        format!("{}\n", unauthorized_status().to_json()),
        UNAUTHORIZED_BODY
    );
    let resp = unauthorized();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, UNAUTHORIZED_BODY.as_bytes());
}
