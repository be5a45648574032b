//! Embeddings: text in, unit vectors out.
//!
//! An [`Embedder`] is one model: the built-in all-MiniLM-L6-v2 ([`builtin`]) or a remote
//! OpenAI-compatible endpoint ([`openai`]). The [`EmbedService`] in front of it is what the rest
//! of Nexus calls: it batches concurrent callers into shared forward passes, bounds the queue
//! (refusing with `overloaded` when full), caches recent texts, and splits texts too long for the
//! model into pieces whose vectors are averaged, so nothing is truncated silently.
//!
//! The data directory records which embedder made its vectors ([`identity`]); another one is
//! refused until `nexus reindex --store vectors` has re-embedded everything.

pub mod bert;
pub mod bf16;
pub mod builtin;
pub mod identity;
pub mod openai;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::{EmbedConfig, EmbedProvider};
use crate::error::{Error, ErrorCode, Result};

/// Which model made a vector. Vectors of different identities are not comparable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbedderIdentity {
    pub provider: String,
    pub model: String,
    pub dimensions: usize,
    pub version: String,
}

impl std::fmt::Display for EmbedderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({} dimensions, version {})", self.provider, self.model, self.dimensions, self.version)
    }
}

#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    fn identity(&self) -> &EmbedderIdentity;

    /// Splits `text` into pieces the model takes whole, in order, covering all of it.
    fn split(&self, text: &str) -> Vec<String>;

    /// Embeds texts that each fit the model; one unit vector per text, in order.
    async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;

    /// Tokens the model sees for `text`, special tokens included (an estimate for remote models).
    fn count_tokens(&self, text: &str) -> usize;

    /// Whether batches should run one at a time (a local model using every core) or side by side.
    fn concurrency(&self) -> usize;
}

/// Opens the configured embedder.
pub fn open_embedder(config: &EmbedConfig) -> Result<Arc<dyn Embedder>> {
    Ok(match config.provider {
        EmbedProvider::Builtin => Arc::new(builtin::MiniLm::load()?),
        EmbedProvider::Openai => {
            let remote = config.openai.as_ref().ok_or_else(|| Error::config("embed.openai is not set"))?;
            Arc::new(openai::OpenAiEmbedder::new(remote)?)
        }
    })
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
}

/// The front of an embedder: batching, back-pressure, cache, long texts.
pub struct EmbedService {
    embedder: Arc<dyn Embedder>,
    jobs: mpsc::UnboundedSender<Job>,
    /// One permit per text waiting or being embedded.
    room: Arc<Semaphore>,
    capacity: usize,
    cache: Option<Mutex<lru::LruCache<String, Arc<Vec<f32>>>>>,
    stats: Arc<Counters>,
}

/// What the service has done since it started.
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    texts: AtomicU64,
    cache_hits: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EmbedStats {
    /// Forward passes (or remote requests) run.
    pub batches: u64,
    /// Texts embedded by the model (cache hits excluded).
    pub texts: u64,
    pub cache_hits: u64,
}

