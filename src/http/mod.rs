//! HTTP: the router, cross-cutting layers and the server loop. Only this folder knows HTTP.
//!
//! One file per resource; every route is declared through `utoipa_axum::routes!`, so it is in
//! `/openapi.json` by construction. Every request passes [`auth::authenticate`], which decides
//! from one table what each route needs. `/mcp` (the MCP server over Streamable HTTP) is the one
//! API route outside the OpenAPI description: it speaks JSON-RPC, described by MCP itself. The
//! description is served at `/openapi.json` and read as a page at `/docs` ([`docs`]).

pub mod audit;
pub mod auth;
pub mod backups;
pub mod docs;
pub mod documents;
pub mod embed;
pub mod error;
pub mod events;
pub mod graph;
pub mod jobs;
pub mod keys;
pub mod live;
pub mod mcp;
pub mod meetings;
pub mod mem0;
pub mod memories;
pub mod objects;
pub mod ops;
pub mod projects;
pub mod records;
pub mod search;
pub mod tenant;
pub mod tls;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::cors::CorsLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::error::{Error, ErrorCode};

#[derive(OpenApi)]
#[openapi(
    info(title = "Nexus", description = "Memory and knowledge appliance for AI agents and teams"),
    tags(
        (name = "ops", description = "Health, readiness, metrics, status"),
        (name = "records", description = "The system of record"),
        (name = "graph", description = "Entity and relation graph"),
        (name = "objects", description = "Original files"),
        (name = "embed", description = "Text embeddings"),
        (name = "documents", description = "The knowledge base's documents"),
        (name = "search", description = "Hybrid search and grounded answers"),
        (name = "memories", description = "Memories in four tiers (working, factual, episodic, semantic)"),
        (name = "mem0", description = "The Mem0 wire contract: the official mem0ai clients (0.1.x, 1.0.x, 2.x) work unchanged"),
        (name = "meetings", description = "Meetings: transcripts, insights, summaries; searchable and remembered"),
        (name = "jobs", description = "Background jobs"),
        (name = "events", description = "Real-time events over WebSocket or server-sent events, resumable from the change log"),
        (name = "auth", description = "API keys, projects (tenants), organisations and the audit log"),
    ),
    // Named by query parameters only, which do not register the schemas they refer to.
    components(schemas(crate::store::graph::Direction))
)]
struct ApiDoc;

