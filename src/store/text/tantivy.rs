//! The embedded text store: a tantivy index with English stemming (tantivy's `en_stem` analyzer).
//!
//! One `IndexWriter` lives for the store's lifetime. A commit carries the change-log position as
//! its payload, so the position and the documents are published together. Commits go through
//! the page cache; [`TextStore::sync`] makes them durable (see `unsynced.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use std::ops::Bound;
use tantivy::collector::TopDocs;

use tantivy::query::{BooleanQuery, EmptyQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use super::unsynced::{self, UNSYNCED, UnsyncedDirectory};
use super::{Snippet, TextDoc, TextHit, TextQuery, TextStore};
use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId, blocking, dir_size};

const SNIPPET_CHARS: usize = 240;

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    tenant: Field,
    kind: Field,
    tags: Field,
    facets: Field,
    title: Field,
    body: Field,
    date: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let stemmed = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        key: builder.add_u64_field("key", INDEXED | FAST | STORED),
        tenant: builder.add_text_field("tenant", STRING),
        kind: builder.add_text_field("kind", STRING),
        tags: builder.add_text_field("tags", STRING),
        facets: builder.add_text_field("facets", STRING),
        title: builder.add_text_field("title", stemmed.clone()),
        body: builder.add_text_field("body", stemmed),
        date: builder.add_i64_field("date", INDEXED | FAST),
    };
    (builder.build(), fields)
}

struct Inner {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    /// The writer's memory budget, for a writer opened again.
    memory: usize,
    /// Set when a rollback left the writer unusable: the next write opens a new one.
    writer_lost: AtomicBool,
    fields: Fields,
    /// Set by a closing [`TextStore::sync`]; a later commit marks the folder unsynced again.
    closed: AtomicBool,
    /// Per field, the tokens of the live documents, for the searcher generation it was counted in.
    tokens: Mutex<(u64, std::collections::HashMap<Field, u64>)>,
}

/// BM25's statistics over the live documents only. Tantivy's own count documents deleted (or
/// replaced) until a merge drops them, so an index with a history would rank unlike a fresh copy
/// of the same documents (a restored, imported or migrated one). Here every figure depends only
/// on the live documents: their number, how many hold a term (postings are walked in segments
/// with deletions), and their lengths as the scorer itself reads them (field norms), summed once
/// per searcher generation.
struct LiveStatistics<'a> {
    searcher: &'a tantivy::Searcher,
    tokens: &'a Mutex<(u64, std::collections::HashMap<Field, u64>)>,
}

impl tantivy::query::Bm25StatisticsProvider for LiveStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let generation = self.searcher.generation().generation_id();
        {
            let cached = self.tokens.lock();
            if cached.0 == generation
                && let Some(total) = cached.1.get(&field)
            {
                return Ok(*total);
            }
        }
        let mut total = 0u64;
        for segment in self.searcher.segment_readers() {
            let norms = segment.get_fieldnorms_reader(field)?;
            total += segment.doc_ids_alive().map(|doc| u64::from(norms.fieldnorm(doc))).sum::<u64>();
        }
        let mut cached = self.tokens.lock();
        if cached.0 != generation {
            *cached = (generation, Default::default());
        }
        cached.1.insert(field, total);
        Ok(total)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.searcher.segment_readers().iter().map(|s| u64::from(s.num_docs())).sum())
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        use tantivy::DocSet;
        let mut count = 0u64;
        for segment in self.searcher.segment_readers() {
            let index = segment.inverted_index(term.field())?;
            let Some(alive) = segment.alive_bitset() else {
                count += u64::from(index.doc_freq(term)?);
                continue;
            };
            let Some(mut postings) = index.read_postings(term, IndexRecordOption::Basic)? else { continue };
            let mut doc = postings.doc();
            while doc != tantivy::TERMINATED {
                count += u64::from(alive.is_alive(doc));
                doc = postings.advance();
            }
        }
        Ok(count)
    }
}

pub struct TantivyTextStore {
    inner: Arc<Inner>,
}

fn tantivy_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::store(context, e)
}

