//! Running under a service manager: systemd notifications (`Type=notify`) and SIGHUP reloads.
//!
//! - `READY=1` once `/ready` would answer 200 (stores open, every indexer caught up); until then
//!   `STATUS=` shows the replay's progress, and progress extends systemd's start timeout.
//! - `WATCHDOG=1` at half the unit's `WatchdogSec`, from the async runtime, so a stalled runtime
//!   gets the process restarted.
//! - `STOPPING=1` when shutdown begins.
//! - SIGHUP reloads the configuration and applies what can change while running ([`apply_reload`]).
//!
//! Every notification is a no-op without `$NOTIFY_SOCKET`, i.e. when systemd did not start us.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::app::App;
use crate::config::Config;
use crate::error::Result;
use crate::telemetry::{self, LogLevelReload};

/// Loads the configuration again from the same sources as at start (file, environment, flags).
pub type ConfigLoader = Box<dyn Fn() -> Result<Config> + Send + Sync>;

/// How often readiness is polled during start.
const READY_POLL: Duration = Duration::from_millis(100);
/// While the indexers make progress, systemd's start timeout is pushed this far ahead.
const START_EXTENSION: Duration = Duration::from_secs(90);

/// Starts the background tasks; call once the listener is bound.
pub fn start(app: Arc<App>, reload_config: ConfigLoader) {
    tokio::spawn(notify_when_ready(app.clone()));
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        tokio::spawn(watchdog(timeout));
    }
    tokio::spawn(reload_on_hangup(app, reload_config));
}

/// Tells systemd that shutdown has begun.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping: finishing in-flight requests")]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

async fn notify_when_ready(app: Arc<App>) {
    let mut best_lag = u64::MAX;
    let mut ticks = 0u32;
    loop {
        if app.ready() {
            notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
            tracing::info!("ready: every indexer has caught up");
            return;
        }
        // Status every second; the replay is slow only when the change log is long.
        if ticks.is_multiple_of(10)
            && let Ok(indexers) = app.indexer_status().await
        {
            let lag: u64 = indexers.iter().map(|i| i.lag).sum();
            let status = format!("replaying the change log: {lag} entries to index");
            let mut state = vec![NotifyState::Status(&status)];
            if lag < best_lag {
                best_lag = lag;
                state.push(NotifyState::ExtendTimeoutUsec(START_EXTENSION.as_micros() as u32));
            }
            notify(&state);
        }
        ticks = ticks.wrapping_add(1);
        tokio::time::sleep(READY_POLL).await;
    }
}

async fn watchdog(timeout: Duration) {
    let mut tick = tokio::time::interval(timeout / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

async fn reload_on_hangup(app: Arc<App>, reload_config: ConfigLoader) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reloading is unavailable");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        let mut state = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            state.push(now);
        }
        notify(&state);
        match reload_config() {
            Ok(new) => apply_reload(&app.config, &new),
            Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
        }
        notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }
}

/// Applies what can change while running, and names what needs a restart.
///
/// `running` is the configuration the server started with.
pub fn apply_reload(running: &Config, new: &Config) {
    let mut applied = Vec::new();
    match telemetry::reload_log_level(&new.log.level) {
        Ok(LogLevelReload::Applied) => applied.push("log.level"),
        Ok(LogLevelReload::KeptRustLog) => tracing::warn!("log.level not reloaded: RUST_LOG is set and decides"),
        Ok(LogLevelReload::NotInstalled) => {}
        Err(e) => tracing::error!("log.level not reloaded: {e}"),
    }
    // TLS certificates are re-read here once the server terminates TLS.
    let restart: Vec<String> =
        changed_keys(running, new).into_iter().filter(|k| !RELOADABLE.contains(&k.as_str())).collect();
    if !restart.is_empty() {
        tracing::warn!(keys = %restart.join(", "), "changed in the configuration; applied at the next restart");
    }
    tracing::info!(applied = %applied.join(", "), "configuration reloaded");
}

/// Keys that [`apply_reload`] applies to the running server.
const RELOADABLE: &[&str] = &["log.level"];

/// Dotted keys whose values differ (secrets are compared redacted, so a changed secret is not seen).
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                let null = serde_json::Value::Null;
                for key in keys {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&path, a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null), out);
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else { return Vec::new() };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, FlagOverrides};

    #[test]
    fn changed_keys_are_dotted_paths() {
        let a = Config::load(ConfigFile::IfExists(std::path::Path::new("/nonexistent")), &FlagOverrides::default())
            .unwrap();
        let mut b = a.clone();
        assert!(changed_keys(&a, &b).is_empty());
        b.log.level = "debug".into();
        b.server.listen = "127.0.0.1:9".parse().unwrap();
        assert_eq!(changed_keys(&a, &b), vec!["log.level".to_string(), "server.listen".to_string()]);
    }
}
