//! `nexus migrate`: moves everything a set of stores holds onto another set, without
//! re-ingesting: from an appliance's data directory onto the cluster stack (`--to FILE`), or
//! back from a cluster onto a new data directory, for one tenant or all (`--from FILE
//! --to-data-dir DIR`).
//!
//! What is copied: the primary stores — records (memories with their history, documents and
//! chunks, entities, relations, with their keys, versions, times and vectors), organisations,
//! projects, API keys (their hashes: old keys keep working), the audit log, jobs — and original
//! files, whose SHA-256 is checked on both sides. The derived stores (text, vectors, graph) are
//! built on the target by its projectors from the change log that the copy writes, so nothing is
//! embedded again.
//!
//! How (see ARCHITECTURE.md, "Migrations"):
//! 1. Preflight, before anything is written: the target answers, holds nothing but this
//!    migration's own earlier progress, and embeds with the same embedder as the source.
//! 2. Bulk copy in key order, from the change-log position S read at the start. Each page is
//!    written as it is (same keys), so a page copied twice lands the same way; progress is saved
//!    in the target after every page, so a killed migration resumes where it stopped.
//! 3. Catch-up: every change the source logged after S is applied with the record's state now
//!    (an upsert or a removal), again saving the position after each page. Records copied during
//!    the bulk phase and changed later are brought up to date here.
//! 4. With `--cutover` the source stops taking writes (a running server is told to; the marker
//!    `migrated.json` keeps it from starting writable again) and the rest is applied.
//! 5. The target's projectors fill its derived stores; then verification: counts and content
//!    hashes per tenant and kind, auth, jobs and files on both sides, `nexus check` on the target,
//!    and a sample of searches compared between source and target. Exit 1 on any difference.

mod progress;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RecordsBackend};
use crate::datadir::{DataDir, Holder, LockInfo, Migrated};
use crate::embed::{EmbedService, EmbedderIdentity};
use crate::error::{Error, ErrorCode, Result};
use crate::search::SearchEngine;
use crate::store::records::Record;
use crate::store::{Primary, Stores, TenantId};
use crate::writelog::WriteLog;
pub use progress::Progress;
pub use verify::Report;

/// Records copied per page (one target transaction each).
const PAGE: usize = 1000;

/// Audit entries copied per page.
const AUDIT_PAGE: usize = 5000;

/// How long the target's projectors may take to catch up before the verification goes ahead
/// and reports what they lack.
const PROJECT_WAIT: Duration = Duration::from_secs(3600);

/// Which way the data goes.
// One value per run: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Direction {
    /// From the appliance data directory in `source.data_dir` onto the stores of `target`.
    ToCluster { source: Config, target: Config, target_file: PathBuf },
    /// From the stores of `source` onto a new data directory `target_dir`; with `tenant`, only
    /// that project.
    ToDataDir { source: Config, source_file: PathBuf, target_dir: PathBuf, tenant: Option<TenantId> },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub cutover: bool,
    pub json: bool,
    /// How many searches to compare between source and target per mode.
    pub samples: usize,
}

/// What a migration saved in the target after its last page: enough to resume.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct State {
    /// The source's identity (an appliance's id from its `migration.json`, or the cluster's
    /// record store as shown).
    source: String,
    /// Only this tenant (a migration back to one machine).
    tenant: Option<String>,
    embedder: Option<EmbedderIdentity>,
    /// The source's change-log head when the bulk copy started.
    snapshot_seq: u64,
    /// The bulk copy has copied every record with a key up to this one.
    copied_through: u64,
    copied: u64,
    bulk_done: bool,
    /// Changes up to this position are applied.
    applied_seq: u64,
    /// Audit entries up to this seq are copied.
    audit_through: u64,
    started_at: Option<DateTime<Utc>>,
    cutover_at: Option<DateTime<Utc>>,
}

/// The appliance's identity as a migration source, kept in its data directory.
#[derive(Serialize, Deserialize)]
struct SourceId {
    id: String,
    created_at: DateTime<Utc>,
}

