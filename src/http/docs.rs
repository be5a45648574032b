//! `/docs`: the API description (`/openapi.json`) as a page to read and try, Swagger UI compiled
//! into the binary (utoipa-swagger-ui's vendored copy: nothing is fetched, at build time or at
//! run time).
//!
//! The page and its files are public, like the UI's; the calls made from it carry the key the
//! reader enters with *Authorize* (the description declares the `bearer` and `api_key` schemes).
//! Every file is served from this origin, so the page works under the server's one strict
//! Content-Security-Policy: no inline script or style, nothing from elsewhere (the online
//! validator badge is turned off).

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_swagger_ui::Config;

use crate::error::Error;

/// Where the page lives.
pub const PATH: &str = "/docs";

static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::new(["/openapi.json"])
            // The badge would load an image from validator.swagger.io.
            .validator_url("none")
            .display_request_duration(true)
            .filter(true)
            .try_it_out_enabled(false)
            .persist_authorization(false),
    )
});

/// `/docs` → `/docs/`, so that the page's relative links resolve under it.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/docs/")
}

/// `/docs/`: the page itself.
pub async fn index() -> Response {
    file("index.html")
}

/// `/docs/<file>`: Swagger UI's scripts, styles and images.
pub async fn asset(Path(rest): Path<String>) -> Response {
    file(&rest)
}

fn file(path: &str) -> Response {
    match utoipa_swagger_ui::serve(path, CONFIG.clone()) {
        Ok(Some(file)) => {
            let mut response = (StatusCode::OK, file.bytes.into_owned()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&file.content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Ok(None) => super::ui::route_not_found(&format!("{PATH}/{path}")),
        Err(e) => Error::internal("serve the API docs page", e).into_response(),
    }
}

/// Whether `path` is the docs page or one of its files (public, like the UI's files).
pub fn is_docs(path: &str) -> bool {
    path == PATH || path.strip_prefix(PATH).is_some_and(|rest| rest.starts_with('/'))
}
