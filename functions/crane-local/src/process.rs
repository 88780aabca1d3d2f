//! How the process that hosts the runtime (`crane-local`, and `crane-bench` measuring it in
//! process) starts: its memory allocator, mimalloc, set up before any other thread exists,
//! then the async runtime.

use std::ffi::OsStr;
use std::future::Future;

use anyhow::Context;

/// The whole of a `main`: `settle_allocator` below, then a multi-threaded tokio runtime (whose
/// threads start only after the allocator is set up) running `main` to its end.
pub fn run<F: Future>(main: F) -> anyhow::Result<F::Output> {
    settle_allocator();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(main))
}

/// Returns freed memory to the system at once and keeps transparent huge pages off, unless
/// the operator set mimalloc's own variable for either (`MIMALLOC_PURGE_DELAY`,
/// `MIMALLOC_ALLOW_THP`), which then wins.
///
/// - **Purge at once.** mimalloc (version 3) gives freed pages back 1 s after they empty,
///   and only when the thread that freed them allocates again: after a burst the idle
///   workers kept the burst's peak (`crane-local` held 100-140 MiB after draining a 4 s
///   `wrk` burst, 60-80 with this). mimalloc reads this variable when it first purges,
///   after `main` starts, so setting it here works.
/// - **No transparent huge pages.** mimalloc asks for them on its arena, and a 2 MiB page
///   stays resident while any part of it is in use: over 10,000 runs at a time its arena
///   held 41-63 MiB for about 9 MiB of live data, and moved by up to a third from one
///   10,000 runs to the next; without them 17-22 MiB. Faulting in whole huge pages was
///   also 10% of the CPU of `crane-bench`'s seed prompt (the kernel zeroing them).
///   mimalloc reads `MIMALLOC_ALLOW_THP` when the process loads, too early for `main` to
///   set it, so this asks the kernel directly (the flag is the process's, kept by its
///   children). A kernel that refuses (before Linux 3.15) costs only memory, so that is
///   ignored.
fn settle_allocator() {
    if !operator_set(std::env::var_os("MIMALLOC_PURGE_DELAY").as_deref()) {
        std::env::set_var("MIMALLOC_PURGE_DELAY", "0");
    }
    #[cfg(target_os = "linux")]
    if !operator_set(std::env::var_os("MIMALLOC_ALLOW_THP").as_deref()) {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

/// Whether the operator set this variable (even empty: mimalloc reads an empty value as on).
fn operator_set(value: Option<&OsStr>) -> bool {
    value.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_variable_set_even_empty_when_checked_then_the_operator_wins() {
        assert!(!operator_set(None));
        assert!(operator_set(Some(OsStr::new(""))));
        assert!(operator_set(Some(OsStr::new("1"))));
    }

    /// Alone in its process under `cargo nextest` (the flag is the whole process's).
    #[cfg(target_os = "linux")]
    #[test]
    fn given_no_operator_setting_when_settled_then_huge_pages_are_off_and_purges_immediate() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
            || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
        {
            panic!("unset MIMALLOC_ALLOW_THP and MIMALLOC_PURGE_DELAY to run this test");
        }
        settle_allocator();
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().ok(),
            Some(true)
        );
        assert_eq!(
            std::env::var_os("MIMALLOC_PURGE_DELAY").as_deref(),
            Some(OsStr::new("0"))
        );
    }
}
