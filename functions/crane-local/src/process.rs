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

/// Returns freed memory to the system at once, keeps a page freed into by another thread
/// with the thread that owned it, keeps transparent huge pages off and gives SQLite (glibc's
/// `malloc`) one arena, unless the operator set the allocator's own variable for any of
/// them (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_PAGE_RECLAIM_ON_FREE`, `MIMALLOC_ALLOW_THP`,
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` naming `glibc.malloc.arena_max`), which then wins.
///
/// - **Purge at once.** mimalloc (version 3) gives freed pages back 1 s after they empty,
///   and only when the thread that freed them allocates again: after a burst the idle
///   workers kept the burst's peak (`crane-local` held 100-140 MiB after draining a 4 s
///   `wrk` burst, 60-80 with this). mimalloc reads this variable before `main` too: set
///   from `main` (as it was until `5798996`), it was left at 1 s; `crane-local` held
///   33.2-34.0 MiB after 10,000-run chunks that way and 30.9-31.8 MiB with it read at load.
/// - **No reclaim on free** (`MIMALLOC_PAGE_RECLAIM_ON_FREE=-1`). A thread that frees a
///   block into a page another thread's heap gave up (mimalloc 3 "abandons" pages) may by
///   default take the page into its own heap. The runtime's threads hand memory to each
///   other all the time (what the writer and the readers build is freed on the async
///   workers), and the pages moved that way stayed resident: over 100,000 runs in chunks
///   of 10,000, `crane-local`'s RSS moved by 2-19% between chunks on a machine completing
///   ~10,000 runs/s (36-43 MiB), and by 1-11% without it (30-34 MiB), at the same speed.
///   mimalloc reads this variable before `main`, so [`settle_at_load`] starts the program
///   again with it (and with the purge delay and the arenas below).
/// - **One glibc arena** (`MALLOC_ARENA_MAX=1`). Only SQLite allocates with glibc's
///   `malloc` (the rest is mimalloc's), and it allocates little once its caches are set up,
///   so an arena per thread (the writer and four readers) bought nothing: glibc's share of
///   RSS stepped from 2.6 to 4.1-4.5 MiB during the second 10,000 runs; with one arena it
///   stays at 4.7 MiB from the first, the process's total ~2.5 MiB lower, at the same
///   speed. glibc reads it at its first allocation, before `main`: set the same way.
/// - **No transparent huge pages.** mimalloc asks for them on its arena, and a 2 MiB page
///   stays resident while any part of it is in use: over 10,000 runs at a time its arena
///   held 41-63 MiB for about 9 MiB of live data, and moved by up to a third from one
///   10,000 runs to the next; without them 17-22 MiB. Faulting in whole huge pages was
///   also 10% of the CPU of `crane-bench`'s seed prompt (the kernel zeroing them).
///   mimalloc reads `MIMALLOC_ALLOW_THP` when the process loads, too early for `main` to
///   set it, so this asks the kernel directly, before starting the program again: the
///   flag is the process's, kept across `exec` and by its children, so the new image loads
///   with it. A kernel that refuses (before Linux 3.15) costs only memory, so that is
///   ignored.
fn settle_allocator() {
    // First, so that the program started again loads with it.
    #[cfg(target_os = "linux")]
    huge_pages_off();
    #[cfg(unix)]
    settle_at_load();
}

/// Transparent huge pages off for the process, unless the operator set `MIMALLOC_ALLOW_THP`.
#[cfg(target_os = "linux")]
fn huge_pages_off() {
    if !operator_set(std::env::var_os("MIMALLOC_ALLOW_THP").as_deref()) {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

/// An allocator's setting it reads only while the process loads, before `main`.
struct AtLoad {
    /// The variable, and its value here (see [`settle_allocator`]).
    name: &'static str,
    value: &'static str,
    /// Another variable that, when it holds this text, also sets it.
    also_in: Option<(&'static str, &'static str)>,
}

const AT_LOAD: [AtLoad; 3] = [
    AtLoad {
        name: "MIMALLOC_PURGE_DELAY",
        value: "0",
        also_in: None,
    },
    AtLoad {
        name: "MIMALLOC_PAGE_RECLAIM_ON_FREE",
        value: "-1",
        also_in: None,
    },
    AtLoad {
        name: "MALLOC_ARENA_MAX",
        value: "1",
        also_in: Some(("GLIBC_TUNABLES", "glibc.malloc.arena_max")),
    },
];

/// The settings of [`AT_LOAD`] the operator left unset, to be set.
fn unset_at_load(
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, &'static str)> {
    AT_LOAD
        .into_iter()
        .filter(|s| !operator_set(lookup(s.name).as_deref()))
        .filter(|s| {
            s.also_in.is_none_or(|(other, text)| {
                lookup(other).is_none_or(|v| !v.to_string_lossy().contains(text))
            })
        })
        .map(|s| (s.name, s.value))
        .collect()
}

/// When a setting of [`AT_LOAD`] is unset, start this program again in place (`exec`: the
/// same process id, arguments and environment, plus those settings), before any thread of
/// ours exists. The new image finds them set and goes on. If the program cannot be started
/// again, this one goes on with the allocators' defaults: it costs memory, not correctness.
#[cfg(unix)]
fn settle_at_load() {
    use std::os::unix::process::CommandExt;
    let unset = unset_at_load(|name| std::env::var_os(name));
    if unset.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    again.args(args).envs(unset);
    // Returns only if the program could not be started again.
    let error = again.exec();
    eprintln!("crane: could not start again with the allocators' settings ({error}); going on with their defaults");
}

/// Whether the operator set this variable (even empty: mimalloc reads an empty value as on).
fn operator_set(value: Option<&OsStr>) -> bool {
    value.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_settings_read_at_load_when_unset_then_they_are_set_and_the_operators_win() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = vec![
            ("MIMALLOC_PURGE_DELAY", "0"),
            ("MIMALLOC_PAGE_RECLAIM_ON_FREE", "-1"),
            ("MALLOC_ARENA_MAX", "1"),
        ];
        assert_eq!(unset_at_load(env(&[])), all);
        assert_eq!(
            unset_at_load(env(&[("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")])),
            all,
            "tunables that do not name the arenas"
        );
        assert_eq!(
            unset_at_load(env(&[
                ("MIMALLOC_PAGE_RECLAIM_ON_FREE", "0"),
                ("MIMALLOC_PURGE_DELAY", "10")
            ])),
            vec![("MALLOC_ARENA_MAX", "1")]
        );
        assert_eq!(
            unset_at_load(env(&[("MALLOC_ARENA_MAX", "")])),
            vec![
                ("MIMALLOC_PURGE_DELAY", "0"),
                ("MIMALLOC_PAGE_RECLAIM_ON_FREE", "-1")
            ],
            "set, even empty"
        );
        assert_eq!(
            unset_at_load(env(&[
                ("GLIBC_TUNABLES", "glibc.malloc.arena_max=4"),
                ("MIMALLOC_PAGE_RECLAIM_ON_FREE", "1"),
                ("MIMALLOC_PURGE_DELAY", "1000"),
            ])),
            vec![]
        );
    }

    #[test]
    fn given_a_variable_set_even_empty_when_checked_then_the_operator_wins() {
        assert!(!operator_set(None));
        assert!(operator_set(Some(OsStr::new(""))));
        assert!(operator_set(Some(OsStr::new("1"))));
    }

    /// Alone in its process under `cargo nextest` (the flag is the whole process's).
    #[cfg(target_os = "linux")]
    #[test]
    fn given_no_operator_setting_when_settled_then_huge_pages_are_off() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            panic!("unset MIMALLOC_ALLOW_THP to run this test");
        }
        // Not `settle_allocator`, which would start the test binary again: a start's
        // load-time settings (the purge delay of 0 among them) are checked on
        // `crane-local` itself, in `tests/kill_restart.rs`.
        huge_pages_off();
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().ok(),
            Some(true)
        );
    }
}
