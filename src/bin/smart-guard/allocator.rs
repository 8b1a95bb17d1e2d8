//! The binary's global allocator: mimalloc, asked the way the standard library asks the system
//! allocator.
//!
//! The `mimalloc` crate passes every request to `mi_malloc_aligned`, alignment included. In
//! mimalloc 3.x that call takes the allocator's plain path only while the size class's free
//! list has a block ready; once the list is empty, a size whose class is not a power of two
//! (40, 48, 80 bytes...) is served by over-allocating `size + align - 1` bytes from another
//! class. The emptied list is never refilled by those calls, so a steady load keeps paying the
//! slow path: 3.4 of the eleven allocations of a proxied request took it (BENCHMARKS.md,
//! "one-buffer writes").
//!
//! mimalloc's plain `mi_malloc` already aligns every block of more than 8 bytes to 16 (its size
//! classes are multiples of 16 on 64-bit targets; `MI_MAX_ALIGN_SIZE`), and every block to 8. So,
//! like `std::alloc::System`, this calls the plain functions when the alignment is at most 16 and
//! at most the size, and the aligned ones otherwise.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// The largest alignment `mi_malloc` gives every block at least as large as the alignment.
const NATURAL_ALIGN: usize = 16;

/// mimalloc, with the standard library's choice between its plain and aligned calls.
pub(crate) struct MiMalloc;

impl MiMalloc {
    /// Whether a block of `size` bytes from the plain calls is aligned to `align`.
    #[inline]
    const fn natural(size: usize, align: usize) -> bool {
        align <= NATURAL_ALIGN && align <= size
    }
}

// SAFETY: every call hands mimalloc a size and (where asked) an alignment from a valid `Layout`;
// the plain calls are used only where mimalloc's blocks already meet the alignment (module docs),
// and every block, however allocated, is freed by `mi_free`, which takes either kind.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc accepts any size; the alignment is a power of two (`Layout`).
        unsafe {
            if Self::natural(layout.size(), layout.align()) {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if Self::natural(layout.size(), layout.align()) {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract).
        unsafe {
            if Self::natural(new_size, layout.align()) {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_meets_its_layouts_alignment() {
        let sizes = [1, 7, 8, 9, 16, 24, 40, 48, 72, 80, 100, 4000, 5000, 70_000];
        let aligns = [1, 2, 4, 8, 16, 32, 64, 4096];
        for &size in &sizes {
            for &align in &aligns {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed once, with its layout.
                unsafe {
                    for _ in 0..64 {
                        let p = MiMalloc.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                        let q = MiMalloc.realloc(p, layout, size * 3);
                        assert_eq!(
                            q as usize % align,
                            0,
                            "realloc to {}, align {align}",
                            size * 3
                        );
                        MiMalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                        let z = MiMalloc.alloc_zeroed(layout);
                        assert_eq!(z as usize % align, 0);
                        assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                        MiMalloc.dealloc(z, layout);
                    }
                }
            }
        }
    }
}
