//! The command line: `nexus serve | check | reindex | config | doctor | version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::App;
use crate::config::{Config, ConfigFile, FlagOverrides, LogFlags, LogFormat, SYSTEM_CONFIG_PATH, ServerFlags};
use crate::datadir::{DataDir, Holder};
use crate::error::{Error, ErrorCode, Result};
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
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Check the installation (data directory, free space, port, configuration, model, backends) and print what to
    /// fix; exit 1 when something is wrong.
    Doctor,
    /// Print the version.
    Version,
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
    let app = App::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::new(ErrorCode::ConfigInvalid, format!("cannot listen on {listen}: {e}; choose another --listen address"))
    })?;
    let bound = listener.local_addr()?;
    app.dir.lock().announce_listen(&bound.to_string())?;
    crate::telemetry::metrics_handle();
    tracing::info!(address = %bound, data_dir = %app.config.data_dir.display(), "nexus is serving");
    println!("nexus: listening on http://{bound}");
    crate::service::start(app.clone(), reload);
    crate::http::serve(app.clone(), listener, shutdown_signal()).await?;
    app.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(0)
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
        Holder::Held(info) => check_via_server(info.listen, info.pid).await?,
        Holder::Free => {
            let app = App::open(config).await?;
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
async fn check_via_server(listen: Option<String>, pid: u32) -> Result<CheckReport> {
    let Some(listen) = listen else {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!("the data directory is held by pid {pid}, which is not serving HTTP; stop it and run check again"),
        ));
    };
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| Error::internal("lock file address", e))?;
    let host =
        if addr.ip().is_unspecified() { std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port()) } else { addr };
    let url = format!("http://{host}/api/v1/admin/check");
    let response = reqwest::get(&url).await.map_err(|e| Error::internal("ask the running server", e))?;
    if !response.status().is_success() {
        return Err(Error::internal("ask the running server", format!("{url} answered {}", response.status())));
    }
    response.json().await.map_err(|e| Error::internal("read the running server's report", e))
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
