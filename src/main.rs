//! The `convd` binary: load settings, start logging, bind, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use convd::config;

fn main() -> ExitCode {
    // Before any thread allocates: see its doc for why.
    convd::serve::tune_malloc();
    let matches = config::command().get_matches();
    let settings = match config::load(&matches) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("convd: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("convd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches.subcommand_matches("healthcheck").is_some() {
        return rt.block_on(healthcheck(&settings.server.bind));
    }
    convd::telemetry::init(&settings.server);
    rt.block_on(async {
        let listener = match convd::serve::bind(&settings.server.bind).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(bind = %settings.server.bind, error = %e, "cannot bind");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            plan_rates = convd::conv::plan::rates::detected().name,
            "convd listening"
        );
        match convd::run(listener, settings, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
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
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `convd healthcheck`: GET /healthz on localhost at the configured port, with no shell
/// tools needed (for container HEALTHCHECK). Exit 0 when it answers 200.
async fn healthcheck(bind: &str) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = bind.rsplit(':').next().unwrap_or("8080");
    let addr = format!("127.0.0.1:{port}");
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), attempt).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
