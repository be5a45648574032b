//! `nexus migrate` at scale: an appliance holding N memories (each with its history entry, so 2N
//! records; default N = 100 000) moved onto the cluster stack, beside the anchor: how fast the
//! target's record store takes the same records as bulk writes (the same import statement, fed
//! from memory, nothing read from the source and no progress saved).
//!
//! ```sh
//! cargo bench --bench migrate -- [--memories N] [--target cluster|postgres]
//!                                [--postgres-url URL] [--opensearch-url URL] [--qdrant-url URL]
//!                                [--bolt-url URL] [--s3-endpoint URL]
//! ```
//! `--target cluster` (default): every store on its cluster twin (see `common/profile.rs`);
//! `postgres`: records and vectors (pgvector) on Postgres, text and graph node-local. Prints the
//! bulk copy's records/s and MB/s and its ratio to the anchor, then the time of each later phase
//! (files, catch-up, projecting each derived store, verification) as the migration reports them.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nexus::config::{RecordsBackend, RecordsConfig, Secret};
use nexus::store::TenantId;
use nexus::store::records::postgres::PostgresRecordStore;
use nexus::store::records::sqlite::SqliteRecordStore;
use nexus::store::records::{NewRecord, Record, RecordStore, Write};
use serde_json::{Value, json};

#[allow(dead_code)]
mod common;

use common::profile::{Profile, ServerFlags, Servers, Setup};

const DIMENSIONS: usize = 384;
const USERS: usize = 500;
const PAGE: usize = 1000;

