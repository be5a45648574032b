//! Backups end to end on the real binary: taken while clients write, restored and compared;
//! broken archives refused one by one; SIGKILL during backup and restore; the schedule.

use crate::common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, client, nexus, note_record, run};
use serde_json::{Value, json};

const VOCAB: &[&str] = &[
    "glacier", "harbour", "violin", "compiler", "orchard", "lantern", "meteor", "saffron", "tundra", "quartz",
    "falcon", "canyon", "ledger", "pepper", "beacon", "marble", "cobalt", "walnut", "nebula", "prairie", "anchor",
    "willow", "sonata", "pixel", "ember", "lagoon", "granite", "tulip", "voyage", "cipher",
];

/// A sentence of five vocabulary words picked by `n`.
fn sentence(n: usize) -> String {
    let mut x = n.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let words: Vec<&str> = (0..5)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            VOCAB[(x >> 33) % VOCAB.len()]
        })
        .collect();
    format!("The {} and the {} met the {} near the {} with a {}.", words[0], words[1], words[2], words[3], words[4])
}

fn add_memory(base: &str, n: usize) -> Option<String> {
    let body = json!({"messages": [{"role": "user", "content": sentence(n)}], "user_id": "alice", "infer": false});
    let response = client().post(format!("{base}/api/v1/memories")).json(&body).send().ok()?;
    let value: Value = response.json().ok()?;
    value["results"][0]["id"].as_str().map(str::to_string)
}

fn add_document(base: &str, n: usize) -> Option<String> {
    let text = format!("# Note {n}\n\n{}\n\n{}\n", sentence(n * 7 + 1), sentence(n * 7 + 2));
    let body = json!({"text": text, "source": format!("note-{n}.md"), "content_type": "text/markdown"});
    let response = client().post(format!("{base}/api/v1/documents/text")).json(&body).send().ok()?;
    let value: Value = response.json().ok()?;
    value["documents"][0]["document"]["id"].as_str().map(str::to_string)
}

/// Ids of a search's results, in order.
fn search_ids(base: &str, memories: bool, query: &str) -> Vec<String> {
    let (path, body) = if memories {
        ("/api/v1/memories/search", json!({"query": query, "user_id": "alice", "top_k": 10}))
    } else {
        ("/api/v1/search", json!({"query": query, "top_k": 10}))
    };
    let value: Value = client().post(format!("{base}{path}")).json(&body).send().unwrap().json().unwrap();
    value["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {value}"))
        .iter()
        .map(|r| r["chunk_id"].as_str().or(r["id"].as_str()).unwrap_or_default().to_string())
        .collect()
}

fn queries() -> Vec<String> {
    (0..50).map(|i| format!("{} {}", VOCAB[i % VOCAB.len()], VOCAB[(i * 7 + 3) % VOCAB.len()])).collect()
}

/// One written item: what it is, its id, when its acknowledgement arrived.
type Acked = Arc<Mutex<Vec<(bool, String, Instant)>>>;

fn base(server: &Server) -> String {
    format!("http://{}", server.addr)
}

