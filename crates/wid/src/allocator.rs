//! The process's allocator: mimalloc, with its arenas committed on demand.
//!
//! The metadata server allocates a little per request on many threads at once; mimalloc's
//! thread-local free lists cost less there than glibc's arenas (BENCHMARKS.md). By default on
//! Linux mimalloc commits each arena it reserves up front, so the node agent's resident size
//! settles near what its busiest second touched (27-37 MiB in `scripts/bench-kubernetes.sh`);
//! committed on demand, freed memory goes back to the kernel: 19-22 MiB for the same run, at no
//! measured cost in throughput (BENCHMARKS.md).
//!
//! The option has to be set before the first arena is reserved, and that happens before `main`
//! (the Rust runtime allocates while it starts), so it is set from a constructor that the
//! loader runs before the runtime starts.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's index of `mi_option_arena_eager_commit` (`mimalloc.h`, `mi_option_e`: the same
/// in v2 and v3; `libmimalloc-sys` does not export it).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Registered in `.init_array`, which the dynamic loader (or the static start-up code) runs
/// before `main` and so before the Rust runtime's first allocation.
#[cfg(target_os = "linux")]
#[used]
#[allow(unsafe_code)]
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` run once at load with no
// arguments; the static is exactly one such pointer, and `commit_on_demand` neither unwinds nor
// relies on the Rust runtime being started (no allocation, no std I/O, no thread-locals).
#[unsafe(link_section = ".init_array")]
static COMMIT_ON_DEMAND: extern "C" fn() = commit_on_demand;

/// Makes arenas commit their memory on demand, unless the operator set
/// `MIMALLOC_ARENA_EAGER_COMMIT`: `mi_option_set_default` changes only a value that did not come
/// from the environment, whether mimalloc's own constructor has read the environment yet or
/// reads it after this one.
#[cfg(target_os = "linux")]
extern "C" fn commit_on_demand() {
    // SAFETY: the call takes plain integers and writes one entry of mimalloc's static option
    // table (an index out of range is ignored); it neither allocates nor unwinds. Its one
    // requirement, that no other thread use the options at the same time, holds: constructors
    // run on the main thread before `main`, when no other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0);
    }
}
