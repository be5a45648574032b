//! Who may do what: API keys, the master key, tenants, rate limits and the audit log.
//!
//! Organisations contain projects; a project is a tenant. An API key belongs to one project and
//! carries scopes (`read`, `write`, `admin`) and an optional expiry. The master key is the
//! operator: every scope, every tenant, and on data routes it acts for the default tenant.
//!
//! Keys are on unless Nexus listens on a loopback address with no master key configured and
//! `auth.required = false`: then one default tenant is served to every local client, and a
//! presented key is ignored (clients that always send one keep working). Keys on, no master key
//! configured: the key in `<data_dir>/master.key` is used, generated (mode 0600) on first start.
//! The file alone never turns keys on, so a laptop install stays keyless across restarts.
//!
//! HTTP glue (headers, the per-route scope table, the middleware) is in `crate::http::auth`.

pub mod audit;
pub mod keys;
pub mod limits;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::store::TenantId;
pub use crate::store::auth::{ApiKey, AuthStore, Scope, Within};
use audit::AuditLog;
use limits::RateLimits;

pub const MASTER_KEY_FILE: &str = "master.key";

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Loopback without keys: the local operator.
    Open,
    Master,
    Key(String),
}

/// The outcome of authentication, put into every request's extensions.
#[derive(Clone, Debug)]
pub struct AuthContext {
    pub principal: Principal,
    /// The tenant data routes act for.
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
}

impl AuthContext {
    fn operator(principal: Principal) -> AuthContext {
        AuthContext { principal, tenant: TenantId::default_tenant(), scopes: Scope::ALL.to_vec() }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The operator may manage every tenant; a key only its own.
    pub fn is_operator(&self) -> bool {
        matches!(self.principal, Principal::Open | Principal::Master)
    }

    /// What management calls by this principal may see.
    pub fn within(&self) -> Within {
        if self.is_operator() { Within::All } else { Within::Tenant(self.tenant.clone()) }
    }

    pub fn key_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Key(id) => Some(id),
            _ => None,
        }
    }

    /// `open`, `master` or `key`, as in the audit log.
    pub fn principal_name(&self) -> &'static str {
        match self.principal {
            Principal::Open => "open",
            Principal::Master => "master",
            Principal::Key(_) => "key",
        }
    }

    /// The rate-limit bucket: the key id, or `master`.
    pub fn limit_key(&self) -> &str {
        match &self.principal {
            Principal::Open => "open",
            Principal::Master => "master",
            Principal::Key(id) => id,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Loopback, no master key configured: one default tenant, no keys.
    Open,
    Keys,
}

/// Where the master key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    None,
    Configured,
    File { path: PathBuf, generated: bool },
}

pub struct Auth {
    mode: Mode,
    master_hash: Option<[u8; 32]>,
    pub master_source: MasterKeySource,
    pub store: Arc<dyn AuthStore>,
    pub limits: RateLimits,
    pub audit: AuditLog,
    pub public_metrics: bool,
    maintenance: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Decides the mode from configuration alone (the key file never turns keys on).
pub fn mode(config: &Config) -> Mode {
    let loopback = config.server.listen.ip().is_loopback();
    if loopback && !config.auth.required && config.auth.master_key.is_none() { Mode::Open } else { Mode::Keys }
}

impl Auth {
    /// Resolves the mode and master key (generating the key file when keys are on and none is
    /// configured), and starts the audit writer and the periodic upkeep.
    pub fn open(config: &Config, data_dir: &Path, store: Arc<dyn AuthStore>) -> Result<Auth> {
        let mode = mode(config);
        let (master, master_source) = match (mode, &config.auth.master_key) {
            (Mode::Open, _) => (None, MasterKeySource::None),
            (Mode::Keys, Some(key)) => (Some(key.expose().to_string()), MasterKeySource::Configured),
            (Mode::Keys, None) => {
                let path = data_dir.join(MASTER_KEY_FILE);
                let (key, generated) = read_or_generate_master_key(&path)?;
                (Some(key), MasterKeySource::File { path, generated })
            }
        };
        let audit = AuditLog::start(store.clone());
        let limits = RateLimits::new(&config.limits);
        let auth = Auth {
            mode,
            master_hash: master.as_deref().map(keys::hash_key),
            master_source,
            store,
            limits,
            audit,
            public_metrics: config.auth.public_metrics,
            maintenance: parking_lot::Mutex::new(None),
        };
        Ok(auth)
    }