impl EmbedService {
    pub fn start(embedder: Arc<dyn Embedder>, config: &EmbedConfig) -> Arc<EmbedService> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Counters::default());
        tokio::spawn(dispatch(embedder.clone(), rx, config.batch_size, stats.clone()));
        Arc::new(EmbedService {
            embedder,
            jobs,
            room: Arc::new(Semaphore::new(config.queue_capacity)),
            capacity: config.queue_capacity,
            cache: NonZeroUsize::new(config.cache_entries).map(|n| Mutex::new(lru::LruCache::new(n))),
            stats,
        })
    }

    pub fn stats(&self) -> EmbedStats {
        EmbedStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            texts: self.stats.texts.load(Ordering::Relaxed),
            cache_hits: self.stats.cache_hits.load(Ordering::Relaxed),
        }
    }

    pub fn identity(&self) -> &EmbedderIdentity {
        self.embedder.identity()
    }

    pub fn dimensions(&self) -> usize {
        self.embedder.identity().dimensions
    }

    pub fn count_tokens(&self, text: &str) -> usize {
        self.embedder.count_tokens(text)
    }

    /// One vector per text. A text too long for the model is embedded in pieces whose vectors
    /// are averaged (and re-normalised).
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let pieces: Vec<Vec<String>> = texts.iter().map(|t| self.embedder.split(t)).collect();
        let flat: Vec<String> = pieces.iter().flatten().cloned().collect();
        let vectors = self.embed_pieces(flat).await?;
        let mut out = Vec::with_capacity(texts.len());
        let mut next = 0;
        for p in &pieces {
            let mine = &vectors[next..next + p.len()];
            next += p.len();
            out.push(if mine.len() == 1 { mine[0].clone() } else { mean_unit(mine) });
        }
        Ok(out)
    }

    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text.to_string()]).await?.pop().unwrap_or_default())
    }

    /// Embeds each piece of a long text separately: `(piece, vector)` in order.
    pub async fn embed_chunks(&self, text: &str) -> Result<Vec<(String, Vec<f32>)>> {
        let pieces = self.embedder.split(text);
        let vectors = self.embed_pieces(pieces.clone()).await?;
        Ok(pieces.into_iter().zip(vectors).collect())
    }

    /// Embeds texts that fit the model, using the cache and the shared queue.
    async fn embed_pieces(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        let mut missing: Vec<(usize, String)> = Vec::new();
        for (i, text) in texts.into_iter().enumerate() {
            match self.cache.as_ref().and_then(|c| c.lock().get(&text).cloned()) {
                Some(v) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("nexus_embed_cache_hits_total").increment(1);
                    out[i] = Some(v.as_ref().clone());
                }
                None => missing.push((i, text)),
            }
        }
        if !missing.is_empty() {
            let n = u32::try_from(missing.len()).unwrap_or(u32::MAX);
            let permits = self.room.clone().try_acquire_many_owned(n).map_err(|_| {
                metrics::counter!("nexus_embed_rejected_total").increment(1);
                Error::new(
                    ErrorCode::Overloaded,
                    format!(
                        "the embedding queue is full ({} texts waiting); retry shortly or raise embed.queue_capacity",
                        self.queue_len()
                    ),
                )
            })?;
            let texts: Vec<String> = missing.iter().map(|(_, t)| t.clone()).collect();
            let (reply, rx) = oneshot::channel();
            self.jobs
                .send(Job { texts, reply })
                .map_err(|_| Error::internal("embedding queue", "the embedding worker stopped"))?;
            let vectors =
                rx.await.map_err(|_| Error::internal("embedding queue", "the embedding worker stopped"))??;
            drop(permits);
            for ((i, text), vector) in missing.into_iter().zip(vectors) {
                if let Some(cache) = &self.cache {
                    cache.lock().put(text, Arc::new(vector.clone()));
                }
                out[i] = Some(vector);
            }
        }
        Ok(out.into_iter().map(|v| v.unwrap_or_default()).collect())
    }

    /// Texts waiting or being embedded.
    pub fn queue_len(&self) -> usize {
        self.capacity.saturating_sub(self.room.available_permits())
    }
}

/// Averages unit vectors and re-normalises the mean.
pub fn mean_unit(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dims = vectors.first().map_or(0, Vec::len);
    let mut sum = vec![0.0f32; dims];
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    normalize(&mut sum);
    sum
}

pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Collects waiting jobs into batches of up to `batch_size` texts, so concurrent callers share
/// forward passes, and hands each caller its own vectors back.
async fn dispatch(
    embedder: Arc<dyn Embedder>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    batch_size: usize,
    stats: Arc<Counters>,
) {
    let serial = embedder.concurrency() <= 1;
    let running = Arc::new(Semaphore::new(embedder.concurrency().max(1)));
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut jobs = vec![first];
        let mut count = jobs[0].texts.len();
        while count < batch_size {
            match rx.try_recv() {
                Ok(job) if count + job.texts.len() <= batch_size => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Ok(job) => {
                    carry = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let permit = running.clone().acquire_owned().await.expect("semaphore never closes");
        let embedder = embedder.clone();
        let stats = stats.clone();
        let work = async move {
            let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
            let result = embed_in_batches(&*embedder, texts, batch_size, &stats).await;
            stats.texts.fetch_add(count as u64, Ordering::Relaxed);
            metrics::counter!("nexus_embed_texts_total").increment(count as u64);
            match result {
                Ok(mut vectors) => {
                    for job in jobs {
                        let rest = vectors.split_off(job.texts.len());
                        let _ = job.reply.send(Ok(vectors));
                        vectors = rest;
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let code = e.code;
                    for job in jobs {
                        let _ = job.reply.send(Err(Error::new(code, message.clone())));
                    }
                }
            }
            drop(permit);
        };
        // A local model uses every core per pass: run passes one at a time, and let callers
        // that arrive meanwhile gather into the next batch.
        if serial {
            work.await;
        } else {
            tokio::spawn(work);
        }
    }
}

/// A job larger than a batch is cut into batches of texts of similar length (less padding),
/// and the vectors are put back in the caller's order.
async fn embed_in_batches(
    embedder: &dyn Embedder,
    texts: Vec<String>,
    batch_size: usize,
    stats: &Counters,
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    if texts.len() > batch_size {
        order.sort_by_key(|&i| texts[i].len());
    }
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    for batch in order.chunks(batch_size) {
        let started = std::time::Instant::now();
        let vectors = embedder.embed_batch(batch.iter().map(|&i| texts[i].clone()).collect()).await?;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("nexus_embed_batch_seconds").record(started.elapsed().as_secs_f64());
        for (&i, v) in batch.iter().zip(vectors) {
            out[i] = v;
        }
    }
    Ok(out)
}