/// Opens the index's one writer.
fn open_writer(index: &Index, memory: usize) -> tantivy::Result<IndexWriter> {
    let writer = index.writer(memory)?;
    spend_last_commit_opstamp(&writer)?;
    Ok(writer)
}

/// A writer opened (or rolled back) numbers its first operation with the last commit's opstamp,
/// which the segments whose deletions that commit advanced carry too. A merge that starts before
/// the next commit takes such a segment to be up to date with a delete it has not seen, and the
/// merged segment never applies it: the deleted document is back. A first operation that deletes
/// nothing takes that opstamp instead.
fn spend_last_commit_opstamp(writer: &IndexWriter) -> tantivy::Result<()> {
    writer.delete_query(Box::new(EmptyQuery)).map(drop)
}

impl TantivyTextStore {
    /// Opens the index, or creates it. An index the last process left without closing it
    /// cleanly is checked first; one that fails the check is rebuilt from the change log (see
    /// `unsynced.rs`).
    pub async fn open(dir: &Path, config: &TextConfig) -> Result<TantivyTextStore> {
        let dir = dir.to_path_buf();
        let memory = config.writer_memory_mb * 1024 * 1024;
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let unclean = dir.join(UNSYNCED).exists();
            let (index, writer, reader) = match open_index(&dir, memory, unclean) {
                Ok(opened) => opened,
                Err(Opening::Damaged(why)) if unclean => {
                    tracing::warn!(dir = %dir.display(), damage = %why,
                        "the text index was left damaged by the last stop; rebuilding it from the change log");
                    std::fs::remove_dir_all(&dir)?;
                    std::fs::create_dir_all(&dir)?;
                    open_index(&dir, memory, false).map_err(Opening::into_error)?
                }
                Err(e) => return Err(e.into_error()),
            };
            unsynced::mark_unsynced(&dir)?;
            Ok(TantivyTextStore {
                inner: Arc::new(Inner {
                    dir,
                    index,
                    reader,
                    writer: Mutex::new(writer),
                    memory,
                    writer_lost: AtomicBool::new(false),
                    fields: schema().1,
                    closed: AtomicBool::new(false),
                    tokens: Mutex::new((u64::MAX, Default::default())),
                }),
            })
        })
        .await
    }
}

enum Opening {
    /// What the last process left does not open or fails its checksums.
    Damaged(String),
    Failed(Error),
}

impl Opening {
    fn into_error(self) -> Error {
        match self {
            Opening::Damaged(why) => Error::store(
                "open text index (if its schema changed, delete the text folder and run `nexus reindex --store text`)",
                why,
            ),
            Opening::Failed(e) => e,
        }
    }
}

/// Opens the index in `dir`; `verify`: also checks every file the last commit names.
fn open_index(
    dir: &Path,
    memory: usize,
    verify: bool,
) -> std::result::Result<(Index, IndexWriter, IndexReader), Opening> {
    let damaged = |e: tantivy::TantivyError| Opening::Damaged(e.to_string());
    let directory = UnsyncedDirectory::open(dir).map_err(|e| Opening::Failed(Error::store("open text index", e)))?;
    let index = Index::open_or_create(directory, schema().0).map_err(damaged)?;
    // The writer's lock first: a folder another process holds is never judged, let alone rebuilt.
    let writer = open_writer(&index, memory).map_err(|e| Opening::Failed(Error::store("open text index writer", e)))?;
    if verify {
        let bad = index.validate_checksum().map_err(damaged)?;
        if !bad.is_empty() {
            let mut names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
            names.sort();
            return Err(Opening::Damaged(format!("checksums do not match in {}", names.join(", "))));
        }
    }
    // Opening a reader opens every file of every segment meta.json names.
    let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(damaged)?;
    Ok((index, writer, reader))
}

