//! The one typed configuration.
//!
//! Layers, later wins: the defaults compiled in from `assets/default-config.toml`; the config file
//! (`--config FILE`, else `/etc/nexus/nexus.toml` when it exists); `NEXUS_DATA_DIR` and
//! `NEXUS__SECTION__KEY` environment variables; command-line flags. Unknown keys, wrong types and
//! bad values are errors that name the key and the layer it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG: &str = include_str!("../assets/default-config.toml");
pub const SYSTEM_CONFIG_PATH: &str = "/etc/nexus/nexus.toml";
/// Dimensions of the built-in embedding model's vectors (all-MiniLM-L6-v2): what
/// `store.vectors.dimensions` must be when `embed.provider = "builtin"`.
pub const BUILTIN_EMBED_DIMENSIONS: usize = 384;
/// The most results one search sends to the reranker.
pub const MAX_RERANK_CANDIDATES: usize = 1000;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub mcp: McpConfig,
    pub log: LogConfig,
    pub indexer: IndexerConfig,
    pub embed: EmbedConfig,
    pub llm: LlmConfig,
    pub rerank: RerankConfig,
    pub knowledge: KnowledgeConfig,
    pub memory: MemoryConfig,
    pub jobs: JobsConfig,
    pub events: EventsConfig,
    pub backup: BackupConfig,
    pub store: StoreConfig,
    pub cluster: ClusterConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// Largest document accepted by upload or ingest, in bytes.
    pub max_upload_bytes: u64,
    /// Most tokens in a chunk (heading context included); at most the embedder's input size.
    pub chunk_max_tokens: usize,
    /// Tokens a chunk repeats from the end of the previous one.
    pub chunk_overlap_tokens: usize,
    /// Document search's ranking unless a request gives its own `fusion`: the weights of the
    /// keyword and semantic rankings in the fusion, and of a title match against a body match.
    pub keyword_weight: f32,
    pub semantic_weight: f32,
    pub title_weight: f32,
    /// Weight of the context ranking in hybrid search over meetings: each meeting window ranked
    /// by the passage around it.
    pub context_weight: f32,
    /// Read each new document version's entities and relations into the entity graph, in a
    /// background job.
    pub graph_extraction: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Working memories without an expiration expire this many seconds after they are added.
    pub working_ttl_secs: u64,
    /// How much recency can lower a score (0 turns recency off).
    pub recency_weight: f32,
    /// Days after which the recency part of a score has halved.
    pub recency_half_life_days: f32,
    /// Largest message (or memory text) accepted, in bytes.
    pub max_message_bytes: usize,
    /// Turns of the same run embedded with each new turn as its context (0: none).
    pub context_turns: usize,
    /// Messages added without a run: consecutive ones of a scope at most this many seconds apart
    /// (by event time) form a thread, which then serves as their run (0: no threads).
    pub thread_gap_secs: u64,
    /// Share of a neighbouring turn's search relevance a turn of a run gains (0: none).
    pub neighbour_weight: f32,
    /// Share of a candidate's relevance a memory gains for mentioning a name that candidate
    /// mentions beyond the query's (the second hop of memory search; 0: none).
    pub hop_weight: f32,
    /// Weight of the semantic ranking against the keyword ranking (1) in memory search.
    pub semantic_weight: f32,
    /// How much a query naming some of the speakers lowers the score of the others' turns.
    pub speaker_weight: f32,
    /// How much a query naming a date, month or year lowers the score of memories from other times.
    pub date_weight: f32,
    /// How much a query asking when lowers the score of memories that state no time.
    pub time_weight: f32,
    /// How much a query that is a question lowers the score of memories that end with one.
    pub question_weight: f32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Background workers running jobs (ingestion) at once.
    pub workers: usize,
    /// Attempts before a failing job is dead.
    pub max_attempts: u32,
}

/// The real-time hub (`/api/v1/events`, `/api/v1/meetings/{id}/stream`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Events each connection may fall behind by before it is sent `resync` and closed.
    pub queue: usize,
    /// Change-log entries a reconnecting client may catch up on; further behind, it gets `resync`.
    pub catch_up_max: usize,
    /// A connection that takes longer than this to accept one message is closed.
    pub send_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Where archives go: a directory, or `s3://bucket/prefix` on the S3 service of `[backup.s3]`;
    /// unset: `<data_dir>.backups` beside the data directory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// When to take backups, in cron syntax (`min hour day month weekday`, UTC); empty: never.
    pub schedule: String,
    /// Scheduled archives kept: the newest `keep_last`, plus the newest of each of the last
    /// `keep_daily` days and `keep_weekly` weeks. Only archives in `dir` are pruned.
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// Scheduled backups leave the derived stores out (rebuilt on restore).
    pub no_derived: bool,
    /// Verify every scheduled backup (checksums, then a trial restore) right after taking it.
    pub verify: bool,
    /// The S3 service of `s3://` backup targets.
    #[serde(default)]
    pub s3: BackupS3Config,
}

/// The S3 service `s3://bucket/prefix` backup targets are on: set up like `[store.objects]`
/// (the bucket and prefix come from the target). Without an `endpoint`, the object store's
/// service and credentials are used when `store.objects.backend = "s3"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupS3Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_true")]
    pub path_style: bool,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
}

impl Default for BackupS3Config {
    fn default() -> Self {
        BackupS3Config {
            endpoint: None,
            region: default_region(),
            path_style: true,
            allow_http: false,
            access_key_id_env: None,
            secret_access_key_env: None,
            access_key_id_file: None,
            secret_access_key_file: None,
        }
    }
}

