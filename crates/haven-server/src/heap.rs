//! How much freed memory goes back to the system, and when.
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
/// buffers, not the 4 MiB download answers, the pack reads of up to 8 MiB
/// behind them or the 1 MiB write buffers.
const MMAP_THRESHOLD: i32 = 8 << 20;

/// Free memory a heap keeps at its top before giving it back. A fixed
/// mapping threshold also fixes this one at glibc's 128 KiB, and then every
/// download answer and pack read was returned on free and faulted in and
/// zeroed again by the next: 10% of the server's time in a restore went to
/// page faults. With 16 MiB kept, its CPU time for a restore of the
/// benchmark dataset fell from 141–161 to 111–126 ticks of 10 ms over three
/// alternating pairs (PERFORMANCE.md, round 10), its peak memory in those
/// restores rose from 32–34 to 43–51 MB, and over a first backup and a
/// restore of that dataset it peaked at 67–75 MB. The threshold holds for
/// each of glibc's heaps (up to eight per core), so a server with many
/// cores and many busy threads may keep more; measured on two cores only.
const TRIM_THRESHOLD: i32 = 16 << 20;

/// Call once at start, before the large allocations begin.
pub fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
