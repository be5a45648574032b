//! The web UI, compiled into the binary from `web/src` as it is (plain ES modules: there is no
//! build step, so there is one copy of every file).

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::error::{Error, ErrorCode};

#[derive(RustEmbed)]
#[folder = "web/src/"]
struct Assets;

/// Serves `/` and the UI's files; other paths are an API-style 404.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    if path.starts_with("api/") {
        return route_not_found(uri.path());
    }
    match Assets::get(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(mime.as_ref()).unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => route_not_found(uri.path()),
    }
}

/// Whether `path` is one of the UI's files (`/` is `index.html`).
pub fn is_asset(path: &str) -> bool {
    let path = path.trim_start_matches('/');
    Assets::get(if path.is_empty() { "index.html" } else { path }).is_some()
}

pub fn route_not_found(path: &str) -> Response {
    Error::new(ErrorCode::RouteNotFound, format!("no route for {path}; see /openapi.json for the API")).into_response()
}