impl Config {
    /// The object-store settings of the S3 service for `s3://bucket/prefix` backups, and the
    /// section that names them in messages: `[backup.s3]` when it has an endpoint, else
    /// `[store.objects]` when that is S3.
    pub fn backup_s3(&self, bucket: &str, prefix: &str) -> Result<(ObjectsConfig, &'static str)> {
        let s3 = &self.backup.s3;
        let prefix = (!prefix.is_empty()).then(|| prefix.to_string());
        if s3.endpoint.is_some() {
            return Ok((
                ObjectsConfig {
                    backend: ObjectsBackend::S3,
                    endpoint: s3.endpoint.clone(),
                    bucket: Some(bucket.to_string()),
                    region: s3.region.clone(),
                    path_style: s3.path_style,
                    access_key_id_env: s3.access_key_id_env.clone(),
                    secret_access_key_env: s3.secret_access_key_env.clone(),
                    access_key_id_file: s3.access_key_id_file.clone(),
                    secret_access_key_file: s3.secret_access_key_file.clone(),
                    allow_http: s3.allow_http,
                    prefix,
                },
                "backup.s3",
            ));
        }
        if self.store.objects.backend == ObjectsBackend::S3 {
            let mut objects = self.store.objects.clone();
            objects.bucket = Some(bucket.to_string());
            objects.prefix = prefix;
            return Ok((objects, "store.objects"));
        }
        Err(Error::config(
            "invalid configuration: backups to s3:// need the S3 service: set `backup.s3.endpoint` (and its \
             credentials: `backup.s3.access_key_id_env` and `backup.s3.secret_access_key_env`, or AWS_ACCESS_KEY_ID \
             and AWS_SECRET_ACCESS_KEY)",
        ))
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmbedProvider {
    /// all-MiniLM-L6-v2, compiled into the binary.
    Builtin,
    /// Any OpenAI-compatible `/v1/embeddings` endpoint.
    Openai,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    pub provider: EmbedProvider,
    /// Most texts in one forward pass or remote request.
    pub batch_size: usize,
    /// Most texts waiting to be embedded; more are refused with 503 and Retry-After.
    pub queue_capacity: usize,
    /// Embeddings of recent texts kept in memory (0 disables the cache).
    pub cache_entries: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiEmbedConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbedConfig {
    /// Base URL of the API, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub url: String,
    pub model: String,
    pub dimensions: usize,
    /// Name of the environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File holding the API key (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Send `dimensions` in the request (models that can shorten their vectors).
    #[serde(default)]
    pub send_dimensions: bool,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Longest text sent as one input; longer texts are embedded in pieces and averaged.
    #[serde(default = "default_max_input_chars")]
    pub max_input_chars: usize,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// No model: answers are extractive, memory extraction deterministic.
    None,
    /// Any OpenAI-compatible `/chat/completions` endpoint.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<LlmEndpointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<LlmEndpointConfig>,
}

/// One LLM endpoint: `[llm.openai]` or `[llm.anthropic]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmEndpointConfig {
    /// Base URL: `https://api.openai.com/v1`, `http://localhost:11434/v1`, `https://api.anthropic.com`.
    pub url: String,
    pub model: String,
    /// Name of the environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File holding the API key (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Longest wait for a whole answer, or for the first text of a stream.
    #[serde(default = "default_llm_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_llm_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Longest silence between two pieces of a stream.
    #[serde(default = "default_llm_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_llm_max_retries")]
    pub max_retries: u32,
    /// Most tokens an answer may have, unless a request asks for another limit.
    #[serde(default = "default_llm_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_llm_temperature")]
    pub temperature: f32,
    /// Tokens of retrieved context a prompt may carry (estimated).
    #[serde(default = "default_llm_context_tokens")]
    pub context_tokens: usize,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RerankProvider {
    /// No reranker: results keep the order of the hybrid ranking.
    None,
    /// `POST {url}/rerank` as Cohere, Jina, Mixedbread, Infinity and vLLM take it:
    /// `{model, query, documents, top_n}` → `{results: [{index, relevance_score}]}`.
    Cohere,
    /// text-embeddings-inference: `POST {url}/rerank` `{query, texts}` → `[{index, score}]`.
    Tei,
}

/// `[rerank]`: a cross-encoder that reorders the best results of a search.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RerankConfig {
    pub provider: RerankProvider,
    /// Base URL, up to the API version: `https://api.cohere.com/v2`, `http://localhost:8080`.
    #[serde(default)]
    pub url: String,
    /// The model the server knows (required by `cohere`, ignored by `tei`).
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// How many of the best results are reordered; the rest follow in their order.
    pub candidates: usize,
    /// Characters of each result sent to the reranker.
    pub max_chars: usize,
    /// Longest a search waits for the reranker, retries included; then it answers unreranked.
    pub timeout_ms: u64,
    /// Retries of 429, 5xx, timeouts and broken connections, within `timeout_ms`.
    pub max_retries: u32,
    /// Whether a search that does not say (`rerank` in its request) is reranked.
    pub by_default: bool,
}

fn default_llm_timeout_secs() -> u64 {
    120
}
fn default_llm_connect_timeout_secs() -> u64 {
    10
}
fn default_llm_idle_timeout_secs() -> u64 {
    60
}
fn default_llm_max_retries() -> u32 {
    2
}
fn default_llm_max_tokens() -> u32 {
    1024
}
fn default_llm_temperature() -> f32 {
    0.2
}
fn default_llm_context_tokens() -> usize {
    6000
}

fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    3
}
fn default_max_input_chars() -> usize {
    8000
}
fn default_concurrency() -> usize {
    4
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub max_concurrent_requests: usize,
    /// Origins a browser may call the API from; empty: same origin only; `["*"]`: any.
    pub cors_allowed_origins: Vec<String>,
    #[serde(default)]
    pub tls: TlsConfig,
}

/// HTTPS: both files or neither. PEM; reloaded on SIGHUP.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The operator's key. Without it, a server that needs keys generates one into the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    /// Require keys on a loopback address too.
    pub required: bool,
    /// Serve `/metrics` without a key.
    pub public_metrics: bool,
    /// Audit entries older than this are deleted; 0 keeps them forever.
    pub audit_retention_days: u32,
}

/// Rate limits; a rate of 0 turns that limit off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub per_key_per_second: u32,
    pub per_key_burst: u32,
    pub per_address_per_second: u32,
    pub per_address_burst: u32,
    pub auth_failures_per_minute: u32,
}

