//! Taking a dump: the primary stores into the current dump format.
//!
//! Staging: the JSONL files are written into `.<file>.dump-<id>` beside the dump file first (the
//! tar entries need their sizes up front), then streamed into the dump with the original files,
//! which are read from the object store as they go in; the staging directory is removed at the end.
//!
//! Consistency: the records, change log, auth and jobs are read from one state of the record
//! store. An appliance served by a running server is read from a consistent copy of its record
//! database (SQLite's online backup: one read transaction, writers go on), taken into the staging
//! directory. Reading the live database page by page instead would mix states: a memory and its
//! history entry written between two pages could land half. A free data directory is locked (no
//! server starts meanwhile) and read directly. A cluster's record store is read in key order and
//! the changes logged meanwhile are then applied with each record's state now, so the dump holds
//! every change up to its position `seq` (later ones may be in it too). Original files are read
//! after the record: one deleted meanwhile is left out and reported.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::archive::Writer;
use super::{Info, v1};
use crate::config::{Config, RecordsBackend};
use crate::datadir::{DataDir, Holder};
use crate::error::{Error, ErrorCode, Result};
use crate::store::objects::{ByteStream, ObjectInfo, ObjectStore};
use crate::store::records::Record;
use crate::store::{Primary, Stores, TenantId};

/// Records read per page.
const PAGE: usize = 1000;
/// Audit entries read per page.
const AUDIT_PAGE: usize = 5000;

/// What a finished dump reports.
#[derive(Clone, Debug, Serialize)]
pub struct Dumped {
    pub path: String,
    /// Size of the dump file.
    pub size: u64,
    pub sha256: String,
    #[serde(flatten)]
    pub info: Info,
    /// Original files in the dump.
    pub objects: u64,
    /// Whether the records were read from a consistent copy (a server held the data directory).
    pub from_copy: bool,
    pub notes: Vec<String>,
    pub took_ms: u64,
}

/// A step of a running dump, for progress displays.
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: &'static str,
    pub done: u64,
    pub total: u64,
}

/// The primary stores a dump reads, and what holds them.
struct Source {
    primary: Primary,
    shown: String,
    embedder: Option<crate::embed::EmbedderIdentity>,
    from_copy: bool,
    /// Held while no server runs there, so none starts during the dump.
    _lock: Option<DataDir>,
}

/// Takes a dump of the stores `config` names into the file `to` (or a new file in the directory
/// `to`); returns what it wrote.
pub async fn dump(config: &Config, to: &Path, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<Dumped> {
    let started = Instant::now();
    let to = std::path::absolute(to)?;
    let to = if to.is_dir() { to.join(default_name()) } else { to };
    if to.exists() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("{} exists; choose another file name or remove it first", to.display()),
        ));
    }
    let parent = to.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    if !parent.is_dir() {
        return Err(Error::invalid(format!("{} does not exist: create it or choose another place", parent.display())));
    }
    let name = to.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    clear_interrupted(&parent, &name)?;
    let staging = parent.join(format!(".{name}.dump-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()));
    std::fs::create_dir(&staging).map_err(|e| Error::invalid(format!("cannot write beside {}: {e}", to.display())))?;
    let outcome = dump_via(config, &to, &staging, started, progress).await;
    let _ = std::fs::remove_dir_all(&staging);
    outcome
}

/// Removes what an interrupted dump to `parent/name` left behind (its staging directory and
/// `name.partial`), and refuses while another dump to the same file is still running. A staging
/// directory is named `.<name>.dump-<pid>-<id>` after the process writing it.
fn clear_interrupted(parent: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.dump-");
    let mut left = Vec::new();
    for entry in std::fs::read_dir(parent)?.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = file_name.strip_prefix(&prefix) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = pid.filter(|&pid| process_runs(pid)) {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "another dump to {} is running (pid {pid}); wait for it or choose another file name",
                    parent.join(name).display()
                ),
            ));
        }
        left.push(entry.path());
    }
    let partial = super::archive::partial_path(&parent.join(name));
    if partial.exists() {
        left.push(partial);
    }
    for path in left {
        tracing::info!(path = %path.display(), "removing what an interrupted dump left");
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(|e| {
            Error::invalid(format!("cannot remove {} (left by an interrupted dump): {e}", path.display()))
        })?;
    }
    Ok(())
}

