//! Starts the real `nexus` binary for end-to-end tests.
#![allow(dead_code)]

pub mod bolt;
pub mod cluster;
pub mod fake_llm;
pub mod fake_openai;
pub mod fake_rerank;
pub mod opensearch;
pub mod qdrant;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub fn nexus_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nexus")
}

/// A `nexus` command with a clean environment: no config file, no NEXUS_* variables.
pub fn nexus(data_dir: &Path) -> Command {
    nexus_at(Path::new(nexus_bin()), data_dir)
}

/// Like [`nexus`], for another copy of the binary (an installed one).
pub fn nexus_at(bin: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("NEXUS") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--data-dir").arg(data_dir).env("NEXUS_CONFIG", empty_config());
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// An empty config file, so tests never read /etc/nexus/nexus.toml.
pub fn empty_config() -> PathBuf {
    let path = std::env::temp_dir().join("nexus-test-empty.toml");
    if !path.exists() {
        std::fs::write(&path, "# empty\n").unwrap();
    }
    path
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run nexus")
}

pub struct Server {
    pub child: Child,
    /// Where to connect: the announced address, with an unspecified IP replaced by 127.0.0.1.
    pub addr: SocketAddr,
    /// `http` or `https`, as announced.
    pub scheme: String,
    /// Every line the server printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, |_| {})
    }

    pub fn start_with(data_dir: &Path, customize: impl FnOnce(&mut Command)) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0", customize)
    }

    pub fn start_on(data_dir: &Path, listen: &str, customize: impl FnOnce(&mut Command)) -> Server {
        Self::start_command_on(nexus(data_dir), listen, customize)
    }

    /// Serves with the given command (from [`nexus`] or [`nexus_at`]) on a free loopback port.
    pub fn start_command(cmd: Command, customize: impl FnOnce(&mut Command)) -> Server {
        Self::start_command_on(cmd, "127.0.0.1:0", customize)
    }

    fn start_command_on(mut cmd: Command, listen: &str, customize: impl FnOnce(&mut Command)) -> Server {
        cmd.args(["serve", "--listen", listen]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        customize(&mut cmd);
        let mut child = cmd.spawn().expect("spawn nexus serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = printed.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("nexus: listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (scheme, addr) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => {
                let (scheme, addr) = url.split_once("://").unwrap();
                let mut addr: SocketAddr = addr.parse().unwrap();
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                (scheme.to_string(), addr)
            }
            Err(_) => {
                let _ = child.kill();
                panic!("nexus serve did not announce its address; status {:?}", child.wait());
            }
        };
        Server { child, addr, scheme, stdout: printed }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// What the server printed on stdout, once the auth notice after the address is there.
    pub fn printed(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.stdout.lock().unwrap().clone();
            if lines.len() >= 2 || Instant::now() > deadline {
                return lines.join("\n");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(self.url("/ready")).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_timeout(&mut self.child, Duration::from_secs(60))
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Serves `app` on a free loopback port from its own thread and runtime, so local stand-ins for
/// remote APIs work from sync and async tests alike.
pub fn serve_in_background(app: axum::Router) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// A note record as the write tests send it: text for the text store, a vector pointing along
/// axis `n` for the vector store, and a graph node.
pub fn note_record(id: &str, body: &str, n: usize) -> serde_json::Value {
    let mut v = vec![0.02f32; 384];
    v[n % 384] = 1.0;
    serde_json::json!({"id": id, "kind": "note", "title": format!("note {id}"), "body": body, "vector": v,
           "graph": {"type": "node", "label": "note", "name": id}})
}