/// The MCP endpoint `/mcp`: the `Host` and `Origin` headers it accepts (against DNS rebinding and
/// cross-origin browser calls). Loopback names and `server.listen`'s address are always accepted
/// hosts; a request without `Origin` (any client that is not a browser) always passes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// More host names (or `host:port`) clients reach Nexus by; `["*"]`: any.
    pub allowed_hosts: Vec<String>,
    /// Browser origins that may call `/mcp` (`https://app.example.com`, `http://localhost:*`);
    /// `["*"]`: any. Empty: none.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IndexerConfig {
    pub batch_size: usize,
    pub persist_interval_ms: u64,
    pub wait_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub records: RecordsConfig,
    pub vectors: VectorsConfig,
    pub text: TextConfig,
    pub graph: GraphConfig,
    pub objects: ObjectsConfig,
}

/// A value that is never printed: `nexus config` and `Debug` show it redacted.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordsBackend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    pub backend: RecordsBackend,
    pub synchronous: Synchronous,
    /// How much of the SQLite file is read through a memory map (MiB; 0 reads with pread).
    #[serde(default = "default_mmap_mb")]
    pub mmap_mb: u64,
    /// Postgres connection URL (`postgres://user:password@host:port/db?sslmode=require`); may
    /// hold a password. Or name where it is: `url_env` (an environment variable) or `url_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// Postgres: connections each node keeps open at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Postgres: how long connecting may take, and any one statement, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Postgres over TLS (`sslmode=require` in the URL): extra CA certificates (PEM) trusted beside
    /// the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for RecordsConfig {
    /// The embedded store as the default configuration sets it up.
    fn default() -> RecordsConfig {
        RecordsConfig {
            backend: RecordsBackend::Sqlite,
            synchronous: Synchronous::Full,
            mmap_mb: default_mmap_mb(),
            url: None,
            url_env: None,
            url_file: None,
            pool_size: default_pool_size(),
            connect_timeout_ms: default_connect_timeout_ms(),
            statement_timeout_ms: default_statement_timeout_ms(),
            ca_file: None,
        }
    }
}

fn default_pool_size() -> usize {
    16
}

fn default_connect_timeout_ms() -> u64 {
    5000
}

fn default_statement_timeout_ms() -> u64 {
    30_000
}