/// Whether a process with this id exists (signal 0 checks without sending anything).
fn process_runs(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn default_name() -> String {
    format!("nexus-{}.dump.tar.zst", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))
}

async fn dump_via(
    config: &Config,
    to: &Path,
    staging: &Path,
    started: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Dumped> {
    let source = open_source(config, staging).await?;
    let primary = &source.primary;

    // Auth, audit, jobs.
    progress(Progress { step: "auth", done: 0, total: 1 });
    let auth = primary.auth.export().await?;
    let mut counts = v1::Counts {
        orgs: write_jsonl(&staging.join(v1::ORGS), auth.orgs.iter().map(v1::OrgLine::from_current))?,
        projects: write_jsonl(&staging.join(v1::PROJECTS), auth.projects.iter().map(v1::ProjectLine::from_current))?,
        keys: write_jsonl(&staging.join(v1::KEYS), auth.keys.iter().map(v1::KeyLine::from_current))?,
        ..Default::default()
    };
    let mut audit = JsonlWriter::create(&staging.join(v1::AUDIT))?;
    let mut after = 0;
    loop {
        let page = primary.auth.audit_after(after, AUDIT_PAGE).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        for entry in &page {
            audit.push(&v1::AuditLine::from_current(entry))?;
        }
        after = last;
    }
    counts.audit = audit.finish()?;
    let jobs = primary.jobs.export().await?;
    counts.jobs = write_jsonl(&staging.join(v1::JOBS), jobs.iter().map(v1::JobLine::from_current))?;

    // Records, then the changes logged while they were read.
    let seq = write_records(primary, staging, &mut counts, progress).await?;

    // Original files: every project's.
    let mut tenants: std::collections::BTreeSet<TenantId> = auth.projects.iter().map(|p| p.id.clone()).collect();
    tenants.insert(TenantId::default_tenant());
    let mut listed: Vec<(TenantId, ObjectInfo)> = Vec::new();
    for tenant in tenants {
        for info in primary.objects.list(&tenant, "").await? {
            listed.push((tenant.clone(), info));
        }
    }
    counts.objects = listed.len() as u64;
    counts.object_bytes = listed.iter().map(|(_, info)| info.size).sum();

    let header = v1::Header {
        kind: v1::KIND.to_string(),
        dump_format: v1::FORMAT,
        nexus_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: chrono::Utc::now(),
        source: source.shown.clone(),
        seq,
        embedder: source.embedder.as_ref().map(v1::Embedder::from_current),
        vector_encoding: v1::VECTOR_ENCODING.to_string(),
        counts,
    };
    let header_json = serde_json::to_vec_pretty(&header).map_err(|e| Error::internal("encode the dump header", e))?;

    // The dump file, in a blocking thread (the files are read from the object store as they go in).
    let handle = tokio::runtime::Handle::current();
    let objects = primary.objects.clone();
    let (to_path, staging_dir) = (to.to_path_buf(), staging.to_path_buf());
    let total = listed.len() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let writing = crate::store::blocking(move || {
        let mut writer = Writer::create(&to_path)?;
        match fill(&mut writer, &header_json, &staging_dir, &handle, &*objects, &listed, &tx) {
            Ok(filled) => {
                let (size, sha256) = writer.finish()?;
                Ok((size, sha256, filled))
            }
            Err(e) => {
                writer.abandon();
                Err(e)
            }
        }
    });
    let forward = async {
        while let Some(done) = rx.recv().await {
            progress(Progress { step: "files", done, total });
        }
    };
    let (written, ()) = tokio::join!(writing, forward);
    let (size, sha256, (objects, notes)) = written?;
    Ok(Dumped {
        path: to.display().to_string(),
        size,
        sha256,
        info: Info::from_v1(header),
        objects,
        from_copy: source.from_copy,
        notes,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

async fn open_source(config: &Config, staging: &Path) -> Result<Source> {
    match config.store.records.backend {
        RecordsBackend::Sqlite => {
            let root = &config.data_dir;
            if !root.join("records").join("nexus.sqlite").is_file() {
                return Err(Error::new(
                    ErrorCode::DataDirInvalid,
                    format!(
                        "{} holds no Nexus data (no records/nexus.sqlite); pass the data directory with --data-dir",
                        root.display()
                    ),
                ));
            }
            if let Some(progress) = crate::embed::identity::read_progress(root)? {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!(
                        "re-embedding with {} is unfinished, so the vectors are of two embedders; finish it with \
                         `nexus reindex --store vectors`, then dump",
                        progress.target
                    ),
                ));
            }
            let embedder = crate::embed::identity::read(root)?;
            match DataDir::holder(root) {
                Holder::Free => {
                    let dir = DataDir::open(root)?;
                    let primary = Stores::open_primary(config, root).await?;
                    Ok(Source {
                        primary,
                        shown: format!("data directory {}", root.display()),
                        embedder,
                        from_copy: false,
                        _lock: Some(dir),
                    })
                }
                Holder::Held(info) => {
                    // SQLite in WAL mode is shared safely between processes: the copy is one read
                    // transaction on the live database while the server goes on writing.
                    let live = Stores::open_primary(config, root).await?;
                    let records_dir = staging.join("records");
                    std::fs::create_dir_all(&records_dir)?;
                    live.records.backup_into(&records_dir.join("nexus.sqlite")).await?;
                    drop(live.records);
                    let copy = Arc::new(
                        crate::store::records::sqlite::SqliteRecordStore::open(&records_dir, &config.store.records)
                            .await?,
                    );
                    let auth = Arc::new(crate::store::auth::sqlite::SqliteAuthStore::new(&copy));
                    Ok(Source {
                        primary: Primary { records: copy.clone(), auth, jobs: copy, objects: live.objects },
                        shown: format!("data directory {} (served by pid {})", root.display(), info.pid),
                        embedder,
                        from_copy: true,
                        _lock: None,
                    })
                }
            }
        }
        RecordsBackend::Postgres => {
            let primary = Stores::open_primary(config, &config.data_dir).await?;
            let embedder = crate::embed::open_embedder(&config.embed)?.identity().clone();
            Ok(Source {
                primary,
                shown: format!("cluster ({})", crate::migrate::describe(config)),
                embedder: Some(embedder),
                from_copy: false,
                _lock: None,
            })
        }
    }
}

/// Writes `records.jsonl` in key order and returns the change-log position it holds.
async fn write_records(
    primary: &Primary,
    staging: &Path,
    counts: &mut v1::Counts,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<u64> {
    let records = &primary.records;
    let total = records.stats().await?.items;
    let start = records.head_seq().await?;
    let scanned = staging.join("records.scan.jsonl");
    let mut out = JsonlWriter::create(&scanned)?;
    let mut after = 0;
    loop {
        let page = records.scan(after, PAGE).await?;
        let Some(last) = page.last().map(|r| r.key) else { break };
        for record in &page {
            out.push(&v1::Record::from_current(record))?;
        }
        after = last;
        progress(Progress { step: "records", done: out.count, total });
    }
    out.finish()?;
    // Changes logged meanwhile (none in a copy or a locked directory): each record's state now.
    let mut changed: BTreeMap<u64, Option<Record>> = BTreeMap::new();
    let mut seq = start;
    loop {
        let changes = records.changes_since(seq, PAGE).await?;
        let Some(last) = changes.last().map(|c| c.seq) else { break };
        for change in changes {
            changed.insert(change.key, change.record);
        }
        seq = last;
    }
    let (scanned_path, final_path) = (scanned.clone(), staging.join(v1::RECORDS));
    let merged = crate::store::blocking(move || merge(&scanned_path, changed, &final_path)).await?;
    let _ = std::fs::remove_file(&scanned);
    counts.records = merged.records;
    counts.vectors = merged.vectors;
    counts.records_by_tenant = merged.by_tenant;
    Ok(seq)
}

#[derive(Default)]
struct Merged {
    records: u64,
    vectors: u64,
    by_tenant: BTreeMap<String, BTreeMap<String, u64>>,
}

/// What `merge` reads of a scanned line.
#[derive(Deserialize)]
struct Head {
    key: u64,
    tenant: String,
    kind: String,
    vector: Option<serde::de::IgnoredAny>,
}

/// Where `merge` writes, counting.
struct MergeOut {
    writer: BufWriter<File>,
    merged: Merged,
}

impl MergeOut {
    fn line(&mut self, line: &[u8], tenant: &str, kind: &str, vector: bool) -> Result<()> {
        self.writer.write_all(line)?;
        self.writer.write_all(b"\n")?;
        self.merged.records += 1;
        self.merged.vectors += u64::from(vector);
        *self.merged.by_tenant.entry(tenant.to_string()).or_default().entry(kind.to_string()).or_default() += 1;
        Ok(())
    }

    fn record(&mut self, record: &Record) -> Result<()> {
        let line = serde_json::to_vec(&v1::Record::from_current(record)).map_err(|e| Error::internal("encode", e))?;
        self.line(&line, record.tenant.as_str(), &record.kind, record.vector.is_some())
    }
}

/// The scanned records with the changed ones replaced, removed or added, in key order.
fn merge(scanned: &Path, changed: BTreeMap<u64, Option<Record>>, out: &Path) -> Result<Merged> {
    let mut out = MergeOut { writer: BufWriter::with_capacity(1 << 20, File::create(out)?), merged: Merged::default() };
    let mut pending = changed.into_iter().peekable();
    for line in BufReader::with_capacity(1 << 20, File::open(scanned)?).split(b'\n') {
        let line = line?;
        let head: Head = serde_json::from_slice(&line).map_err(|e| Error::internal("read the staged records", e))?;
        while let Some((key, _)) = pending.peek()
            && *key < head.key
        {
            if let Some((_, Some(record))) = pending.next() {
                out.record(&record)?;
            }
        }
        if pending.peek().is_some_and(|(key, _)| *key == head.key) {
            if let Some((_, Some(record))) = pending.next() {
                out.record(&record)?;
            }
        } else {
            out.line(&line, &head.tenant, &head.kind, head.vector.is_some())?;
        }
    }
    for (_, record) in pending {
        if let Some(record) = record {
            out.record(&record)?;
        }
    }
    out.writer.flush()?;
    Ok(out.merged)
}

/// Fills the dump: header, JSONL files, original files, their index. Returns the files written
/// and notes.
fn fill(
    writer: &mut Writer,
    header: &[u8],
    staging: &Path,
    handle: &tokio::runtime::Handle,
    objects: &dyn ObjectStore,
    listed: &[(TenantId, ObjectInfo)],
    done: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(u64, Vec<String>)> {
    writer.add_bytes(v1::HEADER, header)?;
    for name in v1::JSONL_FILES {
        writer.add_file(name, &staging.join(name))?;
    }
    let mut index = Vec::new();
    let mut notes = Vec::new();
    for (i, (tenant, listed)) in listed.iter().enumerate() {
        let (info, stream) = match handle.block_on(objects.get(tenant, &listed.key)) {
            Ok(got) => got,
            Err(e) if e.code == ErrorCode::NotFound => {
                notes.push(format!("file {tenant}/{} was deleted while the dump ran: left out", listed.key));
                continue;
            }
            Err(e) => return Err(e),
        };
        let path = format!("{}{tenant}/{}", v1::OBJECT_PREFIX, listed.key);
        let mut reader = StreamReader { handle: handle.clone(), stream, buffer: bytes::Bytes::new() };
        let sha256 = writer.add(&path, info.size, &mut reader)?;
        index.push(v1::ObjectLine {
            tenant: tenant.to_string(),
            key: listed.key.clone(),
            size: info.size,
            sha256,
            last_modified: info.last_modified,
            path,
        });
        let _ = done.send(i as u64 + 1);
    }
    let mut lines = Vec::new();
    for line in &index {
        lines.extend(serde_json::to_vec(line).map_err(|e| Error::internal("encode", e))?);
        lines.push(b'\n');
    }
    writer.add_bytes(v1::OBJECTS, &lines)?;
    Ok((index.len() as u64, notes))
}

/// Reads an object's byte stream from a blocking thread.
struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: ByteStream,
    buffer: bytes::Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buffer.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(bytes)) => self.buffer = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buffer.len());
        out[..n].copy_from_slice(&self.buffer.split_to(n));
        Ok(n)
    }
}

