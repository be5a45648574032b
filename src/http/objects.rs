//! Objects: original files, streamed in and out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::{ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, ErrorCode, Result};
use crate::store::objects::ObjectInfo;

/// Stores the request body at `key`, replacing any object there.
///
/// The body is streamed to the object store as it comes (never held whole); a reader sees the old
/// object or the new one, never a part. Answers with its size and SHA-256.
#[utoipa::path(put, path = "/api/v1/objects/{*key}", tag = "objects",
    params(("key" = String, Path, description = "The object's key: `/`-separated segments, no `.` or `..`",
        example = "reports/2025/q1.pdf")),
    request_body(content = String, content_type = "application/octet-stream", description = "The object's bytes",
        example = "%PDF-1.7 ..."),
    responses((status = 200, body = ObjectInfo), (status = 413, body = super::error::ErrorBody)))]
pub async fn put_object(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(key): ApiPath<String>,
    body: Body,
) -> Result<axum::Json<ObjectInfo>> {
    let limit = app.config.server.body_limit_bytes as u64;
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let stream = body
        .into_data_stream()
        .map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            if counter.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64 > limit {
                return Err(std::io::Error::other("body over the size limit"));
            }
            Ok(chunk)
        })
        .boxed();
    match app.stores.objects.put(&tenant, &key, stream).await {
        Err(e) if seen.load(Ordering::Relaxed) > limit => Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!("object is larger than server.body_limit_bytes ({limit}); nothing was stored"),
        )
        .with_source(e)),
        other => Ok(axum::Json(other?)),
    }
}

/// Streams the object at `key`.
///
/// The bytes as they were stored, with `Content-Length`.
#[utoipa::path(get, path = "/api/v1/objects/{*key}", tag = "objects",
    params(("key" = String, Path, description = "The object's key: `/`-separated segments, no `.` or `..`",
        example = "reports/2025/q1.pdf")),
    responses((status = 200, content_type = "*/*", body = Vec<u8>,
        description = "The bytes, with the content type the key's extension gives (else `application/octet-stream`)"),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn get_object(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(key): ApiPath<String>,
) -> Result<Response> {
    let (info, stream) = app.stores.objects.get(&tenant, &key).await?;
    let mime = mime_guess::from_path(&key).first_or_octet_stream();
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.as_ref()).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    Ok(response)
}

/// Deletes the object at `key`.
///
/// 204 when it was there, 404 `not_found` when it was not.
#[utoipa::path(delete, path = "/api/v1/objects/{*key}", tag = "objects",
    params(("key" = String, Path, description = "The object's key: `/`-separated segments, no `.` or `..`",
        example = "reports/2025/q1.pdf")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_object(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(key): ApiPath<String>,
) -> Result<StatusCode> {
    if app.stores.objects.delete(&tenant, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("object", &key))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only keys starting with this.
    #[serde(default)]
    #[param(example = "reports/")]
    pub prefix: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ObjectList {
    pub objects: Vec<ObjectInfo>,
}

/// Lists objects under a key prefix.
///
/// The project's objects whose key starts with `prefix`, sorted by key, with size and time.
#[utoipa::path(get, path = "/api/v1/objects", tag = "objects", params(ListParams), responses((status = 200, body = ObjectList)))]
pub async fn list_objects(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<ObjectList>> {
    Ok(axum::Json(ObjectList { objects: app.stores.objects.list(&tenant, &params.prefix).await? }))
}