fn source_id(root: &Path) -> Result<String> {
    let path = root.join("migration.json");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(id) = serde_json::from_slice::<SourceId>(&bytes)
    {
        return Ok(id.id);
    }
    let id = SourceId { id: format!("appliance-{}", uuid::Uuid::now_v7()), created_at: Utc::now() };
    let text = serde_json::to_vec_pretty(&id).map_err(|e| Error::internal("encode the source id", e))?;
    let tmp = root.join("migration.json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id.id)
}

/// The source: its primary stores, and how to reach its server or derived stores.
struct Source {
    primary: Primary,
    shown: String,
    id: String,
    /// An appliance's data directory.
    root: Option<PathBuf>,
    /// The server holding that directory, if one runs.
    server: Option<LockInfo>,
    /// The appliance's config (to reach its server with the master key).
    config: Config,
    /// Held while no server runs there, so none starts during the migration.
    _lock: Option<DataDir>,
    /// The appliance's full stores, for comparing searches (only while migrate holds the lock).
    stores: Option<Stores>,
    embedder: Option<EmbedderIdentity>,
    tenant: Option<TenantId>,
}

impl Source {
    fn wants(&self, tenant: &TenantId) -> bool {
        self.tenant.as_ref().is_none_or(|t| t == tenant)
    }
}

/// The target: its stores (derived ones included), opened from its configuration.
struct Target {
    stores: Stores,
    shown: String,
    config: Config,
    embed: Arc<EmbedService>,
    /// The local directory the target's node-local parts live in for this process.
    _dir: DataDir,
}

/// A short description of where a configuration's stores are, without secrets.
pub fn describe(config: &Config) -> String {
    let host = |url: &str| {
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!("{h}{}", u.port().map(|p| format!(":{p}")).unwrap_or_default())))
            .unwrap_or_else(|| "?".to_string())
    };
    let s = &config.store;
    let records = match s.records.backend {
        RecordsBackend::Sqlite => format!("sqlite in {}", config.data_dir.display()),
        RecordsBackend::Postgres => {
            format!("postgres at {}", s.records.url.as_ref().map(|u| host(u.expose())).unwrap_or_else(|| "?".into()))
        }
    };
    let name = |backend: &dyn std::fmt::Debug| format!("{backend:?}").to_lowercase();
    format!(
        "records {records}, text {}, vectors {}, graph {}, objects {}",
        name(&s.text.backend),
        name(&s.vectors.backend),
        name(&s.graph.backend),
        name(&s.objects.backend)
    )
}

async fn open_source(direction: &Direction) -> Result<Source> {
    match direction {
        Direction::ToCluster { source, .. } => {
            let root = source.data_dir.clone();
            if source.store.records.backend != RecordsBackend::Sqlite {
                return Err(Error::config(
                    "`nexus migrate --to` moves an appliance's data directory; this configuration's records are \
                     already on postgres (use `nexus migrate --from FILE --to-data-dir DIR` to go the other way)",
                ));
            }
            if !root.join("records").join("nexus.sqlite").is_file() {
                return Err(Error::new(
                    ErrorCode::DataDirInvalid,
                    format!(
                        "{} holds no Nexus data (no records/nexus.sqlite); pass the appliance's --data-dir",
                        root.display()
                    ),
                ));
            }
            let embedder = crate::embed::identity::read(&root)?;
            let (server, lock, stores) = match DataDir::holder(&root) {
                Holder::Held(info) => (Some(info), None, None),
                Holder::Free => {
                    let dir = DataDir::open(&root)?;
                    let stores = Stores::open(source, &dir).await?;
                    (None, Some(dir), Some(stores))
                }
            };
            let primary = match &stores {
                Some(s) => Primary {
                    records: s.records.clone(),
                    auth: s.auth.clone(),
                    jobs: s.jobs.clone(),
                    objects: s.objects.clone(),
                },
                None => Stores::open_primary(source, &root).await?,
            };
            Ok(Source {
                primary,
                shown: format!("appliance {}", root.display()),
                id: source_id(&root)?,
                root: Some(root),
                server,
                config: source.clone(),
                _lock: lock,
                stores,
                embedder,
                tenant: None,
            })
        }
        Direction::ToDataDir { source, source_file, tenant, .. } => {
            let primary = Stores::open_primary(source, &source.data_dir).await?;
            let shown = describe(source);
            Ok(Source {
                primary,
                id: format!("cluster {shown}"),
                shown: format!("cluster ({}) from {}", shown, source_file.display()),
                root: None,
                server: None,
                config: source.clone(),
                _lock: None,
                stores: None,
                embedder: None,
                tenant: tenant.clone(),
            })
        }
    }
}

