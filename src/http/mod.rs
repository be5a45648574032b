//! HTTP: the router, cross-cutting layers and the server loop. Only this folder knows HTTP.
//!
//! One file per resource; every route is declared through `utoipa_axum::routes!`, so it is in
//! `/openapi.json` by construction.

pub mod documents;
pub mod embed;
pub mod error;
pub mod graph;
pub mod jobs;
pub mod objects;
pub mod ops;
pub mod records;
pub mod search;
pub mod tenant;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
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
        (name = "jobs", description = "Background jobs"),
    )
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
        .routes(routes!(records::put_record, records::list_records))
        .routes(routes!(records::batch))
        .routes(routes!(records::search_records))
        .routes(routes!(records::get_record, records::delete_record))
        .routes(routes!(graph::node))
        .routes(routes!(graph::neighbours))
        .routes(routes!(graph::hops))
        .routes(routes!(graph::path))
        .routes(routes!(objects::list_objects))
        .routes(routes!(objects::put_object, objects::get_object, objects::delete_object))
        .routes(routes!(embed::embed))
        .routes(routes!(documents::list))
        .routes(routes!(documents::put_text))
        .routes(routes!(documents::get, documents::delete))
        .routes(routes!(documents::content))
        .routes(routes!(documents::collections))
        .routes(routes!(search::search))
        .routes(routes!(search::ask))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::events))
}

pub fn router(app: Arc<App>) -> Router {
    // Uploads get their own, larger body limit.
    let uploads = OpenApiRouter::new()
        .routes(routes!(documents::upload))
        .layer(DefaultBodyLimit::max(app.config.knowledge.max_upload_bytes.min(usize::MAX as u64) as usize));
    let (api, mut openapi) = api().merge(uploads).split_for_parts();
    // axum spells a catch-all segment `{*key}`; OpenAPI knows only `{key}`.
    openapi.paths.paths = std::mem::take(&mut openapi.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    let openapi = Arc::new(openapi);
    let timeout = Duration::from_secs(app.config.server.request_timeout_secs);
    let body_limit = app.config.server.body_limit_bytes;
    api.route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .fallback(ui::serve)
        .method_not_allowed_fallback(|| async {
            Error::new(ErrorCode::MethodNotAllowed, "this method is not allowed on this route; see /openapi.json")
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    Error::new(ErrorCode::Timeout, "the request took longer than server.request_timeout_secs")
                }))
                .timeout(timeout),
        )
        .layer(middleware::from_fn(record_metrics))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::internal("request handler", "panicked").into_response()
        }))
        .with_state(app)
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
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(signal);
    let server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = server => result,
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the shutdown grace period");
            Ok(())
        }
    }
}
