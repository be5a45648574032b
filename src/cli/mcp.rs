//! `nexus mcp`: the MCP server over stdio, for agents that start a command (desktop clients).
//!
//! With the data directory free, the MCP server (`crate::mcp`) runs in this process on it. While
//! a server holds the data directory, or with `--url`, each message is relayed to that server's
//! `/mcp` over Streamable HTTP and its answers are written back, so one running service serves
//! every agent. Either way the agent acts with one key — `NEXUS_API_KEY`, else the master key
//! other commands use — and that key's project and scopes apply to every call.

use std::sync::Arc;

use base64::Engine;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::app::App;
use crate::config::Config;
use crate::datadir::{DataDir, Holder};
use crate::error::{Error, Result};
use crate::mcp::{Caller, McpServer};

pub(super) async fn run(config: Config, api_key: Option<String>, url: Option<String>) -> Result<i32> {
    let api_key = api_key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
    let url = match url {
        Some(url) => Some(url),
        None => match DataDir::holder(&config.data_dir) {
            Holder::Held(info) => Some(super::server::server_base(&info)?),
            Holder::Free => None,
        },
    };
    match url {
        Some(url) => {
            let key = api_key.or_else(|| master_key(&config));
            relay(format!("{}/mcp", url.trim_end_matches('/')), key).await
        }
        None => serve_here(config, api_key).await,
    }
}

/// The master key, when no API key is given (as other commands use it), saying so on stderr.
fn master_key(config: &Config) -> Option<String> {
    let key = crate::auth::client_master_key(config)?;
    eprintln!("nexus mcp: NEXUS_API_KEY is not set; acting with the master key (the default project)");
    Some(key)
}

/// The MCP server in this process, on the data directory.
async fn serve_here(config: Config, api_key: Option<String>) -> Result<i32> {
    use rmcp::ServiceExt;
    let app = App::open(config).await?;
    let key = match app.auth.mode() {
        crate::auth::Mode::Open => None,
        crate::auth::Mode::Keys => api_key.or_else(|| master_key(&app.config)),
    };
    let served = async {
        // A key that cannot work is said at once, not on every call.
        app.auth
            .authenticate(key.as_deref())
            .await
            .map_err(|e| Error::new(e.code, format!("{} (the key comes from NEXUS_API_KEY)", e.message)))?;
        let server = McpServer::new(app.clone(), Caller::Key(key));
        let running = server
            .serve(rmcp::transport::stdio_pipes())
            .await
            .map_err(|e| Error::internal("start the MCP server on stdio", e))?;
        let token = running.cancellation_token();
        tokio::select! {
            quit = running.waiting() => { quit.map_err(|e| Error::internal("MCP server", e))?; }
            () = stop_signal() => token.cancel(),
        }
        Ok::<_, Error>(())
    }
    .await;
    app.shutdown().await;
    served.map(|()| 0)
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Relays stdio to a server's `/mcp`.
struct Relay {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    /// The protocol version the `initialize` handshake settled on (sent as `MCP-Protocol-Version`).
    version: parking_lot::Mutex<Option<String>>,
    /// `Mcp-Session-Id`, for a server that keeps sessions.
    session: parking_lot::Mutex<Option<String>>,
}

const JSONRPC_INVALID_REQUEST: i64 = -32600;
const JSONRPC_INTERNAL_ERROR: i64 = -32603;
const JSONRPC_PARSE_ERROR: i64 = -32700;

fn error_message(id: Value, code: i64, message: String) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

async fn relay(url: String, key: Option<String>) -> Result<i32> {
    let tls = crate::tls::client_config("mcp", None)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Error::internal("build the HTTP client", e))?;
    let relay = Arc::new(Relay {
        client,
        url,
        key,
        version: parking_lot::Mutex::new(None),
        session: parking_lot::Mutex::new(None),
    });
    let (out, mut lines_out) = tokio::sync::mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines_out.recv().await {
            let written = async {
                stdout.write_all(line.as_bytes()).await?;
                stdout.write_all(b"\n").await?;
                stdout.flush().await
            };
            if written.await.is_err() {
                return;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = stop_signal() => break,
        };
        let Ok(Some(line)) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let (relay, out) = (relay.clone(), out.clone());
        tasks.spawn(async move { relay.forward(line, out).await });
    }
    while tasks.join_next().await.is_some() {}
    drop(out);
    let _ = writer.await;
    Ok(0)
}

/// `Mcp-Name`'s value: as it is when it is a plain header value, else in the Base64 form.
fn header_value(value: &str) -> String {
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    let padded = value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    let looks_encoded = value.starts_with("=?base64?") && value.ends_with("?=");
    let plain = printable && !padded && !looks_encoded;
    if plain {
        value.to_string()
    } else {
        format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(value))
    }
}