async fn open_target(direction: &Direction) -> Result<Target> {
    let (config, dir, shown) = match direction {
        Direction::ToCluster { source, target, target_file } => {
            // The target's node-local parts (its embedder record, any node-local derived store)
            // live beside the source, one directory per target.
            let s = &target.store;
            let mut id = <sha2::Sha256 as sha2::Digest>::new();
            for part in [
                s.records.url.as_ref().map(|u| u.expose().to_string()).unwrap_or_default(),
                s.text.index_prefix.clone(),
                s.vectors.collection_prefix.clone(),
                format!("{:?}{:?}", s.objects.endpoint, s.objects.bucket),
            ] {
                sha2::Digest::update(&mut id, part.as_bytes());
                sha2::Digest::update(&mut id, [0]);
            }
            let scratch =
                source.data_dir.join(format!("migration-target-{}", &hex::encode(sha2::Digest::finalize(id))[..12]));
            let mut config = target.clone();
            config.data_dir = scratch.clone();
            (config, DataDir::open(&scratch)?, format!("cluster ({}) from {}", describe(target), target_file.display()))
        }
        Direction::ToDataDir { source, target_dir, .. } => {
            if matches!(DataDir::holder(target_dir), Holder::Held(_)) {
                return Err(Error::new(
                    ErrorCode::DataDirLocked,
                    format!("{} is in use by a running nexus; stop it first", target_dir.display()),
                ));
            }
            // The same embedder and settings as the cluster, on the embedded stores.
            let mut config = source.clone();
            config.store = crate::config::StoreConfig {
                records: Default::default(),
                vectors: Default::default(),
                text: Default::default(),
                graph: Default::default(),
                objects: crate::config::ObjectsConfig {
                    backend: crate::config::ObjectsBackend::Local,
                    ..source.store.objects.clone()
                },
            };
            config.data_dir = target_dir.clone();
            let dir = DataDir::open(target_dir)?;
            (config, dir, format!("data directory {}", target_dir.display()))
        }
    };
    let embedder = crate::embed::open_embedder(&config.embed)?;
    let stores = Stores::open(&config, &dir).await?;
    let embed = EmbedService::start(embedder, &config.embed);
    Ok(Target { stores, shown, config, embed, _dir: dir })
}

