//! A migration's verification: both sides read in full and compared, then a sample of searches.
//!
//! - Records: count and a content hash per tenant and kind. A record's hash covers every field
//!   (key, id, kind, title, body, tags, metadata with its keys sorted, vector bytes, graph item,
//!   version, times, embed flag); a group's hash is the wrapping sum of its records' hashes, so
//!   it does not depend on the order the sides return them in.
//! - Organisations, projects and keys field by field (a key's last use excepted: the source may
//!   still be serving), the audit log by count up to the last entry copied, jobs by id.
//! - Files: per tenant, each key with its size and SHA-256 read from both sides.
//! - The target's derived stores against its record store (`nexus check`).
//! - Searches: sampled memories and chunks, each searched by the start of its text in keyword,
//!   semantic and hybrid mode on both sides. Lists may differ where the target's engine differs
//!   (another BM25, another HNSW graph): the report gives how many top-10 lists are identical and
//!   their mean overlap. A difference is, on the same engines, a sampled record the source finds
//!   in its top 10 and the target does not; across engines (tantivy and Elasticsearch, usearch
//!   and Qdrant), one the source ranks first for its own words and the target not in its top 10.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Options, Progress, Source, Target};
use crate::error::Result;
use crate::search::{Fusion, Mode, SearchRequest};
use crate::store::records::{Record, RecordFilter};
use crate::store::{RecordKey, TenantId};
use crate::writelog::check::CheckReport;

const PAGE: usize = 2000;

