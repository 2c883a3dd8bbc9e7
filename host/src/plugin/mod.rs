//! plugin
mod bindings;
