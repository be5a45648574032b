//! Logs (tracing) and metrics (Prometheus text format).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Swaps the installed log filter; set once, by [`init_logs`].
struct LogFilter {
    set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    /// `RUST_LOG` chose the filter at start, and keeps winning over the configured level.
    from_env: bool,
}

static LOG_FILTER: OnceLock<LogFilter> = OnceLock::new();

/// Installs the log subscriber: `RUST_LOG` wins over the configured level.
pub fn init_logs(format: LogFormat, level: &str) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let from_env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    // Colours only for a person at a terminal, not for journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // The two formats are different types, so each keeps its own reload handle.
    let set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = match format {
        LogFormat::Pretty => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_err() {
                return;
            }
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_err() {
                return;
            }
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    let _ = LOG_FILTER.set(LogFilter { set, from_env: from_env_set });
}

/// What [`reload_log_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LogLevelReload {
    Applied,
    /// `RUST_LOG` was set at start and still decides.
    KeptRustLog,
    /// No subscriber was installed by this process.
    NotInstalled,
}

/// Applies a new configured log level to the running subscriber (on SIGHUP).
pub fn reload_log_level(level: &str) -> Result<LogLevelReload, String> {
    let Some(filter) = LOG_FILTER.get() else { return Ok(LogLevelReload::NotInstalled) };
    if filter.from_env {
        return Ok(LogLevelReload::KeptRustLog);
    }
    let new = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    (filter.set)(new)?;
    Ok(LogLevelReload::Applied)
}

/// Seconds; spans fast store reads to slow uploads.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process-wide metrics recorder (metrics are global by nature: installed once).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("nexus_http_request_duration_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Resident memory of this process, from /proc (Linux); 0 elsewhere.
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page_size.max(0) as u64
}
