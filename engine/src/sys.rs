//! Process-wide settings for CPU work.
//!
//! Training on the CPU allocates tens of megabytes per convolution (the im2col matrix
//! and its gradient) on every step. glibc serves allocations that large with a fresh
//! `mmap` each time and unmaps them on free, so every step pays for faulting in and
//! zeroing hundreds of megabytes of new pages. Keeping large allocations on the heap
//! lets them be reused: measured on the 2-core CI machine, a 64x3 training step at batch
//! 256 went from 3.1-3.9 s to 2.3-2.7 s (same process, `train_step_bench`).

/// Makes large allocations come from (and return to) the heap instead of `mmap`.
/// Call once at start, before heavy work. A no-op where the C library is not glibc.
pub fn keep_large_allocations_on_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
