//! SDK for Hawser stage plugins.
//!
//! A plugin is a Rust library built for `wasm32-wasip2`. It implements [`Plugin`]
//! (construction from the stage's TOML `config` table) and one or more stage traits —
//! [`CredentialCheck`], [`Impersonation`], [`Routing`], [`Audit`] — and names them in
//! [`export_plugin!`]. The host calls `init` once per instance, then the stage.
//!
//! # Cargo.toml
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # cdylib: the component; rlib: native tests use it
//!
//! [dependencies]
//! hawser-plugin-sdk = { path = "../hawser/plugins/sdk" }
//! # for your config struct; without std, so the plugin may be `no_std` (below)
//! serde = { version = "1", default-features = false, features = ["derive", "alloc"] }
//! ```
//!
//! # Example: a static token table
//!
//! ```
//! use std::collections::BTreeMap;
//! use hawser_plugin_sdk::{export_plugin, Config, CredentialCheck, Denial, Plugin, Principal, RequestHead};
//!
//! pub struct Tokens(BTreeMap<String, String>);
//!
//! impl Plugin for Tokens {
//!     fn init(config: &Config) -> Result<Self, String> {
//!         #[derive(serde::Deserialize)]
//!         struct Cfg { tokens: BTreeMap<String, String> }
//!         Ok(Tokens(config.parse::<Cfg>()?.tokens))
//!     }
//! }
//!
//! impl CredentialCheck for Tokens {
//!     fn check(&self, req: &RequestHead) -> Result<Option<Principal>, Denial> {
//!         let Some(token) = req.bearer_token() else { return Ok(None) };
//!         // A token not in the table may be another stage's: abstain.
//!         Ok(self.0.get(token).map(Principal::new))
//!     }
//! }
//!
//! export_plugin!(Tokens: credential);
//!
//! // A native unit test: no runtime needed.
//! let t = Tokens::init(&Config::from_json(r#"{"tokens":{"s3cret":"alice"}}"#)).unwrap();
//! let req = hawser_plugin_sdk::testing::request("/api", &[("authorization", "Bearer s3cret")]);
//! assert_eq!(t.check(&req).unwrap().unwrap().user, "alice");
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/<crate_name>.wasm`. The workspace's
//! `scripts/build-plugins.sh` also passes `-C link-arg=-zstack-size=65536` (a 64 KiB
//! guest stack instead of 1 MiB) and `profile.release.debug=false`: optional, but fresh
//! instances then touch and reset fewer pages.
//!
//! # std or `no_std`
//!
//! A plugin may use Rust's std, as above, or be `#![no_std]` with `alloc`. The SDK
//! serves both; they differ in what the component imports, and so in what each fresh
//! instance costs (the host links every import into every instance):
//! - **std** links WASI into the plugin (for stdio, environment and exit): 14 imported
//!   interfaces. Use it when the plugin needs WASI, such as files the operator grants
//!   through `read_dirs`; the JWT plugin reads its revocation list that way. A panic is
//!   logged through the host with its message. Since WASI can wait (a clock, a
//!   stream), the host runs such a plugin on a fiber that yields to other requests.
//! - **`no_std`** imports nothing but the [`host`] functions the plugin calls. A
//!   plugin that calls none is a single core instance. In the workspace's benchmark a
//!   fresh credential stage costs about 8.5 µs, against 14 µs with std. Each call of
//!   a host function adds two small shim modules to every instance (about 2 µs per
//!   fresh instance), so log from `init` or on rare paths only if fresh instances
//!   matter. A panic traps at once, without its message (logging it would import
//!   [`host::log`]); the host reports the trap with the stage name. Return a
//!   [`Denial`] or an error instead of panicking. Without WASI imports the plugin
//!   cannot wait on anything, so the host runs it inline on the request's task
//!   (no fiber switch, no timer) when its budget is short (by default at most 50 ms).
//!
//! A `no_std` plugin differs from the example in three places:
//!
//! ```text
//! #![no_std]
//! extern crate alloc;   // String, Vec, BTreeMap and format! come from alloc
//! use alloc::{collections::BTreeMap, string::String};
//! ...
//! export_plugin!(Tokens: credential; no_std);   // defines the panic handler
//! ```
//!
//! Its dependencies must not turn std on: serde and serde_json with
//! `default-features = false` and their `alloc` feature. Cargo merges the features of
//! the plugins built by one `cargo build`, so one std feature anywhere makes every
//! plugin of that build link std; a `no_std` plugin then fails to link with "found
//! duplicate lang item `panic_impl`". `plugins/header-credential` is a complete
//! `no_std` plugin.
//!
//! # Running it in the real host from a test
//!
//! Native tests call your trait methods directly, so they do not see what the host
//! adds: the header filter ([`Plugin::request_headers`]), output validation and limits.
//! To test those, rebuild the `.wasm` first (nothing does it for `cargo test`), write a
//! chain file naming it, and load it with `hawser::plugin::PluginHost::load`:
//!
//! ```toml
//! role = "hub"                  # the process: "hub" or "agent"
//! [[stage]]
//! name = "tokens"
//! kind = "credential"           # hub: credential, routing, audit;
//!                               # agent: credential, impersonation, audit
//! plugin = "/abs/path/to/my_plugin.wasm"   # or relative to this file
//! [stage.config]
//! tokens = { s3cret = "alice" }
//! ```
//!
//! then `host.chain().check_credential(&hawser::plugin::testing::request(..))`. Every
//! key is described in the workspace's `config/plugins-hub.toml`; the workspace's own
//! `tests/tests/plugin_*.rs` do this for every plugin.
//!
//! # Rules the host enforces
//! - Every call has a time budget and a memory cap, and an instance may hold at most
//!   1024 WASI handles (streams, timers, files) at once; exceeding them traps the
//!   instance.
//! - Outputs are validated. A principal or impersonated identity needs a non-empty
//!   user; user, uid, groups (non-empty) and extra values are at most 512 bytes of
//!   visible ASCII (space and tab inside, not at either end); at most 256 groups, 32
//!   extra keys (1-256 visible ASCII characters) and 64 values per key; and, for an
//!   impersonated identity, within the stage's `[stage.policy]`. A routing choice must name a candidate
//!   that was passed in and may set only headers the policy's `allow_headers` lists
//!   (none by default). Audit redactions only name headers. An output that breaks a
//!   rule fails the request with a 500 and counts as a fault towards quarantine, like a
//!   trap: check what comes from your config (user names, groups) in `init`.
//! - No files, environment, sockets or stdio unless the operator grants them; use
//!   [`host::log`] to log.
//! - Instances are fresh per request by default (`init` then runs for every instance,
//!   and on a cold start within the call's time budget: keep it cheap), or reused if
//!   the operator says so: do not rely on state surviving between calls, and do not
//!   let it grow without bound.
//!
//! # Notes
//! - Credential stages often share `Authorization`, the only credential header
//!   kubectl sends. Abstain (`Ok(None)`) on a token you cannot tell is yours (an
//!   unknown static token, another issuer's JWT) and deny only one you recognise, or
//!   the stages after yours never see their credentials. When all abstain the host
//!   answers kube-apiserver's 401.
//! - A credential stage that refuses a credential it did verify (403, e.g. not valid
//!   for this cluster) names the user with [`Denial::naming`], so audit records show
//!   who was refused.
//! - `Result<_, Denial>` is 128 bytes, above clippy's default `large-error-threshold`;
//!   this workspace raises it in `clippy.toml` rather than boxing every refusal.
//! - The `fast-alloc` feature (default) installs a size-class allocator tuned for
//!   per-call allocation (see [`size_classes`]); turn it off to bring your own.

