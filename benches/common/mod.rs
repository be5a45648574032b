//! What the HTTP benchmarks share: a real `nexus serve` on a free loopback port, and the store
//! profiles ([`profile`]) it runs under.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub mod profile;

/// Starts `bin serve` on `data_dir` with the config file `config` and the extra environment
/// `env`, and returns the child and its base URL once it listens (its stdout is drained after).
pub fn spawn_nexus(bin: &Path, data_dir: &Path, config: &Path, env: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NEXUS_CONFIG", config)
        .env("RUST_LOG", "warn")
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nexus");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("nexus exited before listening").unwrap();
        if let Some(url) = line.strip_prefix("nexus: listening on ") {
            break url.trim().trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// POSTs `body` as JSON and returns the answer; panics (naming the URL) unless it succeeded.
#[allow(dead_code)] // not every bench posts
pub fn post(http: &reqwest::blocking::Client, url: &str, body: &serde_json::Value) -> serde_json::Value {
    let response = http.post(url).json(body).send().unwrap();
    let status = response.status();
    let value: serde_json::Value = response.json().unwrap_or(serde_json::Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {value}");
    value
}
