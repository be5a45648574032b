//! Dump format 1, frozen: these types are what a format-1 dump holds, field for field, and they
//! never change once released (docs/dump-format.md describes them). Nexus writes this format
//! while it is the newest; when format 2 arrives, `v2.rs` gets its own types, this file keeps
//! its readers and gains `upgrade` functions into v2, and only the newest format converts into the
//! in-memory model.
//!
//! Readers never use `deny_unknown_fields`: a field a later writer added is ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::TenantId;
use crate::store::auth::{AuditEntry, AuditEvent, Org, Project, Scope, StoredKey};
use crate::store::jobs::{Job as StoreJob, JobState};
use crate::store::records::{GraphItem, Record as StoreRecord};

pub const FORMAT: u32 = 1;

/// The first entry: what the dump is.
pub const HEADER: &str = "DUMP.json";
/// The last entry: every other entry's size and SHA-256.
pub const MANIFEST: &str = "MANIFEST.json";
pub const ORGS: &str = "auth/orgs.jsonl";
pub const PROJECTS: &str = "auth/projects.jsonl";
pub const KEYS: &str = "auth/keys.jsonl";
pub const AUDIT: &str = "auth/audit.jsonl";
pub const RECORDS: &str = "records.jsonl";
pub const JOBS: &str = "jobs.jsonl";
/// The index of the original files, after them.
pub const OBJECTS: &str = "objects.jsonl";
/// Original files are stored as `objects/<tenant>/<key>`.
pub const OBJECT_PREFIX: &str = "objects/";

/// The JSONL files, in the order they are written (after the header, before the files).
pub const JSONL_FILES: [&str; 6] = [ORGS, PROJECTS, KEYS, AUDIT, RECORDS, JOBS];

/// `kind` of every dump header.
pub const KIND: &str = "nexus-dump";
/// How vectors are written: the little-endian bytes of each `f32`, in standard base64.
pub const VECTOR_ENCODING: &str = "f32le-base64";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub kind: String,
    pub dump_format: u32,
    pub nexus_version: String,
    pub created_at: DateTime<Utc>,
    /// Where the data came from, for people (no secrets).
    pub source: String,
    /// The source's change-log position the dump holds: every change up to it is in the dump.
    pub seq: u64,
    /// Which embedder made the vectors; `null` when the records carry none.
    pub embedder: Option<Embedder>,
    pub vector_encoding: String,
    pub counts: Counts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embedder {
    pub provider: String,
    pub model: String,
    pub dimensions: usize,
    pub version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub records: u64,
    /// Records per tenant, then per kind.
    pub records_by_tenant: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records that carry a vector.
    pub vectors: u64,
    pub orgs: u64,
    pub projects: u64,
    pub keys: u64,
    pub audit: u64,
    pub jobs: u64,
    /// Original files listed when the dump started.
    pub objects: u64,
    pub object_bytes: u64,
}

