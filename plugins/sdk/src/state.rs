//! The plugin value `init` built, which every later call of the instance borrows.
//!
//! In a plugin (wasm32, no threads) it is a plain static; natively (the SDK's own
//! tests) a thread-local, since test threads run side by side.

use alloc::boxed::Box;
use core::any::Any;

#[cfg(target_arch = "wasm32")]
mod slot {
    use super::*;
    use core::cell::UnsafeCell;

    struct Slot(UnsafeCell<Option<Box<dyn Any>>>);

    // SAFETY: wasm32-wasip2 has no threads, so the slot is never shared.
    unsafe impl Sync for Slot {}

    static STATE: Slot = Slot(UnsafeCell::new(None));

    pub(crate) fn replace(value: Box<dyn Any>) {
        // SAFETY: single-threaded, and no borrow from `get` outlives its call (`with`
        // holds it only while the plugin runs, which never re-enters `init`).
        unsafe { *STATE.0.get() = Some(value) }
    }

    pub(crate) fn get<R>(f: impl FnOnce(Option<&dyn Any>) -> R) -> R {
        // SAFETY: as above; `replace` is only called from `init`, never during `f`.
        f(unsafe { (*STATE.0.get()).as_deref() })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod slot {
    use super::*;
    use core::cell::RefCell;

    std::thread_local! {
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub(crate) fn replace(value: Box<dyn Any>) {
        STATE.with(|s| *s.borrow_mut() = Some(value));
    }

    pub(crate) fn get<R>(f: impl FnOnce(Option<&dyn Any>) -> R) -> R {
        STATE.with(|s| f(s.borrow().as_deref()))
    }
}

/// Keeps `plugin` for the calls that follow, replacing any earlier one.
pub(crate) fn set<P: 'static>(plugin: P) {
    slot::replace(Box::new(plugin));
}

/// Runs `f` on the plugin `init` kept; `None` before `init` (or for another type).
pub(crate) fn with<P: 'static, R>(f: impl FnOnce(&P) -> R) -> Option<R> {
    slot::get(|s| s.and_then(|b| b.downcast_ref::<P>()).map(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_plugin_is_found_by_its_type_only() {
        assert_eq!(with(|n: &u32| *n), None, "nothing before init");
        set(7u32);
        assert_eq!(with(|n: &u32| *n + 1), Some(8));
        assert_eq!(with(|s: &&str| s.len()), None, "another type is not found");
        set(9u32);
        assert_eq!(
            with(|n: &u32| *n),
            Some(9),
            "a second init replaces the first"
        );
    }
}
