//! Keeping freed memory returned to the system.
//!
//! glibc serves a large allocation with its own mapping and unmaps it on
//! free, but after such a free it raises its threshold for doing so to that
//! size. From then on every 16 MiB pack buffer came from the heap, and the
//! heap kept what was freed: the server's resident memory grew with every
//! backup (136 → 153 → 166 MB over three backups of the full benchmark
//! dataset) although its live data did not. A fixed threshold keeps pack
//! buffers in their own mappings: 62 MB peak for the same three backups.
//!
//! The server only (so it lives here, not in a shared crate): with a 1 MiB threshold the client (whose chunks run up
//! to 4 MiB) spent 1.5 s more system time on page faults in a 1.5 GB
//! backup, and its memory was well within bounds anyway.

/// Allocations at least this large get their own mapping: the 16 MiB pack
/// buffers, not the 4 MiB download answers or the 1 MiB write buffers.
const MMAP_THRESHOLD: i32 = 8 << 20;

/// Call once at start, before the large allocations begin.
pub fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
