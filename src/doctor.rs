//! `nexus doctor`: checks what a server needs before it starts (or while it runs) and says what to fix.
//!
//! Read-only: it never creates, locks or migrates the data directory. Each check is one function
//! returning [`Finding`]s; the exit code is 1 when any finding is a failure.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, GraphBackend, ObjectsBackend, RecordsBackend, TextBackend, VectorsBackend};
use crate::datadir::{self, CURRENT_FORMAT, DataDir, Holder, LockInfo};
use crate::error::Result;
use crate::store::graph::GraphStore;
use crate::store::postgres::{Pg, PgSettings};
use crate::store::text::TextStore;
use crate::store::vectors::VectorStore;

/// Below this, writes are about to fail: a failure.
const MIN_FREE_BYTES: u64 = 1 << 30;
/// Below this share of the file system, a warning (the same line as the disk alert in packaging/monitoring).
const LOW_FREE_RATIO: f64 = 0.10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub what: String,
    pub fix: Option<String>,
}

fn ok(check: &'static str, what: impl Into<String>) -> Finding {
    Finding { level: Level::Ok, check, what: what.into(), fix: None }
}

fn warn(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { level: Level::Warn, check, what: what.into(), fix: Some(fix.into()) }
}

fn fail(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { level: Level::Fail, check, what: what.into(), fix: Some(fix.into()) }
}

/// Runs every check, prints the findings and returns the exit code.
pub async fn run(config: Result<Config>, config_file: Option<PathBuf>) -> i32 {
    let findings = match config {
        Ok(config) => diagnose(&config, config_file.as_deref()).await,
        Err(e) => vec![fail(
            "config",
            e.message,
            "fix the key named above (assets/default-config.toml documents every key); \
             `nexus config` prints the effective configuration once it loads",
        )],
    };
    print!("{}", render(&findings));
    if findings.iter().any(|f| f.level == Level::Fail) { 1 } else { 0 }
}

/// Every check, in the order a person would fix them.
pub async fn diagnose(config: &Config, config_file: Option<&Path>) -> Vec<Finding> {
    let mut findings = vec![check_config(config, config_file)];
    findings.extend(check_data_dir(&config.data_dir));
    findings.push(check_free_space(&config.data_dir));
    let holder = DataDir::holder(&config.data_dir);
    findings.push(check_port(config.server.listen, &holder));
    findings.push(check_model());
    findings.extend(check_backends(config));
    findings.extend(check_cluster(config).await);
    findings.extend(check_rerank(config).await);
    if let Holder::Held(info) = &holder {
        findings.push(check_running_server(info).await);
    }
    findings
}

pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let level = match f.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        out.push_str(&format!("{level:<5} {:<9} {}\n", f.check, f.what));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("{:<15} fix: {fix}\n", ""));
        }
    }
    let failures = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warnings = findings.iter().filter(|f| f.level == Level::Warn).count();
    if failures == 0 && warnings == 0 {
        out.push_str("nexus doctor: everything looks right\n");
    } else {
        out.push_str(&format!(
            "nexus doctor: {failures} problem(s), {warnings} warning(s); fix the FAIL lines first, then run doctor again\n"
        ));
    }
    out
}

fn check_config(config: &Config, file: Option<&Path>) -> Finding {
    let source = match file {
        Some(path) => format!("file {}", path.display()),
        None => "compiled-in defaults (no config file)".to_string(),
    };
    ok("config", format!("valid: {source}; data directory {}", config.data_dir.display()))
}

/// The closest existing ancestor of `path` (itself when it exists).
fn existing_ancestor(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/")).to_path_buf()
}

/// Whether this process may read, write and enter `path` (the kernel's answer, root included).
fn accessible(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK | libc::X_OK) == 0 }
}

fn whoami() -> String {
    format!("uid {}", unsafe { libc::geteuid() })
}

