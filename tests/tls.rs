//! HTTPS over real sockets, with self-signed certificates made here: HTTP/2 by ALPN, certificate
//! reload on SIGHUP, graceful shutdown of in-flight requests.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use reqwest::blocking::Client;
use serde_json::json;

/// A new self-signed certificate for 127.0.0.1, written to `dir` (replacing any there): its PEM.
fn write_certificate(dir: &Path) -> String {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = made.cert.pem();
    // Written aside and renamed, as a certificate manager would, so a reload never sees half a file.
    for (name, text) in [("cert.pem", cert.clone()), ("key.pem", made.signing_key.serialize_pem())] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
    cert
}

fn trusting(cert_pem: &str) -> reqwest::blocking::ClientBuilder {
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
}

fn start_tls(tmp: &Path) -> Server {
    let (cert, key) = (tmp.join("cert.pem"), tmp.join("key.pem"));
    Server::start_with(&tmp.join("data"), |cmd| {
        cmd.env("NEXUS__SERVER__TLS__CERT_FILE", &cert).env("NEXUS__SERVER__TLS__KEY_FILE", &key);
    })
}

fn wait_ready(client: &Client, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.get(server.url("/ready")).send().is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "not ready in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn https_speaks_http2_and_reloads_its_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let first = write_certificate(tmp.path());
    let server = start_tls(tmp.path());
    assert_eq!(server.scheme, "https");
    let client = trusting(&first).build().unwrap();
    wait_ready(&client, &server);

    let r = client.get(server.url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose HTTP/2");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let h1 = trusting(&first).http1_only().build().unwrap().get(server.url("/health")).send().unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    let write = client.post(server.url("/api/v1/records?wait=true")).json(&json!({"kind": "note", "body": "over tls"}));
    assert_eq!(write.send().unwrap().status(), 201);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = common::client().get(format!("http://{}/health", server.addr)).send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // A new certificate, then SIGHUP: new connections get it; the old one is no longer trusted.
    let second = write_certificate(tmp.path());
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time, so each attempt is a new TLS handshake.
        if trusting(&second).build().unwrap().get(server.url("/health")).send().is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not served after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(trusting(&first).build().unwrap().get(server.url("/health")).send().is_err(), "old certificate retired");

    // A broken file on SIGHUP keeps the last good certificate in service.
    std::fs::write(tmp.path().join("cert.pem"), "not a certificate").unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let r = trusting(&second).build().unwrap().get(server.url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.stop().code(), Some(0));
}

/// A request body that arrives in two halves with a pause between them.
struct SlowBody {
    parts: Vec<Vec<u8>>,
    pause: Duration,
}

impl Read for SlowBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.parts.is_empty() {
            return Ok(0);
        }
        if self.parts.len() == 1 {
            std::thread::sleep(self.pause);
        }
        let part = self.parts.remove(0);
        buf[..part.len()].copy_from_slice(&part);
        Ok(part.len())
    }
}

#[test]
fn sigterm_over_tls_finishes_in_flight_requests_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = write_certificate(tmp.path());
    let server = start_tls(tmp.path());
    let client = trusting(&cert).build().unwrap();
    wait_ready(&client, &server);

    let body = json!({"id": "in-flight", "kind": "note", "body": "sent slowly over tls"}).to_string().into_bytes();
    let half = body.len() / 2;
    let slow =
        SlowBody { parts: vec![body[..half].to_vec(), body[half..].to_vec()], pause: Duration::from_millis(800) };
    let url = server.url("/api/v1/records");
    let sender = std::thread::spawn(move || {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(reqwest::blocking::Body::sized(slow, body.len() as u64))
            .send()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    assert_eq!(sender.join().unwrap().unwrap(), 201, "the in-flight write completed");
    assert_eq!(server.stop().code(), Some(0));

    // It was durable, and the server comes back over TLS.
    let server = start_tls(tmp.path());
    let client = trusting(&cert).build().unwrap();
    wait_ready(&client, &server);
    assert_eq!(client.get(server.url("/api/v1/records/in-flight")).send().unwrap().status(), 200);
    assert_eq!(server.stop().code(), Some(0));
}
