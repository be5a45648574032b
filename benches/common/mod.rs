//! What the HTTP benchmarks share: a real `nexus serve` on a free loopback port, and the store
//! profiles ([`profile`]) it runs under.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub mod profile;

/// Starts `bin serve` on `data_dir` with the config file `config` and the extra environment
/// `env`, and returns the child and its base URL once it listens (its stdout is drained after).
#[allow(dead_code)] // the analytics bench serves nothing
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

/// A JSON Lines file's values, one per non-empty line; panics naming the file it cannot read.
#[allow(dead_code)] // the dataset benches
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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

/// Barabási–Albert: each new node links to `attach` distinct earlier nodes drawn with
/// probability proportional to their degree (from a list holding every edge end), until `edges`.
#[allow(dead_code)] // the graph benches
pub fn preferential_attachment(edges: usize, attach: usize, seed: u64) -> Vec<(u32, u32)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(edges);
    let mut ends: Vec<u32> = (0..attach as u32).collect();
    let mut chosen: Vec<u32> = Vec::with_capacity(attach);
    let mut node = attach as u32;
    while out.len() < edges {
        chosen.clear();
        while chosen.len() < attach {
            let target = ends[rng.random_range(0..ends.len())];
            if !chosen.contains(&target) {
                chosen.push(target);
            }
        }
        for &target in &chosen {
            out.push((node, target));
            ends.push(node);
            ends.push(target);
        }
        node += 1;
    }
    out.truncate(edges);
    out
}

/// Opens Nexus in-process on `data` with the config file `config`, as `nexus serve` would: for
/// loads that go through the write path without HTTP.
#[allow(dead_code)] // the benches that load in-process
pub async fn open_app(data: &Path, config: &Path) -> std::sync::Arc<nexus::app::App> {
    use nexus::config::{Config, ConfigFile, FlagOverrides};
    let flags = FlagOverrides { data_dir: Some(data.to_path_buf()), ..Default::default() };
    let config = Config::load(ConfigFile::Explicit(config), &flags).unwrap();
    nexus::app::App::open(config).await.unwrap()
}
