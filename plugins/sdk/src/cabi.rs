//! What the component's core module must provide beyond the generated bindings, so that
//! a plugin links with or without std.

use alloc::alloc::{alloc, handle_alloc_error, realloc, Layout};

// `memcmp` and the other C memory routines the compiler calls come from the target's
// own wasi-libc, which std links anyway; those routines import nothing from WASI.
#[link(name = "c")]
extern "C" {}

/// The canonical ABI's allocator: the host calls it to place strings and lists in the
/// plugin's memory. A `no_std` plugin has no other; in a std plugin this one is the one
/// linked too (std's is a weak definition), and both use the global allocator.
///
/// # Safety
/// Called by the host only, with `old_ptr`/`old_len`/`align` describing a block this
/// function returned (or `old_len == 0`).
#[no_mangle]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        // A non-null, aligned pointer for an empty block.
        return align as *mut u8;
    }
    // SAFETY: the host passes a power-of-two `align` and sizes within its memory cap.
    let layout = unsafe { Layout::from_size_align_unchecked(new_len, align) };
    let block = if old_len == 0 {
        // SAFETY: `layout` has a non-zero size.
        unsafe { alloc(layout) }
    } else {
        // SAFETY: see the function's contract.
        unsafe {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    block
}