/// Runs a migration (or resumes one) and returns its verification report.
pub async fn run(direction: Direction, options: &Options) -> Result<Report> {
    let started = Instant::now();
    let progress = Progress::new(options.json);
    progress.step("open", "opening the source and the target");
    let source = open_source(&direction).await?;
    let target = open_target(&direction).await?;
    let mut state = preflight(&source, &target, &direction).await?;
    progress.note(&format!(
        "source {}\ntarget {}\n{}",
        source.shown,
        target.shown,
        if state.copied > 0 || state.bulk_done {
            format!("resuming: {} records copied, position {}", state.copied, state.applied_seq)
        } else {
            format!("starting at change-log position {}", state.snapshot_seq)
        }
    ));
    let mut stats = verify::Throughput::default();
    if !state.bulk_done {
        copy_records(&source, &target, &mut state, &progress, &mut stats).await?;
    }
    copy_rest(&source, &target, &mut state, &progress).await?;
    catch_up(&source, &target, &mut state, &progress).await?;
    if options.cutover {
        cutover(&source, &target, &mut state, &progress).await?;
    }
    let writes = project(&target, &progress).await?;
    let mut report = verify::verify(&source, &target, options, &progress, state.audit_through).await;
    // A source still taking writes may have moved on meanwhile: catch up and look again.
    for _ in 0..2 {
        let Ok(ref r) = report else { break };
        if r.ok || options.cutover {
            break;
        }
        let head = source.primary.records.head_seq().await?;
        if head <= state.applied_seq {
            break;
        }
        progress.note("the source changed during verification: catching up and verifying again");
        copy_rest(&source, &target, &mut state, &progress).await?;
        catch_up(&source, &target, &mut state, &progress).await?;
        wait_projected(&target, &writes, &progress).await;
        report = verify::verify(&source, &target, options, &progress, state.audit_through).await;
    }
    writes.shutdown().await;
    let mut report = report?;
    report.source = source.shown.clone();
    report.target = target.shown.clone();
    report.snapshot_seq = state.snapshot_seq;
    report.applied_seq = state.applied_seq;
    report.cutover = state.cutover_at.is_some();
    report.seconds = started.elapsed().as_secs_f64();
    report.throughput = stats;
    if let Direction::ToCluster { .. } = direction
        && target.config.store.objects.backend == crate::config::ObjectsBackend::Local
    {
        report.notes.push(format!(
            "the target keeps files on each node (store.objects is local): they were copied to {}; put them in \
             each node's data directory, or use S3 (store.objects.backend = \"s3\") so every node serves them",
            target.config.data_dir.join("objects").display()
        ));
    }
    if let Direction::ToCluster { .. } = direction
        && let Some(root) = &source.root
        && crate::auth::client_master_key(&source.config).is_some()
    {
        let whence = if source.config.auth.master_key.is_some() {
            "the appliance's configuration (auth.master_key)".to_string()
        } else {
            root.join("master.key").display().to_string()
        };
        report.notes.push(format!(
            "the operator's master key is not copied (it is in {whence}): give the cluster's nodes the same one \
             (auth.master_key or NEXUS__AUTH__MASTER_KEY) to keep using it"
        ));
    }
    Ok(report)
}

/// Checks the target before anything is written, and returns the state to start or resume from.
async fn preflight(source: &Source, target: &Target, direction: &Direction) -> Result<State> {
    // Same embedder: the copied vectors must mean what the target's embedder makes.
    let target_identity = target.embed.identity().clone();
    if let Some(identity) = &source.embedder
        && identity != &target_identity
    {
        return Err(Error::new(
            ErrorCode::EmbedderMismatch,
            format!(
                "the source's vectors were made by {identity}, but the target configuration embeds with \
                 {target_identity}; configure the same [embed] in the target (or re-embed the source first with \
                 `nexus reindex --store vectors`)"
            ),
        ));
    }
    if target.stores.vectors.dimensions() != target_identity.dimensions {
        return Err(Error::new(
            ErrorCode::EmbedderMismatch,
            format!(
                "the target's vector store holds {} dimensions, but the embedder makes {}; point store.vectors at \
                 an empty collection or table",
                target.stores.vectors.dimensions(),
                target_identity.dimensions
            ),
        ));
    }
    let records = &target.stores.records;
    let tenant = source.tenant.as_ref().map(|t| t.to_string());
    if let Some(saved) = records.migration_state().await? {
        let saved: State =
            serde_json::from_value(saved).map_err(|e| Error::internal("read the saved migration state", e))?;
        if saved.source != source.id || saved.tenant != tenant {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "the target holds a migration from another source ({}{}); nothing was written. Point the \
                     target configuration at empty stores",
                    saved.source,
                    saved.tenant.map(|t| format!(", tenant {t}")).unwrap_or_default()
                ),
            ));
        }
        return Ok(saved);
    }
    // A fresh migration: the target must hold nothing yet.
    let mut held = Vec::new();
    let count = records.stats().await?.items;
    if count > 0 {
        held.push(format!("{count} records"));
    }
    let auth = target.stores.auth.export().await?;
    let keys = auth.keys.len();
    if keys > 0 {
        held.push(format!("{keys} API keys"));
    }
    let projects: Vec<String> =
        auth.projects.iter().filter(|p| p.id.as_str() != TenantId::DEFAULT).map(|p| p.id.to_string()).collect();
    if !projects.is_empty() {
        held.push(format!("projects {}", projects.join(", ")));
    }
    for (name, items) in [
        ("text", target.stores.text.stats().await?.items),
        ("vectors", target.stores.vectors.stats().await?.items),
        ("graph", target.stores.graph.stats().await?.items),
    ] {
        if items > 0 && matches!(direction, Direction::ToCluster { .. }) {
            held.push(format!("{items} items in its {name} store"));
        }
    }
    if !held.is_empty() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "the target already holds data ({}); nothing was written. Migrate into empty stores (a new \
                 database, index_prefix and collection_prefix)",
                held.join(", ")
            ),
        ));
    }
    let snapshot_seq = source.primary.records.head_seq().await?;
    let state = State {
        source: source.id.clone(),
        tenant,
        embedder: Some(target_identity),
        snapshot_seq,
        applied_seq: snapshot_seq,
        started_at: Some(Utc::now()),
        ..Default::default()
    };
    records.save_migration_state(&to_value(&state)?).await?;
    Ok(state)
}

