//! `crane-local`: the whole runtime in one process on 127.0.0.1, over an embedded store.

use anyhow::Context;
use clap::Parser;
use crane::config::Config;

/// mimalloc instead of the system allocator: under load glibc's malloc and free took about
/// a quarter of the runtime's CPU (its arenas contend across the worker threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Crane's local runtime: the HTTP API, workers, reactor and saga over SQLite.
#[derive(Debug, Parser)]
#[command(name = "crane-local", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CRANE_ADDR", default_value = "127.0.0.1:3000")]
    addr: String,
    /// SQLite database file (created if missing).
    #[arg(long, env = "CRANE_DB", default_value = "./crane.db")]
    db: std::path::PathBuf,
    /// Serve without API keys (every caller is the default tenant) even on an address
    /// other machines can reach. Without it, that refuses to start.
    #[arg(long, env = "CRANE_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
}

fn main() -> anyhow::Result<()> {
    // mimalloc gives freed pages back to the system 10 ms after they empty, but only when
    // the thread that freed them allocates again: after a burst the idle workers kept
    // the burst's peak (crane-local held 100-140 MiB after draining a 4 s wrk burst, 60-80
    // with this). Purging at once costs no throughput we can measure. Read when mimalloc
    // first purges, so it is set here, before any other thread exists; an operator's own
    // setting wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        std::env::set_var("MIMALLOC_PURGE_DELAY", "0");
    }
    // No transparent huge pages for this process. mimalloc asks for them on its arena, and
    // a 2 MiB page stays resident while any part of it is in use: over 10,000 runs at a time
    // its arena held 41-63 MiB for about 9 MiB of live data, and moved by up to a third from
    // one 10,000 runs to the next; without them it holds 17-21 MiB. mimalloc reads its own
    // MIMALLOC_ALLOW_THP when the process loads, too early to set here, so this asks the
    // kernel directly (the flag is the process's); an operator's MIMALLOC_ALLOW_THP wins.
    // Where the kernel refuses (before Linux 3.15) only memory is lost, so that is ignored.
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::from_env().context("reading configuration")?;
    config.addr = args.addr;
    config.db = args.db;
    config.http.insecure_no_auth = args.insecure_no_auth;
    crane::telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(&config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    crane_local::run(listener, config, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
