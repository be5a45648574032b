//! Faults around the data directory, on small filesystems of their own (tmpfs, mounted by the
//! test as root): the disk filling up during ingestion and during a backup, and a read-only data
//! directory; and a filesystem that cannot take a file lock.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, client, nexus, run};
use serde_json::{Value, json};

/// A tmpfs of `mb` megabytes mounted for the test's duration.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(mb: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m,mode=0755"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "these tests mount a small tmpfs and need root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { _dir: dir, path }
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(&self.path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Fills the filesystem with a ballast file, leaving about `leave` bytes free.
    fn fill(&self, leave: u64) -> PathBuf {
        let free = fs4::available_space(&self.path).unwrap();
        let ballast = self.path.join("ballast");
        let f = std::fs::File::create(&ballast).unwrap();
        let size = free.saturating_sub(leave);
        // tmpfs has no fallocate-without-writing shortcut that counts: write zeros.
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0;
        while written + chunk.len() as u64 <= size {
            if w.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len() as u64;
        }
        let _ = w.flush();
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn base(server: &Server) -> String {
    format!("http://{}", server.addr)
}

fn add_memory(url: &str, n: usize) -> reqwest::blocking::Response {
    let text = format!("memory number {n}: the quarterly report mentions {} widgets", n * 17);
    client()
        .post(format!("{url}/api/v1/memories"))
        .json(&json!({"messages": [{"role": "user", "content": text}], "user_id": "u", "infer": false}))
        .send()
        .unwrap()
}

fn add_document(url: &str, n: usize, size: usize) -> reqwest::blocking::Response {
    let text = format!("# Document {n}\n\n{}", "The archive keeps every acknowledged write. ".repeat(size / 44));
    client()
        .post(format!("{url}/api/v1/documents/text"))
        .json(&json!({"text": text, "source": format!("doc-{n}.md"), "content_type": "text/markdown"}))
        .send()
        .unwrap()
}

/// The disk fills up while documents and memories come in: the write that does not fit is
/// refused with 507 `disk_full` and a message that says to free space; reads go on; nothing is
/// half-written (`/api/v1/admin/check` agrees after space is freed); once space is freed,
/// writes succeed again.
#[test]
fn disk_full_during_ingestion_refuses_writes_cleanly_and_recovers() {
    let disk = SmallDisk::mount(96);
    let data = disk.path.join("data");
    let server = Server::start(&data);
    let url = base(&server);
    let mut acked_memories = Vec::new();
    for n in 0..20 {
        let response = add_memory(&url, n);
        assert!(response.status().is_success());
        let value: Value = response.json().unwrap();
        acked_memories.push(value["results"][0]["id"].as_str().unwrap().to_string());
    }
    let ballast = disk.fill(256 << 10);

    let mut refused: Option<Value> = None;
    for n in 0..200 {
        let response = if n % 2 == 0 { add_document(&url, n, 64 << 10) } else { add_memory(&url, 100 + n) };
        let status = response.status();
        if status.is_success() {
            if n % 2 == 1 {
                let value: Value = response.json().unwrap();
                acked_memories.push(value["results"][0]["id"].as_str().unwrap().to_string());
            }
            continue;
        }
        let body: Value = response.json().unwrap_or_default();
        assert_eq!(status.as_u16(), 507, "a full disk answers 507: {body}");
        refused = Some(body);
        break;
    }
    let refused = refused.expect("the disk never filled up");
    assert_eq!(refused["error"]["code"], "disk_full", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("free space"), "{refused}");

    // Reads are served while the disk is full.
    let search = client()
        .post(format!("{url}/api/v1/memories/search"))
        .json(&json!({"query": "quarterly report widgets", "user_id": "u", "top_k": 5}))
        .send()
        .unwrap();
    assert_eq!(search.status(), 200);
    let first = client().get(format!("{url}/api/v1/memories/{}", acked_memories[0])).send().unwrap();
    assert_eq!(first.status(), 200);

    // Space comes back: writes succeed again, every acknowledged write is there, and the
    // derived stores agree with the record.
    std::fs::remove_file(ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = add_memory(&url, 999);
        if response.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "writes do not succeed after space was freed: {}", response.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in &acked_memories {
        let got = client().get(format!("{url}/api/v1/memories/{id}")).send().unwrap();
        assert_eq!(got.status(), 200, "acknowledged memory {id} lost");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report: Value = client().get(format!("{url}/api/v1/admin/check")).send().unwrap().json().unwrap();
        if report["ok"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the stores disagree after the disk was full: {report:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A backup onto a disk too small for it: a clear `disk_full` error, no archive (finished or
/// partial) left, the server serving on, and the next backup elsewhere works.
#[test]
fn disk_full_during_a_backup_leaves_no_archive_and_the_server_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let url = base(&server);
    // Files that do not compress (a hash chain's bytes): the archive outgrows the small disk.
    for n in 0..8u64 {
        let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let bytes: Vec<u8> = (0..(512 << 10) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let status = client().put(format!("{url}/api/v1/objects/noise/{n}.bin")).body(bytes).send().unwrap().status();
        assert!(status.is_success(), "{status}");
    }
    assert!(add_document(&url, 1, 4 << 10).status().is_success());
    let small = SmallDisk::mount(2);
    let target = small.path.join("backups");
    let out = run(nexus(&data).args(["backup", "--to"]).arg(&target));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("disk is full"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&target).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "a failed backup left {:?}", left.iter().map(|e| e.file_name()).collect::<Vec<_>>());
    let staging: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(staging.is_empty(), "staging copies left in the data directory");
    assert!(add_memory(&url, 1).status().is_success(), "the server takes writes after the failed backup");
    let elsewhere = run(nexus(&data).args(["backup", "--to"]).arg(tmp.path().join("roomy")));
    assert!(elsewhere.status.success(), "{}", String::from_utf8_lossy(&elsewhere.stderr));
}

/// A data directory on a read-only filesystem: every command that opens it says so and what
/// to do, instead of an i/o error.
#[test]
fn a_read_only_data_directory_is_refused_with_what_to_do() {
    let disk = SmallDisk::mount(64);
    let data = disk.path.join("data");
    let check = run(nexus(&data).arg("check"));
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    disk.remount("ro");
    for args in [vec!["check"], vec!["serve", "--listen", "127.0.0.1:0"], vec!["backup"]] {
        let out = run(nexus(&data).args(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("read-only filesystem") && stderr.contains("remount"), "{args:?}: {stderr}");
    }
    disk.remount("rw");
    assert!(run(nexus(&data).arg("check")).status.success());
}

/// A data directory on a filesystem that cannot take a file lock (NFS without a lock daemon,
/// some FUSE filesystems): the kernel's answer, ENOLCK, is given to the real binary by a
/// preloaded `flock` that always fails. Every command that would write refuses with what to do
/// and leaves the directory as it was.
#[test]
fn a_filesystem_that_cannot_take_a_lock_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("nolock.c");
    std::fs::write(
        &source,
        "#include <errno.h>\nint flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOLCK; return -1; }\n",
    )
    .unwrap();
    let shim = tmp.path().join("libnolock.so");
    let built = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&shim).arg(&source).output().unwrap();
    assert!(built.status.success(), "cc: {}", String::from_utf8_lossy(&built.stderr));

    let data = tmp.path().join("data");
    assert!(run(nexus(&data).arg("check")).status.success(), "a data directory with its lock");
    let records = std::fs::read_dir(data.join("records")).unwrap().count();
    for args in
        [vec!["check"], vec!["serve", "--listen", "127.0.0.1:0"], vec!["backup"], vec!["dump", "--to", "x.ndjson"]]
    {
        let out = run(nexus(&data).env("LD_PRELOAD", &shim).args(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot take a file lock") && stderr.contains("local filesystem"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(data.join("records")).unwrap().count(), records, "nothing was written");
    assert!(run(nexus(&data).arg("check")).status.success(), "the directory opens once locks work");
}