/// How many words of a sampled record make its query.
const QUERY_WORDS: usize = 12;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    /// Records the bulk copy wrote in this run, their bytes (text, metadata, vectors) and time.
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindCount {
    pub tenant: String,
    pub kind: String,
    pub source: u64,
    pub target: u64,
    /// Same count and same content hash.
    pub same: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Compared {
    pub name: String,
    pub source: u64,
    pub target: u64,
    pub same: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchAgreement {
    pub mode: Mode,
    pub queries: usize,
    /// Queries whose top-10 lists are the same, in the same order.
    pub identical: usize,
    /// Mean share of the source's top 10 also in the target's.
    pub mean_overlap: f64,
    /// Sampled records the source ranks in its top 10 (first, when the engines differ), and how
    /// many of those the target has in its top 10.
    pub own_on_source: usize,
    pub own_on_target: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// No difference found.
    pub ok: bool,
    pub source: String,
    pub target: String,
    pub snapshot_seq: u64,
    pub applied_seq: u64,
    pub cutover: bool,
    pub seconds: f64,
    pub throughput: Throughput,
    pub records: Vec<KindCount>,
    pub auth: Vec<Compared>,
    pub files: Vec<Compared>,
    pub derived: Option<CheckReport>,
    pub searches: Vec<SearchAgreement>,
    pub differences: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("source    {}\ntarget    {}\n", self.source, self.target));
        let t = &self.throughput;
        if t.records > 0 {
            out.push_str(&format!(
                "copied    {} records, {:.1} MB in {:.1} s ({:.0} records/s, {:.1} MB/s)\n",
                t.records,
                t.bytes as f64 / 1e6,
                t.seconds,
                t.records as f64 / t.seconds.max(1e-9),
                t.bytes as f64 / 1e6 / t.seconds.max(1e-9)
            ));
        }
        out.push_str(&format!(
            "position  snapshot {}, applied through {}{}\n",
            self.snapshot_seq,
            self.applied_seq,
            if self.cutover { ", cut over" } else { "" }
        ));
        out.push_str("records   tenant / kind: source -> target\n");
        for k in &self.records {
            out.push_str(&format!(
                "          {} / {}: {} -> {}{}\n",
                k.tenant,
                k.kind,
                k.source,
                k.target,
                if k.same { "" } else { "  DIFFERS" }
            ));
        }
        for c in self.auth.iter().chain(&self.files) {
            out.push_str(&format!(
                "{:<9} {} -> {}{}\n",
                c.name,
                c.source,
                c.target,
                if c.same { "" } else { "  DIFFERS" }
            ));
        }
        if let Some(check) = &self.derived {
            for s in &check.stores {
                out.push_str(&format!(
                    "{:<9} {} expected, {} indexed ({}){}\n",
                    s.store,
                    s.expected,
                    s.indexed,
                    s.backend,
                    if s.ok { "" } else { "  DIVERGES" }
                ));
            }
        }
        for s in &self.searches {
            out.push_str(&format!(
                "search    {:<8} {} queries: {} identical top-10, mean overlap {:.3}, sampled record found {}/{}\n",
                format!("{:?}", s.mode).to_lowercase(),
                s.queries,
                s.identical,
                s.mean_overlap,
                s.own_on_target,
                s.own_on_source
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("note      {note}\n"));
        }
        for d in &self.differences {
            out.push_str(&format!("DIFFERENCE {d}\n"));
        }
        out.push_str(&format!(
            "{} in {:.1} s\n",
            if self.ok { "migration verified: no difference" } else { "migration FAILED verification" },
            self.seconds
        ));
        out
    }
}

/// JSON with object keys sorted, whatever order a store returns them in.
fn canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A record's content hash (see the module doc).
pub(super) fn record_hash(r: &Record) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(&r.key.to_le_bytes());
    field(r.tenant.as_str().as_bytes());
    field(r.id.as_bytes());
    field(r.kind.as_bytes());
    field(r.title.as_deref().unwrap_or("\u{0}none").as_bytes());
    field(r.body.as_deref().unwrap_or("\u{0}none").as_bytes());
    field(serde_json::json!(r.tags).to_string().as_bytes());
    let mut metadata = String::new();
    canonical(&r.metadata, &mut metadata);
    field(metadata.as_bytes());
    let vector: Vec<u8> = r.vector.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    field(if r.vector.is_some() { &vector } else { b"\0none" });
    let graph = r.graph.as_ref().map(|g| serde_json::to_value(g).unwrap_or_default());
    let mut graph_text = String::new();
    if let Some(g) = &graph {
        canonical(g, &mut graph_text);
    }
    field(graph_text.as_bytes());
    field(&r.version.to_le_bytes());
    field(&r.created_at.timestamp_micros().to_le_bytes());
    field(&r.updated_at.timestamp_micros().to_le_bytes());
    field(&[u8::from(r.embed)]);
    h.finalize().into()
}

#[derive(Default, Clone, Copy, PartialEq)]
struct Tally {
    count: u64,
    sum: (u128, u128),
}

impl Tally {
    fn add(&mut self, hash: [u8; 32]) {
        let (a, b) = hash.split_at(16);
        self.count += 1;
        self.sum.0 = self.sum.0.wrapping_add(u128::from_le_bytes(a.try_into().expect("16 bytes")));
        self.sum.1 = self.sum.1.wrapping_add(u128::from_le_bytes(b.try_into().expect("16 bytes")));
    }
}

type Tallies = BTreeMap<(String, String), Tally>;

/// Tallies every record of `records` (those of `tenant` only, when given); also returns the
/// keys of records a search can find by their text (memories, chunks), for sampling.
async fn tally(
    records: &dyn crate::store::records::RecordStore,
    tenant: Option<&TenantId>,
) -> Result<(Tallies, Vec<(RecordKey, TenantId, String)>)> {
    let mut tallies = Tallies::new();
    let mut searchable = Vec::new();
    let mut after = 0;
    loop {
        let page = records.scan(after, PAGE).await?;
        let Some(last) = page.last().map(|r| r.key) else { break };
        after = last;
        for r in page {
            if tenant.is_some_and(|t| t != &r.tenant) {
                continue;
            }
            tallies.entry((r.tenant.to_string(), r.kind.clone())).or_default().add(record_hash(&r));
            let findable =
                matches!(r.kind.as_str(), crate::memory::MEMORY_KIND | crate::knowledge::documents::CHUNK_KIND);
            if findable && r.body.as_deref().is_some_and(|b| b.split_whitespace().count() >= 3) {
                searchable.push((r.key, r.tenant.clone(), r.kind.clone()));
            }
        }
    }
    Ok((tallies, searchable))
}

