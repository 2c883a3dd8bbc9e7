//! Host-side bindings for the `hawser:plugin` WIT package, generated once from `wit/`.
//!
//! The host binds the union world `plugin` and, per stage, looks up only the exports it
//! needs ([`lifecycle`] plus the one stage interface). A component built for a narrow
//! world such as `credential-plugin` therefore loads as well as one built with the Rust
//! SDK, which exports every stage.
//!
//! Exports are `async` on the host side so that a call runs on a fiber: the epoch
//! callback can yield to the executor while a slow plugin runs, and WASI host calls made
//! by the guest (stdio, when granted) never block the executor from inside a sync call.
//! Host imports (`hawser:plugin/host`) are plain synchronous functions.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "hawser:plugin/plugin",
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

pub(crate) use self::exports::hawser::plugin::lifecycle;
pub(crate) use self::hawser::plugin::host;
