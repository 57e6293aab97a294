//! What both server binaries (`outpost-relay`, `outpost-cloud`) do the same way at the
//! edge: logging to stderr and turning SIGTERM/SIGINT into a graceful shutdown.

use tokio_util::sync::CancellationToken;

/// Logs to stderr, `RUST_LOG` filtering (default `info`), colours only on a terminal
/// (the journal and log files get plain text).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Cancels `shutdown` on SIGTERM (systemd) or SIGINT (Ctrl-C).
pub async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
