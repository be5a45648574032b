//! `nexus doctor`, run as a person would: each check's finding, what to fix, and the exit code.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Server, nexus, run};

struct Report {
    code: Option<i32>,
    text: String,
}

impl Report {
    /// The line of `check` that mentions `about`.
    fn line(&self, check: &str, about: &str) -> &str {
        self.text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(check) && l.contains(about))
            .unwrap_or_else(|| panic!("no {check} line about {about:?}:\n{}", self.text))
    }

    fn level(&self, check: &str, about: &str) -> &str {
        self.line(check, about).split_whitespace().next().unwrap()
    }

    /// The fix printed under the line of `check` that mentions `about`.
    fn fix(&self, check: &str, about: &str) -> &str {
        let line = self.line(check, about);
        let next = self.text.lines().skip_while(|l| *l != line).nth(1).unwrap_or("");
        next.trim().strip_prefix("fix: ").unwrap_or_else(|| panic!("no fix under {line:?}:\n{}", self.text))
    }
}

fn doctor(data: &Path, env: &[(&str, &str)]) -> Report {
    let mut cmd = nexus(data);
    cmd.arg("doctor").env("NEXUS__SERVER__LISTEN", "127.0.0.1:0");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = run(&mut cmd);
    Report { code: out.status.code(), text: String::from_utf8_lossy(&out.stdout).to_string() }
}

/// Whether the built-in model's files are in this source tree (a debug build reads them from there).
fn model_present() -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-minilm-l6-v2");
    ["config.json", "tokenizer.json", "model.f16.safetensors"].iter().all(|f| dir.join(f).is_file())
}

/// Whether the disk line's figures ("X GiB free of Y GiB on ...") leave at least 10% free.
fn disk_has_room(line: &str) -> bool {
    let numbers: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(numbers.len() >= 2, "no figures in {line:?}");
    numbers[0] >= 0.1 * numbers[1]
}

#[test]
fn a_sound_setup_passes_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let report = doctor(&data, &[]);
    assert_eq!(report.level("config", "valid"), "ok");
    assert_eq!(report.level("data_dir", "does not exist yet"), "ok");
    // The disk finding follows the machine's free space: below 10% free it warns (CI machines run close to it).
    let disk_ok = disk_has_room(report.line("disk", "GiB free"));
    assert_eq!(report.level("disk", "GiB free"), if disk_ok { "ok" } else { "warn" });
    assert_eq!(report.level("port", "127.0.0.1:0"), "ok");
    for store in ["records: sqlite", "text: tantivy", "vectors: usearch", "graph: sled", "objects: local"] {
        assert_eq!(report.level("backend", store), "ok");
    }
    // The model's files are checked where this debug build reads them.
    let model = report.line("model", "all-minilm-l6-v2");
    if model_present() {
        assert!(model.starts_with("ok"), "{model}");
        assert_eq!(report.code, Some(0), "{}", report.text);
        assert_eq!(report.text.contains("everything looks right"), disk_ok, "{}", report.text);
    } else {
        assert!(model.starts_with("FAIL") && model.contains("model.f16.safetensors"), "{model}");
        assert!(report.fix("model", "all-minilm").contains("assets/models"));
        assert_eq!(report.code, Some(1), "{}", report.text);
    }
    assert!(!data.exists(), "doctor must not create the data directory");
}

#[test]
fn names_each_problem_and_its_fix() {
    let tmp = tempfile::tempdir().unwrap();

    // A port taken by another program.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let report = doctor(&tmp.path().join("data"), &[("NEXUS__SERVER__LISTEN", &addr)]);
    assert_eq!(report.code, Some(1));
    assert_eq!(report.level("port", &addr), "FAIL");
    assert!(report.line("port", &addr).contains("in use by another program"));
    assert!(report.fix("port", &addr).contains("server.listen"));
    drop(taken);

    // A cluster backend without the setting it needs.
    let report = doctor(&tmp.path().join("data"), &[("NEXUS__STORE__VECTORS__BACKEND", "qdrant")]);
    assert_eq!(report.code, Some(1));
    assert_eq!(report.level("config", "store.vectors.url"), "FAIL");

    // An invalid configuration: the key, the layer, and nothing else checked.
    let report = doctor(&tmp.path().join("data"), &[("NEXUS__SERVER__LISEN", "1")]);
    assert_eq!(report.code, Some(1));
    assert!(report.line("config", "lisen").contains("NEXUS__SERVER__LISEN"));
    assert_eq!(report.text.lines().filter(|l| l.starts_with("FAIL")).count(), 1, "{}", report.text);

    // A data directory open to everyone, and one written by a newer nexus.
    let data = tmp.path().join("newer");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("FORMAT"), "99\n").unwrap();
    let report = doctor(&data, &[]);
    assert_eq!(report.code, Some(1));
    assert_eq!(report.level("data_dir", "every user"), "warn");
    assert!(report.fix("data_dir", "every user").contains("chmod 750"));
    assert_eq!(report.level("data_dir", "format 99"), "FAIL");

    // A file where the data directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let report = doctor(&file, &[]);
    assert_eq!(report.level("data_dir", "not a directory"), "FAIL");
}

#[test]
fn checks_the_reranker_when_one_is_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let none = doctor(&data, &[]);
    assert!(!none.text.contains(" rerank "), "no reranker, no line:\n{}", none.text);

    let fake = common::fake_rerank::FakeRerank::start();
    let url = fake.url();
    let cohere = [
        ("NEXUS__RERANK__PROVIDER", "cohere"),
        ("NEXUS__RERANK__URL", url.as_str()),
        ("NEXUS__RERANK__MODEL", common::fake_rerank::MODEL),
        ("NEXUS__RERANK__API_KEY_ENV", "NEXUS_TEST_DOCTOR_RERANK_KEY"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        cohere.iter().copied().chain(extra.iter().copied()).collect()
    };
    let report = doctor(&data, &with(&[("NEXUS_TEST_DOCTOR_RERANK_KEY", common::fake_rerank::KEY)]));
    assert_eq!(report.level("rerank", "answered"), "ok", "{}", report.text);
    assert_eq!(fake.calls.requests(), 1);

    // A refused key: a warning (searches still answer), naming what to check.
    let report = doctor(&data, &with(&[("NEXUS_TEST_DOCTOR_RERANK_KEY", "wrong")]));
    assert_eq!(report.level("rerank", "API key"), "warn", "{}", report.text);
    assert!(report.fix("rerank", "API key").contains("rerank.url"));
    // The key's variable unset: the server would not start.
    let report = doctor(&data, &with(&[]));
    assert_eq!(report.level("rerank", "NEXUS_TEST_DOCTOR_RERANK_KEY"), "FAIL", "{}", report.text);
    assert_eq!(report.code, Some(1));
}

#[test]
fn asks_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    server.wait_ready();
    let addr = server.addr.to_string();
    let report = doctor(&data, &[("NEXUS__SERVER__LISTEN", &addr)]);
    assert_eq!(report.level("port", &addr), "ok", "the port is taken by this nexus itself");
    assert!(report.line("port", &addr).contains("served by the nexus holding the data directory"));
    assert_eq!(report.level("server", "ready"), "ok");
    assert_eq!(report.level("data_dir", "readable and writable"), "ok");
    assert!(!report.text.contains("every user"), "nexus serve creates its data directory 0750:\n{}", report.text);
    assert!(server.stop().success());
}
