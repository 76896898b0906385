//! The process's allocator settings, and handing free memory back to the kernel.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

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

/// How much free memory the allocator may hold before [`release_free_memory`] hands it back.
/// Below it a trim is not worth its walk of the heap.
const TRIM_ABOVE: usize = 1 << 20;

/// Gives the kernel back the memory glibc's allocator holds free (`malloc_trim(3)`), when more
/// than `TRIM_ABOVE` lies free. With one arena every thread's garbage lands in the same heap:
/// sled's pages, rewritten about eleven times per create, and the start-up's decoding of every
/// record leave free chunks between live ones, which glibc only returns from the heap's top on
/// its own. `malloc_trim` also releases the whole free pages inside the heap (docs/
/// PERFORMANCE.md, section 12). The free memory counted is the main arena's (`mallinfo2`), the
/// only one unless `MALLOC_ARENA_MAX` allows more; a trim, once it runs, trims them all.
/// Returns the bytes that were free, if a trim ran. A no-op on other C libraries.
pub fn release_free_memory() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free > TRIM_ABOVE {
            // SAFETY: malloc_trim only returns free memory; every allocation stays valid.
            unsafe { libc::malloc_trim(0) };
            return Some(free);
        }
    }
    None
}

/// Runs [`release_free_memory`] on the blocking pool every `every` until `shutdown`, so the
/// resident set follows what the daemon holds rather than its busiest moment. A trim takes
/// the allocator's lock while it walks the heap (0.05–0.5 ms at 5,000 containers and 10,000
/// jobs, `benches/memory.rs`), so it stays off the reactor.
pub async fn trim_every(every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match tokio::task::spawn_blocking(release_free_memory).await {
            Ok(Some(free)) => tracing::debug!(free, "returned free memory to the kernel"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "the memory trim task failed"),
        }
    }
}
