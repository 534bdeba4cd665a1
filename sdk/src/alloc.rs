//! A size-class allocator for filters: what [`crate::export_filter!`] installs as the global
//! allocator of a filter module.
//!
//! Why: `wasm32-wasip1`'s default allocator (wasi-libc's dlmalloc) costs about 450 wasm
//! instructions per allocation and free (measured with `tollgate bench` on a guest that
//! allocates and frees 100 small vectors per request: 47,100 instructions). A filter allocates
//! for every header it reads (the proxy-wasm crate copies each name and value), so on
//! `traffic/demo.har` the `headers` filter spent most of its 36,000 instructions per request
//! in `malloc` and `free`. Here an allocation is a pop from a free list and a free a push.
//!
//! How: requests up to [`MAX_CLASS`] bytes (alignment included) are rounded up to a power of two
//! and served from that size's free list; a class with an empty list carves a block from the
//! current chunk ([`CHUNK`] bytes, taken from the backing allocator and never given back:
//! wasm memory never shrinks anyway). A freed block goes back on its class's list, so memory
//! is bounded by the peak of live blocks per class. Larger requests go to the backing
//! allocator. A block of size `2^k` sits at an offset multiple of `2^k` in a chunk aligned to
//! [`MAX_CLASS`], so it is aligned to its size, which is at least the requested alignment.
//!
//! The state lives in a single-threaded cell: a proxy-wasm VM runs one thread (wasm32 without
//! the `atomics` feature has none). Native builds (tests) use [`SizeClasses`] as a value.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The largest block the size classes serve; larger requests go to the backing allocator.
pub const MAX_CLASS: usize = 4096;
/// The bytes taken from the backing allocator at a time for small blocks.
pub const CHUNK: usize = 64 * 1024;
/// The smallest block: a free block holds the next pointer of its list.
const MIN_SHIFT: u32 = 3;
/// Classes 8, 16, ..., 4096 bytes.
const CLASSES: usize = (MAX_CLASS.trailing_zeros() - MIN_SHIFT + 1) as usize;

/// Free lists and the chunk being carved. Not thread-safe: see [`FilterAllocator`].
pub struct SizeClasses {
    /// The head of each class's free list (a free block's first word points to the next).
    free: [*mut u8; CLASSES],
    /// The unused part of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

impl SizeClasses {
    /// Empty lists and no chunk.
    pub const fn new() -> Self {
        Self {
            free: [ptr::null_mut(); CLASSES],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
        }
    }

    /// The class index of `layout`, or `None` when the backing allocator serves it.
    #[inline(always)]
    fn class(layout: Layout) -> Option<usize> {
        let size = layout.size().max(layout.align());
        if size > MAX_CLASS {
            return None;
        }
        let shift = size.next_power_of_two().trailing_zeros().max(MIN_SHIFT);
        Some((shift - MIN_SHIFT) as usize)
    }

    /// Allocates for `layout`, using `backing` for chunks and large blocks.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size. Blocks must be freed with
    /// [`SizeClasses::dealloc`] on the same value with the same `backing`.
    #[inline]
    pub unsafe fn alloc(&mut self, layout: Layout, backing: &impl GlobalAlloc) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: the caller's contract is GlobalAlloc's.
            return unsafe { backing.alloc(layout) };
        };
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: `head` is a free block of this class, whose first word (aligned: blocks
            // are at least 8 bytes and aligned to their size) holds the next free block.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        // SAFETY: as above.
        unsafe { self.carve(class, backing) }
    }

