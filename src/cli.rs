//! The command line: `nexus serve | check | reindex | ingest | search | embed | keys | projects |
//! config | doctor | version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::App;
use crate::config::{Config, ConfigFile, FlagOverrides, LogFlags, LogFormat, SYSTEM_CONFIG_PATH, ServerFlags};
use crate::datadir::{DataDir, Holder, LockInfo};
use crate::error::{Error, ErrorCode, Result};
use crate::store::TenantId;
use crate::writelog::check::CheckReport;
use crate::writelog::{projections, reembed, reindex};

#[derive(Parser, Debug, Clone)]
#[command(name = "nexus", version, about = "Memory and knowledge appliance for AI agents and teams")]
pub struct Cli {
    /// Data directory (default ./nexus-data, or $NEXUS_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (default /etc/nexus/nexus.toml when it exists).
    #[arg(long, global = true, value_name = "FILE", env = "NEXUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address and port to listen on (default 127.0.0.1:7700).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Compare the record with every derived store; exit 1 when anything diverges.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild derived stores from the record (all of them unless --store is given).
    Reindex {
        #[arg(long, value_enum)]
        store: Option<StoreName>,
    },
    /// Ingest files (recursively) into the knowledge base; unchanged files are skipped.
    Ingest {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        collection: Option<String>,
        /// Only files matching these globs (e.g. '*.md').
        #[arg(long)]
        include: Vec<String>,
        /// Skip files matching these globs.
        #[arg(long)]
        exclude: Vec<String>,
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Search the knowledge base.
    Search {
        query: String,
        /// Print `{"results": [...]}` as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: SearchMode,
        #[arg(long)]
        collection: Option<String>,
    },
    /// Print the embedding of a text as JSON, made by the configured embedder.
    Embed {
        text: String,
        /// Long texts: print each piece and its vector instead of their average.
        #[arg(long)]
        chunks: bool,
    },
    /// Manage API keys. Works on the data directory, or through the running server that holds it
    /// (with the master key from configuration or the data directory's master.key).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage projects (tenants), like `keys`.
    Projects {
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Check the installation (data directory, free space, port, configuration, model, backends) and print what to
    /// fix; exit 1 when something is wrong.
    Doctor,
    /// Print the version.
    Version,
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeysCommand {
    /// Create a key and print it (shown only this once).
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// The project (tenant) it acts for.
        #[arg(long, default_value = "default")]
        project: String,
        /// Comma-separated: read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read,write")]
        scopes: Vec<String>,
        /// Stop working after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum ProjectsCommand {
    /// Create a project: a new, empty tenant.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "default")]
        org: String,
    },
    /// List projects.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SearchMode {
    Hybrid,
    Keyword,
    Semantic,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum StoreName {
    Text,
    Vectors,
    Graph,
}

impl StoreName {
    fn as_str(self) -> &'static str {
        match self {
            StoreName::Text => "text",
            StoreName::Vectors => "vectors",
            StoreName::Graph => "graph",
        }
    }
}

impl Cli {
    fn load_config(&self) -> Result<Config> {
        let listen = match &self.command {
            Command::Serve { listen } => *listen,
            _ => None,
        };
        let flags = FlagOverrides {
            data_dir: self.data_dir.clone(),
            server: listen.map(|listen| ServerFlags { listen }),
            log: self.log_format.map(|format| LogFlags { format }),
        };
        let file = match &self.config {
            Some(path) => ConfigFile::Explicit(path),
            None => ConfigFile::IfExists(std::path::Path::new(SYSTEM_CONFIG_PATH)),
        };
        Config::load(file, &flags)
    }

    /// The configuration file that [`Cli::load_config`] reads, if any.
    fn config_file(&self) -> Option<PathBuf> {
        let system = std::path::Path::new(SYSTEM_CONFIG_PATH);
        self.config.clone().or_else(|| system.is_file().then(|| system.to_path_buf()))
    }
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match run_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus: error: {e}");
            e.code.exit_code()
        }
    }
}