fn to_value(state: &State) -> Result<serde_json::Value> {
    serde_json::to_value(state).map_err(|e| Error::internal("encode the migration state", e))
}

async fn save(target: &Target, state: &State) -> Result<()> {
    target.stores.records.save_migration_state(&to_value(state)?).await
}

/// The bytes a record takes, roughly, for the MB/s figure.
fn record_bytes(r: &Record) -> u64 {
    (r.id.len()
        + r.kind.len()
        + r.title.as_ref().map_or(0, String::len)
        + r.body.as_ref().map_or(0, String::len)
        + r.tags.iter().map(String::len).sum::<usize>()
        + r.metadata.to_string().len()
        + r.vector.as_ref().map_or(0, |v| v.len() * 4)) as u64
}

async fn copy_records(
    source: &Source,
    target: &Target,
    state: &mut State,
    progress: &Progress,
    stats: &mut verify::Throughput,
) -> Result<()> {
    let total = source.primary.records.stats().await?.items;
    let mut bar = progress.counter("records", total, state.copied);
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    // The next page is read from the source while the current one is written to the target.
    let scan = |after: u64| source.primary.records.scan(after, PAGE);
    let mut page = scan(state.copied_through).await?;
    while let Some(last) = page.last().map(|r| r.key) {
        let wanted: Vec<Record> = page.into_iter().filter(|r| source.wants(&r.tenant)).collect();
        let n = wanted.len() as u64;
        bytes += wanted.iter().map(record_bytes).sum::<u64>();
        let write = async {
            if !wanted.is_empty() {
                target.stores.records.import(wanted).await?;
            }
            Ok::<(), Error>(())
        };
        let (next, written) = tokio::join!(scan(last), write);
        written?;
        records += n;
        state.copied_through = last;
        state.copied += n;
        save(target, state).await?;
        bar.advance(n, bytes);
        page = next?;
    }
    state.bulk_done = true;
    save(target, state).await?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    stats.records = records;
    stats.bytes = bytes;
    stats.seconds = seconds;
    bar.finish();
    Ok(())
}

