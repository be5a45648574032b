//! Objects on an S3-compatible service (AWS S3, MinIO, Ceph, ...) through `object_store`'s S3
//! client, behind the same [`ObjectStoreBacked`] wrapper as local files.
//!
//! Contract:
//! - Set up by `[store.objects]` with `backend = "s3"`: `endpoint`, `bucket`, `region`,
//!   `path_style`, `allow_http` and an optional key `prefix`. Credentials come from
//!   `access_key_id_env` / `secret_access_key_env` (environment variables) or
//!   `access_key_id_file` / `secret_access_key_file`, else from the standard `AWS_ACCESS_KEY_ID` /
//!   `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) variables. No other source (instance
//!   metadata, web identity) is tried: the endpoint is the only address the store talks to.
//! - An object is stored at `{prefix}/{tenant}/{key}` in the bucket.
//! - [`open`] checks access first with one listing, so a bad setting stops the start: a missing
//!   bucket or refused credentials are `config_invalid`, an unreachable endpoint
//!   `backend_unavailable`, each one line naming the setting to fix. [`check_access`] is the same
//!   check for `nexus doctor`. Secrets never appear in messages.
//! - While running, a service that cannot be reached, fails (5xx) or refuses the credentials gives
//!   `backend_unavailable` (HTTP 503 with Retry-After) after a few quick retries; a missing object
//!   is `not_found` as with local files.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::local::ObjectStoreBacked;
use crate::config::{ObjectsConfig, Secret, read_secret};
use crate::error::{Error, ErrorCode, Result};

/// How long connecting may take, and how long the service may go silent mid-request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The access check at start gives up after this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens the bucket named by `config` after checking that it answers with the credentials.
pub async fn open(config: &ObjectsConfig) -> Result<ObjectStoreBacked> {
    let (store, described) = open_checked(config).await?;
    Ok(ObjectStoreBacked::new("s3", store, described))
}

/// While running: a few quick retries, then `backend_unavailable`.
fn runtime_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
    }
}

async fn open_checked(config: &ObjectsConfig) -> Result<(Arc<dyn object_store::ObjectStore>, String)> {
    let target = Target::new(config)?;
    let credentials = Credentials::resolve(config)?;
    check(&target, &credentials).await?;
    Ok((build(&target, &credentials, runtime_retry())?, target.describe()))
}

/// The bucket (under `config.prefix`) as object_store's client, checked like [`open`], for other
/// users of an S3 service than the object store (backups). Messages name the settings under
/// `section` (`backup.s3`, or `store.objects` when the backups use the object store's service).
/// Returns the client and how to name the place (`bucket "b" at https://host (prefix "p")`).
pub async fn open_bucket(
    config: &ObjectsConfig,
    section: &str,
) -> Result<(Arc<dyn object_store::ObjectStore>, String)> {
    open_checked(config).await.map_err(|e| in_section(e, section))
}

/// An error about the object store's settings, told about `section`'s instead.
pub fn in_section(mut e: Error, section: &str) -> Error {
    if section != "store.objects" {
        e.message = e.message.replace("store.objects", section);
    }
    e
}

/// Checks that the configured bucket answers a listing with the configured credentials; says
/// what was checked, or fails as [`open`] would.
pub async fn check_access(config: &ObjectsConfig) -> Result<String> {
    let target = Target::new(config)?;
    let credentials = Credentials::resolve(config)?;
    check(&target, &credentials).await?;
    Ok(format!("{} answers with the credentials from {}", target.describe(), credentials.source))
}

/// Where the objects are.
struct Target {
    endpoint: String,
    bucket: String,
    region: String,
    path_style: bool,
    allow_http: bool,
    prefix: Option<ObjectPath>,
}