    /// A new block of `class` from the current chunk, or from a new chunk.
    #[cold]
    unsafe fn carve(&mut self, class: usize, backing: &impl GlobalAlloc) -> *mut u8 {
        let size = 1usize << (class as u32 + MIN_SHIFT);
        let mut start = self.next;
        if start.is_null() || (self.end as usize) - (start as usize) < size {
            // SAFETY: CHUNK and MAX_CLASS make a valid layout (non-zero, power-of-two align).
            let chunk =
                unsafe { backing.alloc(Layout::from_size_align_unchecked(CHUNK, MAX_CLASS)) };
            if chunk.is_null() {
                return chunk;
            }
            // The rest of the old chunk is left unused (less than one block of this class).
            start = chunk;
            // SAFETY: `chunk` is CHUNK bytes long.
            self.end = unsafe { chunk.add(CHUNK) };
        }
        // Align within the chunk: the chunk is aligned to MAX_CLASS >= size.
        let misalign = (start as usize) & (size - 1);
        let aligned = if misalign == 0 {
            start
        } else {
            // SAFETY: stays within the chunk or reaches its end, checked below.
            unsafe { start.add(size - misalign) }
        };
        if (self.end as usize) - (aligned as usize) < size {
            // Not enough after aligning: a fresh chunk always fits (size <= MAX_CLASS).
            self.next = ptr::null_mut();
            // SAFETY: as above.
            return unsafe { self.carve(class, backing) };
        }
        // SAFETY: `aligned + size <= end`, within the chunk.
        self.next = unsafe { aligned.add(size) };
        aligned
    }

