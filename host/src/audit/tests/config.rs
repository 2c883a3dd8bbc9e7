use super::*;

const POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n";

/// Writes `toml` (an `[audit]` table) and a valid policy into a temp dir.
fn write(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let file = dir.path().join("audit.toml");
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

#[test]
fn the_shipped_example_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/audit.toml");
    let s = load(&file).unwrap();
    assert_eq!(s.mode, Mode::Blocking);
    assert_eq!(s.queue_size, 10_000);
    let f = s.file.unwrap();
    assert_eq!(f.max_bytes, 100 * 1024 * 1024);
    assert_eq!(f.max_backups, 10);
    assert!(f.path.ends_with("audit/audit.log") && f.path.is_absolute());
    assert!(s.webhook.is_none());
    assert!(s.policy.rule_count() > 5);
}

#[test]
fn full_config_with_defaults_and_relative_paths() {
    let (dir, file) = write(
        r#"
[audit]
policy_file = "policy.yaml"
mode = "fail-closed"
failure_grace = "2s"

[audit.webhook]
url = "https://audit.example:8443/events"
ca_file = "ca.pem"
token_file = "token"
spool_dir = "spool"
max_batch_wait = "250ms"
"#,
    );
    let s = load(&file).unwrap();
    assert_eq!(s.mode, Mode::FailClosed);
    assert_eq!(s.failure_grace, Duration::from_secs(2));
    assert_eq!(s.shutdown_flush, Duration::from_secs(5));
    let w = s.webhook.unwrap();
    assert_eq!(w.url.to_string(), "https://audit.example:8443/events");
    assert_eq!(w.ca_file, dir.path().join("ca.pem"));
    assert_eq!(w.token_file, Some(dir.path().join("token")));
    assert_eq!(w.spool_dir, dir.path().join("spool"));
    assert_eq!(
        (w.max_batch_size, w.max_batch_wait),
        (400, Duration::from_millis(250))
    );
    assert_eq!(w.spool_max_bytes, 1024 * 1024 * 1024);
    assert_eq!(
        (w.retry_initial, w.retry_max),
        (Duration::from_millis(500), Duration::from_secs(30))
    );
}

#[test]
fn errors_name_the_key_and_reason() {
    let base = "[audit]\npolicy_file = \"policy.yaml\"\n";
    let file = "[audit.file]\npath = \"a.log\"\n";
    let hook = |extra: &str| {
        format!("{base}[audit.webhook]\nurl = \"https://h/\"\nca_file = \"c\"\nspool_dir = \"s\"\n{extra}")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.to_string(),
            "audit",
            "configure [audit.file], [audit.webhook] or both",
        ),
        (
            format!("{base}queue_size = 0\n{file}"),
            "audit.queue_size",
            "at least 1",
        ),
        (
            format!("{base}failure_grace = \"0s\"\n{file}"),
            "audit.failure_grace",
            "above zero",
        ),
        (
            format!("{file}{}", base.replace("policy.yaml", "missing.yaml")),
            "audit.policy_file",
            "missing.yaml",
        ),
        (
            format!("{base}[audit.file]\npath = \"a.log\"\nmax_size_mb = 0\n"),
            "audit.file.max_size_mb",
            "at least 1",
        ),
        (
            hook("").replace("https://h/", "http://h/"),
            "audit.webhook.url",
            "https://",
        ),
        (
            hook("").replace("https://h/", "not a url"),
            "audit.webhook.url",
            "not a URL",
        ),
        (
            hook("max_batch_size = 0\n"),
            "audit.webhook.max_batch_size",
            "at least 1",
        ),
        (
            hook("spool_max_mb = 0\n"),
            "audit.webhook.spool_max_mb",
            "at least 1",
        ),
        (
            hook("retry_initial = \"0s\"\n"),
            "audit.webhook.retry_initial",
            "above zero",
        ),
        (
            hook("retry_initial = \"2s\"\nretry_max = \"1s\"\n"),
            "audit.webhook.retry_max",
            "retry_initial",
        ),
        (
            hook("request_timeout = \"0s\"\n"),
            "audit.webhook.request_timeout",
            "above zero",
        ),
    ];
    for (toml, key, reason) in cases {
        let (_dir, path) = write(&toml);
        let err = load(&path).expect_err(&toml).to_string();
        assert!(
            err.contains(&format!("key `{key}`")),
            "want key {key} in {err}"
        );
        assert!(err.contains(reason), "want {reason:?} in {err}");
    }
}

#[test]
fn unknown_keys_and_bad_values_are_parse_errors() {
    let cases = [
        (
            "[audit]\npolicy_file = \"policy.yaml\"\nqueue = 5\n",
            "unknown field `queue`",
        ),
        (
            "[audit]\npolicy_file = \"policy.yaml\"\nmode = \"drop\"\n",
            "unknown variant `drop`",
        ),
        (
            "[audit]\npolicy_file = \"policy.yaml\"\n[audit.file]\npath = \"a\"\nmaxsize = 1\n",
            "unknown field `maxsize`",
        ),
        (
            "[audit]\npolicy_file = \"policy.yaml\"\nfailure_grace = \"soon\"\n",
            "failure_grace",
        ),
    ];
    for (toml, want) in cases {
        let (_dir, path) = write(toml);
        let err = load(&path).expect_err(toml).to_string();
        assert!(err.contains(want), "want {want:?} in {err}");
    }
}
