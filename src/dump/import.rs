//! Importing a dump into a new data directory.
//!
//! 1. Refused before anything is written: a target a server holds, a target that holds anything
//!    but an empty Nexus data directory (a fresh install that started once is fine: that is not
//!    "a database that already exists"), a dump of a newer format, a dump whose vectors another
//!    embedder made than the configured one.
//! 2. The whole file is read and checked ([`super::archive::unpack`]) into `.<name>.import-<id>`
//!    beside the target (same filesystem).
//! 3. A data directory is built there: organisations, projects, keys (hashes: the old keys keep
//!    working), the audit log, records as they are (keys, versions, times, vectors), jobs,
//!    original files (each one's SHA-256 checked); each record logs a change, so the indexers
//!    project the text, vector and graph stores from the change log — nothing is embedded again.
//!    The counts must match the dump's header, and `nexus check` must find record and derived
//!    stores in agreement.
//! 4. The directory is moved into place: renamed onto a missing or empty target, or swapped
//!    atomically with a fresh install's empty data directory (whose master key is kept), which is
//!    then removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::write::Progress;
use super::{Info, Kind, Reader};
use crate::config::Config;
use crate::datadir::{DataDir, Holder};
use crate::embed::EmbedService;
use crate::error::{Error, ErrorCode, Result};
use crate::store::auth::AuthExport;
use crate::store::objects::ByteStream;
use crate::store::{Stores, TenantId};
use crate::writelog::WriteLog;

/// Records imported per transaction.
const PAGE: usize = 1000;
/// Audit entries imported per transaction.
const AUDIT_PAGE: usize = 5000;
/// How long the indexers may take to project everything.
const PROJECT_WAIT: Duration = Duration::from_secs(6 * 3600);

/// Inside the scratch directory while an import runs.
pub const IN_PROGRESS: &str = "IMPORT-IN-PROGRESS";

/// What an import did.
#[derive(Clone, Debug, Serialize)]
pub struct Imported {
    pub data_dir: String,
    pub dump: String,
    #[serde(flatten)]
    pub info: Info,
    /// Original files written.
    pub objects: u64,
    /// Records compared with the derived stores (`nexus check`).
    pub records_checked: u64,
    /// Whether a fresh install's empty data directory was replaced.
    pub replaced_empty_install: bool,
    pub took_ms: u64,
}

/// What is at the target path now.
enum Target {
    Absent,
    EmptyDir,
    /// A Nexus data directory holding no data, locked; its master key, if any.
    EmptyInstall {
        _lock: DataDir,
        master_key: Option<Vec<u8>>,
    },
}