impl Inner {
    /// The writer, opened again first if a rollback left it unusable.
    fn writer(&self) -> Result<MutexGuard<'_, IndexWriter>> {
        let mut writer = self.writer.lock();
        if self.writer_lost.load(Ordering::Acquire) {
            *writer = open_writer(&self.index, self.memory).map_err(tantivy_err("open text index writer"))?;
            self.writer_lost.store(false, Ordering::Release);
        }
        Ok(writer)
    }

    /// Drops what was applied since the last commit; the indexer applies it again. tantivy's
    /// rollback builds a new writer and hands it the directory lock: when building it fails
    /// (the folder went away), the old writer holds no lock and would panic on its next
    /// rollback, so it is marked lost and [`Inner::writer`] opens a new one before the next write.
    fn rollback(&self, writer: &mut IndexWriter) {
        if self.writer_lost.load(Ordering::Acquire) {
            return;
        }
        match writer.rollback() {
            Ok(_) => {
                if let Err(e) = spend_last_commit_opstamp(writer) {
                    tracing::error!(error = %e, "preparing the rolled-back text index writer failed");
                }
            }
            Err(e) => {
                self.writer_lost.store(true, Ordering::Release);
                tracing::error!(error = %e, "rolling the text index writer back failed; the next write opens a new one");
            }
        }
    }

    fn filters(&self, query: &TextQuery) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields;
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
        };
        let mut clauses = vec![(Occur::Must, term(f.tenant, query.tenant.as_str()))];
        if let Some(kinds) = &query.kinds {
            let any_kind: Vec<(Occur, Box<dyn Query>)> =
                kinds.iter().map(|k| (Occur::Should, term(f.kind, k))).collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(any_kind))));
        }
        for tag in &query.tags {
            clauses.push((Occur::Must, term(f.tags, tag)));
        }
        for facet in &query.facets {
            clauses.push((Occur::Must, term(f.facets, facet)));
        }
        if query.date_from.is_some() || query.date_to.is_some() {
            let lower = query.date_from.map_or(Bound::Unbounded, |d| Bound::Included(Term::from_field_i64(f.date, d)));
            let upper = query.date_to.map_or(Bound::Unbounded, |d| Bound::Included(Term::from_field_i64(f.date, d)));
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        clauses
    }

    fn snippet(&self, generators: &[SnippetGenerator], doc: &TantivyDocument) -> Snippet {
        for generator in generators {
            let snippet = generator.snippet_from_doc(doc);
            if !snippet.highlighted().is_empty() {
                return Snippet {
                    text: snippet.fragment().to_string(),
                    highlights: snippet.highlighted().iter().map(|r| (r.start, r.end)).collect(),
                };
            }
        }
        // No term matched in the stored text (e.g. only a stem did): show the body's start.
        let body = doc.get_first(self.fields.body).and_then(|v| v.as_str()).unwrap_or_default();
        let mut end = body.len().min(SNIPPET_CHARS);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        Snippet { text: body[..end].to_string(), highlights: Vec::new() }
    }

    fn parse(&self, text: &str, title_weight: f32) -> Box<dyn Query> {
        let f = self.fields;
        let mut parser = QueryParser::for_index(&self.index, vec![f.title, f.body]);
        parser.set_field_boost(f.title, title_weight);
        // Lenient: malformed syntax degrades to the words it contains instead of failing.
        parser.parse_query_lenient(text).0
    }

    fn generators(&self, searcher: &tantivy::Searcher, query: &dyn Query) -> Result<Vec<SnippetGenerator>> {
        let mut generators = Vec::new();
        for field in [self.fields.body, self.fields.title] {
            let mut generator =
                SnippetGenerator::create(searcher, query, field).map_err(tantivy_err("prepare snippets"))?;
            generator.set_max_num_chars(SNIPPET_CHARS);
            generators.push(generator);
        }
        Ok(generators)
    }

    fn snippets(&self, tenant: &TenantId, text: &str, keys: &[RecordKey]) -> Result<Vec<(RecordKey, Snippet)>> {
        let f = self.fields;
        let searcher = self.reader.searcher();
        // Which words matched, not how well: the weights do not matter here.
        let user_query = self.parse(text, super::DEFAULT_TITLE_WEIGHT);
        let generators = self.generators(&searcher, &*user_query)?;
        let mut out = Vec::new();
        for &key in keys {
            let by_key = BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(Term::from_field_u64(f.key, key), IndexRecordOption::Basic))
                        as Box<dyn Query>,
                ),
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.tenant, tenant.as_str()),
                        IndexRecordOption::Basic,
                    )),
                ),
            ]);
            let found = searcher
                .search(&by_key, &TopDocs::with_limit(1).order_by_score())
                .map_err(tantivy_err("find document"))?;
            if let Some((_, address)) = found.first() {
                let doc: TantivyDocument = searcher.doc(*address).map_err(tantivy_err("read text document"))?;
                out.push((key, self.snippet(&generators, &doc)));
            }
        }
        Ok(out)
    }

    fn search(&self, query: &TextQuery) -> Result<Vec<TextHit>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let user_query = self.parse(&query.query, query.title_weight);
        let searcher = self.reader.searcher();
        let generators = if query.snippets { self.generators(&searcher, &*user_query)? } else { Vec::new() };
        let mut clauses = vec![(Occur::Must, user_query)];
        clauses.extend(self.filters(query));
        let full = BooleanQuery::new(clauses);
        // Scores within about 2e-4 of each other (BM25's statistics sum floats over segments, so
        // two copies of one index can differ in the last bits) are ties, ordered by key: every
        // copy of an index (rebuilt, restored, merged differently) ranks alike, and a page
        // boundary never falls between ties at random.
        let by_score_then_key = TopDocs::with_limit(query.limit).and_offset(query.offset).tweak_score(
            |segment: &tantivy::SegmentReader| {
                let keys = segment.fast_fields().u64("key").ok().map(|c| c.first_or_default_col(0));
                move |doc: tantivy::DocId, score: tantivy::Score| {
                    let coarse = f32::from_bits(score.to_bits() & !0xfff);
                    (coarse, std::cmp::Reverse(keys.as_ref().map_or(0, |k| k.get_val(doc))), score)
                }
            },
        );
        let statistics = LiveStatistics { searcher: &searcher, tokens: &self.tokens };
        let top: Vec<(tantivy::Score, tantivy::DocAddress)> = searcher
            .search_with_statistics_provider(&full, &by_score_then_key, &statistics)
            .map_err(tantivy_err("search text"))?
            .into_iter()
            .map(|((_, _, score), address)| (score, address))
            .collect();
        let mut hits = Vec::with_capacity(top.len());
        if !query.snippets {
            // Keys from the fast field: no stored document is read.
            let columns = searcher
                .segment_readers()
                .iter()
                .map(|segment| segment.fast_fields().u64("key"))
                .collect::<tantivy::Result<Vec<_>>>()
                .map_err(tantivy_err("read keys"))?;
            for (score, address) in top {
                let key = columns[address.segment_ord as usize].first(address.doc_id).unwrap_or_default();
                hits.push(TextHit { key, score, snippet: Snippet::default() });
            }
            return Ok(hits);
        }
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(tantivy_err("read text document"))?;
            let key = doc.get_first(f.key).and_then(|v| v.as_u64()).unwrap_or_default();
            hits.push(TextHit { key, score, snippet: self.snippet(&generators, &doc) });
        }
        Ok(hits)
    }
}

