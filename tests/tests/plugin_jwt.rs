//! The JWT credential plugin (`plugins/jwt-credential`) in the real host runtime,
//! against real Hawser credentials: tokens come from `hawser::credential` (issue,
//! rotate, revoke), and every decision is cross-checked against the host's built-in
//! `Verifier`, so the plugin and the built-in check agree.

mod plugin_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use hawser::credential::issue::{claims_for, issue_with};
use hawser::credential::revocation::{revocations_path, RevocationList};
use hawser::credential::{
    self, sign, HubKeys, IssueRequest, Issued, IssuerKeys, KeySource, KeyState, Revocations,
    Verifier, UNAUTHORIZED_BODY,
};
use hawser::plugin::testing::{self, request};
use hawser::plugin::{
    DenialKind, PluginHost, Principal, Rejection, ReloadOutcome, ReloadTrigger, Role,
};
use hawser::proxy::lifecycle;
use plugin_support::{captured_logs, logs_text, Fixture};

const ISSUER: &str = "hawser-hub";
const PLUGIN: &str = "hawser-plugin-jwt-credential";
const HOUR: Duration = Duration::from_secs(3600);

/// A hub's credential state: issuer keys and revocations in a temp dir, and the
/// host's own verifier over them.
struct Hub {
    dir: tempfile::TempDir,
    verifier: Verifier,
}

fn hub() -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    IssuerKeys::load_or_create(dir.path()).expect("issuer keys");
    let keys = HubKeys::open(IssuerKeys::manifest_path(dir.path())).expect("watch keys");
    let revocations = Revocations::open(revocations_path(dir.path())).expect("revocations");
    let verifier = Verifier::new(
        KeySource::Issuer(Arc::new(keys)),
        Arc::new(revocations),
        ISSUER,
    );
    Hub { dir, verifier }
}

impl Hub {
    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn keys(&self) -> IssuerKeys {
        IssuerKeys::load(self.state()).expect("load issuer keys")
    }

    fn issue(&self, req: &IssueRequest) -> Issued {
        credential::issue(self.state(), ISSUER, req).expect("issue")
    }

    /// A `[[stage]]` running the plugin with this hub's trust bundle (the keys that
    /// still verify, retiring ones with their `retire_after`) and `config` lines.
    fn stage(&self, instances: &str, config: &str) -> String {
        let mut keys = String::new();
        for r in self.keys().records() {
            let public = STANDARD.encode(r.public_key);
            match (r.state, r.retire_after) {
                (KeyState::Retired, _) => {}
                (_, Some(t)) => keys.push_str(&format!(
                    "\"{}\" = {{ public_key = \"{public}\", retire_after = \"{}\" }}\n",
                    r.kid,
                    rfc3339(t)
                )),
                (_, None) => keys.push_str(&format!("\"{}\" = \"{public}\"\n", r.kid)),
            }
        }
        format!(
            "[[stage]]\nname = \"jwt\"\nkind = \"credential\"\nplugin = {:?}\n\
             instances = \"{instances}\"\n\
             [stage.config]\nissuer = \"{ISSUER}\"\n{config}\n[stage.config.keys]\n{keys}",
            testing::plugin(PLUGIN).display().to_string()
        )
    }

    /// Whether the host's built-in verifier accepts `authorization` for `cluster`.
    fn host_accepts(&self, authorization: &str, cluster: &str) -> bool {
        self.verifier
            .reload_if_changed()
            .expect("reload credential files");
        self.verifier
            .check(authorization)
            .is_ok_and(|id| cluster.is_empty() || id.allows_cluster(cluster))
    }
}

