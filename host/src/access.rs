//! The access policy, checked at the hub and again at the agent: which users and
//! groups may reach which clusters, and which client impersonation requests
//! (`kubectl --as` / `--as-group`) each may make. Anything no rule allows is
//! refused with a Kubernetes 403 Status.
//!
//! ```toml
//! [[access.rule]]
//! groups = ["devs"]                 # or users = [...]; "*" and trailing "*" match
//! clusters = ["eu1", "eu-*"]
//! impersonate_users = ["viewer"]    # kubectl --as values allowed to these subjects
//! impersonate_groups = ["viewers"]  # kubectl --as-group values
//! ```

use crate::config::ConfigError;
use crate::plugin::Principal;
use crate::proxy::lifecycle::Denial;
use crate::proxy::status::Status;
use http::StatusCode;
use serde::Deserialize;
use std::path::Path;

/// `[access]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRule {
    users: Vec<String>,
    groups: Vec<String>,
    clusters: Vec<String>,
    impersonate_users: Vec<String>,
    impersonate_groups: Vec<String>,
}

/// A validated access policy.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    rules: Vec<RawRule>,
}

/// What a client asked to be treated as (`Impersonate-User`, `Impersonate-Group`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientImpersonation {
    /// `Impersonate-User`, first value.
    pub user: Option<String>,
    /// One entry per `Impersonate-Group` line.
    pub groups: Vec<String>,
}

impl ClientImpersonation {
    /// True when the client asked for nothing.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.groups.is_empty()
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

fn any(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| matches(p, value))
}

fn forbidden(name: &str, kind: &str, message: String) -> Status {
    Status::new(StatusCode::FORBIDDEN, "Forbidden", message)
        .with_details(serde_json::json!({"name": name, "kind": kind}))
}

impl AccessConfig {
    /// Validates the rules; errors name the file, the rule and the key.
    pub fn validate(self, file: &Path) -> Result<AccessPolicy, ConfigError> {
        for (i, r) in self.rule.iter().enumerate() {
            let invalid = |key: &str, reason: &str| ConfigError::Invalid {
                file: file.to_path_buf(),
                key: format!("access.rule[{i}].{key}"),
                reason: reason.into(),
            };
            if r.users.is_empty() && r.groups.is_empty() {
                return Err(invalid("users", "a rule needs users or groups"));
            }
            if r.clusters.is_empty() {
                return Err(invalid("clusters", "a rule needs at least one cluster"));
            }
            // Any pattern that matches system:masters ("*", "system:*", "s*", ...)
            // would let a client impersonate cluster-admin.
            for (key, patterns) in [
                ("impersonate_groups", &r.impersonate_groups),
                ("impersonate_users", &r.impersonate_users),
            ] {
                if let Some(p) = patterns.iter().find(|p| matches(p, "system:masters")) {
                    return Err(invalid(
                        key,
                        &format!("{p:?} matches system:masters, which is too broad to grant"),
                    ));
                }
            }
        }
        Ok(AccessPolicy { rules: self.rule })
    }
}