    /// Periodic upkeep: audit retention (hourly) and forgetting idle rate-limit state (each minute).
    pub fn start_upkeep(self: &Arc<Self>, retention_days: u32) {
        let auth = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(auth) = auth.upgrade() else { return };
                if n.is_multiple_of(60) {
                    audit::enforce_retention(&*auth.store, retention_days).await;
                }
                auth.limits.forget_idle();
                n += 1;
            }
        });
        *self.maintenance.lock() = Some(task);
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Who `presented` is. In open mode every request is the local operator, key or not.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<AuthContext> {
        if self.mode == Mode::Open {
            return Ok(AuthContext::operator(Principal::Open));
        }
        let Some(presented) = presented else {
            return Err(Error::new(
                ErrorCode::Unauthorized,
                "this server requires an API key: send `Authorization: Bearer <key>` \
                 (or `Authorization: Token <key>`, or `X-API-Key: <key>`)",
            ));
        };
        let invalid =
            || Error::new(ErrorCode::Unauthorized, "the API key is not valid; check it, or ask an admin for a new one");
        if let Some(master) = &self.master_hash
            && keys::hash_matches(presented, master)
        {
            return Ok(AuthContext::operator(Principal::Master));
        }
        let Some(id) = keys::key_id(presented) else { return Err(invalid()) };
        let Some(stored) = self.store.get_key(id).await? else { return Err(invalid()) };
        if !keys::hash_matches(presented, &stored.secret_hash) {
            return Err(invalid());
        }
        // Only a holder of the secret learns the key's state.
        let key = stored.key;
        if key.revoked_at.is_some() {
            return Err(Error::new(ErrorCode::KeyRevoked, "this API key was revoked; ask an admin for a new one"));
        }
        if let Some(expired) = key.expires_at.filter(|at| *at <= Utc::now()) {
            return Err(Error::new(
                ErrorCode::KeyExpired,
                format!("this API key expired at {}; ask an admin for a new one", expired.to_rfc3339()),
            ));
        }
        Ok(AuthContext { principal: Principal::Key(key.id), tenant: key.project, scopes: key.scopes })
    }

    /// Writes the queued audit events and stops the upkeep.
    pub async fn shutdown(&self) {
        if let Some(task) = self.maintenance.lock().take() {
            task.abort();
        }
        self.audit.shutdown().await;
    }
}

/// The master key in `path`, or a new one written there with mode 0600.
pub fn read_or_generate_master_key(path: &Path) -> Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
                    "the master key file is readable by others; run chmod 600 on it");
            }
            let key = text.trim().to_string();
            if key.len() < 16 {
                return Err(Error::config(format!(
                    "{} holds no usable master key (under 16 characters); delete it to have a new one generated",
                    path.display()
                )));
            }
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = keys::generate_master();
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            writeln!(file, "{key}")?;
            file.sync_all()?;
            Ok((key, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// The master key a command-line client uses to talk to a running server: configured, or the
/// key file when it exists.
pub fn client_master_key(config: &Config) -> Option<String> {
    if let Some(key) = &config.auth.master_key {
        return Some(key.expose().to_string());
    }
    let text = std::fs::read_to_string(config.data_dir.join(MASTER_KEY_FILE)).ok()?;
    Some(text.trim().to_string()).filter(|k| !k.is_empty())
}