/// The API routes with their OpenAPI description.
pub fn api() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::status))
        .routes(routes!(ops::check))
        .routes(routes!(ops::reload_read_only))
        .routes(routes!(backups::take, backups::list))
        .routes(routes!(backups::download))
        .routes(routes!(backups::verify))
        .routes(routes!(records::put_record, records::list_records))
        .routes(routes!(records::batch))
        .routes(routes!(records::search_records))
        .routes(routes!(records::get_record, records::delete_record))
        .routes(routes!(graph::node))
        .routes(routes!(graph::neighbours))
        .routes(routes!(graph::hops))
        .routes(routes!(graph::path))
        .routes(routes!(graph::add_entity, graph::entities))
        .routes(routes!(graph::entity))
        .routes(routes!(graph::neighbourhood))
        .routes(routes!(graph::add_relation))
        .routes(routes!(graph::analytics))
        .routes(routes!(objects::list_objects))
        .routes(routes!(objects::put_object, objects::get_object, objects::delete_object))
        .routes(routes!(embed::embed))
        .routes(routes!(documents::list))
        .routes(routes!(documents::put_text))
        .routes(routes!(documents::get, documents::delete))
        .routes(routes!(documents::content))
        .routes(routes!(documents::collections))
        .routes(routes!(memories::add, memories::list, memories::delete_all))
        .routes(routes!(memories::query))
        .routes(routes!(memories::search))
        .routes(routes!(memories::scopes))
        .routes(routes!(memories::event))
        .routes(routes!(memories::get, memories::update, memories::delete))
        .routes(routes!(memories::history))
        .routes(routes!(memories::feedback))
        .routes(routes!(mem0::ping))
        .routes(routes!(mem0::add_v1, mem0::list_v1, mem0::delete_all))
        .routes(routes!(mem0::add_v3))
        .routes(routes!(mem0::event))
        .routes(routes!(mem0::list_v2))
        .routes(routes!(mem0::list_v3))
        .routes(routes!(mem0::search_v1))
        .routes(routes!(mem0::search_v2))
        .routes(routes!(mem0::search_v3))
        .routes(routes!(mem0::get, mem0::update, mem0::delete))
        .routes(routes!(mem0::history))
        .routes(routes!(mem0::entities))
        .routes(routes!(mem0::delete_entity))
        .routes(routes!(mem0::batch_update, mem0::batch_delete))
        .routes(routes!(mem0::feedback))
        .routes(routes!(meetings::create, meetings::list))
        .routes(routes!(meetings::get, meetings::update, meetings::delete))
        .routes(routes!(meetings::participants, meetings::add_participants))
        .routes(routes!(meetings::segments))
        .routes(routes!(meetings::end))
        .routes(routes!(meetings::transcript))
        .routes(routes!(meetings::insights))
        .routes(routes!(meetings::summary))
        .routes(routes!(live::stream))
        .routes(routes!(events::events))
        .routes(routes!(search::search))
        .routes(routes!(search::ask))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::events))
        .routes(routes!(auth::whoami))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::get, keys::revoke))
        .routes(routes!(projects::create_project, projects::list_projects))
        .routes(routes!(projects::create_org, projects::list_orgs))
        .routes(routes!(audit::list))
}

/// Adds to the description what the middleware does for every route: the accepted credentials,
/// and the error body for any status a route does not list (401, 403, 429, 408...).
fn describe_auth(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("`Authorization: Bearer <key>`; `Authorization: Token <key>` is accepted too"))
                .build(),
        ),
    );
    components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    let error = ResponseBuilder::new()
        .description("An error: `error.code` says which (e.g. unauthorized, forbidden, rate_limited, not_found)")
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build();
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            (axum::http::Method::GET, &mut item.get),
            (axum::http::Method::POST, &mut item.post),
            (axum::http::Method::PUT, &mut item.put),
            (axum::http::Method::DELETE, &mut item.delete),
            (axum::http::Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            operation.responses.responses.entry("default".to_string()).or_insert_with(|| error.clone().into());
            let concrete = path.replace('{', "x").replace('}', "");
            if auth::need_for(&method, &concrete, false) != auth::Need::Public {
                operation.security = Some(vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::new("api_key", Vec::<String>::new()),
                ]);
            }
        }
    }
}

/// Operation ids are the handlers' names, which repeat across resources (`list`, `get`...): a
/// repeated one becomes `<tag>_<name>` (`memories_list`), so that every id names one operation.
fn unique_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    fn each(openapi: &mut utoipa::openapi::OpenApi, mut f: impl FnMut(&mut Operation)) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch] {
                operation.iter_mut().for_each(&mut f);
            }
        }
    }
    let mut uses = std::collections::HashMap::<String, usize>::new();
    each(openapi, |operation| *uses.entry(operation.operation_id.clone().unwrap_or_default()).or_default() += 1);
    each(openapi, |operation| {
        let id = operation.operation_id.clone().unwrap_or_default();
        if uses.get(&id).is_some_and(|n| *n > 1) {
            let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
            operation.operation_id = Some(format!("{tag}_{id}"));
        }
    });
}

