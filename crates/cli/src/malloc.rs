//! One process-wide allocator setting, made before anything allocates much.

/// Free memory glibc may keep at the top of a heap before handing it back (`M_TRIM_THRESHOLD`).
///
/// Every chunk of stream data is about 64 KiB. glibc treats freeing a chunk that size as a cue
/// to trim the heap (`madvise(DONTNEED)`), so the next chunk faulted in fresh zeroed pages:
/// a fifth of each node's CPU on a busy direct path went to page faults, and a forward ran at
/// 4 Gbit/s instead of 5.5. Keeping up to 32 MiB free per heap costs a busy node that much
/// resident memory at most, and nothing when idle.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 32 << 20;

/// Applies [`TRIM_THRESHOLD`]; a no-op off glibc.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a tuning parameter; any value is valid for M_TRIM_THRESHOLD,
    // and it is called on the main thread before the runtime starts.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