impl Target {
    fn new(config: &ObjectsConfig) -> Result<Target> {
        let bad = |key: &str, why: &str| Error::config(format!("invalid configuration: `{key}` {why}"));
        let endpoint = config
            .endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| bad("store.objects.endpoint", "is required when store.objects.backend = \"s3\""))?
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("https://") || config.allow_http && endpoint.starts_with("http://")) {
            return Err(bad(
                "store.objects.endpoint",
                "must start with https:// (or http:// with store.objects.allow_http = true)",
            ));
        }
        let bucket = config
            .bucket
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| bad("store.objects.bucket", "is required when store.objects.backend = \"s3\""))?
            .trim()
            .to_string();
        let prefix = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => None,
            Some(prefix) => Some(ObjectPath::parse(prefix).map_err(|e| {
                bad("store.objects.prefix", &format!("is not a valid key prefix ({e}): use `/`-separated names"))
            })?),
        };
        Ok(Target {
            endpoint,
            bucket,
            region: config.region.clone(),
            path_style: config.path_style,
            allow_http: config.allow_http,
            prefix,
        })
    }

    /// `bucket "b" at https://host (prefix "p")`
    fn describe(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("bucket \"{}\" at {} (prefix \"{prefix}\")", self.bucket, self.endpoint),
            None => format!("bucket \"{}\" at {}", self.bucket, self.endpoint),
        }
    }

    /// The URL object_store sends requests to: the endpoint itself for path-style addressing,
    /// else the bucket as the first label of the endpoint's host.
    fn client_endpoint(&self) -> String {
        if self.path_style {
            return self.endpoint.clone();
        }
        match self.endpoint.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}.{host}", self.bucket),
            None => self.endpoint.clone(),
        }
    }
}

struct Credentials {
    access_key_id: Secret,
    secret_access_key: Secret,
    token: Option<Secret>,
    /// Which settings (or variables) they came from, for messages.
    source: String,
}

impl Credentials {
    fn resolve(config: &ObjectsConfig) -> Result<Credentials> {
        let access = read_secret(
            "store.objects.access_key_id",
            config.access_key_id_env.as_deref(),
            config.access_key_id_file.as_deref(),
        )?;
        let secret = read_secret(
            "store.objects.secret_access_key",
            config.secret_access_key_env.as_deref(),
            config.secret_access_key_file.as_deref(),
        )?;
        match (access, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
                token: None,
                source: format!(
                    "{} and {}",
                    setting("access_key_id", config.access_key_id_env.as_deref(), config.access_key_id_file.as_deref()),
                    setting(
                        "secret_access_key",
                        config.secret_access_key_env.as_deref(),
                        config.secret_access_key_file.as_deref()
                    )
                ),
            }),
            (None, None) => {
                let var = |name: &str| {
                    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(Secret::new)
                };
                match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                    (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                        access_key_id,
                        secret_access_key,
                        token: var("AWS_SESSION_TOKEN"),
                        source:
                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (`store.objects.access_key_id_env` is not set)"
                                .to_string(),
                    }),
                    _ => Err(Error::config(
                        "invalid configuration: the s3 object store has no credentials: set \
                         `store.objects.access_key_id_env` and `store.objects.secret_access_key_env` (or the `_file` \
                         settings), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
                    )),
                }
            }
            (Some(_), None) => Err(Error::config(
                "invalid configuration: `store.objects.secret_access_key_env` (or `_file`) is required with \
                 `store.objects.access_key_id_env` (or `_file`)",
            )),
            (None, Some(_)) => Err(Error::config(
                "invalid configuration: `store.objects.access_key_id_env` (or `_file`) is required with \
                 `store.objects.secret_access_key_env` (or `_file`)",
            )),
        }
    }
}

/// `` `store.objects.{name}_env` (VAR) `` or `` `store.objects.{name}_file` (PATH) ``.
fn setting(name: &str, env: Option<&str>, file: Option<&std::path::Path>) -> String {
    match (env, file) {
        (Some(var), _) => format!("`store.objects.{name}_env` ({var})"),
        (None, Some(path)) => format!("`store.objects.{name}_file` ({})", path.display()),
        (None, None) => format!("`store.objects.{name}_env`"),
    }
}