impl AccessPolicy {
    /// Allows `who` to reach `cluster` with the client impersonation it asked for,
    /// or says why not.
    pub fn check(
        &self,
        who: &Principal,
        cluster: &str,
        asked: &ClientImpersonation,
    ) -> Result<(), Denial> {
        let applies =
            |r: &&RawRule| any(&r.users, &who.user) || who.groups.iter().any(|g| any(&r.groups, g));
        let rules: Vec<&RawRule> = self
            .rules
            .iter()
            .filter(applies)
            .filter(|r| any(&r.clusters, cluster))
            .collect();
        if rules.is_empty() {
            return Err(Denial::new(forbidden(
                cluster,
                "clusters",
                format!("clusters \"{cluster}\" is forbidden: User \"{}\" cannot access cluster \"{cluster}\"", who.user),
            )));
        }
        let denied = |kind: &str, name: &str| {
            Denial::new(forbidden(
                name,
                kind,
                format!(
                    "{kind} \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"{kind}\" in API group \"\" at the cluster scope",
                    who.user
                ),
            ))
        };
        if let Some(user) = &asked.user {
            if !rules.iter().any(|r| any(&r.impersonate_users, user)) {
                return Err(denied("users", user));
            }
        }
        for g in &asked.groups {
            if !rules.iter().any(|r| any(&r.impersonate_groups, g)) {
                return Err(denied("groups", g));
            }
        }
        if asked.user.is_none() && !asked.groups.is_empty() {
            return Err(Denial::new(Status::bad_request(format!(
                "requested [{}] without impersonating a user",
                asked
                    .groups
                    .iter()
                    .map(|g| format!("{{Group {g}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Result<AccessPolicy, ConfigError> {
        #[derive(Deserialize)]
        struct Wrap {
            access: AccessConfig,
        }
        let w: Wrap = toml::from_str(toml_text).unwrap();
        w.access.validate(Path::new("hub.toml"))
    }

    fn who(user: &str, groups: &[&str]) -> Principal {
        Principal {
            user: user.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: vec![],
        }
    }

    const RULES: &str = "[[access.rule]]\ngroups = [\"devs\"]\nclusters = [\"eu*\"]\nimpersonate_users = [\"viewer\"]\nimpersonate_groups = [\"viewers\"]\n[[access.rule]]\nusers = [\"ops\"]\nclusters = [\"*\"]\n";

    #[test]
    fn clusters_by_user_or_group() {
        let p = policy(RULES).unwrap();
        let none = ClientImpersonation::default();
        assert!(p.check(&who("alice", &["devs"]), "eu1", &none).is_ok());
        let e = p.check(&who("alice", &["devs"]), "us1", &none).unwrap_err();
        let e = e.status();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "clusters \"us1\" is forbidden: User \"alice\" cannot access cluster \"us1\""
        );
        assert!(p.check(&who("ops", &[]), "us1", &none).is_ok());
        assert!(p.check(&who("bob", &["qa"]), "eu1", &none).is_err());
    }

    #[test]
    fn client_impersonation_per_rule() {
        let p = policy(RULES).unwrap();
        let alice = who("alice", &["devs"]);
        let ask = |user: Option<&str>, groups: &[&str]| ClientImpersonation {
            user: user.map(str::to_string),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(p
            .check(&alice, "eu1", &ask(Some("viewer"), &["viewers"]))
            .is_ok());
        let e = p.check(&alice, "eu1", &ask(Some("root"), &[])).unwrap_err();
        assert_eq!(e.status().message, "users \"root\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope");
        assert_eq!(
            p.check(&alice, "eu1", &ask(Some("viewer"), &["system:masters"]))
                .unwrap_err()
                .status()
                .code,
            403
        );
        assert_eq!(
            p.check(&alice, "eu1", &ask(None, &[])).map(|_| 0).unwrap(),
            0
        );
        assert_eq!(
            p.check(&who("ops", &[]), "eu1", &ask(Some("viewer"), &[]))
                .unwrap_err()
                .status()
                .code,
            403
        );
    }

    #[test]
    fn bad_rules_name_the_key() {
        let e = policy("[[access.rule]]\nclusters = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("access.rule[0].users"), "{e}");
        let e = policy("[[access.rule]]\nusers = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("access.rule[0].clusters"), "{e}");
        let e = policy("[[access.rule]]\nusers = [\"a\"]\nclusters = [\"*\"]\nimpersonate_groups = [\"system:masters\"]\n").unwrap_err().to_string();
        assert!(e.contains("too broad"), "{e}");
        for (key, pattern) in [
            ("impersonate_groups", "*"),
            ("impersonate_groups", "system:*"),
            ("impersonate_groups", "sys*"),
            ("impersonate_users", "system:*"),
        ] {
            let e = policy(&format!(
                "[[access.rule]]\nusers = [\"a\"]\nclusters = [\"*\"]\n{key} = [\"{pattern}\"]\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(&format!("access.rule[0].{key}"))
                    && e.contains("matches system:masters"),
                "{key} = {pattern}: {e}"
            );
        }
        // Narrower system patterns stay grantable.
        assert!(policy(
            "[[access.rule]]\nusers = [\"a\"]\nclusters = [\"*\"]\nimpersonate_groups = [\"system:authenticated\", \"team-*\"]\n"
        )
        .is_ok());
    }
}
