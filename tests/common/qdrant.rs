//! A real Qdrant for tests: the one `NEXUS_TEST_QDRANT_URL` names, else a Qdrant 1.18.3 that this
//! test process starts.
//!
//! Contract:
//! - With `NEXUS_TEST_QDRANT_URL` set (CI starts one server per run), tests use that server and
//!   the API key in `NEXUS_TEST_QDRANT_API_KEY`. The server must ask for that key: a test checks
//!   that a wrong one is refused.
//! - Otherwise the first call starts one Qdrant per test process with the bundled server's
//!   `start.sh` (found as `.ci/cluster-servers.sh` finds it: `NEXUS_QDRANT_DIR`, else
//!   `shared/tools/qdrant` beside the repository, else `/work/shared/tools/qdrant`; it needs `zstd`)
//!   on a free loopback port below 32768, with a random API key and its storage in a temporary
//!   directory. A watchdog stops it and removes the directory once this process is gone.
//! - Tests never share state: each takes a fresh collection prefix ([`fresh_prefix`]).
//!
//! Starting is synchronous (curl runs as a process), so any test can call it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where a test Qdrant listens, and the API key it asks for.
#[derive(Clone, Debug)]
pub struct QdrantServer {
    /// `http://127.0.0.1:PORT` (the REST port).
    pub url: String,
    pub api_key: String,
}

/// The shared test server.
pub fn server() -> &'static QdrantServer {
    static SERVER: OnceLock<QdrantServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        match var("NEXUS_TEST_QDRANT_URL") {
            Some(url) => QdrantServer {
                url: url.trim_end_matches('/').to_string(),
                api_key: var("NEXUS_TEST_QDRANT_API_KEY").unwrap_or_else(|| {
                    panic!(
                        "NEXUS_TEST_QDRANT_URL is set without NEXUS_TEST_QDRANT_API_KEY (the key the server asks for)"
                    )
                }),
            },
            None => start(),
        }
    })
}

/// A collection prefix no other test uses.
pub fn fresh_prefix(hint: &str) -> String {
    format!("t-{}-{}", sanitize(hint), unique_suffix())
}

/// A URL where nothing listens (a free loopback port).
pub fn unreachable_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// One request to the test server (with its API key): the status and the JSON body (`Null` when
/// it has none).
pub async fn request(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let server = server();
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, format!("{}/{}", server.url, path.trim_start_matches('/')))
        .header("api-key", &server.api_key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the test qdrant answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The directory of the bundled Qdrant server (start.sh, qdrant.zst).
fn tool_dir() -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/qdrant");
    let candidates = [
        std::env::var("NEXUS_QDRANT_DIR").ok().filter(|d| !d.is_empty()).map(PathBuf::from),
        Some(beside),
        Some(PathBuf::from("/work/shared/tools/qdrant")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("start.sh").is_file() && dir.join("qdrant.zst").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no qdrant to start: set NEXUS_QDRANT_DIR to the bundled qdrant 1.18.3 (start.sh, qdrant.zst), or \
                 NEXUS_TEST_QDRANT_URL and NEXUS_TEST_QDRANT_API_KEY to a running server"
            )
        })
}

/// Starts a server of this process's own, watched: it stops when this process is gone.
fn start() -> QdrantServer {
    let start_script = tool_dir().join("start.sh");
    let mut failures = Vec::new();
    for _ in 0..5 {
        let dir = std::env::temp_dir().join(format!("nexus-qdrant-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("create the qdrant test directory");
        let port = free_port();
        let api_key = format!("nexus-test-{}", unique_suffix());
        // The watchdog starts qdrant, and stops it and removes its directory once this process
        // (or qdrant) is gone. Its own session keeps it alive past this process.
        let script = r#"
            start="$1"; dir="$2"; port="$3"; parent="$4"
            QDRANT__SERVICE__API_KEY="$5" "$start" "$dir" "$port" </dev/null >"$dir/qdrant.log" 2>&1 &
            qdrant=$!
            echo "$qdrant" >"$dir/qdrant.pid"
            while kill -0 "$parent" 2>/dev/null && kill -0 "$qdrant" 2>/dev/null \
                && ! grep -q "^State:[[:space:]]*Z" "/proc/$parent/status" 2>/dev/null; do
                sleep 1
            done
            kill "$qdrant" 2>/dev/null
            wait "$qdrant" 2>/dev/null
            rm -rf "$dir"
        "#;
        let mut watchdog = Command::new("setsid")
            .args(["bash", "-c", script, "watchdog"])
            .arg(&start_script)
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg(&api_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the qdrant watchdog (setsid, bash): {e}"));
        // It runs as long as this process does; reaped if it ends earlier.
        std::thread::spawn(move || watchdog.wait());
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ready(&url) {
                return QdrantServer { url, api_key };
            }
            let gone = std::fs::read_to_string(dir.join("qdrant.pid"))
                .ok()
                .is_some_and(|pid| !PathBuf::from(format!("/proc/{}", pid.trim())).exists());
            if gone || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(dir.join("qdrant.log")).unwrap_or_default();
        failures.push(format!("port {port}: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")));
    }
    panic!("qdrant did not start ({}); is zstd installed?", failures.join("; "))
}

/// Whether qdrant at `url` answers `/readyz` (it does without a key).
fn ready(url: &str) -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", &format!("{url}/readyz")])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"200")
}

/// A loopback port below 32768 (outside the range the kernel hands out to clients) that nothing
/// listens on now, nor on the next one (qdrant's gRPC port).
fn free_port() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut candidate = 20_000 + (nanos as u64 + std::process::id() as u64 * 7919) % 12_000;
    for _ in 0..500 {
        let port = candidate as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
        candidate = 20_000 + (candidate + 7) % 12_000;
    }
    panic!("no free loopback port below 32768")
}

/// A suffix that no other call, in this process or another, gives at the same time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}-{n}-{nanos:x}", std::process::id())
}

fn sanitize(hint: &str) -> String {
    hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(30).collect()
}