fn build(target: &Target, credentials: &Credentials, retry: RetryConfig) -> Result<Arc<dyn object_store::ObjectStore>> {
    // ring is the one crypto provider in this build; reqwest's rustls uses the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = ClientOptions::new()
        .with_allow_http(target.allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        // Large objects stream for as long as they take; a silent service times out.
        .with_timeout_disabled()
        .with_read_timeout(READ_TIMEOUT);
    let mut builder = AmazonS3Builder::new()
        .with_endpoint(target.client_endpoint())
        .with_bucket_name(&target.bucket)
        .with_region(&target.region)
        .with_virtual_hosted_style_request(!target.path_style)
        .with_access_key_id(credentials.access_key_id.expose())
        .with_secret_access_key(credentials.secret_access_key.expose())
        .with_client_options(options)
        .with_retry(retry);
    if let Some(token) = &credentials.token {
        builder = builder.with_token(token.expose());
    }
    let s3 = builder.build().map_err(|e| {
        Error::config(format!("invalid configuration: `store.objects` cannot set up the s3 client: {e}"))
    })?;
    Ok(match &target.prefix {
        Some(prefix) => Arc::new(PrefixStore::new(s3, prefix.clone())),
        None => Arc::new(s3),
    })
}

/// One listing (the first page under the prefix), without retries.
async fn check(target: &Target, credentials: &Credentials) -> Result<()> {
    let retry = RetryConfig { backoff: BackoffConfig::default(), max_retries: 0, retry_timeout: CHECK_TIMEOUT };
    let store = build(target, credentials, retry)?;
    let first = tokio::time::timeout(CHECK_TIMEOUT, async { store.list(None).next().await }).await;
    match first {
        Ok(None | Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(check_error(target, credentials, &e)),
        Err(_) => Err(Error::new(
            ErrorCode::BackendUnavailable,
            format!(
                "`store.objects.endpoint`: {} did not answer within {} s; check the address and that the service is running",
                target.endpoint,
                CHECK_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The start-time failure, naming the setting to fix.
fn check_error(target: &Target, credentials: &Credentials, e: &object_store::Error) -> Error {
    let failure = Failure::of(e);
    let (endpoint, bucket) = (&target.endpoint, &target.bucket);
    if let Some(reason) = failure.unreachable.as_deref().filter(|r| r.contains("certificate")) {
        return Error::config(format!(
            "`store.objects.endpoint`: {endpoint} presented a TLS certificate that is not trusted ({reason}); check the \
             address, or add the service's CA to the system's trusted certificates"
        ));
    }
    if let Some(reason) = failure.unreachable {
        return Error::new(
            ErrorCode::BackendUnavailable,
            format!(
                "`store.objects.endpoint`: {endpoint} is unreachable ({reason}); check the address and that the service is running"
            ),
        );
    }
    let code = failure.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
    if failure.code.as_deref() == Some("NoSuchBucket") {
        return Error::config(format!(
            "`store.objects.bucket`: bucket \"{bucket}\" does not exist at {endpoint}; create it, or correct the setting"
        ));
    }
    if failure.denied() {
        return Error::config(format!(
            "{}: {endpoint} refused these credentials for bucket \"{bucket}\"{code}; correct them, or grant them access to the bucket",
            credentials.source
        ));
    }
    if failure.status == Some(404) {
        return Error::config(format!(
            "`store.objects.bucket`: bucket \"{bucket}\" was not found at {endpoint}{code}; create it, or correct \
             store.objects.bucket (and store.objects.endpoint if it is not an S3 service)"
        ));
    }
    if failure.server_side() {
        return Error::new(
            ErrorCode::BackendUnavailable,
            format!(
                "`store.objects.endpoint`: {endpoint} is failing (HTTP {}){code}; try again later",
                failure.status_text()
            ),
        );
    }
    Error::config(format!(
        "`store.objects.endpoint`: {endpoint} did not answer as an S3 service for bucket \"{bucket}\": {}",
        failure.summary
    ))
}

/// The error of an operation on a running store (`target` as [`Target::describe`] gives it).
pub(crate) fn runtime_error(target: &str, context: &str, e: object_store::Error) -> Error {
    metrics::counter!("nexus_backend_errors_total", "backend" => "s3").increment(1);
    let failure = Failure::of(&e);
    let code = failure.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
    let unavailable = |message: String| {
        tracing::warn!(target = %target, context, error = %e, "s3 object store unavailable");
        Error::new(ErrorCode::BackendUnavailable, message)
    };
    if let Some(reason) = &failure.unreachable {
        return unavailable(format!("s3 {target} is unreachable ({context}): {reason}"));
    }
    if failure.server_side() {
        return unavailable(format!("s3 {target} is failing ({context}): HTTP {}{code}", failure.status_text()));
    }
    if failure.denied() {
        return unavailable(format!(
            "s3 {target} refused the credentials ({context}){code}; check store.objects.access_key_id_env and \
             secret_access_key_env"
        ));
    }
    if failure.code.as_deref() == Some("NoSuchBucket") {
        return unavailable(format!("s3 {target} is gone ({context}): the bucket does not exist"));
    }
    Error::store(&format!("s3 {target} {context}"), failure.summary)
}

/// What an `object_store` error says about the service. Its HTTP status and S3 error code are
/// only in the error's text (object_store keeps the typed error private), so they are read there.
struct Failure {
    /// The connection failed or broke off: the reason, from the innermost error.
    unreachable: Option<String>,
    status: Option<u16>,
    /// The S3 error code (`NoSuchBucket`, `SignatureDoesNotMatch`, ...).
    code: Option<String>,
    /// object_store refused for lack of permission or authentication.
    typed_denied: bool,
    /// The whole message, on one line.
    summary: String,
}

impl Failure {
    fn of(e: &object_store::Error) -> Failure {
        let mut unreachable = None;
        let mut texts = Vec::new();
        let mut innermost = String::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = current {
            if let Some(http) = err.downcast_ref::<HttpError>()
                && matches!(
                    http.kind(),
                    HttpErrorKind::Connect
                        | HttpErrorKind::Request
                        | HttpErrorKind::Timeout
                        | HttpErrorKind::Interrupted
                )
            {
                unreachable = Some(String::new());
            }
            innermost = err.to_string();
            texts.push(innermost.clone());
            current = err.source();
        }
        if unreachable.is_some() {
            unreachable = Some(one_line(&innermost));
        }
        let all = texts.join(" | ");
        let status = all.split("status code: ").nth(1).and_then(|rest| rest.get(..3)).and_then(|s| s.parse().ok());
        let code = all
            .split("<Code>")
            .nth(1)
            .and_then(|rest| rest.split_once("</Code>"))
            .map(|(code, _)| code.trim().to_string())
            .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()));
        let typed_denied =
            matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. });
        Failure { unreachable, status, code, typed_denied, summary: one_line(&e.to_string()) }
    }

    fn denied(&self) -> bool {
        const DENIED: [&str; 5] =
            ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"];
        self.typed_denied
            || matches!(self.status, Some(401 | 403))
            || self.code.as_deref().is_some_and(|c| DENIED.contains(&c))
    }

    fn server_side(&self) -> bool {
        const FAILING: [&str; 3] = ["InternalError", "SlowDown", "ServiceUnavailable"];
        self.status.is_some_and(|s| s >= 500) || self.code.as_deref().is_some_and(|c| FAILING.contains(&c))
    }

    fn status_text(&self) -> String {
        self.status.map(|s| s.to_string()).unwrap_or_else(|| "error".to_string())
    }
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &line[..cut])
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ObjectsBackend;

    fn config(endpoint: &str) -> ObjectsConfig {
        ObjectsConfig {
            backend: ObjectsBackend::S3,
            endpoint: Some(endpoint.to_string()),
            bucket: Some("media".to_string()),
            region: "eu-west-1".to_string(),
            path_style: true,
            access_key_id_env: None,
            secret_access_key_env: None,
            access_key_id_file: None,
            secret_access_key_file: None,
            allow_http: false,
            prefix: Some("/nexus/prod/".to_string()),
        }
    }

    #[test]
    fn addressing_follows_path_style() {
        let mut c = config("https://s3.eu-west-1.amazonaws.com/");
        let target = Target::new(&c).unwrap();
        assert_eq!(target.client_endpoint(), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(target.prefix.as_ref().map(|p| p.as_ref().to_string()).as_deref(), Some("nexus/prod"));
        c.path_style = false;
        assert_eq!(Target::new(&c).unwrap().client_endpoint(), "https://media.s3.eu-west-1.amazonaws.com");
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let mut c = config("http://127.0.0.1:9000");
        let err = Target::new(&c).err().unwrap();
        assert_eq!(err.code, ErrorCode::ConfigInvalid);
        assert!(err.message.contains("store.objects.endpoint"), "{}", err.message);
        c.allow_http = true;
        assert!(Target::new(&c).is_ok());
    }

    #[test]
    fn half_the_credentials_is_refused_by_name() {
        let mut c = config("https://s3.example.com");
        c.access_key_id_env = Some("NEXUS_S3_TEST_HALF_ACCESS_KEY".to_string());
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("NEXUS_S3_TEST_HALF_ACCESS_KEY", "AKIDEXAMPLE") };
        let err = Credentials::resolve(&c).err().unwrap();
        assert_eq!(err.code, ErrorCode::ConfigInvalid);
        assert!(err.message.contains("store.objects.secret_access_key_env"), "{}", err.message);
        assert!(!err.message.contains("AKIDEXAMPLE"), "{}", err.message);
    }
}
