//! Starts the real `nexus` binary for end-to-end tests.
#![allow(dead_code)]

pub mod fake_llm;
pub mod fake_openai;

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
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, |_| {})
    }

    pub fn start_with(data_dir: &Path, customize: impl FnOnce(&mut Command)) -> Server {
        Self::start_command(nexus(data_dir), data_dir, customize)
    }

    /// Serves with the given command (from [`nexus`] or [`nexus_at`]) on a free loopback port.
    pub fn start_command(mut cmd: Command, data_dir: &Path, customize: impl FnOnce(&mut Command)) -> Server {
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        customize(&mut cmd);
        let mut child = cmd.spawn().expect("spawn nexus serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("nexus: listening on http://") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("nexus serve did not announce its address; status {:?}", child.wait());
            }
        };
        Server { child, addr, data_dir: data_dir.to_path_buf() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(self.url("/ready")).send() {
                if r.status().is_success() {
                    return;
                }
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
