//! The application: the one place that knows every store and service and wires them together.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::auth::Auth;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::embed::{self, EmbedService};
use crate::error::Result;
use crate::jobs::Jobs;
use crate::knowledge::chunk::ChunkOptions;
use crate::knowledge::documents::Documents;
use crate::knowledge::ingest::{INGEST_JOB, IngestHandler};
use crate::llm::Llm;
use crate::meetings::Meetings;
use crate::meetings::finish::{FINISH_JOB, FinishHandler};
use crate::meetings::import::{IMPORT_JOB, ImportHandler};
use crate::memory::Memories;
use crate::memory::add::AddHandler;
use crate::search::SearchEngine;
use crate::store::{StoreStats, Stores};
use crate::writelog::WriteLog;
use crate::writelog::check::{CheckReport, check};
use crate::writelog::projection::Projection;

pub struct App {
    pub config: Config,
    pub dir: parking_lot::Mutex<DataDir>,
    pub stores: Stores,
    pub embed: Arc<EmbedService>,
    pub writes: Arc<WriteLog>,
    pub search: SearchEngine,
    pub documents: Arc<Documents>,
    pub memories: Arc<Memories>,
    pub meetings: Arc<Meetings>,
    pub graph: Arc<crate::graph::Graph>,
    pub jobs: Arc<Jobs>,
    /// The real-time hub: events derived from the change log, and live-only ones.
    pub events: Arc<crate::events::Hub>,
    pub llm: Option<Arc<dyn Llm>>,
    job_shutdown: tokio::sync::watch::Sender<bool>,
    job_workers: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub auth: Arc<Auth>,
    pub started: Instant,
    /// What scheduled backups did last and will do next.
    pub backup_status: parking_lot::Mutex<crate::backup::schedule::ScheduleStatus>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoreStatus {
    pub name: &'static str,
    pub backend: &'static str,
    pub items: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IndexerStatus {
    pub name: &'static str,
    pub applied_seq: u64,
    pub committed_seq: u64,
    pub head_seq: u64,
    pub lag: u64,
    pub caught_up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Whether a store's backend answers (a cluster server may be down while Nexus runs).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BackendStatus {
    pub store: &'static str,
    pub backend: &'static str,
    pub reachable: bool,
    /// The stable code of the error when it does not answer (details are in the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long a readiness probe waits for a backend.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub data_dir: String,
    pub ready: bool,
    pub stores: Vec<StoreStatus>,
    pub indexers: Vec<IndexerStatus>,
}

async fn probe<T>(call: impl std::future::Future<Output = Result<T>>) -> Result<()> {
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(outcome) => outcome.map(drop),
        Err(_) => Err(timeout_error()),
    }
}

fn timeout_error() -> crate::error::Error {
    crate::error::Error::new(crate::error::ErrorCode::BackendUnavailable, "the backend did not answer in time")
}

impl App {
    /// Opens the data directory and the stores, and starts the indexers (which replay what they missed).
    pub async fn open(config: Config) -> Result<Arc<App>> {
        let embedder = embed::open_embedder(&config.embed)?;
        let dir = DataDir::open(&config.data_dir)?;
        embed::identity::ensure_matches(dir.root(), embedder.identity())?;
        let stores = Stores::open(&config, &dir).await?;
        let embed = EmbedService::start(embedder, &config.embed);
        let llm = crate::llm::open_llm(&config.llm)?;
        let auth = Arc::new(Auth::open(&config, dir.root(), stores.auth.clone())?);
        auth.start_upkeep(config.auth.audit_retention_days);
        let writes = Arc::new(WriteLog::start(&stores, &config.indexer, &config.cluster, embed.clone()).await?);
        if let Some(migrated) = crate::datadir::Migrated::read(dir.root())? {
            tracing::warn!(target = %migrated.target, "this data directory moved to a cluster: serving it read-only");
            writes.set_read_only(Some(migrated.refusal(dir.root()))).await;
        }
        let reranker = crate::rerank::Reranker::open(&config.rerank)?;
        let search = SearchEngine::new(stores.clone(), embed.clone()).with_reranker(reranker);
        let chunking = ChunkOptions {
            max_tokens: config.knowledge.chunk_max_tokens,
            overlap_tokens: config.knowledge.chunk_overlap_tokens,
        };
        let documents = Arc::new(Documents::new(
            stores.clone(),
            writes.clone(),
            embed.clone(),
            chunking,
            config.knowledge.graph_extraction,
        ));
        let memories = Arc::new(Memories::new(
            stores.clone(),
            writes.clone(),
            embed.clone(),
            search.clone(),
            llm.clone(),
            config.memory.clone(),
        ));
        let mut jobs = Jobs::new(stores.jobs.clone());
        jobs.register(INGEST_JOB, Arc::new(IngestHandler { stores: stores.clone(), documents: documents.clone() }));
        jobs.register(crate::memory::ADD_JOB, Arc::new(AddHandler(memories.clone())));
        let graph = Arc::new(crate::graph::Graph::new(
            stores.clone(),
            writes.clone(),
            SearchEngine::new(stores.clone(), embed.clone()),
            llm.clone(),
        ));
        jobs.register(
            crate::knowledge::entities::GRAPH_EXTRACT_JOB,
            Arc::new(crate::knowledge::entities::GraphExtractHandler { stores: stores.clone(), graph: graph.clone() }),
        );
        let meetings =
            Arc::new(Meetings::new(stores.clone(), writes.clone(), memories.clone(), graph.clone(), llm.clone()));
        jobs.register(FINISH_JOB, Arc::new(FinishHandler(meetings.clone())));
        jobs.register(IMPORT_JOB, Arc::new(ImportHandler { stores: stores.clone(), meetings: meetings.clone() }));
        let backup_jobs = Arc::new(crate::backup::BackupJobs::default());
        jobs.register(crate::backup::BACKUP_JOB, backup_jobs.clone());
        jobs.register(crate::backup::VERIFY_JOB, backup_jobs.clone());
        let jobs = Arc::new(jobs);
        let (job_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let events = crate::events::Hub::start(
            stores.records.clone(),
            config.events.clone(),
            writes.written(),
            std::time::Duration::from_millis(config.cluster.poll_interval_ms),
            jobs.subscribe(),
            shutdown_rx.clone(),
        )
        .await?;
        let job_workers = jobs.start(config.jobs.workers, shutdown_rx);
        let app = Arc::new(App {
            config,
            dir: parking_lot::Mutex::new(dir),
            stores,
            embed,
            writes,
            search,
            documents,
            memories,
            meetings,
            graph,
            jobs,
            events,
            llm,
            auth,
            job_shutdown,
            job_workers: parking_lot::Mutex::new(job_workers),
            started: Instant::now(),
            backup_status: parking_lot::Mutex::default(),
        });
        let _ = backup_jobs.app.set(Arc::downgrade(&app));
        Ok(app)
    }

    /// Opens the data directory and stores without indexers, for offline maintenance (reindex).
    /// With `discard_vectors`, the vector index is dropped first, to be rebuilt.
    pub async fn open_stores(config: &Config, discard_vectors: bool) -> Result<(DataDir, Stores)> {
        let dir = DataDir::open(&config.data_dir)?;
        if discard_vectors && config.store.vectors.backend == crate::config::VectorsBackend::Pgvector {
            Stores::discard_shared_vectors(config, &dir).await?;
        } else if discard_vectors {
            let vectors = dir.path("vectors");
            std::fs::remove_dir_all(&vectors)?;
            std::fs::create_dir_all(&vectors)?;
        }
        let stores = Stores::open(config, &dir).await?;
        Ok((dir, stores))
    }

    pub fn projections(&self) -> Vec<Arc<dyn Projection>> {
        self.writes.indexers().iter().map(|i| i.projection.clone()).collect()
    }

    /// Why writes should be refused: the data directory's migration marker, if it has one.
    pub fn read_only_reason(&self) -> Result<Option<String>> {
        let dir = self.dir.lock();
        Ok(crate::datadir::Migrated::read(dir.root())?.map(|m| m.refusal(dir.root())))
    }

    pub fn ready(&self) -> bool {
        self.writes.caught_up()
    }

    pub async fn indexer_status(&self) -> Result<Vec<IndexerStatus>> {
        let head = self.stores.records.head_seq().await?;
        Ok(self
            .writes
            .indexers()
            .iter()
            .map(|i| IndexerStatus {
                name: i.name(),
                applied_seq: i.visible_seq(),
                committed_seq: i.committed_seq(),
                head_seq: head,
                lag: head.saturating_sub(i.visible_seq()),
                caught_up: i.caught_up(),
                last_error: i.last_error(),
            })
            .collect())
    }

    /// Probes every store's backend with a cheap call, all at once, each bounded in time.
    pub async fn backend_status(&self) -> Vec<BackendStatus> {
        let s = &self.stores;
        let tenant = crate::store::TenantId::default_tenant();
        let projections = self.projections();
        let derived = projections.iter().map(|p| {
            let p = p.clone();
            async move { (p.name(), p.backend(), p.committed_seq().await.map(drop)) }
        });
        let (records, objects, derived) = tokio::join!(
            probe(s.records.head_seq()),
            probe(s.objects.head(&tenant, ".nexus-ready")),
            futures::future::join_all(derived.map(|f| async move {
                match tokio::time::timeout(PROBE_TIMEOUT, f).await {
                    Ok((name, backend, outcome)) => (name, backend, outcome),
                    Err(_) => ("?", "?", Err(timeout_error())),
                }
            })),
        );
        let entry = |store, backend, outcome: Result<()>| {
            if let Err(e) = &outcome {
                tracing::warn!(store, backend, error = %e, "backend does not answer");
            }
            BackendStatus {
                store,
                backend,
                reachable: outcome.is_ok(),
                error: outcome.err().map(|e| e.code.as_str().into()),
            }
        };
        let mut out = vec![entry("records", s.records.backend(), records)];
        out.extend(derived.into_iter().map(|(name, backend, outcome)| entry(name, backend, outcome)));
        out.push(entry("objects", s.objects.backend(), objects));
        out
    }

    pub async fn store_status(&self) -> Result<Vec<StoreStatus>> {
        let s = &self.stores;
        let entry =
            |name, backend, stats: StoreStats| StoreStatus { name, backend, items: stats.items, bytes: stats.bytes };
        Ok(vec![
            entry("records", s.records.backend(), s.records.stats().await?),
            entry("text", s.text.backend(), s.text.stats().await?),
            entry("vectors", s.vectors.backend(), s.vectors.stats().await?),
            entry("graph", s.graph.backend(), s.graph.stats().await?),
            entry("objects", s.objects.backend(), s.objects.stats().await?),
        ])
    }

    pub async fn status(&self) -> Result<Status> {
        Ok(Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            data_dir: self.config.data_dir.display().to_string(),
            ready: self.ready(),
            stores: self.store_status().await?,
            indexers: self.indexer_status().await?,
        })
    }

    /// Compares the record with every derived store, after letting the indexers catch up.
    pub async fn check(&self) -> Result<CheckReport> {
        let head = self.stores.records.head_seq().await?;
        self.writes.wait_indexed(head).await;
        for indexer in self.writes.indexers() {
            indexer.persist().await?;
        }
        check(&*self.stores.records, &self.projections()).await
    }

    /// Stops the indexers after they persist their state, and writes the queued audit events.
    pub async fn shutdown(&self) {
        // Running jobs finish their current step; an interrupted one is claimed again next start.
        self.job_shutdown.send_replace(true);
        let workers: Vec<_> = self.job_workers.lock().drain(..).collect();
        for worker in workers {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), worker).await;
        }
        self.writes.shutdown().await;
        self.auth.shutdown().await;
    }
}