/// `audit_through`: the last audit entry the migration copied (both sides are compared up to it:
/// a serving source and a serving cluster keep appending their own).
pub(super) async fn verify(
    source: &Source,
    target: &Target,
    options: &Options,
    progress: &Progress,
    audit_through: u64,
) -> Result<Report> {
    let mut report = Report::default();
    let tenant = source.tenant.as_ref();
    progress.step("verify", "records: counts and content hashes per tenant and kind");
    let (source_tallies, searchable) = tally(source.primary.records.as_ref(), tenant).await?;
    let (target_tallies, _) = tally(target.stores.records.as_ref(), None).await?;
    let groups: BTreeSet<&(String, String)> = source_tallies.keys().chain(target_tallies.keys()).collect();
    for group in groups {
        let s = source_tallies.get(group).copied().unwrap_or_default();
        let t = target_tallies.get(group).copied().unwrap_or_default();
        let same = s == t;
        if !same {
            report.differences.push(format!(
                "records of tenant {} kind {}: {} on the source, {} on the target{}",
                group.0,
                group.1,
                s.count,
                t.count,
                if s.count == t.count { " (same count, different content)" } else { "" }
            ));
        }
        report.records.push(KindCount {
            tenant: group.0.clone(),
            kind: group.1.clone(),
            source: s.count,
            target: t.count,
            same,
        });
    }

    progress.step("verify", "organisations, projects, keys, audit log, jobs");
    compare_auth(source, target, &mut report, audit_through).await?;

    progress.step("verify", "files: keys, sizes and SHA-256 on both sides");
    compare_files(source, target, &mut report).await?;

    progress.step("verify", "the target's derived stores against its records");
    let check =
        crate::writelog::check::check(target.stores.records.as_ref(), &crate::writelog::projections(&target.stores))
            .await?;
    for s in check.stores.iter().filter(|s| !s.ok) {
        report.differences.push(format!(
            "the target's {} store ({}) lacks {} records and holds {} extra",
            s.store, s.backend, s.missing_count, s.extra_count
        ));
    }
    report.derived = Some(check);

    match super::engines(source, target) {
        Some((source_engine, target_engine)) if options.samples > 0 => {
            progress.step("verify", &format!("{} sampled searches per mode on both sides", options.samples));
            let step = (searchable.len() / options.samples).max(1);
            let sample: Vec<_> = searchable.iter().step_by(step).take(options.samples).collect();
            let mut texts: BTreeMap<RecordKey, String> = BTreeMap::new();
            for (key, tenant, _) in &sample {
                if let Some(r) = source.primary.records.get_by_keys(tenant, &[*key]).await?.into_iter().next() {
                    let words: Vec<&str> =
                        r.body.as_deref().unwrap_or_default().split_whitespace().take(QUERY_WORDS).collect();
                    texts.insert(*key, words.join(" "));
                }
            }
            let same_text = source_engine_backends(source).0 == target.stores.text.backend();
            let same_vectors = source_engine_backends(source).1 == target.stores.vectors.backend();
            for mode in [Mode::Keyword, Mode::Semantic, Mode::Hybrid] {
                let same_engine = match mode {
                    Mode::Keyword => same_text,
                    Mode::Semantic => same_vectors,
                    Mode::Hybrid => same_text && same_vectors,
                };
                let mut agreement = SearchAgreement {
                    mode,
                    queries: 0,
                    identical: 0,
                    mean_overlap: 0.0,
                    own_on_source: 0,
                    own_on_target: 0,
                };
                for (key, tenant, kind) in &sample {
                    let Some(query) = texts.get(key) else { continue };
                    let request = SearchRequest {
                        tenant: tenant.clone(),
                        query: query.clone(),
                        mode,
                        filter: RecordFilter::kinds(&[kind.as_str()]),
                        top_k: 10,
                        offset: 0,
                        fusion: Fusion::default(),
                        snippets: false,
                    };
                    let ids = |hits: Vec<crate::search::SearchHit>| -> Vec<RecordKey> {
                        hits.into_iter().map(|h| h.record.key).collect()
                    };
                    let on_source = ids(source_engine.search(&request).await?);
                    let on_target = ids(target_engine.search(&request).await?);
                    agreement.queries += 1;
                    if on_source == on_target {
                        agreement.identical += 1;
                    }
                    let shared = on_source.iter().filter(|k| on_target.contains(k)).count();
                    agreement.mean_overlap +=
                        if on_source.is_empty() { 1.0 } else { shared as f64 / on_source.len() as f64 };
                    let expected = if same_engine { on_source.contains(key) } else { on_source.first() == Some(key) };
                    if expected {
                        agreement.own_on_source += 1;
                        if on_target.contains(key) {
                            agreement.own_on_target += 1;
                        } else {
                            report.differences.push(format!(
                                "{mode:?} search for {tenant}'s record {key} ({query:?}): {} on the source, not in the target's top 10",
                                if same_engine { "in the top 10" } else { "first" }
                            ));
                        }
                    }
                }
                if agreement.queries > 0 {
                    agreement.mean_overlap /= agreement.queries as f64;
                }
                report.searches.push(agreement);
            }
        }
        Some(_) => {}
        None => report.notes.push(
            "searches were not compared: a server holds the source's data directory (stop it to compare them), \
             or the source is a cluster"
                .to_string(),
        ),
    }
    report.ok = report.differences.is_empty();
    Ok(report)
}

