//! The command line: `nexus serve | check | reindex | ingest | search | embed | keys | projects |
//! migrate | backup | restore | dump | import | mcp | config | doctor | version`. This file holds the clap definitions and the dispatch; each
//! command lives in its own file, and `server.rs` holds what several of them share.

mod backup;
mod check;
mod dump;
mod embed;
mod ingest;
mod keys;
mod mcp;
mod migrate;
mod projects;
mod reindex;
mod search;
mod serve;
pub(crate) mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigFile, FlagOverrides, LogFlags, LogFormat, SYSTEM_CONFIG_PATH, ServerFlags};
use crate::error::Result;

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
    /// Move this data directory onto the cluster stores of FILE (`--to FILE`), or a cluster's
    /// data back onto a new data directory (`--from FILE --to-data-dir DIR`). Resumable; verified
    /// at the end (exit 1 on any difference).
    Migrate {
        /// The cluster's configuration file (the target).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to_data_dir", "tenant"], required_unless_present = "from")]
        to: Option<PathBuf>,
        /// The cluster's configuration file (the source), with --to-data-dir.
        #[arg(long, value_name = "FILE", requires = "to_data_dir")]
        from: Option<PathBuf>,
        /// A new data directory to copy the cluster's data into.
        #[arg(long, value_name = "DIR", requires = "from")]
        to_data_dir: Option<PathBuf>,
        /// With --from: only this project.
        #[arg(long, value_name = "PROJECT")]
        tenant: Option<String>,
        /// Stop the appliance taking writes, apply the rest and mark it as moved.
        #[arg(long)]
        cutover: bool,
        /// Progress and the report as JSON lines on stdout.
        #[arg(long)]
        json: bool,
        /// Searches compared between source and target per mode.
        #[arg(long, default_value_t = 30)]
        samples: usize,
    },
    /// Back up the data directory while it serves (the running server takes it, else this
    /// process); prints the archive's path last. `nexus backup verify ARCHIVE` checks one.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        command: Option<BackupCommand>,
        /// Where the archive goes: a directory, or s3://BUCKET/PREFIX on the S3 service of
        /// `[backup.s3]` (default: `[backup] dir`, else DATA_DIR.backups).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        to: Option<String>,
        /// Leave the derived stores (text, vectors, graph) out: smaller, rebuilt on restore.
        #[arg(long)]
        no_derived: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore an archive as the data directory (--data-dir): checked completely first, then
    /// swapped in atomically. Refuses a non-empty directory unless --replace. ARCHIVE may be
    /// s3://BUCKET/PREFIX/NAME (downloaded beside the data directory first).
    Restore {
        archive: PathBuf,
        /// Replace the data directory's content (the previous one is kept beside it).
        #[arg(long)]
        replace: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write a portable dump of the data (records with their history and vectors, projects, key
    /// hashes, audit log, jobs, original files) that this and every later Nexus can import: for
    /// upgrades across data formats and moves. Works while a server runs (from a consistent copy)
    /// and from a cluster configuration. Prints the dump's path last.
    Dump {
        /// The dump file to write (or a directory to write a new one in).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a dump into a new or empty data directory (--data-dir): checked completely first,
    /// then the derived stores are built from it (nothing is embedded again) and checked.
    Import {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve MCP (the Model Context Protocol) on stdin/stdout, for agents that start a command. On
    /// the data directory, or through the running server that holds it (or the one at --url).
    Mcp {
        /// The API key the agent acts with: its project and scopes apply to every call. Give it in
        /// the environment (a flag's value shows in the process list). Without one: the master key.
        #[arg(long, env = "NEXUS_API_KEY", hide_env_values = true, value_name = "KEY")]
        api_key: Option<String>,
        /// Relay to the Nexus server at this address (e.g. http://127.0.0.1:7700) instead.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
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
pub enum BackupCommand {
    /// Check an archive: its checksum file, every file against the manifest, then a trial
    /// restore (integrity check, derived stores caught up, `nexus check`). Exit 1 if refused.
    /// ARCHIVE may be s3://BUCKET/PREFIX/NAME (downloaded beside the data directory first).
    Verify {
        archive: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the archives in the backup directory, newest first.
    List {
        /// The directory or s3://BUCKET/PREFIX to list (default: `[backup] dir`).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
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
            serve::run(config, reload).await
        }
        Command::Check { json } => check::run(config, json).await,
        Command::Reindex { store } => reindex::run(config, store).await,
        Command::Embed { text, chunks } => embed::run(config, &text, chunks).await,
        Command::Ingest { paths, collection, include, exclude, tag } => {
            ingest::run(config, ingest::IngestArgs { paths, collection, include, exclude, tags: tag }).await
        }
        Command::Search { query, json, top_k, mode, collection } => {
            search::run(config, search::SearchArgs { query, json, top_k, mode: mode.into(), collection }).await
        }
        Command::Keys { command } => keys::run(config, command).await,
        Command::Migrate { to, from, to_data_dir, tenant, cutover, json, samples } => {
            migrate::run(config, migrate::MigrateArgs { to, from, to_data_dir, tenant, cutover, json, samples }).await
        }
        Command::Projects { command } => projects::run(config, command).await,
        Command::Backup { command: None, to, no_derived, json } => backup::take(config, to, no_derived, json).await,
        Command::Backup { command: Some(BackupCommand::Verify { archive, json }), .. } => {
            backup::verify(config, archive, json).await
        }
        Command::Backup { command: Some(BackupCommand::List { to, json }), .. } => backup::list(config, to, json).await,
        Command::Restore { archive, replace, json } => backup::restore(config, archive, replace, json).await,
        Command::Dump { to, json } => dump::dump(config, to, json).await,
        Command::Import { file, json } => dump::import(config, file, json).await,
        Command::Mcp { api_key, url } => mcp::run(config, api_key, url).await,
    }
}
