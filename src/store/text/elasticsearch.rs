//! The text store on Elasticsearch 8/9 or OpenSearch 2/3, shared by every node of a cluster.
//!
//! Contract, beyond the trait's:
//! - One REST client (reqwest) speaks to both products. [`ElasticsearchTextStore::open`] checks
//!   that `store.text.url` answers as Elasticsearch 8 or newer or OpenSearch 2 or newer (9 and 3
//!   are the newest tested), with basic authentication from `store.text.username` and its password
//!   and TLS on rustls (the system's roots plus `store.text.ca_file`).
//! - What Nexus creates: one index per generation, `{index_prefix}-text-{n}`, with one shard,
//!   refreshes only on request (`refresh_interval: -1`) and a strict mapping (title and body `text`
//!   with the `english` analyzer; tenant, kind, tags and facets `keyword`; key, date and seq
//!   `long`; `_meta.nexus` marks it), behind the alias `{index_prefix}-text`. Every read and write
//!   of the live store goes through the alias, so a switch of generation reaches every node at
//!   once; writes require the alias (`require_alias`), so an index deleted outside Nexus is an
//!   error, not a new index the server makes up. At open the alias is created with a first generation when absent; an alias or index of
//!   that name with another mapping, or an index that is not behind an alias, is refused with an
//!   error naming `store.text.index_prefix`, and nothing is changed.
//! - Writes are buffered in the handle and sent in `_bulk` requests ([`FLUSH_OPS`] documents or
//!   [`FLUSH_BYTES`] at a time, and at commit). Each document is indexed with
//!   `version_type=external_gte` and the batch's change-log position as its version: a stale
//!   write answers 409, which is success. A delete indexes a versioned tombstone (a document
//!   without a tenant: no search, key listing or count sees it), so no stale batch can bring a
//!   deleted key back, however late it comes. Tombstones go away with their generation.
//! - [`TextStore::commit`] sends the rest of the buffer, writes the position document (versioned
//!   too, so the position never moves back) and refreshes: the documents and the position become
//!   searchable together. [`TextStore::committed_seq`] reads the position from the searchable
//!   view (`realtime=false`). A handle dropped before its commit loses its buffer (the change log
//!   replays it); documents it had already sent become visible at the next commit, which is
//!   harmless since every write carries the state of its position. A server that refreshes on its
//!   own (some test servers ignore `refresh_interval`) shows sent documents early.
//! - Fencing is not needed: a projector that lost its lease can only write states that the
//!   change log holds at the position it writes them with, and the versions keep the newest.
//! - Search: BM25 (the servers' default k1 1.2, b 0.75) summed over title (boosted by the query's
//!   title weight) and body, word by word as the embedded store scores; words are OR'ed,
//!   `"phrases"`, `+required`, `-excluded`, `AND`/`OR`/`NOT`; a word the analyzer splits
//!   (`covid-19`) is a phrase, as in the embedded store; `()[]{}:^~*!\<>=` are read as spaces. A query's words beyond [`MAX_UNITS`] are ignored (the servers' clause limit), and hits
//!   beyond the servers' result window (offset + limit over 10,000) are not returned.
//! - Snippets come from the servers' highlighter (one fragment of about [`SNIPPET_CHARS`]
//!   characters of the body, else the highlighted title, else the body's start), with tags from
//!   Unicode's private use area turned into byte ranges.
//! - `clear` of the live store makes a new, empty generation live and drops the old one;
//!   [`TextStore::new_generation`] first drops generations that never went live (an interrupted
//!   rebuild's).
//! - An unreachable server, a timeout, 429 or a 5xx answer is `backend_unavailable`; 401/403 name
//!   the credentials' settings.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::{Snippet, TextDoc, TextHit, TextQuery, TextStore};
use crate::config::TextConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId};

/// Buffered writes are sent once this many documents wait.
pub const FLUSH_OPS: usize = 1000;

/// ... or once their text takes this many bytes.
pub const FLUSH_BYTES: usize = 8 << 20;

/// A query's words and phrases beyond this many are ignored: each becomes two clauses (title and
/// body) and the servers refuse queries of more than 1024.
pub const MAX_UNITS: usize = 256;

/// About how many characters a body snippet has.
pub const SNIPPET_CHARS: usize = 240;

/// The servers' default `index.highlight.max_analyzed_offset`: longer texts are highlighted up
/// to here.
const HIGHLIGHT_MAX_CHARS: u64 = 1_000_000;

/// The servers' default `index.max_result_window`: offset + limit beyond it are not served.
const RESULT_WINDOW: usize = 10_000;

/// Keys fetched per request when listing them.
const KEYS_PAGE: usize = 5000;

/// Documents asked for per `snippets` request.
const SNIPPETS_PAGE: usize = 500;

/// The id of the document holding a generation's committed change-log position (record keys are
/// numbers, so it cannot collide with one).
const POSITION_ID: &str = "nexus-position";

/// The version of the index layout below, in `_meta.nexus.text`.
const LAYOUT: u64 = 1;

/// Highlight tags: private-use characters that text practically never holds.
const PRE_TAG: char = '\u{e000}';
const POST_TAG: char = '\u{e001}';

const URL_SETTING: &str = "store.text.url";
const PREFIX_SETTING: &str = "store.text.index_prefix";

/// The mapping of every generation.
fn mapping() -> Value {
    json!({
        "dynamic": "strict",
        "_meta": { "nexus": { "text": LAYOUT } },
        "properties": {
            "key": { "type": "long" },
            "tenant": { "type": "keyword" },
            "kind": { "type": "keyword" },
            "tags": { "type": "keyword" },
            "facets": { "type": "keyword" },
            "title": { "type": "text", "analyzer": "english" },
            "body": { "type": "text", "analyzer": "english" },
            "date": { "type": "long" },
            "seq": { "type": "long" }
        }
    })
}

