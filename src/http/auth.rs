//! Authentication, authorisation, rate limiting and auditing of every request, in one middleware.
//!
//! [`need_for`] is the one table of what each route requires, by method and path; a route that is
//! not listed needs `read` for GET/HEAD and `write` for anything else, so a new route is never
//! public by accident. The middleware authenticates once (`crate::auth::Auth`), checks the need,
//! applies the rate limits, puts the [`AuthContext`] into the request's extensions (read by
//! [`super::tenant::Tenant`] and [`Caller`]) and queues an audit event.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;

use crate::app::App;
use crate::auth::limits::{Allowance, Limited, Refusal};
use crate::auth::{AuthContext, Scope};
use crate::error::{Error, ErrorCode, Result};
use crate::store::auth::AuditEvent;

/// What a route requires of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// No key: probes, the API description, its docs page and the UI's files.
    Public,
    /// Any valid key, whatever its scopes.
    Authenticated,
    Scope(Scope),
    /// The master key (or open mode): appliance-wide routes that span tenants.
    Operator,
}

use Need::{Authenticated, Operator, Public};
const READ: Need = Need::Scope(Scope::Read);
const WRITE: Need = Need::Scope(Scope::Write);
const ADMIN: Need = Need::Scope(Scope::Admin);

/// `(path, need for GET/HEAD, need for other methods)`; first match wins. A path ending in `*`
/// matches by prefix. POST routes that only read (searches) must be listed, or they need `write`.
const RULES: &[(&str, Need, Need)] = &[
    ("/health", Public, Public),
    ("/ready", Public, Public),
    ("/openapi.json", Public, Public),
    ("/metrics", ADMIN, ADMIN),
    ("/api/v1/whoami", Authenticated, Authenticated),
    ("/api/v1/admin/*", Operator, Operator),
    ("/api/v1/orgs*", Operator, Operator),
    ("/api/v1/projects*", ADMIN, Operator),
    ("/api/v1/keys*", ADMIN, ADMIN),
    ("/api/v1/audit*", ADMIN, ADMIN),
    ("/api/v1/records/search", READ, READ),
    ("/api/v1/search", READ, READ),
    ("/api/v1/ask", READ, READ),
    ("/api/v1/embed", READ, READ),
    ("/api/v1/memories/search", READ, READ),
    ("/api/v1/memories/list", READ, READ),
    // MCP: JSON-RPC over POST; each tool asks for `write` itself when it changes data.
    ("/mcp", READ, READ),
    // Mem0 compatibility: the clients' constructor pings with whatever key it has.
    ("/v1/ping/", Authenticated, Authenticated),
    ("/v1/memories/search/", READ, READ),
    ("/v2/memories/search/", READ, READ),
    ("/v3/memories/search/", READ, READ),
    ("/v2/memories/", READ, READ),
    ("/v3/memories/", READ, READ),
];

pub fn need_for(method: &Method, path: &str, public_metrics: bool) -> Need {
    if path == "/metrics" && public_metrics {
        return Public;
    }
    let reads = method == Method::GET || method == Method::HEAD;
    for (pattern, read, write) in RULES {
        let matches = match pattern.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == *pattern,
        };
        if matches {
            return if reads { *read } else { *write };
        }
    }
    if reads && !path.starts_with("/api/") && (super::ui::is_asset(path) || super::docs::is_docs(path)) {
        return Public;
    }
    if reads { READ } else { WRITE }
}

/// The WebSocket subprotocol that carries a key (`nexus.key.<key>`): browsers cannot set headers
/// on an upgrade, and a key in the URL would end up in logs. Offered beside [`WS_PROTOCOL`],
/// which the server echoes.
pub const WS_KEY_PROTOCOL: &str = "nexus.key.";
/// The subprotocol of Nexus's WebSockets.
pub const WS_PROTOCOL: &str = "nexus.v1";

/// The key a request presents: `Authorization: Bearer|Token <key>`, `X-API-Key: <key>`, or the
/// WebSocket subprotocol `nexus.key.<key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    let header = presented_header_key(headers);
    if header.is_some() {
        return header;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_KEY_PROTOCOL).map(str::to_string))
}

fn presented_header_key(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().trim();
        let key = match value.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") => {
                key.trim()
            }
            // Another scheme is not a key we know; it fails as an invalid one.
            _ => value,
        };
        return Some(key.to_string());
    }
    headers.get("x-api-key").map(|v| v.to_str().unwrap_or_default().trim().to_string())
}

