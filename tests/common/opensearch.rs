//! A real OpenSearch-API server for tests: the one `NEXUS_TEST_OPENSEARCH_URL` names, else an
//! osmem-server (PyPI `osmem-server==0.1.6`: an in-memory server of the OpenSearch 3 API) that
//! this test process starts.
//!
//! Contract:
//! - With `NEXUS_TEST_OPENSEARCH_URL` set (CI starts one server per run), tests use that server.
//! - Otherwise the first call starts one osmem-server per test process on a free loopback port.
//!   It stops when this process goes away: it watches this process's id (`--parent-pid`) and its
//!   standard input, which only this process holds.
//! - The binary is `OSMEM_SERVER_BIN`, else the one the Python package bundles; when neither is
//!   there, the first call panics saying to run `pip install osmem-server==0.1.6`.
//! - Tests never share state: each takes a fresh index prefix ([`fresh_prefix`]).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The server's URL, `http://127.0.0.1:PORT`.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("NEXUS_TEST_OPENSEARCH_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_string(),
        _ => {
            let server = Osmem::start();
            let url = server.url.clone();
            // Kept for the life of the process: its standard input closes when the process ends.
            static SHARED: OnceLock<Mutex<Osmem>> = OnceLock::new();
            let _ = SHARED.set(Mutex::new(server));
            url
        }
    })
}

/// An index prefix no other test uses.
pub fn fresh_prefix(hint: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let hint: String =
        hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(30).collect();
    format!("t-{hint}-{}-{n}-{nanos:x}", std::process::id())
}

/// The osmem-server binary: `OSMEM_SERVER_BIN`, else the one the Python package bundles.
pub fn osmem_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("OSMEM_SERVER_BIN")
        && !bin.is_empty()
    {
        return PathBuf::from(bin);
    }
    let output = Command::new("python3")
        .args(["-c", "import osmem_server; print(osmem_server.resolve_binary())"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        _ => panic!(
            "osmem-server is not installed: run `pip install osmem-server==0.1.6` (or set NEXUS_TEST_OPENSEARCH_URL \
             to a running OpenSearch or Elasticsearch)"
        ),
    }
}

/// An osmem-server process of this test process; killed when dropped.
pub struct Osmem {
    pub url: String,
    child: Child,
    _stdin: ChildStdin,
}

impl Osmem {
    /// Starts a server of this process's own on a free loopback port.
    pub fn start() -> Osmem {
        let bin = osmem_binary();
        let mut child = Command::new(&bin)
            .args(["--addr", "127.0.0.1:0", "--no-ja", "--parent-pid", &std::process::id().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // The first line is `{"url": ..., "pid": ..., "version": ...}` once it listens.
        let ready = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let url = serde_json::from_str::<Value>(&ready)
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("{} did not say where it listens: {ready:?}", bin.display()));
        // Whatever it prints later is read and dropped, so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Osmem { url, child, _stdin: stdin }
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request to the test server: its status and JSON body (`Null` when it has none).
pub async fn request(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{}/{}", url(), path.trim_start_matches('/')));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the test search server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