pub fn router(app: Arc<App>) -> Router {
    // Uploads get their own, larger body limit.
    let uploads = OpenApiRouter::new()
        .routes(routes!(documents::upload))
        .routes(routes!(meetings::import))
        .layer(DefaultBodyLimit::max(app.config.knowledge.max_upload_bytes.min(usize::MAX as u64) as usize));
    let (api, mut openapi) = api().merge(uploads).split_for_parts();
    // axum spells a catch-all segment `{*key}`; OpenAPI knows only `{key}`.
    openapi.paths.paths = std::mem::take(&mut openapi.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    describe_auth(&mut openapi);
    unique_operation_ids(&mut openapi);
    let openapi = Arc::new(openapi);
    let server = &app.config.server;
    let timeout = Duration::from_secs(server.request_timeout_secs);
    let body_limit = server.body_limit_bytes;
    let concurrency = tower::limit::GlobalConcurrencyLimitLayer::new(server.max_concurrent_requests);
    let cors = tower::util::option_layer(cors(&server.cors_allowed_origins));
    let hsts = tower::util::option_layer(server.tls.enabled().then(|| {
        SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        )
    }));
    let routes = api
        .route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .route(docs::PATH, get(docs::redirect))
        .route("/docs/", get(docs::index))
        .route("/docs/{*rest}", get(docs::asset))
        .route_service("/mcp", mcp::service(app.clone()))
        .fallback(ui::serve)
        .method_not_allowed_fallback(|| async {
            Error::new(ErrorCode::MethodNotAllowed, "this method is not allowed on this route; see /openapi.json")
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(concurrency)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    Error::new(ErrorCode::Timeout, "the request took longer than server.request_timeout_secs")
                }))
                .timeout(timeout),
        )
        .layer(middleware::from_fn_with_state(app.clone(), auth::authenticate));
    error_shapes(routes)
        .layer(middleware::from_fn(record_metrics))
        .layer(cors)
        .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(security_header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .layer(hsts)
        // A panic in the layers outside `error_shapes` still answers 500.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(app)
}

/// Each route's own error shape, a handler's panic included: Mem0's routes answer
/// `{detail, code}` and `/mcp` JSON-RPC errors, so a panic there is a 500 in that shape, not in
/// the native `{"error": ...}` one.
fn error_shapes<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(mem0::mem0_error_bodies))
        .layer(middleware::from_fn(mcp::json_rpc_errors))
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Error::internal("request handler", "panicked").into_response()
}

/// The UI and the API docs page load only their own scripts and styles; nothing may frame them.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Cross-origin browser access, when `server.cors_allowed_origins` lists origins.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any};
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("x-api-key")])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok())))
    })
}

/// Counts requests and their latency by route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("nexus_http_requests_total", &labels).increment(1);
    metrics::histogram!("nexus_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to the grace period).
/// HTTPS when `server.tls` is set: HTTP/2 and HTTP/1.1, the certificate reloaded on SIGHUP.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    tls: Option<tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        stopper.graceful_shutdown(Some(grace));
    });
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let listener = listener.into_std()?;
    let served = match tls {
        Some(tls::Tls { config, cert, key }) => {
            let reload = tokio::spawn(tls::reload_certificate_on_sighup(config.clone(), cert, key));
            let served = axum_server::from_tcp_rustls(listener, config)?.handle(handle).serve(service).await;
            reload.abort();
            served
        }
        None => axum_server::from_tcp(listener)?.handle(handle).serve(service).await,
    };
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    async fn answer(router: &Router, path: &str) -> (u16, Value) {
        let response = router.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_its_routes_error_shape() {
        async fn boom() -> &'static str {
            panic!("a handler's bug")
        }
        let router: Router =
            error_shapes(Router::new().route("/v3/memories/", get(boom)).route("/api/v1/status", get(boom)));
        let (status, body) = answer(&router, "/v3/memories/").await;
        assert_eq!(status, 500);
        assert_eq!(body["code"], "internal", "{body}");
        assert!(body["detail"].is_string() && body.get("error").is_none(), "Mem0's shape: {body}");
        let (status, body) = answer(&router, "/api/v1/status").await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "internal", "the native shape: {body}");
    }
}