#![no_std]
#![deny(missing_docs)]

// The generated bindings name this crate by its absolute path, also from inside it.
extern crate self as hawser_plugin_sdk;

extern crate alloc;
// Natively (unit tests of plugins, the host's benchmarks) std is always there; in a
// plugin the SDK never links it, so the plugin decides.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[allow(missing_docs)]
#[doc(hidden)]
pub mod bindings;
#[cfg(target_arch = "wasm32")]
mod cabi;
pub mod host;
mod panic;
mod records;
pub mod size_classes;
mod state;
pub mod testing;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use bindings::exports::hawser::plugin::lifecycle::PluginInfo;
pub use bindings::hawser::plugin::types::{
    AuditDecision, AuditEvent, AuditPhase, Candidate, Denial, DenialKind, Extra, Header, Health,
    Locality, Principal, Redaction, RequestHead, Role, RouteChoice, RouteTarget, StageKind,
};

/// The stage's `config` table from the operator's TOML, as JSON.
#[derive(Clone, Debug, Default)]
pub struct Config {
    json: String,
}

impl Config {
    /// A config from JSON text (as the host passes it).
    pub fn from_json(json: impl Into<String>) -> Self {
        Config { json: json.into() }
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Deserializes the config; the error names the problem (it is shown to the
    /// operator, who then sees the reload refused).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.json).map_err(|e| format!("invalid plugin config: {e}"))
    }
}

/// A plugin: built once per instance from the stage's config.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin. An error refuses the configuration (the host does not start,
    /// or keeps the previous chain on reload).
    fn init(config: &Config) -> Result<Self, String>;