fn access(user: &str, clusters: &[&str]) -> IssueRequest {
    IssueRequest {
        user: user.into(),
        groups: vec!["dev".into(), "ops".into()],
        extra: vec![
            ("scopes".into(), "read".into()),
            ("scopes".into(), "write".into()),
            ("team".into(), "blue".into()),
        ],
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        ttl: HOUR,
        uid: Some("1001".into()),
        ..IssueRequest::default()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn check(
    host: &PluginHost,
    authorization: &str,
    cluster: &str,
) -> Result<Option<Principal>, Rejection> {
    let mut req = request("/api/v1/pods", &[("authorization", authorization)]);
    req.cluster = cluster.into();
    host.chain().check_credential(&req).await
}

/// The response the proxy sends for `rejection`: status and body bytes.
async fn response(rejection: Rejection) -> (u16, String) {
    let resp = lifecycle::Denial::from(rejection).into_response();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).expect("utf-8 body"),
    )
}

/// Three access tokens of one user: one to revoke by id, one to keep, and one the
/// refresh endpoint minted from a refresh credential (`rid`) that is revoked too.
struct RevocationCase {
    revoked: Issued,
    refresh: Issued,
    /// `(what, Authorization value)`: revoked, kept, minted.
    tokens: [(&'static str, String); 3],
}

impl RevocationCase {
    fn new(hub: &Hub) -> RevocationCase {
        let req = access("alice@example.com", &["eu1"]);
        let revoked = hub.issue(&req);
        let kept = hub.issue(&req);
        let refresh = hub.issue(&IssueRequest {
            exec: true,
            ..req.clone()
        });
        let mut minted = claims_for(ISSUER, &req, SystemTime::now()).unwrap();
        minted.rid = Some(refresh.id.clone());
        let minted = sign(&minted, hub.keys().signing_key());
        let tokens = [
            ("revoked", bearer(revoked.token.expose())),
            ("kept", bearer(kept.token.expose())),
            ("minted", bearer(minted.expose())),
        ];
        RevocationCase {
            revoked,
            refresh,
            tokens,
        }
    }

    /// `hawser credential revoke` of the revoked token and of the refresh credential.
    fn revoke(&self, hub: &Hub) {
        for c in [&self.revoked, &self.refresh] {
            credential::revoke(hub.state(), &c.id, Some(c.expires_at)).unwrap();
        }
    }

    /// The revoked and the minted token get the 401; the kept one still passes.
    async fn assert_in_force(&self, host: &PluginHost) {
        assert_unauthorized("revoked jti", check(host, &self.tokens[0].1, "eu1").await).await;
        assert_unauthorized(
            "minted from a revoked refresh credential",
            check(host, &self.tokens[2].1, "eu1").await,
        )
        .await;
        assert!(check(host, &self.tokens[1].1, "eu1")
            .await
            .unwrap()
            .is_some());
    }
}

/// A refusal by the jwt stage with kube-apiserver's exact 401.
async fn assert_unauthorized(what: &str, out: Result<Option<Principal>, Rejection>) {
    assert_unauthorized_by("jwt", what, out).await
}

/// A 401 with kube-apiserver's exact body, refused by stage `by` (`"host"` when every
/// credential stage abstained).
async fn assert_unauthorized_by(by: &str, what: &str, out: Result<Option<Principal>, Rejection>) {
    let rejection = match out {
        Err(r @ Rejection::Denied { .. }) => r,
        other => panic!("{what}: expected a 401 denial, got {other:?}"),
    };
    let Rejection::Denied { stage, denial } = &rejection else {
        unreachable!()
    };
    assert_eq!(
        (stage.as_str(), denial.kind, denial.message.as_str()),
        (by, DenialKind::Unauthorized, "Unauthorized"),
        "{what}"
    );
    assert_eq!(
        response(rejection).await,
        (401, UNAUTHORIZED_BODY.to_string()),
        "{what}"
    );
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("in range");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |x: u8| k.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The three base64url parts of a token.
fn parts(token: &str) -> (String, String, String) {
    let v: Vec<&str> = token.split('.').collect();
    assert_eq!(v.len(), 3, "a JWS compact token");
    (v[0].into(), v[1].into(), v[2].into())
}

#[tokio::test]
async fn a_valid_access_token_is_the_principal_with_groups_and_extra() {
    let hub = hub();
    let fx = Fixture::new(&hub.stage("fresh", ""));
    let host = fx.host().await;
    let issued = hub.issue(&access("alice@example.com", &["eu1", "us2"]));
    let auth = bearer(issued.token.expose());

    for cluster in ["eu1", "us2", ""] {
        let who = check(&host, &auth, cluster)
            .await
            .unwrap_or_else(|r| panic!("{cluster:?}: {r}"))
            .expect("a principal");
        assert_eq!(who.user, "alice@example.com");
        assert_eq!(who.uid, "1001");
        assert_eq!(who.groups, ["dev", "ops"]);
        let extra: Vec<(&str, Vec<&str>)> = who
            .extra
            .iter()
            .map(|e| {
                (
                    e.key.as_str(),
                    e.values.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            extra,
            [("scopes", vec!["read", "write"]), ("team", vec!["blue"])]
        );
        assert!(hub.host_accepts(&auth, cluster));
    }
    let stages = host.chain().stages();
    assert_eq!(stages[0].plugin_name, PLUGIN);

    // The signature was checked once; the host remembered the pass for the other two
    // requests (each a fresh instance). A tampered signature fails every time.
    let (head, payload, sig) = parts(issued.token.expose());
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = bearer(&format!("{head}.{payload}.{flipped}{}", &sig[1..]));
    for _ in 0..2 {
        assert_unauthorized("tampered", check(&host, &tampered, "eu1").await).await;
    }
    let counts = host.runtime().signature_counts();
    assert_eq!(
        (counts.verified, counts.remembered, counts.failed),
        (1, 2, 2),
        "{counts:?}"
    );
}

#[tokio::test]
async fn every_invalid_credential_gets_kube_apiservers_exact_401() {
    captured_logs(); // installs the capturing subscriber
    let hub = hub();
    let other = self::hub(); // another issuer key
    let fx = Fixture::new(&hub.stage("reuse", ""));
    let host = fx.host().await;
    let keys = hub.keys();
    let now = SystemTime::now();
    let req = access("alice@example.com", &["eu1"]);
    let valid = hub.issue(&req).token.expose().to_string();
    let (h, p, s) = parts(&valid);
    let kid = keys.signing_key().kid().to_string();
    let header = |alg: &str| {
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#))
    };

    // Another issuer key: its token, and its signature under this hub's kid.
    let foreign = other.issue(&req).token.expose().to_string();
    let (_, fp, fs) = parts(&foreign);
    // The payload changed after signing.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p).unwrap()).unwrap();
    claims["groups"] = serde_json::json!(["dev", "system:masters"]);
    let tampered = URL_SAFE_NO_PAD.encode(claims.to_string());
    // HS256 keyed with the public key (the classic algorithm-confusion forgery).
    let hs_signed = format!("{}.{p}", header("HS256"));
    let hs_sig = hmac_sha256(&keys.signing_key().public_key(), hs_signed.as_bytes());
    let hs256 = format!("{hs_signed}.{}", URL_SAFE_NO_PAD.encode(hs_sig));
    // Claims the issuer would not mint, signed with the real key.
    let mut wrong_aud = claims_for(ISSUER, &req, now).unwrap();
    wrong_aud.aud = vec!["kubernetes".into()];
    let mut oversized = claims_for(ISSUER, &req, now).unwrap();
    oversized.groups = (0..400).map(|i| format!("group-number-{i:04}")).collect();
    let oversized = sign(&oversized, keys.signing_key());
    assert!(oversized.expose().len() > 8 * 1024);

    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            bearer(
                issue_with(&keys, ISSUER, &req, now - 2 * HOUR)
                    .unwrap()
                    .token
                    .expose(),
            ),
        ),
        (
            "not yet valid",
            bearer(
                issue_with(&keys, ISSUER, &req, now + 2 * HOUR)
                    .unwrap()
                    .token
                    .expose(),
            ),
        ),
        ("signed by another key", bearer(&format!("{h}.{fp}.{fs}"))),
        ("payload tampered", bearer(&format!("{h}.{tampered}.{s}"))),
        ("unknown kid", bearer(&foreign)),
        ("alg none", bearer(&format!("{}.{p}.", header("none")))),
        (
            "alg none, signature kept",
            bearer(&format!("{}.{p}.{s}", header("none"))),
        ),
        ("alg HS256", bearer(&hs256)),
        (
            "refresh token",
            bearer(
                hub.issue(&IssueRequest {
                    exec: true,
                    ..req.clone()
                })
                .token
                .expose(),
            ),
        ),
        (
            "wrong audience",
            bearer(sign(&wrong_aud, keys.signing_key()).expose()),
        ),
        ("larger than 8 KiB", bearer(oversized.expose())),
    ];
    // Values that are no token of this issuer: the stage abstains, so a later stage
    // may own them; alone, the host answers the same 401.
    let not_ours: Vec<(&str, String)> = vec![
        (
            "another issuer",
            bearer(
                issue_with(&keys, "another-hub", &req, now)
                    .unwrap()
                    .token
                    .expose(),
            ),
        ),
        ("two parts", bearer(&format!("{h}.{p}"))),
        ("four parts", bearer(&format!("{valid}.{s}"))),
        ("not a JWT", "Bearer s3cret".into()),
        ("no token", "Bearer".into()),
        ("basic auth", "Basic YWxpY2U6cGFzc3dvcmQ=".into()),
    ];
    for (what, auth) in &cases {
        assert!(!hub.host_accepts(auth, "eu1"), "host accepts {what}");
        assert_unauthorized(what, check(&host, auth, "eu1").await).await;
    }
    for (what, auth) in &not_ours {
        assert!(!hub.host_accepts(auth, "eu1"), "host accepts {what}");
        assert_unauthorized_by("host", what, check(&host, auth, "eu1").await).await;
    }
    // The valid token itself passes: the cases fail for what they change.
    assert!(check(&host, &bearer(&valid), "eu1")
        .await
        .unwrap()
        .is_some());

    // Refusals are logged with their reason only, never the token.
    let text = logs_text();
    for reason in [
        "credential expired",
        "credential not valid yet",
        "credential signature does not verify",
        "credential signed by an unknown or retired key",
        "credential algorithm is not EdDSA",
        "not an access credential",
        "credential not meant for hawser",
        "credential larger than 8192 bytes",
    ] {
        assert!(
            text.contains(&format!("credential refused: {reason}")),
            "no log line for {reason:?}"
        );
    }
    assert!(text.contains("credential abstained: not a token of this issuer"));
    for (what, auth) in cases.iter().chain(&not_ours) {
        for part in auth.split(['.', ' ']).filter(|x| x.len() >= 16) {
            assert!(!text.contains(part), "{what}: a token part was logged");
        }
    }
}

#[tokio::test]
async fn a_revocation_takes_effect_on_chain_reload_without_a_restart() {
    let hub = hub();
    let fx = Fixture::new(&hub.stage("reuse", ""));
    let host = fx.host().await;
    let case = RevocationCase::new(&hub);
    let tokens = case.tokens.clone();
    for (what, auth) in &tokens {
        assert!(check(&host, auth, "eu1").await.unwrap().is_some(), "{what}");
    }

    case.revoke(&hub);
    // The plugin's list is its config: nothing changes until the chain reloads.
    assert!(check(&host, &tokens[0].1, "eu1").await.unwrap().is_some());

    let ids: Vec<String> = RevocationList::load(&revocations_path(hub.state()))
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(ids.len(), 2);
    fx.write(&hub.stage("reuse", &format!("revoked = {ids:?}")));
    assert_eq!(
        host.reload(ReloadTrigger::Admin).await.unwrap(),
        ReloadOutcome::Swapped(2)
    );
    case.assert_in_force(&host).await;
    for (what, auth) in &tokens {
        assert_eq!(
            hub.host_accepts(auth, "eu1"),
            *what == "kept",
            "host and plugin disagree on {what}"
        );
    }

    // A broken list is refused on reload and the revocations in force stay.
    fx.write(&hub.stage("reuse", r#"revoked = ["not-a-credential-id"]"#));
    let err = host.reload(ReloadTrigger::Admin).await.unwrap_err();
    assert!(err.to_string().contains("revoked[0]"), "{err}");
    assert_eq!(host.chain().generation(), 2);
    assert_unauthorized("still revoked", check(&host, &tokens[0].1, "eu1").await).await;
}

#[tokio::test]
async fn a_valid_token_for_a_cluster_it_does_not_allow_is_forbidden() {
    let hub = hub();
    let token = hub.issue(&access("alice@example.com", &["eu1"]));
    let auth = bearer(token.token.expose());

    // Hub: no `cluster` in the config; the request's target cluster is checked.
    let fx = Fixture::new(&hub.stage("fresh", ""));
    let host = fx.host().await;
    assert!(check(&host, &auth, "eu1").await.unwrap().is_some());
    let r = check(&host, &auth, "us2").await.unwrap_err();
    assert!(!hub.host_accepts(&auth, "us2"));
    match &r {
        Rejection::Denied { stage, denial } => {
            assert_eq!(
                (stage.as_str(), denial.kind),
                ("jwt", DenialKind::Forbidden)
            );
        }
        other => panic!("{other:?}"),
    }
    let (status, body) = response(r).await;
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["reason"].as_str(), body["code"].as_u64()),
        (Some("Forbidden"), Some(403))
    );
    assert_eq!(
        body["message"].as_str(),
        Some(
            "clusters \"us2\" is forbidden: User \"alice@example.com\" cannot access cluster \
             \"us2\": the credential does not allow this cluster"
        )
    );
    // An invalid token is still a plain 401, whatever cluster it asks for.
    let expired = issue_with(
        &hub.keys(),
        ISSUER,
        &access("alice@example.com", &["eu1"]),
        SystemTime::now() - 2 * HOUR,
    )
    .unwrap();
    assert_unauthorized(
        "expired, other cluster",
        check(&host, &bearer(expired.token.expose()), "us2").await,
    )
    .await;

    // Agent: its own cluster name in the config.
    for (cluster, allowed) in [("eu1", true), ("us2", false)] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugins-agent.toml");
        let text = format!(
            "{}\n{}",
            plugin_support::header().replace("role = \"hub\"", "role = \"agent\""),
            hub.stage("fresh", &format!("cluster = \"{cluster}\""))
        );
        std::fs::write(&file, text).unwrap();
        let agent = PluginHost::load(&file, Role::Agent)
            .await
            .unwrap_or_else(|e| panic!("agent chain: {e}"));
        let mut req = request("/api/v1/pods", &[("authorization", &auth)]);
        req.role = Role::Agent;
        req.cluster = cluster.into();
        let out = agent.chain().check_credential(&req).await;
        if allowed {
            assert_eq!(out.unwrap().unwrap().user, "alice@example.com");
        } else {
            assert_eq!(out.unwrap_err().http_status(), 403, "agent of {cluster}");
        }
    }
}

#[tokio::test]
async fn no_credential_header_abstains_for_the_next_stage() {
    let hub = hub();
    let token = hub.issue(&access("alice@example.com", &["eu1"]));
    let auth = bearer(token.token.expose());

    // Alone: the host answers 401 when every stage abstains.
    let fx = Fixture::new(&hub.stage("fresh", ""));
    let host = fx.host().await;
    let none = host
        .chain()
        .check_credential(&request("/api/v1/pods", &[]))
        .await
        .unwrap_err();
    match &none {
        Rejection::Denied { stage, denial } => assert_eq!(
            (stage.as_str(), denial.kind, denial.message.as_str()),
            ("host", DenialKind::Unauthorized, "Unauthorized")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(response(none).await, (401, UNAUTHORIZED_BODY.to_string()));

    // Followed by a static-token stage on another header: that one decides.
    let chain = format!(
        "{}\n[[stage]]\nname = \"static\"\nkind = \"credential\"\nplugin = \"{{tokens}}\"\n\
         [stage.config]\nheader = \"x-static-token\"\n\
         [stage.config.tokens.s3cret]\nuser = \"robot\"\n",
        hub.stage("fresh", "")
    );
    let fx = Fixture::new(&chain);
    let host = fx.host().await;
    let with = |headers: &[(&str, &str)]| request("/api/v1/pods", headers);
    let robot = host
        .chain()
        .check_credential(&with(&[("x-static-token", "s3cret")]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(robot.user, "robot");
    // A JWT is decided by the JWT stage, first in the chain.
    let alice = host
        .chain()
        .check_credential(&with(&[
            ("authorization", &auth),
            ("x-static-token", "s3cret"),
        ]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.user, "alice@example.com");
    // A presented but invalid JWT of this issuer is refused, not passed on.
    let (h, p, _) = parts(token.token.expose());
    let forged = bearer(&format!("{h}.{p}.{}", foreign_signature()));
    assert_unauthorized(
        "invalid JWT with a static token",
        host.chain()
            .check_credential(&with(&[
                ("authorization", &forged),
                ("x-static-token", "s3cret"),
            ]))
            .await,
    )
    .await;
    // A bearer that is no JWT is not the JWT stage's: the static stage decides.
    let robot = host
        .chain()
        .check_credential(&with(&[
            ("authorization", "Bearer not-a-jwt"),
            ("x-static-token", "s3cret"),
        ]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(robot.user, "robot");
}

/// The signature part of a token from another issuer key: it does not verify under
/// any other hub's key.
fn foreign_signature() -> String {
    let issued = hub().issue(&access("alice@example.com", &["eu1"]));
    parts(issued.token.expose()).2
}

#[tokio::test]
async fn hub_tokens_and_static_tokens_share_the_authorization_header_in_either_order() {
    let hub = hub();
    let alice = bearer(
        hub.issue(&access("alice@example.com", &["eu1"]))
            .token
            .expose(),
    );
    let (h, p, _) = parts(&alice["Bearer ".len()..]);
    let forged = bearer(&format!("{h}.{p}.{}", foreign_signature()));
    let static_stage = "[[stage]]\nname = \"static\"\nkind = \"credential\"\n\
                        plugin = \"{tokens}\"\ninstances = \"reuse\"\n\
                        [stage.config.tokens.ci-s3cret]\nuser = \"ci-bot\"\n";
    let jwt_stage = hub.stage("reuse", "");
    for (order, chain) in [
        ("jwt first", format!("{jwt_stage}\n{static_stage}")),
        ("static first", format!("{static_stage}\n{jwt_stage}")),
    ] {
        let fx = Fixture::new(&chain);
        let host = fx.host().await;
        let user = |auth: &str| {
            let host = &host;
            let auth = auth.to_string();
            async move { check(host, &auth, "eu1").await }
        };
        assert_eq!(
            user(&alice).await.unwrap().unwrap().user,
            "alice@example.com",
            "{order}"
        );
        assert_eq!(
            user("Bearer ci-s3cret").await.unwrap().unwrap().user,
            "ci-bot",
            "{order}"
        );
        // Neither stage owns it: the host's 401.
        assert_unauthorized_by("host", order, user("Bearer unknown").await).await;
        // A hub token that does not verify is refused by the JWT stage, whichever
        // stage runs first: the static stage does not know it and abstains.
        assert_unauthorized(order, user(&forged).await).await;
    }
}

#[tokio::test]
async fn rotated_keys_verify_until_retire_after() {
    // Rotation with an overlap: tokens from the old key and the new both verify.
    let hub = hub();
    let req = access("alice@example.com", &["eu1"]);
    let old = bearer(hub.issue(&req).token.expose());
    hub.keys().rotate(HOUR).unwrap();
    let new = bearer(hub.issue(&req).token.expose());
    let fx = Fixture::new(&hub.stage("fresh", ""));
    let text = std::fs::read_to_string(&fx.file).unwrap();
    assert!(text.contains("retire_after"), "{text}");
    let host = fx.host().await;
    for (what, auth) in [("old key", &old), ("new key", &new)] {
        assert!(check(&host, auth, "eu1").await.unwrap().is_some(), "{what}");
        assert!(hub.host_accepts(auth, "eu1"), "{what}");
    }

    // A retiring key past its retire_after verifies nothing, even if still listed.
    let hub = self::hub();
    let old = bearer(hub.issue(&req).token.expose());
    hub.keys()
        .rotate_at(Duration::ZERO, SystemTime::now() - HOUR)
        .unwrap();
    let new = bearer(hub.issue(&req).token.expose());
    let fx = Fixture::new(&hub.stage("fresh", ""));
    let host = fx.host().await;
    assert!(!hub.host_accepts(&old, "eu1"));
    assert_unauthorized("retired key", check(&host, &old, "eu1").await).await;
    assert!(check(&host, &new, "eu1").await.unwrap().is_some());
}

/// `[stage.grants]` giving the plugin `dir` read-only as `/revocations`.
fn revocations_grant(dir: &Path) -> String {
    format!(
        "\n[stage.grants]\nread_dirs = {{ {:?} = \"/revocations\" }}\n",
        dir.display().to_string()
    )
}

#[tokio::test]
async fn a_revocation_file_takes_effect_within_its_interval_without_a_reload() {
    let hub = hub();
    // The operator's synced copy of the hub's list, in a directory of its own (never
    // the state dir: it holds the issuer's private keys).
    let synced = tempfile::tempdir().unwrap();
    let file = synced.path().join("revoked.toml");
    credential::revocation::export(hub.state(), &file).unwrap();
    let interval = Duration::from_millis(300);
    let config = format!(
        "revocations_file = \"/revocations/revoked.toml\"\nrevocations_check_interval = \"{}ms\"",
        interval.as_millis()
    );
    let fx = Fixture::new(&format!(
        "{}{}",
        hub.stage("reuse", &config),
        revocations_grant(synced.path())
    ));
    let host = fx.host().await;
    let generation = host.chain().generation();
    let case = RevocationCase::new(&hub);
    let tokens = case.tokens.clone();
    // Several calls, so more than one pooled instance has read the file.
    for _ in 0..4 {
        for (what, auth) in &tokens {
            assert!(check(&host, auth, "eu1").await.unwrap().is_some(), "{what}");
        }
    }

    // `hawser credential revoke`, then the sync to the granted directory.
    case.revoke(&hub);
    credential::revocation::export(hub.state(), &file).unwrap();
    let written = std::time::Instant::now();
    let refused = hawser_tests::harness::eventually(Duration::from_secs(10), || async {
        check(&host, &tokens[0].1, "eu1")
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "revocation file not picked up");
    let took = written.elapsed();
    // Within the interval, plus scheduling slack on a shared machine.
    assert!(took < interval + Duration::from_secs(2), "took {took:?}");
    // Every instance now refuses both, after at most one more interval.
    tokio::time::sleep(interval).await;
    for _ in 0..4 {
        case.assert_in_force(&host).await;
    }
    assert_eq!(
        host.chain().generation(),
        generation,
        "the chain was reloaded"
    );
    for (what, auth) in &tokens {
        assert_eq!(
            hub.host_accepts(auth, "eu1"),
            *what == "kept",
            "host and plugin disagree on {what}"
        );
    }

    // A fresh instance per call reads the file at init.
    let fresh = Fixture::new(&format!(
        "{}{}",
        hub.stage("fresh", &config),
        revocations_grant(synced.path())
    ));
    let fresh = fresh.host().await;
    assert_unauthorized("fresh: revoked", check(&fresh, &tokens[0].1, "eu1").await).await;
    assert!(check(&fresh, &tokens[1].1, "eu1").await.unwrap().is_some());

    // The file disappears: fail closed, everyone refused (the default).
    std::fs::remove_file(&file).unwrap();
    let closed = hawser_tests::harness::eventually(Duration::from_secs(10), || async {
        check(&host, &tokens[1].1, "eu1")
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "a missing revocation file was not fail-closed"
    );
}