/// Organisations, projects, keys, the audit log, jobs and original files. Each is written as it
/// is and keyed by its id, so copying again (on resume, after catch-up) changes nothing twice.
async fn copy_rest(source: &Source, target: &Target, state: &mut State, progress: &Progress) -> Result<()> {
    // Auth: small; copied whole each time (a key revoked meanwhile is revoked on the target too).
    let mut auth = source.primary.auth.export().await?;
    if let Some(tenant) = &source.tenant {
        auth.projects.retain(|p| &p.id == tenant);
        let orgs: Vec<String> = auth.projects.iter().map(|p| p.org_id.clone()).collect();
        auth.orgs.retain(|o| orgs.contains(&o.id));
        auth.keys.retain(|k| &k.key.project == tenant);
    }
    progress.step(
        "auth",
        &format!("{} organisations, {} projects, {} keys", auth.orgs.len(), auth.projects.len(), auth.keys.len()),
    );
    target.stores.auth.import(&auth).await?;
    let mut audit = 0;
    loop {
        let page = source.primary.auth.audit_after(state.audit_through, AUDIT_PAGE).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        let page: Vec<_> = page
            .into_iter()
            .filter(|e| source.tenant.is_none() || e.event.tenant.as_ref() == source.tenant.as_ref())
            .collect();
        audit += page.len();
        target.stores.auth.import_audit(&page).await?;
        state.audit_through = last;
        save(target, state).await?;
    }
    let mut jobs = source.primary.jobs.export().await?;
    jobs.retain(|j| source.wants(&j.tenant));
    target.stores.jobs.import(&jobs).await?;
    progress.step("audit+jobs", &format!("{audit} audit entries, {} jobs", jobs.len()));
    copy_objects(source, target, progress).await
}

/// The tenants whose files are copied: every project's (the default one included).
async fn tenants(source: &Source) -> Result<Vec<TenantId>> {
    let mut tenants: std::collections::BTreeSet<TenantId> =
        source.primary.auth.list_projects(&crate::store::auth::Within::All).await?.into_iter().map(|p| p.id).collect();
    tenants.insert(TenantId::default_tenant());
    Ok(tenants.into_iter().filter(|t| source.wants(t)).collect())
}

async fn copy_objects(source: &Source, target: &Target, progress: &Progress) -> Result<()> {
    let (src, dst) = (&source.primary.objects, &target.stores.objects);
    let mut listed = Vec::new();
    for tenant in tenants(source).await? {
        for info in src.list(&tenant, "").await? {
            listed.push((tenant.clone(), info));
        }
    }
    let mut bar = progress.counter("files", listed.len() as u64, 0);
    let mut bytes = 0;
    for (tenant, info) in listed {
        let there = dst.head(&tenant, &info.key).await?;
        let same = match (&there, &info.sha256) {
            (Some(t), Some(hash)) if t.size == info.size => t.sha256.as_ref().is_none_or(|h| h == hash),
            (Some(t), None) => {
                t.size == info.size
                    && dst.content_hash(&tenant, &info.key).await? == src.content_hash(&tenant, &info.key).await?
            }
            _ => false,
        };
        if !same {
            let (_, stream) = src.get(&tenant, &info.key).await?;
            let written = dst.put(&tenant, &info.key, stream).await?;
            let expected = match &info.sha256 {
                Some(h) => h.clone(),
                None => src.content_hash(&tenant, &info.key).await?,
            };
            if written.sha256.as_deref().is_some_and(|h| h != expected) {
                return Err(Error::new(
                    ErrorCode::StoreFailure,
                    format!(
                        "file {tenant}/{} changed on its way to the target (sha256 {} there, {expected} here); run \
                         the migration again",
                        info.key,
                        written.sha256.unwrap_or_default()
                    ),
                ));
            }
        }
        bytes += info.size;
        bar.advance(1, bytes);
    }
    bar.finish();
    Ok(())
}

