//! Test fixture: a `no_std` credential plugin that imports neither WASI nor the host's
//! functions, so the host runs it inline (on the calling task, without a fiber) when
//! its time budget allows. Used by the host's tests; never deploy it.
//!
//! The request header `x-misbehave` picks what one call does:
//! - `loop`: spins until the host's deadline ends it;
//! - `memory-bomb`: allocates 1 MiB blocks until the memory cap stops it;
//! - `trap`: panics, which traps at once (`no_std`);
//! - `recurse`: recurses until the wasm stack is exhausted (inline, that stack is the
//!   calling thread's own);
//! - anything else, or no header: accepts the request as user `inline`, with the
//!   calls this instance has served in extra `instance-calls`.
//!
//! The config is ignored; `{}` will do.

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::hint::black_box;

use hawser_plugin_sdk::{
    export_plugin, Config, CredentialCheck, Denial, Plugin, Principal, RequestHead,
};

/// The plugin: counts the calls its instance served.
pub struct MisbehaveInline {
    calls: Cell<u64>,
}

impl Plugin for MisbehaveInline {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(MisbehaveInline {
            calls: Cell::new(0),
        })
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        Some(vec!["x-misbehave".into()])
    }
}

impl CredentialCheck for MisbehaveInline {
    fn check(&self, req: &RequestHead) -> Result<Option<Principal>, Denial> {
        self.calls.set(self.calls.get() + 1);
        match req.header("x-misbehave") {
            Some("loop") => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Some("memory-bomb") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Some("trap") => panic!("misbehave-inline: trap"),
            Some("recurse") => {
                // A limit the compiler cannot see through, far beyond any stack.
                let limit = u32::MAX - req.path.len() as u32;
                let r = recurse(0, limit);
                Err(Denial::forbidden(format!(
                    "the stack held the recursion ({r})"
                )))
            }
            _ => Ok(Some(Principal::new("inline").with_extra(
                "instance-calls",
                vec![format!("{}", self.calls.get())],
            ))),
        }
    }
}

/// Recurses until `depth` reaches `limit` (out of reach). Its locals stay in wasm
/// locals, on the wasm stack, not in the plugin's shadow stack in linear memory; the
/// arithmetic on the result keeps it from becoming a loop.
fn recurse(depth: u32, limit: u32) -> u32 {
    if depth >= limit {
        return depth;
    }
    recurse(depth + 1, limit).wrapping_mul(3) ^ depth
}

export_plugin!(MisbehaveInline: credential; no_std);

#[cfg(test)]
mod tests {
    use super::*;
    use hawser_plugin_sdk::testing::request;

    #[test]
    fn accepts_and_counts_calls_when_asked_to_behave() {
        let p = MisbehaveInline::init(&Config::from_json("{}")).unwrap();
        for n in ["1", "2"] {
            let who = p.check(&request("/", &[])).unwrap().unwrap();
            assert_eq!(who.user, "inline");
            assert_eq!(who.extra("instance-calls"), Some(&[String::from(n)][..]));
        }
    }
}
