//! Example credential plugin: a static table of bearer tokens.
//!
//! **An example, for tests and demos.** Static tokens in a config file are not how
//! production clusters authenticate; the JWT/OIDC credential plugin is.
//!
//! ```toml
//! [stage.config]
//! header = "authorization"          # default; "Bearer <token>" is expected there
//! [stage.config.tokens.s3cret]
//! user = "alice@example.com"
//! groups = ["dev"]
//! uid = "42"
//! ```
//!
//! A request without the header, or with a token not in the table, abstains: the next
//! credential stage is asked, so this stage can share `Authorization` with, say, the
//! JWT stage for hub-issued tokens. When no stage accepts, the host answers 401.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use hawser_plugin_sdk::{
    export_plugin, Config, CredentialCheck, Denial, Plugin, Principal, RequestHead,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cfg {
    #[serde(default = "default_header")]
    header: String,
    tokens: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    user: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    groups: Vec<String>,
}

fn default_header() -> String {
    "authorization".into()
}

/// The plugin: the token table from the config.
pub struct StaticTokens(Cfg);

impl Plugin for StaticTokens {
    fn init(config: &Config) -> Result<Self, String> {
        let cfg: Cfg = config.parse()?;
        if cfg.tokens.keys().any(|t| t.is_empty()) {
            return Err("tokens: empty token".into());
        }
        Ok(StaticTokens(cfg))
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        Some(vec![self.0.header.clone()])
    }

    fn credential_headers(&self) -> Vec<String> {
        vec![self.0.header.clone()]
    }
}

impl CredentialCheck for StaticTokens {
    fn check(&self, req: &RequestHead) -> Result<Option<Principal>, Denial> {
        let token = if self.0.header.eq_ignore_ascii_case("authorization") {
            req.bearer_token()
        } else {
            req.header(&self.0.header)
        };
        // An unknown token may be another stage's credential.
        let Some(e) = token.and_then(|t| self.0.tokens.get(t)) else {
            return Ok(None);
        };
        let mut p = Principal::new(&e.user).with_groups(e.groups.iter().cloned());
        p.uid = e.uid.clone();
        Ok(Some(p))
    }
}

export_plugin!(StaticTokens: credential; no_std);

#[cfg(test)]
mod tests {
    use super::*;
    use hawser_plugin_sdk::testing::request;

    fn plugin() -> StaticTokens {
        StaticTokens::init(&Config::from_json(
            r#"{"tokens":{"s3cret":{"user":"alice","groups":["dev"]}}}"#,
        ))
        .unwrap()
    }

    #[test]
    fn known_token_is_the_principal() {
        let p = plugin()
            .check(&request("/api", &[("authorization", "Bearer s3cret")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.user, "alice");
        assert_eq!(p.groups, ["dev"]);
    }

    #[test]
    fn unknown_and_missing_tokens_abstain() {
        let t = plugin();
        for headers in [
            &[("authorization", "Bearer nope")][..],
            &[("authorization", "Basic czNjcmV0")],
            &[],
        ] {
            assert_eq!(t.check(&request("/api", headers)), Ok(None), "{headers:?}");
        }
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(StaticTokens::init(&Config::from_json(r#"{"tokenz":{}}"#)).is_err());
    }
}
