//! `nexus serve`: open the app, listen, serve until SIGTERM or Ctrl-C.

use crate::app::App;
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};

pub(super) async fn run(config: Config, reload: crate::service::ConfigLoader) -> Result<i32> {
    let listen = config.server.listen;
    let tls = crate::http::tls::load(&config.server.tls).await?;
    let app = App::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::new(ErrorCode::ConfigInvalid, format!("cannot listen on {listen}: {e}; choose another --listen address"))
    })?;
    let bound = listener.local_addr()?;
    let https = tls.is_some();
    app.dir.lock().announce_listen(&bound.to_string(), https)?;
    crate::telemetry::metrics_handle();
    tracing::info!(address = %bound, data_dir = %app.config.data_dir.display(), "nexus is serving");
    println!("nexus: listening on {}://{bound}", if https { "https" } else { "http" });
    announce_auth(&app);
    crate::service::start(app.clone(), reload);
    let (stop_schedule, schedule_stopped) = tokio::sync::watch::channel(false);
    let schedule = crate::backup::schedule::start(app.clone(), schedule_stopped);
    crate::http::serve(app.clone(), listener, tls, shutdown_signal()).await?;
    stop_schedule.send_replace(true);
    if let Some(schedule) = schedule {
        // A scheduled backup under way finishes first (its archive is renamed into place whole).
        let _ = schedule.await;
    }
    app.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(0)
}

/// Says once, at start, how requests are authenticated.
fn announce_auth(app: &App) {
    use crate::auth::{MasterKeySource, Mode};
    match (app.auth.mode(), &app.auth.master_source) {
        (Mode::Open, _) => {
            println!(
                "nexus: API keys are off: listening on loopback without auth.master_key, every request acts for \
                 the default tenant (set auth.master_key or auth.required = true to require keys)"
            );
            tracing::info!("API keys are off (loopback, no master key configured)");
        }
        (Mode::Keys, MasterKeySource::File { path, generated: true }) => {
            println!(
                "nexus: API keys are on; a master key was generated into {} (mode 0600): send it as \
                 `Authorization: Bearer <key>`",
                path.display()
            );
        }
        (Mode::Keys, _) => println!("nexus: API keys are on"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    crate::service::notify_stopping();
}