#[async_trait]
impl TextStore for TantivyTextStore {
    fn backend(&self) -> &'static str {
        "tantivy"
    }

    async fn upsert(&self, docs: Vec<TextDoc>, _seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let f = inner.fields;
            let mut writer = inner.writer()?;
            for d in docs {
                writer.delete_term(Term::from_field_u64(f.key, d.key));
                let mut document = doc!(
                    f.key => d.key,
                    f.tenant => d.tenant.as_str(),
                    f.kind => d.kind,
                    f.title => d.title,
                    f.body => d.body,
                    f.date => d.date,
                );
                for tag in d.tags {
                    document.add_text(f.tags, tag);
                }
                for facet in d.facets {
                    document.add_text(f.facets, facet);
                }
                if let Err(e) = writer.add_document(document) {
                    inner.rollback(&mut writer);
                    return Err(Error::store("index text document", e));
                }
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, keys: Vec<RecordKey>, _seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let writer = inner.writer()?;
            for key in keys {
                writer.delete_term(Term::from_field_u64(inner.fields.key, key));
            }
            Ok(())
        })
        .await
    }

    async fn search(&self, query: TextQuery) -> Result<Vec<TextHit>> {
        let inner = self.inner.clone();
        blocking(move || inner.search(&query)).await
    }

    async fn snippets(
        &self,
        tenant: &TenantId,
        query: &str,
        keys: Vec<RecordKey>,
    ) -> Result<Vec<(RecordKey, Snippet)>> {
        let inner = self.inner.clone();
        let (tenant, query) = (tenant.clone(), query.to_string());
        blocking(move || inner.snippets(&tenant, &query, &keys)).await
    }

    /// A commit that fails (a full disk) rolls the writer back to the last commit: the indexer
    /// applies the same batch again on its next attempt, and nothing of the failed one lingers.
    async fn commit(&self, seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut writer = inner.writer()?;
            if inner.closed.swap(false, Ordering::AcqRel) {
                unsynced::mark_unsynced(&inner.dir)?;
            }
            let committed = (|| {
                let mut prepared = writer.prepare_commit().map_err(tantivy_err("prepare text commit"))?;
                prepared.set_payload(&seq.to_string());
                prepared.commit().map_err(tantivy_err("commit text index"))?;
                Ok::<_, Error>(())
            })();
            if let Err(e) = committed {
                inner.rollback(&mut writer);
                return Err(e);
            }
            drop(writer);
            inner.reader.reload().map_err(tantivy_err("reload text index"))?;
            Ok(())
        })
        .await
    }

    /// Waits for no commit: files written meanwhile are picked up by the next sync. A closing
    /// sync holds the writer so that the folder is still when it is marked synced.
    async fn sync(&self, closing: bool) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            if closing {
                let _writer = inner.writer.lock();
                unsynced::sync_dir(&inner.dir)?;
                unsynced::mark_synced(&inner.dir)?;
                inner.closed.store(true, Ordering::Release);
            } else {
                unsynced::sync_dir(&inner.dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn committed_seq(&self) -> Result<Seq> {
        let inner = self.inner.clone();
        blocking(move || {
            let metas = inner.index.load_metas().map_err(tantivy_err("read text index metadata"))?;
            Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
        })
        .await
    }

    /// Segment files never change once written and meta.json is replaced atomically, so hard
    /// links make the copy. A merge finishing meanwhile may delete a segment the linked
    /// meta.json still names: then the copy is made again.
    async fn snapshot(&self, into: &Path) -> Result<Option<Seq>> {
        let (dir, into) = (self.inner.dir.clone(), into.to_path_buf());
        blocking(move || {
            for _ in 0..10 {
                if into.exists() {
                    std::fs::remove_dir_all(&into)?;
                }
                std::fs::create_dir_all(&into)?;
                for entry in std::fs::read_dir(&dir)?.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name.ends_with(".lock") || name == UNSYNCED || !entry.file_type()?.is_file() {
                        continue;
                    }
                    match crate::store::link_or_copy(&entry.path(), &into.join(&name)) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // merged away
                        other => other?,
                    }
                }
                // Opening a reader opens every file of every segment meta.json names.
                let Ok(index) = Index::open_in_dir(&into) else { continue };
                let Ok(metas) = index.load_metas() else { continue };
                let reader: tantivy::Result<IndexReader> =
                    index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into();
                if reader.is_ok() {
                    return Ok(Some(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0)));
                }
            }
            Err(Error::store("copy the text index", "its segments kept changing; try again"))
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let inner = self.inner.clone();
        blocking(move || {
            let searcher = inner.reader.searcher();
            let mut keys = Vec::new();
            for segment in searcher.segment_readers() {
                let column = segment.fast_fields().u64("key").map_err(tantivy_err("read text keys"))?;
                keys.extend(segment.doc_ids_alive().filter_map(|doc| column.first(doc)));
            }
            keys.sort_unstable();
            Ok(keys)
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut writer = inner.writer()?;
            writer.delete_all_documents().map_err(tantivy_err("clear text index"))?;
            let mut prepared = writer.prepare_commit().map_err(tantivy_err("prepare text commit"))?;
            prepared.set_payload("0");
            prepared.commit().map_err(tantivy_err("commit text index"))?;
            drop(writer);
            inner.reader.reload().map_err(tantivy_err("reload text index"))?;
            Ok(())
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let items = self.inner.reader.searcher().num_docs();
        Ok(StoreStats { items, bytes: dir_size(&self.inner.dir) })
    }
}

#[cfg(test)]
mod tests {
    use tantivy::indexer::NoMergePolicy;

    use super::*;

    /// A text store over an index of two committed segments, {1, 2} and {3}, whose last commit
    /// deleted 1: the first segment's deletions are at that commit's opstamp.
    async fn deletions_at_last_commit(dir: &Path) -> TantivyTextStore {
        let (schema, f) = schema();
        let index = Index::create_in_dir(dir, schema).unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.set_merge_policy(Box::new(NoMergePolicy));
        for keys in [&[1u64, 2][..], &[3]] {
            for &key in keys {
                writer.add_document(doc!(f.key => key, f.tenant => "t")).unwrap();
            }
            writer.commit().unwrap();
        }
        writer.delete_term(Term::from_field_u64(f.key, 1));
        writer.commit().unwrap();
        drop(writer);
        TantivyTextStore::open(dir, &TextConfig::default()).await.unwrap()
    }

    /// Deletes 2 first thing, merges both segments before the next commit (the one without
    /// deletions first), commits, and returns the live keys.
    async fn delete_merge_commit(store: &TantivyTextStore) -> Vec<u64> {
        let inner = &store.inner;
        {
            let mut writer = inner.writer.lock();
            writer.set_merge_policy(Box::new(NoMergePolicy));
            writer.delete_term(Term::from_field_u64(inner.fields.key, 2));
            let mut segments = inner.index.searchable_segment_metas().unwrap();
            segments.sort_by_key(|s| s.num_deleted_docs());
            let ids: Vec<_> = segments.iter().map(|s| s.id()).collect();
            writer.merge(&ids).wait().unwrap();
        }
        store.commit(9).await.unwrap();
        store.keys().await.unwrap()
    }

    #[tokio::test]
    async fn a_delete_first_after_reopening_survives_a_merge() {
        let dir = tempfile::tempdir().unwrap();
        let store = deletions_at_last_commit(dir.path()).await;
        assert_eq!(delete_merge_commit(&store).await, vec![3]);
    }

    #[tokio::test]
    async fn a_delete_first_after_a_rollback_survives_a_merge() {
        let dir = tempfile::tempdir().unwrap();
        let store = deletions_at_last_commit(dir.path()).await;
        {
            let mut writer = store.inner.writer.lock();
            writer.add_document(doc!(store.inner.fields.key => 4u64, store.inner.fields.tenant => "t")).unwrap();
            store.inner.rollback(&mut writer);
        }
        assert_eq!(delete_merge_commit(&store).await, vec![3]);
    }

    fn text_doc(key: u64) -> TextDoc {
        TextDoc {
            key,
            tenant: TenantId::new("t").unwrap(),
            kind: "note".into(),
            title: String::new(),
            body: format!("note {key}"),
            tags: Vec::new(),
            facets: Vec::new(),
            date: 0,
        }
    }

    /// tantivy cannot roll a writer back while the index's `meta.json` is gone: the writer is
    /// replaced instead, once the index can be opened again, and nothing panics meanwhile.
    #[tokio::test]
    async fn a_writer_that_cannot_be_rolled_back_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = TantivyTextStore::open(dir.path(), &TextConfig::default()).await.unwrap();
        store.upsert(vec![text_doc(1)], 1).await.unwrap();
        store.commit(1).await.unwrap();
        let meta = dir.path().join("meta.json");
        let saved = std::fs::read(&meta).unwrap();
        std::fs::remove_file(&meta).unwrap();
        for _ in 0..2 {
            store.inner.rollback(&mut store.inner.writer.lock());
        }
        assert!(store.upsert(vec![text_doc(2)], 2).await.is_err(), "no writer can be opened yet");
        std::fs::write(&meta, saved).unwrap();
        store.upsert(vec![text_doc(2)], 2).await.unwrap();
        store.commit(2).await.unwrap();
        assert_eq!(store.keys().await.unwrap(), vec![1, 2]);
        assert_eq!(store.committed_seq().await.unwrap(), 2);
    }
}