/// The taken archive's path and header, from `nexus backup --json`.
fn backup_json(data: &Path, to: &Path) -> Value {
    let out = run(nexus(data).args(["backup", "--json", "--to"]).arg(to));
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A backup taken while three clients add memories and documents restores to a data directory
/// that holds every write acknowledged before it started, passes `nexus check`, and answers 100
/// searches exactly as the same data rebuilt from the record alone (the state at the archive's
/// change-log position).
#[test]
fn a_backup_taken_under_writes_restores_its_change_log_position() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let url = base(&server);
    for n in 0..40 {
        add_memory(&url, n).expect("seed memory");
        if n % 2 == 0 {
            add_document(&url, n).expect("seed document");
        }
    }
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 1000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let memory = n % 3 != 0;
                    let id = if memory { add_memory(&url, n) } else { add_document(&url, n) };
                    if let Some(id) = id {
                        acked.lock().unwrap().push((memory, id, Instant::now()));
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 15 {
        assert!(Instant::now() < deadline, "the writers do not get through");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let taken = backup_json(&data, &tmp.path().join("backups"));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let archive = PathBuf::from(taken["path"].as_str().unwrap());
    let seq = taken["header"]["seq"].as_u64().unwrap();
    assert!(taken["header"]["derived"].as_object().is_some_and(|d| d.len() == 3), "{taken}");
    let before: Vec<_> = acked.lock().unwrap().iter().filter(|(_, _, at)| *at < started).cloned().collect();
    let after = acked.lock().unwrap().len() - before.len();
    assert!(before.len() >= 15 && after > 0, "writes before ({}) and during/after ({after}) the backup", before.len());
    drop(server);

    // Restored from the archive (derived stores caught up from their copies) and the same
    // archive with its derived stores removed (rebuilt from the record).
    let restored = tmp.path().join("restored");
    let out = run(nexus(&restored).args(["restore", "--json"]).arg(&archive));
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["header"]["seq"].as_u64(), Some(seq));
    assert_eq!(report["integrity"], "ok");
    let rebuilt = tmp.path().join("rebuilt");
    assert!(run(nexus(&rebuilt).arg("restore").arg(&archive)).status.success());
    for store in ["text", "vectors", "graph"] {
        std::fs::remove_dir_all(rebuilt.join(store)).unwrap();
    }
    let check = run(nexus(&restored).arg("check"));
    assert!(check.status.success(), "nexus check: {}", String::from_utf8_lossy(&check.stdout));

    let (a, b) = (Server::start(&restored), Server::start(&rebuilt));
    // The rebuilt side replays its whole change log first.
    a.wait_ready();
    b.wait_ready();
    let (a_url, b_url) = (base(&a), base(&b));
    let mut compared = 0;
    let mut differ = Vec::new();
    for memories in [true, false] {
        for query in queries() {
            let (x, y) = (search_ids(&a_url, memories, &query), search_ids(&b_url, memories, &query));
            if x != y && !memories && differ.is_empty() && std::env::var("NEXUS_DEBUG_SEARCH").is_ok() {
                for u in [&a_url, &b_url] {
                    let v: Value = client()
                        .post(format!("{u}/api/v1/search"))
                        .json(&json!({"query": query, "top_k": 10}))
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    for r in v["results"].as_array().unwrap() {
                        eprintln!("{} {} {}", r["chunk_id"], r["score"], r["scores"]);
                    }
                    eprintln!("--");
                }
            }
            if x != y {
                differ.push(format!("{} `{query}`: {x:?} vs {y:?}", if memories { "memory" } else { "document" }));
            }
            compared += 1;
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {compared} searches differ from the state rebuilt from the record:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert_eq!(compared, 100);
    for (memory, id, _) in &before {
        let path = if *memory { format!("/api/v1/memories/{id}") } else { format!("/api/v1/documents/{id}") };
        let status = client().get(format!("{a_url}{path}")).send().unwrap().status();
        assert_eq!(status, 200, "acknowledged before the backup started, missing after restore: {path}");
    }
}

/// The entries of an archive, decompressed.
fn entries(archive: &Path) -> Vec<(tar::Header, Vec<u8>)> {
    let decoder = zstd::Decoder::new(std::fs::File::open(archive).unwrap()).unwrap();
    let mut tar = tar::Archive::new(decoder);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.header().clone(), data)
        })
        .collect()
}

/// Writes entries as a new archive with a matching checksum file (so that the content checks,
/// not the checksum file, have to catch what is wrong).
fn write_archive(path: &Path, entries: &[(tar::Header, Vec<u8>)]) {
    let mut tar = tar::Builder::new(zstd::Encoder::new(Vec::new(), 3).unwrap());
    for (header, data) in entries {
        let mut header = header.clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data.as_slice()).unwrap();
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    std::fs::write(path, &bytes).unwrap();
    write_checksum(path);
}

