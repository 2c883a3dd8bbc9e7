//! The kubectl exec plugin against the hub's refresh endpoint, over real HTTPS:
//! `exec_command` (what `hawser credential exec` prints) talks to
//! `handle_refresh` behind a small TLS server on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hawser::credential::settings::HubCredentialSettings;
use hawser::credential::{
    exec_command, handle_refresh, issue, revoke, sign, Claims, ExecArgs, ExecError, IssueRequest,
    IssuerKeys, Refresher, TokenUse, REFRESH_PATH,
};
use hawser::pki::{HubCa, Validity};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ISSUER: &str = "hawser-hub";

/// A hub state directory, its refresher, and the refresh endpoint serving it.
struct Hub {
    dir: tempfile::TempDir,
    refresher: Arc<Refresher>,
    url: String,
    ca_file: PathBuf,
}

async fn start_hub() -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = HubCa::load_or_create(dir.path()).expect("hub CA");
    let serving = ca
        .issue_server(&["127.0.0.1".to_string()], Validity::days_from_now(1))
        .expect("server cert");
    let tls =
        hawser::tls::front_server(&serving.cert_pem, serving.key_pem.expose()).expect("TLS config");
    let ca_file = dir.path().join("ca.crt");
    let settings = HubCredentialSettings {
        refreshed_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let refresher = Arc::new(settings.open(dir.path()).expect("credential setup"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        refresher.clone(),
    ));
    Hub {
        url: format!("https://{addr}"),
        dir,
        refresher,
        ca_file,
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, refresher: Arc<Refresher>) {
    while let Ok((stream, _)) = listener.accept().await {
        let (acceptor, refresher) = (acceptor.clone(), refresher.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let refresher = refresher.clone();
                    async move {
                        let resp = if req.uri().path() == REFRESH_PATH {
                            handle_refresh(&refresher, req).await
                        } else {
                            hawser::proxy::status::Status::path_not_found(req.uri().path())
                                .into_response()
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

impl Hub {
    fn issue(&self, exec: bool) -> hawser::credential::Issued {
        let req = IssueRequest {
            user: "alice".into(),
            groups: vec!["dev".into()],
            extra: vec![("acme.com/team".into(), "blue".into())],
            clusters: vec!["eu1".into()],
            ttl: Duration::from_secs(if exec { 7 * 86_400 } else { 3600 }),
            exec,
            ..IssueRequest::default()
        };
        issue(self.dir.path(), ISSUER, &req).expect("issue")
    }

    /// `exec_command` with `token` in the refresh file.
    async fn exec(&self, token: &str) -> Result<String, ExecError> {
        std::fs::write(
            &self.ca_file,
            HubCa::load(self.dir.path()).expect("CA").cert_pem(),
        )
        .expect("write CA");
        exec_command(&self.args(token, &self.ca_file)).await
    }

    fn args(&self, token: &str, ca_file: &Path) -> ExecArgs {
        let refresh_file = self.dir.path().join("refresh-token");
        std::fs::write(&refresh_file, format!("{token}\n")).expect("write refresh file");
        ExecArgs {
            hub: self.url.clone(),
            ca_file: ca_file.to_path_buf(),
            refresh_file,
            exec_info: Some(r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#.into()),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn exec_plugin_prints_an_access_token_for_the_refresh_credentials_identity() {
    let hub = start_hub().await;
    let refresh = hub.issue(true);
    let out = hub
        .exec(refresh.token.expose())
        .await
        .expect("exec succeeds");
    let v: serde_json::Value = serde_json::from_str(&out).expect("ExecCredential JSON");
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    let expiry = v["status"]["expirationTimestamp"]
        .as_str()
        .expect("expirationTimestamp");
    assert!(
        expiry.len() == 20 && expiry.ends_with('Z'),
        "RFC 3339 UTC: {expiry}"
    );

    let token = v["status"]["token"].as_str().expect("token");
    let id = hub
        .refresher
        .verifier()
        .check(&format!("Bearer {token}"))
        .expect("the hub accepts the access token");
    assert_eq!(id.user, "alice");
    assert_eq!(id.groups, ["dev"]);
    assert_eq!(
        id.extra,
        BTreeMap::from([("acme.com/team".to_string(), vec!["blue".to_string()])])
    );
    assert!(id.allows_cluster("eu1") && !id.allows_cluster("us2"));
    assert_eq!(id.session.as_deref(), Some(refresh.id.as_str()));
    // The configured 10-minute lifetime, not the refresh credential's week.
    assert!(
        id.expires_at > SystemTime::now()
            && id.expires_at <= SystemTime::now() + Duration::from_secs(601)
    );
    // The refresh credential itself is no access token.
    assert!(hub
        .refresher
        .verifier()
        .check(&format!("Bearer {}", refresh.token.expose()))
        .is_err());
}

#[tokio::test]
async fn an_expired_refresh_credential_is_an_error() {
    let hub = start_hub().await;
    let keys = IssuerKeys::load(hub.dir.path()).expect("keys");
    let now = unix_now();
    let expired = Claims {
        iss: ISSUER.into(),
        sub: "alice".into(),
        aud: vec!["hawser".into()],
        exp: now - 3600,
        nbf: now - 7200,
        iat: now - 7200,
        jti: uuid::Uuid::new_v4().to_string(),
        token_use: TokenUse::Refresh,
        groups: vec![],
        extra: BTreeMap::new(),
        clusters: vec!["eu1".into()],
        uid: None,
        rid: None,
    };
    let token = sign(&expired, keys.signing_key());
    let err = hub
        .exec(token.expose())
        .await
        .expect_err("expired refresh credential refused");
    assert!(matches!(err, ExecError::Unauthorized), "{err}");
    assert!(!err.to_string().contains(token.expose()));
}

#[tokio::test]
async fn revoked_refresh_credentials_and_access_tokens_are_refused() {
    let hub = start_hub().await;
    let access = hub.issue(false);
    assert!(matches!(
        hub.exec(access.token.expose()).await,
        Err(ExecError::Unauthorized)
    ));

    let refresh = hub.issue(true);
    assert!(hub.exec(refresh.token.expose()).await.is_ok());
    revoke(hub.dir.path(), &refresh.id, Some(refresh.expires_at)).expect("revoke");
    // What the hub's watcher does on its next tick.
    hub.refresher
        .verifier()
        .reload_if_changed()
        .expect("reload");
    assert!(matches!(
        hub.exec(refresh.token.expose()).await,
        Err(ExecError::Unauthorized)
    ));
}

#[tokio::test]
async fn the_plugin_trusts_only_the_given_ca() {
    let hub = start_hub().await;
    let refresh = hub.issue(true);
    let other = tempfile::tempdir().expect("tempdir");
    let other_ca = HubCa::load_or_create(other.path()).expect("another CA");
    let other_ca_file = other.path().join("ca.crt");
    std::fs::write(&other_ca_file, other_ca.cert_pem()).expect("write CA");
    let err = exec_command(&hub.args(refresh.token.expose(), &other_ca_file))
        .await
        .expect_err("untrusted hub");
    assert!(matches!(err, ExecError::Unreachable(_)), "{err}");
}