fn permits(ctx: &AuthContext, need: Need, method: &Method, route: &str) -> Result<()> {
    match need {
        Public | Authenticated => Ok(()),
        Operator if ctx.is_operator() => Ok(()),
        Operator => Err(Error::new(
            ErrorCode::Forbidden,
            format!("{method} {route} spans every tenant and needs the master key"),
        )),
        Need::Scope(scope) if ctx.has(scope) => Ok(()),
        Need::Scope(scope) => Err(Error::new(
            ErrorCode::Forbidden,
            format!("this key lacks the `{}` scope that {method} {route} needs; use a key that has it", scope.as_str()),
        )),
    }
}

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn set_allowance(headers: &mut HeaderMap, a: Allowance) {
    headers.insert(LIMIT.clone(), HeaderValue::from(a.limit));
    headers.insert(REMAINING.clone(), HeaderValue::from(a.remaining));
    headers.insert(RESET.clone(), HeaderValue::from(a.reset_secs));
}

fn too_many(refusal: Refusal) -> Response {
    let who = match refusal.what {
        Limited::Key => "this API key",
        Limited::Address => "this address",
        Limited::AuthFailures => "this address after too many failed authentications",
    };
    let message = format!("too many requests from {who}; retry after {} s", refusal.retry_after_secs);
    let mut response = Error::new(ErrorCode::RateLimited, message).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after_secs));
    set_allowance(headers, Allowance { limit: refusal.limit, remaining: 0, reset_secs: refusal.retry_after_secs });
    response
}

fn unauthorized(error: Error) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"nexus\""));
    response
}

/// The first path parameter's value: `/api/v1/records/{id}` and `/api/v1/records/r1` give `r1`.
fn object_id(template: &str, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    for (i, part) in template.split('/').enumerate() {
        if part.starts_with("{*") {
            return Some(segments.get(i..)?.join("/"));
        }
        if part.starts_with('{') {
            return segments.get(i).map(|s| s.to_string());
        }
    }
    None
}

struct Audit {
    method: String,
    route: String,
    object_id: Option<String>,
    client: Option<String>,
}

impl Audit {
    fn event(self, ctx: Option<&AuthContext>, status: u16) -> AuditEvent {
        let cut = |s: String| if s.len() > 512 { s.chars().take(512).collect() } else { s };
        AuditEvent {
            at: Utc::now(),
            principal: ctx.map_or("anonymous", |c| c.principal_name()).to_string(),
            key_id: ctx.and_then(|c| c.key_id()).map(str::to_string),
            tenant: ctx.map(|c| c.tenant.clone()),
            method: self.method,
            route: cut(self.route),
            object_id: self.object_id.map(cut),
            status,
            client: self.client,
        }
    }
}

/// The middleware: see the module documentation.
pub async fn authenticate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let auth = &app.auth;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let need = need_for(&method, &path, auth.public_metrics);
    if need == Public {
        return next.run(request).await;
    }
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let template = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let audit = Audit {
        method: method.to_string(),
        object_id: template.as_deref().and_then(|t| object_id(t, &path)),
        route: template.map(|t| t.replace("{*", "{")).unwrap_or_else(|| path.clone()),
        client: client.map(|c| c.to_string()),
    };

    // Open mode serves one local operator: limits would only throttle the laptop's own tools.
    let keys_on = auth.mode() == crate::auth::Mode::Keys;
    let mut allowance = None;
    if let Some(ip) = client.filter(|_| keys_on) {
        if let Some(refusal) = auth.limits.blocked(ip) {
            auth.audit.record(audit.event(None, 429));
            return too_many(refusal);
        }
        match auth.limits.check_address(ip) {
            Ok(a) => allowance = a,
            Err(refusal) => {
                auth.audit.record(audit.event(None, 429));
                return too_many(refusal);
            }
        }
    }

    let presented = presented_key(request.headers());
    let ctx = match auth.authenticate(presented.as_deref()).await {
        Ok(ctx) => ctx,
        Err(e) => {
            let failed_auth = matches!(e.code, ErrorCode::Unauthorized | ErrorCode::KeyExpired | ErrorCode::KeyRevoked);
            let response = match client.and_then(|ip| failed_auth.then(|| auth.limits.failed_authentication(ip))) {
                Some(Some(refusal)) => too_many(refusal),
                _ if failed_auth => unauthorized(e),
                _ => e.into_response(),
            };
            auth.audit.record(audit.event(None, response.status().as_u16()));
            return response;
        }
    };

    if let Err(e) = permits(&ctx, need, &method, &audit.route) {
        auth.audit.record(audit.event(Some(&ctx), e.code.http_status()));
        return e.into_response();
    }
    if keys_on {
        match auth.limits.check_key(ctx.limit_key()) {
            Ok(Some(a)) => allowance = Some(a),
            Ok(None) => {}
            Err(refusal) => {
                auth.audit.record(audit.event(Some(&ctx), 429));
                return too_many(refusal);
            }
        }
    }

    request.extensions_mut().insert(ctx.clone());
    let mut response = next.run(request).await;
    if let Some(a) = allowance {
        set_allowance(response.headers_mut(), a);
    }
    auth.audit.record(audit.event(Some(&ctx), response.status().as_u16()));
    response
}