fn write_checksum(path: &Path) {
    use sha2::Digest;
    let sum = hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()));
    let name = path.file_name().unwrap().to_string_lossy();
    std::fs::write(format!("{}.sha256", path.display()), format!("{sum}  {name}\n")).unwrap();
}

fn with_name(header: &tar::Header, name: &str, kind: tar::EntryType) -> tar::Header {
    let mut h = header.clone();
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h
}

/// Asserts that verify and restore both refuse `archive` with a message containing `expect`,
/// and that the restore target was never created.
fn assert_refused(tmp: &Path, archive: &Path, expect: &str) -> String {
    let verify = run(nexus(&tmp.join("unused")).args(["backup", "verify"]).arg(archive));
    let message = String::from_utf8_lossy(&verify.stderr).to_string();
    assert_eq!(verify.status.code(), Some(1), "verify of {} should fail: {message}", archive.display());
    assert!(message.contains(expect), "verify of {}: expected `{expect}` in: {message}", archive.display());
    let target = tmp.join(format!("target-{}", archive.file_name().unwrap().to_string_lossy()));
    let restore = run(nexus(&target).arg("restore").arg(archive));
    assert_eq!(restore.status.code(), Some(1), "restore of {} should fail", archive.display());
    assert!(!target.exists(), "a refused restore created {}", target.display());
    let leftovers: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".restore-") || n.starts_with(".nexus-verify-"))
        .collect();
    assert!(leftovers.is_empty(), "a refused archive left {leftovers:?}");
    message
}

/// Truncated, flipped, unlisted, traversing, linked and too-new archives: each refused by verify
/// and restore with its own message, nothing written.
#[test]
fn broken_archives_are_refused_each_with_its_own_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    for n in 0..5 {
        add_document(&base(&server), n).unwrap();
        add_memory(&base(&server), n).unwrap();
    }
    drop(server);
    let good = PathBuf::from(backup_json(&data, &tmp.path().join("backups"))["path"].as_str().unwrap());
    let good_entries = entries(&good);
    let bytes = std::fs::read(&good).unwrap();
    let work = tmp.path().join("broken");
    std::fs::create_dir_all(&work).unwrap();
    let mut messages = Vec::new();

    // Truncated: with the original checksum file, and without one.
    for (i, cut) in [bytes.len() / 10, bytes.len() / 2, bytes.len() * 9 / 10, bytes.len() - 7].into_iter().enumerate() {
        let path = work.join(format!("cut-{i}.tar.zst"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        std::fs::copy(format!("{}.sha256", good.display()), format!("{}.sha256", path.display())).unwrap();
        messages.push(assert_refused(&work, &path, "does not match its checksum file"));
        std::fs::remove_file(format!("{}.sha256", path.display())).unwrap();
        messages.push(assert_refused(&work, &path, "truncated or corrupt"));
    }
    // A flipped byte in every member, the checksum file recomputed.
    for (i, (header, data)) in good_entries.iter().enumerate() {
        if data.is_empty() {
            continue;
        }
        let mut changed = good_entries.clone();
        let mut data = data.clone();
        let at = data.len() / 2;
        data[at] ^= 0x20;
        changed[i] = (header.clone(), data);
        let path = work.join(format!("flip-{i}.tar.zst"));
        write_archive(&path, &changed);
        let name = header.path().unwrap().to_string_lossy().to_string();
        let expect = match name.as_str() {
            "NEXUS-BACKUP.json" => "header",
            "MANIFEST.json" => "manifest",
            _ => "does not match the SHA-256 in the manifest",
        };
        messages.push(assert_refused(&work, &path, expect));
    }
    // A flipped byte in the compressed stream itself.
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let path = work.join("flip-stream.tar.zst");
    std::fs::write(&path, &flipped).unwrap();
    messages.push(assert_refused(&work, &path, "truncated or corrupt"));
    // No manifest.
    let path = work.join("no-manifest.tar.zst");
    write_archive(&path, &good_entries[..good_entries.len() - 1]);
    messages.push(assert_refused(&work, &path, "has no manifest"));
    // Hostile entries, placed before the manifest.
    let template = &good_entries[1].0;
    for (name, kind, expect) in [
        ("data/../../escaped", tar::EntryType::Regular, "climbs out"),
        ("/etc/nexus-escaped", tar::EntryType::Regular, "absolute path"),
        ("data/records/link", tar::EntryType::Symlink, "symbolic link"),
        ("data/records/hard", tar::EntryType::Link, "hard link"),
        ("data/records/dev", tar::EntryType::Char, "a device"),
    ] {
        let mut hostile = good_entries.clone();
        let at = hostile.len() - 1;
        hostile.insert(at, (with_name(template, name, kind), b"x".to_vec()));
        let path = work.join(format!("hostile-{}.tar.zst", name.replace(['/', '.'], "_")));
        write_archive(&path, &hostile);
        messages.push(assert_refused(&work, &path, expect));
    }
    // A newer format.
    let mut newer = good_entries.clone();
    let mut header: Value = serde_json::from_slice(&newer[0].1).unwrap();
    header["format"] = json!(99);
    newer[0].1 = serde_json::to_vec(&header).unwrap();
    let path = work.join("newer.tar.zst");
    write_archive(&path, &newer);
    messages.push(assert_refused(&work, &path, "newer than this nexus reads"));

    // The good one still verifies, and every refusal said something of its own kind.
    let ok = run(nexus(&tmp.path().join("unused")).args(["backup", "verify"]).arg(&good));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(messages.iter().all(|m| m.starts_with("nexus: error: ")), "{messages:#?}");
}

/// A data directory with enough records that a backup takes a moment.
fn sizeable_data_dir(dir: &Path) {
    let server = Server::start(dir);
    let filler = "lorem ipsum dolor sit amet ".repeat(600);
    for batch in 0..12 {
        let writes: Vec<Value> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                json!({"op": "upsert", "record": note_record(&format!("r{n}"), &format!("{n} {filler} {}", sentence(n)), n)})
            })
            .collect();
        let status = client()
            .post(format!("{}/api/v1/records/batch", base(&server)))
            .json(&json!({"writes": writes}))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
    drop(server);
}

