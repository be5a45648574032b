//! `/mcp`: the MCP server (`crate::mcp`) over Streamable HTTP.
//!
//! Stateless: every POST is answered on its own (JSON, or an event stream when a handler sends
//! something before its answer), with no session to keep, so any node of a cluster can serve any
//! request and each request is authenticated by the auth middleware like every other route. The
//! middleware lets a key with the `read` scope in (see `super::auth::need_for`) and puts its
//! [`AuthContext`] into the request; the MCP server reads it from there and asks for `write`
//! where a tool changes data. Clients of the revisions before 2026-07-28 (the `initialize`
//! handshake) and of 2026-07-28 (`server/discover`, per-request metadata) are both served.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::Extensions;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::AuthContext;
use crate::config::McpConfig;
use crate::error::{Error, ErrorCode};
use crate::mcp::{Caller, McpServer};

pub type Service = StreamableHttpService<McpServer, NeverSessionManager>;

/// The authenticated caller the auth middleware put into the HTTP request.
fn caller(extensions: &Extensions) -> Option<AuthContext> {
    extensions.get::<Parts>()?.extensions.get::<AuthContext>().cloned()
}

pub fn service(app: Arc<App>) -> Service {
    let config = &app.config;
    let mut http = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(config.server.body_limit_bytes);
    http = match allowed_hosts(&config.mcp, config.server.listen) {
        Some(hosts) => http.with_allowed_hosts(hosts),
        None => http.disable_allowed_hosts(),
    };
    http = match allowed_origins(&config.mcp) {
        Some(origins) => http.with_allowed_origins(origins).enforce_origin_validation(),
        None => http.disable_allowed_origins(),
    };
    let server = McpServer::new(app, Caller::PerRequest(caller));
    StreamableHttpService::new(move || Ok(server.clone()), Arc::new(NeverSessionManager::default()), http)
}

/// On `/mcp`, the errors answered before MCP (a refused key, a rate limit, a timeout) in JSON-RPC's
/// shape, so that MCP clients show their message: `{"jsonrpc", "id": null, "error": {code,
/// message, data: {code, type}}}` with the same HTTP status and headers (401 keeps
/// `WWW-Authenticate`). JSON-RPC errors of the MCP server itself pass as they are.
pub async fn json_rpc_errors(request: Request, next: Next) -> Response {
    if request.uri().path() != "/mcp" {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Error::new(ErrorCode::Internal, "error body too large").into_response();
    };
    let rewritten = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        let error = v.get("error")?.as_object()?;
        let (code, message) = (error.get("code")?.as_str()?, error.get("message")?.as_str()?);
        let json_rpc_code = if status.is_server_error() { -32603 } else { -32600 };
        let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": json_rpc_code, "message": message,
                          "data": {"code": code, "type": error.get("type")}}});
        serde_json::to_vec(&body).ok()
    });
    match rewritten {
        Some(body) => {
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(body))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// The `Host` values `/mcp` accepts: loopback names, the listening address and the configured
/// names; `None` for any.
pub fn allowed_hosts(config: &McpConfig, listen: SocketAddr) -> Option<Vec<String>> {
    if config.allowed_hosts.iter().any(|h| h == "*") {
        return None;
    }
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let ip = listen.ip().to_string();
    if !hosts.contains(&ip) {
        hosts.push(ip);
    }
    hosts.extend(config.allowed_hosts.iter().cloned());
    Some(hosts)
}

/// The `Origin` values `/mcp` accepts (an origin without a port means its scheme's default port);
/// `None` for any.
pub fn allowed_origins(config: &McpConfig) -> Option<Vec<String>> {
    if config.allowed_origins.iter().any(|o| o == "*") {
        return None;
    }
    let with_port = |origin: &String| {
        let uri = axum::http::Uri::try_from(origin.as_str()).ok();
        let port = uri.as_ref().and_then(|u| u.authority()).and_then(|a| a.port_u16());
        match (origin.ends_with(":*") || origin == "null", port, uri.as_ref().and_then(|u| u.scheme_str())) {
            (false, None, Some("https")) => format!("{}:443", origin.trim_end_matches('/')),
            (false, None, Some("http")) => format!("{}:80", origin.trim_end_matches('/')),
            _ => origin.clone(),
        }
    };
    Some(config.allowed_origins.iter().map(with_port).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hosts: &[&str], origins: &[&str]) -> McpConfig {
        McpConfig {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn hosts_are_loopback_the_listen_address_and_the_configured_names() {
        let listen: SocketAddr = "10.0.0.5:7700".parse().unwrap();
        let hosts = allowed_hosts(&config(&["nexus.internal"], &[]), listen).unwrap();
        assert_eq!(hosts, ["localhost", "127.0.0.1", "::1", "10.0.0.5", "nexus.internal"]);
        let loopback = allowed_hosts(&config(&[], &[]), "127.0.0.1:7700".parse().unwrap()).unwrap();
        assert_eq!(loopback, ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(allowed_hosts(&config(&["*"], &[]), listen), None);
    }

    #[test]
    fn origins_get_their_default_port() {
        let origins = allowed_origins(&config(&[], &["https://a.example", "http://b.example", "http://c:*", "null"]));
        assert_eq!(origins.unwrap(), ["https://a.example:443", "http://b.example:80", "http://c:*", "null"]);
        assert_eq!(allowed_origins(&config(&[], &["*"])), None);
        assert_eq!(allowed_origins(&config(&[], &[])), Some(vec![]));
    }
}