async fn run_inner(cli: Cli) -> Result<i32> {
    if let Command::Version = cli.command {
        println!("nexus {}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    if let Command::Doctor = cli.command {
        return Ok(crate::doctor::run(cli.load_config(), cli.config_file()).await);
    }
    let config = cli.load_config()?;
    crate::telemetry::init_logs(config.log.format, &config.log.level);
    match cli.command.clone() {
        Command::Version | Command::Doctor => unreachable!("handled above"),
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(0)
        }
        Command::Serve { .. } => {
            let reload: crate::service::ConfigLoader = Box::new(move || cli.load_config());
            serve(config, reload).await
        }
        Command::Check { json } => check(config, json).await,
        Command::Reindex { store } => reindex_stores(config, store).await,
        Command::Embed { text, chunks } => embed_text(config, &text, chunks).await,
        Command::Ingest { paths, collection, include, exclude, tag } => {
            let args = crate::knowledge_cli::IngestArgs { paths, collection, include, exclude, tags: tag };
            crate::knowledge_cli::ingest(config, args).await
        }
        Command::Search { query, json, top_k, mode, collection } => {
            let mode = match mode {
                SearchMode::Hybrid => crate::search::Mode::Hybrid,
                SearchMode::Keyword => crate::search::Mode::Keyword,
                SearchMode::Semantic => crate::search::Mode::Semantic,
            };
            let args = crate::knowledge_cli::SearchArgs { query, json, top_k, mode, collection };
            crate::knowledge_cli::search(config, args).await
        }
        Command::Keys { command } => keys(config, command).await,
        Command::Projects { command } => projects(config, command).await,
    }
}

async fn embed_text(config: Config, text: &str, chunks: bool) -> Result<i32> {
    let embedder = crate::embed::open_embedder(&config.embed)?;
    let service = crate::embed::EmbedService::start(embedder, &config.embed);
    let json = if chunks {
        let pieces = service.embed_chunks(text).await?;
        let pieces: Vec<_> =
            pieces.into_iter().map(|(text, vector)| serde_json::json!({"text": text, "vector": vector})).collect();
        serde_json::to_string(&pieces)
    } else {
        serde_json::to_string(&service.embed_one(text).await?)
    };
    let json = json.map_err(|e| Error::internal("encode vector", e))?;
    use std::io::Write;
    match writeln!(std::io::stdout(), "{json}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

async fn serve(config: Config, reload: crate::service::ConfigLoader) -> Result<i32> {
    let listen = config.server.listen;
    let tls = crate::http::tls::load(&config.server.tls).await?;
    let app = App::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::new(ErrorCode::ConfigInvalid, format!("cannot listen on {listen}: {e}; choose another --listen address"))
    })?;
    let bound = listener.local_addr()?;
    let https = tls.is_some();
    app.dir.lock().announce_listen(&bound.to_string(), https)?;
    crate::telemetry::metrics_handle();
    tracing::info!(address = %bound, data_dir = %app.config.data_dir.display(), "nexus is serving");
    println!("nexus: listening on {}://{bound}", if https { "https" } else { "http" });
    announce_auth(&app);
    crate::service::start(app.clone(), reload);
    crate::http::serve(app.clone(), listener, tls, shutdown_signal()).await?;
    app.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(0)
}

/// Says once, at start, how requests are authenticated.
fn announce_auth(app: &App) {
    use crate::auth::{MasterKeySource, Mode};
    match (app.auth.mode(), &app.auth.master_source) {
        (Mode::Open, _) => {
            println!(
                "nexus: API keys are off: listening on loopback without auth.master_key, every request acts for \
                 the default tenant (set auth.master_key or auth.required = true to require keys)"
            );
            tracing::info!("API keys are off (loopback, no master key configured)");
        }
        (Mode::Keys, MasterKeySource::File { path, generated: true }) => {
            println!(
                "nexus: API keys are on; a master key was generated into {} (mode 0600): send it as \
                 `Authorization: Bearer <key>`",
                path.display()
            );
        }
        (Mode::Keys, _) => println!("nexus: API keys are on"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    crate::service::notify_stopping();
}

async fn check(config: Config, json: bool) -> Result<i32> {
    let report = match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => check_via_server(&config, info).await?,
        Holder::Free => {
            let app = App::open(config).await?;
            if let crate::auth::MasterKeySource::File { path, generated: true } = &app.auth.master_source {
                eprintln!("nexus: a master key was generated into {} (mode 0600)", path.display());
            }
            let report = app.check().await;
            app.shutdown().await;
            report?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::internal("encode report", e))?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// A running server holds the data directory: ask it.
async fn check_via_server(config: &Config, info: LockInfo) -> Result<CheckReport> {
    let report = server_request(config, &info, reqwest::Method::GET, "/api/v1/admin/check", None).await?;
    serde_json::from_value(report).map_err(|e| Error::internal("read the running server's report", e))
}

/// The base URL of the server that holds the data directory (plain HTTP on loopback).
pub(crate) fn server_base(info: &LockInfo) -> Result<String> {
    let pid = info.pid;
    let Some(listen) = &info.listen else {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!("the data directory is held by pid {pid}, which is not serving HTTP; stop it and try again"),
        ));
    };
    if info.tls {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!(
                "the data directory is held by pid {pid}, which serves HTTPS; use its HTTP API with the master key, \
                 or stop it and try again"
            ),
        ));
    }
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| Error::internal("lock file address", e))?;
    let host =
        if addr.ip().is_unspecified() { std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port()) } else { addr };
    Ok(format!("http://{host}"))
}

