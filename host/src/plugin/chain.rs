//! A [`Chain`]: the ordered stages of one role, one immutable version. The proxy takes
//! one `Arc<Chain>` per request (`PluginHost::chain`) and runs every phase on it, so a
//! request is served by exactly one chain version even while a reload swaps in another.
//!
//! Phases, in request order (each mirrors one WIT interface):
//! 1. [`Chain::check_credential`] — `credential.check`
//! 2. [`Chain::impersonate`] — `impersonation.apply`
//! 3. [`Chain::route`] — `routing.route`
//! 4. [`Chain::audit`] — `audit.decide`
//!
//! Within a phase, stages run in file order. A fail-closed stage that fails rejects the
//! request; a fail-open stage that fails is skipped (logged and counted).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cache::Digest;
use super::error::{FailureKind, Rejection};
use super::header_filter;
use super::instance::{Call, Reply};
use super::stage::Stage;
use super::types::{
    AuditDecision, AuditEvent, Candidate, Denial, DenialKind, Principal, RequestHead, Role,
    RouteChoice, StageKind,
};
use super::validate;

/// One version of a role's stages. Cheap to share; never changes once built.
pub struct Chain {
    pub(crate) generation: u64,
    pub(crate) role: Role,
    pub(crate) file: PathBuf,
    pub(crate) fingerprint: Digest,
    pub(crate) stages: Vec<Arc<Stage>>,
    credential: Vec<Arc<Stage>>,
    impersonation: Vec<Arc<Stage>>,
    routing: Vec<Arc<Stage>>,
    audit: Vec<Arc<Stage>>,
    /// Union of the stages' declared request headers; `None` when one reads them all.
    request_headers: Option<Vec<String>>,
    /// Union of the stages' declared credential headers.
    credential_headers: Vec<String>,
}

/// A description of one stage of a chain, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StageInfo {
    /// Stage name.
    pub name: String,
    /// Phase.
    pub kind: &'static str,
    /// Plugin as `file@digest`.
    pub plugin: String,
    /// Name the plugin reported from `init`.
    pub plugin_name: String,
    /// Version the plugin reported from `init`.
    pub plugin_version: String,
    /// Whether the plugin version is quarantined right now.
    pub quarantined: bool,
    /// The request headers the plugin declared it reads (`None`: every header).
    pub request_headers: Option<Vec<String>>,
    /// The request headers the plugin declared carry a credential.
    pub credential_headers: Vec<String>,
    /// Instances ready for the next requests: pre-warmed (fresh) or idle (reuse).
    pub ready_instances: usize,
    /// The interfaces the plugin's component imports (`hawser:plugin/host@0.2.0`,
    /// `wasi:filesystem/types@0.2.6`, ...): what it could reach if granted, and what
    /// each fresh instance links (a `no_std` plugin imports little or nothing).
    pub imports: Vec<String>,
    /// Whether calls run inline on the request's task rather than on a fiber: true
    /// for a plugin without WASI imports whose `timeout_ms` is at most
    /// `runtime.inline_max_ms` (default 50).
    pub inline: bool,
}

type Checked<T> = Result<T, (FailureKind, String)>;

impl Chain {
    pub(crate) fn new(
        generation: u64,
        role: Role,
        file: PathBuf,
        fingerprint: Digest,
        stages: Vec<Arc<Stage>>,
    ) -> Chain {
        let of = |k: StageKind| stages.iter().filter(|s| s.kind() == k).cloned().collect();
        let request_headers = stages
            .iter()
            .map(|s| s.headers.as_ref().map(|f| f.names()))
            .collect::<Option<Vec<_>>>()
            .map(|sets| {
                let mut all = sets.concat();
                all.sort();
                all.dedup();
                all
            });
        let mut credential_headers: Vec<String> = stages
            .iter()
            .flat_map(|s| s.credential_headers.iter().cloned())
            .collect();
        credential_headers.sort();
        credential_headers.dedup();
        Chain {
            request_headers,
            credential_headers,
            generation,
            role,
            file,
            fingerprint,
            credential: of(StageKind::Credential),
            impersonation: of(StageKind::Impersonation),
            routing: of(StageKind::Routing),
            audit: of(StageKind::Audit),
            stages,
        }
    }