/// Imports the dump `file` as the data directory `target`.
pub async fn import(
    config: &Config,
    file: &Path,
    target: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Imported> {
    let started = Instant::now();
    if !file.is_file() {
        return Err(Error::invalid(format!("{} is not a file", file.display())));
    }
    let target = std::path::absolute(target)?;
    let state = inspect_target(config, &target).await?;
    let info = Info::read(file)?;
    let embedder = crate::embed::open_embedder(&config.embed)?;
    let identity = embedder.identity().clone();
    if info.counts.vectors > 0 {
        match &info.embedder {
            Some(made) if made == &identity => {}
            made => {
                return Err(Error::new(
                    ErrorCode::EmbedderMismatch,
                    format!(
                        "the dump's vectors were made by {}, but the configured embedder is {identity}; configure \
                         the same [embed] for the import (vectors are imported, never made again), then re-embed \
                         afterwards with `nexus reindex --store vectors` if you want another embedder",
                        made.as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "an embedder the dump does not name".into())
                    ),
                ));
            }
        }
    }
    let parent = target.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| Error::invalid(format!("{} cannot be a data directory", target.display())))?;
    std::fs::create_dir_all(&parent)?;
    remove_killed_imports(&parent, &name);
    let scratch = parent.join(format!(".{name}.import-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir(&scratch)?;
    std::fs::write(scratch.join(IN_PROGRESS), b"")?;
    let outcome = import_into(config, file, &target, state, &info, embedder, &scratch, progress).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let (objects, records_checked, replaced) = outcome?;
    Ok(Imported {
        data_dir: target.display().to_string(),
        dump: file.display().to_string(),
        info,
        objects,
        records_checked,
        replaced_empty_install: replaced,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Scratch directories of killed imports beside `name`.
fn remove_killed_imports(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let prefix = format!(".{name}.import-");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) && entry.path().join(IN_PROGRESS).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The configuration the new data directory is built with: the embedded stores, no LLM (jobs in
/// the dump must not call out), `root` as the data directory.
fn import_config(config: &Config, root: &Path) -> Config {
    use crate::config::{GraphBackend, LlmProvider, ObjectsBackend, RecordsBackend, TextBackend, VectorsBackend};
    let mut c = config.clone();
    c.data_dir = root.to_path_buf();
    c.store.records.backend = RecordsBackend::Sqlite;
    c.store.text.backend = TextBackend::Tantivy;
    c.store.vectors.backend = VectorsBackend::Usearch;
    c.store.graph.backend = GraphBackend::Sled;
    c.store.objects.backend = ObjectsBackend::Local;
    c.llm.provider = LlmProvider::None;
    c.backup.schedule = String::new();
    c
}

async fn inspect_target(config: &Config, target: &Path) -> Result<Target> {
    if let Holder::Held(info) = DataDir::holder(target) {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!("{} is in use by a running nexus (pid {}): stop it, then import", target.display(), info.pid),
        ));
    }
    let entries: Vec<String> = match std::fs::read_dir(target) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Absent),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::new(ErrorCode::Conflict, format!("{} is a file, not a directory", target.display())));
        }
        Err(e) => return Err(e.into()),
    };
    if entries.is_empty() {
        return Ok(Target::EmptyDir);
    }
    let refuse = |what: String| {
        Error::new(
            ErrorCode::Conflict,
            format!(
                "{} is not empty ({what}); nothing was written. Import into a new or empty data directory (move \
                 this one aside, or pass another --data-dir)",
                target.display()
            ),
        )
    };
    if !target.join("FORMAT").is_file() || !target.join("records").join("nexus.sqlite").is_file() {
        let mut shown: Vec<&str> = entries.iter().map(String::as_str).take(3).collect();
        if entries.len() > 3 {
            shown.push("...");
        }
        return Err(refuse(format!("it holds {}", shown.join(", "))));
    }
    // A Nexus data directory: fine when it holds no data (a fresh install that started once).
    let lock = DataDir::open(target)?;
    let primary = Stores::open_primary(&import_config(config, target), target).await?;
    let mut held = Vec::new();
    let records = primary.records.stats().await?.items;
    if records > 0 {
        held.push(format!("{records} records"));
    }
    let auth = primary.auth.export().await?;
    if !auth.keys.is_empty() {
        held.push(format!("{} API keys", auth.keys.len()));
    }
    let projects: Vec<&TenantId> =
        auth.projects.iter().map(|p| &p.id).filter(|id| id.as_str() != TenantId::DEFAULT).collect();
    if !projects.is_empty() {
        held.push(format!("{} projects", projects.len()));
    }
    let jobs = primary.jobs.export().await?.len();
    if jobs > 0 {
        held.push(format!("{jobs} jobs"));
    }
    let files = primary.objects.list(&TenantId::default_tenant(), "").await?.len();
    if files > 0 {
        held.push(format!("{files} files"));
    }
    if !held.is_empty() {
        return Err(refuse(format!("a Nexus data directory with {}", held.join(", "))));
    }
    let master_key = match std::fs::read(target.join(crate::auth::MASTER_KEY_FILE)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Target::EmptyInstall { _lock: lock, master_key })
}

