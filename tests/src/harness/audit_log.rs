//! Audit files written by hub and agent: the config section that turns them on
//! and readers for their JSON-lines events.

use std::path::{Path, PathBuf};

/// An `[audit]` section writing every request (but `/version`) at level Metadata
/// to `<dir>/<name>-audit.log`; append it to a hub or agent config.
pub fn audit_section(dir: &Path, name: &str) -> String {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: []\nrules:\n- level: None\n  nonResourceURLs: [\"/version\"]\n- level: Metadata\n").unwrap();
    format!(
        "\n[audit]\npolicy_file = \"{}\"\n[audit.file]\npath = \"{}\"\n",
        policy.display(),
        audit_file(dir, name).display()
    )
}

/// The file [`audit_section`] names.
pub fn audit_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-audit.log"))
}

/// The events of a JSON-lines audit file so far (none if it does not exist yet).
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `ResponseComplete` event for `id` in `path`, if written yet.
pub fn complete(path: &Path, id: &str) -> Option<serde_json::Value> {
    events(path)
        .into_iter()
        .find(|e| e["auditID"] == id && e["stage"] == "ResponseComplete")
}
