//! The store profiles a benchmark runs under, side by side in one run:
//! - `embedded`: the compiled-in defaults (SQLite records, usearch vectors), an empty config file;
//! - `postgres`: `[store.records] backend = "postgres"` and `[store.vectors] backend = "pgvector"`
//!   in one database of the Postgres named by `--postgres-url URL` or `NEXUS_BENCH_POSTGRES_URL`
//!   (a superuser or a role that may create databases; loopback without TLS). Each run gets a
//!   database of its own, created here and dropped at the end unless the data directory is kept,
//!   in which case it is named after the data directory and kept with it.
//!
//! Text, graph and objects stay in the data directory under both profiles, so a profile's data
//! directory and its database belong together: one is never reused without the other.

// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// The environment variable naming the Postgres a `postgres` profile runs on.
pub const POSTGRES_URL_ENV: &str = "NEXUS_BENCH_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Embedded,
    Postgres,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Embedded => "embedded",
            Profile::Postgres => "postgres",
        }
    }

    /// `embedded`, `postgres` or `both` (embedded first, so its figures are the reference).
    pub fn parse_list(value: &str) -> Vec<Profile> {
        match value {
            "embedded" => vec![Profile::Embedded],
            "postgres" => vec![Profile::Postgres],
            "both" => vec![Profile::Embedded, Profile::Postgres],
            other => panic!("--profile {other}: use embedded, postgres or both"),
        }
    }

    /// This profile's data directory: `base` itself for `embedded` (as before profiles
    /// existed), `BASE-postgres` beside it for `postgres`.
    pub fn data_dir(self, base: &Path) -> PathBuf {
        match self {
            Profile::Embedded => base.to_path_buf(),
            Profile::Postgres => {
                let mut name = base.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "data".into());
                name.push("-postgres");
                base.with_file_name(name)
            }
        }
    }
}

/// The Postgres the `postgres` profile creates its databases on.
#[derive(Clone)]
pub struct PgServer {
    admin_url: reqwest::Url,
}

impl PgServer {
    /// From `--postgres-url` when given, else `NEXUS_BENCH_POSTGRES_URL`.
    pub fn from_flag_or_env(flag: Option<String>) -> PgServer {
        let url = flag.or_else(|| std::env::var(POSTGRES_URL_ENV).ok()).unwrap_or_else(|| {
            panic!(
                "the postgres profile needs a server: pass --postgres-url postgres://USER:PASSWORD@HOST:PORT/postgres \
                 or set {POSTGRES_URL_ENV} (`.ci/cluster-servers.sh start DIR` starts one)"
            )
        });
        let admin_url = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
            .unwrap_or_else(|| panic!("--postgres-url: expected a postgres://USER:PASSWORD@HOST:PORT/DATABASE url"));
        PgServer { admin_url }
    }

    /// The URL of database `name` on this server (same credentials and options).
    pub fn database_url(&self, name: &str) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    /// Runs `f` with a connection to the server's administrative database.
    fn try_admin<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(self.admin_url.as_str(), tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect to the benchmark postgres: {e}"))?;
            let connection = tokio::spawn(connection);
            let out = f(&client).await.map_err(|e| format!("benchmark postgres: {e}"));
            drop(client);
            let _ = connection.await;
            out
        })
    }

    fn with_admin<T>(&self, f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>) -> T {
        self.try_admin(f).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.with_admin(async |c| c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await).is_some()
    }

    /// Creates database `name`, empty: an older one of that name is dropped first.
    pub fn create_fresh(&self, name: &str) {
        let quoted = quote(name);
        self.with_admin(async |c| {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")).await?;
            c.batch_execute(&format!("CREATE DATABASE {quoted}")).await
        })
    }

    pub fn drop_database(&self, name: &str) -> Result<(), String> {
        let quoted = quote(name);
        self.try_admin(async |c| c.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")).await)
    }

    /// The database's size on disk, in MiB.
    pub fn size_mb(&self, name: &str) -> f64 {
        let bytes: i64 = self.with_admin(async |c| c.query_one("SELECT pg_database_size($1)", &[&name]).await).get(0);
        bytes as f64 / (1024.0 * 1024.0)
    }
}