fn kill_at_random(mut child: std::process::Child, within: Duration, round: u64) -> std::process::ExitStatus {
    let at = within.mul_f64(((round * 37 + 11) % 100) as f64 / 100.0);
    std::thread::sleep(at);
    let _ = child.kill();
    child.wait().unwrap()
}

/// SIGKILL during backups at ten moments: no unfinished archive is ever listed or verifies, the
/// data directory stays intact, and the next backup completes.
#[test]
fn sigkill_during_backup_never_leaves_a_partial_archive_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sizeable_data_dir(&data);
    let backups = tmp.path().join("backups");
    let started = Instant::now();
    let first = backup_json(&data, &backups);
    let took = started.elapsed();
    for round in 0..10 {
        let child = nexus(&data)
            .args(["backup", "--to"])
            .arg(&backups)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_at_random(child, took, round);
        let list = run(nexus(&data).args(["backup", "list", "--json"]).env("NEXUS__BACKUP__DIR", &backups));
        let listed: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
        for archive in &listed {
            let path = backups.join(archive["name"].as_str().unwrap());
            assert_eq!(archive["checksum_file"], true, "{archive}");
            let verify = run(nexus(&data).args(["backup", "verify"]).arg(&path));
            assert!(
                verify.status.success(),
                "round {round}: a listed archive does not verify: {}",
                String::from_utf8_lossy(&verify.stderr)
            );
        }
    }
    // The data directory is intact and a backup completes (removing what killed ones left).
    let check = run(nexus(&data).arg("check"));
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let last = backup_json(&data, &backups);
    assert_eq!(last["header"]["seq"], first["header"]["seq"]);
    let staging: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(staging.is_empty(), "staging copies left behind");
}