/// A deterministic pseudo-random unit vector.
fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v: Vec<f32> = (0..DIMENSIONS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

const FACTS: [&str; 8] = [
    "prefers window seats on long flights",
    "is allergic to peanuts and carries an epinephrine pen",
    "runs the quarterly planning review for the platform team",
    "moved from Lisbon to Berlin last spring",
    "wants weekly summaries of open incidents on Monday mornings",
    "plays cello in an amateur orchestra",
    "uses vim keybindings in every editor",
    "is learning Japanese for a trip to Kyoto",
];

/// Memory `i` and its history entry, shaped as the memory service writes them.
fn memory(i: usize) -> [NewRecord; 2] {
    let user = format!("user-{}", i % USERS);
    let text = format!("{user} {} (fact {i})", FACTS[i % FACTS.len()]);
    let id = format!("mem-{i:07}");
    let created = "2026-11-01T10:00:00Z";
    [
        NewRecord {
            id: id.clone(),
            kind: "memory".into(),
            body: Some(text.clone()),
            tags: vec![],
            metadata: json!({"user_id": user, "tier": "long", "hash": format!("{:x}", i * 7919), "created_at": created,
                             "categories": ["personal"]}),
            vector: Some(vector(i as u64)),
            embed: true,
            ..Default::default()
        },
        NewRecord {
            id: format!("{id}-h1"),
            kind: "memory_history".into(),
            body: Some(text.clone()),
            metadata: json!({"memory_id": id, "event": "ADD", "old_memory": null, "new_memory": text, "created_at": created}),
            ..Default::default()
        },
    ]
}

fn record_bytes(r: &Record) -> u64 {
    (r.id.len()
        + r.kind.len()
        + r.body.as_ref().map_or(0, String::len)
        + r.metadata.to_string().len()
        + r.vector.as_ref().map_or(0, |v| v.len() * 4)) as u64
}

async fn build_appliance(dir: &Path, n: usize) {
    // Laid out (and released) as a data directory, then written through its record store.
    drop(nexus::datadir::DataDir::open(dir).unwrap());
    let records = SqliteRecordStore::open(&dir.join("records"), &RecordsConfig::default()).await.unwrap();
    let tenant = TenantId::default_tenant();
    let started = Instant::now();
    for start in (0..n).step_by(PAGE / 2) {
        let writes: Vec<Write> = (start..(start + PAGE / 2).min(n)).flat_map(memory).map(Write::Upsert).collect();
        records.write(&tenant, writes).await.unwrap();
    }
    eprintln!("appliance: {n} memories and their history written in {:.1} s", started.elapsed().as_secs_f64());
}

/// The anchor: the target's record store taking the appliance's records as bulk writes.
async fn anchor(source_dir: &Path, database_url: &str) -> (u64, u64, f64) {
    let source = SqliteRecordStore::open(&source_dir.join("records"), &RecordsConfig::default()).await.unwrap();
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = source.scan(after, PAGE).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.key;
        pages.push(page);
    }
    let config = RecordsConfig {
        backend: RecordsBackend::Postgres,
        url: Some(Secret::new(database_url.to_string())),
        ..Default::default()
    };
    let target = PostgresRecordStore::open(&config).await.unwrap();
    let (mut records, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    for page in pages {
        records += page.len() as u64;
        bytes += page.iter().map(record_bytes).sum::<u64>();
        target.import(page).await.unwrap();
    }
    (records, bytes, started.elapsed().as_secs_f64())
}

fn main() {
    let mut n = 100_000;
    let mut profile = Profile::Cluster;
    let mut server_flags = ServerFlags::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--memories" => n = args.next().expect("--memories N").parse().expect("a number"),
            "--target" => {
                profile = match args.next().expect("--target cluster|postgres").as_str() {
                    "postgres" => Profile::Postgres,
                    _ => Profile::Cluster,
                }
            }
            other if server_flags.parse(other, &mut args) => {}
            _ => {}
        }
    }
    let servers = Servers::for_profiles(&[profile], server_flags);
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("appliance");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(build_appliance(&source, n));

    // The anchor, on a database of its own.
    let anchor_setup = Setup::prepare(
        Profile::Postgres,
        "migrate_anchor",
        tmp.path().join("anchor"),
        tmp.path().join("anchor.toml"),
        false,
        false,
        &servers,
    );
    let db = anchor_setup.database.as_ref().unwrap();
    let (a_records, a_bytes, a_seconds) = runtime.block_on(anchor(&source, &db.server.database_url(&db.name)));
    drop(anchor_setup);

    // The migration, onto the profile's stores.
    let setup = Setup::prepare(
        profile,
        "migrate",
        tmp.path().join("target"),
        tmp.path().join("target.toml"),
        false,
        false,
        &servers,
    );
    let empty = tmp.path().join("appliance.toml");
    std::fs::write(&empty, "").unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .arg("--config")
        .arg(&empty)
        .arg("--data-dir")
        .arg(&source)
        .args(["migrate", "--json", "--samples", "20", "--to"])
        .arg(&setup.config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Each line that starts a phase, and when it came.
    let mut marks: Vec<(String, f64)> = vec![("open".into(), 0.0)];
    let (mut copy, mut report) = (Value::Null, Value::Null);
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(value) = serde_json::from_str::<Value>(&line.unwrap()) else { continue };
        let name = match value["event"].as_str() {
            Some("step") => {
                format!("{} {}", value["step"].as_str().unwrap_or(""), value["detail"].as_str().unwrap_or(""))
            }
            Some("progress") if value["step"] == "records" && value["finished"] == true => {
                copy = value.clone();
                continue;
            }
            Some("report") => {
                report = value.clone();
                "report".into()
            }
            _ => continue,
        };
        marks.push((name, started.elapsed().as_secs_f64()));
    }
    let status = child.wait().unwrap();
    let total = started.elapsed().as_secs_f64();

    println!("\nmigrate: {n} memories + {n} history entries ({} records) onto {}", 2 * n, setup.describe());
    println!("{:<44} {:>10} {:>9} {:>9}", "", "records/s", "MB/s", "seconds");
    println!(
        "{:<44} {:>10.0} {:>9.1} {:>9.1}",
        "anchor: the target's bulk import alone",
        a_records as f64 / a_seconds,
        a_bytes as f64 / 1e6 / a_seconds,
        a_seconds
    );
    let rate = copy["rate_per_s"].as_f64().unwrap_or(0.0);
    let mb = copy["mb_per_s"].as_f64().unwrap_or(0.0);
    println!(
        "{:<44} {:>10.0} {:>9.1} {:>9.1}",
        "nexus migrate: bulk copy",
        rate,
        mb,
        copy["seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "bulk copy / anchor: {:.2}x records/s, {:.2}x MB/s",
        rate / (a_records as f64 / a_seconds),
        mb / (a_bytes as f64 / 1e6 / a_seconds)
    );
    println!("phases (seconds each took):");
    for pair in marks.windows(2) {
        println!("  {:<70} {:>8.1}", pair[0].0, pair[1].1 - pair[0].1);
    }
    println!(
        "total {total:.1} s; verification {}; exit {status}",
        if report["ok"] == true { "clean" } else { "FAILED" }
    );
    if report["ok"] != true {
        println!("{report:#}");
        std::process::exit(1);
    }
}
