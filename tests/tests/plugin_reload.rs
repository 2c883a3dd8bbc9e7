//! Chain loading and hot swap: config errors refuse to start, broken new versions never
//! replace a working chain, swaps under concurrent load fail no request and serve each
//! request with one whole chain version, and reloads come from the admin routes, file
//! changes and SIGHUP. Also: compiled artifacts are cached on disk.

mod plugin_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hawser::plugin::testing::{audit_event, request};
use hawser::plugin::{
    watch, ErrorSource, PluginError, PluginHost, ReloadOutcome, ReloadResult, ReloadTrigger, Role,
    WatchOptions,
};
use plugin_support::{candidates, eventually, eventually_or, misbehave, Fixture};

/// A hub chain with one misbehave stage per phase the hub runs (credential, routing,
/// audit), all at `version`.
fn three_stages(version: &str) -> String {
    // Generous budgets: these tests are about swapping, on a small, busy machine.
    let limits = "[stage.limits]\ntimeout_ms = 2000";
    [
        misbehave("creds", "credential", "ok", version, limits),
        misbehave(
            "route",
            "routing",
            "ok",
            version,
            &format!(
                "instances = \"reuse\"\n{limits}\n[stage.policy]\nallow_headers = [\"x-hawser-*\"]"
            ),
        ),
        misbehave("audit", "audit", "ok", version, limits),
    ]
    .concat()
}

