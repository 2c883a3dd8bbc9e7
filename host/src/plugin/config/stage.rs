//! Validation of one `[[stage]]` table into a [`StageSpec`]: kind-specific defaults,
//! limits within the runtime's bounds, grants, and the output policy.

use super::*;

/// Fresh instances kept ready per stage unless `prewarm` says otherwise: enough for
/// the next request while a background task makes more.
const DEFAULT_PREWARM: u32 = 2;
const MAX_PREWARM: u32 = 64;
/// Reused instances kept between calls unless `max_idle` says otherwise.
const DEFAULT_MAX_IDLE: u32 = 8;

/// Whether the `role` process runs stages of `kind`; if not, why, for the error. A
/// stage that never runs would give a false sense of protection (an impersonation
/// policy at the hub bounds nothing).
pub(super) fn runs_at(kind: StageKind, role: Role) -> Result<(), &'static str> {
    match (kind, role) {
        (StageKind::Impersonation, Role::Hub) => Err(
            "the hub never runs impersonation stages: the agent maps the identity and sets              the Impersonate-* headers toward its API server; configure this stage in the              agent's chain",
        ),
        (StageKind::Routing, Role::Agent) => Err(
            "the agent never runs routing stages: the hub picks the cluster and tunnel;              configure this stage in the hub's chain",
        ),
        _ => Ok(()),
    }
}

pub(super) fn stage(
    s: RawStage,
    at: &str,
    base: &Path,
    runtime: &RuntimeSettings,
    err: &ErrFn<'_>,
) -> Result<StageSpec, PluginError> {
    let kind = match s.kind {
        RawKind::Credential => StageKind::Credential,
        RawKind::Impersonation => StageKind::Impersonation,
        RawKind::Routing => StageKind::Routing,
        RawKind::Audit => StageKind::Audit,
    };
    let failure = s.failure.unwrap_or(FailurePolicy::Closed);
    if failure == FailurePolicy::Open && kind == StageKind::Impersonation {
        return Err(err(
            format!("{at}.failure"),
            "\"open\" is not allowed for impersonation: a failure would forward the request \
             under the caller's own identity"
                .into(),
        ));
    }
    let instances = s.instances.unwrap_or(InstanceMode::Fresh);
    if s.max_uses.is_some() && instances == InstanceMode::Fresh {
        return Err(err(
            format!("{at}.max_uses"),
            "only applies with instances = \"reuse\"".into(),
        ));
    }
    let max_uses =
        range(s.max_uses, 1, u64::MAX, &format!("{at}.max_uses"), err)?.unwrap_or(10_000);
    if s.max_idle.is_some() && instances == InstanceMode::Fresh {
        return Err(err(
            format!("{at}.max_idle"),
            "only applies with instances = \"reuse\" (see prewarm)".into(),
        ));
    }
    if s.prewarm.is_some() && instances == InstanceMode::Reuse {
        return Err(err(
            format!("{at}.prewarm"),
            "only applies with instances = \"fresh\" (reused instances are kept anyway)".into(),
        ));
    }
    let prewarm = range(
        s.prewarm,
        0,
        MAX_PREWARM.min(runtime.max_instances),
        &format!("{at}.prewarm"),
        err,
    )?
    .unwrap_or(DEFAULT_PREWARM);

    let d = Limits::defaults(kind);
    let l = &s.limits;
    let timeout = range(
        l.timeout_ms,
        1,
        60_000,
        &format!("{at}.limits.timeout_ms"),
        err,
    )?;
    let init_timeout = range(
        l.init_timeout_ms,
        1,
        60_000,
        &format!("{at}.limits.init_timeout_ms"),
        err,
    )?;
    let memory_mb = range(
        l.memory_mb,
        1,
        runtime.max_memory_mb,
        &format!("{at}.limits.memory_mb"),
        err,
    )?;
    let concurrency = range(
        l.concurrency,
        1,
        runtime.max_instances,
        &format!("{at}.limits.concurrency"),
        err,
    )?;
    // Defaults never exceed what the runtime allows, so the limits reported are the
    // ones enforced.
    let runtime_memory = runtime.max_memory_mb as usize * 1024 * 1024;
    let limits = Limits {
        timeout: timeout.map_or(d.timeout, Duration::from_millis),
        init_timeout: init_timeout.map_or(d.init_timeout, Duration::from_millis),
        memory_bytes: memory_mb.map_or(d.memory_bytes.min(runtime_memory), |m| {
            m as usize * 1024 * 1024
        }),
        concurrency: concurrency.unwrap_or(d.concurrency.min(runtime.max_instances)),
    };
    let max_idle = range(
        s.max_idle,
        0,
        limits.concurrency,
        &format!("{at}.max_idle"),
        err,
    )?
    // The default leaves room for several reuse stages in a small runtime.
    .unwrap_or(
        DEFAULT_MAX_IDLE
            .min(limits.concurrency)
            .min((runtime.max_instances / 8).max(1)),
    );

    let q = &s.quarantine;
    let dq = QuarantinePolicy::default();
    let ms = |v: Option<u64>, key: &str, dflt: Duration| -> Result<Duration, PluginError> {
        Ok(
            range(v, 1, 86_400_000, &format!("{at}.quarantine.{key}"), err)?
                .map_or(dflt, Duration::from_millis),
        )
    };
    let quarantine = QuarantinePolicy {
        after_faults: range(
            q.after_faults,
            1,
            1_000_000,
            &format!("{at}.quarantine.after_faults"),
            err,
        )?
        .unwrap_or(dq.after_faults),
        window: ms(q.window_ms, "window_ms", dq.window)?,
        backoff: ms(q.backoff_ms, "backoff_ms", dq.backoff)?,
        max_backoff: ms(q.max_backoff_ms, "max_backoff_ms", dq.max_backoff)?,
    };

    let mut read_dirs = Vec::new();
    for (host, guest) in &s.grants.read_dirs {
        let host = base.join(host);
        if !host.is_dir() {
            return Err(err(
                format!("{at}.grants.read_dirs"),
                format!("{} is not a directory", host.display()),
            ));
        }
        if !guest.starts_with('/') {
            return Err(err(
                format!("{at}.grants.read_dirs"),
                format!("guest path {guest:?} must be absolute"),
            ));
        }
        read_dirs.push((host, guest.clone()));
    }
    let grants = Grants {
        stdout: s.grants.stdout,
        stderr: s.grants.stderr,
        env: s.grants.env.into_iter().collect(),
        read_dirs,
    };

    let policy = policy(s.policy, kind, at, err)?;
    let config = toml::Value::Table(s.config.unwrap_or_default());
    let config_json = json_of(config)
        .and_then(|j| serde_json::to_string(&j).map_err(|e| e.to_string()))
        .map_err(|e| {
            err(
                format!("{at}.config"),
                format!("cannot be encoded as JSON: {e}"),
            )
        })?;

    let plugin = base.join(&s.plugin);
    if !plugin.is_file() {
        return Err(err(
            format!("{at}.plugin"),
            format!("{} does not exist or is not a file", plugin.display()),
        ));
    }
    let held_explicit = s.prewarm.is_some() || s.max_idle.is_some();
    Ok(StageSpec {
        held_explicit,
        name: s.name,
        kind,
        plugin,
        failure,
        instances,
        max_uses,
        max_idle,
        prewarm,
        limits,
        quarantine,
        grants,
        policy,
        config_json,
    })
}

