//! Hawser: a hub and an agent that govern registered Kubernetes clusters over
//! outbound, mutually authenticated TLS tunnels.
//!
//! # Layout
//! - [`config`]: TOML config for the hub and the agent, parsed once into runtime types.
//! - [`pki`], [`registry`], [`bundle`]: the hub's CA, the whitelist of registered clusters,
//!   and the bundle an operator deploys into an external cluster.
//! - [`tls`]: rustls configs for the tunnel and the front listener.
//! - [`tunnel`]: the agent-dialled tunnel (HTTP/2 over mTLS, hub is the HTTP/2 client).
//! - [`proxy`]: the request lifecycle, written as explicit phases, and forwarding rules.
//! - [`hub`], [`agent`]: the two roles wired together.
//! - [`plugin`]: the WebAssembly stage runtime.
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod agent;
pub mod audit;
pub mod bundle;
pub mod cli;
pub mod cluster_cmd;
pub mod config;
pub mod credential;
pub mod credential_cmd;
pub mod error_chain;
pub(crate) mod files;
pub mod hub;
pub mod listen;
pub mod pki;
pub mod plugin;
pub mod proxy;
pub mod registry;
pub mod rotate;
pub mod shutdown;
pub mod tls;
pub mod tunnel;
pub mod upstream;