    /// The version reported to the host (logs, metrics, status). Defaults to the crate
    /// version.
    fn version(&self) -> Option<String> {
        None
    }

    /// The request headers this plugin reads (lower-case names). The host then passes
    /// only these in [`RequestHead::headers`] and [`AuditEvent::headers`]: credentials
    /// stay away from plugins that do not need them, and each call is cheaper. The
    /// default, `None`, receives every header.
    fn request_headers(&self) -> Option<Vec<String>> {
        None
    }

    /// The request headers that carry a credential this plugin checks, when that is
    /// not (only) `authorization`. The host masks them in audit events and the agent
    /// removes them before forwarding to the API server. They reach the plugin even
    /// when [`Plugin::request_headers`] does not list them. The default is none.
    fn credential_headers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Credential check: from the request head to a principal.
pub trait CredentialCheck: Plugin {
    /// `Ok(Some(p))`: authenticated as `p`. `Ok(None)`: no credential this plugin
    /// recognises (the next stage is asked). `Err`: recognised but refused.
    fn check(&self, req: &RequestHead) -> Result<Option<Principal>, Denial>;
}

/// Impersonation: from the principal to the identity the upstream acts as.
pub trait Impersonation: Plugin {
    /// `Ok(Some(id))`: impersonate `id`. `Ok(None)`: keep the identity. `Err`: refuse.
    fn apply(&self, who: &Principal, req: &RequestHead) -> Result<Option<Principal>, Denial>;
}

/// Routing: choose among the candidates the host offers.
pub trait Routing: Plugin {
    /// `Ok(Some(choice))` naming one of `candidates`; `Ok(None)` to leave it to the
    /// next stage or the host default; `Err` to refuse.
    fn route(
        &self,
        req: &RequestHead,
        who: Option<&Principal>,
        candidates: &[Candidate],
    ) -> Result<Option<RouteChoice>, Denial>;
}

/// Audit: keep, redact or drop an event.
pub trait Audit: Plugin {
    /// The decision for `event`; `Err` is a plugin failure (the stage's failure policy
    /// applies).
    fn decide(&self, event: &AuditEvent) -> Result<AuditDecision, String>;
}

/// Exports a plugin type and the stages it implements:
/// `export_plugin!(MyPlugin: credential, routing);` with any of `credential`,
/// `impersonation`, `routing`, `audit`. Each named stage requires the matching trait.
/// A `#![no_std]` plugin adds `; no_std` (`export_plugin!(MyPlugin: credential;
/// no_std);`), which defines its panic handler (see "std or `no_std`" above).
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty : $($stage:ident),+ $(,)?) => {
        $crate::export_plugin!(@export $ty, [$($stage),+], std);
    };
    ($ty:ty : $($stage:ident),+ ; no_std) => {
        $crate::export_plugin!(@export $ty, [$($stage),+], no_std);
    };
    (@export $ty:ty, [$($stage:ident),+], $runtime:ident) => {
        $crate::__hawser_panic_handler!($runtime);

        const _: () = {
            const __HAWSER_TABLE: $crate::__private::Table<$ty> = {
                let mut t = $crate::__private::Table::<$ty>::EMPTY;
                $( $crate::__hawser_register!(t, $stage, $ty); )+
                t
            };

            #[doc(hidden)]
            #[allow(dead_code)] // natively (unit tests) nothing is exported
            pub struct __HawserExports;

            impl $crate::__private::lifecycle::Guest for __HawserExports {
                fn init(config: $crate::__private::String) -> ::core::result::Result<$crate::PluginInfo, $crate::__private::String> {
                    $crate::__hawser_panic_hook!($runtime);
                    $crate::__private::init::<$ty>(
                        &__HAWSER_TABLE,
                        config,
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
            }
            impl $crate::__private::credential::Guest for __HawserExports {
                fn check(req: $crate::RequestHead) -> ::core::result::Result<::core::option::Option<$crate::Principal>, $crate::Denial> {
                    $crate::__private::check(&__HAWSER_TABLE, &req)
                }
            }
            impl $crate::__private::impersonation::Guest for __HawserExports {
                fn apply(who: $crate::Principal, req: $crate::RequestHead) -> ::core::result::Result<::core::option::Option<$crate::Principal>, $crate::Denial> {
                    $crate::__private::apply(&__HAWSER_TABLE, &who, &req)
                }
            }
            impl $crate::__private::routing::Guest for __HawserExports {
                fn route(
                    req: $crate::RequestHead,
                    who: ::core::option::Option<$crate::Principal>,
                    candidates: $crate::__private::Vec<$crate::Candidate>,
                ) -> ::core::result::Result<::core::option::Option<$crate::RouteChoice>, $crate::Denial> {
                    $crate::__private::route(&__HAWSER_TABLE, &req, who.as_ref(), &candidates)
                }
            }
            impl $crate::__private::audit::Guest for __HawserExports {
                fn decide(event: $crate::AuditEvent) -> ::core::result::Result<$crate::AuditDecision, $crate::__private::String> {
                    $crate::__private::decide(&__HAWSER_TABLE, &event)
                }
            }

            // Only a wasm build exports the component's functions; natively the plugin
            // is an ordinary library for unit tests.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::export_world!(__HawserExports);
        };
    };
}

/// A `no_std` plugin's panic handler: traps at once. Logging the message would make the
/// plugin import the host's `log` function, and every import that takes a string costs
/// each fresh instance about 2 µs of set-up (see "std or no_std" in the crate docs).
/// The host still reports the trap, naming the stage and the function that panicked.
/// A std plugin has std's handler, so nothing is defined for it.
#[doc(hidden)]
#[macro_export]
macro_rules! __hawser_panic_handler {
    (std) => {};
    (no_std) => {
        #[cfg(target_arch = "wasm32")]
        #[panic_handler]
        fn __hawser_panic(_: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }
    };
    ($other:ident) => {
        compile_error!("expected `; no_std` after the stages, or nothing");
    };
}

/// A std plugin's panic hook, installed by `init`: std's default hook writes to stderr,
/// which a plugin is not granted, so the message would be lost.
#[doc(hidden)]
#[macro_export]
macro_rules! __hawser_panic_hook {
    (std) => {
        #[cfg(target_arch = "wasm32")]
        ::std::panic::set_hook(::std::boxed::Box::new(|info| {
            $crate::__private::log_panic(::core::format_args!("{info}"))
        }));
    };
    (no_std) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hawser_register {
    ($t:ident, credential, $ty:ty) => {
        $t.credential = Some(<$ty as $crate::CredentialCheck>::check);
    };
    ($t:ident, impersonation, $ty:ty) => {
        $t.impersonation = Some(<$ty as $crate::Impersonation>::apply);
    };
    ($t:ident, routing, $ty:ty) => {
        $t.routing = Some(<$ty as $crate::Routing>::route);
    };
    ($t:ident, audit, $ty:ty) => {
        $t.audit = Some(<$ty as $crate::Audit>::decide);
    };
    ($t:ident, $other:ident, $ty:ty) => {
        compile_error!(concat!(
            "unknown stage `",
            stringify!($other),
            "`: expected credential, impersonation, routing or audit"
        ));
    };
}

/// Support for [`export_plugin!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::bindings::exports::hawser::plugin::{
        audit, credential, impersonation, lifecycle, routing,
    };
    pub use crate::panic::log_panic;
    pub use alloc::string::String;
    pub use alloc::vec::Vec;
    pub use wit_bindgen;

    /// Exports the world for `$ty` (a local type implementing every Guest trait).
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __hawser_export_world {
        ($ty:ident) => {
            $crate::bindings::__export_hawser_world!($ty with_types_in $crate::bindings);
        };
    }
    pub use __hawser_export_world as export_world;

    type CheckFn<P> = fn(&P, &RequestHead) -> Result<Option<Principal>, Denial>;
    type ApplyFn<P> = fn(&P, &Principal, &RequestHead) -> Result<Option<Principal>, Denial>;
    type RouteFn<P> = fn(
        &P,
        &RequestHead,
        Option<&Principal>,
        &[Candidate],
    ) -> Result<Option<RouteChoice>, Denial>;
    type DecideFn<P> = fn(&P, &AuditEvent) -> Result<AuditDecision, String>;

    /// The stages a plugin type implements.
    pub struct Table<P> {
        pub credential: Option<CheckFn<P>>,
        pub impersonation: Option<ApplyFn<P>>,
        pub routing: Option<RouteFn<P>>,
        pub audit: Option<DecideFn<P>>,
    }

    impl<P> Table<P> {
        pub const EMPTY: Self = Table {
            credential: None,
            impersonation: None,
            routing: None,
            audit: None,
        };

        fn stages(&self) -> Vec<StageKind> {
            let mut v = Vec::new();
            if self.credential.is_some() {
                v.push(StageKind::Credential);
            }
            if self.impersonation.is_some() {
                v.push(StageKind::Impersonation);
            }
            if self.routing.is_some() {
                v.push(StageKind::Routing);
            }
            if self.audit.is_some() {
                v.push(StageKind::Audit);
            }
            v
        }
    }

    use crate::state::with;

    pub fn init<P: Plugin>(
        table: &Table<P>,
        config: String,
        name: &str,
        version: &str,
    ) -> Result<PluginInfo, String> {
        let plugin = P::init(&Config::from_json(config))?;
        let version = plugin.version().unwrap_or_else(|| version.to_owned());
        let request_headers = plugin
            .request_headers()
            .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect());
        let credential_headers = plugin
            .credential_headers()
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        crate::state::set(plugin);
        Ok(PluginInfo {
            name: name.to_owned(),
            version,
            stages: table.stages(),
            request_headers,
            credential_headers,
        })
    }

    fn missing(stage: &str) -> Denial {
        Denial::unavailable(format!("this plugin does not implement the {stage} stage"))
    }

    fn uninitialised() -> Denial {
        Denial::unavailable("plugin called before init")
    }

    pub fn check<P: Plugin>(t: &Table<P>, req: &RequestHead) -> Result<Option<Principal>, Denial> {
        let f = t.credential.ok_or_else(|| missing("credential"))?;
        with(|p: &P| f(p, req)).unwrap_or_else(|| Err(uninitialised()))
    }

    pub fn apply<P: Plugin>(
        t: &Table<P>,
        who: &Principal,
        req: &RequestHead,
    ) -> Result<Option<Principal>, Denial> {
        let f = t.impersonation.ok_or_else(|| missing("impersonation"))?;
        with(|p: &P| f(p, who, req)).unwrap_or_else(|| Err(uninitialised()))
    }

    pub fn route<P: Plugin>(
        t: &Table<P>,
        req: &RequestHead,
        who: Option<&Principal>,
        candidates: &[Candidate],
    ) -> Result<Option<RouteChoice>, Denial> {
        let f = t.routing.ok_or_else(|| missing("routing"))?;
        with(|p: &P| f(p, req, who, candidates)).unwrap_or_else(|| Err(uninitialised()))
    }

    pub fn decide<P: Plugin>(t: &Table<P>, event: &AuditEvent) -> Result<AuditDecision, String> {
        let f = t
            .audit
            .ok_or_else(|| "this plugin does not implement the audit stage".to_owned())?;
        with(|p: &P| f(p, event)).unwrap_or_else(|| Err("plugin called before init".into()))
    }
}
