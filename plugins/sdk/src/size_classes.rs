//! A size-class allocator for plugins (the `fast-alloc` feature, on by default).
//!
//! Every call into a plugin allocates: the host places each string of the request in
//! the guest's memory through `cabi_realloc`, the guest frees them when the call ends,
//! and the reply is built from fresh `String`s and `Vec`s. With Rust's default wasm
//! allocator (dlmalloc) that bookkeeping was about a fifth of a stage call. Small
//! requests are served here instead from one free list per power-of-two size class:
//! a pop or a push, no splitting or coalescing.
//!
//! Freed blocks stay in their class for reuse and are never given back; a plugin's
//! small-object memory is bounded by its peak of live small objects (rounded up to the
//! class size), and the host's memory cap still applies. Requests above
//! [`MAX_SMALL`] bytes, or aligned to more than 16, and the chunks the classes are cut
//! from, go to the backing allocator: in a plugin, the target's own C `malloc` (what
//! Rust's std uses on this target too, here without needing std). It starts in the
//! free part of the initial linear memory, so a fresh instance rarely grows its memory.
//!
//! Plugins are single-threaded (`wasm32-wasip2` has no threads), which is what makes the
//! unsynchronised state sound; the allocator is only installed for `wasm32`. A plugin
//! that wants its own global allocator turns the feature off
//! (`default-features = false`); a `no_std` plugin must then install one itself.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Size classes: 16, 32, ..., 2048 bytes.
const CLASSES: usize = 8;
const MIN_SHIFT: u32 = 4;
/// The largest request served from a size class.
pub const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// Alignment of every small block (every class size is a multiple of it).
const ALIGN: usize = 16;
/// Small blocks are carved from chunks taken from the system allocator, starting at
/// `FIRST_CHUNK` bytes and doubling up to `MAX_CHUNK`. The small start matters for fresh
/// instances: a large first chunk grows the linear memory and touches new pages in
/// every instance, which costs more than the allocator saves.
const FIRST_CHUNK: usize = 1024;
const MAX_CHUNK: usize = 32 * 1024;

/// Free lists and the current chunk over a backing allocator `B`. Not thread-safe: see
/// the module docs.
pub struct SizeClasses<B> {
    backing: B,
    state: UnsafeCell<State>,
}

struct State {
    /// Head of each class's free list; a free block stores the next pointer.
    free: [*mut u8; CLASSES],
    /// Unused tail of the current chunk.
    next: *mut u8,
    end: *mut u8,
    /// Size of the next chunk to take.
    chunk: usize,
}

// SAFETY: plugins run single-threaded (see the module docs); the global instance is only
// installed for wasm32, which has no threads here.
unsafe impl<B: Sync> Sync for SizeClasses<B> {}

impl<B> SizeClasses<B> {
    /// An empty allocator; memory is taken from `backing` on first use.
    pub const fn new(backing: B) -> Self {
        SizeClasses {
            backing,
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
                chunk: FIRST_CHUNK,
            }),
        }
    }
}

/// The class of `layout`, or `None` when the backing allocator serves it.
fn class(layout: &Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(1 << MIN_SHIFT);
    Some((usize::BITS - (size - 1).leading_zeros() - MIN_SHIFT) as usize)
}

fn class_size(class: usize) -> usize {
    1 << (class as u32 + MIN_SHIFT)
}

impl State {
    unsafe fn alloc_small(&mut self, class: usize, backing: &impl GlobalAlloc) -> *mut u8 {
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a free block holds the next pointer in its first bytes.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = class_size(class);
        if (self.end as usize) - (self.next as usize) < size {
            // The tail of the old chunk (smaller than this class) is abandoned.
            let len = self.chunk.max(size);
            // SAFETY: `len` is a multiple of ALIGN, far below isize::MAX.
            let chunk = unsafe { backing.alloc(Layout::from_size_align_unchecked(len, ALIGN)) };
            if chunk.is_null() {
                return chunk;
            }
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
            self.next = chunk;
            // SAFETY: within the chunk just allocated.
            self.end = unsafe { chunk.add(len) };
        }
        let block = self.next;
        // SAFETY: at least `size` bytes remain in the chunk (checked above).
        self.next = unsafe { block.add(size) };
        block
    }