#[allow(clippy::too_many_arguments)]
async fn import_into(
    config: &Config,
    file: &Path,
    target: &Path,
    state: Target,
    info: &Info,
    embedder: std::sync::Arc<dyn crate::embed::Embedder>,
    scratch: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(u64, u64, bool)> {
    // 2. Read and check the whole file.
    progress(Progress { step: "check", done: 0, total: 1 });
    let unpacked = scratch.join("dump");
    let (from, into) = (file.to_path_buf(), unpacked.clone());
    crate::store::blocking(move || super::archive::unpack(&from, &into)).await?;
    let again = Info::read(file)?;
    if &again != info {
        return Err(super::archive::invalid("the dump's header changed while it was read: refused"));
    }
    let reader = Reader::new(info, &unpacked);

    // 3. The new data directory.
    let data = scratch.join("data");
    let build = import_config(config, &data);
    let dir = DataDir::open(&data)?;
    crate::embed::identity::ensure_matches(&data, embedder.identity())?;
    let stores = Stores::open(&build, &dir).await?;
    let objects = fill(&reader, info, &stores, progress).await?;
    progress(Progress { step: "project", done: 0, total: 1 });
    let embed = EmbedService::start(embedder, &build.embed);
    let writes = WriteLog::start(&stores, &build.indexer, &build.cluster, embed).await?;
    let head = stores.records.head_seq().await?;
    let waiting = Instant::now();
    let mut projected = true;
    for indexer in writes.indexers() {
        while !indexer.wait_visible(head, Duration::from_secs(2)).await {
            progress(Progress { step: "project", done: indexer.visible_seq(), total: head });
            if waiting.elapsed() > PROJECT_WAIT {
                projected = false;
                break;
            }
        }
    }
    let mut persisted = Ok(());
    for indexer in writes.indexers() {
        if let Err(e) = indexer.persist().await {
            persisted = Err(e);
        }
    }
    let projections: Vec<_> = writes.indexers().iter().map(|i| i.projection.clone()).collect();
    let report = crate::writelog::check::check(&*stores.records, &projections).await;
    writes.shutdown().await;
    persisted?;
    let report = report?;
    if !projected || !report.ok {
        return Err(Error::new(
            ErrorCode::StoreFailure,
            format!(
                "the derived stores do not agree with the imported records: {}",
                report.to_text().lines().take(6).collect::<Vec<_>>().join(" / ")
            ),
        ));
    }
    drop(projections);
    drop(stores);
    drop(dir);
    let _ = std::fs::remove_file(data.join("nexus.lock"));

    // 4. Into place.
    let replaced = match state {
        Target::Absent | Target::EmptyDir => {
            // rename(2) replaces an empty directory.
            std::fs::rename(&data, target)?;
            false
        }
        Target::EmptyInstall { _lock, master_key } => {
            if let Some(key) = master_key {
                use std::os::unix::fs::OpenOptionsExt;
                let mut out = std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(data.join(crate::auth::MASTER_KEY_FILE))?;
                std::io::Write::write_all(&mut out, &key)?;
                out.sync_all()?;
            }
            std::fs::File::open(&data)?.sync_all()?;
            crate::backup::restore::exchange(&data, target)?;
            // `data` is now the empty install; the scratch directory goes with it.
            true
        }
    };
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok((objects, report.records, replaced))
}

/// Writes everything the dump holds into `stores`; checks the counts against the header.
/// Returns the number of original files.
async fn fill(
    reader: &Reader,
    info: &Info,
    stores: &Stores,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<u64> {
    let expected = &info.counts;
    let mismatch = |what: &str, said: u64, held: u64| {
        super::archive::invalid(format!("the dump's header says {said} {what}, the dump holds {held}: refused"))
    };

    progress(Progress { step: "auth", done: 0, total: 1 });
    let mut auth = AuthExport::default();
    for line in reader.lines(Kind::Orgs)? {
        auth.orgs.push(reader.org(&line?)?);
    }
    for line in reader.lines(Kind::Projects)? {
        auth.projects.push(reader.project(&line?)?);
    }
    for line in reader.lines(Kind::Keys)? {
        auth.keys.push(reader.key(&line?)?);
    }
    for (what, said, held) in [
        ("organisations", expected.orgs, auth.orgs.len()),
        ("projects", expected.projects, auth.projects.len()),
        ("keys", expected.keys, auth.keys.len()),
    ] {
        if said != held as u64 {
            return Err(mismatch(what, said, held as u64));
        }
    }
    stores.auth.import(&auth).await?;
    let mut audit = Vec::new();
    let mut audited = 0u64;
    for line in reader.lines(Kind::Audit)? {
        audit.push(reader.audit(&line?)?);
        if audit.len() == AUDIT_PAGE {
            audited += audit.len() as u64;
            stores.auth.import_audit(&std::mem::take(&mut audit)).await?;
        }
    }
    audited += audit.len() as u64;
    stores.auth.import_audit(&audit).await?;
    if audited != expected.audit {
        return Err(mismatch("audit entries", expected.audit, audited));
    }

    let mut page = Vec::with_capacity(PAGE);
    let mut by_tenant: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> = Default::default();
    let (mut records, mut vectors) = (0u64, 0u64);
    for line in reader.lines(Kind::Records)? {
        let record = reader.record(&line?)?;
        if let (Some(vector), Some(embedder)) = (&record.vector, &info.embedder)
            && vector.len() != embedder.dimensions
        {
            return Err(super::archive::invalid(format!(
                "record {}/{} has a vector of {} dimensions, the dump's embedder makes {}: refused",
                record.tenant,
                record.id,
                vector.len(),
                embedder.dimensions
            )));
        }
        records += 1;
        vectors += u64::from(record.vector.is_some());
        *by_tenant.entry(record.tenant.to_string()).or_default().entry(record.kind.clone()).or_default() += 1;
        page.push(record);
        if page.len() == PAGE {
            stores.records.import(std::mem::take(&mut page)).await?;
            progress(Progress { step: "records", done: records, total: expected.records });
        }
    }
    if !page.is_empty() {
        stores.records.import(page).await?;
    }
    progress(Progress { step: "records", done: records, total: expected.records });
    if records != expected.records || by_tenant != expected.records_by_tenant {
        return Err(mismatch("records", expected.records, records));
    }
    if vectors != expected.vectors {
        return Err(mismatch("vectors", expected.vectors, vectors));
    }
    let stored = stores.records.stats().await?.items;
    if stored != records {
        return Err(Error::new(
            ErrorCode::StoreFailure,
            format!("{records} records were imported but the record store holds {stored}: two share a tenant and id"),
        ));
    }

    let mut jobs = Vec::new();
    for line in reader.lines(Kind::Jobs)? {
        jobs.push(reader.job(&line?)?);
    }
    if jobs.len() as u64 != expected.jobs {
        return Err(mismatch("jobs", expected.jobs, jobs.len() as u64));
    }
    stores.jobs.import(&jobs).await?;

    let entries: Vec<_> = reader.lines(Kind::Objects)?.map(|line| reader.object(&line?)).collect::<Result<_>>()?;
    let total = entries.len() as u64;
    for (i, entry) in entries.iter().enumerate() {
        let tenant = TenantId::new(entry.tenant.clone())
            .map_err(|e| super::archive::invalid(format!("objects.jsonl: {}", e.message)))?;
        let path = reader.object_path(entry)?;
        let file = tokio::fs::File::open(&path).await.map_err(|_| {
            super::archive::invalid(format!("objects.jsonl names `{}`, which the dump lacks: refused", entry.path))
        })?;
        let written = stores.objects.put(&tenant, &entry.key, file_stream(file)).await?;
        let sha256 = match written.sha256 {
            Some(hash) => hash,
            None => stores.objects.content_hash(&tenant, &entry.key).await?,
        };
        if sha256 != entry.sha256 || written.size != entry.size {
            return Err(super::archive::invalid(format!(
                "file {}/{} does not match its SHA-256 or size in objects.jsonl: refused",
                entry.tenant, entry.key
            )));
        }
        progress(Progress { step: "files", done: i as u64 + 1, total });
    }
    Ok(total)
}

/// A file as a stream of 1 MB pieces.
fn file_stream(file: tokio::fs::File) -> ByteStream {
    futures::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buffer = vec![0u8; 1 << 20];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}