fn policy(
    raw: Option<RawPolicy>,
    kind: StageKind,
    at: &str,
    err: &ErrFn<'_>,
) -> Result<Policy, PluginError> {
    let mut p = Policy::default();
    let Some(raw) = raw else { return Ok(p) };
    let pats = |v: Vec<String>| v.into_iter().map(Pattern::new).collect::<Vec<_>>();
    let only = |key: &str, want: StageKind| -> Result<(), PluginError> {
        if kind != want {
            return Err(err(
                format!("{at}.policy.{key}"),
                format!("only applies to {want} stages, this is a {kind} stage"),
            ));
        }
        Ok(())
    };
    let fields = [
        ("allow_users", raw.allow_users, StageKind::Impersonation),
        ("deny_users", raw.deny_users, StageKind::Impersonation),
        ("allow_groups", raw.allow_groups, StageKind::Impersonation),
        ("deny_groups", raw.deny_groups, StageKind::Impersonation),
        ("allow_extra", raw.allow_extra, StageKind::Impersonation),
        ("allow_uids", raw.allow_uids, StageKind::Impersonation),
        ("allow_headers", raw.allow_headers, StageKind::Routing),
    ];
    for (key, value, want) in fields {
        let Some(value) = value else { continue };
        only(key, want)?;
        let target = match key {
            "allow_users" => &mut p.allow_users,
            "deny_users" => &mut p.deny_users,
            "allow_groups" => &mut p.allow_groups,
            "deny_groups" => &mut p.deny_groups,
            "allow_extra" => &mut p.allow_extra,
            "allow_uids" => &mut p.allow_uids,
            _ => &mut p.allow_headers,
        };
        *target = pats(value);
    }
    Ok(p)
}

/// The JSON form of a `[stage.config]` value. TOML dates and times become their RFC
/// 3339 text (serde would encode them as an internal wrapper object); NaN and infinity
/// have no JSON form.
fn json_of(value: toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => {
            J::Number(serde_json::Number::from_f64(f).ok_or(format!("{f} has no JSON form"))?)
        }
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(json_of).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| Ok((k, json_of(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