fn default_mmap_mb() -> u64 {
    8192
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VectorsBackend {
    Usearch,
    Pgvector,
    Qdrant,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    F16,
    I8,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsConfig {
    pub backend: VectorsBackend,
    pub dimensions: usize,
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    pub quantization: Quantization,
    /// pgvector: the database, when not the record store's (`url`, `url_env` or `url_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// Qdrant: collections and their alias are named `{collection_prefix}-vectors...`.
    #[serde(default = "default_prefix")]
    pub collection_prefix: String,
    /// Qdrant: the API key (`api_key`, or named by `api_key_env` / `api_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Qdrant over https: extra CA certificates (PEM) to trust besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Qdrant: how long one request may take, in milliseconds.
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
    /// Every backend: a tenant with at most this many vectors is searched by comparing every
    /// one (exact, so every twin answers alike); a larger one through the HNSW graph. 0: always
    /// through the graph.
    #[serde(default = "default_exact_below")]
    pub exact_below: usize,
}

fn default_exact_below() -> usize {
    20_000
}

impl Default for VectorsConfig {
    /// The embedded store as the default configuration sets it up.
    fn default() -> VectorsConfig {
        VectorsConfig {
            backend: VectorsBackend::Usearch,
            dimensions: 384,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: Quantization::F32,
            url: None,
            url_env: None,
            url_file: None,
            collection_prefix: default_prefix(),
            api_key: None,
            api_key_env: None,
            api_key_file: None,
            ca_file: None,
            timeout_ms: default_backend_timeout_ms(),
            exact_below: default_exact_below(),
        }
    }
}

impl Default for TextConfig {
    /// The embedded store as the default configuration sets it up.
    fn default() -> TextConfig {
        TextConfig {
            backend: TextBackend::Tantivy,
            writer_memory_mb: 64,
            url: None,
            index_prefix: default_prefix(),
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            ca_file: None,
            timeout_ms: default_backend_timeout_ms(),
        }
    }
}

impl Default for GraphConfig {
    /// The embedded store as the default configuration sets it up.
    fn default() -> GraphConfig {
        GraphConfig {
            backend: GraphBackend::Sled,
            url: None,
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            database: None,
            ca_file: None,
            timeout_ms: default_backend_timeout_ms(),
        }
    }
}

fn default_prefix() -> String {
    "nexus".to_string()
}

fn default_backend_timeout_ms() -> u64 {
    30_000
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TextBackend {
    Tantivy,
    Elasticsearch,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub backend: TextBackend,
    pub writer_memory_mb: usize,
    /// Elasticsearch/OpenSearch: the cluster's URL (`https://search.internal:9200`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Indices and their alias are named `{index_prefix}-text...`.
    #[serde(default = "default_prefix")]
    pub index_prefix: String,
    /// Basic authentication: the user, and the password (`password`, or named by `password_env`
    /// / `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one request may take, in milliseconds.
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GraphBackend {
    Sled,
    Neo4j,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    pub backend: GraphBackend,
    /// Neo4j: the Bolt URL (`bolt://graph.internal:7687`, `neo4j://...`, `bolt+s://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// The user, and the password (`password`, or named by `password_env` / `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The database holding Nexus's graph (empty: the server's default database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Extra CA certificates (PEM) to trust besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one request may take, in milliseconds.
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectsBackend {
    Local,
    S3,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    pub backend: ObjectsBackend,
    /// S3: the service's URL (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Address buckets as `endpoint/bucket` (MinIO and most local servers) rather than
    /// `bucket.endpoint`.
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Where the credentials are: environment variables, or files holding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Plain `http://` endpoints are refused unless this is set (local servers).
    #[serde(default)]
    pub allow_http: bool,
    /// Every key is stored under this prefix in the bucket (then the tenant, then the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl ClusterConfig {
    /// `node_id`, or the host name and process id.
    pub fn node_name(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes a NUL-terminated name.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let host = if rc == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "node".to_string()
        };
        format!("{host}-{}", std::process::id())
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_true() -> bool {
    true
}

/// Nexus running as several app nodes over shared cluster stores.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in leases and logs; empty: host name and process id.
    #[serde(default)]
    pub node_id: String,
    /// How long a projector's lease on a shared derived store lasts without renewal (ms).
    pub lease_ms: u64,
    /// How often a node polls the change log besides being woken by notifications (ms).
    pub poll_interval_ms: u64,
}

/// Values given on the command line: the last layer.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogFlags>,
}

#[derive(Debug, Serialize)]
pub struct ServerFlags {
    pub listen: SocketAddr,
}

#[derive(Debug, Serialize)]
pub struct LogFlags {
    pub format: LogFormat,
}

/// Where the configuration file comes from.
pub enum ConfigFile<'a> {
    /// `--config FILE`: must exist.
    Explicit(&'a Path),
    /// `/etc/nexus/nexus.toml` (or another path in tests) when it exists.
    IfExists(&'a Path),
}

impl Config {
    /// Loads the configuration from every layer, using the process environment.
    pub fn load(file: ConfigFile<'_>, flags: &FlagOverrides) -> Result<Config> {
        Self::load_with_env(file, flags, Env::prefixed("NEXUS__").split("__"), std::env::var_os("NEXUS_DATA_DIR"))
    }

    fn load_with_env(
        file: ConfigFile<'_>,
        flags: &FlagOverrides,
        env: Env,
        data_dir_env: Option<std::ffi::OsString>,
    ) -> Result<Config> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG));
        match file {
            ConfigFile::Explicit(path) => {
                if !path.is_file() {
                    return Err(Error::config(format!(
                        "config file {} does not exist or is not a file; check the --config path",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            ConfigFile::IfExists(path) => {
                if path.is_file() {
                    figment = figment.merge(Toml::file_exact(path));
                }
            }
        }
        if let Some(dir) = data_dir_env {
            figment = figment.merge(Serialized::default("data_dir", PathBuf::from(dir)));
        }
        figment = figment.merge(env).merge(Serialized::defaults(flags));
        let config: Config = figment.extract().map_err(|errors| {
            let lines: Vec<String> = errors.into_iter().map(describe_figment_error).collect();
            Error::config(format!("invalid configuration: {}", lines.join("; ")))
        })?;
        let mut config = config;
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secrets named by `*_env` and `*_file` settings into the values they stand for.
    fn resolve_secrets(&mut self) -> Result<()> {
        let records = &mut self.store.records;
        if let Some(url) = read_secret("store.records.url", records.url_env.as_deref(), records.url_file.as_deref())? {
            records.url = Some(url);
        }
        let vectors = &mut self.store.vectors;
        if let Some(url) = read_secret("store.vectors.url", vectors.url_env.as_deref(), vectors.url_file.as_deref())? {
            vectors.url = Some(url);
        }
        if let Some(key) =
            read_secret("store.vectors.api_key", vectors.api_key_env.as_deref(), vectors.api_key_file.as_deref())?
        {
            vectors.api_key = Some(key);
        }
        let text = &mut self.store.text;
        if let Some(password) =
            read_secret("store.text.password", text.password_env.as_deref(), text.password_file.as_deref())?
        {
            text.password = Some(password);
        }
        let graph = &mut self.store.graph;
        if let Some(password) =
            read_secret("store.graph.password", graph.password_env.as_deref(), graph.password_file.as_deref())?
        {
            graph.password = Some(password);
        }
        Ok(())
    }

    /// The cluster backends' settings: what each needs, named by key.
    fn validate_mcp(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::config(format!("invalid configuration: `{key}` {why}")));
        let mcp = &self.mcp;
        let lone_star = |list: &[String]| list.len() == 1 || !list.iter().any(|v| v == "*");
        if !lone_star(&mcp.allowed_hosts) {
            return bad("mcp.allowed_hosts", "takes \"*\" alone or host names");
        }
        for host in mcp.allowed_hosts.iter().filter(|h| *h != "*") {
            let plain = !host.contains(['/', '@', '*']) && axum::http::uri::Authority::try_from(host.as_str()).is_ok();
            if !plain {
                return bad(
                    "mcp.allowed_hosts",
                    "takes host names or host:port, like \"nexus.internal\" or \"nexus.internal:7700\" (no scheme, no path)",
                );
            }
        }
        if !lone_star(&mcp.allowed_origins) {
            return bad("mcp.allowed_origins", "takes \"*\" alone or origins");
        }
        for origin in mcp.allowed_origins.iter().filter(|o| *o != "*" && *o != "null") {
            let base = origin.strip_suffix(":*").unwrap_or(origin);
            let looks_right = axum::http::Uri::try_from(base).is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some()
                    && !base.ends_with('/')
                    && uri.path_and_query().is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
            });
            if !looks_right {
                return bad(
                    "mcp.allowed_origins",
                    "takes \"*\" or origins like \"https://app.example.com\" or \"http://localhost:*\" \
                     (scheme, host and optional port; no path)",
                );
            }
        }
        Ok(())
    }

    fn validate_stores(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::config(format!("invalid configuration: `{key}` {why}")));
        let s = &self.store;
        let postgres_url = |key: &str, url: &Secret| {
            let url = url.expose();
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Ok(())
            } else {
                bad(key, "must be a URL starting with postgres:// or postgresql://")
            }
        };
        match (s.records.backend, &s.records.url) {
            (RecordsBackend::Postgres, None) => {
                return bad(
                    "store.records.url",
                    "is required when store.records.backend = \"postgres\" (or url_env / url_file)",
                );
            }
            (RecordsBackend::Postgres, Some(url)) => postgres_url("store.records.url", url)?,
            (RecordsBackend::Sqlite, _) => {}
        }
        if !(1..=1000).contains(&s.records.pool_size) {
            return bad("store.records.pool_size", "must be between 1 and 1000");
        }
        if s.records.connect_timeout_ms < 100 || s.records.statement_timeout_ms < 100 {
            return bad("store.records.connect_timeout_ms/statement_timeout_ms", "must be at least 100");
        }
        if s.vectors.backend == VectorsBackend::Pgvector {
            match &s.vectors.url {
                Some(url) => postgres_url("store.vectors.url", url)?,
                None if s.records.backend != RecordsBackend::Postgres => {
                    return bad(
                        "store.vectors.url",
                        "is required for backend = \"pgvector\" unless store.records.backend = \"postgres\"",
                    );
                }
                None => {}
            }
        }
        let http_url = |key: &str, url: &Option<Secret>, backend: &str| match url {
            None => bad(key, &format!("is required when the backend is \"{backend}\"")),
            Some(url) if url.expose().starts_with("http://") || url.expose().starts_with("https://") => Ok(()),
            Some(_) => bad(key, "must be a URL starting with http:// or https://"),
        };
        if s.text.backend == TextBackend::Elasticsearch {
            http_url("store.text.url", &s.text.url, "elasticsearch")?;
            if s.text.password.is_some() && s.text.username.is_none() {
                return bad("store.text.username", "is required when a password is set");
            }
        }
        if s.vectors.backend == VectorsBackend::Qdrant {
            http_url("store.vectors.url", &s.vectors.url, "qdrant")?;
        }
        if s.graph.backend == GraphBackend::Neo4j {
            const SCHEMES: [&str; 6] =
                ["bolt://", "bolt+s://", "bolt+ssc://", "neo4j://", "neo4j+s://", "neo4j+ssc://"];
            match &s.graph.url {
                None => return bad("store.graph.url", "is required when the backend is \"neo4j\""),
                Some(url) if SCHEMES.iter().any(|scheme| url.expose().starts_with(scheme)) => {}
                Some(_) => return bad("store.graph.url", "must be a URL starting with bolt://, neo4j:// (or +s)"),
            }
        }
        for (key, prefix) in [
            ("store.text.index_prefix", &s.text.index_prefix),
            ("store.vectors.collection_prefix", &s.vectors.collection_prefix),
        ] {
            let valid = !prefix.is_empty()
                && prefix.len() <= 100
                && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
                && !prefix.starts_with(['-', '_']);
            if !valid {
                return bad(key, "must be 1-100 lowercase letters, digits, '-' or '_', not starting with '-' or '_'");
            }
        }
        for (key, ms) in [
            ("store.text.timeout_ms", s.text.timeout_ms),
            ("store.vectors.timeout_ms", s.vectors.timeout_ms),
            ("store.graph.timeout_ms", s.graph.timeout_ms),
        ] {
            if ms < 100 {
                return bad(key, "must be at least 100");
            }
        }
        if s.objects.backend == ObjectsBackend::S3 {
            let Some(endpoint) = &s.objects.endpoint else {
                return bad("store.objects.endpoint", "is required when store.objects.backend = \"s3\"");
            };
            if endpoint.starts_with("http://") {
                if !s.objects.allow_http {
                    return bad(
                        "store.objects.endpoint",
                        "is plain http://; use https://, or set store.objects.allow_http = true for a local server",
                    );
                }
            } else if !endpoint.starts_with("https://") {
                return bad("store.objects.endpoint", "must start with https:// (or http:// with allow_http)");
            }
            if s.objects.bucket.as_deref().is_none_or(str::is_empty) {
                return bad("store.objects.bucket", "is required when store.objects.backend = \"s3\"");
            }
        }
        if self.cluster.lease_ms < 1000 {
            return bad("cluster.lease_ms", "must be at least 1000");
        }
        if !(10..=60_000).contains(&self.cluster.poll_interval_ms) {
            return bad("cluster.poll_interval_ms", "must be between 10 and 60000");
        }
        Ok(())
    }

    /// Checks values that types alone cannot.
    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::config(format!("invalid configuration: `{key}` {why}")));
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.server.body_limit_bytes < 1024 {
            return bad("server.body_limit_bytes", "must be at least 1024");
        }
        if self.server.request_timeout_secs == 0 {
            return bad("server.request_timeout_secs", "must be at least 1");
        }
        if self.server.max_concurrent_requests == 0 {
            return bad("server.max_concurrent_requests", "must be at least 1");
        }
        for origin in &self.server.cors_allowed_origins {
            let looks_right = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !looks_right {
                return bad(
                    "server.cors_allowed_origins",
                    "takes \"*\" or origins like \"https://app.example.com\" (scheme and host, no path)",
                );
            }
        }
        self.validate_mcp()?;
        if self.server.tls.cert_file.is_some() != self.server.tls.key_file.is_some() {
            return bad("server.tls", "needs both cert_file and key_file, or neither");
        }
        if let Some(key) = &self.auth.master_key {
            let key = key.expose();
            if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(
                    "auth.master_key",
                    "must be at least 16 characters without spaces; generate one with `openssl rand -hex 32`",
                );
            }
        }
        let limits = &self.limits;
        if limits.per_key_per_second > 0 && limits.per_key_burst == 0 {
            return bad("limits.per_key_burst", "must be at least 1 when limits.per_key_per_second is set");
        }
        if limits.per_address_per_second > 0 && limits.per_address_burst == 0 {
            return bad("limits.per_address_burst", "must be at least 1 when limits.per_address_per_second is set");
        }
        self.validate_stores()?;
        if !(1..=100_000).contains(&self.indexer.batch_size) {
            return bad("indexer.batch_size", "must be between 1 and 100000");
        }
        if self.indexer.persist_interval_ms < 10 {
            return bad("indexer.persist_interval_ms", "must be at least 10");
        }
        if !(32..=256).contains(&self.knowledge.chunk_max_tokens) {
            return bad("knowledge.chunk_max_tokens", "must be between 32 and 256");
        }
        if self.knowledge.chunk_overlap_tokens >= self.knowledge.chunk_max_tokens / 2 {
            return bad("knowledge.chunk_overlap_tokens", "must be less than half of chunk_max_tokens");
        }
        if self.memory.recency_half_life_days <= 0.0 {
            return bad("memory.recency_half_life_days", "must be more than 0");
        }
        // Ranking weights, each within its range.
        for (key, weight, max) in [
            ("knowledge.keyword_weight", self.knowledge.keyword_weight, 4.0),
            ("knowledge.semantic_weight", self.knowledge.semantic_weight, 4.0),
            ("knowledge.title_weight", self.knowledge.title_weight, 4.0),
            ("knowledge.context_weight", self.knowledge.context_weight, 4.0),
            ("memory.semantic_weight", self.memory.semantic_weight, 4.0),
            ("memory.recency_weight", self.memory.recency_weight, 1.0),
            ("memory.neighbour_weight", self.memory.neighbour_weight, 1.0),
            ("memory.hop_weight", self.memory.hop_weight, 1.0),
            ("memory.speaker_weight", self.memory.speaker_weight, 1.0),
            ("memory.date_weight", self.memory.date_weight, 1.0),
            ("memory.time_weight", self.memory.time_weight, 1.0),
            ("memory.question_weight", self.memory.question_weight, 1.0),
        ] {
            if !(0.0..=max).contains(&weight) {
                return bad(key, &format!("must be between 0 and {max}"));
            }
        }
        if self.knowledge.keyword_weight + self.knowledge.semantic_weight == 0.0 {
            return bad("knowledge.keyword_weight", "keyword_weight and semantic_weight cannot both be 0");
        }
        if self.memory.context_turns > 8 {
            return bad("memory.context_turns", "must be at most 8");
        }
        if self.memory.max_message_bytes < 256 {
            return bad("memory.max_message_bytes", "must be at least 256");
        }
        if self.knowledge.max_upload_bytes < 1024 {
            return bad("knowledge.max_upload_bytes", "must be at least 1024");
        }
        if !(1..=64).contains(&self.jobs.workers) || !(1..=100).contains(&self.jobs.max_attempts) {
            return bad("jobs", "workers must be 1-64 and max_attempts 1-100");
        }
        if !(1..=1_000_000).contains(&self.events.queue)
            || self.events.catch_up_max == 0
            || self.events.send_timeout_ms == 0
        {
            return bad("events", "queue must be 1-1000000, catch_up_max and send_timeout_ms above 0");
        }
        if !self.backup.schedule.trim().is_empty()
            && let Err(e) = self.backup.schedule.parse::<croner::Cron>()
        {
            return bad("backup.schedule", &format!("is not a cron expression (`{}`: {e})", self.backup.schedule));
        }
        if self.backup.keep_last == 0 && self.backup.keep_daily == 0 && self.backup.keep_weekly == 0 {
            return bad("backup.keep_last", "keeps nothing: set keep_last, keep_daily or keep_weekly above 0");
        }
        if let Some(dir) = self.backup.dir.as_deref().and_then(Path::to_str).filter(|d| d.starts_with("s3://")) {
            let (bucket, prefix) = parse_s3(dir)
                .map_err(|e| Error::config(format!("invalid configuration: `backup.dir` {}", e.message)))?;
            self.backup_s3(&bucket, &prefix)?;
        }
        if let Some(endpoint) = &self.backup.s3.endpoint
            && !(endpoint.starts_with("https://") || self.backup.s3.allow_http && endpoint.starts_with("http://"))
        {
            return bad("backup.s3.endpoint", "must start with https:// (or http:// with backup.s3.allow_http = true)");
        }
        if !(1..=2048).contains(&self.embed.batch_size) {
            return bad("embed.batch_size", "must be between 1 and 2048");
        }
        if self.embed.queue_capacity < self.embed.batch_size {
            return bad("embed.queue_capacity", "must be at least embed.batch_size");
        }
        match (&self.embed.provider, &self.embed.openai) {
            (EmbedProvider::Openai, None) => {
                return bad("embed.openai", "is required when embed.provider = \"openai\" (url, model, dimensions)");
            }
            (EmbedProvider::Openai, Some(openai)) => {
                if !(openai.url.starts_with("http://") || openai.url.starts_with("https://")) {
                    return bad("embed.openai.url", "must start with http:// or https://");
                }
                if openai.dimensions != self.store.vectors.dimensions {
                    return bad(
                        "store.vectors.dimensions",
                        &format!("must equal embed.openai.dimensions ({})", openai.dimensions),
                    );
                }
                if openai.timeout_secs == 0 || openai.concurrency == 0 || openai.max_input_chars < 16 {
                    return bad(
                        "embed.openai",
                        "timeout_secs and concurrency must be at least 1, max_input_chars at least 16",
                    );
                }
            }
            (EmbedProvider::Builtin, _) => {
                if self.store.vectors.dimensions != BUILTIN_EMBED_DIMENSIONS {
                    return bad(
                        "store.vectors.dimensions",
                        &format!("must be {} with the built-in embedder", BUILTIN_EMBED_DIMENSIONS),
                    );
                }
            }
        }
        self.validate_llm()?;
        self.validate_rerank()?;
        if !(1..=16_384).contains(&self.store.vectors.dimensions) {
            return bad("store.vectors.dimensions", "must be between 1 and 16384");
        }
        if !(2..=256).contains(&self.store.vectors.connectivity) {
            return bad("store.vectors.connectivity", "must be between 2 and 256");
        }
        if self.store.vectors.expansion_add == 0 || self.store.vectors.expansion_search == 0 {
            return bad("store.vectors.expansion_add/expansion_search", "must be at least 1");
        }
        if self.store.text.writer_memory_mb < 15 {
            return bad("store.text.writer_memory_mb", "must be at least 15 (tantivy's minimum)");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad("log.level", "is not a valid level or filter (e.g. \"info\", \"nexus=debug\")");
        }
        Ok(())
    }

    /// The chosen LLM endpoint; the others are only parsed (so a typo in them is still an error).
    fn validate_llm(&self) -> Result<()> {
        let bad = |key: String, why: &str| Err(Error::config(format!("invalid configuration: `{key}` {why}")));
        let (section, endpoint, max_temperature) = match self.llm.provider {
            LlmProvider::None => return Ok(()),
            LlmProvider::Openai => ("llm.openai", &self.llm.openai, 2.0),
            LlmProvider::Anthropic => ("llm.anthropic", &self.llm.anthropic, 1.0),
        };
        let Some(endpoint) = endpoint else {
            let provider = &section[4..];
            return bad(section.to_string(), &format!("is required when llm.provider = \"{provider}\" (url, model)"));
        };
        if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) {
            return bad(format!("{section}.url"), "must start with http:// or https://");
        }
        if endpoint.model.trim().is_empty() {
            return bad(format!("{section}.model"), "must not be empty");
        }
        if endpoint.api_key_env.is_some() && endpoint.api_key_file.is_some() {
            return bad(format!("{section}.api_key_file"), "cannot be set together with api_key_env; keep one");
        }
        if self.llm.provider == LlmProvider::Anthropic
            && endpoint.api_key_env.is_none()
            && endpoint.api_key_file.is_none()
        {
            return bad(format!("{section}.api_key_env"), "or api_key_file is required: Anthropic needs an API key");
        }
        for (key, value) in [
            ("timeout_secs", endpoint.timeout_secs),
            ("connect_timeout_secs", endpoint.connect_timeout_secs),
            ("idle_timeout_secs", endpoint.idle_timeout_secs),
        ] {
            if value == 0 {
                return bad(format!("{section}.{key}"), "must be at least 1");
            }
        }
        if endpoint.max_retries > 10 {
            return bad(format!("{section}.max_retries"), "must be at most 10");
        }
        if endpoint.max_tokens == 0 {
            return bad(format!("{section}.max_tokens"), "must be at least 1");
        }
        if !(0.0..=max_temperature).contains(&endpoint.temperature) {
            return bad(format!("{section}.temperature"), &format!("must be between 0 and {max_temperature}"));
        }
        if endpoint.context_tokens < 100 {
            return bad(format!("{section}.context_tokens"), "must be at least 100");
        }
        Ok(())
    }

    fn validate_rerank(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::config(format!("invalid configuration: `rerank.{key}` {why}")));
        let r = &self.rerank;
        if r.provider == RerankProvider::None {
            return Ok(());
        }
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            return bad("url", "must start with http:// or https:// when rerank.provider is set");
        }
        if r.provider == RerankProvider::Cohere && r.model.trim().is_empty() {
            return bad("model", "must name the reranking model when rerank.provider = \"cohere\"");
        }
        if r.api_key_env.is_some() && r.api_key_file.is_some() {
            return bad("api_key_file", "cannot be set together with api_key_env; keep one");
        }
        if !(1..=MAX_RERANK_CANDIDATES).contains(&r.candidates) {
            return bad("candidates", &format!("must be between 1 and {MAX_RERANK_CANDIDATES}"));
        }
        if r.max_chars < 16 {
            return bad("max_chars", "must be at least 16");
        }
        if r.timeout_ms < 10 {
            return bad("timeout_ms", "must be at least 10");
        }
        if r.max_retries > 5 {
            return bad("max_retries", "must be at most 5");
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// `s3://bucket/prefix` as (bucket, prefix); the prefix may be empty.
pub fn parse_s3(location: &str) -> Result<(String, String)> {
    let rest = location.strip_prefix("s3://").unwrap_or(location);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    let bucket_ok = !bucket.is_empty()
        && bucket.len() <= 63
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    let prefix_ok = prefix.is_empty()
        || prefix.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.chars().any(char::is_control));
    if !bucket_ok || !prefix_ok {
        return Err(Error::invalid(format!(
            "`{location}` is not an S3 location: write s3://BUCKET or s3://BUCKET/PREFIX (a bucket name of \
             lowercase letters, digits, '-' and '.')"
        )));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// A secret named by `{setting}_env` (an environment variable) or `{setting}_file` (a file whose
/// first line holds it); `None` when neither is set. Surrounding white space is dropped.
pub fn read_secret(setting: &str, env: Option<&str>, file: Option<&Path>) -> Result<Option<Secret>> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(Secret::new(value.trim().to_string()))),
            _ => Err(Error::config(format!(
                "invalid configuration: `{setting}_env` names {var}, but that environment variable is empty or unset"
            ))),
        };
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("invalid configuration: cannot read `{setting}_file` {}: {e}", path.display()))
        })?;
        let value = text.lines().next().unwrap_or_default().trim().to_string();
        if value.is_empty() {
            return Err(Error::config(format!("invalid configuration: `{setting}_file` {} is empty", path.display())));
        }
        return Ok(Some(Secret::new(value)));
    }
    Ok(None)
}

