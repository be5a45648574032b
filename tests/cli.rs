//! The command line: configuration errors, exit codes, check and reindex.

use crate::common;

use std::path::Path;

use common::{Server, client, nexus, nexus_bin, run};
use serde_json::{Value, json};

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("nexus.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_config_error(out: &std::process::Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "config errors exit 2: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

#[test]
fn config_errors_name_the_key_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let file = write_config(tmp.path(), "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    let out = run(nexus(&data).arg("--config").arg(&file).args(["serve"]));
    assert_config_error(&out, &["lisen", "nexus.toml"]);

    let file = write_config(tmp.path(), "[store.vectors]\ndimensions = \"many\"\n");
    let out = run(nexus(&data).arg("--config").arg(&file).args(["serve"]));
    assert_config_error(&out, &["store.vectors.dimensions", "nexus.toml"]);

    let file = write_config(tmp.path(), "[store.text]\nbackend = \"lucene\"\n");
    let out = run(nexus(&data).arg("--config").arg(&file).args(["serve"]));
    assert_config_error(&out, &["store.text.backend", "lucene"]);

    // The cluster backends of this build say what they need.
    for (store, backend, needs) in [
        ("records", "postgres", "store.records.url"),
        ("vectors", "pgvector", "store.vectors.url"),
        ("vectors", "qdrant", "store.vectors.url"),
        ("text", "elasticsearch", "store.text.url"),
        ("graph", "neo4j", "store.graph.url"),
        ("objects", "s3", "store.objects.endpoint"),
    ] {
        let file = write_config(tmp.path(), &format!("[store.{store}]\nbackend = \"{backend}\"\n"));
        let out = run(nexus(&data).arg("--config").arg(&file).args(["serve"]));
        assert_config_error(&out, &[needs, "is required"]);
    }

    let out = run(nexus(&data).env("NEXUS__SERVER__LISEN", "1").args(["serve"]));
    assert_config_error(&out, &["lisen", "NEXUS__SERVER__LISEN"]);
    let out = run(nexus(&data).env("NEXUS__STORE__VECTORS__CONNECTIVITY", "lots").args(["serve"]));
    assert_config_error(&out, &["store.vectors.connectivity", "NEXUS__STORE__VECTORS__CONNECTIVITY"]);

    let out = run(nexus(&data).arg("--config").arg(tmp.path().join("missing.toml")).args(["serve"]));
    assert_config_error(&out, &["missing.toml", "does not exist"]);

    let out = run(nexus(&data).args(["serve", "--listen", "not-an-address"]));
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");

    assert!(!data.exists(), "no failed start may write to the data directory");
}

#[test]
fn newer_data_directory_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("FORMAT"), "99\n").unwrap();
    let out = run(nexus(&data).args(["serve", "--listen", "127.0.0.1:0"]));
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("format 99"), "{stderr}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1, "nothing written beside FORMAT");
    assert_eq!(std::fs::read_to_string(data.join("FORMAT")).unwrap(), "99\n");
}

#[test]
fn version_and_effective_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(std::process::Command::new(nexus_bin()).arg("version"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nexus "));

    let file = write_config(tmp.path(), "[store.records]\nurl = \"postgres://nexus:hunter2@db/nexus\"\n");
    let out = run(nexus(&tmp.path().join("data"))
        .arg("--config")
        .arg(&file)
        .env("NEXUS__SERVER__LISTEN", "0.0.0.0:9000")
        .arg("config"));
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains("0.0.0.0:9000"), "environment layer applied: {shown}");
    let parsed: toml::Value = toml::from_str(&shown).expect("config prints valid TOML");
    assert_eq!(parsed["store"]["vectors"]["dimensions"].as_integer(), Some(384));

    let out = run(nexus(&tmp.path().join("data")).args(["config", "--listen", "1.2.3.4:5"]));
    assert_eq!(out.status.code(), Some(2), "--listen belongs to serve");
}

#[test]
fn check_and_reindex() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    server.wait_ready();
    let c = client();
    for i in 0..50 {
        let mut v = vec![0.0f32; 384];
        v[i] = 1.0;
        let record = json!({"id": format!("r{i}"), "kind": "note", "body": format!("note number {i}"), "vector": v,
                            "graph": {"type": "node", "label": "note", "name": format!("n{i}")}});
        assert_eq!(c.post(server.url("/api/v1/records")).json(&record).send().unwrap().status(), 201);
    }
    // While the server holds the directory, check asks it.
    let out = run(nexus(&data).args(["check", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"], 50);
    assert_eq!(report["ok"], true);
    assert_eq!(server.stop().code(), Some(0));

    // Offline check reads the stores itself.
    let out = run(nexus(&data).arg("check"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("check passed"));

    // Lose the vector index: the next start replays the change log into it.
    for entry in std::fs::read_dir(data.join("vectors")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let out = run(nexus(&data).arg("check"));
    assert_eq!(out.status.code(), Some(0), "replay restores the vectors: {}", String::from_utf8_lossy(&out.stdout));

    // Reindex rebuilds from the record.
    let out = run(nexus(&data).args(["reindex", "--store", "text"]));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("text: rebuilt from 50 records"));
    let out = run(nexus(&data).arg("reindex"));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for store in ["text", "vectors", "graph"] {
        assert!(stdout.contains(&format!("{store}: rebuilt from 50 records")), "{stdout}");
    }
    let out = run(nexus(&data).arg("check"));
    assert_eq!(out.status.code(), Some(0));
}
