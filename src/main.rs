//! The `msgext` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    tune_allocator();
    msgext::app::main()
}

/// Keep the resident set flat over long runs. glibc raises its mmap threshold
/// as large buffers are freed, after which they come from arenas that only
/// grow, and it opens an arena per busy thread; measured with `cargo bench
/// --bench throughput`, a fixed threshold and two arenas keep the peak at
/// 1.25M rows within 1.3x of the peak at 50k rows (README, Performance).
///
/// The threshold is 4 MiB and up to 16 MiB of freed heap is kept: the
/// Parquet writer's page buffers (up to about 1 MiB, one set a page) then
/// come back from the heap instead of being mapped, faulted in page by page
/// and unmapped again. Measured (6,250 pages of 200 pairs, limit off): 56-62
/// thousand page faults became 6.4 thousand, CPU a page 0.33 -> 0.27 ms,
/// peak RSS at 1.25M rows 33.0 -> 37.7 MB (at 200k one-pair messages 43.2
/// -> 51.1 MB; the target is 64 MB). A fixed 128 KiB threshold had mapped
/// each of those buffers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
