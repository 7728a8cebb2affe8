//! The composition root: the one module that names the daemon, the web app and the Slurm executor together. It locks
//! the home, opens the store, picks the executor (local children or Slurm jobs), builds the [`Daemon`], reconciles
//! what a previous daemon left, serves the HTTP app ([`crate::web::router`]) while the datasets found on disk register
//! in the background, and turns SIGTERM/SIGINT into the daemon's clean shutdown. Everything it wires knows only its own neighbours: the daemon
//! never names the web layer or Slurm, and the web layer sees the daemon through its public methods.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::daemon::config::{self, DaemonConfig};
use crate::daemon::executor::{Executor, LocalExecutor};
use crate::daemon::{Daemon, DaemonError, datasets, lock, recovery};
use crate::store::Store;

/// Runs a daemon until SIGTERM or SIGINT: lock the home, open the store, bind, reconcile, mark the dataset folders on
/// disk that the store lacks as registering, start intake and scheduler, write `daemon.addr`, serve HTTP while those
/// datasets register in the background (at AI RUSH scale that takes seconds: nothing waits for it but the sessions
/// that need them), then shut down cleanly.
pub async fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    let config = config.prepare()?;
    let _lock = lock::HomeLock::acquire(config.home.root())?;
    let store = Store::open(&config.db).await?;
    let exe =
        std::env::current_exe().map_err(|source| DaemonError::Io { path: PathBuf::from("/proc/self/exe"), source })?;
    let executor: Arc<dyn Executor> = match config.executor {
        config::ExecutorKind::Local => Arc::new(LocalExecutor { program: exe }),
        config::ExecutorKind::Slurm => Arc::new(crate::slurm::SlurmExecutor::new(&config, store.clone(), exe).await),
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| DaemonError::Io { path: PathBuf::from(config.bind.to_string()), source })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Io { path: PathBuf::from("socket"), source })?;
    // From here on the address is the one bound (`--bind 127.0.0.1:0` picked a port): pages show where they are served.
    let config = DaemonConfig { bind: addr, ..config };
    let daemon = Daemon::new(config, store, executor);
    recovery::reconcile(&daemon).await?;
    let unregistered = datasets::start_up(&daemon).await;
    daemon.start()?;
    let addr_file = daemon.home().daemon_addr_file();
    crate::disk::write_atomic(&addr_file, format!("{addr}\n").as_bytes())
        .map_err(|e| DaemonError::Io { path: e.path, source: e.source })?;
    tracing::info!(
        "rush daemon on http://{addr} (home {}, experiments {}, slots {})",
        daemon.home().root().display(),
        daemon.config.experiments.display(),
        daemon.slots().iter().map(|s| s.slot.as_str()).collect::<Vec<_>>().join(",")
    );
    datasets::register_in_background(&daemon, unregistered);
    tokio::spawn(signals(daemon.shutdown.clone()));
    let app = crate::web::router(crate::web::AppState::new(daemon.clone()));
    let token = daemon.shutdown.clone();
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!("HTTP server: {e}");
    }
    daemon.shut_down().await;
    daemon.store.close().await;
    if std::fs::read_to_string(&addr_file).map(|s| s.trim() == addr.to_string()).unwrap_or(false) {
        let _ = std::fs::remove_file(&addr_file);
    }
    tracing::info!("rush daemon stopped");
    Ok(())
}

async fn signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping sessions and shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: stopping sessions and shutting down"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}