    /// Frees a block from [`SizeClasses::alloc`].
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`]: `block` came from `alloc` on this value with `layout`.
    #[inline]
    pub unsafe fn dealloc(&mut self, block: *mut u8, layout: Layout, backing: &impl GlobalAlloc) {
        match Self::class(layout) {
            Some(class) => {
                // SAFETY: the block is at least 8 bytes, aligned to 8, and no longer in use.
                unsafe { block.cast::<*mut u8>().write(self.free[class]) };
                self.free[class] = block;
            }
            // SAFETY: the caller's contract; large blocks came from `backing`.
            None => unsafe { backing.dealloc(block, layout) },
        }
    }

    /// Grows or shrinks a block, in place when the size class stays the same.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    #[inline]
    pub unsafe fn realloc(
        &mut self,
        block: *mut u8,
        layout: Layout,
        new_size: usize,
        backing: &impl GlobalAlloc,
    ) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded to the alignment, does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let (old_class, new_class) = (Self::class(layout), Self::class(new));
        if old_class.is_some() && old_class == new_class {
            return block;
        }
        if old_class.is_none() && new_class.is_none() {
            // SAFETY: both from `backing`.
            return unsafe { backing.realloc(block, layout, new_size) };
        }
        // SAFETY: `new` is non-zero sized (GlobalAlloc::realloc's contract).
        let moved = unsafe { self.alloc(new, backing) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the smaller size and do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout, backing);
            }
        }
        moved
    }
}

/// The global allocator [`crate::export_filter!`] installs in a filter module: [`SizeClasses`]
/// over the system allocator.
pub struct FilterAllocator {
    classes: UnsafeCell<SizeClasses>,
}

impl FilterAllocator {
    /// An allocator with nothing allocated yet.
    pub const fn new() -> Self {
        Self {
            classes: UnsafeCell::new(SizeClasses::new()),
        }
    }
}

impl Default for FilterAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: only sound where a single thread runs, which is what the export macro guarantees by
// installing it only on wasm32 without atomics (a proxy-wasm VM is one thread). Native builds
// never install it as the global allocator.
unsafe impl Sync for FilterAllocator {}

// SAFETY: every method forwards to `SizeClasses` with `System` as backing; the single-threaded
// use (above) makes the `&mut` from the cell unique for the duration of each call, and no call
// re-enters the allocator (System does not allocate through the global allocator).
unsafe impl GlobalAlloc for FilterAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { (*self.classes.get()).alloc(layout, &std::alloc::System) }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: see the impl.
        unsafe { (*self.classes.get()).dealloc(block, layout, &std::alloc::System) }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { (*self.classes.get()).realloc(block, layout, new_size, &std::alloc::System) }
    }
}

#[cfg(test)]
mod tests {
    //! Random allocation sequences against the invariants: every block aligned, inside no other
    //! live block, its contents kept until freed; freed blocks reused.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::alloc::System;

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    struct Live {
        ptr: *mut u8,
        layout: Layout,
        fill: u8,
    }

    fn check(live: &[Live]) {
        let mut spans: Vec<(usize, usize)> = live
            .iter()
            .map(|l| (l.ptr as usize, l.ptr as usize + l.layout.size()))
            .collect();
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlapping blocks {pair:?}");
        }
        for l in live {
            let bytes = unsafe { std::slice::from_raw_parts(l.ptr, l.layout.size()) };
            assert!(
                bytes.iter().all(|&b| b == l.fill),
                "a block's contents changed"
            );
        }
    }

    #[test]
    fn random_sequences_keep_blocks_apart_aligned_and_intact() {
        let mut classes = SizeClasses::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live: Vec<Live> = Vec::new();
        for step in 0..20_000u32 {
            match rng.below(10) {
                0..=4 => {
                    let size = match rng.below(4) {
                        0 => 1 + rng.below(16),
                        1 => 1 + rng.below(300),
                        2 => 1 + rng.below(MAX_CLASS as u64 + 200),
                        _ => 1 + rng.below(20_000),
                    } as usize;
                    let align = 1usize << rng.below(8);
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let ptr = unsafe { classes.alloc(layout, &System) };
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % align, 0, "misaligned for {layout:?}");
                    let fill = step as u8;
                    unsafe { ptr.write_bytes(fill, size) };
                    live.push(Live { ptr, layout, fill });
                }
                5..=7 if !live.is_empty() => {
                    let l = live.swap_remove(rng.below(live.len() as u64) as usize);
                    unsafe { classes.dealloc(l.ptr, l.layout, &System) };
                }
                _ if !live.is_empty() => {
                    let index = rng.below(live.len() as u64) as usize;
                    let new_size = 1 + rng.below(6000) as usize;
                    let l = &mut live[index];
                    let kept = l.layout.size().min(new_size);
                    let ptr = unsafe { classes.realloc(l.ptr, l.layout, new_size, &System) };
                    assert!(!ptr.is_null());
                    let bytes = unsafe { std::slice::from_raw_parts(ptr, kept) };
                    assert!(bytes.iter().all(|&b| b == l.fill), "realloc lost contents");
                    l.ptr = ptr;
                    l.layout = Layout::from_size_align(new_size, l.layout.align()).unwrap();
                    unsafe { ptr.write_bytes(l.fill, new_size) };
                }
                _ => {}
            }
            if step % 500 == 0 {
                check(&live);
            }
        }
        check(&live);
        for l in live {
            unsafe { classes.dealloc(l.ptr, l.layout, &System) };
        }
    }

    #[test]
    fn a_freed_block_is_reused_by_its_class() {
        let mut classes = SizeClasses::new();
        let layout = Layout::from_size_align(24, 8).unwrap();
        let a = unsafe { classes.alloc(layout, &System) };
        unsafe { classes.dealloc(a, layout, &System) };
        // 17..=32 bytes share the 32-byte class.
        let b = unsafe { classes.alloc(Layout::from_size_align(32, 1).unwrap(), &System) };
        assert_eq!(a, b);
        let c = unsafe { classes.alloc(layout, &System) };
        assert_ne!(b, c);
    }

    #[test]
    fn classes_round_up_to_powers_of_two_with_alignment() {
        let class = |size, align| SizeClasses::class(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(8, 8), Some(0));
        assert_eq!(class(9, 1), Some(1));
        assert_eq!(class(1, 64), Some(3));
        assert_eq!(class(MAX_CLASS, 1), Some(CLASSES - 1));
        assert_eq!(class(MAX_CLASS + 1, 1), None);
        assert_eq!(class(8, 8192), None);
    }
}