impl Relay {
    async fn forward(&self, line: String, out: tokio::sync::mpsc::Sender<String>) {
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(e) => {
                let _ = out.send(error_message(Value::Null, JSONRPC_PARSE_ERROR, format!("not JSON: {e}"))).await;
                return;
            }
        };
        let method = message.get("method").and_then(Value::as_str).map(str::to_string);
        // Only a request (a method and an id) gets an answer when the server cannot give one.
        let id = message.get("id").filter(|_| method.is_some()).cloned();
        let initialize = method.as_deref() == Some("initialize");
        let version = message
            .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| if initialize { None } else { self.version.lock().clone() });
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .body(line);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(version) = version {
            request = request.header("MCP-Protocol-Version", version);
        }
        if let Some(method) = &method {
            request = request.header("Mcp-Method", method.as_str());
            let name = match method.as_str() {
                "tools/call" | "prompts/get" => message.pointer("/params/name"),
                "resources/read" | "resources/subscribe" | "resources/unsubscribe" => message.pointer("/params/uri"),
                "tasks/get" | "tasks/update" | "tasks/cancel" => message.pointer("/params/taskId"),
                _ => None,
            };
            if let Some(name) = name.and_then(Value::as_str) {
                request = request.header("Mcp-Name", header_value(name));
            }
        }
        if let Some(session) = self.session.lock().clone() {
            request = request.header("Mcp-Session-Id", session);
        }
        let answer = |code: i64, why: String| {
            let out = out.clone();
            let id = id.clone();
            async move {
                match id {
                    Some(id) => {
                        let _ = out.send(error_message(id, code, why)).await;
                    }
                    None => eprintln!("nexus mcp: {why}"),
                }
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return answer(JSONRPC_INTERNAL_ERROR, format!("cannot reach {}: {e}", self.url)).await,
        };
        if let Some(session) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            *self.session.lock() = Some(session.to_string());
        }
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let parsed = serde_json::from_str::<Value>(&body).ok();
            // A JSON-RPC error (a refused key, an unsupported protocol version) is passed on, as the
            // answer to this request when the server could not say which.
            if let Some(mut error) = parsed.clone().filter(|v| v.get("jsonrpc").is_some()) {
                match id.clone() {
                    Some(id) if error.get("id").is_none_or(Value::is_null) => error["id"] = id,
                    Some(_) => {}
                    None => return eprintln!("nexus mcp: the server refused a notification: {error}"),
                }
                let _ = out.send(error.to_string()).await;
                return;
            }
            // Nexus's error body (a refused key, a rate limit), or whatever text came.
            let said = parsed
                .as_ref()
                .and_then(|v| v.pointer("/error/message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| body.trim().chars().take(500).collect());
            let code = if status.is_server_error() { JSONRPC_INTERNAL_ERROR } else { JSONRPC_INVALID_REQUEST };
            return answer(code, format!("the server answered {status}: {said}")).await;
        }
        let event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !event_stream {
            let body = response.text().await.unwrap_or_default();
            if !body.trim().is_empty() {
                self.deliver(body.trim(), initialize, &out).await;
            }
            return;
        }
        let chunks = futures::stream::unfold(Some(response), |state| async move {
            let mut response = state?;
            match response.chunk().await {
                Ok(Some(bytes)) => Some((Ok::<_, reqwest::Error>(bytes), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        let mut events = std::pin::pin!(chunks.eventsource());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if !event.data.trim().is_empty() => self.deliver(event.data.trim(), initialize, &out).await,
                Ok(_) => {}
                Err(e) => return answer(JSONRPC_INTERNAL_ERROR, format!("the event stream broke: {e}")).await,
            }
        }
    }

    /// Writes one answer to stdout, on one line; remembers the version an `initialize` settled on.
    async fn deliver(&self, text: &str, initialize: bool, out: &tokio::sync::mpsc::Sender<String>) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            eprintln!("nexus mcp: the server sent something that is not JSON; dropped");
            return;
        };
        if initialize && let Some(version) = message.pointer("/result/protocolVersion").and_then(Value::as_str) {
            *self.version.lock() = Some(version.to_string());
        }
        // As the server wrote it (re-encoding could change the last digit of a float), on one line.
        let line = if text.contains('\n') { message.to_string() } else { text.to_string() };
        let _ = out.send(line).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_header_values_are_sent_in_base64() {
        assert_eq!(header_value("search_memories"), "search_memories");
        assert_eq!(header_value("nexus://memories/m-1"), "nexus://memories/m-1");
        assert_eq!(header_value("café"), "=?base64?Y2Fmw6k=?=");
        assert_eq!(header_value(" padded"), "=?base64?IHBhZGRlZA==?=");
    }

    #[test]
    fn relayed_errors_are_json_rpc() {
        let line = error_message(json!(7), JSONRPC_INVALID_REQUEST, "no".into());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32600);
    }
}
