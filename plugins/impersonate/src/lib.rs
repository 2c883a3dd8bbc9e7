//! Impersonation plugin: maps the authenticated principal to the identity the
//! upstream kube-apiserver acts as (sent as `Impersonate-*` headers by the host).
//!
//! ```toml
//! [stage.config]
//! user_prefix = "hawser:"        # prepended to the user name
//! group_prefix = "hawser:"       # prepended to each passed-through group
//! keep_groups = true             # pass the principal's groups through
//! add_groups = ["hawser:users"]  # added to every identity
//! deny_users = ["guest"]         # these identities are refused (403): the caller, or
//!                                # with `kubectl --as` the identity the access policy
//!                                # let it ask for (control that in the access policy)
//! keep_extra = true             # pass the principal's extra attributes through
//! keep_extra_keys = ["acme.com/team"]  # or pass only these keys through
//! extra = { "hawser.io/via" = ["hub"] }  # added (values appended to kept keys)
//! ```
//!
//! The host still checks the result against the stage's `[stage.policy]`, so a mapping
//! can never produce, say, `system:masters` unless the operator allows it.

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use alloc::collections::BTreeMap;

use hawser_plugin_sdk::{
    export_plugin, Config, Denial, Extra, Impersonation, Plugin, Principal, RequestHead,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Cfg {
    user_prefix: String,
    group_prefix: String,
    keep_groups: bool,
    keep_extra: bool,
    keep_extra_keys: Vec<String>,
    add_groups: Vec<String>,
    deny_users: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

/// The plugin: the mapping from the config.
pub struct Impersonate(Cfg);

impl Plugin for Impersonate {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Impersonate(config.parse()?))
    }

    // The mapping uses only the principal: no request header is needed.
    fn request_headers(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

impl Impersonation for Impersonate {
    fn apply(&self, who: &Principal, _req: &RequestHead) -> Result<Option<Principal>, Denial> {
        let c = &self.0;
        if c.deny_users.contains(&who.user) {
            return Err(Denial::forbidden(format!(
                "user {:?} may not use this hub",
                who.user
            )));
        }
        let mut groups: Vec<String> = if c.keep_groups {
            who.groups
                .iter()
                .map(|g| format!("{}{g}", c.group_prefix))
                .collect()
        } else {
            Vec::new()
        };
        groups.extend(c.add_groups.iter().cloned());
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Kubernetes compares extra keys case-insensitively (it lower-cases them).
        let kept = |key: &str| {
            c.keep_extra
                || c.keep_extra_keys
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(key))
        };
        for e in who.extra.iter().filter(|e| kept(&e.key)) {
            extra
                .entry(e.key.clone())
                .or_default()
                .extend(e.values.iter().cloned());
        }
        for (k, v) in &c.extra {
            extra
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        Ok(Some(Principal {
            user: format!("{}{}", c.user_prefix, who.user),
            uid: who.uid.clone(),
            groups,
            extra: extra
                .into_iter()
                .map(|(key, values)| Extra { key, values })
                .collect(),
        }))
    }
}

export_plugin!(Impersonate: impersonation; no_std);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use hawser_plugin_sdk::testing::request;

    #[test]
    fn maps_user_and_groups() {
        let p = Impersonate::init(&Config::from_json(
            r#"{"user_prefix":"h:","group_prefix":"g:","keep_groups":true,"add_groups":["all"],"extra":{"via":["hub"]}}"#,
        ))
        .unwrap();
        let who = Principal::new("alice").with_groups(["dev"]);
        let id = p.apply(&who, &request("/", &[])).unwrap().unwrap();
        assert_eq!(id.user, "h:alice");
        assert_eq!(id.groups, ["g:dev", "all"]);
        assert_eq!(id.extra("via").unwrap(), ["hub"]);
    }

    #[test]
    fn only_listed_extra_keys_pass_without_keep_extra() {
        let who = Principal::new("alice")
            .with_extra("scopes", vec!["read".into()])
            .with_extra("acme.com/team", vec!["a".into()]);
        let p = Impersonate::init(&Config::from_json(r#"{"keep_extra_keys":["Scopes"]}"#)).unwrap();
        let id = p.apply(&who, &request("/", &[])).unwrap().unwrap();
        assert_eq!(id.extra("scopes").unwrap(), ["read"]);
        assert!(id.extra("acme.com/team").is_none());
        let p = Impersonate::init(&Config::from_json(r#"{"keep_extra":true}"#)).unwrap();
        let id = p.apply(&who, &request("/", &[])).unwrap().unwrap();
        assert_eq!(id.extra.len(), 2);
    }

    #[test]
    fn denied_users_are_refused() {
        let p = Impersonate::init(&Config::from_json(r#"{"deny_users":["guest"]}"#)).unwrap();
        assert!(p
            .apply(&Principal::new("guest"), &request("/", &[]))
            .is_err());
    }
}