    /// Increases by one with every chain a host installs (the first is 1).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The role this chain serves.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The TOML file this chain was built from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The stages, in file order.
    pub fn stages(&self) -> Vec<StageInfo> {
        self.stages
            .iter()
            .map(|s| StageInfo {
                name: s.name().to_owned(),
                kind: s.kind().as_str(),
                plugin: s.label.clone(),
                plugin_name: s.info.name.clone(),
                plugin_version: s.info.version.clone(),
                quarantined: s.is_quarantined(),
                request_headers: s.headers.as_ref().map(|f| f.names().to_vec()),
                credential_headers: s.credential_headers.clone(),
                ready_instances: s.ready_instances(),
                imports: s.imports().to_vec(),
                inline: s.calls_inline(),
            })
            .collect()
    }

    /// The request headers some stage reads (the union of what the plugins declared),
    /// or `None` when a stage reads every header. The proxy copies only these into the
    /// [`RequestHead`] it builds for a request.
    pub fn request_headers(&self) -> Option<&[String]> {
        self.request_headers.as_deref()
    }

    /// The request headers some stage declared carry a credential. Like
    /// `authorization`, they are masked in audit events and never sent to the API server.
    pub fn credential_headers(&self) -> &[String] {
        &self.credential_headers
    }

    /// Whether any stage serves `kind`.
    pub fn has(&self, kind: StageKind) -> bool {
        !self.phase(kind).is_empty()
    }

    fn phase(&self, kind: StageKind) -> &[Arc<Stage>] {
        match kind {
            StageKind::Credential => &self.credential,
            StageKind::Impersonation => &self.impersonation,
            StageKind::Routing => &self.routing,
            StageKind::Audit => &self.audit,
        }
    }

    /// Phase 1: who is calling.
    ///
    /// - `Ok(Some(principal))`: the first credential stage that recognised the request.
    /// - `Ok(None)`: the chain has no credential stage (the proxy decides by other means).
    /// - `Err(Denied)`: a stage refused the credential, or every stage abstained (401 from
    ///   stage `"host"`).
    /// - `Err(Failed)`: a fail-closed stage failed (500/503).
    pub async fn check_credential(
        &self,
        req: &RequestHead,
    ) -> Result<Option<Principal>, Rejection> {
        if self.credential.is_empty() {
            return Ok(None);
        }
        for stage in &self.credential {
            let req = header_filter::request(stage.headers.as_ref(), req);
            let out = run(stage, Call::Credential(&req), |r| match r {
                Reply::Credential(Ok(Some(p))) => {
                    validate::principal(&p).map_err(illegal)?;
                    Ok(Ok(Some(p)))
                }
                Reply::Credential(Ok(None)) => Ok(Ok(None)),
                Reply::Credential(Err(d)) => checked_denial(d),
                _ => Err(mismatch()),
            })
            .await?;
            match out {
                Some(Ok(Some(p))) => return Ok(Some(p)),
                Some(Ok(None)) | None => {}
                Some(Err(denial)) => return Err(denied(stage, denial)),
            }
        }
        Err(Rejection::Denied {
            stage: "host".into(),
            denial: Denial::new(
                DenialKind::Unauthorized,
                // kube-apiserver's exact 401 message: the client learns nothing more.
                "Unauthorized",
            ),
        })
    }

    /// Phase 2: whom the upstream should act as.
    ///
    /// Each impersonation stage sees the identity so far (`who`, or the previous stage's
    /// result). `Ok(Some(identity))` is the identity to send as `Impersonate-*` headers;
    /// `Ok(None)` means no stage mapped it and `who` is sent as is. Either way the
    /// identity sent is within the policy of every impersonation stage, including those
    /// that abstained or failed open, and never in `system:masters`
    /// ([`validate::ALWAYS_DENIED_GROUPS`]), also when the chain has no impersonation
    /// stage (the denial then names the stage `"host"`).
    pub async fn impersonate(
        &self,
        who: &Principal,
        req: &RequestHead,
    ) -> Result<Option<Principal>, Rejection> {
        let mut current: Option<Principal> = None;
        for stage in &self.impersonation {
            let input = current.as_ref().unwrap_or(who);
            let req = header_filter::request(stage.headers.as_ref(), req);
            let out = run(stage, Call::Impersonation(input, &req), |r| match r {
                Reply::Impersonation(Ok(Some(p))) => {
                    validate::impersonation(&p, &stage.spec.policy).map_err(illegal)?;
                    Ok(Ok(Some(p)))
                }
                Reply::Impersonation(Ok(None)) => Ok(Ok(None)),
                Reply::Impersonation(Err(d)) => checked_denial(d),
                _ => Err(mismatch()),
            })
            .await?;
            match out {
                Some(Ok(Some(p))) => current = Some(p),
                Some(Ok(None)) | None => {}
                Some(Err(denial)) => return Err(denied(stage, denial)),
            }
        }
        let sent = current.as_ref().unwrap_or(who);
        for stage in &self.impersonation {
            if let Err(reason) = validate::within_policy(sent, &stage.spec.policy) {
                return Err(denied(stage, Denial::new(DenialKind::Forbidden, reason)));
            }
        }
        // Each stage policy includes the host's floor. With no impersonation stage no
        // stage policy bounds the caller's identity as the credential stage found it;
        // the floor still does.
        if let Err(reason) = validate::within_floor(sent) {
            return Err(Rejection::Denied {
                stage: "host".into(),
                denial: Denial::new(DenialKind::Forbidden, reason),
            });
        }
        Ok(current)
    }