/// The source's text and vector backends (it has stores only when searches are compared).
fn source_engine_backends(source: &Source) -> (&'static str, &'static str) {
    match &source.stores {
        Some(s) => (s.text.backend(), s.vectors.backend()),
        None => ("", ""),
    }
}

async fn compare_auth(source: &Source, target: &Target, report: &mut Report, audit_through: u64) -> Result<()> {
    let (s, t) = (source.primary.auth.export().await?, target.stores.auth.export().await?);
    let wanted = |tenant: &TenantId| source.tenant.as_ref().is_none_or(|w| w == tenant);
    let orgs_of: BTreeSet<String> = s.projects.iter().filter(|p| wanted(&p.id)).map(|p| p.org_id.clone()).collect();
    let lines = |orgs: Vec<String>, projects: Vec<String>, keys: Vec<String>| (orgs, projects, keys);
    let side = |e: &crate::store::auth::AuthExport, filter: bool| {
        lines(
            e.orgs
                .iter()
                .filter(|o| !filter || source.tenant.is_none() || orgs_of.contains(&o.id))
                .map(|o| format!("{} {} {}", o.id, o.name, o.created_at.timestamp_micros()))
                .collect(),
            e.projects
                .iter()
                .filter(|p| !filter || wanted(&p.id))
                .map(|p| format!("{} {} {} {}", p.id, p.org_id, p.name, p.created_at.timestamp_micros()))
                .collect(),
            e.keys
                .iter()
                .filter(|k| !filter || wanted(&k.key.project))
                .map(|k| {
                    let a = &k.key;
                    format!(
                        "{} {} {} {:?} {} {:?} {:?} {}",
                        a.id,
                        a.project,
                        a.name,
                        a.scopes,
                        a.created_at.timestamp_micros(),
                        a.expires_at.map(|t| t.timestamp_micros()),
                        a.revoked_at.map(|t| t.timestamp_micros()),
                        hex::encode(k.secret_hash)
                    )
                })
                .collect(),
        )
    };
    let (so, sp, sk) = side(&s, true);
    let (to, tp, tk) = side(&t, true);
    for (name, a, b) in [("orgs", so, to), ("projects", sp, tp), ("keys", sk, tk)] {
        let (a, b): (BTreeSet<String>, BTreeSet<String>) = (a.into_iter().collect(), b.into_iter().collect());
        let same = a == b;
        if !same {
            let missing = a.difference(&b).next().map(|l| l.split(' ').next().unwrap_or_default().to_string());
            report.differences.push(format!(
                "{name}: {} on the source, {} on the target{}",
                a.len(),
                b.len(),
                missing.map(|m| format!(" (e.g. {m} differs or is missing)")).unwrap_or_default()
            ));
        }
        report.auth.push(Compared { name: name.to_string(), source: a.len() as u64, target: b.len() as u64, same });
    }
    // The audit log, up to the last entry copied.
    let count = |store: std::sync::Arc<dyn crate::store::auth::AuthStore>, filter: bool| async move {
        let (mut n, mut after) = (0u64, 0u64);
        loop {
            let page = store.audit_after(after, 10_000).await?;
            let Some(end) = page.last().map(|e| e.seq) else { break };
            n += page
                .iter()
                .filter(|e| {
                    e.seq <= audit_through
                        && (!filter || source.tenant.is_none() || e.event.tenant.as_ref() == source.tenant.as_ref())
                })
                .count() as u64;
            after = end;
            if end > audit_through {
                break;
            }
        }
        Ok::<u64, crate::error::Error>(n)
    };
    let on_source = count(source.primary.auth.clone(), true).await?;
    let on_target = count(target.stores.auth.clone(), true).await?;
    let same = on_source == on_target;
    if !same {
        report.differences.push(format!("audit log: {on_source} entries on the source, {on_target} on the target"));
    }
    report.auth.push(Compared { name: "audit".into(), source: on_source, target: on_target, same });
    let ids = |jobs: Vec<crate::store::jobs::Job>, filter: bool| -> BTreeSet<String> {
        jobs.into_iter().filter(|j| !filter || wanted(&j.tenant)).map(|j| j.id).collect()
    };
    let (sj, tj) = (ids(source.primary.jobs.export().await?, true), ids(target.stores.jobs.export().await?, true));
    let same = sj == tj;
    if !same {
        report.differences.push(format!("jobs: {} on the source, {} on the target", sj.len(), tj.len()));
    }
    report.auth.push(Compared { name: "jobs".into(), source: sj.len() as u64, target: tj.len() as u64, same });
    Ok(())
}

async fn compare_files(source: &Source, target: &Target, report: &mut Report) -> Result<()> {
    for tenant in super::tenants(source).await? {
        let listing = |infos: Vec<crate::store::objects::ObjectInfo>| -> BTreeMap<String, u64> {
            infos.into_iter().map(|i| (i.key, i.size)).collect()
        };
        let s = listing(source.primary.objects.list(&tenant, "").await?);
        let t = listing(target.stores.objects.list(&tenant, "").await?);
        if s.is_empty() && t.is_empty() {
            continue;
        }
        let mut same = s == t;
        if same {
            for key in s.keys() {
                let a = source.primary.objects.content_hash(&tenant, key).await?;
                let b = target.stores.objects.content_hash(&tenant, key).await?;
                if a != b {
                    same = false;
                    report
                        .differences
                        .push(format!("file {tenant}/{key}: sha256 {a} on the source, {b} on the target"));
                }
            }
        } else {
            report.differences.push(format!(
                "files of tenant {tenant}: {} on the source, {} on the target (or sizes differ)",
                s.len(),
                t.len()
            ));
        }
        report.files.push(Compared {
            name: format!("files {tenant}"),
            source: s.len() as u64,
            target: t.len() as u64,
            same,
        });
    }
    Ok(())
}
