//! How a failed instantiation or call is reported: the failure kind that decides the
//! HTTP status and quarantine, and a one-line detail for the operator.

use std::time::Duration;

use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap};

use super::error::FailureKind;
use super::instance::{StoreState, MAX_HOST_HANDLES, MAX_LIFT_BYTES};

/// A failed instantiation or call, classified.
pub(crate) struct CallError {
    pub(crate) kind: FailureKind,
    pub(crate) detail: String,
}

pub(super) fn wall_clock_exceeded(limit: Duration) -> CallError {
    CallError {
        kind: FailureKind::Timeout,
        detail: format!(
            "wall-clock limit of {} ms exceeded (the plugin was waiting in a host call)",
            limit.as_millis()
        ),
    }
}

pub(super) fn classify(
    err: &wasmtime::Error,
    store: &Store<StoreState>,
    default: FailureKind,
) -> CallError {
    if store.data().memory.exceeded {
        return CallError {
            kind: FailureKind::MemoryLimit,
            detail: format!(
                "memory cap of {} MiB exceeded",
                store.data().memory_cap_mib()
            ),
        };
    }
    if matches!(
        err.downcast_ref::<ResourceTableError>(),
        Some(ResourceTableError::Full)
    ) {
        return CallError {
            kind: FailureKind::MemoryLimit,
            detail: format!("more than {MAX_HOST_HANDLES} host handles (WASI streams, timers, files) open at once"),
        };
    }
    // wasmtime's error for exhausted hostcall fuel has no public type.
    if format!("{err:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return CallError {
            kind: FailureKind::MemoryLimit,
            detail: format!(
                "more than {} MiB handed to the host in one call",
                MAX_LIFT_BYTES >> 20
            ),
        };
    }
    // Every slot of the pooling allocator is taken: the host is short of capacity,
    // which is not the plugin's fault and must not count towards its quarantine.
    if err.is::<wasmtime::PoolConcurrencyLimitError>() {
        return CallError {
            kind: FailureKind::Overloaded,
            detail: "no free plugin instance slot (runtime.max_instances reached)".into(),
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError {
            kind: FailureKind::Timeout,
            detail: "time budget exceeded".into(),
        },
        Some(trap) => CallError {
            kind: FailureKind::Trap,
            detail: match trapping_function(err) {
                // `Trap`'s text starts with "wasm trap: ".
                Some(func) => format!("{trap} (in {func})"),
                None => trap.to_string(),
            },
        },
        None => CallError {
            kind: default,
            // The innermost error says what failed (a host call refusing its
            // arguments, say); the outer ones only add "error while executing".
            detail: truncate(&err.root_cause().to_string(), 256),
        },
    }
}

/// The innermost function of the plugin's own code on a trap's stack, demangled and
/// without its hash. Frames of Rust's runtime crates (the panic machinery) and of the
/// SDK's panic handler are skipped, so a panic names the function that panicked: a
/// `no_std` plugin's panic message never reaches the host.
fn trapping_function(err: &wasmtime::Error) -> Option<String> {
    let trace = err.downcast_ref::<wasmtime::WasmBacktrace>()?;
    trace
        .frames()
        .iter()
        .filter_map(|f| f.func_name())
        .map(|name| format!("{:#}", rustc_demangle::demangle(name)))
        .find(|name| !is_runtime_frame(name))
        .map(|name| truncate(&name, 160))
}

fn is_runtime_frame(name: &str) -> bool {
    const RUNTIME: [&str; 5] = ["core::", "alloc::", "std::", "__rustc::", "<core::"];
    RUNTIME.iter().any(|p| name.starts_with(p))
        || name.contains("__hawser_panic")
        || name.starts_with("rust_")
        || name.starts_with("__rust")
        || name == "abort"
}

impl StoreState {
    fn memory_cap_mib(&self) -> usize {
        self.memory.max() / (1024 * 1024)
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let mut end = first.len().min(max);
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    first[..end].escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_machinery_frames_are_skipped_and_plugin_frames_kept() {
        for runtime in [
            "core::panicking::panic_fmt",
            "core::option::unwrap_failed",
            "<core::fmt::Arguments as core::fmt::Display>::fmt",
            "std::process::abort",
            "__rustc::rust_begin_unwind",
            "__rust_start_panic",
            "alloc::alloc::handle_alloc_error",
            // A `no_std` plugin's handler, defined by `export_plugin!` in a `const _`.
            "hawser_plugin_header_credential::_::__hawser_panic",
        ] {
            assert!(is_runtime_frame(runtime), "{runtime}");
        }
        for plugin in [
            "hawser_plugin_misbehave::Misbehave::act",
            "<my_plugin::Tokens as hawser_plugin_sdk::CredentialCheck>::check",
        ] {
            assert!(!is_runtime_frame(plugin), "{plugin}");
        }
    }
}
