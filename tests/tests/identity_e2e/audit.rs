//! The audit side of the identity test: every kubectl case leaves a
//! `ResponseComplete` event, found by the Audit-IDs kubectl logged at `-v=8`.

use hawser_tests::harness::audit_log::events;
use hawser_tests::harness::eventually;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// kubectl's verbosity that logs response headers (and so `Audit-Id`).
pub const VERBOSE: &str = "-v=8";

/// kube-apiserver's name for a caller no credential identified; a 401 is recorded
/// under it.
pub const ANONYMOUS: &str = "system:anonymous";

/// The `Audit-Id` response headers kubectl logged.
pub fn audit_ids(kubectl_stderr: &str) -> Vec<String> {
    kubectl_stderr
        .lines()
        .filter_map(|l| {
            let at = l.to_ascii_lowercase().find("audit-id:")?;
            let id = l[at + "audit-id:".len()..].trim_matches(|c: char| {
                c.is_whitespace() || matches!(c, '[' | ']' | '"' | '>' | '<')
            });
            (!id.is_empty()).then(|| id.to_string())
        })
        .collect()
}

/// Waits for the `ResponseComplete` event in `file` of one of the requests kubectl
/// logged in `kubectl_stderr`, answered with `code`, and checks it is an
/// `audit.k8s.io/v1` Event recorded for `user`. For 200 the event must be the pods
/// list itself (not discovery); a refusal may come on discovery already.
pub async fn expect_event(file: &Path, kubectl_stderr: &str, code: u16, user: &str) -> Value {
    let ids = audit_ids(kubectl_stderr);
    assert!(
        !ids.is_empty(),
        "kubectl logged no Audit-Id: {kubectl_stderr}"
    );
    let matches = |e: &Value| {
        e["stage"] == "ResponseComplete"
            && e["responseStatus"]["code"] == code
            && ids.iter().any(|id| e["auditID"] == id.as_str())
            && (code != 200 || (e["verb"] == "list" && e["objectRef"]["resource"] == "pods"))
    };
    let found = eventually(Duration::from_secs(10), || async {
        events(file).into_iter().find(matches)
    })
    .await;
    let e = found.unwrap_or_else(|| {
        panic!(
            "no {code} event for {ids:?} in {}: {:#?}",
            file.display(),
            events(file)
        )
    });
    assert_eq!(e["apiVersion"], "audit.k8s.io/v1", "{e:#}");
    assert_eq!(e["kind"], "Event", "{e:#}");
    assert_eq!(e["user"]["username"], user, "{e:#}");
    e
}

/// Waits for the `ResponseComplete` event for `id` in `file`.
pub async fn complete(file: &Path, id: &str) -> Value {
    eventually(Duration::from_secs(10), || async {
        hawser_tests::harness::audit_log::complete(file, id)
    })
    .await
    .unwrap_or_else(|| panic!("no event for {id} in {}", file.display()))
}

/// No event of the requests kubectl logged is in `file` (they never got there).
pub fn absent(file: &Path, kubectl_stderr: &str) {
    let ids = audit_ids(kubectl_stderr);
    let found: Vec<_> = events(file)
        .into_iter()
        .filter(|e| ids.iter().any(|id| e["auditID"] == id.as_str()))
        .collect();
    assert!(found.is_empty(), "refused requests reached it: {found:#?}");
}