fn check_data_dir(dir: &Path) -> Vec<Finding> {
    const CHECK: &str = "data_dir";
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = existing_ancestor(dir);
            return vec![if accessible(&parent) {
                ok(CHECK, format!("{shown} does not exist yet; nexus serve creates it"))
            } else {
                fail(
                    CHECK,
                    format!("{shown} does not exist, and {} is not writable by {}", parent.display(), whoami()),
                    format!("create {shown} and give it to the user that runs nexus (mkdir, chown, chmod 750)"),
                )
            }];
        }
        Err(e) => {
            return vec![fail(
                CHECK,
                format!("cannot read {shown}: {e}"),
                "check the permissions of its parent directories",
            )];
        }
    };
    if !meta.is_dir() {
        return vec![fail(
            CHECK,
            format!("{shown} is not a directory"),
            "point data_dir (or --data-dir) at a directory",
        )];
    }
    let mut findings = Vec::new();
    if accessible(dir) {
        findings.push(ok(CHECK, format!("{shown} is readable and writable by {}", whoami())));
    } else {
        findings.push(fail(
            CHECK,
            format!("{shown} is not readable and writable by {} (owner uid {})", whoami(), meta.uid()),
            format!("run nexus as its owner, or give it to the user that runs nexus: chown -R USER {shown}"),
        ));
    }
    if meta.mode() & 0o007 != 0 {
        findings.push(warn(
            CHECK,
            format!("{shown} is open to every user on this machine (mode {:o})", meta.mode() & 0o777),
            format!("chmod 750 {shown}"),
        ));
    }
    match datadir::read_format(dir) {
        Ok(Some(found)) if found > CURRENT_FORMAT => findings.push(fail(
            CHECK,
            format!("{shown} has format {found}, newer than this nexus understands ({CURRENT_FORMAT})"),
            "run the newer nexus that wrote it, or restore a backup made by this version",
        )),
        Ok(_) => {}
        Err(e) => findings.push(fail(CHECK, e.message, "point data_dir at a nexus data directory or an empty one")),
    }
    findings
}

