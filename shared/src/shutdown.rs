//! Process shutdown: both binaries stop gracefully on SIGTERM (systemd, Docker, Kubernetes) or
//! SIGINT (Ctrl-C).

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