/// A database name as an SQL identifier (the names made here are `[a-z0-9_]`, quoted anyway).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The database of a run of `bench`: named after `kept_data_dir` when the data directory is
/// kept (so a later run finds it), else unique to this run.
pub fn database_name(bench: &str, kept_data_dir: Option<&Path>) -> String {
    match kept_data_dir {
        Some(dir) => {
            let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let hash = hex::encode(&sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes())[..4]);
            let stem: String = absolute
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(24)
                .collect();
            format!("nexus_bench_{bench}_{stem}_{hash}")
        }
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("nexus_bench_{bench}_{}_{}", std::process::id(), now.as_secs())
        }
    }
}

/// The configuration file of `profile` (for `postgres`, `database_url` is its database).
pub fn config_toml(profile: Profile, database_url: Option<&str>) -> String {
    match profile {
        Profile::Embedded => String::new(),
        Profile::Postgres => {
            let url = database_url.expect("the postgres profile's database url");
            let url = toml::Value::String(url.to_string());
            format!("[store.records]\nbackend = \"postgres\"\nurl = {url}\n\n[store.vectors]\nbackend = \"pgvector\"\n")
        }
    }
}

/// Writes a config file readable by its owner only (it may hold a database password).
pub fn write_config(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}

/// A profile's database, dropped with the [`Setup`] unless kept.
pub struct Database {
    pub server: PgServer,
    pub name: String,
    pub kept: bool,
}

/// What a profile runs on: its data directory, config file and (for `postgres`) database. A
/// database that is not kept is dropped when this is (at the end of the profile's run, or when
/// the benchmark fails); stop the server first.
pub struct Setup {
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub database: Option<Database>,
    /// The data directory (and database) hold an earlier run's data, kept for this one.
    pub reused: bool,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(db) = self.database.as_ref().filter(|db| !db.kept)
            && let Err(e) = db.server.drop_database(&db.name)
        {
            eprintln!("could not drop the benchmark database {}: {e}", db.name);
        }
    }
}

impl Setup {
    /// Prepares `profile` on `data_dir`, with its config file at `config`. With `reuse`, an
    /// existing data directory is kept (for `postgres`, only together with its database);
    /// otherwise both start empty. `keep` keeps the database after the run (the data
    /// directory is the caller's to keep or not).
    pub fn prepare(
        profile: Profile,
        bench: &str,
        data_dir: PathBuf,
        config: PathBuf,
        reuse: bool,
        keep: bool,
        pg: Option<&PgServer>,
    ) -> Setup {
        let (database, reused, text) = match profile {
            Profile::Embedded => (None, reuse && data_dir.exists(), config_toml(profile, None)),
            Profile::Postgres => {
                let pg = pg.expect("a postgres server for the postgres profile");
                let name = database_name(bench, keep.then_some(data_dir.as_path()));
                let reused = reuse && data_dir.exists() && pg.exists(&name);
                if !reused {
                    pg.create_fresh(&name);
                }
                let text = config_toml(profile, Some(&pg.database_url(&name)));
                (Some(Database { server: pg.clone(), name, kept: keep }), reused, text)
            }
        };
        if !reused && data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).unwrap();
        }
        write_config(&config, &text);
        Setup { profile, data_dir, config, database, reused }
    }

    /// The database's size in MiB (postgres profile).
    pub fn database_mb(&self) -> Option<f64> {
        self.database.as_ref().map(|db| db.server.size_mb(&db.name))
    }
}

/// `postgres / embedded` of one figure, as `1.23x` (or `-` when either is missing).
pub fn ratio(postgres: Option<f64>, embedded: Option<f64>) -> String {
    match (postgres, embedded) {
        (Some(p), Some(e)) if e > 0.0 => format!("{:.2}x", p / e),
        _ => "-".to_string(),
    }
}
