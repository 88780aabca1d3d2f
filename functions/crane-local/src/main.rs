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
    crane_local::process::run(serve())?
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