/// The authenticated caller, for handlers that manage keys, projects and the audit log.
pub struct Caller(pub AuthContext);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthContext>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| Error::internal("authentication", "the auth middleware did not run for this route"))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// `open` (loopback without keys), `master` or `key`.
    pub principal: String,
    pub key_id: Option<String>,
    /// The project (tenant) data routes act for.
    pub project: String,
    pub scopes: Vec<Scope>,
    /// Whether this caller manages every tenant.
    pub operator: bool,
}

/// Who the presented key is: its project and scopes.
///
/// Any valid key may ask, whatever its scopes: `principal` is `key`, `master` or `open` (loopback
/// without keys), with the project data routes act for and whether the caller spans every tenant.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth", responses((status = 200, body = WhoAmI)))]
pub async fn whoami(Caller(ctx): Caller) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI {
        principal: ctx.principal_name().to_string(),
        key_id: ctx.key_id().map(str::to_string),
        project: ctx.tenant.to_string(),
        scopes: ctx.scopes.clone(),
        operator: ctx.is_operator(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_needs_a_key_unless_listed_public() {
        let (_, openapi) = super::super::api().split_for_parts();
        let public = ["/health", "/ready"];
        let mut seen = 0;
        for (path, item) in &openapi.paths.paths {
            let path = path.replace("{*", "{");
            let concrete = path.replace('{', "x").replace('}', "");
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                if op.is_none() {
                    continue;
                }
                seen += 1;
                let need = need_for(&method, &concrete, false);
                if public.contains(&path.as_str()) {
                    assert_eq!(need, Public, "{method} {path}");
                    continue;
                }
                assert_ne!(need, Public, "{method} {path} must need a key");
                if !["/api/v1/whoami", "/v1/ping/"].contains(&path.as_str()) {
                    assert_ne!(need, Authenticated, "{method} {path}: only whoami and Mem0's ping may skip scopes");
                }
                // Queries sent as POST bodies read only: searches, and lists by filter.
                let read_only_post = path.ends_with("/search")
                    || path.ends_with("/search/")
                    || ["/api/v1/ask", "/api/v1/embed", "/api/v1/memories/list", "/v2/memories/", "/v3/memories/"]
                        .contains(&path.as_str());
                if method != Method::GET && !read_only_post {
                    assert_ne!(need, READ, "{method} {path} changes data and needs more than `read`");
                }
            }
        }
        assert!(seen > 15, "the route list was read ({seen} operations)");
        assert_eq!(need_for(&Method::GET, "/metrics", true), Public);
        assert_eq!(need_for(&Method::GET, "/", false), Public, "the UI shell loads without a key");
        assert_eq!(need_for(&Method::GET, "/no-such-file", false), READ);
        assert_eq!(need_for(&Method::POST, "/v1/anything", false), WRITE, "unknown routes default to needing keys");
        assert_eq!(need_for(&Method::POST, "/mcp", false), READ, "MCP tools check `write` themselves");
        assert_eq!(need_for(&Method::GET, "/mcp", false), READ);
    }

    #[test]
    fn keys_are_read_from_the_three_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  nxs_a_b "));
        assert_eq!(presented_key(&h).as_deref(), Some("nxs_a_b"));
        let mut ws = HeaderMap::new();
        ws.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("nexus.v1, nexus.key.nxs_c_d"));
        assert_eq!(presented_key(&ws).as_deref(), Some("nxs_c_d"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Token nxs_a_b"));
        assert_eq!(presented_key(&h).as_deref(), Some("nxs_a_b"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic Zm9vOmJhcg=="));
        assert_eq!(presented_key(&h).as_deref(), Some("Basic Zm9vOmJhcg=="));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("nxs_c_d"));
        assert_eq!(presented_key(&h).as_deref(), Some("nxs_c_d"));
    }

    #[test]
    fn object_ids_come_from_the_path() {
        assert_eq!(object_id("/api/v1/records/{id}", "/api/v1/records/r1").as_deref(), Some("r1"));
        assert_eq!(object_id("/api/v1/objects/{*key}", "/api/v1/objects/a/b.txt").as_deref(), Some("a/b.txt"));
        assert_eq!(object_id("/api/v1/records", "/api/v1/records"), None);
    }
}
