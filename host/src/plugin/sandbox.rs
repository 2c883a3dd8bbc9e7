//! What a plugin instance can reach: the WASI capabilities its stage grants
//! (`[stage.grants]`, nothing by default) and the limits on host resources the
//! linear-memory cap does not count (random bytes, host handles).

use std::path::PathBuf;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::instance::StoreState;

/// Capabilities granted to a plugin (`[stage.grants]`). Everything is off by default:
/// no stdio, no environment, no files; sockets are never granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Grants {
    /// Guest stdout goes to the host's stdout.
    pub stdout: bool,
    /// Guest stderr goes to the host's stderr.
    pub stderr: bool,
    /// Environment variables visible to the guest.
    pub env: Vec<(String, String)>,
    /// Host directories preopened read-only, as `(host path, guest path)`.
    pub read_dirs: Vec<(PathBuf, String)>,
}

impl Grants {
    pub(super) fn wasi_ctx(&self) -> wasmtime::Result<WasiCtx> {
        let mut b = WasiCtxBuilder::new();
        if self.stdout {
            b.inherit_stdout();
        }
        if self.stderr {
            b.inherit_stderr();
        }
        for (k, v) in &self.env {
            b.env(k, v);
        }
        for (host, guest) in &self.read_dirs {
            b.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        // A plugin needs a few random bytes (a nonce); each request is a host
        // allocation the memory cap does not count (wasmtime's default allows 64 MiB).
        b.max_random_size(MAX_RANDOM_BYTES);
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Ok(b.build())
    }
}

/// Random bytes a plugin may ask WASI for in one call.
pub(crate) const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// Host handles (WASI streams, pollables, files) one instance may hold at once. Each
/// is host memory the linear-memory cap does not count; a plugin needs a handful.
pub(crate) const MAX_HOST_HANDLES: usize = 1024;

pub(super) fn handle_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HOST_HANDLES);
    table
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            // A component that imports WASI gets its context when it is instantiated;
            // one that does not never calls here. Should it anyway, the context made
            // here grants nothing.
            ctx: self
                .wasi
                .get_or_insert_with(|| WasiCtxBuilder::new().build()),
            table: &mut self.table,
        }
    }
}