fn check_free_space(dir: &Path) -> Finding {
    const CHECK: &str = "disk";
    let on = existing_ancestor(dir);
    let (free, total) = match (fs4::available_space(&on), fs4::total_space(&on)) {
        (Ok(free), Ok(total)) => (free, total),
        (Err(e), _) | (_, Err(e)) => {
            return warn(CHECK, format!("cannot read free space of {}: {e}", on.display()), "check the file system");
        }
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let what = format!("{:.1} GiB free of {:.1} GiB on {}", gib(free), gib(total), on.display());
    if free < MIN_FREE_BYTES {
        fail(CHECK, what, "free space on that file system, or move data_dir to a larger one")
    } else if total > 0 && (free as f64) < LOW_FREE_RATIO * total as f64 {
        warn(CHECK, what, "less than 10% is free; free space before writes fail")
    } else {
        ok(CHECK, what)
    }
}

fn check_port(listen: SocketAddr, holder: &Holder) -> Finding {
    const CHECK: &str = "port";
    if let Holder::Held(LockInfo { pid, listen: Some(serving), .. }) = holder
        && serving.parse::<SocketAddr>().is_ok_and(|s| s == listen || listen.port() == 0)
    {
        return ok(CHECK, format!("{listen} is served by the nexus holding the data directory (pid {pid})"));
    }
    match TcpListener::bind(listen) {
        Ok(_) => ok(CHECK, format!("{listen} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => fail(
            CHECK,
            format!("{listen} is in use by another program"),
            format!(
                "stop that program (`ss -ltnp 'sport = :{}'` shows which), or set server.listen to a free address",
                listen.port()
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => fail(
            CHECK,
            format!("not allowed to listen on {listen}: {e}"),
            "use a port above 1023, or grant CAP_NET_BIND_SERVICE to the user that runs nexus",
        ),
        Err(e) => fail(
            CHECK,
            format!("cannot listen on {listen}: {e}"),
            "set server.listen to an address of this machine (127.0.0.1:7700, or 0.0.0.0:7700 for every interface)",
        ),
    }
}

/// The built-in embedding model. Release builds carry its files inside the binary; debug builds read
/// them from the source tree, so there they must be present and readable.
fn check_model() -> Finding {
    const CHECK: &str = "model";
    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/all-minilm-l6-v2");
    const FILES: &[&str] = &["config.json", "tokenizer.json", "model.f16.safetensors"];
    if !cfg!(debug_assertions) {
        return ok(CHECK, "all-minilm-l6-v2 is built into this binary");
    }
    let missing: Vec<&str> =
        FILES.iter().copied().filter(|f| std::fs::File::open(Path::new(DIR).join(f)).is_err()).collect();
    if missing.is_empty() {
        ok(CHECK, format!("all-minilm-l6-v2 files are readable in {DIR}"))
    } else {
        fail(
            CHECK,
            format!("this debug build reads the model from {DIR}, which lacks {}", missing.join(", ")),
            "restore them from the repository (git checkout -- assets/models), or use a release build",
        )
    }
}

/// Each store's configured backend: embedded ones live in a subdirectory of the data directory;
/// the cluster ones are checked by [`check_cluster`].
fn check_backends(config: &Config) -> Vec<Finding> {
    let s = &config.store;
    let stores = [
        ("records", name(&s.records.backend), "sqlite", &["postgres"][..]),
        ("text", name(&s.text.backend), "tantivy", &["elasticsearch"][..]),
        ("vectors", name(&s.vectors.backend), "usearch", &["pgvector", "qdrant"][..]),
        ("graph", name(&s.graph.backend), "sled", &["neo4j"][..]),
        ("objects", name(&s.objects.backend), "local", &["s3"][..]),
    ];
    stores
        .into_iter()
        .filter(|(_, backend, _, cluster)| !cluster.contains(&backend.as_str()))
        .map(|(store, backend, embedded, _)| {
            if backend != embedded {
                return fail(
                    "backend",
                    format!("{store}: {backend} is not available in this build"),
                    format!("set store.{store}.backend = \"{embedded}\" (embedded)"),
                );
            }
            let dir = config.data_dir.join(store);
            if dir.exists() && !accessible(&dir) {
                fail(
                    "backend",
                    format!("{store}: {backend} (embedded) in {} is not writable by {}", dir.display(), whoami()),
                    format!("give {} to the user that runs nexus (chown -R)", config.data_dir.display()),
                )
            } else {
                ok("backend", format!("{store}: {backend} (embedded) in {}", dir.display()))
            }
        })
        .collect()
}

/// Postgres needs this version (16) at least.
const POSTGRES_MIN: i32 = 160_000;
/// A clock this far from the database's makes leases expire early or late.
const CLOCK_SKEW_WARN_MS: i64 = 1000;

/// The cluster backends: reachable, recent enough, the `vector` extension, the bucket, the clock.
async fn check_cluster(config: &Config) -> Vec<Finding> {
    let s = &config.store;
    let mut findings = Vec::new();
    let mut targets: Vec<(&'static str, &'static str, &crate::config::Secret, bool)> = Vec::new();
    if let (RecordsBackend::Postgres, Some(url)) = (s.records.backend, &s.records.url) {
        let vectors_here = s.vectors.backend == VectorsBackend::Pgvector && s.vectors.url.is_none();
        targets.push(("records", "store.records.url", url, vectors_here));
    }
    if let (VectorsBackend::Pgvector, Some(url)) = (s.vectors.backend, &s.vectors.url) {
        targets.push(("vectors", "store.vectors.url", url, true));
    }
    for (store, setting, url, needs_vector) in targets {
        let settings = PgSettings::from_records(setting, url, &s.records);
        let pg = match Pg::connect(&settings).await {
            Ok(pg) => pg,
            Err(e) => {
                findings.push(fail("postgres", format!("{store}: {}", e.message), format!("fix `{setting}`")));
                continue;
            }
        };
        match pg.server_info().await {
            Ok(info) => {
                let version = format!("{store}: postgres {} at {}", info.version, pg.target);
                findings.push(if info.version_num < POSTGRES_MIN {
                    fail("postgres", format!("{version} is older than 16"), "upgrade postgres to 16 or newer")
                } else {
                    ok("postgres", version)
                });
                if needs_vector {
                    findings.push(match (&info.vector_installed, &info.vector_available) {
                        (Some(v), _) if vector_recent(v) => ok("pgvector", format!("{store}: pgvector {v} installed")),
                        (Some(v), _) => fail(
                            "pgvector",
                            format!("{store}: pgvector {v} is older than 0.8"),
                            "run ALTER EXTENSION vector UPDATE as a superuser (after installing pgvector 0.8+)",
                        ),
                        (None, Some(v)) => ok(
                            "pgvector",
                            format!("{store}: pgvector {v} available; nexus creates the extension on first start"),
                        ),
                        (None, None) => fail(
                            "pgvector",
                            format!("{store}: the vector extension is not installed on the server"),
                            "install pgvector 0.8+ on the postgres server, or use store.vectors.backend = \"usearch\"",
                        ),
                    });
                }
                let skew = info.clock_skew_ms;
                findings.push(if skew.abs() > CLOCK_SKEW_WARN_MS {
                    warn(
                        "clock",
                        format!("this machine's clock is {skew} ms off the database's"),
                        "run NTP (chrony or systemd-timesyncd) on every node and the database host",
                    )
                } else {
                    ok("clock", format!("within {} ms of the database's clock", skew.abs()))
                });
            }
            Err(e) => findings.push(fail("postgres", format!("{store}: {}", e.message), format!("check `{setting}`"))),
        }
    }
    if s.records.backend == RecordsBackend::Postgres && config.auth.master_key.is_none() {
        findings.push(warn(
            "auth",
            "several nodes share this database, but auth.master_key is not set: each node would generate its own",
            "set the same auth.master_key (NEXUS__AUTH__MASTER_KEY) on every node",
        ));
    }
    // The shared derived stores: opening one checks the server answers, the credentials, and that
    // what Nexus keeps there (index, collection, graph) is its own and fits this configuration.
    if s.text.backend == TextBackend::Elasticsearch {
        let opened = crate::store::text::elasticsearch::ElasticsearchTextStore::open(&s.text).await;
        findings.push(
            shared_store_finding(
                "text",
                opened.map(|store| Box::new(store) as Box<dyn TextStore>),
                |s| Box::pin(s.stats()),
                "check store.text.url, username, the password it names and index_prefix",
            )
            .await,
        );
    }
    if s.vectors.backend == VectorsBackend::Qdrant {
        let opened = crate::store::vectors::qdrant::QdrantVectorStore::open(&s.vectors).await;
        findings.push(
            shared_store_finding(
                "vectors",
                opened.map(|store| Box::new(store) as Box<dyn VectorStore>),
                |s| Box::pin(s.stats()),
                "check store.vectors.url, the API key it names, dimensions and collection_prefix",
            )
            .await,
        );
    }
    if s.graph.backend == GraphBackend::Neo4j {
        let opened = crate::store::graph::neo4j::Neo4jGraphStore::open(&s.graph).await;
        findings.push(
            shared_store_finding(
                "graph",
                opened.map(|store| Box::new(store) as Box<dyn GraphStore>),
                |s| Box::pin(s.stats()),
                "check store.graph.url, username, the password it names and database",
            )
            .await,
        );
    }
    if s.objects.backend == ObjectsBackend::S3 {
        findings.push(match crate::store::objects::s3::check_access(&s.objects).await {
            Ok(what) => ok("objects", what),
            Err(e) => fail("objects", e.message, "check store.objects.endpoint, bucket and the credentials it names"),
        });
    }
    findings
}

/// What opening a shared derived store found: its item count, or the error and what to fix.
async fn shared_store_finding<S: ?Sized>(
    store: &'static str,
    opened: Result<Box<S>>,
    stats: impl for<'a> FnOnce(
        &'a S,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<crate::store::StoreStats>> + Send + 'a>,
    >,
    fix: &str,
) -> Finding {
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) => return fail("backend", format!("{store}: {}", e.message), fix),
    };
    match stats(&opened).await {
        Ok(stats) => ok("backend", format!("{store}: answers, {} items", stats.items)),
        Err(e) => fail("backend", format!("{store}: {}", e.message), fix),
    }
}

/// Whether a pgvector version is 0.8 or newer.
fn vector_recent(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (0, 8)
}

/// A backend's name as written in the configuration.
fn name<T: serde::Serialize>(backend: &T) -> String {
    serde_json::to_value(backend).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The reranker, when one is configured: one small request. A search still answers when it
/// fails (in its own order), so a reranker that does not answer is a warning.
async fn check_rerank(config: &Config) -> Option<Finding> {
    let reranker = match crate::rerank::Reranker::open(&config.rerank) {
        Ok(None) => return None,
        Ok(Some(r)) => r,
        Err(e) => {
            return Some(fail("rerank", e.message, "set rerank.api_key_env or api_key_file to a key that is there"));
        }
    };
    let provider = name(&config.rerank.provider);
    let started = std::time::Instant::now();
    Some(match reranker.scores("nexus doctor", &["a passage for nexus doctor".to_string()]).await {
        Ok(_) => ok(
            "rerank",
            format!("{provider} reranker at {} answered in {} ms", config.rerank.url, started.elapsed().as_millis()),
        ),
        Err(e) => warn(
            "rerank",
            e.message,
            "searches answer in their own order until it does: check rerank.url, rerank.model and the key, \
             or set rerank.provider = \"none\"",
        ),
    })
}

/// A server holds the data directory: ask it whether it is ready.
async fn check_running_server(info: &LockInfo) -> Finding {
    const CHECK: &str = "server";
    let Some(listen) = info.listen.as_deref().and_then(|l| l.parse::<SocketAddr>().ok()) else {
        return warn(
            CHECK,
            format!("the data directory is held by pid {}, which is not serving HTTP", info.pid),
            "that is a maintenance command (reindex) or a server still starting; wait for it to finish",
        );
    };
    let host =
        if listen.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), listen.port()) } else { listen };
    let url = format!("http://{host}/ready");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
    let response = match client {
        Ok(client) => client.get(&url).send().await,
        Err(e) => return warn(CHECK, format!("cannot build an HTTP client: {e}"), "report this as a bug"),
    };
    match response {
        Ok(r) if r.status().is_success() => ok(CHECK, format!("pid {} serves {url}: ready", info.pid)),
        Ok(r) => {
            let body = r.text().await.unwrap_or_default();
            warn(
                CHECK,
                format!("pid {} serves {url} but is not ready: {body}", info.pid),
                "the indexers are catching up; if this persists, read the server's log (journalctl -u nexus)",
            )
        }
        Err(e) => fail(
            CHECK,
            format!("pid {} holds the data directory but {url} does not answer: {e}", info.pid),
            "read the server's log (journalctl -u nexus); restart it if it hangs",
        ),
    }
}
