//! The `llm-gateway` command: load and validate the config, then serve (or `--check-config`).

#![allow(clippy::print_stdout, reason = "the command line prints its usage, version and --check-config verdict")]

use std::process::ExitCode;

// Many small, short-lived allocations per request (headers, JSON members, frames): glibc's
// allocator spent ~10% of the gateway's CPU under load; mimalloc is much cheaper there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own collection entry point (in the library `mimalloc` links; the crate declares it
// only with its `extended` feature, which needs a crate that is not in the tree).
unsafe extern "C" {
    /// Frees this thread's empty pages and purges the memory freed more than `purge_delay` ago.
    safe fn mi_collect(force: bool);
}

/// Gives the memory a thread freed back to the system once a burst is over. mimalloc returns
/// freed pages after a delay (its `purge_delay`, 1 s), but only when the thread that freed them
/// calls into it again: a serving thread that went quiet after a burst of streams kept what the
/// streams had freed. A collection every second is that call (it visits the thread's pages; a
/// few microseconds, once a second). One per serving thread, each on its own event loop.
async fn allocator_upkeep() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        mi_collect(false);
    }
}

use llm_gateway::config::{Config, ProcessEnv};
use llm_gateway::{app, server, telemetry};

const USAGE: &str = "usage: llm-gateway [--config PATH] [--check-config]

  --config PATH    gateway config (default: $LLM_GATEWAY_CONFIG or config/gateway.yaml)
  --check-config   validate the config and exit (non-zero with a path-precise message on error)";

fn main() -> ExitCode {
    let mut config_path = std::env::var("LLM_GATEWAY_CONFIG").unwrap_or_else(|_| "config/gateway.yaml".into());
    let mut check_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config_path = path,
                None => return usage_error("--config needs a path"),
            },
            "--check-config" => check_only = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("llm-gateway {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => match other.strip_prefix("--config=") {
                Some(path) => config_path = path.to_owned(),
                None => return usage_error(&format!("unknown argument {other:?}")),
            },
        }
    }

    let config = match Config::load(&config_path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check_only {
        for warning in &config.warnings {
            eprintln!("warning: {warning}");
        }
        println!("config OK: {config_path}");
        return ExitCode::SUCCESS;
    }

    // One event loop per serving thread (see `run`): this thread's runs the background work too.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            ExitCode::FAILURE
        }
    }
}

/// Serves on `config.server.threads` threads, each a single-threaded event loop accepting from
/// the same listening socket: a connection and everything its requests do stay on one thread,
/// so no request pays for a work-stealing scheduler's cross-thread wake-ups.
async fn run(config: Config, config_path: String) -> Result<(), Box<dyn std::error::Error>> {
    tokio::spawn(allocator_upkeep());
    let mut telemetry = telemetry::init(&config.server.log_level, &config.telemetry)?;
    for warning in &config.warnings {
        tracing::warn!(config = %config_path, "{warning}");
    }
    let (app, background) = app::build(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
    let addr = listener.local_addr()?;
    let options = server::ServeOptions::from(&config.server);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // A thread reports once it has drained; its event loop runs on until `release`, so work its
    // requests left running (cache stores, limit top-ups, a Valkey call other threads wait on)
    // is not cut short before the background work has stopped.
    let (drained_tx, mut drained) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<()>>();
    let (release, released) = tokio::sync::watch::channel(false);
    // Each thread registers the same listening socket with its own event loop.
    let listener = listener.into_std()?;
    let mut workers = Vec::new();
    for i in 1..config.server.threads {
        let (copy, app, stopped) = (listener.try_clone()?, app.clone(), stopped.clone());
        workers.push(spawn_worker(i, copy, app, stopped, drained_tx.clone(), released.clone(), options)?);
    }
    drop(drained_tx);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    if let (Some(listen), Some(routes)) = (&config.server.management_listen, app.management.clone()) {
        serve_management(listen, routes, stopped.clone()).await?;
    }
    tracing::info!(addr = %addr, models = config.models.len(), threads = config.server.threads, "listening");
    tokio::spawn({
        let stop = stop.clone();
        async move {
            server::shutdown_signal().await;
            let _ = stop.send(true);
        }
    });
    let mut served = server::serve(listener, app, server::stopped(stopped), options).await;
    // (Should this thread's server stop for another reason, the others stop too.)
    let _ = stop.send(true);
    // Every thread has drained (or its grace ran out) before the background work stops.
    for _ in 0..workers.len() {
        match drained.recv().await {
            Some(result) => served = served.and(result),
            None => {
                served = served.and(Err(std::io::Error::other("a serving thread panicked")));
                break;
            }
        }
    }
    // Also after a server error: CLI sessions are closed, not orphaned.
    background.shutdown().await;
    // Also after a server error: traces still batched are exported.
    telemetry.shutdown().await;
    let _ = release.send(true);
    let _ = tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join()))).await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Serving thread `i`: its own event loop on a copy of the listening socket; it reports on
/// `drained_tx` once drained and keeps its loop running until `released`.
fn spawn_worker(
    i: usize,
    copy: std::net::TcpListener,
    app: app::App,
    stopped: tokio::sync::watch::Receiver<bool>,
    drained_tx: tokio::sync::mpsc::UnboundedSender<std::io::Result<()>>,
    released: tokio::sync::watch::Receiver<bool>,
    options: server::ServeOptions,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("llm-gateway-{i}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = drained_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            tokio::spawn(allocator_upkeep());
            let served = match tokio::net::TcpListener::from_std(copy) {
                Ok(listener) => server::serve(listener, app, server::stopped(stopped), options).await,
                Err(e) => Err(e),
            };
            let _ = drained_tx.send(served);
            drop(drained_tx);
            server::stopped(released).await;
        });
    })
}

/// The management listener (metrics, health), served until `stopped`.
async fn serve_management(
    listen: &str,
    routes: axum::Router,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let management = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %management.local_addr()?, "management listening");
    let stopped = stopped.clone();
    tokio::spawn(async move {
        let served = axum::serve(management, routes).with_graceful_shutdown(server::stopped(stopped)).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the management listener failed");
        }
    });
    Ok(())
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("{message}\n\n{USAGE}");
    ExitCode::from(2)
}