/// One line of `records.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: u64,
    pub tenant: String,
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// [`VECTOR_ENCODING`].
    pub vector: Option<String>,
    pub graph: Option<Graph>,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub embed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Graph {
    Node { label: String, name: String },
    Edge { label: String, source: String, target: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrgLine {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectLine {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyLine {
    pub id: String,
    pub project: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the whole key (`nxs_<id>_<secret>`); the secret itself is never stored.
    pub secret_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditLine {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub principal: String,
    pub key_id: Option<String>,
    pub tenant: Option<String>,
    pub method: String,
    pub route: String,
    pub object_id: Option<String>,
    pub status: u16,
    pub client: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobLine {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub run_after: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of `objects.jsonl`: an original file and where it is in the dump.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectLine {
    pub tenant: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub last_modified: DateTime<Utc>,
    /// The entry holding its bytes: `objects/<tenant>/<key>`.
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

fn bad(what: &str, detail: impl std::fmt::Display) -> Error {
    super::archive::invalid(format!("the dump holds a malformed {what} ({detail}): refused"))
}

fn tenant(what: &str, id: &str) -> Result<TenantId> {
    TenantId::new(id).map_err(|e| bad(what, e.message))
}

pub fn encode_vector(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    super::base64::encode(&bytes)
}

pub fn decode_vector(text: &str) -> Result<Vec<f32>> {
    let bytes = super::base64::decode(text).ok_or_else(|| bad("vector", "not base64"))?;
    if !bytes.len().is_multiple_of(4) {
        return Err(bad("vector", "its length is not a whole number of f32"));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

impl Record {
    pub fn from_current(r: &StoreRecord) -> Record {
        Record {
            key: r.key,
            tenant: r.tenant.to_string(),
            id: r.id.clone(),
            kind: r.kind.clone(),
            title: r.title.clone(),
            body: r.body.clone(),
            tags: r.tags.clone(),
            metadata: r.metadata.clone(),
            vector: r.vector.as_deref().map(encode_vector),
            graph: r.graph.as_ref().map(|g| match g.clone() {
                GraphItem::Node { label, name } => Graph::Node { label, name },
                GraphItem::Edge { label, source, target } => Graph::Edge { label, source, target },
            }),
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            embed: r.embed,
        }
    }

    pub fn into_current(self) -> Result<StoreRecord> {
        Ok(StoreRecord {
            key: self.key,
            tenant: tenant("record", &self.tenant)?,
            id: self.id,
            kind: self.kind,
            title: self.title,
            body: self.body,
            tags: self.tags,
            metadata: self.metadata,
            vector: self.vector.as_deref().map(decode_vector).transpose()?,
            graph: self.graph.map(|g| match g {
                Graph::Node { label, name } => GraphItem::Node { label, name },
                Graph::Edge { label, source, target } => GraphItem::Edge { label, source, target },
            }),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            embed: self.embed,
        })
    }
}

impl OrgLine {
    pub fn from_current(o: &Org) -> OrgLine {
        OrgLine { id: o.id.clone(), name: o.name.clone(), created_at: o.created_at }
    }

    pub fn into_current(self) -> Result<Org> {
        Ok(Org { id: self.id, name: self.name, created_at: self.created_at })
    }
}

impl ProjectLine {
    pub fn from_current(p: &Project) -> ProjectLine {
        ProjectLine { id: p.id.to_string(), org_id: p.org_id.clone(), name: p.name.clone(), created_at: p.created_at }
    }

    pub fn into_current(self) -> Result<Project> {
        Ok(Project {
            id: tenant("project", &self.id)?,
            org_id: self.org_id,
            name: self.name,
            created_at: self.created_at,
        })
    }
}

impl KeyLine {
    pub fn from_current(k: &StoredKey) -> KeyLine {
        KeyLine {
            id: k.key.id.clone(),
            project: k.key.project.to_string(),
            name: k.key.name.clone(),
            scopes: k.key.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            created_at: k.key.created_at,
            expires_at: k.key.expires_at,
            revoked_at: k.key.revoked_at,
            last_used_at: k.key.last_used_at,
            secret_sha256: hex::encode(k.secret_hash),
        }
    }

    pub fn into_current(self) -> Result<StoredKey> {
        let hash = hex::decode(&self.secret_sha256).ok().and_then(|h| <[u8; 32]>::try_from(h).ok());
        let secret_hash = hash.ok_or_else(|| bad("key", "secret_sha256 is not 64 hex digits"))?;
        let scopes = self
            .scopes
            .iter()
            .map(|s| Scope::parse(s).ok_or_else(|| bad("key", format!("unknown scope `{s}`"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(StoredKey {
            key: crate::store::auth::ApiKey {
                id: self.id,
                project: tenant("key", &self.project)?,
                name: self.name,
                scopes,
                created_at: self.created_at,
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
                last_used_at: self.last_used_at,
            },
            secret_hash,
        })
    }
}

impl AuditLine {
    pub fn from_current(e: &AuditEntry) -> AuditLine {
        let v = &e.event;
        AuditLine {
            seq: e.seq,
            at: v.at,
            principal: v.principal.clone(),
            key_id: v.key_id.clone(),
            tenant: v.tenant.as_ref().map(|t| t.to_string()),
            method: v.method.clone(),
            route: v.route.clone(),
            object_id: v.object_id.clone(),
            status: v.status,
            client: v.client.clone(),
        }
    }

    pub fn into_current(self) -> Result<AuditEntry> {
        Ok(AuditEntry {
            seq: self.seq,
            event: AuditEvent {
                at: self.at,
                principal: self.principal,
                key_id: self.key_id,
                tenant: self.tenant.as_deref().map(|t| tenant("audit entry", t)).transpose()?,
                method: self.method,
                route: self.route,
                object_id: self.object_id,
                status: self.status,
                client: self.client,
            },
        })
    }
}

impl JobLine {
    pub fn from_current(j: &StoreJob) -> JobLine {
        JobLine {
            id: j.id.clone(),
            tenant: j.tenant.to_string(),
            kind: j.kind.clone(),
            payload: j.payload.clone(),
            state: j.state.as_str().to_string(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            progress: j.progress.clone(),
            result: j.result.clone(),
            error: j.error.clone(),
            error_code: j.error_code.clone(),
            run_after: j.run_after,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }

    pub fn into_current(self) -> Result<StoreJob> {
        Ok(StoreJob {
            state: JobState::parse(&self.state).ok_or_else(|| bad("job", format!("unknown state `{}`", self.state)))?,
            id: self.id,
            tenant: tenant("job", &self.tenant)?,
            kind: self.kind,
            payload: self.payload,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            progress: self.progress,
            result: self.result,
            error: self.error,
            error_code: self.error_code,
            run_after: self.run_after,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Embedder {
    pub fn from_current(e: &crate::embed::EmbedderIdentity) -> Embedder {
        Embedder {
            provider: e.provider.clone(),
            model: e.model.clone(),
            dimensions: e.dimensions,
            version: e.version.clone(),
        }
    }

    pub fn into_current(self) -> crate::embed::EmbedderIdentity {
        crate::embed::EmbedderIdentity {
            provider: self.provider,
            model: self.model,
            dimensions: self.dimensions,
            version: self.version,
        }
    }
}

/// Parses one JSON line of a format-1 file as `T`.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, line: &[u8]) -> Result<T> {
    serde_json::from_slice(line).map_err(|e| bad(what, e))
}
