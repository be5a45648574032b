//! Several `nexus serve` nodes on one Postgres behave as one Nexus: what one node writes, every
//! node serves; keys revoked on one are refused by all at once; a node killed mid-write loses no
//! acknowledged write; derived stores are node-local (usearch, per node) or shared (pgvector; or
//! the full stack: OpenSearch text, Qdrant vectors, a Bolt graph, S3 objects), each shared store
//! written by one projector under a lease.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{ClusterConfig, Derived, cluster_config, start_node};
use common::{Server, client, cluster, nexus, note_record, run};
use serde_json::{Value, json};

const MASTER: &str = "cluster-test-master-key-0123456789";

fn search_ids(server: &Server, key: Option<&str>, query: &str) -> Vec<String> {
    let mut request = client().post(server.url("/api/v1/records/search")).json(&json!({"query": query, "top_k": 10}));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    let hits: Value = request.send().unwrap().json().unwrap();
    hits["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

/// Waits until `f` holds, up to `limit`; returns how long it took.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if f() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn writes_on_one_node_are_served_by_the_other(derived: Derived) {
    let tmp = tempfile::tempdir().unwrap();
    let pg = cluster::postgres().fresh_database(&format!("two-nodes-{derived:?}").to_lowercase());
    let config = cluster_config(tmp.path(), &pg, derived);
    let a = start_node(tmp.path(), "node-a", &config, None);
    let b = start_node(tmp.path(), "node-b", &config, None);
    let c = client();

    // Read-your-writes holds on the node that took the write.
    let r = c
        .post(a.url("/api/v1/records?wait=true"))
        .json(&note_record("shared-1", "the heron stands in the estuary", 1))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    assert_eq!(r.json::<Value>().unwrap()["indexed"], true);
    assert_eq!(search_ids(&a, None, "heron estuary"), vec!["shared-1"]);

    // The other node serves it within a bounded delay: record, text search, vector search.
    let took = eventually(Duration::from_secs(10), "node b finds node a's write", || {
        search_ids(&b, None, "heron estuary") == vec!["shared-1"]
    });
    assert!(took < Duration::from_secs(5), "node b took {took:?}");
    let got: Value = c.get(b.url("/api/v1/records/shared-1")).send().unwrap().json().unwrap();
    assert_eq!(got["body"], "the heron stands in the estuary");
    let mut v = vec![0.02f32; 384];
    v[1] = 1.0;
    let nearest: Value =
        c.post(b.url("/api/v1/records/search")).json(&json!({"vector": v, "top_k": 1})).send().unwrap().json().unwrap();
    assert_eq!(nearest["hits"][0]["id"], "shared-1", "{nearest}");

    // And the other way round, with a delete.
    let r = c
        .post(b.url("/api/v1/records"))
        .json(&note_record("shared-2", "a kingfisher over the weir", 2))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert!(c.delete(b.url("/api/v1/records/shared-1")).send().unwrap().status().is_success());
    eventually(Duration::from_secs(10), "node a sees node b's writes", || {
        search_ids(&a, None, "kingfisher weir") == vec!["shared-2"] && search_ids(&a, None, "heron estuary").is_empty()
    });
    assert_eq!(c.get(a.url("/api/v1/records/shared-1")).send().unwrap().status(), 404);

    // Memories added through one node are listed and searched on the other.
    let r = c
        .post(a.url("/api/v1/memories?wait=true"))
        .json(&json!({"messages": [{"role": "user", "content": "I keep bees on the allotment"}], "user_id": "ana", "infer": false}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    eventually(Duration::from_secs(10), "node b searches node a's memory", || {
        let found: Value = c
            .post(b.url("/api/v1/memories/search"))
            .json(&json!({"query": "bees allotment", "user_id": "ana"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        found["results"].as_array().is_some_and(|r| r.iter().any(|m| m["memory"] == "I keep bees on the allotment"))
    });

    // A meeting streamed through one node is searched on the other, its windows ranked by
    // context too (their neighbours' vectors read from the shared record store).
    let meeting: Value =
        c.post(a.url("/api/v1/meetings")).json(&json!({"title": "Garden club"})).send().unwrap().json().unwrap();
    let id = meeting["id"].as_str().unwrap().to_string();
    let turns = [
        ("Ana", "Welcome everyone to the garden club."),
        ("Ben", "The compost bins behind the shed are full again."),
        ("Ana", "Who can turn the compost this weekend?"),
        ("Cleo", "I will turn the compost on Saturday morning."),
        ("Ben", "Next, the seed swap is in April."),
        ("Ana", "Thanks, see you all next month."),
    ];
    let segments: Vec<Value> = turns
        .iter()
        .enumerate()
        .map(|(i, (who, text))| {
            json!({"segment_id": format!("s{i}"), "speaker": who, "start_ms": i * 3000, "end_ms": i * 3000 + 2500,
                   "text": text, "is_final": true})
        })
        .collect();
    let r = c
        .post(a.url(&format!("/api/v1/meetings/{id}/segments?wait=true")))
        .json(&json!({"segments": segments}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    eventually(Duration::from_secs(10), "node b searches node a's meeting by context", || {
        let found: Value = c
            .post(b.url("/api/v1/search"))
            .json(&json!({"query": "who turns the compost", "sources": ["meetings"], "top_k": 3}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        found["results"].as_array().is_some_and(|r| {
            r.first().is_some_and(|h| h["meeting_id"] == id.as_str() && h["seq_start"].as_u64().is_some_and(|s| s <= 3))
                && r.iter().all(|h| h["scores"]["context_rank"].is_u64())
        })
    });

    // A named speaker's memory links them in the graph; the other node's search returns the relation.
    let r = c
        .post(b.url("/api/v1/memories?wait=true"))
        .json(&json!({"messages": [{"role": "user", "content": "I adopted a grey cat called Miso last spring.", "name": "Dana"}],
                      "user_id": "dana", "infer": false}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    eventually(Duration::from_secs(10), "node a returns node b's relation", || {
        let found: Value = c
            .post(a.url("/api/v1/memories/search"))
            .json(&json!({"query": "what pet does Dana have?", "user_id": "dana"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        found["relations"].as_array().is_some_and(|r| r.iter().any(|r| r["source"] == "Dana" && r["target"] == "Miso"))
    });

    // A document uploaded through one node is searched in every mode, and read back, through the
    // other (the originals must be shared: S3).
    if derived != Derived::Full {
        return finish(&tmp, &config, a, b);
    }
    let guide = "# Greenhouse guide\n\n## Watering\n\nTomatoes need deep watering twice a week in summer.\n\n\
                 ## Pests\n\nAphids gather under leaves; ladybirds eat them.\n";
    let form = reqwest::blocking::multipart::Form::new()
        .part("file", reqwest::blocking::multipart::Part::bytes(guide.as_bytes().to_vec()).file_name("guide.md"))
        .text("collection", "garden");
    // `wait=true` answers once the document is parsed, embedded and searchable on every store:
    // on a busy 2-core machine with six cluster tests at once, that can take over a minute.
    let patient = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let queued: Value =
        patient.post(a.url("/api/v1/documents?wait=true")).multipart(form).send().unwrap().json().unwrap();
    let doc = &queued["jobs"][0]["result"]["documents"][0];
    assert_eq!(doc["outcome"], "created", "{queued}");
    let id = doc["document"]["id"].as_str().unwrap().to_string();
    for mode in ["keyword", "semantic", "hybrid"] {
        eventually(Duration::from_secs(10), &format!("node b finds the document ({mode})"), || {
            let found: Value = c
                .post(b.url("/api/v1/search"))
                .json(&json!({"query": "how often should tomatoes be watered", "mode": mode}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            found["results"][0]["document_id"] == id.as_str()
        });
    }
    let original = c.get(b.url(&format!("/api/v1/documents/{id}/content"))).send().unwrap().text().unwrap();
    assert_eq!(original, guide);

    if derived == Derived::Full {
        // Each shared store rebuilt while both nodes serve: searches keep answering throughout,
        // and writes made during and after the rebuild are served once it is live.
        for store in ["text", "vectors", "graph"] {
            let stop = Arc::new(AtomicBool::new(false));
            let reader = {
                let (stop, url) = (stop.clone(), b.url("/api/v1/search"));
                std::thread::spawn(move || {
                    let mut answered = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let found: Value = client()
                            .post(&url)
                            .json(&json!({"query": "how often should tomatoes be watered", "mode": "hybrid"}))
                            .send()
                            .unwrap()
                            .json()
                            .unwrap();
                        assert!(found["results"][0]["document_id"].is_string(), "a search during the rebuild: {found}");
                        answered += 1;
                    }
                    answered
                })
            };
            let id = format!("during-{store}");
            let r = c
                .post(a.url("/api/v1/records"))
                .json(&note_record(&id, &format!("written while {store} rebuilds"), 9))
                .send()
                .unwrap();
            assert!(r.status().is_success());
            let out = run(nexus(&tmp.path().join("rebuilder"))
                .arg("--config")
                .arg(&config)
                .args(["reindex", "--store", store]));
            assert_eq!(out.status.code(), Some(0), "reindex {store}: {}", String::from_utf8_lossy(&out.stderr));
            stop.store(true, Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0, "searches answered during the {store} rebuild");
            let after = format!("after-{store}");
            let r = c
                .post(b.url("/api/v1/records"))
                .json(&note_record(&after, &format!("written after {store} rebuilt"), 11))
                .send()
                .unwrap();
            assert!(r.status().is_success());
            eventually(Duration::from_secs(15), &format!("writes around the {store} rebuild are served"), || {
                search_ids(&a, None, &format!("written while {store} rebuilds")).contains(&id)
                    && search_ids(&b, None, &format!("written after {store} rebuilt")).contains(&after)
            });
        }
    }

    finish(&tmp, &config, a, b);
}

/// Both nodes' derived stores hold what the record holds, online and (stopped) offline.
fn finish(tmp: &tempfile::TempDir, config: &ClusterConfig, a: Server, b: Server) {
    for server in [&a, &b] {
        let report: Value = client().get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
        assert_eq!(report["ok"], true, "{report:#}");
    }
    assert_eq!(a.stop().code(), Some(0));
    assert_eq!(b.stop().code(), Some(0));
    for name in ["node-a", "node-b"] {
        let out = run(nexus(&tmp.path().join(name)).arg("--config").arg(config).arg("check"));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn two_nodes_with_node_local_derived_stores() {
    writes_on_one_node_are_served_by_the_other(Derived::Local);
}

#[test]
fn two_nodes_with_a_shared_vector_store() {
    writes_on_one_node_are_served_by_the_other(Derived::Pgvector);
}

#[test]
fn two_nodes_on_the_full_cluster_stack() {
    writes_on_one_node_are_served_by_the_other(Derived::Full);
}

#[test]
fn a_key_revoked_on_one_node_is_refused_by_the_other_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = cluster::postgres().fresh_database("revocation");
    let config = cluster_config(tmp.path(), &pg, Derived::Local);
    let a = start_node(tmp.path(), "node-a", &config, Some(MASTER));
    let b = start_node(tmp.path(), "node-b", &config, Some(MASTER));
    let c = client();
    let created: Value = c
        .post(a.url("/api/v1/keys"))
        .header("X-API-Key", MASTER)
        .json(&json!({"name": "agent", "scopes": ["read", "write"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let (id, key) = (created["api_key"]["id"].as_str().unwrap(), created["key"].as_str().unwrap());
    assert_eq!(c.get(b.url("/api/v1/records")).header("X-API-Key", key).send().unwrap().status(), 200);
    let r = c.delete(a.url(&format!("/api/v1/keys/{id}"))).header("X-API-Key", MASTER).send().unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    // No wait: the very next request on the other node is refused.
    let r = c.get(b.url("/api/v1/records")).header("X-API-Key", key).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "key_revoked");
    // One audit log: node b's requests (the key's use, then the refusal) are listed through node a,
    // beside node a's own.
    eventually(Duration::from_secs(10), "the audit log holds both nodes' requests", || {
        let audit: Value =
            c.get(a.url("/api/v1/audit?limit=200")).header("X-API-Key", MASTER).send().unwrap().json().unwrap();
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        let on = |method: &str, route: &str, status: u16| {
            entries.iter().any(|e| e["method"] == method && e["route"] == route && e["status"] == status)
        };
        entries.iter().any(|e| e["key_id"] == id && e["status"] == 200 && e["route"] == "/api/v1/records")
            && on("GET", "/api/v1/records", 401)
            && on("DELETE", "/api/v1/keys/{id}", 200)
    });
}

/// Final state per id, as acknowledged: Some(body) = present, None = deleted.
type Acked = Arc<Mutex<HashMap<String, Option<String>>>>;

/// Writes through `base` until stopped or the node dies; returns the id in flight when it died.
fn writer(base: String, prefix: String, acked: Acked, stop: Arc<AtomicBool>) -> Option<String> {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("{prefix}-{n}");
        let body = format!("body {n} of {prefix}");
        let (request, after) = if n.is_multiple_of(5) {
            let gone = format!("{prefix}-{}", n - 1);
            (c.delete(format!("{base}/api/v1/records/{gone}")), (gone, None))
        } else {
            (c.post(format!("{base}/api/v1/records")).json(&note_record(&id, &body, n)), (id.clone(), Some(body)))
        };
        match request.send() {
            Ok(r) if r.status().is_success() => {
                acked.lock().unwrap().insert(after.0, after.1);
            }
            Ok(r) => panic!("write refused with {}: {:?}", r.status(), r.text()),
            Err(_) => return Some(after.0),
        }
    }
    None
}

fn verify(server: &Server, acked: &Acked, uncertain: &[String]) {
    let c = client();
    let acked = acked.lock().unwrap();
    for (id, state) in acked.iter().filter(|(id, _)| !uncertain.contains(id)) {
        let got = c.get(server.url(&format!("/api/v1/records/{id}"))).send().unwrap();
        match state {
            Some(body) => {
                assert_eq!(got.status(), 200, "acknowledged write of {id} lost");
                assert_eq!(got.json::<Value>().unwrap()["body"].as_str(), Some(body.as_str()));
            }
            None => assert_eq!(got.status(), 404, "acknowledged delete of {id} undone"),
        }
    }
    let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
    assert_eq!(report["ok"], true, "derived stores diverge: {report:#}");
}

#[test]
fn a_node_killed_during_writes_through_both_loses_nothing_acknowledged() {
    for derived in [Derived::Local, Derived::Pgvector, Derived::Full] {
        let tmp = tempfile::tempdir().unwrap();
        let pg = cluster::postgres().fresh_database("kill-a-node");
        let config = cluster_config(tmp.path(), &pg, derived);
        let a = start_node(tmp.path(), "node-a", &config, None);
        let b = start_node(tmp.path(), "node-b", &config, None);
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = [(&a, "a"), (&b, "b")]
            .into_iter()
            .flat_map(|(server, name)| (0..2).map(move |w| (format!("http://{}", server.addr), format!("{name}{w}"))))
            .map(|(base, prefix)| {
                let (acked, stop) = (acked.clone(), stop.clone());
                std::thread::spawn(move || writer(base, prefix, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        a.kill9();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let uncertain: Vec<String> = writers.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert!(acked.lock().unwrap().len() > 20, "the writers got enough writes in");
        // Node b kept serving; node a comes back and catches up.
        verify(&b, &acked, &uncertain);
        let a = start_node(tmp.path(), "node-a", &config, None);
        verify(&a, &acked, &uncertain);
        assert_eq!(a.stop().code(), Some(0));
        assert_eq!(b.stop().code(), Some(0));
        for name in ["node-a", "node-b"] {
            let out = run(nexus(&tmp.path().join(name)).arg("--config").arg(&config).arg("check"));
            assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

/// The same memory added to one user through both nodes at once is stored once: adds to a scope
/// are serialised across the cluster, not only within a node.
#[test]
fn the_same_memory_added_through_both_nodes_at_once_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = cluster::postgres().fresh_database("concurrent-adds");
    let config = cluster_config(tmp.path(), &pg, Derived::Local);
    let a = start_node(tmp.path(), "node-a", &config, None);
    let b = start_node(tmp.path(), "node-b", &config, None);
    let bases = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    for round in 0..5 {
        let text = format!("I moved to Lisbon in spring number {round}");
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (base, text) = (bases[i % 2].clone(), text.clone());
                std::thread::spawn(move || {
                    let r = client()
                        .post(format!("{base}/api/v1/memories"))
                        .json(
                            &json!({"messages": [{"role": "user", "content": text}], "user_id": "rui", "infer": false}),
                        )
                        .send()
                        .unwrap();
                    assert!(r.status().is_success(), "{:?}", r.text());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let listed: Value =
            client().get(a.url("/api/v1/memories?user_id=rui&limit=100")).send().unwrap().json().unwrap();
        let same = listed["memories"].as_array().unwrap().iter().filter(|m| m["memory"] == text.as_str()).count();
        assert_eq!(same, 1, "round {round}: {listed}");
    }
}
