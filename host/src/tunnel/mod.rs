//! The agent-dialled tunnel.
//!
//! The agent opens a TCP connection to the hub and runs TLS as the client, with
//! its registered certificate. Over that connection the roles swap: the hub is
//! the HTTP/2 *client* and the agent the HTTP/2 *server*. HTTP/2 gives the tunnel
//! what it needs without a home-made protocol: many concurrent requests on one
//! connection, per-stream flow control (a slow watch consumer only stalls its own
//! stream), and PING-based keepalive that drops a silently dead connection.
//!
//! HTTP/1.1 upgrades (exec, attach, port-forward) cross the tunnel as an HTTP/2
//! stream whose request and response bodies carry the two directions of the
//! upgraded byte stream; see [`crate::proxy::upgrade`].

mod agent_side;
pub mod backoff;
mod hub_side;
mod identity;
mod io;
mod pool;

pub use agent_side::{run_agent_tunnels, AgentTunnelState};
pub use hub_side::{serve_agents, AgentListener};
pub use identity::{Identity, IdentityError};
pub use pool::{SendError, TunnelInfo, TunnelPool};

/// HTTP/2 stream window: how much one stream may have in flight.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Largest HTTP/2 frame either side accepts: large bodies move in fewer frames.
pub const MAX_FRAME: u32 = 256 * 1024;
/// HTTP/2 connection window: room for many stalled streams before the connection
/// itself stalls.
pub const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