    unsafe fn free_small(&mut self, block: *mut u8, class: usize) {
        // SAFETY: every block is at least 16 bytes and 16-aligned, enough for a pointer.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }
}

unsafe impl<B: GlobalAlloc> GlobalAlloc for SizeClasses<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            // SAFETY: single-threaded (module docs); no other borrow of the state is live.
            Some(c) => unsafe { (*self.state.get()).alloc_small(c, &self.backing) },
            None => unsafe { self.backing.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(&layout) {
            // SAFETY: `ptr` came from `alloc` with this layout, hence from this class.
            Some(c) => unsafe { (*self.state.get()).free_small(ptr, c) },
            None => unsafe { self.backing.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` with `new_size` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(&layout), class(&new)) {
            // Same block size: nothing to move (common when a String grows a little).
            (Some(a), Some(b)) if a == b => ptr,
            (None, None) => unsafe { self.backing.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new` is valid; both blocks are live and distinct.
                let fresh = unsafe { self.alloc(new) };
                if !fresh.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                fresh
            }
        }
    }
}

/// The target's C allocator (wasi-libc's `malloc`, linked by `cabi.rs`).
#[cfg(target_arch = "wasm32")]
pub struct Malloc;

#[cfg(target_arch = "wasm32")]
mod malloc {
    use super::*;

    extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
        fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    }

    /// What `malloc` guarantees on wasm32.
    const MIN_ALIGN: usize = 8;

    fn plain(layout: &Layout) -> bool {
        layout.align() <= MIN_ALIGN && layout.align() <= layout.size()
    }

    unsafe impl GlobalAlloc for Malloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if plain(&layout) {
                unsafe { malloc(layout.size()) }
            } else {
                unsafe { aligned_alloc(layout.align(), layout.size()) }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            unsafe { free(ptr) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller guarantees the new layout is valid.
            let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            if plain(&new) {
                return unsafe { realloc(ptr, new_size) };
            }
            let fresh = unsafe { self.alloc(new) };
            if !fresh.is_null() {
                unsafe {
                    ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                    free(ptr);
                }
            }
            fresh
        }
    }
}

#[cfg(all(target_arch = "wasm32", feature = "fast-alloc"))]
#[global_allocator]
static GLOBAL: SizeClasses<Malloc> = SizeClasses::new(Malloc);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_map_to_the_smallest_class_that_fits() {
        assert_eq!(class(&layout(0, 1)), Some(0));
        assert_eq!(class(&layout(16, 8)), Some(0));
        assert_eq!(class(&layout(17, 1)), Some(1));
        assert_eq!(class(&layout(2048, 16)), Some(7));
        assert_eq!(class(&layout(2049, 1)), None);
        assert_eq!(class(&layout(8, 32)), None);
        for size in 1..=MAX_SMALL {
            let c = class(&layout(size, 1)).unwrap();
            assert!(class_size(c) >= size && (c == 0 || class_size(c - 1) < size));
        }
    }

    #[test]
    fn freed_blocks_are_reused_and_live_blocks_never_overlap() {
        let a = SizeClasses::new(System);
        unsafe {
            let mut live: Vec<(*mut u8, Layout)> = Vec::new();
            for i in 0..3000 {
                let l = layout(1 + (i * 37) % 3000, if i % 3 == 0 { 16 } else { 8 });
                let p = a.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                p.write_bytes((i % 251) as u8, l.size());
                live.push((p, l));
                if i % 4 == 0 {
                    let (q, lq) = live.remove(live.len() / 2);
                    a.dealloc(q, lq);
                }
            }
            // Every live block still holds its own pattern: no two overlapped.
            for (i, &(p, l)) in live.iter().enumerate() {
                let first = *p;
                assert!((0..l.size()).all(|k| *p.add(k) == first), "block {i}");
            }
            let l = layout(100, 8);
            let p = a.alloc(l);
            a.dealloc(p, l);
            assert_eq!(a.alloc(l), p, "a freed block is handed out again");
            for (p, l) in live {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_to_the_system() {
        let a = SizeClasses::new(System);
        unsafe {
            let l = layout(10, 1);
            let p = a.alloc(l);
            p.copy_from_nonoverlapping(b"0123456789".as_ptr(), 10);
            assert_eq!(a.realloc(p, l, 16), p, "same class: same block");
            let q = a.realloc(p, l, 100);
            let r = a.realloc(q, layout(100, 1), 5000);
            assert_eq!(core::slice::from_raw_parts(r, 10), b"0123456789");
            let s = a.realloc(r, layout(5000, 1), 20);
            assert_eq!(core::slice::from_raw_parts(s, 10), b"0123456789");
            a.dealloc(s, layout(20, 1));
        }
    }
}
