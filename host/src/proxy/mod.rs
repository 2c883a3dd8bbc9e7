//! The request path: lifecycle phases, forwarding rules, and the listeners that run
//! them (the hub's front listener and the agent's tunnel handler).

pub mod audit_trail;
pub mod body;
pub mod forward;
pub mod framing;
pub mod front;
pub mod headers;
mod hub_request;
pub mod lifecycle;
mod pipeline;
pub mod request_info;
pub mod route;
pub mod status;
pub mod upgrade;
