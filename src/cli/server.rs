//! What several commands share: reaching the running server that holds the data directory, the
//! target of key and project commands, JSON output and progress bars.

use crate::config::Config;
use crate::datadir::{DataDir, Holder, LockInfo};
use crate::error::{Error, ErrorCode, Result};

/// The base URL of the server that holds the data directory (plain HTTP on loopback).
pub(crate) fn server_base(info: &LockInfo) -> Result<String> {
    let pid = info.pid;
    let Some(listen) = &info.listen else {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!("the data directory is held by pid {pid}, which is not serving HTTP; stop it and try again"),
        ));
    };
    if info.tls {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!(
                "the data directory is held by pid {pid}, which serves HTTPS; use its HTTP API with the master key, \
                 or stop it and try again"
            ),
        ));
    }
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| Error::internal("lock file address", e))?;
    let host =
        if addr.ip().is_unspecified() { std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port()) } else { addr };
    Ok(format!("http://{host}"))
}

/// Sends one request to the server that holds the data directory, with the master key when
/// there is one (configured, or the data directory's master.key), and returns its JSON answer.
pub(crate) async fn server_request(
    config: &Config,
    info: &LockInfo,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let pid = info.pid;
    let url = format!("{}{path}", server_base(info)?);
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(key) = crate::auth::client_master_key(config) {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| Error::internal("ask the running server", e))?;
    let status = response.status();
    let value: serde_json::Value =
        response.json().await.map_err(|e| Error::internal("read the running server's answer", e))?;
    if !status.is_success() {
        let message = value["error"]["message"].as_str().unwrap_or("no message");
        let code = match status.as_u16() {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            400 => ErrorCode::InvalidRequest,
            _ => ErrorCode::Internal,
        };
        return Err(Error::new(code, format!("the running server (pid {pid}) refused: {message}")));
    }
    Ok(value)
}

/// Where key and project commands act: on the data directory, or through the server holding it.
pub(super) enum AuthTarget {
    Offline { _dir: DataDir, store: std::sync::Arc<dyn crate::store::auth::AuthStore> },
    Server(LockInfo),
}

pub(super) async fn auth_target(config: &Config) -> Result<AuthTarget> {
    match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => Ok(AuthTarget::Server(info)),
        Holder::Free => {
            let dir = DataDir::open(&config.data_dir)?;
            let store = crate::store::Stores::open_auth(config, &dir).await?;
            Ok(AuthTarget::Offline { _dir: dir, store })
        }
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::internal("encode", e))
}

pub(super) fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| Error::internal("encode", e))?);
    Ok(())
}

pub(super) fn progress_bar(total: u64, name: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!("{{prefix:>8}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}})");
    bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("static template").progress_chars("=> "));
    bar.set_prefix(name.to_string());
    bar
}