/// Runs every phase on one chain; returns the version each phase saw, or why it failed.
/// Routing and audit fail when the principal comes from another version.
async fn serve(chain: &hawser::plugin::Chain) -> Result<String, String> {
    let req = request("/api/v1/pods", &[]);
    let who = chain
        .check_credential(&req)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no principal")?;
    let v = who.extra("version").ok_or("no version")?[0].clone();
    let route = chain
        .route(&req, Some(&who), &candidates())
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no route")?;
    let mut ev = audit_event(&req);
    ev.principal = Some(who.clone());
    chain
        .audit(ev)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("audit dropped")?;
    let vr = &route.set_headers[0].value;
    if vr != &v {
        return Err(format!("mixed versions: credential {v}, routing {vr}"));
    }
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request_and_never_mixes_versions() {
    let fx = Fixture::new(&three_stages("a"));
    let host = fx.host().await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let deadline = Instant::now() + Duration::from_secs(60);

    let mut workers = Vec::new();
    for _ in 0..8 {
        let (host, stop, served) = (host.clone(), stop.clone(), served.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 200_000 && Instant::now() < deadline {
                let chain = host.chain();
                let v = serve(&chain).await?;
                served[usize::from(v == "b")].fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }

    let mut old_chains = Vec::new();
    for (i, v) in ["b", "a", "b", "a", "b", "a"].into_iter().enumerate() {
        let before = served[usize::from(v == "b")].load(Ordering::Relaxed);
        if i < 2 {
            old_chains.push(host.chain());
        }
        fx.write(&three_stages(v));
        let out = host.reload(ReloadTrigger::Admin).await.expect("reload");
        assert_eq!(out, ReloadOutcome::Swapped(i as u64 + 2));
        let s = served.clone();
        eventually(
            Duration::from_secs(20),
            "requests on the new version",
            || s[usize::from(v == "b")].load(Ordering::Relaxed) >= before + 50,
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w
            .await
            .unwrap()
            .expect("a request failed or mixed versions");
    }
    assert!(total > 300, "only {total} requests");

    // A chain taken before a swap (an in-flight request) still serves its own version.
    assert_eq!(serve(&old_chains[0]).await.unwrap(), "a");
    assert_eq!(serve(&old_chains[1]).await.unwrap(), "b");
    assert_eq!(host.metrics().reloads(ReloadResult::Ok), 7);
    for stage in ["creds", "imp", "route", "audit"] {
        assert!(
            host.metrics().snapshot(stage).failures.is_empty(),
            "{stage}"
        );
    }
}

#[tokio::test]
async fn a_broken_new_version_never_replaces_a_working_one() {
    let fx = Fixture::new(&three_stages("a"));
    let host = fx.host().await;
    let garbage = fx.dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();

    let broken: Vec<(&str, String, ErrorSource, &str)> = vec![
        (
            "init refuses the config",
            misbehave("creds", "credential", "fail-init", "b", ""),
            ErrorSource::Plugin,
            "init refused the configuration",
        ),
        (
            "init traps",
            misbehave("creds", "credential", "trap-init", "b", ""),
            ErrorSource::Plugin,
            "self-check failed",
        ),
        (
            "init sleeps in a host call",
            misbehave(
                "creds",
                "credential",
                "sleep-init",
                "b",
                "[stage.limits]\ninit_timeout_ms = 100",
            ),
            ErrorSource::Plugin,
            "wall-clock limit of 650 ms exceeded",
        ),
        (
            "not a component",
            format!("[[stage]]\nname = \"creds\"\nkind = \"credential\"\nplugin = {:?}\n", garbage.display().to_string()),
            ErrorSource::Plugin,
            "not a valid component",
        ),
        (
            "plugin lacks the stage",
            "[[stage]]\nname = \"creds\"\nkind = \"routing\"\nplugin = \"{tokens}\"\n[stage.config.tokens.t]\nuser = \"u\"\n".into(),
            ErrorSource::Plugin,
            "does not implement the routing stage",
        ),
        (
            "unknown key",
            misbehave("creds", "credential", "ok", "b", "timeout_ms = 5"),
            ErrorSource::Config,
            "unknown field `timeout_ms`",
        ),
        (
            "missing plugin file",
            "[[stage]]\nname = \"creds\"\nkind = \"credential\"\nplugin = \"/nonexistent/x.wasm\"\n".into(),
            ErrorSource::Config,
            "does not exist",
        ),
    ];
    for (i, (what, stages, source, reason)) in broken.into_iter().enumerate() {
        fx.write(&stages);
        let err = host.reload(ReloadTrigger::Admin).await.expect_err(what);
        assert_eq!(err.source_kind(), source, "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains(reason), "{what}: {text:?} lacks {reason:?}");
        assert!(
            text.contains("plugins-hub.toml"),
            "{what}: {text:?} does not name the file"
        );
        // The old chain keeps serving, whole.
        let chain = host.chain();
        assert_eq!(chain.generation(), 1, "{what}");
        assert_eq!(serve(&chain).await.as_deref(), Ok("a"), "{what}");
        let status = host.status();
        assert_eq!(
            (status.last_result, status.failed),
            ("failed", i as u64 + 1),
            "{what}"
        );
        assert!(status.last_error.unwrap().contains(reason), "{what}");
    }
    assert_eq!(host.metrics().reloads(ReloadResult::Failed), 7);
    assert!(host
        .metrics()
        .render_prometheus()
        .contains("hawser_plugin_reloads_total{result=\"failed\"} 7"));

    // Changing engine settings needs a restart: refused, old chain kept.
    let other_runtime =
        plugin_support::header().replace("max_instances = 64", "max_instances = 65");
    std::fs::write(
        &fx.file,
        format!(
            "{other_runtime}{}",
            plugin_support::expand(&three_stages("b"))
        ),
    )
    .unwrap();
    let err = host.reload(ReloadTrigger::Admin).await.unwrap_err();
    assert!(err.to_string().contains(": runtime: "), "{err}");

    // Fixing the file recovers.
    fx.write(&three_stages("b"));
    assert_eq!(
        host.reload(ReloadTrigger::Admin).await.unwrap(),
        ReloadOutcome::Swapped(2)
    );
    assert_eq!(serve(&host.chain()).await.as_deref(), Ok("b"));
}

#[tokio::test]
async fn config_errors_refuse_to_start_naming_file_key_and_reason() {
    let fx = Fixture::new(&misbehave(
        "creds",
        "impersonation",
        "ok",
        "a",
        "failure = \"open\"",
    ));
    let err = PluginHost::load(&fx.file, Role::Agent)
        .await
        .err()
        .expect("must refuse");
    match &err {
        PluginError::Config { file, key, reason } => {
            assert_eq!(file, &fx.file);
            assert_eq!(key, "stage[0] (\"creds\").failure");
            assert!(reason.contains("not allowed for impersonation"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let err = PluginHost::load(&fx.file, Role::Hub)
        .await
        .err()
        .expect("role mismatch");
    assert!(
        err.to_string()
            .ends_with("role: this file configures the agent but the process is the hub"),
        "{err}"
    );
    // A stage the role never runs is refused, not carried along unused.
    for (role, kind, why) in [
        ("hub", "impersonation", "the hub never runs impersonation"),
        ("agent", "routing", "the agent never runs routing"),
    ] {
        let text = format!(
            "{}\n{}",
            plugin_support::header().replace("role = \"hub\"", &format!("role = \"{role}\"")),
            plugin_support::expand(&misbehave("s", kind, "ok", "a", ""))
        );
        std::fs::write(&fx.file, text).unwrap();
        let process = if role == "hub" {
            Role::Hub
        } else {
            Role::Agent
        };
        match PluginHost::load(&fx.file, process).await.err() {
            Some(PluginError::Config { key, reason, .. }) => {
                assert_eq!(key, "stage[0] (\"s\").kind");
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("{role} {kind}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn admin_routes_reload_and_report() {
    let fx = Fixture::new(&three_stages("a"));
    let host = fx.host().await;
    let get = http::Method::GET;
    let post = http::Method::POST;

    let (code, body) = host.admin(&post, "/plugins/reload").await.unwrap();
    assert_eq!(
        (code.as_u16(), body.as_str()),
        (200, r#"{"generation":1,"result":"unchanged"}"#)
    );
    fx.write(&three_stages("b"));
    let (code, body) = host.admin(&post, "/plugins/reload").await.unwrap();
    assert_eq!(
        (code.as_u16(), body.as_str()),
        (200, r#"{"generation":2,"result":"swapped"}"#)
    );
    fx.write(&misbehave("creds", "credential", "fail-init", "c", ""));
    let (code, body) = host.admin(&post, "/plugins/reload").await.unwrap();
    assert_eq!(code.as_u16(), 422);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["result"].as_str(), v["generation"].as_u64()),
        (Some("failed"), Some(2))
    );

    let (code, body) = host.admin(&get, "/plugins/status").await.unwrap();
    assert_eq!(code.as_u16(), 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generation"], 2);
    assert_eq!(v["last_result"], "failed");
    assert_eq!(v["stages"].as_array().unwrap().len(), 3);
    assert_eq!(v["stages"][0]["plugin_version"], "b");
    let (_, metrics) = host.admin(&get, "/plugins/metrics").await.unwrap();
    assert!(
        metrics.contains("hawser_plugin_chain_generation 2"),
        "{metrics}"
    );
    // Every live instance holds a slot: at least the reused routing stage's idle one
    // (fresh stages may still be pre-warming, so the exact count can move).
    let live: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hawser_plugin_instances "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instance gauge in {metrics}"));
    assert!(live >= 1, "{metrics}");
    // No stage here checks signatures.
    assert!(
        metrics.contains("hawser_plugin_signature_checks_total{result=\"verified\"} 0"),
        "{metrics}"
    );
    assert!(host.admin(&get, "/other").await.is_none());
}

/// Appends a custom section: different bytes (a new plugin version), same behaviour.
fn new_build_of(wasm: &std::path::Path, to: &std::path::Path, tag: &str) {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"hawser-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128);
    bytes.extend_from_slice(&[0, size as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reload_outlives_a_client_that_hangs_up_and_extra_requests_are_refused() {
    use tokio::io::AsyncWriteExt;
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let routes: hawser::admin::AdminRoutes = Arc::new(|_| hawser::admin::not_found());
    tokio::spawn(hawser::admin::serve_admin(
        listener,
        routes,
        Some(host.clone()),
        stop.clone(),
    ));
    // A version whose init hangs until the wall-clock limit (4 x 300 ms + 250 ms).
    fx.write(&misbehave(
        "creds",
        "credential",
        "sleep-init",
        "hangs",
        "instances = \"reuse\"\n[stage.limits]\ninit_timeout_ms = 300",
    ));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST /plugins/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let h = host.clone();
    eventually(Duration::from_secs(10), "the reload starts", || {
        h.status().reloading
    })
    .await;

    // One more request waits for the running reload; the next is refused at once.
    let post = http::Method::POST;
    let mut second = std::pin::pin!(host.admin(&post, "/plugins/reload"));
    tokio::select! {
        biased;
        _ = &mut second => panic!("the second reload did not wait"),
        _ = std::future::ready(()) => {}
    }
    let (code, body) = host.admin(&post, "/plugins/reload").await.unwrap();
    assert_eq!(code.as_u16(), 429, "{body}");
    assert!(body.contains("already waiting"), "{body}");

    // The first client hangs up; its reload still runs to the end and is reported.
    drop(client);
    let (code, _) = second.await.unwrap();
    assert_eq!(code.as_u16(), 422);
    let h = host.clone();
    eventually_or(
        Duration::from_secs(10),
        "both reloads reported",
        || h.status().failed == 2 && !h.status().reloading,
        || host.status_json(),
    )
    .await;
    assert_eq!(host.chain().generation(), 1);
    stop.cancel();
}

#[tokio::test]
async fn failed_reloads_do_not_keep_their_compiled_plugins() {
    let fx = Fixture::new("");
    let plugin = fx.dir.path().join("creds.wasm");
    let built = hawser::plugin::testing::plugin("hawser-plugin-misbehave");
    new_build_of(&built, &plugin, "0");
    let stage = |behaviour: &str| {
        misbehave("creds", "credential", behaviour, "a", "").replace("{misbehave}", "creds.wasm")
    };
    fx.write(&stage("ok"));
    let host = fx.host().await;
    assert_eq!(host.runtime().cache_stats().in_memory, 1);
    // New builds that compile but refuse their config.
    for tag in ["1", "2", "3"] {
        new_build_of(&built, &plugin, tag);
        fx.write(&stage("fail-init"));
        assert!(host.reload(ReloadTrigger::Admin).await.is_err());
        assert_eq!(
            host.runtime().cache_stats().in_memory,
            1,
            "build {tag} is still held"
        );
    }
    assert_eq!(host.status().failed, 3);
}

/// Watches `host`'s files every 20 ms, without SIGHUP (only
/// `sighup_alone_triggers_a_reload` signals this process).
fn fast_watch(host: &Arc<PluginHost>) -> hawser::plugin::Watcher {
    watch(
        host,
        WatchOptions {
            poll_interval: Duration::from_millis(20),
            debounce: Duration::from_millis(20),
            sighup: false,
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_a_reload_runs_triggers_another() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    let _watcher = fast_watch(&host);
    // A version whose init hangs, in its own plugin file: its reload runs until the
    // wall-clock limit ends it (4 x 300 ms + 250 ms), then fails.
    let hang = fx.dir.path().join("hang.wasm");
    std::fs::copy(
        hawser::plugin::testing::plugin("hawser-plugin-misbehave"),
        &hang,
    )
    .unwrap();
    fx.write(
        &misbehave(
            "creds",
            "credential",
            "sleep-init",
            "hangs",
            "instances = \"reuse\"\n[stage.limits]\ninit_timeout_ms = 300",
        )
        .replace("{misbehave}", "hang.wasm"),
    );
    // The reload has read the config once it watches the plugin file the config names.
    let h = host.clone();
    eventually(
        Duration::from_secs(10),
        "the reload reads the config",
        || h.status().reloading && h.watched_files().contains(&hang),
    )
    .await;
    // Fixed while that reload runs: the fix is picked up once it has failed.
    fx.write(&misbehave("creds", "credential", "ok", "b", ""));
    let h = host.clone();
    eventually_or(
        Duration::from_secs(30),
        "a reload of the fixed file",
        || h.chain().generation() == 2,
        || host.status_json(),
    )
    .await;
    assert_eq!(host.status().failed, 1, "{}", host.status_json());
    let who = host
        .chain()
        .check_credential(&request("/", &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who.extra("version").unwrap()[0], "b");
}

#[tokio::test]
async fn file_changes_trigger_reloads() {
    let fx = Fixture::new("");
    let plugin = fx.dir.path().join("creds.wasm");
    let built = hawser::plugin::testing::plugin("hawser-plugin-misbehave");
    new_build_of(&built, &plugin, "1");
    let stage = |v: &str| {
        format!(
            "[[stage]]\nname = \"creds\"\nkind = \"credential\"\nplugin = \"creds.wasm\"\n\
             [stage.config]\nversion = \"{v}\"\n"
        )
    };
    std::fs::write(
        &fx.file,
        format!("{}{}", plugin_support::header(), stage("a")),
    )
    .unwrap();
    let host = fx.host().await;
    let _watcher = fast_watch(&host);
    let generation = |h: &PluginHost| h.chain().generation();

    // The config file changes.
    std::fs::write(
        &fx.file,
        format!("{}{}", plugin_support::header(), stage("b")),
    )
    .unwrap();
    let h = host.clone();
    eventually_or(
        Duration::from_secs(10),
        "reload after config change",
        || generation(&h) == 2,
        || host.status_json(),
    )
    .await;
    assert_eq!(host.status().last_trigger, ReloadTrigger::FileChange);
    let label = host.chain().stages()[0].plugin.clone();

    // The plugin file changes (a new build).
    new_build_of(&built, &plugin, "2");
    let h = host.clone();
    // A new build is compiled before the swap: allow for a slow, busy machine.
    eventually_or(
        Duration::from_secs(60),
        "reload after plugin change",
        || generation(&h) == 3,
        || host.status_json(),
    )
    .await;
    assert_ne!(host.chain().stages()[0].plugin, label, "a new digest");
    let p = host
        .chain()
        .check_credential(&request("/", &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.user, "user-b");

    // The config names a plugin that has not landed yet (a ConfigMap and a volume
    // updated one after the other): that reload fails, and the plugin's arrival
    // alone triggers the next one.
    let later = fx.dir.path().join("later.wasm");
    std::fs::write(
        &fx.file,
        format!(
            "{}{}{}",
            plugin_support::header(),
            stage("b"),
            "[[stage]]\nname = \"later\"\nkind = \"audit\"\nplugin = \"later.wasm\"\n"
        ),
    )
    .unwrap();
    let h = host.clone();
    eventually_or(
        Duration::from_secs(10),
        "a failed reload while the plugin is missing",
        || h.status().last_result == "failed",
        || host.status_json(),
    )
    .await;
    assert_eq!(generation(&host), 3);
    new_build_of(&built, &later, "3");
    let h = host.clone();
    eventually_or(
        Duration::from_secs(60),
        "reload when the missing plugin lands",
        || generation(&h) == 4,
        || host.status_json(),
    )
    .await;
    assert_eq!(host.chain().stages().len(), 2);
}

#[tokio::test]
async fn sighup_alone_triggers_a_reload() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    let _watcher = watch(
        &host,
        WatchOptions {
            poll_interval: Duration::from_secs(3600),
            debounce: Duration::from_millis(10),
            sighup: true,
        },
    )
    .unwrap();
    fx.write(&misbehave("creds", "credential", "ok", "b", ""));
    let pid = std::process::id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let h = host.clone();
    eventually(Duration::from_secs(10), "reload after SIGHUP", || {
        h.chain().generation() == 2
    })
    .await;
    assert_eq!(host.status().last_trigger, ReloadTrigger::Signal);
}

/// A chain file for `stages` in a runtime of `max_instances` slots.
fn write_with_slots(fx: &Fixture, max_instances: u32, stages: &str) {
    let text = plugin_support::header().replace(
        "max_instances = 64",
        &format!("max_instances = {max_instances}"),
    );
    std::fs::write(&fx.file, text + &plugin_support::expand(stages)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_defaults_shrink_for_a_new_stage_keeps_its_quarantine() {
    // 8 slots: half may be held between requests. One fresh stage holds 2 x 2 with the
    // default prewarm; a second stage makes both defaults shrink to 1.
    let creds = misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "[stage.quarantine]\nafter_faults = 1\nbackoff_ms = 600000",
    );
    let fx = Fixture::new("");
    write_with_slots(&fx, 8, &creds);
    let host = fx.host().await;
    let trap = request("/", &[("x-misbehave", "trap")]);
    assert!(host.chain().check_credential(&trap).await.is_err());
    assert!(host.status().stages[0].quarantined);
    let h = host.clone();
    eventually(Duration::from_secs(10), "two pre-warmed instances", || {
        h.status().stages[0].ready_instances == 2
    })
    .await;

    let audit = misbehave("audit", "audit", "ok", "a", "");
    write_with_slots(&fx, 8, &format!("{creds}{audit}"));
    let outcome = host.reload(ReloadTrigger::Admin).await;
    assert!(
        matches!(outcome, Ok(ReloadOutcome::Swapped(2))),
        "{outcome:?}"
    );
    // The same plugin version under the same operator-written settings: the
    // quarantine carries over, and the stage now keeps one pre-warmed instance.
    let stages = host.status().stages;
    assert!(stages[0].quarantined, "{}", host.status_json());
    assert_eq!(stages[0].ready_instances, 1, "{}", host.status_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_leaves_no_instance_behind() {
    let creds = misbehave("creds", "credential", "ok", "a", "instances = \"reuse\"");
    let fx = Fixture::new(&creds);
    let host = fx.host().await;
    // The reused stage keeps its self-check instance; nothing else runs.
    let before = host.runtime().live_instances();
    assert_eq!(before, 1);
    std::fs::write(
        fx.dir.path().join("broken.wasm"),
        b"\0asm but not a component",
    )
    .unwrap();
    let stages = format!(
        "{creds}{}[[stage]]\nname = \"broken\"\nkind = \"audit\"\nplugin = \"broken.wasm\"\n",
        misbehave("audit", "audit", "ok", "a", "prewarm = 12"),
    );
    for _ in 0..3 {
        fx.write(&stages);
        let e = host.reload(ReloadTrigger::Admin).await.unwrap_err();
        assert!(e.to_string().contains("broken.wasm"), "{e}");
        // The audit stage loaded and was self-checked before the broken one failed: it
        // never served, so it must not pre-warm (each instance holds a slot).
        assert_eq!(host.runtime().live_instances(), before);
    }
    assert_eq!(host.chain().generation(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_before_the_watcher_starts_are_not_lost() {
    // Between loading the chain and watching its files a process does other start-up
    // work; a reload from the admin route can also run before the watcher starts.
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    fx.write(&misbehave("creds", "credential", "ok", "b", ""));
    let watcher = fast_watch(&host);
    let h = host.clone();
    eventually_or(
        Duration::from_secs(10),
        "a reload of the config changed before watching",
        || h.chain().generation() == 2,
        || host.status_json(),
    )
    .await;
    drop(watcher);

    // A plugin file newly named by a reload, changed after that reload read it.
    let plugin = fx.dir.path().join("creds.wasm");
    let built = hawser::plugin::testing::plugin("hawser-plugin-misbehave");
    new_build_of(&built, &plugin, "1");
    fx.write(&misbehave("creds", "credential", "ok", "b", "").replace("{misbehave}", "creds.wasm"));
    let outcome = host.reload(ReloadTrigger::Admin).await;
    assert!(
        matches!(outcome, Ok(ReloadOutcome::Swapped(3))),
        "{outcome:?}"
    );
    new_build_of(&built, &plugin, "2");
    let label = host.chain().stages()[0].plugin.clone();
    let _watcher = fast_watch(&host);
    let h = host.clone();
    eventually_or(
        Duration::from_secs(60),
        "a reload of the plugin changed before watching",
        || h.chain().generation() == 4,
        || host.status_json(),
    )
    .await;
    assert_ne!(host.chain().stages()[0].plugin, label, "a new digest");
}