/// The ids of the records a data directory holds.
fn record_ids(data: &Path) -> Vec<String> {
    let server = Server::start(data);
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let value: Value = client()
            .get(format!("{}/api/v1/records?limit=1000&after={after}", base(&server)))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let page = value["records"].as_array().unwrap_or_else(|| panic!("{value}"));
        ids.extend(page.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        match value["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    ids.sort();
    ids
}

/// SIGKILL during `restore --replace` at ten moments: the data directory is always the old one
/// or the new one (its records, and `nexus check` clean), never missing nor a mix.
#[test]
fn sigkill_during_restore_leaves_the_old_or_the_new_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    sizeable_data_dir(&source);
    let archive = PathBuf::from(backup_json(&source, &tmp.path().join("backups"))["path"].as_str().unwrap());
    let new_ids = record_ids(&source);

    let data = tmp.path().join("data");
    let server = Server::start(&data);
    for n in 0..3 {
        let status = client()
            .post(format!("{}/api/v1/records", base(&server)))
            .json(&note_record(&format!("old-{n}"), "the data directory before the restore", n))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success());
    }
    drop(server);
    let old_ids = record_ids(&data);

    let started = Instant::now();
    let out = run(nexus(&tmp.path().join("timing")).arg("restore").arg(&archive));
    assert!(out.status.success());
    let took = started.elapsed();
    let mut saw = (0, 0);
    for round in 0..10 {
        let child = nexus(&data)
            .args(["restore", "--replace"])
            .arg(&archive)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_at_random(child, took, round);
        assert!(data.join("records").join("nexus.sqlite").exists(), "round {round}: the data directory is missing");
        let ids = record_ids(&data);
        if ids == old_ids {
            saw.0 += 1;
        } else {
            assert_eq!(ids, new_ids, "round {round}: neither the old nor the new data");
            saw.1 += 1;
        }
        let check = run(nexus(&data).arg("check"));
        assert!(check.status.success(), "round {round}: {}", String::from_utf8_lossy(&check.stdout));
    }
    // A restore that runs to the end tidies what killed ones left, keeping replaced data aside.
    let out = run(nexus(&data).args(["restore", "--replace"]).arg(&archive));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(record_ids(&data), new_ids);
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    assert!(!names.iter().any(|n| n.contains(".restore-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("data.previous-")), "{names:?}");
    eprintln!("killed restores left the old data {} times and the new {} times", saw.0, saw.1);
}

/// A schedule every two seconds: archives are taken, verified and pruned to `keep_last`;
/// `/api/v1/admin/backups` and `/metrics` say so.
#[test]
fn scheduled_backups_are_verified_and_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let backups = tmp.path().join("scheduled");
    let server = Server::start_with(&data, |cmd| {
        cmd.env("NEXUS__BACKUP__SCHEDULE", "*/2 * * * * *")
            .env("NEXUS__BACKUP__DIR", &backups)
            .env("NEXUS__BACKUP__KEEP_LAST", "2")
            .env("NEXUS__BACKUP__KEEP_DAILY", "0")
            .env("NEXUS__BACKUP__KEEP_WEEKLY", "0");
    });
    add_memory(&base(&server), 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listing = loop {
        let value: Value =
            client().get(format!("{}/api/v1/admin/backups", base(&server))).send().unwrap().json().unwrap();
        let runs = value["archives"].as_array().map_or(0, Vec::len);
        if runs == 2 && value["schedule"]["last_verified"] == true && count_taken(&server) >= 3.0 {
            break value;
        }
        assert!(Instant::now() < deadline, "the schedule did not take, verify and prune: {value:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(listing["schedule"]["schedule"], "*/2 * * * * *");
    assert!(listing["schedule"]["next_run"].is_string());
    assert!(listing["schedule"]["last_error"].is_null(), "{listing:#}");
    let on_disk = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst"))
        .count();
    assert!(on_disk <= 3, "retention keeps 2 (a third may be on its way): {on_disk}");
    let metrics = client().get(format!("{}/metrics", base(&server))).send().unwrap().text().unwrap();
    assert!(metrics.contains("nexus_backup_verifications_total{outcome=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("nexus_backup_last_success_timestamp_seconds"));
}

fn count_taken(server: &Server) -> f64 {
    let metrics = client().get(format!("{}/metrics", base(server))).send().unwrap().text().unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("nexus_backups_total{outcome=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The backup API: a job that names its archive, the listing, a download that matches the
/// checksum file, a verification job; operator only.
#[test]
fn backups_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let url = base(&server);
    add_memory(&url, 1).unwrap();
    let c = client();
    let job: Value = c.post(format!("{url}/api/v1/admin/backups")).json(&json!({})).send().unwrap().json().unwrap();
    let id = job["id"].as_str().unwrap();
    let done = wait_job(&url, id);
    let name = Path::new(done["result"]["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
    let listing: Value = c.get(format!("{url}/api/v1/admin/backups")).send().unwrap().json().unwrap();
    assert_eq!(listing["archives"][0]["name"], name.as_str(), "{listing:#}");
    let download = c.get(format!("{url}/api/v1/admin/backups/{name}")).send().unwrap();
    assert_eq!(download.status(), 200);
    let sum = download.headers()["x-checksum-sha256"].to_str().unwrap().to_string();
    let body = download.bytes().unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&body)), sum);
    let job: Value = c.post(format!("{url}/api/v1/admin/backups/{name}/verify")).send().unwrap().json().unwrap();
    let verified = wait_job(&url, job["id"].as_str().unwrap());
    assert_eq!(verified["result"]["integrity"], "ok", "{verified:#}");
    assert_eq!(verified["result"]["check_ok"], true);
    let missing = c.get(format!("{url}/api/v1/admin/backups/nope.tar.zst")).send().unwrap();
    assert_eq!(missing.status(), 404);
    let sneaky = c.get(format!("{url}/api/v1/admin/backups/..%2Fdata%2FFORMAT")).send().unwrap();
    assert!(sneaky.status() == 400 || sneaky.status() == 404, "{}", sneaky.status());
    let mut out = std::fs::File::create(tmp.path().join("downloaded.tar.zst")).unwrap();
    out.write_all(&body).unwrap();
    let verify =
        run(nexus(&tmp.path().join("unused")).args(["backup", "verify"]).arg(tmp.path().join("downloaded.tar.zst")));
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

fn wait_job(url: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job: Value = client().get(format!("{url}/api/v1/jobs/{id}")).send().unwrap().json().unwrap();
        match job["state"].as_str() {
            Some("succeeded") => return job,
            Some("failed" | "dead" | "cancelled") => panic!("job failed: {job:#}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "job did not finish: {job:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server and `nexus` commands set up for backups to an S3 server: `[backup.s3]` with the
/// credentials in variables named by `access_key_id_env` / `secret_access_key_env`.
fn with_backup_s3(cmd: &mut std::process::Command, s3: &common::cluster::S3Server) {
    cmd.env("NEXUS__BACKUP__S3__ENDPOINT", &s3.endpoint)
        .env("NEXUS__BACKUP__S3__ALLOW_HTTP", "true")
        .env("NEXUS__BACKUP__S3__ACCESS_KEY_ID_ENV", "BACKUP_TEST_ACCESS_KEY")
        .env("NEXUS__BACKUP__S3__SECRET_ACCESS_KEY_ENV", "BACKUP_TEST_SECRET_KEY")
        .env("BACKUP_TEST_ACCESS_KEY", &s3.access_key)
        .env("BACKUP_TEST_SECRET_KEY", &s3.secret_key);
}

fn nexus_s3(data: &Path, s3: &common::cluster::S3Server) -> std::process::Command {
    let mut cmd = nexus(data);
    with_backup_s3(&mut cmd, s3);
    cmd
}

/// Backups to S3 (an s3s-fs server of the test's own, so that the test can damage what it
/// stores): taken under writes, listed, verified and restored from the bucket with the same
/// searches as the data rebuilt from the record; a tampered object and one whose checksum file
/// never arrived are refused; scheduled backups to S3 are verified, pruned and downloadable.
#[test]
fn backups_to_s3_restore_and_refuse_tampered_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    let own = common::cluster::OwnS3::start(&root);
    let s3 = own.server.clone();
    let bucket = s3.create_bucket("backups");
    let location = format!("s3://{bucket}/nightly");
    let data = tmp.path().join("data");
    let server = Server::start_with(&data, |cmd| with_backup_s3(cmd, &s3));
    let url = base(&server);
    for n in 0..30 {
        add_memory(&url, n).expect("seed memory");
        if n % 3 == 0 {
            add_document(&url, n).expect("seed document");
        }
    }
    // 24 MiB that do not compress (two objects under the body limit): the archive goes up in parts.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for part in 0..2 {
        let noise: Vec<u8> = (0..12 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let put = client().put(format!("{url}/api/v1/objects/large/noise-{part}.bin")).body(noise).send().unwrap();
        assert!(put.status().is_success(), "{}", put.status());
    }
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 1000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let memory = n % 3 != 0;
                    let id = if memory { add_memory(&url, n) } else { add_document(&url, n) };
                    if let Some(id) = id {
                        acked.lock().unwrap().push((memory, id, Instant::now()));
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 5 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let out = run(nexus_s3(&data, &s3).args(["backup", "--json", "--to", &location]));
    assert!(out.status.success(), "backup to S3: {}", String::from_utf8_lossy(&out.stderr));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let taken: Value = serde_json::from_slice(&out.stdout).unwrap();
    let archive_url = taken["path"].as_str().unwrap().to_string();
    let name = archive_url.strip_prefix(&format!("{location}/")).expect("the archive is under the prefix").to_string();
    assert!(taken["size"].as_u64().unwrap() > 24 << 20, "{taken}");
    let seq = taken["header"]["seq"].as_u64().unwrap();
    let before: Vec<_> = acked.lock().unwrap().iter().filter(|(_, _, at)| *at < started).cloned().collect();
    assert!(!before.is_empty());

    // In the bucket: the archive and its checksum file beside it, nothing left in staging.
    let keys = s3.list_keys(&bucket);
    assert!(keys.contains(&format!("nightly/{name}")) && keys.contains(&format!("nightly/{name}.sha256")), "{keys:?}");
    assert!(
        !std::fs::read_dir(&data).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
    );
    let listed = run(nexus_s3(&data, &s3).args(["backup", "list", "--json", "--to", &location]));
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(listed[0]["name"], name.as_str());
    assert_eq!(listed[0]["seq"].as_u64(), Some(seq));
    assert_eq!(listed[0]["checksum_file"], true);
    drop(server);

    let verified = run(nexus_s3(&tmp.path().join("unused"), &s3).args(["backup", "verify", "--json", &archive_url]));
    assert!(verified.status.success(), "verify from S3: {}", String::from_utf8_lossy(&verified.stderr));
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["archive"], archive_url.as_str());
    assert_eq!(report["integrity"], "ok");

    // Restored from the bucket; and again with the derived stores rebuilt from the record.
    let restored = tmp.path().join("restored");
    let out = run(nexus_s3(&restored, &s3).args(["restore", "--json", &archive_url]));
    assert!(out.status.success(), "restore from S3: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["header"]["seq"].as_u64(), Some(seq));
    let rebuilt = tmp.path().join("rebuilt");
    assert!(run(nexus_s3(&rebuilt, &s3).args(["restore", &archive_url])).status.success());
    for store in ["text", "vectors", "graph"] {
        std::fs::remove_dir_all(rebuilt.join(store)).unwrap();
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".nexus-fetch-"))
        .collect();
    assert!(leftovers.is_empty(), "downloads left behind: {leftovers:?}");
    let check = run(nexus(&restored).arg("check"));
    assert!(check.status.success(), "nexus check: {}", String::from_utf8_lossy(&check.stdout));
    {
        let (a, b) = (Server::start(&restored), Server::start(&rebuilt));
        a.wait_ready();
        b.wait_ready();
        let (a_url, b_url) = (base(&a), base(&b));
        for memories in [true, false] {
            for query in queries().iter().take(20) {
                assert_eq!(search_ids(&a_url, memories, query), search_ids(&b_url, memories, query), "`{query}`");
            }
        }
        for (memory, id, _) in &before {
            let path = if *memory { format!("/api/v1/memories/{id}") } else { format!("/api/v1/documents/{id}") };
            assert_eq!(client().get(format!("{a_url}{path}")).send().unwrap().status(), 200, "{path}");
        }
        let object = client().get(format!("{a_url}/api/v1/objects/large/noise-1.bin")).send().unwrap();
        assert_eq!(object.bytes().unwrap().len(), 12 << 20);
    }

    // A byte changed in the stored object: refused, nothing restored.
    let stored = root.join(&bucket).join("nightly").join(&name);
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&stored, &bytes).unwrap();
    let out = run(nexus_s3(&tmp.path().join("tampered"), &s3).args(["restore", &archive_url]));
    assert_eq!(out.status.code(), Some(1), "a tampered archive was restored");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match its checksum file"), "{stderr}");
    assert!(!tmp.path().join("tampered").exists());
    let out = run(nexus_s3(&tmp.path().join("unused"), &s3).args(["backup", "verify", &archive_url]));
    assert_eq!(out.status.code(), Some(1));

    // Without its checksum file (an upload that did not finish): not listed, refused.
    std::fs::remove_file(root.join(&bucket).join("nightly").join(format!("{name}.sha256"))).unwrap();
    let listed = run(nexus_s3(&data, &s3).args(["backup", "list", "--json", "--to", &location]));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed:#}");
    let out = run(nexus_s3(&tmp.path().join("unused"), &s3).args(["backup", "verify", &archive_url]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no checksum file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = run(nexus_s3(&tmp.path().join("unused"), &s3).args([
        "backup",
        "verify",
        &format!("{location}/nexus-x-s1.tar.zst"),
    ]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // Scheduled backups to S3: verified (downloaded first), pruned to keep_last, downloadable.
    let scheduled = format!("s3://{bucket}/scheduled");
    let server = Server::start_with(&restored, |cmd| {
        with_backup_s3(cmd, &s3);
        cmd.env("NEXUS__BACKUP__SCHEDULE", "*/2 * * * * *")
            .env("NEXUS__BACKUP__DIR", &scheduled)
            .env("NEXUS__BACKUP__NO_DERIVED", "true")
            .env("NEXUS__BACKUP__KEEP_LAST", "2")
            .env("NEXUS__BACKUP__KEEP_DAILY", "0")
            .env("NEXUS__BACKUP__KEEP_WEEKLY", "0");
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let listing = loop {
        let value: Value =
            client().get(format!("{}/api/v1/admin/backups", base(&server))).send().unwrap().json().unwrap();
        let runs = value["archives"].as_array().map_or(0, Vec::len);
        if runs == 2 && value["schedule"]["last_verified"] == true && count_taken(&server) >= 3.0 {
            break value;
        }
        assert!(Instant::now() < deadline, "the schedule did not take, verify and prune on S3: {value:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(listing["dir"], scheduled.as_str());
    assert!(listing["schedule"]["last_error"].is_null(), "{listing:#}");
    let archives =
        s3.list_keys(&bucket).into_iter().filter(|k| k.starts_with("scheduled/") && k.ends_with(".tar.zst")).count();
    assert!(archives <= 3, "retention keeps 2 (a third may be on its way): {archives}");
    let newest = listing["archives"][0]["name"].as_str().unwrap();
    let download = client().get(format!("{}/api/v1/admin/backups/{newest}", base(&server))).send().unwrap();
    assert_eq!(download.status(), 200);
    let sum = download.headers()["x-checksum-sha256"].to_str().unwrap().to_string();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(download.bytes().unwrap())), sum);
}
