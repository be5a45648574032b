//! Errors as HTTP responses, and extractors whose rejections use the same JSON error shape.
//!
//! Body: `{"error": {"code": "snake_case", "message": "...", "type": "..."}}`. A 5xx body is
//! generic; its detail goes to the log.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case; match on this.
    pub code: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // System failures keep their detail in the log; the client learns only that it happened.
        let message = if self.code.kind() == "system" {
            tracing::error!(code = self.code.as_str(), error = %self, "request failed");
            "internal error; the server log has the details".to_string()
        } else {
            self.message.clone()
        };
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.as_str().to_string(), message, kind: self.code.kind().to_string() },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self.code, ErrorCode::Overloaded | ErrorCode::BackendUnavailable | ErrorCode::NotReady) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// `axum::Json`, with malformed bodies answered in Nexus's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Error::new(ErrorCode::InvalidJson, "send the body as JSON with `Content-Type: application/json`")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::new(
            ErrorCode::PayloadTooLarge,
            "request body is larger than server.body_limit_bytes; send less or raise the limit",
        ),
        other => Error::new(ErrorCode::InvalidJson, format!("invalid JSON body: {}", other.body_text())),
    }
}

/// `axum::extract::Query`, with bad parameters answered in Nexus's error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| Error::invalid(format!("invalid query parameters: {}", e.body_text())))
    }
}

/// `axum::extract::Path`, with bad segments answered in Nexus's error shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| Error::invalid(format!("invalid path: {}", e.body_text())))
    }
}

/// `axum::extract::Multipart`, with a malformed or missing multipart body answered in Nexus's
/// error shape.
pub struct ApiMultipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for ApiMultipart {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Multipart::from_request(req, state).await.map(ApiMultipart).map_err(|e| {
            Error::invalid(format!("send the body as multipart/form-data with a boundary: {}", e.body_text()))
        })
    }
}