/// Sends one request to the server that holds the data directory, with the master key when
/// there is one (configured, or the data directory's master.key), and returns its JSON answer.
pub(crate) async fn server_request(
    config: &Config,
    info: &LockInfo,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let pid = info.pid;
    let url = format!("{}{path}", server_base(info)?);
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(key) = crate::auth::client_master_key(config) {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| Error::internal("ask the running server", e))?;
    let status = response.status();
    let value: serde_json::Value =
        response.json().await.map_err(|e| Error::internal("read the running server's answer", e))?;
    if !status.is_success() {
        let message = value["error"]["message"].as_str().unwrap_or("no message");
        let code = match status.as_u16() {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            400 => ErrorCode::InvalidRequest,
            _ => ErrorCode::Internal,
        };
        return Err(Error::new(code, format!("the running server (pid {pid}) refused: {message}")));
    }
    Ok(value)
}

/// Where key and project commands act: on the data directory, or through the server holding it.
enum AuthTarget {
    Offline { _dir: DataDir, store: std::sync::Arc<dyn crate::store::auth::AuthStore> },
    Server(LockInfo),
}

async fn auth_target(config: &Config) -> Result<AuthTarget> {
    match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => Ok(AuthTarget::Server(info)),
        Holder::Free => {
            let dir = DataDir::open(&config.data_dir)?;
            let store = crate::store::Stores::open_auth(config, &dir).await?;
            Ok(AuthTarget::Offline { _dir: dir, store })
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::internal("encode", e))
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| Error::internal("encode", e))?);
    Ok(())
}