/// Applies every change the source logged after the saved position, with each record's state
/// now, until none is left.
async fn catch_up(source: &Source, target: &Target, state: &mut State, progress: &Progress) -> Result<()> {
    let head = source.primary.records.head_seq().await?;
    let behind = head.saturating_sub(state.applied_seq);
    let mut bar = progress.counter("catch-up", behind, 0);
    let mut applied = 0;
    loop {
        let changes = source.primary.records.changes_since(state.applied_seq, PAGE).await?;
        let Some(last) = changes.last().map(|c| c.seq) else { break };
        let mut upserts: std::collections::BTreeMap<u64, Record> = Default::default();
        let mut removals = Vec::new();
        for change in changes {
            if !source.wants(&change.tenant) {
                continue;
            }
            match change.record {
                Some(record) => {
                    upserts.insert(record.key, record);
                }
                None => removals.push(change.key),
            }
        }
        let n = (upserts.len() + removals.len()) as u64;
        target.stores.records.import_removals(removals).await?;
        target.stores.records.import(upserts.into_values().collect()).await?;
        bar.advance(last.saturating_sub(state.applied_seq).min(behind.max(1)), 0);
        applied += n;
        state.applied_seq = last;
        save(target, state).await?;
    }
    bar.finish();
    if applied > 0 {
        progress.note(&format!("caught up: {applied} changed records applied, position {}", state.applied_seq));
    }
    Ok(())
}

/// Stops the source taking writes, then applies what is left.
async fn cutover(source: &Source, target: &Target, state: &mut State, progress: &Progress) -> Result<()> {
    let Some(root) = &source.root else {
        return Err(Error::invalid(
            "--cutover applies to a migration from an appliance (`--to FILE`); a cluster keeps serving",
        ));
    };
    progress.step("cutover", "stopping writes on the source");
    let marker = Migrated { target: describe(&target.config), at: Utc::now(), seq: state.applied_seq };
    marker.write(root)?;
    if let Some(info) = &source.server {
        let answer = crate::cli::server::server_request(
            &source.config,
            info,
            reqwest::Method::POST,
            "/api/v1/admin/read-only",
            None,
        )
        .await
        .map_err(|e| {
            Error::new(
                e.code,
                format!("the running appliance did not stop taking writes ({}); the migration stops here", e.message),
            )
        })?;
        if answer["read_only"] != serde_json::json!(true) {
            return Err(Error::internal("stop writes on the source", "the server still takes writes"));
        }
    }
    copy_rest(source, target, state, progress).await?;
    catch_up(source, target, state, progress).await?;
    state.cutover_at = Some(Utc::now());
    save(target, state).await?;
    Migrated { seq: state.applied_seq, ..marker }.write(root)?;
    progress.note(&format!(
        "cutover done at position {}: the appliance takes no more writes ({} marks it)",
        state.applied_seq,
        Migrated::path(root).display()
    ));
    Ok(())
}

/// Starts the target's projectors and waits until its derived stores hold everything copied.
async fn project(target: &Target, progress: &Progress) -> Result<WriteLog> {
    let config = &target.config;
    let writes = WriteLog::start(&target.stores, &config.indexer, &config.cluster, target.embed.clone()).await?;
    wait_projected(target, &writes, progress).await;
    Ok(writes)
}

async fn wait_projected(target: &Target, writes: &WriteLog, progress: &Progress) {
    let Ok(head) = target.stores.records.head_seq().await else { return };
    for indexer in writes.indexers() {
        progress.step("project", &format!("{} store", indexer.name()));
        let started = Instant::now();
        while !indexer.wait_visible(head, Duration::from_secs(2)).await {
            if started.elapsed() > PROJECT_WAIT {
                break;
            }
            progress.note_every(&format!(
                "{}: projected up to {} of {head}{}",
                indexer.name(),
                indexer.visible_seq(),
                indexer.last_error().map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        if let Err(e) = indexer.persist().await {
            progress.note(&format!("{}: {e}", indexer.name()));
        }
    }
}

/// Search engines over both sides, for the sample comparison: the source's only while this
/// process holds its data directory.
fn engines(source: &Source, target: &Target) -> Option<(SearchEngine, SearchEngine)> {
    let stores = source.stores.clone()?;
    Some((
        SearchEngine::new(stores, target.embed.clone()),
        SearchEngine::new(target.stores.clone(), target.embed.clone()),
    ))
}