/// Figment's message, the key and the layer the value came from, in one line.
fn describe_figment_error(e: figment::Error) -> String {
    let key: Vec<&str> = e.path.iter().map(String::as_str).filter(|p| *p != "default").collect();
    let origin = match &e.metadata {
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => format!("config file {}", path.display()),
            _ if meta.name.contains("environment") => {
                let var = format!("NEXUS__{}", key.join("__").to_uppercase());
                format!("environment variable {var}")
            }
            _ if meta.name.contains("Serialized") => "command-line flags".to_string(),
            _ => meta.name.to_string(),
        },
        None => "configuration".to_string(),
    };
    let kind = e.kind.to_string();
    if key.is_empty() {
        format!("{kind} (in {origin})")
    } else {
        format!("key `{}`: {kind} (in {origin})", key.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn quiet_env() -> Env {
        Env::prefixed("NEXUS_TEST_UNSET__").split("__")
    }

    fn load_str(toml: &str) -> Result<Config> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load_with_env(ConfigFile::Explicit(file.path()), &FlagOverrides::default(), quiet_env(), None)
    }

    #[test]
    fn defaults_are_valid_and_zero_config() {
        let config = Config::load_with_env(
            ConfigFile::IfExists(Path::new("/nonexistent/nexus.toml")),
            &FlagOverrides::default(),
            quiet_env(),
            None,
        )
        .unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:7700");
        assert_eq!(config.data_dir, PathBuf::from("./nexus-data"));
        assert_eq!(config.store.records.backend, RecordsBackend::Sqlite);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::ConfigInvalid);
        assert!(err.message.contains("lisen"), "{}", err.message);
        assert!(err.message.contains("config file"), "{}", err.message);
    }

    #[test]
    fn wrong_type_names_key() {
        let err = load_str("[store.vectors]\ndimensions = \"many\"\n").unwrap_err();
        assert!(err.message.contains("store.vectors.dimensions"), "{}", err.message);
    }

    #[test]
    fn unknown_backend_is_rejected() {
        let err = load_str("[store.records]\nbackend = \"mysql\"\n").unwrap_err();
        assert!(err.message.contains("store.records.backend"), "{}", err.message);
        assert!(err.message.contains("mysql"), "{}", err.message);
    }

    #[test]
    fn bad_value_is_rejected() {
        let err = load_str("[store.vectors]\ndimensions = 0\n").unwrap_err();
        assert!(err.message.contains("store.vectors.dimensions"), "{}", err.message);
    }

    #[test]
    fn flags_win_over_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"[server]\nlisten = \"127.0.0.1:1111\"\n").unwrap();
        let flags = FlagOverrides {
            server: Some(ServerFlags { listen: "127.0.0.1:2222".parse().unwrap() }),
            ..Default::default()
        };
        let config = Config::load_with_env(ConfigFile::Explicit(file.path()), &flags, quiet_env(), None).unwrap();
        assert_eq!(config.server.listen.port(), 2222);
    }

    #[test]
    fn rerank_defaults_to_none_and_bad_values_name_their_key() {
        let config = load_str("# empty\n").unwrap();
        assert_eq!(config.rerank.provider, RerankProvider::None);
        assert!(crate::rerank::Reranker::open(&config.rerank).unwrap().is_none());
        let ok = load_str("[rerank]\nprovider = \"tei\"\nurl = \"http://localhost:8080\"\n").unwrap();
        assert_eq!((ok.rerank.candidates, ok.rerank.timeout_ms, ok.rerank.by_default), (50, 3000, true));
        let cases = [
            ("[rerank]\nprovider = \"cohere\"\nmodel = \"m\"\n", "rerank.url"),
            ("[rerank]\nprovider = \"cohere\"\nurl = \"https://api.cohere.com/v2\"\n", "rerank.model"),
            ("[rerank]\nprovider = \"jina\"\n", "rerank.provider"),
            ("[rerank]\nprovider = \"tei\"\nurl = \"http://h\"\ncandidates = 0\n", "rerank.candidates"),
            ("[rerank]\nprovider = \"tei\"\nurl = \"http://h\"\ncandidates = 1001\n", "rerank.candidates"),
            ("[rerank]\nprovider = \"tei\"\nurl = \"http://h\"\ntimeout_ms = 0\n", "rerank.timeout_ms"),
            (
                "[rerank]\nprovider = \"tei\"\nurl = \"http://h\"\napi_key_env = \"A\"\napi_key_file = \"/k\"\n",
                "rerank.api_key_file",
            ),
        ];
        for (toml, key) in cases {
            let err = load_str(toml).unwrap_err();
            assert!(err.message.contains(key), "{toml}: {}", err.message);
        }
    }

    #[test]
    fn llm_defaults_to_none() {
        let config = load_str("# empty\n").unwrap();
        assert_eq!(config.llm.provider, LlmProvider::None);
        assert!(crate::llm::open_llm(&config.llm).unwrap().is_none());
    }

    #[test]
    fn llm_endpoint_gets_defaults_and_is_shown_without_key() {
        let config = load_str(
            "[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"http://localhost:11434/v1\"\nmodel = \"llama3.2\"\n\
             api_key_env = \"NEXUS_TEST_LLM_KEY\"\n",
        )
        .unwrap();
        let openai = config.llm.openai.as_ref().unwrap();
        assert_eq!((openai.timeout_secs, openai.max_retries, openai.max_tokens), (120, 2, 1024));
        let shown = config.to_redacted_toml();
        assert!(shown.contains("api_key_env = \"NEXUS_TEST_LLM_KEY\""), "{shown}");
    }

    #[test]
    fn llm_bad_values_name_their_key() {
        let cases = [
            ("[llm]\nprovider = \"openai\"\n", "`llm.openai`"),
            ("[llm]\nprovider = \"gpt\"\n", "llm.provider"),
            ("[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"localhost\"\nmodel = \"m\"\n", "llm.openai.url"),
            (
                "[llm]\nprovider = \"anthropic\"\n[llm.anthropic]\nurl = \"https://api.anthropic.com\"\nmodel = \"m\"\n",
                "llm.anthropic.api_key_env",
            ),
            (
                "[llm]\nprovider = \"anthropic\"\n[llm.anthropic]\nurl = \"https://a.test\"\nmodel = \"m\"\n\
                 api_key_env = \"K\"\ntemperature = 1.5\n",
                "llm.anthropic.temperature",
            ),
            (
                "[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"http://a.test\"\nmodel = \"m\"\ntimeout_secs = 0\n",
                "llm.openai.timeout_secs",
            ),
            ("[llm.openai]\nurl = \"http://a.test\"\nmodel = \"m\"\napi_key = \"sk-1\"\n", "api_key"),
        ];
        for (toml, key) in cases {
            let err = load_str(toml).unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::ConfigInvalid);
            assert!(err.message.contains(key), "{key}: {}", err.message);
            assert!(!err.message.contains("sk-1"), "a key value is never echoed: {}", err.message);
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let config = load_str("[store.records]\nurl = \"postgres://u:hunter2@db/x\"\n").unwrap();
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("<redacted>"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
