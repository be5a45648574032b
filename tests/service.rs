//! Running under systemd: the sd_notify protocol (READY, RELOADING, STOPPING, WATCHDOG) spoken to a
//! real notification socket, and SIGHUP reloads, against the real binary.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, client};

/// The service manager's end of `$NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        NotifySocket { socket, seen: Vec::new() }
    }

    /// Messages until one has `line` as one of its lines; panics after `timeout`.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).to_string();
                self.seen.push(message.clone());
                if message.lines().any(|l| l == line) {
                    return message;
                }
            }
        }
        panic!("no {line} within {timeout:?}; seen {:?}", self.seen);
    }
}

/// Collects a child's stderr as it comes.
fn capture_stderr(server: &mut Server) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = server.child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

fn wait_for_log(log: &Mutex<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log.lock().unwrap().clone();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "the log lacks {needle:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tells_systemd_when_ready_reloading_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("nexus.toml");
    std::fs::write(&config, "[log]\nlevel = \"warn\"\n").unwrap();
    let mut notify = NotifySocket::bind(&tmp.path().join("notify.sock"));
    let mut server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS_CONFIG", &config)
            .env("NOTIFY_SOCKET", tmp.path().join("notify.sock"))
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped());
    });
    let log = capture_stderr(&mut server);

    // READY=1 means what /ready means.
    let ready = notify.wait_for("READY=1", Duration::from_secs(30));
    assert!(ready.contains("STATUS=serving"), "{ready}");
    assert_eq!(client().get(server.url("/ready")).send().unwrap().status(), 200);

    // SIGHUP: the new log level applies; other changed keys are named as needing a restart.
    std::fs::write(&config, "[log]\nlevel = \"info\"\n[indexer]\nbatch_size = 100\n").unwrap();
    server.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.wait_for("READY=1", Duration::from_secs(10));
    let text = wait_for_log(&log, "configuration reloaded");
    assert!(text.contains("indexer.batch_size") && text.contains("next restart"), "{text}");
    assert!(!text.contains("ready: every indexer"), "info lines were logged while the level was warn:\n{text}");

    // A broken file is refused; the server keeps its configuration and keeps serving.
    std::fs::write(&config, "[log]\nlevle = \"debug\"\n").unwrap();
    server.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(10));
    notify.wait_for("READY=1", Duration::from_secs(10));
    let text = wait_for_log(&log, "reload failed");
    assert!(text.contains("levle"), "{text}");
    assert_eq!(client().get(server.url("/health")).send().unwrap().status(), 200);

    // SIGTERM: STOPPING=1, then a clean exit.
    server.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(server.stop().success());
    assert!(!notify.seen.iter().any(|m| m.contains("WATCHDOG")), "no watchdog was asked for: {:?}", notify.seen);
}

#[test]
fn pings_the_watchdog_when_systemd_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(&tmp.path().join("notify.sock"));
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NOTIFY_SOCKET", tmp.path().join("notify.sock")).env("WATCHDOG_USEC", "200000");
    });
    notify.wait_for("READY=1", Duration::from_secs(30));
    let started = Instant::now();
    for _ in 0..4 {
        notify.wait_for("WATCHDOG=1", Duration::from_secs(2));
    }
    // Every 100 ms (half of WATCHDOG_USEC): four pings well within two seconds.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(server.stop().success());
}
