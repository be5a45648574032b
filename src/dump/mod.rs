//! Portable dumps: `nexus dump --to FILE` and `nexus import FILE --data-dir DIR`.
//!
//! A dump is the primary data — records (memories with their history, documents and chunks,
//! entities, relations, with their keys, versions, times and vectors), organisations, projects,
//! API keys (hashes only), the audit log, jobs and original files — in a versioned format that
//! does not depend on any storage engine (docs/dump-format.md). It is how data moves to a later
//! Nexus whose data directory format changed, or to another machine; a backup (`crate::backup`)
//! is the faster copy for the same version.
//!
//! - `write`: takes a dump from any configured record store. An appliance whose data directory a
//!   server holds is read from a consistent copy of its record database
//!   ([`crate::store::records::RecordStore::backup_into`]), because reading the live database
//!   page by page would see writes made in between; a free one is locked and read directly; a
//!   cluster's stores are read through the store traits, then the changes logged meanwhile are
//!   applied (as `nexus migrate` does).
//! - `import`: checks the whole file, then builds a new data directory beside the target from
//!   it, lets the indexers project the derived stores (nothing is embedded again: vectors travel
//!   with the records, and the configured embedder must be the one that made them), checks
//!   record against derived stores and moves the directory into place.
//! - Reading: one module per format version with its frozen types (`v1`), [`Reader`] dispatches a
//!   dump's lines to the module of its format, and older formats are upgraded step by step
//!   (v1 → v2 → …) into the current in-memory model. A dump of a newer format is refused, naming
//!   the Nexus version that wrote it.

pub mod archive;
mod base64;
pub mod import;
pub mod v1;
pub mod write;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::embed::EmbedderIdentity;
use crate::error::Result;
use crate::store::auth::{AuditEntry, Org, Project, StoredKey};
use crate::store::jobs::Job;
use crate::store::records::Record;
use archive::invalid;

/// The format this build writes, and the newest it reads.
pub const CURRENT_FORMAT: u32 = v1::FORMAT;
/// The oldest format this build reads. Never raised: every released format stays readable.
pub const OLDEST_FORMAT: u32 = 1;

/// What a dump says about itself, in the current model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Info {
    pub dump_format: u32,
    pub nexus_version: String,
    pub created_at: DateTime<Utc>,
    pub source: String,
    pub seq: u64,
    pub embedder: Option<EmbedderIdentity>,
    pub counts: Counts,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub records: u64,
    pub records_by_tenant: BTreeMap<String, BTreeMap<String, u64>>,
    pub vectors: u64,
    pub orgs: u64,
    pub projects: u64,
    pub keys: u64,
    pub audit: u64,
    pub jobs: u64,
    pub objects: u64,
    pub object_bytes: u64,
}

impl Info {
    fn from_v1(h: v1::Header) -> Info {
        let c = h.counts;
        Info {
            dump_format: h.dump_format,
            nexus_version: h.nexus_version,
            created_at: h.created_at,
            source: h.source,
            seq: h.seq,
            embedder: h.embedder.map(v1::Embedder::into_current),
            counts: Counts {
                records: c.records,
                records_by_tenant: c.records_by_tenant,
                vectors: c.vectors,
                orgs: c.orgs,
                projects: c.projects,
                keys: c.keys,
                audit: c.audit,
                jobs: c.jobs,
                objects: c.objects,
                object_bytes: c.object_bytes,
            },
        }
    }

    /// Reads and checks a dump's header (its first entry), refusing what this build cannot read.
    pub fn read(path: &Path) -> Result<Info> {
        Info::parse(path, archive::read_header(path)?)
    }

    fn parse(path: &Path, value: serde_json::Value) -> Result<Info> {
        if value["kind"] != v1::KIND {
            return Err(invalid(format!(
                "{} is not a Nexus dump (its {} has no `kind: {}`)",
                path.display(),
                v1::HEADER,
                v1::KIND
            )));
        }
        let format = value["dump_format"].as_u64().unwrap_or(0);
        if format > u64::from(CURRENT_FORMAT) {
            return Err(invalid(format!(
                "{} has dump format {format}, newer than this nexus reads (formats {OLDEST_FORMAT} to \
                 {CURRENT_FORMAT}): import it with Nexus {} or newer",
                path.display(),
                value["nexus_version"].as_str().unwrap_or("?")
            )));
        }
        match format {
            1 => {
                let header: v1::Header = serde_json::from_value(value)
                    .map_err(|e| invalid(format!("the dump's {} is malformed ({e}): refused", v1::HEADER)))?;
                if header.vector_encoding != v1::VECTOR_ENCODING {
                    return Err(invalid(format!(
                        "the dump's vectors are encoded as `{}`, format 1 knows only `{}`: refused",
                        header.vector_encoding,
                        v1::VECTOR_ENCODING
                    )));
                }
                Ok(Info::from_v1(header))
            }
            _ => Err(invalid(format!("{} has no valid dump_format: refused", path.display()))),
        }
    }
}

