//! Crash safety: a writer is killed with SIGKILL at random moments; after each restart every
//! acknowledged write is in the record and in every derived store, and `nexus check` is clean.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, client, nexus, note_record, run};
use rand::Rng;
use serde_json::{Value, json};

/// Final state per id, as acknowledged: Some(body) = present, None = deleted.
type Acked = Arc<Mutex<HashMap<String, Option<String>>>>;

const ROUNDS: usize = 6;
const WRITERS: usize = 3;

/// Writes until the server dies; records what was acknowledged, and which id was in flight.
fn writer(base: String, prefix: String, acked: Acked, uncertain: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut rng = rand::rng();
    let mut n = 0usize;
    let mut mine: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let delete = !mine.is_empty() && rng.random_bool(0.2);
        let (id, request, after) = if delete {
            let id = mine.swap_remove(rng.random_range(0..mine.len()));
            (id.clone(), c.delete(format!("{base}/api/v1/records/{id}")), None)
        } else if !mine.is_empty() && rng.random_bool(0.2) {
            let id = mine[rng.random_range(0..mine.len())].clone();
            let body = format!("updated body {n}");
            (id.clone(), c.post(format!("{base}/api/v1/records")).json(&note_record(&id, &body, n)), Some(body))
        } else {
            let id = format!("{prefix}-{n}");
            let body = format!("body {n} of {prefix}");
            mine.push(id.clone());
            (id.clone(), c.post(format!("{base}/api/v1/records")).json(&note_record(&id, &body, n)), Some(body))
        };
        match request.send() {
            Ok(r) if r.status().is_success() => {
                acked.lock().unwrap().insert(id, after);
            }
            Ok(r) => panic!("write refused with {}: {:?}", r.status(), r.text()),
            Err(_) => {
                // The server died mid-request: this write may or may not have landed.
                uncertain.lock().unwrap().push(id);
                return;
            }
        }
    }
}

fn verify(server: &Server, acked: &Acked, uncertain: &[String]) {
    let c = client();
    let acked = acked.lock().unwrap();
    let mut checked = 0;
    for (id, state) in acked.iter() {
        if uncertain.contains(id) {
            continue;
        }
        let got = c.get(server.url(&format!("/api/v1/records/{id}"))).send().unwrap();
        match state {
            Some(body) => {
                assert_eq!(got.status(), 200, "acknowledged write of {id} lost");
                let got: Value = got.json().unwrap();
                assert_eq!(got["body"].as_str(), Some(body.as_str()), "acknowledged update of {id} lost");
            }
            None => assert_eq!(got.status(), 404, "acknowledged delete of {id} undone"),
        }
        checked += 1;
    }
    assert!(checked > 0 || acked.is_empty());
    // Every derived store holds exactly the records.
    let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
    assert_eq!(report["ok"], true, "derived stores diverge after restart: {report:#}");
    // And a text search finds an acknowledged body.
    if let Some((id, Some(_))) = acked.iter().find(|(id, s)| s.is_some() && !uncertain.contains(id)) {
        let hits: Value = c
            .post(server.url("/api/v1/records/search"))
            .json(&json!({"query": format!("\"note {id}\""), "top_k": 5}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(hits["hits"].as_array().unwrap().iter().any(|h| h["id"] == id.as_str()), "{id} not searchable: {hits}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acked: Acked = Arc::default();
    let mut rng = rand::rng();
    let mut uncertain_all: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let server = Server::start_with(&data, |cmd| {
            // Persist often so kills land in every phase: mid-batch, mid-commit, mid-save.
            cmd.env("NEXUS__INDEXER__PERSIST_INTERVAL_MS", "50");
        });
        server.wait_ready();
        verify(&server, &acked, &uncertain_all);
        let uncertain: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (base, acked, uncertain, stop) =
                    (format!("http://{}", server.addr), acked.clone(), uncertain.clone(), stop.clone());
                std::thread::spawn(move || writer(base, format!("r{round}w{w}"), acked, uncertain, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
        uncertain_all.extend(uncertain.lock().unwrap().drain(..));
    }
    let server = Server::start(&data);
    server.wait_ready();
    verify(&server, &acked, &uncertain_all);
    assert!(acked.lock().unwrap().len() > 50, "the writers got enough writes in");
    assert_eq!(server.stop().code(), Some(0));
    let out = run(nexus(&data).arg("check"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}