async fn keys(config: Config, command: KeysCommand) -> Result<i32> {
    use crate::auth::{Scope, Within};
    use crate::store::auth::ApiKey;
    let target = auth_target(&config).await?;
    match command {
        KeysCommand::Create { name, project, scopes, expires_in_days, json } => {
            let scopes = scopes
                .iter()
                .map(|s| {
                    Scope::parse(s.trim())
                        .ok_or_else(|| Error::invalid(format!("unknown scope `{s}`; use read, write or admin")))
                })
                .collect::<Result<Vec<_>>>()?;
            let created = match &target {
                AuthTarget::Offline { store, .. } => {
                    let input =
                        crate::http::keys::KeyInput { name, project: None, scopes, expires_at: None, expires_in_days };
                    to_json(&crate::http::keys::create_key(&**store, TenantId::new(project)?, input).await?)?
                }
                AuthTarget::Server(info) => {
                    let body = serde_json::json!({"name": name, "project": project, "scopes": scopes,
                                                  "expires_in_days": expires_in_days});
                    server_request(&config, info, reqwest::Method::POST, "/api/v1/keys", Some(body)).await?
                }
            };
            if json {
                print_json(&created)?;
            } else {
                let key: ApiKey = serde_json::from_value(created["api_key"].clone())
                    .map_err(|e| Error::internal("read the created key", e))?;
                println!("{}", created["key"].as_str().unwrap_or_default());
                eprintln!(
                    "created key {} for project {} with scopes {}; it is shown only now, store it safely",
                    key.id,
                    key.project,
                    key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                );
            }
        }
        KeysCommand::List { project, json } => {
            let list = match &target {
                AuthTarget::Offline { store, .. } => {
                    let within = match project {
                        Some(p) => Within::Tenant(TenantId::new(p)?),
                        None => Within::All,
                    };
                    serde_json::json!({"keys": to_json(&store.list_keys(&within).await?)?})
                }
                AuthTarget::Server(info) => {
                    let path = match project {
                        Some(p) => format!("/api/v1/keys?project={p}"),
                        None => "/api/v1/keys".to_string(),
                    };
                    server_request(&config, info, reqwest::Method::GET, &path, None).await?
                }
            };
            if json {
                print_json(&list)?;
            } else {
                let keys: Vec<ApiKey> = serde_json::from_value(list["keys"].clone())
                    .map_err(|e| Error::internal("read the key list", e))?;
                println!("{:<16}  {:<20}  {:<16}  {:<17}  {:<10}  name", "id", "project", "scopes", "expires", "state");
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
                        "expired"
                    } else {
                        "active"
                    };
                    let scopes = k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                    let expires = k.expires_at.map_or("never".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string());
                    println!(
                        "{:<16}  {:<20}  {scopes:<16}  {expires:<17}  {state:<10}  {}",
                        k.id,
                        k.project.as_str(),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            match &target {
                AuthTarget::Offline { store, .. } => {
                    store
                        .revoke_key(&Within::All, &id, chrono::Utc::now())
                        .await?
                        .ok_or_else(|| Error::not_found("key", &id))?;
                }
                AuthTarget::Server(info) => {
                    let path = format!("/api/v1/keys/{id}");
                    server_request(&config, info, reqwest::Method::DELETE, &path, None).await?;
                }
            }
            println!("revoked key {id}");
        }
    }
    Ok(0)
}

async fn projects(config: Config, command: ProjectsCommand) -> Result<i32> {
    use crate::auth::Within;
    let target = auth_target(&config).await?;
    match command {
        ProjectsCommand::Create { id, name, org } => {
            match &target {
                AuthTarget::Offline { store, .. } => {
                    let tenant = TenantId::new(id.clone())?;
                    store.create_project(&tenant, &org, name.as_deref().unwrap_or(&id)).await?;
                }
                AuthTarget::Server(info) => {
                    let body = serde_json::json!({"id": id, "name": name, "org_id": org});
                    server_request(&config, info, reqwest::Method::POST, "/api/v1/projects", Some(body)).await?;
                }
            }
            println!("created project {id} in organisation {org}");
        }
        ProjectsCommand::List { json } => {
            let list = match &target {
                AuthTarget::Offline { store, .. } => {
                    serde_json::json!({"projects": to_json(&store.list_projects(&Within::All).await?)?})
                }
                AuthTarget::Server(info) => {
                    server_request(&config, info, reqwest::Method::GET, "/api/v1/projects", None).await?
                }
            };
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24}  {:<16}  name", "id", "org");
                for p in list["projects"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24}  {:<16}  {}",
                        p["id"].as_str().unwrap_or_default(),
                        p["org_id"].as_str().unwrap_or_default(),
                        p["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(0)
}

fn progress_bar(total: u64, name: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!("{{prefix:>8}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}})");
    bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("static template").progress_chars("=> "));
    bar.set_prefix(name.to_string());
    bar
}

async fn reindex_stores(config: Config, only: Option<StoreName>) -> Result<i32> {
    let with_vectors = only.is_none_or(|s| s == StoreName::Vectors);
    // The vector index is rebuilt whole: drop it first, since it may have been built with other
    // dimensions than the configured embedder's and then could not be opened.
    let embedder = if with_vectors { Some(crate::embed::open_embedder(&config.embed)?) } else { None };
    let (dir, stores) = App::open_stores(&config, with_vectors).await?;
    let total = stores.records.stats().await?.items;
    for projection in projections(&stores) {
        if only.is_some_and(|s| s.as_str() != projection.name()) {
            continue;
        }
        let bar = progress_bar(total, projection.name(), "records");
        if let (Some(embedder), "vectors") = (&embedder, projection.name()) {
            let service = crate::embed::EmbedService::start(embedder.clone(), &config.embed);
            let outcome = reembed::reembed_and_rebuild(dir.root(), &*stores.records, &service, &projection, |n| {
                bar.set_position(n)
            })
            .await?;
            bar.finish();
            match outcome {
                reembed::Outcome::Rebuilt { records } => println!("vectors: rebuilt from {records} records"),
                reembed::Outcome::Reembedded { embedded, resumed_after } => {
                    let resumed =
                        if resumed_after > 0 { format!(", resumed after key {resumed_after}") } else { String::new() };
                    println!(
                        "vectors: re-embedded {embedded} records with {}{resumed}; index rebuilt",
                        service.identity()
                    );
                }
            }
            continue;
        }
        let done = reindex::reindex(&*stores.records, &projection, |n| bar.set_position(n)).await?;
        bar.finish();
        println!("{}: rebuilt from {done} records", projection.name());
    }
    Ok(0)
}