/// Reads an unpacked dump's files into the current model, whatever their format: each line is
/// parsed by its format's frozen types and upgraded along the chain.
pub struct Reader {
    format: u32,
    root: PathBuf,
}

/// The lines of one JSONL file, numbered from 1.
pub struct Lines {
    name: &'static str,
    inner: std::io::Split<std::io::BufReader<std::fs::File>>,
    number: usize,
}

impl Iterator for Lines {
    type Item = Result<(usize, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.inner.next()? {
                Ok(line) => line,
                Err(e) => return Some(Err(e.into())),
            };
            self.number += 1;
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(Ok((self.number, line)));
            }
        }
    }
}

impl Lines {
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Reader {
    pub fn new(info: &Info, root: &Path) -> Reader {
        Reader { format: info.dump_format, root: root.to_path_buf() }
    }

    /// The file of each kind (every format so far uses format 1's names; a format that renames
    /// one matches on `self.format` here).
    fn file(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::Orgs => v1::ORGS,
            Kind::Projects => v1::PROJECTS,
            Kind::Keys => v1::KEYS,
            Kind::Audit => v1::AUDIT,
            Kind::Records => v1::RECORDS,
            Kind::Jobs => v1::JOBS,
            Kind::Objects => v1::OBJECTS,
        }
    }

    pub fn lines(&self, kind: Kind) -> Result<Lines> {
        let name = self.file(kind);
        let file = std::fs::File::open(self.root.join(name))
            .map_err(|_| invalid(format!("the dump has no {name}: refused")))?;
        Ok(Lines { name, inner: std::io::BufReader::with_capacity(1 << 20, file).split(b'\n'), number: 0 })
    }

    /// Where an object's bytes are, from its `objects.jsonl` line.
    pub fn object_path(&self, object: &ObjectEntry) -> Result<PathBuf> {
        let path = Path::new(&object.path);
        let plain = path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || !object.path.starts_with(v1::OBJECT_PREFIX) {
            return Err(invalid(format!("objects.jsonl names `{}`, not a file of the dump: refused", object.path)));
        }
        Ok(self.root.join(path))
    }

    fn parse<T, V: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        line: &(usize, Vec<u8>),
        into: impl FnOnce(V) -> Result<T>,
    ) -> Result<T> {
        let (number, bytes) = line;
        match self.format {
            1 => v1::parse::<V>(what, bytes).and_then(into),
            f => Err(invalid(format!("no reader for dump format {f}"))),
        }
        .map_err(|e| invalid(format!("{} (line {number})", e.message)))
    }

    pub fn org(&self, line: &(usize, Vec<u8>)) -> Result<Org> {
        self.parse("organisation", line, v1::OrgLine::into_current)
    }

    pub fn project(&self, line: &(usize, Vec<u8>)) -> Result<Project> {
        self.parse("project", line, v1::ProjectLine::into_current)
    }

    pub fn key(&self, line: &(usize, Vec<u8>)) -> Result<StoredKey> {
        self.parse("key", line, v1::KeyLine::into_current)
    }

    pub fn audit(&self, line: &(usize, Vec<u8>)) -> Result<AuditEntry> {
        self.parse("audit entry", line, v1::AuditLine::into_current)
    }

    pub fn record(&self, line: &(usize, Vec<u8>)) -> Result<Record> {
        self.parse("record", line, v1::Record::into_current)
    }

    pub fn job(&self, line: &(usize, Vec<u8>)) -> Result<Job> {
        self.parse("job", line, v1::JobLine::into_current)
    }

    pub fn object(&self, line: &(usize, Vec<u8>)) -> Result<ObjectEntry> {
        self.parse("object", line, |o: v1::ObjectLine| {
            Ok(ObjectEntry { tenant: o.tenant, key: o.key, size: o.size, sha256: o.sha256, path: o.path })
        })
    }
}

/// What a dump holds, kind by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Orgs,
    Projects,
    Keys,
    Audit,
    Records,
    Jobs,
    Objects,
}

/// An original file in a dump, in the current model.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectEntry {
    pub tenant: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub path: String,
}
