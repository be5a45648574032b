//! Postgres as Nexus uses it: the connection pool the cluster twins share (records, jobs and auth
//! in one database; pgvector there too unless it has its own), TLS on rustls with the process's
//! ring provider, errors mapped to stable codes, and numbered schema migrations applied under an
//! advisory lock so that nodes starting at once migrate once.
//!
//! A connection URL may hold a password: it is never logged or put into an error; messages name
//! the setting it came from and the host, port, database and user.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::config::{RecordsConfig, Secret};
use crate::error::{Error, ErrorCode, Result};

/// Where a pool connects and how.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// The setting the URL came from, named in errors (`store.records.url`).
    pub setting: &'static str,
    pub url: Secret,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub ca_file: Option<std::path::PathBuf>,
}

impl PgSettings {
    /// The record store's connection, or another store's URL with the record store's pool settings.
    pub fn from_records(setting: &'static str, url: &Secret, records: &RecordsConfig) -> PgSettings {
        PgSettings {
            setting,
            url: url.clone(),
            pool_size: records.pool_size,
            connect_timeout: Duration::from_millis(records.connect_timeout_ms),
            statement_timeout: Duration::from_millis(records.statement_timeout_ms),
            ca_file: records.ca_file.clone(),
        }
    }
}

/// A pool of connections to one Postgres database.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    /// `host:port/db as user`, for messages (never the password).
    pub target: Arc<str>,
    pub setting: &'static str,
    pg_config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Pg {
    /// Opens the pool and checks that the server answers: a wrong URL, password or database is
    /// refused here with one line naming the setting.
    pub async fn connect(settings: &PgSettings) -> Result<Pg> {
        let bad_url = || {
            Error::config(format!(
                "invalid configuration: `{}` is not a valid Postgres URL; \
                 use postgres://user:password@host:port/database",
                settings.setting
            ))
        };
        let mut pg_config = tokio_postgres::Config::from_str(settings.url.expose()).map_err(|_| bad_url())?;
        if pg_config.get_hosts().is_empty() {
            return Err(bad_url());
        }
        pg_config.connect_timeout(settings.connect_timeout);
        pg_config.application_name("nexus");
        pg_config.options(format!("-c statement_timeout={}", settings.statement_timeout.as_millis()));
        pg_config.keepalives_idle(Duration::from_secs(30));
        let target: Arc<str> = describe(&pg_config).into();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config(
            "store.records",
            settings.ca_file.as_deref(),
        )?);
        let manager = Manager::from_config(
            pg_config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| Error::internal("postgres pool", e))?;
        let pg = Pg { pool, target, setting: settings.setting, pg_config, tls };
        // Not through `client()`: a refusal here is the caller's one error line, not a warning too.
        let _checked = pg.pool.get().await.map_err(|e| pg.refused(e))?;
        Ok(pg)
    }

    /// Why the first connection failed, naming the setting and what to check.
    fn refused(&self, e: PoolError) -> Error {
        let (target, setting) = (&self.target, self.setting);
        let e = match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(_) => {
                return unavailable(format!(
                    "cannot reach postgres at {target} (`{setting}`): no answer within \
                     store.records.connect_timeout_ms; check the host and port and that the server is running"
                ));
            }
            other => return unavailable(format!("cannot reach postgres at {target} (`{setting}`): {other}")),
        };
        let mapped = self.classify("connect", &e);
        let Some(db) = e.as_db_error() else {
            return Error::new(
                mapped.code,
                format!(
                    "cannot reach postgres at {target} (`{setting}`): {}; check the host and port and that the \
                     server is running",
                    short(&e)
                ),
            );
        };
        let hint = if db.code().code().starts_with("28") {
            "; check the user and password in the URL"
        } else if *db.code() == SqlState::INVALID_CATALOG_NAME {
            "; create the database, or name an existing one in the URL"
        } else {
            ""
        };
        Error::new(
            mapped.code,
            format!("postgres at {target} refused the connection (`{setting}`): {}{hint}", db.message()),
        )
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<Object> {
        let started = Instant::now();
        let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        metrics::histogram!("nexus_backend_wait_seconds", "backend" => "postgres").record(started.elapsed());
        Ok(client)
    }

    /// A connection of its own, outside the pool: LISTEN and session-level advisory locks need one.
    pub async fn dedicated(&self) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        let (client, connection) =
            self.pg_config.connect(self.tls.clone()).await.map_err(|e| self.error("connect", e))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, task))
    }

    /// A connection that delivers `NOTIFY` payloads on `channel` to the returned receiver; it
    /// ends (the receiver yields `None`) when the connection drops.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        let (client, mut connection) =
            self.pg_config.connect(self.tls.clone()).await.map_err(|e| self.error("connect", e))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = futures::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message
                    && tx.send(n.payload().to_string()).is_err()
                {
                    break;
                }
            }
        });
        client.batch_execute(&format!("LISTEN {channel}")).await.map_err(|e| self.error("listen", e))?;
        Ok((client, rx))
    }

    /// Connections open and in use, for metrics and status.
    pub fn pool_status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.size.saturating_sub(status.available))
    }

    /// Whether the server answers now.
    pub async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(|e| self.error("ping", e))?;
        Ok(())
    }

    /// What `nexus doctor` reports of the server: its version, pgvector's (installed, else
    /// available) and how far its clock is from this machine's.
    pub async fn server_info(&self) -> Result<ServerInfo> {
        let client = self.client().await?;
        let before = chrono::Utc::now();
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version'),
                        (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
                        (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'),
                        (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
            .map_err(|e| self.error("server info", e))?;
        let after = chrono::Utc::now();
        let local_ms = (before.timestamp_millis() + after.timestamp_millis()) / 2;
        Ok(ServerInfo {
            version_num: row.get(0),
            version: row.get(1),
            vector_installed: row.get(2),
            vector_available: row.get(3),
            clock_skew_ms: row.get::<_, i64>(4) - local_ms,
        })
    }

    fn pool_error(&self, e: PoolError) -> Error {
        match e {
            PoolError::Backend(e) => self.error("connect", e),
            PoolError::Timeout(_) => unavailable(format!("postgres at {} did not answer in time", self.target)),
            other => unavailable(format!("postgres at {} is unavailable: {other}", self.target)),
        }
    }

    /// Maps a driver error: an unreachable or restarting server is `backend_unavailable` (503
    /// with Retry-After: the caller retries), a unique violation `conflict`, the rest a store failure.
    pub fn error(&self, context: &str, e: tokio_postgres::Error) -> Error {
        metrics::counter!("nexus_backend_errors_total", "backend" => "postgres").increment(1);
        if e.as_db_error().is_none() && connection_failure(&e) {
            tracing::warn!(target = %self.target, context, error = %e, "postgres unreachable");
        }
        self.classify(context, &e)
    }

    /// [`Pg::error`] without counting or logging.
    fn classify(&self, context: &str, e: &tokio_postgres::Error) -> Error {
        let Some(db) = e.as_db_error() else {
            if !connection_failure(e) {
                return Error::store(&format!("postgres {context}"), e);
            }
            return unavailable(format!("postgres at {} is unreachable ({context}): {}", self.target, short(e)));
        };
        let code = db.code();
        let class = &code.code()[..2];
        if class == "08"
            || class == "53"
            || class == "57" && *code != SqlState::QUERY_CANCELED
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            return unavailable(format!("postgres at {} is unavailable ({context}): {}", self.target, db.message()));
        }
        if *code == SqlState::QUERY_CANCELED {
            return unavailable(format!(
                "postgres at {} did not finish {context} within statement_timeout_ms",
                self.target
            ));
        }
        if class == "28" || *code == SqlState::INVALID_CATALOG_NAME {
            return Error::new(ErrorCode::BackendUnavailable, db.message().to_string());
        }
        if *code == SqlState::UNIQUE_VIOLATION {
            return Error::new(ErrorCode::Conflict, format!("{context}: {}", db.message()));
        }
        Error::store(&format!("postgres {context}"), db.message())
    }

    /// Applies `migrations` (numbered from 1, in order) to `component`'s schema under an advisory
    /// lock; refuses a database whose schema is newer than this binary knows.
    pub async fn migrate(&self, component: &str, migrations: &[&str]) -> Result<()> {
        let (mut client, task) = self.dedicated().await?;
        let err = |e| self.error("migrate", e);
        // One lock for every component: nodes starting at once migrate one after the other.
        client.execute("SELECT pg_advisory_lock(7_426_001)", &[]).await.map_err(err)?;
        let outcome = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS nexus_schema (component text PRIMARY KEY, version integer NOT NULL)",
                )
                .await
                .map_err(err)?;
            let applied: i32 = client
                .query_opt("SELECT version FROM nexus_schema WHERE component = $1", &[&component])
                .await
                .map_err(err)?
                .map(|row| row.get(0))
                .unwrap_or(0);
            let applied = applied as usize;
            if applied > migrations.len() {
                return Err(Error::new(
                    ErrorCode::DataDirFormatTooNew,
                    format!(
                        "the {component} schema in postgres at {} has version {applied}, newer than this nexus \
                         knows ({}); run a newer nexus",
                        self.target,
                        migrations.len()
                    ),
                ));
            }
            for (i, sql) in migrations.iter().enumerate().skip(applied) {
                let tx = client.transaction().await.map_err(err)?;
                tx.batch_execute(sql).await.map_err(err)?;
                let version = (i + 1) as i32;
                tx.execute(
                    "INSERT INTO nexus_schema (component, version) VALUES ($1, $2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    &[&component, &version],
                )
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                tracing::info!(component, version, target = %self.target, "postgres schema migrated");
            }
            Ok(())
        }
        .await;
        let _ = client.execute("SELECT pg_advisory_unlock(7_426_001)", &[]).await;
        drop(client);
        task.abort();
        outcome
    }
}

/// See [`Pg::server_info`].
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub version_num: i32,
    pub version: String,
    pub vector_installed: Option<String>,
    pub vector_available: Option<String>,
    /// The server's clock minus this machine's, in milliseconds.
    pub clock_skew_ms: i64,
}

fn unavailable(message: String) -> Error {
    Error::new(ErrorCode::BackendUnavailable, message)
}

/// Whether a driver error without a server answer means the server could not be reached (as
/// opposed to, say, a value that does not convert).
fn connection_failure(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    let text = e.to_string();
    ["error connecting", "error communicating", "connection closed", "timeout", "error performing TLS"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
}

/// The driver's message without its wrapping ("error connecting to server: ...").
fn short(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(source) => source.to_string(),
        None => e.to_string(),
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    let user = config.get_user().unwrap_or("?");
    format!("{host}:{port}/{db} as {user}")
}