/// One JSON value per line.
struct JsonlWriter {
    out: BufWriter<File>,
    count: u64,
}

impl JsonlWriter {
    fn create(path: &Path) -> Result<JsonlWriter> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(JsonlWriter { out: BufWriter::with_capacity(1 << 20, File::create(path)?), count: 0 })
    }

    fn push<T: Serialize>(&mut self, value: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, value).map_err(|e| Error::internal("encode a dump line", e))?;
        self.out.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        self.out.flush()?;
        Ok(self.count)
    }
}

fn write_jsonl<T: Serialize>(path: &Path, items: impl IntoIterator<Item = T>) -> Result<u64> {
    let mut out = JsonlWriter::create(path)?;
    for item in items {
        out.push(&item)?;
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a killed dump left (staging and `.partial`) goes before the next dump to that name;
    /// a dump still running there is refused, not clobbered.
    #[test]
    fn an_interrupted_dump_is_cleared_and_a_running_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".n.dump.tar.zst.dump-{dead}-0a1b"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("records.jsonl"), "{}").unwrap();
        std::fs::write(dir.path().join("n.dump.tar.zst.partial"), "half").unwrap();
        std::fs::write(dir.path().join("other.dump.tar.zst.partial"), "another file's").unwrap();
        clear_interrupted(dir.path(), "n.dump.tar.zst").unwrap();
        assert!(!stale.exists());
        assert!(!dir.path().join("n.dump.tar.zst.partial").exists());
        assert!(dir.path().join("other.dump.tar.zst.partial").exists(), "another name's file stays");

        let running = dir.path().join(format!(".n.dump.tar.zst.dump-{}-0c2d", std::process::id()));
        std::fs::create_dir(&running).unwrap();
        std::fs::write(dir.path().join("n.dump.tar.zst.partial"), "in progress").unwrap();
        let err = clear_interrupted(dir.path(), "n.dump.tar.zst").unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict, "{err}");
        assert!(err.to_string().contains("another dump"), "{err}");
        assert!(running.exists() && dir.path().join("n.dump.tar.zst.partial").exists(), "nothing removed");
    }

    fn record(key: u64, body: &str) -> Record {
        Record {
            key,
            tenant: TenantId::default_tenant(),
            id: format!("r{key}"),
            kind: if key.is_multiple_of(2) { "memory".into() } else { "note".into() },
            title: None,
            body: Some(body.into()),
            tags: vec![],
            metadata: serde_json::json!({}),
            vector: key.is_multiple_of(2).then(|| vec![0.5, -1.25]),
            graph: None,
            version: 1,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            embed: false,
        }
    }

    /// Changes logged while the records were read replace, remove and add records, in key order.
    #[test]
    fn merge_applies_changes_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let scanned = dir.path().join("scanned.jsonl");
        let mut out = JsonlWriter::create(&scanned).unwrap();
        for key in [1, 2, 3, 5] {
            out.push(&v1::Record::from_current(&record(key, "scanned"))).unwrap();
        }
        out.finish().unwrap();
        let changed: BTreeMap<u64, Option<Record>> = [
            (0, None),
            (2, None),
            (3, Some(record(3, "changed"))),
            (4, Some(record(4, "added"))),
            (6, Some(record(6, "added"))),
        ]
        .into_iter()
        .collect();
        let merged_path = dir.path().join("merged.jsonl");
        let merged = merge(&scanned, changed, &merged_path).unwrap();
        let lines: Vec<v1::Record> =
            std::fs::read_to_string(&merged_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let got: Vec<(u64, String)> = lines.iter().map(|r| (r.key, r.body.clone().unwrap())).collect();
        assert_eq!(
            got,
            [(1, "scanned"), (3, "changed"), (4, "added"), (5, "scanned"), (6, "added")]
                .map(|(k, b)| (k, b.to_string()))
                .to_vec()
        );
        assert_eq!(merged.records, 5);
        assert_eq!(merged.vectors, 2);
        assert_eq!(merged.by_tenant["default"]["note"], 3);
        assert_eq!(merged.by_tenant["default"]["memory"], 2);
        // Vectors survive the round trip bit for bit.
        assert_eq!(lines[2].clone().into_current().unwrap().vector, Some(vec![0.5, -1.25]));
    }
}
