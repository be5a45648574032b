//! One error type for all of Nexus.
//!
//! Every error carries a stable snake_case [`ErrorCode`]; the code decides the HTTP status and the
//! process exit code. Messages are lowercase, say what went wrong and what to do about it.

use std::fmt;

/// Stable error codes. Clients may match on [`ErrorCode::as_str`]; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidJson,
    InvalidVector,
    PayloadTooLarge,
    UnsupportedFormat,
    CorruptDocument,
    NotFound,
    RouteNotFound,
    Conflict,
    /// The data directory moved to a cluster (`nexus migrate --cutover`): it takes no writes.
    ReadOnly,
    Unauthorized,
    KeyExpired,
    KeyRevoked,
    Forbidden,
    RateLimited,
    MethodNotAllowed,
    ConfigInvalid,
    BackendUnavailable,
    DataDirLocked,
    DataDirFormatTooNew,
    DataDirInvalid,
    NotReady,
    Overloaded,
    EmbedderMismatch,
    EmbedderUnavailable,
    LlmUnavailable,
    LlmTimeout,
    Timeout,
    Cancelled,
    /// A backup archive or dump that is truncated, corrupt, tampered with, unsafe or too new.
    ArchiveInvalid,
    /// The disk holding the data directory (or a backup's target) is full.
    DiskFull,
    StoreFailure,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidVector => "invalid_vector",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedFormat => "unsupported_format",
            ErrorCode::CorruptDocument => "corrupt_document",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::KeyExpired => "key_expired",
            ErrorCode::KeyRevoked => "key_revoked",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::DataDirLocked => "data_dir_locked",
            ErrorCode::DataDirFormatTooNew => "data_dir_format_too_new",
            ErrorCode::DataDirInvalid => "data_dir_invalid",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::EmbedderMismatch => "embedder_mismatch",
            ErrorCode::EmbedderUnavailable => "embedder_unavailable",
            ErrorCode::LlmUnavailable => "llm_unavailable",
            ErrorCode::LlmTimeout => "llm_timeout",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ArchiveInvalid => "archive_invalid",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::StoreFailure => "store_failure",
            ErrorCode::Internal => "internal",
        }
    }

    /// HTTP status. An exhaustive match: a new code cannot go unmapped.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidJson | ErrorCode::InvalidVector => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedFormat => 415,
            ErrorCode::CorruptDocument => 422,
            ErrorCode::NotFound | ErrorCode::RouteNotFound => 404,
            ErrorCode::Conflict | ErrorCode::ReadOnly => 409,
            ErrorCode::Unauthorized | ErrorCode::KeyExpired | ErrorCode::KeyRevoked => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Timeout => 408,
            ErrorCode::Cancelled => 409,
            ErrorCode::ArchiveInvalid => 422,
            ErrorCode::DiskFull => 507,
            ErrorCode::NotReady | ErrorCode::BackendUnavailable | ErrorCode::Overloaded => 503,
            ErrorCode::EmbedderUnavailable | ErrorCode::LlmUnavailable => 502,
            ErrorCode::LlmTimeout => 504,
            ErrorCode::ConfigInvalid
            | ErrorCode::EmbedderMismatch
            | ErrorCode::DataDirLocked
            | ErrorCode::DataDirFormatTooNew
            | ErrorCode::DataDirInvalid
            | ErrorCode::StoreFailure
            | ErrorCode::Internal => 500,
        }
    }

    /// The broad class of the error, as shown in the `type` field of the JSON body.
    pub fn kind(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidVector
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UnsupportedFormat
            | ErrorCode::CorruptDocument
            | ErrorCode::NotFound
            | ErrorCode::RouteNotFound
            | ErrorCode::Conflict
            | ErrorCode::ReadOnly
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Timeout
            | ErrorCode::Cancelled
            | ErrorCode::ArchiveInvalid => "invalid_request",
            ErrorCode::DiskFull => "unavailable",
            ErrorCode::Unauthorized | ErrorCode::KeyExpired | ErrorCode::KeyRevoked | ErrorCode::Forbidden => "auth",
            ErrorCode::RateLimited => "rate_limit",
            ErrorCode::ConfigInvalid => "config",
            ErrorCode::NotReady | ErrorCode::BackendUnavailable | ErrorCode::Overloaded => "unavailable",
            ErrorCode::EmbedderUnavailable | ErrorCode::LlmUnavailable | ErrorCode::LlmTimeout => "upstream",
            ErrorCode::EmbedderMismatch
            | ErrorCode::DataDirLocked
            | ErrorCode::DataDirFormatTooNew
            | ErrorCode::DataDirInvalid
            | ErrorCode::StoreFailure
            | ErrorCode::Internal => "system",
        }
    }

    /// Process exit code when this error ends a command: 2 for usage and configuration, else 1.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::ConfigInvalid | ErrorCode::BackendUnavailable | ErrorCode::EmbedderMismatch => 2,
            _ => 1,
        }
    }
}

/// A Nexus error: a stable code, a message for humans and an optional cause for the log.
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), source: None }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Error::new(ErrorCode::NotFound, format!("{what} `{id}` not found"))
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::ConfigInvalid, message)
    }

    /// A failure inside a storage engine; `context` says what Nexus was doing.
    pub fn store(context: &str, source: impl fmt::Display) -> Self {
        Error::new(ErrorCode::StoreFailure, format!("{context}: {source}"))
    }

    /// The disk is full: nothing was written; the same request succeeds once space is freed.
    pub fn disk_full(what: &str, source: impl fmt::Display) -> Self {
        Error::new(
            ErrorCode::DiskFull,
            format!("the disk is full while writing {what} ({source}); nothing was written: free space and retry"),
        )
    }

    pub fn internal(context: &str, source: impl fmt::Display) -> Self {
        Error::new(ErrorCode::Internal, format!("{context}: {source}"))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())?;
        if let Some(source) = &self.source {
            write!(f, ": {source:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return Error::disk_full("the record store", e);
        }
        Error::store("sqlite", e)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::internal("background task failed", e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded {
            return Error::disk_full("a file", e);
        }
        Error::store("i/o", e)
    }
}
