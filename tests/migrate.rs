//! `nexus migrate` moves an appliance onto the cluster stack (Postgres, S3, OpenSearch, Qdrant, a
//! Bolt graph; or Postgres and S3 with node-local derived stores) and back, on real servers:
//! everything arrives (records with history, projects, keys, audit, files), old keys work on the
//! cluster, searches agree; a migration killed at random moments resumes to the same end; writes
//! made during the copy arrive; a target that holds other data, cannot be reached or has other
//! vector dimensions is refused before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Derived, cluster_config, start_node};
use common::{Server, client, cluster, nexus, note_record, run};
use serde_json::{Value, json};

const MASTER: &str = "migrate-test-master-key-0123456789";

/// Runs `nexus --data-dir DIR migrate ARGS --json`; returns the exit code and the JSON lines.
fn migrate(data_dir: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = run(nexus(data_dir).env("NEXUS__AUTH__MASTER_KEY", MASTER).arg("migrate").args(args).arg("--json"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines = stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    (out.status.code().unwrap_or(-1), lines, stderr)
}

fn report(lines: &[Value]) -> &Value {
    lines.iter().rev().find(|l| l["event"] == "report").expect("a report line")
}

/// An appliance with documents, memories with history in two projects, a key for the second,
/// a deleted memory, a file. Returns the second project's key.
fn seed(server: &Server) -> String {
    let c = client();
    let master = |r: reqwest::blocking::RequestBuilder| r.bearer_auth(MASTER);
    let r =
        master(c.post(server.url("/api/v1/projects"))).json(&json!({"id": "team-b", "name": "Team B"})).send().unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text());
    let key: Value = master(c.post(server.url("/api/v1/keys")))
        .json(&json!({"name": "agent", "project": "team-b", "scopes": ["read", "write"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let topics = ["tidal estuaries and herons", "protein folding kinetics", "river delta sediment", "vaccine trials"];
    for i in 0..24 {
        let topic = topics[i % topics.len()];
        let r = master(c.post(server.url("/api/v1/documents/text")))
            .json(&json!({"title": format!("Study {i} on {topic}"), "source": format!("study-{i}.txt"),
                          "text": format!("Study {i} looks at {topic}. It measured {} samples over {} weeks and \
                                           found effect size {}. The authors discuss {topic} at length.", 10 + i, 3 + i % 5, i % 7)}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text());
    }
    for (auth, user) in [(None, "alice"), (Some(key.as_str()), "bob")] {
        for i in 0..6 {
            let mut r = c.post(server.url("/v1/memories/")).json(&json!({
                "messages": [{"role": "user", "content": format!("{user} fact {i}: likes {} on weekends", topics[i % 4])}],
                "user_id": user, "infer": false
            }));
            r = match auth {
                Some(k) => r.header("X-API-Key", k),
                None => r.bearer_auth(MASTER),
            };
            assert_eq!(r.send().unwrap().status(), 200);
        }
    }
    // History: an update, and a deleted memory.
    let list: Value = master(c.get(server.url("/v1/memories/?user_id=alice"))).send().unwrap().json().unwrap();
    let list = list.as_array().cloned().unwrap_or_else(|| list["results"].as_array().unwrap().clone());
    let first = list[0]["id"].as_str().unwrap();
    let r = master(c.put(server.url(&format!("/v1/memories/{first}/"))))
        .json(&json!({"text": "alice now prefers rowing"}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    let second = list[1]["id"].as_str().unwrap();
    assert!(master(c.delete(server.url(&format!("/v1/memories/{second}/")))).send().unwrap().status().is_success());
    let r = master(c.put(server.url("/api/v1/objects/originals/report.txt"))).body(vec![7u8; 70_000]).send().unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    key
}

fn start_appliance(dir: &Path) -> Server {
    let server = Server::start_with(dir, |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER);
    });
    server.wait_ready();
    server
}

/// Memories of `user` and each one's history, as a server answers them.
fn memories(server: &Server, auth: &str, key_header: bool, user: &str) -> Vec<(String, String, Vec<String>)> {
    let c = client();
    let with = |r: reqwest::blocking::RequestBuilder| {
        if key_header { r.header("X-API-Key", auth) } else { r.bearer_auth(auth) }
    };
    let list: Value = with(c.get(server.url(&format!("/v1/memories/?user_id={user}")))).send().unwrap().json().unwrap();
    let list = list.as_array().cloned().unwrap_or_else(|| list["results"].as_array().unwrap().clone());
    let mut out: Vec<(String, String, Vec<String>)> = list
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap().to_string();
            let history: Value =
                with(c.get(server.url(&format!("/v1/memories/{id}/history/")))).send().unwrap().json().unwrap();
            let events = history
                .as_array()
                .unwrap()
                .iter()
                .map(|h| format!("{} {} -> {}", h["event"], h["old_memory"], h["new_memory"]))
                .collect();
            (id, m["memory"].as_str().unwrap().to_string(), events)
        })
        .collect();
    out.sort();
    out
}

fn search(server: &Server, query: &str, mode: &str) -> Vec<String> {
    let hits: Value = client()
        .post(server.url("/api/v1/search"))
        .bearer_auth(MASTER)
        .json(&json!({"query": query, "mode": mode, "top_k": 10}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    hits["results"].as_array().unwrap().iter().map(|h| h["chunk_id"].as_str().unwrap().to_string()).collect()
}

const QUERIES: [&str; 5] = [
    "herons in tidal estuaries",
    "protein folding",
    "sediment of river deltas",
    "vaccine trial effect size",
    "weeks of samples",
];

fn moves_to(derived: Derived) {
    let tmp = tempfile::tempdir().unwrap();
    let app_dir = tmp.path().join("appliance");
    let appliance = start_appliance(&app_dir);
    let team_key = seed(&appliance);
    let before_alice = memories(&appliance, MASTER, false, "alice");
    let before_bob = memories(&appliance, &team_key, true, "bob");
    let before_search: Vec<(Vec<String>, Vec<String>)> =
        QUERIES.iter().map(|q| (search(&appliance, q, "keyword"), search(&appliance, q, "semantic"))).collect();
    appliance.stop();

    let pg = cluster::postgres().fresh_database("migrate");
    let config = cluster_config(tmp.path(), &pg, derived);
    let (code, lines, stderr) = migrate(&app_dir, &["--to", config.path.to_str().unwrap()]);
    let r = report(&lines);
    assert_eq!(code, 0, "{r:#}\n{stderr}");
    assert_eq!(r["ok"], true);
    // Progress came as JSON lines, one per step, with rates.
    assert!(lines.iter().any(|l| l["event"] == "progress" && l["step"] == "records" && l["finished"] == true));
    assert!(lines.iter().any(|l| l["event"] == "step" && l["step"] == "verify"));
    let records: u64 = r["records"].as_array().unwrap().iter().map(|k| k["target"].as_u64().unwrap()).sum();
    assert!(records > 40, "{r:#}");
    // The uploaded file and each document's original.
    assert!(r["files"].as_array().unwrap().iter().any(|f| f["source"] == 25 && f["same"] == true), "{r:#}");
    // The searches were compared (the appliance was stopped) and every sampled record found.
    for s in r["searches"].as_array().unwrap() {
        assert_eq!(s["own_on_source"], s["own_on_target"], "{s}");
    }
    // The marker is only written by a cutover.
    assert!(!app_dir.join("migrated.json").exists());

    // A cluster node serves the same memories, histories and searches; the old key works there.
    let node = start_node(tmp.path(), "node-a", &config, Some(MASTER));
    assert_eq!(memories(&node, MASTER, false, "alice"), before_alice);
    assert_eq!(memories(&node, &team_key, true, "bob"), before_bob);
    for (q, (keyword, semantic)) in QUERIES.iter().zip(&before_search) {
        assert_eq!(&search(&node, q, "semantic"), semantic, "semantic {q}");
        if derived == Derived::Local {
            assert_eq!(&search(&node, q, "keyword"), keyword, "keyword {q}");
        } else {
            // Another BM25: the same documents match, in an order of its own.
            let on_node = search(&node, q, "keyword");
            assert_eq!(on_node.len(), keyword.len(), "keyword {q}");
            assert!(on_node.iter().filter(|id| keyword.contains(id)).count() * 10 >= keyword.len() * 7, "keyword {q}");
        }
    }
    if derived == Derived::Full {
        // Files are on S3, so every node serves them.
        let file = client().get(node.url("/api/v1/objects/originals/report.txt")).bearer_auth(MASTER).send().unwrap();
        assert!(file.bytes().unwrap().to_vec() == vec![7u8; 70_000], "the file came back whole");
    }

    // A second run changes nothing and verifies again.
    let (code, lines, stderr) = migrate(&app_dir, &["--to", config.path.to_str().unwrap()]);
    assert_eq!(code, 0, "{:#}\n{stderr}", report(&lines));
    node.stop();

    // And back: the second project alone onto a new data directory.
    let back = tmp.path().join("back");
    let (code, lines, stderr) = migrate(
        &app_dir,
        &["--from", config.path.to_str().unwrap(), "--to-data-dir", back.to_str().unwrap(), "--tenant", "team-b"],
    );
    assert_eq!(code, 0, "{:#}\n{stderr}", report(&lines));
    let r = report(&lines);
    assert!(r["records"].as_array().unwrap().iter().all(|k| k["tenant"] == "team-b"), "{r:#}");
    let returned = start_appliance(&back);
    assert_eq!(memories(&returned, &team_key, true, "bob"), before_bob);
    let alice: Value =
        client().get(returned.url("/v1/memories/?user_id=alice")).bearer_auth(MASTER).send().unwrap().json().unwrap();
    let alice = alice.as_array().cloned().unwrap_or_else(|| alice["results"].as_array().unwrap().clone());
    assert!(alice.is_empty(), "only team-b came back: {alice:?}");
    returned.stop();
}

#[test]
fn an_appliance_moves_onto_the_full_cluster_stack_and_a_project_comes_back() {
    moves_to(Derived::Full);
}

#[test]
fn an_appliance_moves_onto_postgres_with_node_local_derived_stores() {
    moves_to(Derived::Local);
}

/// An appliance with `n` records written through its API (client vectors: no embedding).
fn bulk_appliance(dir: &Path, n: usize) {
    let server = start_appliance(dir);
    let c = client();
    for start in (0..n).step_by(500) {
        let writes: Vec<Value> = (start..(start + 500).min(n))
            .map(|i| json!({"op": "upsert", "record": note_record(&format!("r{i}"), &format!("bulk record {i} about topic {}", i % 17), i)}))
            .collect();
        let r = c
            .post(server.url("/api/v1/records/batch"))
            .bearer_auth(MASTER)
            .json(&json!({"writes": writes}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text());
    }
    server.stop();
}

fn local_config(dir: &Path, hint: &str) -> PathBuf {
    let pg = cluster::postgres().fresh_database(hint);
    cluster_config(dir, &pg, Derived::Local).path.clone()
}

/// The report's record tallies, for comparing two migrations' end states.
fn tallies(r: &Value) -> Vec<(String, String, u64, bool)> {
    r["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["tenant"].to_string(),
                k["kind"].to_string(),
                k["target"].as_u64().unwrap(),
                k["same"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_migration_killed_at_five_moments_resumes_to_the_same_end() {
    let tmp = tempfile::tempdir().unwrap();
    let app_dir = tmp.path().join("appliance");
    bulk_appliance(&app_dir, 12_000);
    let reference_dir = tmp.path().join("reference");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let reference_config = local_config(&reference_dir, "migrate-reference");
    let (code, lines, stderr) = migrate(&app_dir, &["--to", reference_config.to_str().unwrap()]);
    assert_eq!(code, 0, "{:#}\n{stderr}", report(&lines));
    let reference = tallies(report(&lines));

    // The same migration into another target, killed five times at moments spread over a run.
    let target_dir = tmp.path().join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let config = local_config(&target_dir, "migrate-killed");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let (mut killed, mut early) = (0, Vec::new());
    for _ in 0..5 {
        // At a random point of the run: after one of its first lines of progress, plus a random
        // delay (so also in the middle of copying a page).
        let (after_lines, delay) = (1 + next(4), Duration::from_millis(next(600)));
        let mut child = nexus(&app_dir)
            .env("NEXUS__AUTH__MASTER_KEY", MASTER)
            .args(["migrate", "--to", config.to_str().unwrap(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..after_lines {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
                break;
            }
        }
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
            child.wait().unwrap();
        } else {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            early.push(format!("{:?} after {after_lines} lines: {err}", child.wait().unwrap()));
        }
    }
    assert!(killed >= 3, "the runs ended before they could be killed ({killed} of 5): {early:#?}");
    let (code, lines, stderr) = migrate(&app_dir, &["--to", config.to_str().unwrap()]);
    let r = report(&lines);
    assert_eq!(code, 0, "{r:#}\n{stderr}");
    assert_eq!(tallies(r), reference, "same end state as the migration that ran through");
    assert_eq!(r["derived"]["ok"], true, "{r:#}");
    // No duplicate: the target holds exactly the source's records.
    let count =
        cluster::postgres().psql(&cluster_url(&config), "SELECT count(*), count(DISTINCT (tenant, id)) FROM records");
    assert_eq!(count.trim(), "12000|12000");
}

/// The records database URL in a cluster configuration file.
fn cluster_url(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["store"]["records"]["url"].as_str().unwrap().to_string()
}

#[test]
fn writes_made_during_the_bulk_copy_are_on_the_target_after_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let app_dir = tmp.path().join("appliance");
    bulk_appliance(&app_dir, 8_000);
    let appliance = start_appliance(&app_dir);
    let config = local_config(tmp.path(), "migrate-live");

    let mut child = nexus(&app_dir)
        .env("NEXUS__AUTH__MASTER_KEY", MASTER)
        .args(["migrate", "--to", config.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Writes through the running appliance while the migration copies.
    let c = client();
    let mut written = Vec::new();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(120) {
        let id = format!("live-{}", written.len());
        let r = c
            .post(appliance.url("/api/v1/records"))
            .bearer_auth(MASTER)
            .json(&note_record(&id, "written while the migration ran", written.len()))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text());
        written.push(id);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Overwrite and delete some of the bulk records too.
    let r = c
        .post(appliance.url("/api/v1/records"))
        .bearer_auth(MASTER)
        .json(&note_record("r5", "changed after the copy", 5))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert!(c.delete(appliance.url("/api/v1/records/r6")).bearer_auth(MASTER).send().unwrap().status().is_success());
    let first = child.wait_with_output().unwrap();
    assert!(!written.is_empty());

    // Catch-up (with the server still running) then verification: nothing is missing.
    let (code, lines, stderr) = migrate(&app_dir, &["--to", config.to_str().unwrap(), "--cutover"]);
    let r = report(&lines);
    assert_eq!(code, 0, "{r:#}\n{stderr}\nfirst run: {}", String::from_utf8_lossy(&first.stdout));
    assert_eq!(r["cutover"], true);
    // After the cutover the appliance refuses writes, and says where the data went.
    let refused = c
        .post(appliance.url("/api/v1/records"))
        .bearer_auth(MASTER)
        .json(&note_record("late", "too late", 1))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "read_only", "{body}");
    appliance.stop();
    // It stays read-only after a restart.
    let restarted = start_appliance(&app_dir);
    let refused = c
        .post(restarted.url("/api/v1/records"))
        .bearer_auth(MASTER)
        .json(&note_record("late", "too late", 1))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 409);
    restarted.stop();

    let url = cluster_url(&config);
    let pg = cluster::postgres();
    let ids = pg.psql(&url, "SELECT string_agg(id, ',') FROM records WHERE id LIKE 'live-%'");
    let on_target: std::collections::HashSet<&str> = ids.trim().split(',').collect();
    for id in &written {
        assert!(on_target.contains(id.as_str()), "{id} written during the copy is missing on the target");
    }
    assert_eq!(pg.psql(&url, "SELECT body FROM records WHERE id = 'r5'").trim(), "changed after the copy");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM records WHERE id = 'r6'").trim(), "0");
}

#[test]
fn targets_that_hold_other_data_cannot_be_reached_or_have_other_dimensions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let app_dir = tmp.path().join("appliance");
    bulk_appliance(&app_dir, 20);
    let pg = cluster::postgres();

    // A target a cluster already wrote to.
    let config = local_config(tmp.path(), "migrate-busy");
    let node = start_node(tmp.path(), "busy-node", &config, None);
    let r = client()
        .post(node.url("/api/v1/records?wait=true"))
        .json(&note_record("theirs", "someone else's", 1))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    node.stop();
    let (code, _, stderr) = migrate(&app_dir, &["--to", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already holds data") && stderr.contains("1 records"), "{stderr}");
    let url = cluster_url(&config);
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM records").trim(), "1", "nothing written");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM migration").trim(), "0");

    // An unreachable target.
    let unreachable = tmp.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        "[store.records]\nbackend = \"postgres\"\nurl = \"postgres://nexus:x@127.0.0.1:9/nexus\"\n",
    )
    .unwrap();
    let (code, _, stderr) = migrate(&app_dir, &["--to", unreachable.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("store.records.url"), "{stderr}");

    // A target whose vector store holds other dimensions than the appliance's embedder makes.
    let config = local_config(tmp.path(), "migrate-dims");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("[store.vectors]\n", "[store.vectors]\ndimensions = 768\n");
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = migrate(&app_dir, &["--to", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("store.vectors.dimensions") && stderr.contains("384"), "{stderr}");
    let url = cluster_url(&config);
    let records = pg.try_psql(&url, "SELECT count(*) FROM records").unwrap_or_else(|_| "0".into());
    assert_eq!(records.trim(), "0", "nothing written");
}