/// The body that creates a generation, behind the alias when `alias` is given.
fn index_body(alias: Option<&str>) -> Value {
    let mut body = json!({
        "settings": { "index": { "number_of_shards": 1, "refresh_interval": "-1" } },
        "mappings": mapping(),
    });
    if let Some(alias) = alias {
        body["aliases"] = json!({ alias: {} });
    }
    body
}

/// Why an existing index's mapping is not the one Nexus writes, if it is not.
fn mapping_mismatch(found: &Value) -> Option<String> {
    let expected = mapping();
    if found.pointer("/_meta/nexus/text").and_then(Value::as_u64) != Some(LAYOUT) {
        return Some("it carries no nexus text marker (`_meta.nexus.text`)".into());
    }
    if found.get("dynamic").and_then(Value::as_str) != Some("strict") {
        return Some("its mapping is not strict".into());
    }
    let (Some(want), Some(have)) = (expected["properties"].as_object(), found["properties"].as_object()) else {
        return Some("its mapping has no fields".into());
    };
    for (name, spec) in want {
        let Some(field) = have.get(name) else {
            return Some(format!("its mapping lacks the field `{name}`"));
        };
        for attribute in ["type", "analyzer"] {
            if field.get(attribute) != spec.get(attribute) {
                return Some(format!("its field `{name}` has another {attribute}"));
            }
        }
    }
    if let Some(extra) = have.keys().find(|name| !want.contains_key(*name)) {
        return Some(format!("its mapping has a field `{extra}` that nexus does not write"));
    }
    None
}

/// Index names: lowercase, none of `\/*?"<>|,# :`, not starting with `-_+.`.
fn validate_prefix(prefix: &str) -> Result<()> {
    let bad_char = prefix.chars().find(|c| c.is_uppercase() || "\\/*?\"<>|,# :".contains(*c) || c.is_whitespace());
    if prefix.is_empty() || prefix.len() > 200 || prefix.starts_with(['-', '_', '+', '.']) || bad_char.is_some() {
        return Err(Error::config(format!(
            "invalid configuration: `{PREFIX_SETTING}` {prefix:?} is not usable in index names: use lowercase \
             letters, digits and `-`, at most 200 characters, not starting with `-` or `_`"
        )));
    }
    Ok(())
}

