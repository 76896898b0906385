//! The process's allocator settings.

/// How many malloc arenas glibc may keep. Its default, eight per core, gives every thread that
/// allocates (tokio's workers and blocking pool, sled's IO threads) an arena of its own, each
/// holding on to freed memory: the daemon's RSS grew by ≈ 48 KiB per container created.
/// One arena holds it to ≈ 26 KiB (`benches/scale.rs`, see docs/PERFORMANCE.md: 22.8 MiB at
/// 500 containers, against 28.2 with two arenas and 33.5 with glibc's default). The price,
/// measured in `benches/accept.rs`: ≈ 12 % fewer accepts/s at 32 clients, p99 unchanged.
const MALLOC_ARENAS: i32 = 1;

/// Caps glibc's malloc arenas at `MALLOC_ARENAS`, unless `MALLOC_ARENA_MAX` is set in the
/// environment (glibc reads that itself, and an operator's choice wins). Call it first thing
/// in `main`, before any thread starts. A no-op on other C libraries.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called before any other thread runs.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
        if ok != 1 {
            eprintln!("creepy-meow: could not limit malloc arenas (mallopt failed); going on");
        }
    }
}
