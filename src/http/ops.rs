//! Operations: liveness, readiness, metrics, status and consistency checks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::{App, BackendStatus, IndexerStatus, Status};
use crate::error::Result;
use crate::telemetry;
use crate::writelog::check::CheckReport;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
///
/// Always `{"status": "ok"}` while the process answers; it says nothing about the stores (see
/// `/ready`). Public: no key needed, for load balancers and service managers.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    ready: bool,
    /// Each store's backend, and whether it answers.
    backends: Vec<BackendStatus>,
    indexers: Vec<IndexerStatus>,
}

/// Readiness: every backend answers and every indexer has replayed what it missed.
///
/// 200 when the server can take traffic, 503 (same body) while a backend does not answer or the
/// indexers are still catching up after a start. Each backend and indexer is listed with its state
/// and lag. Public: no key needed.
#[utoipa::path(get, path = "/ready", tag = "ops", responses(
    (status = 200, body = Readiness, description = "ready"),
    (status = 503, body = Readiness, description = "a backend does not answer, or indexers are catching up"),
))]
pub async fn ready(State(app): State<Arc<App>>) -> Result<Response> {
    let backends = app.backend_status().await;
    let reachable = backends.iter().all(|b| b.reachable);
    // The indexers' positions (and how far each store lags) need the record store; without it,
    // report what is known.
    let records_up = backends.iter().any(|b| b.store == "records" && b.reachable);
    let indexers = if records_up { app.indexer_status().await.unwrap_or_default() } else { Vec::new() };
    let ready = reachable && app.ready();
    let body = Readiness { ready, backends, indexers };
    if ready {
        return Ok((StatusCode::OK, axum::Json(body)).into_response());
    }
    Ok((StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], axum::Json(body)).into_response())
}

/// Server status for the UI: stores, their sizes and indexer lag.
///
/// The version, the embedder, each store's backend and item count, and how far each indexer is
/// behind the change log.
#[utoipa::path(get, path = "/api/v1/status", tag = "ops", responses((status = 200, body = Status)))]
pub async fn status(State(app): State<Arc<App>>) -> Result<axum::Json<Status>> {
    Ok(axum::Json(app.status().await?))
}

/// Compares the record with every derived store (counts and ids).
///
/// What `nexus check` reports, for a running server: the record's count per tenant, and for each
/// derived store (text, vectors, graph) what it holds against the record. Operator only.
#[utoipa::path(get, path = "/api/v1/admin/check", tag = "ops", responses((status = 200, body = CheckReport)))]
pub async fn check(State(app): State<Arc<App>>) -> Result<axum::Json<CheckReport>> {
    Ok(axum::Json(app.check().await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WriteState {
    /// Whether writes are refused (with `read_only`).
    read_only: bool,
    /// Why, when they are.
    reason: Option<String>,
}

/// Reads the data directory's migration marker again.
///
/// With `migrated.json` (written by `nexus migrate --cutover`) the server refuses writes from now
/// on (`read_only`); without it, takes them. Returns once writes under way have finished. No
/// body. Operator only.
#[utoipa::path(post, path = "/api/v1/admin/read-only", tag = "ops", responses((status = 200, body = WriteState)))]
pub async fn reload_read_only(State(app): State<Arc<App>>) -> Result<axum::Json<WriteState>> {
    let reason = app.read_only_reason()?;
    app.writes.set_read_only(reason.clone()).await;
    Ok(axum::Json(WriteState { read_only: reason.is_some(), reason }))
}

/// Prometheus metrics in the text exposition format.
///
/// Request counts and latencies, store sizes, indexer lag, embedding queue, backups and the data
/// directory's free space. Needs the `admin` scope unless `auth.public_metrics = true`.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<Arc<App>>) -> Result<Response> {
    // While a backend is down the rest still renders (its nexus_backend_up is 0).
    for store in app.store_status().await.unwrap_or_default() {
        metrics::gauge!("nexus_store_items", "store" => store.name).set(store.items as f64);
        metrics::gauge!("nexus_store_bytes", "store" => store.name).set(store.bytes as f64);
    }
    for indexer in app.indexer_status().await.unwrap_or_default() {
        metrics::gauge!("nexus_indexer_lag", "store" => indexer.name).set(indexer.lag as f64);
        metrics::gauge!("nexus_indexer_applied_seq", "store" => indexer.name).set(indexer.applied_seq as f64);
        metrics::gauge!("nexus_change_log_head_seq").set(indexer.head_seq as f64);
    }
    if let Some(pg) = &app.stores.postgres {
        let (open, in_use) = pg.pool_status();
        metrics::gauge!("nexus_backend_pool_connections", "backend" => "postgres", "state" => "open").set(open as f64);
        metrics::gauge!("nexus_backend_pool_connections", "backend" => "postgres", "state" => "in_use")
            .set(in_use as f64);
    }
    for backend in app.backend_status().await {
        metrics::gauge!("nexus_backend_up", "store" => backend.store, "backend" => backend.backend)
            .set(if backend.reachable { 1.0 } else { 0.0 });
    }
    metrics::gauge!("nexus_embed_queue_texts").set(app.embed.queue_len() as f64);
    metrics::gauge!("nexus_ready").set(if app.ready() { 1.0 } else { 0.0 });
    metrics::gauge!("nexus_uptime_seconds").set(app.started.elapsed().as_secs_f64());
    metrics::gauge!("nexus_process_resident_memory_bytes").set(telemetry::resident_memory_bytes() as f64);
    metrics::gauge!("nexus_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Space left where the data lives, for the disk alert (and `nexus doctor`'s threshold).
    let data_dir = app.config.data_dir.clone();
    if let Ok(Ok((free, total))) = tokio::task::spawn_blocking(move || {
        std::io::Result::Ok((fs4::available_space(&data_dir)?, fs4::total_space(&data_dir)?))
    })
    .await
    {
        metrics::gauge!("nexus_data_dir_free_bytes").set(free as f64);
        metrics::gauge!("nexus_data_dir_total_bytes").set(total as f64);
    }
    let body = telemetry::metrics_handle().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}