/// The generation number of `index` when it is one of `alias`'s generations.
fn generation_of(alias: &str, index: &str) -> Option<u64> {
    let n = index.strip_prefix(alias)?.strip_prefix('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The server's error as one line: `type: reason`.
fn server_reason(body: &Value) -> String {
    let error = &body["error"];
    match (error.get("type").and_then(Value::as_str), error.get("reason").and_then(Value::as_str)) {
        (Some(kind), Some(reason)) => format!("{kind}: {reason}"),
        (Some(kind), None) => kind.to_string(),
        _ => match (error.as_str(), body) {
            (Some(text), _) => text.to_string(),
            (None, Value::Null) => "(no answer body)".to_string(),
            (None, _) => body.to_string().chars().take(300).collect(),
        },
    }
}

fn error_type(body: &Value) -> &str {
    body.pointer("/error/type").and_then(Value::as_str).unwrap_or_default()
}

/// The REST client: one per process, shared by every generation's handle.
struct Client {
    http: reqwest::Client,
    /// The server's URL without credentials, ending in `/`.
    base: Url,
    /// What messages call the server: `opensearch at http://host:9200`.
    shown: String,
    auth: Option<(String, Option<String>)>,
    /// `{index_prefix}-text`.
    alias: String,
    /// The highlight parameter that caps how much of a text is analysed (Elasticsearch and
    /// OpenSearch name it differently; OpenSearch before 2.2 has none).
    highlight_limit: Option<&'static str>,
}

/// A response: its status and its JSON body (`Null` when it has none).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Client {
    fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path.trim_start_matches('/')).map_err(|e| Error::internal("build a search request url", e))
    }

    /// Sends one request. Transport failures, timeouts, 429 and 5xx are `backend_unavailable`,
    /// 401/403 an error naming the credentials; other answers are the caller's to read.
    async fn send(&self, method: Method, path: &str, body: Option<Body>, context: &str) -> Result<Answer> {
        let mut request = self.http.request(method, self.url(path)?);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password.as_deref());
        }
        request = match body {
            Some(Body::Json(value)) => request.json(&value),
            Some(Body::Ndjson(text)) => {
                request.header(reqwest::header::CONTENT_TYPE, "application/x-ndjson").body(text)
            }
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport_error(context, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(context, &e))?;
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::new(
                ErrorCode::BackendUnavailable,
                format!(
                    "{} refused nexus's credentials ({context}: {} {}): check `store.text.username` and the password \
                     in `store.text.password_env` or `store.text.password_file`, and that the user may manage the \
                     `{}*` indices",
                    self.shown,
                    status.as_u16(),
                    server_reason(&body),
                    self.alias
                ),
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            metrics::counter!("nexus_backend_errors_total", "backend" => "elasticsearch").increment(1);
            return Err(Error::new(
                ErrorCode::BackendUnavailable,
                format!("{} is unavailable ({context}): {} {}", self.shown, status.as_u16(), server_reason(&body)),
            ));
        }
        Ok(Answer { status, body })
    }

    fn transport_error(&self, context: &str, e: &reqwest::Error) -> Error {
        use std::error::Error as _;
        metrics::counter!("nexus_backend_errors_total", "backend" => "elasticsearch").increment(1);
        let mut cause = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let what = if e.is_timeout() { "did not answer in time" } else { "is unreachable" };
        tracing::warn!(target = %self.shown, context, error = %cause, "search cluster unreachable");
        Error::new(ErrorCode::BackendUnavailable, format!("{} {what} ({context}): {cause}", self.shown))
    }

    /// A failure the server reported for `context`.
    fn failure(&self, context: &str, answer: &Answer) -> Error {
        self.reported(context, answer.status.as_u16(), &answer.body)
    }

    /// A failure with `status` and the server's error body.
    fn reported(&self, context: &str, status: u16, body: &Value) -> Error {
        let reason = server_reason(body);
        if error_type(body) == "index_not_found_exception" {
            return Error::store(
                &format!("{} {context}", self.shown),
                format!(
                    "{reason}; the text index was deleted outside nexus: restart nexus to create an empty one under \
                     `{}`, then run `nexus reindex --store text`",
                    self.alias
                ),
            );
        }
        Error::store(&format!("{} {context}", self.shown), format!("{status} {reason}"))
    }

    /// Sends a request whose only acceptable answer is a success.
    async fn ok(&self, method: Method, path: &str, body: Option<Body>, context: &str) -> Result<Value> {
        let answer = self.send(method, path, body, context).await?;
        if !answer.status.is_success() {
            return Err(self.failure(context, &answer));
        }
        Ok(answer.body)
    }

    /// The concrete indices behind the alias (none when it does not exist).
    async fn live_indices(&self) -> Result<Vec<String>> {
        let context = "read the text alias";
        let answer = self.send(Method::GET, &format!("_alias/{}", self.alias), None, context).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !answer.status.is_success() {
            return Err(self.failure(context, &answer));
        }
        Ok(answer.body.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default())
    }

    /// Every generation index of this prefix, with its mapping.
    async fn generations(&self) -> Result<Vec<(u64, String, Value)>> {
        let context = "list text indices";
        let body = self.ok(Method::GET, &format!("{}-*", self.alias), None, context).await?;
        let mut out: Vec<(u64, String, Value)> = body
            .as_object()
            .map(|indices| {
                indices
                    .iter()
                    .filter_map(|(name, spec)| {
                        generation_of(&self.alias, name).map(|n| (n, name.clone(), spec["mappings"].clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|(n, _, _)| *n);
        Ok(out)
    }

    /// Creates the next free generation, not behind the alias.
    async fn create_generation(&self) -> Result<String> {
        let mut next = self.generations().await?.last().map_or(1, |(n, _, _)| n + 1);
        for _ in 0..10 {
            let name = format!("{}-{next}", self.alias);
            let context = "create a text index";
            let answer = self.send(Method::PUT, &name, Some(Body::Json(index_body(None))), context).await?;
            if answer.status.is_success() {
                tracing::info!(target = %self.shown, index = %name, "text index created");
                return Ok(name);
            }
            if error_type(&answer.body) != "resource_already_exists_exception" {
                return Err(self.failure(context, &answer));
            }
            next += 1;
        }
        Err(Error::store(&format!("{} create a text index", self.shown), "no free generation name"))
    }

    /// Creates the first generation behind the alias; `false` when another node got there first
    /// (or the name is taken), so the caller looks again.
    async fn create_first_generation(&self) -> Result<bool> {
        let next = self.generations().await?.last().map_or(1, |(n, _, _)| n + 1);
        let name = format!("{}-{next}", self.alias);
        let context = "create a text index";
        let body = index_body(Some(&self.alias));
        let answer = self.send(Method::PUT, &name, Some(Body::Json(body)), context).await?;
        if answer.status.is_success() {
            tracing::info!(target = %self.shown, index = %name, alias = %self.alias, "text index created");
            return Ok(true);
        }
        match error_type(&answer.body) {
            "resource_already_exists_exception" | "invalid_alias_name_exception" => Ok(false),
            _ => Err(self.failure(context, &answer)),
        }
    }

    /// Points the alias at `index` alone (one `_aliases` request), then deletes the indices it
    /// pointed at before.
    async fn switch_alias(&self, index: &str) -> Result<()> {
        let old: Vec<String> = self.live_indices().await?.into_iter().filter(|i| i != index).collect();
        let mut actions: Vec<Value> =
            old.iter().map(|i| json!({ "remove": { "index": i, "alias": self.alias } })).collect();
        actions.push(json!({ "add": { "index": index, "alias": self.alias } }));
        self.ok(Method::POST, "_aliases", Some(Body::Json(json!({ "actions": actions }))), "switch the text alias")
            .await?;
        tracing::info!(target = %self.shown, alias = %self.alias, index, "text alias switched");
        for i in old {
            self.delete_index(&i).await?;
        }
        Ok(())
    }

    async fn delete_index(&self, index: &str) -> Result<()> {
        let context = "delete a text index";
        let answer = self.send(Method::DELETE, index, None, context).await?;
        if !answer.status.is_success() && answer.status != StatusCode::NOT_FOUND {
            return Err(self.failure(context, &answer));
        }
        tracing::info!(target = %self.shown, index, "text index deleted");
        Ok(())
    }
}

enum Body {
    Json(Value),
    Ndjson(String),
}

/// Where a handle reads and writes.
#[derive(Clone, PartialEq)]
enum Target {
    /// The live generation, through the alias.
    Live,
    /// A generation that is not live (yet).
    Generation(String),
}

/// A buffered write: the newest state of a key and its position.
enum Pending {
    Upsert(TextDoc),
    Delete,
}

#[derive(Default)]
struct Buffer {
    writes: BTreeMap<RecordKey, (Seq, Pending)>,
    bytes: usize,
}

impl Buffer {
    fn put(&mut self, key: RecordKey, seq: Seq, write: Pending) {
        if self.writes.get(&key).is_some_and(|(held, _)| *held > seq) {
            return; // a stale write never replaces a newer one
        }
        if let Pending::Upsert(doc) = &write {
            self.bytes += doc.title.len() + doc.body.len() + 128;
        }
        self.writes.insert(key, (seq, write));
    }

    fn full(&self) -> bool {
        self.writes.len() >= FLUSH_OPS || self.bytes >= FLUSH_BYTES
    }
}

/// A handle on the live text store, or on one generation of it.
pub struct ElasticsearchTextStore {
    client: Arc<Client>,
    target: RwLock<Target>,
    buffer: tokio::sync::Mutex<Buffer>,
}

/// Checks that the server is a supported product and version; answers its name for messages
/// and its highlighter's parameter that caps the text analysed.
fn check_version(shown: &str, info: &Value) -> Result<(&'static str, Option<&'static str>)> {
    let number = info.pointer("/version/number").and_then(Value::as_str).unwrap_or_default();
    let mut parts = number.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let opensearch = info.pointer("/version/distribution").and_then(Value::as_str) == Some("opensearch");
    let (product, minimum, newest) = if opensearch { ("opensearch", 2, 3) } else { ("elasticsearch", 8, 9) };
    if major < minimum {
        return Err(Error::config(format!(
            "the server at {shown} ({URL_SETTING}) is {product} {number:?}, but the text store needs elasticsearch \
             8 or 9, or opensearch 2 or 3"
        )));
    }
    if major > newest {
        tracing::warn!(target = %shown, version = number, "{product} is newer than the versions nexus was tested with");
    }
    let highlight_limit = match (opensearch, (major, minor) >= (2, 2)) {
        (false, _) => Some("max_analyzed_offset"),
        (true, true) => Some("max_analyzer_offset"),
        (true, false) => None,
    };
    Ok((product, highlight_limit))
}

impl ElasticsearchTextStore {
    /// Connects to `store.text.url`, checks the server, and makes sure the alias and a first
    /// generation exist (refusing ones that Nexus did not make).
    pub async fn open(config: &TextConfig) -> Result<ElasticsearchTextStore> {
        let Some(url) = &config.url else {
            return Err(Error::config(format!(
                "invalid configuration: `{URL_SETTING}` is required with `store.text.backend = \"elasticsearch\"`"
            )));
        };
        validate_prefix(&config.index_prefix)?;
        let mut base = Url::parse(url.expose().trim()).map_err(|e| {
            Error::config(format!("invalid configuration: `{URL_SETTING}` is not a URL ({e}); use http(s)://host:9200"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(Error::config(format!(
                "invalid configuration: `{URL_SETTING}` must be an http:// or https:// URL with a host"
            )));
        }
        // Credentials in the URL are used when the settings name none.
        let from_url = (!base.username().is_empty())
            .then(|| (percent_decode(base.username()), base.password().map(percent_decode)));
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let auth = match &config.username {
            Some(user) => Some((user.clone(), config.password.as_ref().map(|p| p.expose().to_string()))),
            None => from_url,
        };
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_config("store.text", config.ca_file.as_deref())?)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::internal("build the search cluster client", e))?;
        let origin = base.origin().ascii_serialization();
        let mut client = Client {
            http,
            base,
            shown: format!("elasticsearch at {origin}"),
            auth,
            alias: format!("{}-text", config.index_prefix),
            highlight_limit: None,
        };

        let info = client.send(Method::GET, "", None, URL_SETTING).await?;
        if !info.status.is_success() {
            return Err(Error::config(format!(
                "the server at {origin} ({URL_SETTING}) did not answer as elasticsearch or opensearch: {} {}",
                info.status.as_u16(),
                server_reason(&info.body)
            )));
        }
        let (product, highlight_limit) = check_version(&origin, &info.body)?;
        client.shown = format!("{product} at {origin}");
        client.highlight_limit = highlight_limit;
        let client = Arc::new(client);
        ensure_alias(&client).await?;
        Ok(ElasticsearchTextStore {
            client,
            target: RwLock::new(Target::Live),
            buffer: tokio::sync::Mutex::new(Buffer::default()),
        })
    }

    /// The index name requests go to: the alias, or this handle's generation.
    fn index(&self) -> String {
        match &*self.target.read() {
            Target::Live => self.client.alias.clone(),
            Target::Generation(name) => name.clone(),
        }
    }

    /// The path of a write request to this handle's index: writes to the live store require the
    /// alias, so that a deleted alias is an error rather than a new index made up by the server.
    fn write_path(&self, path: &str, query: &str) -> String {
        let index = self.index();
        let sep = if query.is_empty() { "" } else { "&" };
        match &*self.target.read() {
            Target::Live => format!("{index}/{path}?require_alias=true{sep}{query}"),
            Target::Generation(_) => format!("{index}/{path}?{query}"),
        }
    }

    /// Sends the buffered writes in `_bulk` requests; a version conflict (a stale write) is
    /// success. The buffer is emptied only when every write went through.
    async fn flush(&self, buffer: &mut Buffer) -> Result<()> {
        let path = self.write_path("_bulk", "");
        let writes: Vec<(&RecordKey, &(Seq, Pending))> = buffer.writes.iter().collect();
        let mut start = 0;
        while start < writes.len() {
            let mut body = String::new();
            let mut end = start;
            while end < writes.len() && end - start < FLUSH_OPS && body.len() < FLUSH_BYTES {
                let (key, (seq, write)) = writes[end];
                let action =
                    json!({ "index": { "_id": key.to_string(), "version": seq, "version_type": "external_gte" } });
                let source = match write {
                    Pending::Upsert(doc) => json!({
                        "key": *key as i64,
                        "tenant": doc.tenant.as_str(),
                        "kind": doc.kind,
                        "title": doc.title,
                        "body": doc.body,
                        "tags": doc.tags,
                        "facets": doc.facets,
                        "date": doc.date,
                        "seq": seq,
                    }),
                    // A tombstone: no tenant, so nothing reads it; its version keeps stale writes out.
                    Pending::Delete => json!({ "key": *key as i64, "seq": seq }),
                };
                body.push_str(&action.to_string());
                body.push('\n');
                body.push_str(&source.to_string());
                body.push('\n');
                end += 1;
            }
            self.bulk(&path, body).await?;
            start = end;
        }
        buffer.writes.clear();
        buffer.bytes = 0;
        Ok(())
    }

    async fn bulk(&self, path: &str, body: String) -> Result<()> {
        let context = "write text documents";
        let answer = self.client.send(Method::POST, path, Some(Body::Ndjson(body)), context).await?;
        if !answer.status.is_success() {
            return Err(self.client.failure(context, &answer));
        }
        if answer.body["errors"].as_bool() != Some(true) {
            return Ok(());
        }
        let items = answer.body["items"].as_array().map(Vec::as_slice).unwrap_or_default();
        for item in items {
            let Some(result) = item.as_object().and_then(|o| o.values().next()) else { continue };
            let status = result["status"].as_u64().unwrap_or(0);
            if result.get("error").is_none() || status == 409 {
                continue; // 409: the server holds a newer state of this key
            }
            let reason = server_reason(result);
            if status == 429 || status >= 500 {
                return Err(Error::new(
                    ErrorCode::BackendUnavailable,
                    format!("{} is unavailable ({context}): {status} {reason}", self.client.shown),
                ));
            }
            return Err(self.client.reported(context, status as u16, result));
        }
        Ok(())
    }

    async fn search_request(&self, body: Value, context: &str) -> Result<Vec<Value>> {
        let answer =
            self.client.ok(Method::POST, &format!("{}/_search", self.index()), Some(Body::Json(body)), context).await?;
        Ok(answer.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// A new, empty index for this handle's generation (after `clear` of one that is not live).
    async fn recreate(&self, name: &str) -> Result<()> {
        self.client.delete_index(name).await?;
        let context = "create a text index";
        self.client.ok(Method::PUT, name, Some(Body::Json(index_body(None))), context).await?;
        Ok(())
    }
}

/// Makes sure the alias exists over one index with Nexus's mapping, creating a first generation
/// when there is none.
async fn ensure_alias(client: &Client) -> Result<()> {
    let context = "read the text index";
    for _ in 0..5 {
        let answer = client.send(Method::GET, &client.alias, None, context).await?;
        if answer.status == StatusCode::NOT_FOUND {
            if client.create_first_generation().await? {
                return Ok(());
            }
            continue; // another node created the alias meanwhile: check what it made
        }
        if !answer.status.is_success() {
            return Err(client.failure(context, &answer));
        }
        let indices = answer.body.as_object().cloned().unwrap_or_default();
        let refuse = |why: String| {
            Error::config(format!(
                "{} holds `{}`, which nexus did not create: {why}; nothing was changed. Choose another \
                 `{PREFIX_SETTING}`, or remove it if it is unused",
                client.shown, client.alias
            ))
        };
        if indices.contains_key(&client.alias) {
            return Err(refuse("it is an index, not an alias".into()));
        }
        if indices.len() != 1 {
            return Err(refuse(format!("the alias points at {} indices", indices.len())));
        }
        let (name, spec) = indices.iter().next().expect("one index");
        if let Some(why) = mapping_mismatch(&spec["mappings"]) {
            return Err(refuse(format!("its index `{name}` has another mapping ({why})")));
        }
        return Ok(());
    }
    Err(Error::store(&format!("{} {context}", client.shown), "the alias kept changing while it was checked"))
}

/// Decodes `%XX` escapes (credentials in a URL).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One word or phrase of a query.
#[derive(Clone, Debug, PartialEq)]
struct Unit {
    text: String,
    /// Matched as a phrase: quoted, or a word the analyzer splits (`covid-19`).
    phrase: bool,
}

/// A parsed query: optional, required and excluded words and phrases.
#[derive(Debug, Default, PartialEq)]
struct Parsed {
    should: Vec<Unit>,
    must: Vec<Unit>,
    must_not: Vec<Unit>,
}

#[derive(Clone, Copy, PartialEq)]
enum Occur {
    Should,
    Must,
    MustNot,
}

/// Reads the query language leniently: anything malformed becomes plain words.
fn parse(text: &str) -> Parsed {
    let cleaned: String =
        text.chars().map(|c| if "()[]{}:^~*!\\<>=".contains(c) || c.is_control() { ' ' } else { c }).collect();
    let chars: Vec<char> = cleaned.chars().collect();
    let mut units: Vec<(Occur, Unit)> = Vec::new();
    let mut i = 0;
    let mut negate_next = false;
    let mut require_next = false;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut occur = Occur::Should;
        if (chars[i] == '+' || chars[i] == '-') && i + 1 < chars.len() && !chars[i + 1].is_whitespace() {
            occur = if chars[i] == '+' { Occur::Must } else { Occur::MustNot };
            i += 1;
        }
        let (unit, quoted) = if chars[i] == '"' {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && chars[end] != '"' {
                end += 1;
            }
            i = (end + 1).min(chars.len());
            (chars[start..end].iter().collect::<String>(), true)
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '"' {
                i += 1;
            }
            (chars[start..i].iter().collect::<String>(), false)
        };
        if !quoted && occur == Occur::Should {
            match unit.as_str() {
                "AND" => {
                    if let Some(last) = units.last_mut().filter(|(o, _)| *o == Occur::Should) {
                        last.0 = Occur::Must;
                    }
                    require_next = true;
                    continue;
                }
                "OR" => continue,
                "NOT" => {
                    negate_next = true;
                    continue;
                }
                _ => {}
            }
        }
        if occur == Occur::Should && negate_next {
            occur = Occur::MustNot;
        } else if occur == Occur::Should && require_next {
            occur = Occur::Must;
        }
        negate_next = false;
        require_next = false;
        let words = unit.trim_matches(|c: char| !c.is_alphanumeric());
        let text = if quoted { unit.split_whitespace().collect::<Vec<_>>().join(" ") } else { words.to_string() };
        if text.is_empty() {
            continue;
        }
        let phrase = quoted || text.chars().any(|c| !c.is_alphanumeric());
        units.push((occur, Unit { text, phrase }));
    }
    let mut parsed = Parsed::default();
    for (occur, unit) in units.into_iter().take(MAX_UNITS) {
        match occur {
            Occur::Should => parsed.should.push(unit),
            Occur::Must => parsed.must.push(unit),
            Occur::MustNot => parsed.must_not.push(unit),
        }
    }
    parsed
}

/// A unit matched in title (boosted) or body; `required` lets a unit the analyzer drops entirely
/// (a stop word) match everything instead of nothing.
fn unit_query(unit: &Unit, title_weight: f32, required: bool) -> Value {
    let zero_terms = if required { "all" } else { "none" };
    let kind = if unit.phrase { "match_phrase" } else { "match" };
    json!({ "bool": { "should": [
        { kind: { "title": { "query": unit.text, "boost": title_weight, "zero_terms_query": zero_terms } } },
        { kind: { "body": { "query": unit.text, "zero_terms_query": zero_terms } } },
    ] } })
}

/// The user's query as a server query, `None` when it can match nothing (no word to look for).
/// Scores add up per word and field, as the embedded store's do.
fn user_query(parsed: &Parsed, title_weight: f32) -> Option<Value> {
    if parsed.should.is_empty() && parsed.must.is_empty() {
        return None;
    }
    let title_weight = if title_weight.is_finite() { title_weight.max(0.0) } else { super::DEFAULT_TITLE_WEIGHT };
    let mut should = Vec::new();
    // Plain words share one match query per field: the same sum of per-word scores, fewer clauses.
    let words: Vec<&str> = parsed.should.iter().filter(|u| !u.phrase).map(|u| u.text.as_str()).collect();
    if !words.is_empty() {
        should.push(unit_query(&Unit { text: words.join(" "), phrase: false }, title_weight, false));
    }
    should.extend(parsed.should.iter().filter(|u| u.phrase).map(|u| unit_query(u, title_weight, false)));
    let must: Vec<Value> = parsed.must.iter().map(|u| unit_query(u, title_weight, true)).collect();
    let must_not: Vec<Value> = parsed.must_not.iter().map(|u| unit_query(u, title_weight, false)).collect();
    let minimum = if must.is_empty() { 1 } else { 0 };
    Some(json!({ "bool": { "should": should, "must": must, "must_not": must_not, "minimum_should_match": minimum } }))
}

/// The tenant and the query's filters.
fn filters(query: &TextQuery) -> Vec<Value> {
    let mut filters = vec![json!({ "term": { "tenant": query.tenant.as_str() } })];
    if let Some(kinds) = &query.kinds {
        filters.push(json!({ "terms": { "kind": kinds } }));
    }
    for tag in &query.tags {
        filters.push(json!({ "term": { "tags": tag } }));
    }
    for facet in &query.facets {
        filters.push(json!({ "term": { "facets": facet } }));
    }
    if query.date_from.is_some() || query.date_to.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(from) = query.date_from {
            range.insert("gte".into(), json!(from));
        }
        if let Some(to) = query.date_to {
            range.insert("lte".into(), json!(to));
        }
        filters.push(json!({ "range": { "date": range } }));
    }
    filters
}

/// Highlights: the body's best fragment (or its start), the whole title. Texts longer than the
/// servers' default analysis limit are highlighted in their first million characters, not refused.
fn highlight(limit_parameter: Option<&str>) -> Value {
    let mut highlight = json!({
        "pre_tags": [PRE_TAG.to_string()],
        "post_tags": [POST_TAG.to_string()],
        "fields": {
            "body": { "fragment_size": SNIPPET_CHARS, "number_of_fragments": 1, "no_match_size": SNIPPET_CHARS },
            "title": { "number_of_fragments": 0 }
        }
    });
    if let Some(parameter) = limit_parameter {
        highlight[parameter] = json!(HIGHLIGHT_MAX_CHARS);
    }
    highlight
}

/// Text with highlight tags -> the text without them and the byte ranges they marked. A tag
/// without its partner is dropped.
fn untag(tagged: &str) -> Snippet {
    let mut text = String::with_capacity(tagged.len());
    let mut highlights = Vec::new();
    let mut open: Option<usize> = None;
    for c in tagged.chars() {
        match c {
            PRE_TAG => open = Some(text.len()),
            POST_TAG => {
                if let Some(start) = open.take()
                    && start < text.len()
                {
                    highlights.push((start, text.len()));
                }
            }
            _ => text.push(c),
        }
    }
    Snippet { text, highlights }
}

/// A hit's snippet: the body fragment with a match, else the title with one, else the body's start.
fn snippet_of(hit: &Value) -> Snippet {
    let fragment = |field: &str| hit.pointer(&format!("/highlight/{field}/0")).and_then(Value::as_str);
    let body = fragment("body").map(untag);
    if let Some(body) = &body
        && !body.highlights.is_empty()
    {
        return body.clone();
    }
    if let Some(title) = fragment("title").map(untag)
        && !title.highlights.is_empty()
    {
        return title;
    }
    body.unwrap_or_default()
}

fn hit_key(hit: &Value) -> Option<RecordKey> {
    hit["_id"].as_str()?.parse().ok()
}

#[async_trait]
impl TextStore for ElasticsearchTextStore {
    fn backend(&self) -> &'static str {
        "elasticsearch"
    }

    fn shared(&self) -> bool {
        true
    }
    fn generations(&self) -> bool {
        true
    }

    async fn upsert(&self, docs: Vec<TextDoc>, seq: Seq) -> Result<()> {
        let mut buffer = self.buffer.lock().await;
        for doc in docs {
            buffer.put(doc.key, seq, Pending::Upsert(doc));
        }
        if buffer.full() {
            self.flush(&mut buffer).await?;
        }
        Ok(())
    }

    async fn delete(&self, keys: Vec<RecordKey>, seq: Seq) -> Result<()> {
        let mut buffer = self.buffer.lock().await;
        for key in keys {
            buffer.put(key, seq, Pending::Delete);
        }
        if buffer.full() {
            self.flush(&mut buffer).await?;
        }
        Ok(())
    }

    async fn search(&self, query: TextQuery) -> Result<Vec<TextHit>> {
        if query.limit == 0 || query.offset >= RESULT_WINDOW {
            return Ok(Vec::new());
        }
        let Some(user) = user_query(&parse(&query.query), query.title_weight) else {
            return Ok(Vec::new());
        };
        let size = query.limit.min(RESULT_WINDOW - query.offset);
        let mut body = json!({
            "from": query.offset,
            "size": size,
            "track_total_hits": false,
            "_source": false,
            "query": { "bool": { "must": [user], "filter": filters(&query) } },
        });
        if query.snippets {
            body["highlight"] = highlight(self.client.highlight_limit);
        }
        let hits = self.search_request(body, "search text").await?;
        Ok(hits
            .iter()
            .filter_map(|hit| {
                let key = hit_key(hit)?;
                let score = hit["_score"].as_f64().unwrap_or(0.0) as f32;
                let snippet = if query.snippets { snippet_of(hit) } else { Snippet::default() };
                Some(TextHit { key, score, snippet })
            })
            .collect())
    }

    async fn snippets(
        &self,
        tenant: &TenantId,
        query: &str,
        keys: Vec<RecordKey>,
    ) -> Result<Vec<(RecordKey, Snippet)>> {
        let user = user_query(&parse(query), super::DEFAULT_TITLE_WEIGHT);
        let mut found: HashMap<RecordKey, Snippet> = HashMap::new();
        let mut wanted: Vec<RecordKey> = keys.clone();
        wanted.sort_unstable();
        wanted.dedup();
        for chunk in wanted.chunks(SNIPPETS_PAGE) {
            let ids: Vec<String> = chunk.iter().map(|k| k.to_string()).collect();
            let mut bool_query = json!({ "filter": [
                { "term": { "tenant": tenant.as_str() } },
                { "ids": { "values": ids } },
            ] });
            if let Some(user) = &user {
                // Optional: it only tells the highlighter what matched.
                bool_query["should"] = json!([user]);
            }
            let body = json!({
                "size": chunk.len(),
                "track_total_hits": false,
                "_source": false,
                "query": { "bool": bool_query },
                "highlight": highlight(self.client.highlight_limit),
            });
            for hit in self.search_request(body, "read text snippets").await? {
                if let Some(key) = hit_key(&hit) {
                    found.insert(key, snippet_of(&hit));
                }
            }
        }
        Ok(keys.into_iter().filter_map(|k| found.get(&k).map(|s| (k, s.clone()))).collect())
    }

    async fn commit(&self, seq: Seq) -> Result<()> {
        let mut buffer = self.buffer.lock().await;
        self.flush(&mut buffer).await?;
        let index = self.index();
        let context = "record the text position";
        let answer = self
            .client
            .send(
                Method::PUT,
                &self.write_path(&format!("_doc/{POSITION_ID}"), &format!("version={seq}&version_type=external_gte")),
                Some(Body::Json(json!({ "seq": seq }))),
                context,
            )
            .await?;
        // 409: a newer position is recorded already; it stays.
        if !answer.status.is_success() && answer.status != StatusCode::CONFLICT {
            return Err(self.client.failure(context, &answer));
        }
        self.client.ok(Method::POST, &format!("{index}/_refresh"), None, "refresh the text index").await?;
        Ok(())
    }

    async fn restore_layout(&self) -> Result<()> {
        // A rebuild's generation is written by `nexus reindex`, which starts over when it fails.
        if *self.target.read() != Target::Live {
            return Ok(());
        }
        ensure_alias(&self.client).await
    }

    async fn committed_seq(&self) -> Result<Seq> {
        let context = "read the text position";
        let answer = self
            .client
            .send(Method::GET, &format!("{}/_doc/{POSITION_ID}?realtime=false", self.index()), None, context)
            .await?;
        if answer.status == StatusCode::NOT_FOUND && answer.body["found"] == json!(false) {
            return Ok(0);
        }
        if !answer.status.is_success() {
            return Err(self.client.failure(context, &answer));
        }
        Ok(answer.body.pointer("/_source/seq").and_then(Value::as_u64).unwrap_or(0))
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let mut keys = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({
                "size": KEYS_PAGE,
                "track_total_hits": false,
                "_source": false,
                "query": { "exists": { "field": "tenant" } },
                "sort": [{ "key": "asc" }],
            });
            if let Some(after) = after.take() {
                body["search_after"] = after;
            }
            let hits = self.search_request(body, "list text keys").await?;
            keys.extend(hits.iter().filter_map(hit_key));
            if hits.len() < KEYS_PAGE {
                break;
            }
            after = hits.last().and_then(|h| h.get("sort").cloned());
            if after.is_none() {
                break;
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn clear(&self) -> Result<()> {
        let mut buffer = self.buffer.lock().await;
        buffer.writes.clear();
        buffer.bytes = 0;
        let target = self.target.read().clone();
        match target {
            // A new empty generation goes live: no tombstone or version of the old one survives.
            Target::Live => {
                let name = self.client.create_generation().await?;
                self.client.switch_alias(&name).await
            }
            Target::Generation(name) => self.recreate(&name).await,
        }
    }

    async fn stats(&self) -> Result<StoreStats> {
        let index = self.index();
        let count = self
            .client
            .ok(
                Method::POST,
                &format!("{index}/_count"),
                Some(Body::Json(json!({ "query": { "exists": { "field": "tenant" } } }))),
                "count text documents",
            )
            .await?;
        let sizes = self.client.ok(Method::GET, &format!("{index}/_stats/store"), None, "read text index size").await?;
        Ok(StoreStats {
            items: count["count"].as_u64().unwrap_or(0),
            bytes: sizes.pointer("/_all/primaries/store/size_in_bytes").and_then(Value::as_u64).unwrap_or(0),
        })
    }

    async fn new_generation(&self) -> Result<Option<Arc<dyn TextStore>>> {
        let live = self.client.live_indices().await?;
        for (_, name, mappings) in self.client.generations().await? {
            // Left by a rebuild that never went live; only indices that carry Nexus's marker.
            if !live.contains(&name) && mapping_mismatch(&mappings).is_none() {
                self.client.delete_index(&name).await?;
            }
        }
        let name = self.client.create_generation().await?;
        Ok(Some(Arc::new(ElasticsearchTextStore {
            client: self.client.clone(),
            target: RwLock::new(Target::Generation(name)),
            buffer: tokio::sync::Mutex::new(Buffer::default()),
        })))
    }

    async fn make_live(&self) -> Result<()> {
        let _buffer = self.buffer.lock().await;
        let target = self.target.read().clone();
        let Target::Generation(name) = target else {
            return Ok(()); // live already
        };
        self.client.switch_alias(&name).await?;
        *self.target.write() = Target::Live;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str, phrase: bool) -> Unit {
        Unit { text: text.into(), phrase }
    }

    #[test]
    fn the_query_language_reads_words_phrases_required_and_excluded() {
        let parsed = parse("tomatoes \"waters the  garden\" +sun -salad covid-19");
        assert_eq!(
            parsed.should,
            vec![unit("tomatoes", false), unit("waters the garden", true), unit("covid-19", true)]
        );
        assert_eq!(parsed.must, vec![unit("sun", false)]);
        assert_eq!(parsed.must_not, vec![unit("salad", false)]);
    }

    #[test]
    fn operators_and_malformed_syntax_become_plain_words() {
        let parsed = parse("red AND green OR blue NOT black");
        assert_eq!(parsed.must, vec![unit("red", false), unit("green", false)]);
        assert_eq!(parsed.should, vec![unit("blue", false)]);
        assert_eq!(parsed.must_not, vec![unit("black", false)]);
        let parsed = parse("tomatoes AND ( \"unclosed phrase + - tenant:other");
        assert_eq!(parsed.must, vec![unit("tomatoes", false), unit("unclosed phrase + - tenant other", true)]);
        assert!(parse("( ) - + \"\"").should.is_empty());
        assert!(user_query(&parse("-salad"), 2.0).is_none(), "only exclusions match nothing");
    }

    #[test]
    fn highlight_tags_become_byte_ranges() {
        let snippet = untag("caf\u{e9} \u{e000}gr\u{fc}n\u{e001} and \u{e000}x\u{e001} \u{e001}stray");
        assert_eq!(snippet.text, "caf\u{e9} gr\u{fc}n and x stray");
        let ranges: Vec<&str> = snippet.highlights.iter().map(|&(s, e)| &snippet.text[s..e]).collect();
        assert_eq!(ranges, vec!["gr\u{fc}n", "x"]);
    }

    #[test]
    fn mappings_made_elsewhere_are_told_apart() {
        assert!(mapping_mismatch(&mapping()).is_none());
        let mut other = mapping();
        other["properties"]["body"]["analyzer"] = json!("standard");
        assert!(mapping_mismatch(&other).unwrap().contains("body"));
        let mut unmarked = mapping();
        unmarked["_meta"] = json!({});
        assert!(mapping_mismatch(&unmarked).is_some());
        assert!(validate_prefix("nexus").is_ok());
        assert!(validate_prefix("Nexus").is_err() && validate_prefix("_x").is_err() && validate_prefix("a b").is_err());
        assert_eq!(generation_of("nexus-text", "nexus-text-12"), Some(12));
        assert_eq!(generation_of("nexus-text", "nexus-text-text-1"), None);
    }
}
