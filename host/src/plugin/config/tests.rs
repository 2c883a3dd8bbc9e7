//! Tests of the chain TOML: defaults, and errors naming file, key and reason.

use super::*;

fn parse(text: &str) -> Result<ChainSpec, PluginError> {
    let dir = std::env::temp_dir();
    let wasm = dir.join("hawser-config-test.wasm");
    std::fs::write(&wasm, b"not wasm").unwrap();
    let text = text.replace("$WASM", &wasm.display().to_string());
    ChainSpec::parse(&text, &dir.join("plugins-hub.toml"), Role::Hub)
}

fn config_err(r: Result<ChainSpec, PluginError>) -> (String, String) {
    match r {
        Err(PluginError::Config { key, reason, .. }) => (key, reason),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let spec = parse(
        r#"
        role = "hub"
        [[stage]]
        name = "tokens"
        kind = "credential"
        plugin = "$WASM"
        [stage.config]
        tokens = { a = "alice" }
        "#,
    )
    .unwrap();
    let s = &spec.stages[0];
    assert_eq!(s.failure, FailurePolicy::Closed);
    assert_eq!(s.instances, InstanceMode::Fresh);
    assert_eq!(s.limits, Limits::defaults(StageKind::Credential));
    assert_eq!(s.grants, Grants::default());
    assert_eq!(s.config_json, r#"{"tokens":{"a":"alice"}}"#);
    assert_eq!(spec.runtime, RuntimeSettings::default());
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("role = \"hub\"\nbogus = 1", "bogus", "unknown field `bogus`"),
        ("role = \"agent\"", "role", "configures the agent"),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"routing\"\nplugin = \"$WASM\"\n[stage.limits]\ntimeout_ms = 0",
            "stage[0] (\"a\").limits.timeout_ms",
            "outside",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"rooting\"\nplugin = \"$WASM\"",
            "stage[0].kind",
            "unknown variant",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"impersonation\"\nplugin = \"$WASM\"\nfailure = \"open\"",
            "stage[0] (\"a\").failure",
            "not allowed",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"/nonexistent.wasm\"",
            "stage[0] (\"a\").plugin",
            "does not exist",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\n[stage.policy]\nallow_headers = [\"x\"]",
            "stage[0] (\"a\").policy.allow_headers",
            "only applies to routing",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"",
            "stage[1].name",
            "used twice",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\ninstances = \"reuse\"\nprewarm = 1",
            "stage[0] (\"a\").prewarm",
            "only applies with instances = \"fresh\"",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\nprewarm = 65",
            "stage[0] (\"a\").prewarm",
            "outside 0..=64",
        ),
        (
            "role = \"hub\"\n[runtime]\ninline_max_ms = 1001",
            "runtime.inline_max_ms",
            "1001 is outside 0..=1000",
        ),
        (
            "role = \"hub\"\n[runtime]\ncache_max_entries = 5",
            "runtime.cache_max_entries",
            "only applies with runtime.cache_dir",
        ),
        (
            "role = \"hub\"\n[runtime]\nmax_instances = 6\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\nprewarm = 2",
            "runtime.max_instances",
            "stages hold 4 instances between requests (4 pre-warmed",
        ),
        (
            "role = \"hub\"\n[runtime]\nmax_instances = 16\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\ninstances = \"reuse\"\nmax_idle = 8\n[[stage]]\nname = \"b\"\nkind = \"audit\"\nplugin = \"$WASM\"\ninstances = \"reuse\"\nmax_idle = 8\n[[stage]]\nname = \"c\"\nkind = \"audit\"\nplugin = \"$WASM\"\nprewarm = 1",
            "runtime.max_instances",
            "stages hold 18 instances between requests (2 pre-warmed: 2 x prewarm per fresh stage; 16 idle for reuse: max_idle) and",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\ninstances = \"reuse\"\nmax_idle = 65",
            "stage[0] (\"a\").max_idle",
            "outside 0..=64",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\n[stage.limits]\nmemory_mb = 4096",
            "stage[0] (\"a\").limits.memory_mb",
            "outside 1..=128",
        ),
        (
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"audit\"\nplugin = \"$WASM\"\n[stage.limits]\ntimeout = 5",
            "stage[0].limits.timeout",
            "unknown field `timeout`",
        ),
    ];
    for (text, key, reason) in cases {
        let (k, r) = config_err(parse(text));
        assert_eq!(k, key, "for {text:?}: {r}");
        assert!(r.contains(reason), "for {text:?}: {r:?} lacks {reason:?}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let (key, reason) = config_err(parse(
        "role = \"hub\"\n[[stage]]\nname = \"a\"\n[stage.limits\ntimeout_ms = 5\n",
    ));
    assert_eq!(key, "(document)");
    assert!(reason.starts_with("line 4: "), "{reason}");
}

#[test]
fn default_limits_stay_within_the_runtime() {
    let spec = parse(
        r#"
        role = "hub"
        [runtime]
        max_memory_mb = 16
        max_instances = 8
        [[stage]]
        name = "a"
        kind = "credential"
        plugin = "$WASM"
        instances = "reuse"
        "#,
    )
    .unwrap();
    let l = &spec.stages[0].limits;
    assert_eq!((l.memory_bytes, l.concurrency), (16 << 20, 8));
    assert_eq!(spec.stages[0].max_idle, 1, "an eighth of the slots");
}

#[test]
fn config_dates_reach_init_as_text_and_nan_is_refused() {
    let stage = |config: &str| {
        format!(
            "role = \"hub\"\n[[stage]]\nname = \"a\"\nkind = \"credential\"\nplugin = \"$WASM\"\n\
             [stage.config]\n{config}\n"
        )
    };
    let spec = parse(&stage("exp = 2024-01-01T00:00:00Z\nday = 2024-01-02")).unwrap();
    assert_eq!(
        spec.stages[0].config_json,
        r#"{"day":"2024-01-02","exp":"2024-01-01T00:00:00Z"}"#
    );
    let (key, reason) = config_err(parse(&stage("ratio = nan")));
    assert_eq!(key, "stage[0] (\"a\").config");
    assert!(reason.contains("no JSON form"), "{reason}");
}

/// A chain of `n` stages of `mode` ("reuse" or "fresh"), `extra` added to the first.
fn chain_of(max_instances: u32, n: usize, mode: &str, extra: &str) -> String {
    let mut text = format!("role = \"hub\"\n[runtime]\nmax_instances = {max_instances}\n");
    for i in 0..n {
        text += &format!(
            "[[stage]]\nname = \"s{i}\"\nkind = \"audit\"\nplugin = \"$WASM\"\ninstances = \"{mode}\"\n{}",
            if i == 0 { extra } else { "" }
        );
    }
    text
}

#[test]
fn defaults_of_held_instances_shrink_until_half_the_slots_are_free() {
    // Five reused stages would keep 5 x 8 idle instances; 32 of 64 slots may be held.
    let spec = parse(&chain_of(64, 5, "reuse", "")).unwrap();
    let idle: Vec<u32> = spec.stages.iter().map(|s| s.max_idle).collect();
    assert_eq!(idle.iter().sum::<u32>(), 32, "{idle:?}");
    assert!(idle.iter().all(|&m| m >= 6), "shared out evenly: {idle:?}");

    // What an operator wrote is kept; only the defaults give way.
    let spec = parse(&chain_of(64, 4, "reuse", "max_idle = 20\n")).unwrap();
    let idle: Vec<u32> = spec.stages.iter().map(|s| s.max_idle).collect();
    assert_eq!(idle, [20, 4, 4, 4]);

    // Nine fresh stages would pre-warm 9 x 2 (holding twice that).
    let spec = parse(&chain_of(64, 9, "fresh", "")).unwrap();
    let held: u32 = spec.stages.iter().map(|s| 2 * s.prewarm).sum();
    assert!(held <= 32, "{held}");
    assert!(spec.stages.iter().all(|s| s.prewarm >= 1));

    // Below one held instance per defaulted stage the chain is refused.
    let (key, reason) = config_err(parse(&chain_of(8, 5, "reuse", "")));
    assert_eq!(key, "runtime.max_instances");
    assert!(
        reason.contains("stages hold 5 instances") && reason.contains("already lowered to 1"),
        "{reason}"
    );
}

#[test]
fn a_stage_is_the_same_when_only_its_defaults_shrank() {
    // s0 keeps 8 idle instances alone; beside four more stages its default shrinks.
    let alone = parse(&chain_of(64, 1, "reuse", "")).unwrap().stages[0].clone();
    let crowded = parse(&chain_of(64, 5, "reuse", "")).unwrap().stages[0].clone();
    assert_ne!(alone.max_idle, crowded.max_idle);
    assert!(alone.same_but_held(&crowded));

    // A value the operator wrote, or changed, is a change of the stage.
    let written = parse(&chain_of(64, 1, "reuse", "max_idle = 8\n"))
        .unwrap()
        .stages[0]
        .clone();
    assert_eq!(written.max_idle, alone.max_idle);
    assert!(!alone.same_but_held(&written));
    let other = parse(&chain_of(64, 1, "reuse", "max_idle = 4\n"))
        .unwrap()
        .stages[0]
        .clone();
    assert!(!written.same_but_held(&other));
    assert!(written.same_but_held(&written.clone()));
}
