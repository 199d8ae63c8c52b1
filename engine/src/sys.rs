//! Process-wide settings for CPU work, applied once at the start of each binary by
//! [`configure_cpu_runtime`].
//!
//! - Training on the CPU allocates tens of megabytes per convolution (the im2col matrix
//!   and its gradient) on every step. glibc serves allocations that large with a fresh
//!   `mmap` and unmaps them on free, so every step pays for faulting in and zeroing
//!   hundreds of megabytes. Keeping large allocations on the heap lets them be reused.
//! - candle runs large elementwise ops on its own worker pool, whose idle workers spin
//!   before parking. On a 2-core machine those spins take the cores that the matrix
//!   multiplications (gemm's rayon pool) need; a short spin limit gives them back.
//!
//! Measured with `cargo run --release --example train_step_bench` (64x3, batch 256, f32,
//! 2 cores, other jobs running): 2.8-3.9 s per step as shipped, 2.3-2.7 s with the
//! heap setting, 1.45 s with both.

/// Candle's spin iterations before an idle worker parks (its default spins far longer).
const CANDLE_SPIN_LIMIT: &str = "100";

/// Applies the settings above. Call at the start of `main`, before any other thread or
/// any candle operation exists. An explicit `CANDLE_BARRIER_POOL_SPIN_LIMIT` is kept.
pub fn configure_cpu_runtime() {
    keep_large_allocations_on_heap();
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
    }
}

/// Makes large allocations come from (and return to) the heap instead of `mmap`.
/// A no-op where the C library is not glibc.
pub fn keep_large_allocations_on_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Whether a process with this id is running (on Unix; elsewhere assumed running, so that
/// nothing of a live process is ever cleaned up).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}
