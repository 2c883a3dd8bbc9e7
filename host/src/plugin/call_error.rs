//! How a failed instantiation or call is reported: the failure kind that decides the
//! HTTP status and quarantine, and a one-line detail for the operator.

use std::time::Duration;

use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap};

use super::error::FailureKind;
use super::instance::{StoreState, MAX_LIFT_BYTES};
use super::sandbox::MAX_HOST_HANDLES;

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
/// without its hash. Frames of Rust's runtime crates (the panic machinery, std's and
/// the SDK's `no_std` panic handler alike) are skipped, so a panic names the function
/// that panicked: a `no_std` plugin's panic message never reaches the host.
fn trapping_function(err: &wasmtime::Error) -> Option<String> {
    let trace = err.downcast_ref::<wasmtime::WasmBacktrace>()?;
    trace
        .frames()
        .iter()
        .filter_map(|f| f.func_name())
        .find_map(plugin_frame)
}

/// `mangled` demangled (at most 160 bytes), unless it belongs to Rust's runtime.
fn plugin_frame(mangled: &str) -> Option<String> {
    const RUNTIME: [&str; 4] = ["core::", "alloc::", "std::", "__rustc::"];
    let name = format!("{:#}", rustc_demangle::demangle(mangled));
    // `<core::fmt::Arguments as core::fmt::Display>::fmt` is runtime too.
    let bare = name.trim_start_matches('<');
    let runtime = RUNTIME.iter().any(|p| bare.starts_with(p))
        || bare.starts_with("__rust")
        || bare == "abort";
    (!runtime).then(|| truncate(&name, 160))
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

    /// Symbol names as the plugin builds carry them (`wasm-tools print`).
    #[test]
    fn panic_machinery_frames_are_skipped_and_plugin_frames_kept() {
        for runtime in [
            // The panic handler, std's and a `no_std` plugin's (`export_plugin!`) alike.
            "_RNvCsfLfy6EI15iL_7___rustc17rust_begin_unwind",
            "_RNvNtCs9pv848UzQwQ_4core9panicking9panic_fmt",
            "_RNvNtCs9pv848UzQwQ_4core9panicking18panic_bounds_check",
            "_RNvNtCshXfaRvt2tfW_3std7process5abort",
            "_RNvCsfLfy6EI15iL_7___rustc12___rust_abort",
            "_RNvCsfLfy6EI15iL_7___rustc10rust_panic",
            "abort",
            "<core::fmt::Arguments as core::fmt::Display>::fmt",
            "<alloc::string::String as core::fmt::Write>::write_str",
        ] {
            assert_eq!(plugin_frame(runtime), None, "{runtime}");
        }
        assert_eq!(
            plugin_frame("_ZN23hawser_plugin_misbehave9Misbehave3act17h5376cbc452848b64E")
                .as_deref(),
            Some("hawser_plugin_misbehave::Misbehave::act")
        );
        assert_eq!(
            plugin_frame("<my_plugin::Tokens as hawser_plugin_sdk::CredentialCheck>::check")
                .as_deref(),
            Some("<my_plugin::Tokens as hawser_plugin_sdk::CredentialCheck>::check")
        );
    }
}