    /// Phase 3: where the request goes.
    ///
    /// `candidates` are the configured targets with the host's view of their locality
    /// and health. `Ok(Some(choice))` is the first stage's choice, guaranteed to name one
    /// of `candidates` and to set only allowed headers; `Ok(None)` means no stage chose
    /// (the proxy applies its default).
    pub async fn route(
        &self,
        req: &RequestHead,
        who: Option<&Principal>,
        candidates: &[Candidate],
    ) -> Result<Option<RouteChoice>, Rejection> {
        for stage in &self.routing {
            let req = header_filter::request(stage.headers.as_ref(), req);
            let out = run(stage, Call::Routing(&req, who, candidates), |r| match r {
                Reply::Routing(Ok(Some(c))) => {
                    validate::route_choice(
                        &c,
                        candidates,
                        &stage.spec.policy,
                        &self.credential_headers,
                    )
                    .map_err(illegal)?;
                    Ok(Ok(Some(c)))
                }
                Reply::Routing(Ok(None)) => Ok(Ok(None)),
                Reply::Routing(Err(d)) => checked_denial(d),
                _ => Err(mismatch()),
            })
            .await?;
            match out {
                Some(Ok(Some(c))) => return Ok(Some(c)),
                Some(Ok(None)) | None => {}
                Some(Err(denial)) => return Err(denied(stage, denial)),
            }
        }
        Ok(None)
    }

    /// Phase 4: whether and how to record `event`.
    ///
    /// `Ok(Some(event))` is the event to record, with every requested redaction applied
    /// by the host; `Ok(None)` means a stage dropped it. A failing fail-open stage (the
    /// usual setting for audit) keeps the event unchanged.
    pub async fn audit(&self, mut event: AuditEvent) -> Result<Option<AuditEvent>, Rejection> {
        for stage in &self.audit {
            let seen = header_filter::event(stage.headers.as_ref(), &event);
            let out = run(stage, Call::Audit(&seen), |r| match r {
                Reply::Audit(Ok(d)) => {
                    if let AuditDecision::Redact(r) = &d {
                        validate::redaction(r).map_err(illegal)?;
                    }
                    Ok(d)
                }
                Reply::Audit(Err(e)) => Err((
                    FailureKind::Error,
                    format!("plugin error: {}", e.chars().take(256).collect::<String>()),
                )),
                _ => Err(mismatch()),
            })
            .await?;
            match out {
                Some(AuditDecision::Keep) | None => {}
                Some(AuditDecision::Redact(r)) => validate::apply_redaction(&mut event, &r),
                Some(AuditDecision::Drop) => return Ok(None),
            }
        }
        Ok(Some(event))
    }
}

/// Invokes `stage`; `Ok(None)` when it failed and is fail-open.
async fn run<T>(
    stage: &Stage,
    call: Call<'_>,
    check: impl FnOnce(Reply) -> Checked<T>,
) -> Result<Option<T>, Rejection> {
    match stage.invoke(call, check).await {
        Ok(out) => Ok(Some(out)),
        Err(failure) if stage.fail_open() => {
            stage.counters.fail_open.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stage = %stage.name(), plugin = %stage.label, "fail-open stage skipped: {}", failure.message());
            Ok(None)
        }
        Err(failure) => Err(Rejection::Failed(failure)),
    }
}

fn checked_denial<T>(d: Denial) -> Checked<Result<T, Denial>> {
    validate::denial(&d).map_err(illegal)?;
    Ok(Err(d))
}

fn denied(stage: &Stage, denial: Denial) -> Rejection {
    stage.counters.denials.fetch_add(1, Ordering::Relaxed);
    Rejection::Denied {
        stage: stage.name().to_owned(),
        denial,
    }
}

fn illegal(reason: String) -> (FailureKind, String) {
    (FailureKind::IllegalOutput, reason)
}

fn mismatch() -> (FailureKind, String) {
    (
        FailureKind::Trap,
        "host error: reply does not match the stage kind".into(),
    )
}
