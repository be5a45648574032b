//! Real time at scale: thousands of WebSocket subscribers on one node while segments stream into
//! live meetings. A real `nexus serve` runs as a child process; this process is the client, on
//! loopback: `--meetings` meetings created over HTTP, one streamer per meeting sending a final
//! segment every `1/--rate` seconds over `GET /api/v1/meetings/{id}/stream` (default 0.2: one
//! final every 5 s per meeting; AMI's meetings average a turn every 3.6 s), and `--subscribers`
//! connections to `GET /api/v1/events?topics=meeting:{id}` spread evenly over the meetings.
//!
//! Measured: fan-out latency from the moment a streamer reads the acknowledgement of a final to
//! the moment each subscriber of its meeting reads the `segment` event (one clock: this process),
//! deliveries against the expected count, connections dropped or told to resync, and the
//! server's memory (VmRSS, VmHWM) once every subscriber is connected and at the end. Printed
//! beside the anchors: p99 <= 250 ms, RSS <= 1 GiB at 10,000 connections.
//!
//! ```sh
//! cargo bench --bench live_fanout -- [--subscribers 10000] [--meetings 100] [--seconds 30] [--rate 0.2] [--bin PATH]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

mod common;

const P99_ANCHOR_MS: f64 = 250.0;
const RSS_ANCHOR_MIB: f64 = 1024.0;
/// Subscribers connecting at once.
const CONNECT_BATCH: usize = 250;
/// After the last segment, how long subscribers may take to receive it.
const DRAIN: Duration = Duration::from_secs(3);

/// What people say in meetings; some lines are decisions or action items (insight events too).
const LINES: &[&str] = &[
    "Let's look at the numbers from last week before we decide anything.",
    "The onboarding flow still loses about a third of new users on the second screen.",
    "We decided to ship the new pricing page on Monday.",
    "I'll send the updated roadmap to everyone by Friday.",
    "Can we get the design review on the calendar for next week?",
    "The latency on the search endpoint went down after the index change.",
    "Maria, can you check the contract terms with legal before Thursday?",
    "We agreed to keep the free tier at five projects.",
    "Support tickets about exports doubled since the last release.",
    "Let's go with the smaller vendor for the pilot.",
];

type Ws = WebSocketStream<TcpStream>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Soft RLIMIT_NOFILE raised to the hard limit (the server child inherits it); returns it.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command: state is field 0, utime 11, stime 12.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

async fn connect(addr: &str, path: &str) -> Result<Ws, String> {
    let request = format!("ws://{addr}{path}").into_client_request().map_err(|e| e.to_string())?;
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_write_buffer_size(1 << 20);
    let (ws, _) =
        client_async_with_config(request, stream, Some(config)).await.map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// The number `n` of a `segment` event's `segment_id` `"s<n>"`, read without parsing the event
/// (ten thousand subscribers share this process's two cores with the server).
fn segment_number(text: &str) -> Option<usize> {
    if !text.starts_with(r#"{"type":"segment""#) {
        return None;
    }
    let at = text.find(r#""segment_id":"s"#)? + r#""segment_id":"s"#.len();
    let digits: &str = &text[at..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    /// (segment number, when it arrived).
    segments: Vec<(usize, Instant)>,
    /// Why it ended before it was told to stop.
    dropped: Option<String>,
    resync: bool,
}

async fn subscriber(mut ws: Ws, mut stop: watch::Receiver<bool>) -> Received {
    let mut got = Received::default();
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let now = Instant::now();
                    if let Some(n) = segment_number(text.as_str()) {
                        got.segments.push((n, now));
                    } else if text.as_str().starts_with(r#"{"type":"resync""#) {
                        got.resync = true;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    got.dropped = Some(format!("closed by the server: {frame:?}"));
                    return got;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    got.dropped = Some(format!("error: {e}"));
                    return got;
                }
                None => {
                    got.dropped = Some("ended".into());
                    return got;
                }
            },
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return got;
            }
        }
    }
}

/// What one streamer did: when each segment was acknowledged (by number), and failures.
struct Streamed {
    acked: Vec<Option<Instant>>,
    ack_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

async fn streamer(
    mut ws: Ws,
    meeting: usize,
    rate: f64,
    until: tokio::time::Instant,
    offset: Duration,
    count: usize,
) -> Streamed {
    let mut out = Streamed { acked: vec![None; count], ack_ms: Vec::new(), errors: 0, first_error: None };
    let mut sent: Vec<Option<Instant>> = vec![None; count];
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    let speakers = ["Ana", "Ben", "Maria", "Dev"];
    let mut closing = false;
    let grace = until + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tick.tick(), if !closing => {
                if n >= count || tokio::time::Instant::now() >= until {
                    closing = true;
                } else {
                let text = format!("{} (meeting {meeting}, point {n})", LINES[(n + meeting) % LINES.len()]);
                let segment = json!({"segment_id": format!("s{n}"), "speaker": speakers[n % speakers.len()],
                                     "start_ms": n * 4000, "end_ms": n * 4000 + 3500, "text": text, "is_final": true});
                sent[n] = Some(Instant::now());
                if let Err(e) = ws.send(Message::text(segment.to_string())).await {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("send: {e}"));
                    return out;
                }
                n += 1;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let now = Instant::now();
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "ack" {
                        let k = v["segment_id"].as_str().and_then(|s| s.strip_prefix('s')).and_then(|s| s.parse::<usize>().ok());
                        if let Some(k) = k.filter(|k| *k < count) {
                            out.acked[k] = Some(now);
                            if let Some(t) = sent[k] {
                                out.ack_ms.push((now - t).as_secs_f64() * 1000.0);
                            }
                        }
                    } else if v["type"] == "error" {
                        out.errors += 1;
                        out.first_error.get_or_insert(v.to_string());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("read: {e}"));
                    return out;
                }
                None => {
                    out.errors += 1;
                    out.first_error.get_or_insert("the server closed the stream".into());
                    return out;
                }
            },
            _ = tokio::time::sleep_until(grace), if closing => {}
        }
        if closing && (out.acked.iter().take(n).all(Option::is_some) || tokio::time::Instant::now() >= grace) {
            let _ = ws.close(None).await;
            return out;
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = http.post(url).json(body).send().await.unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {value}");
    value
}

fn main() {
    let (mut subscribers, mut meetings, mut seconds, mut rate) = (10_000usize, 100usize, 30u64, 0.2f64);
    let mut bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--subscribers" => subscribers = value().parse().unwrap(),
            "--meetings" => meetings = value().parse().unwrap(),
            "--seconds" => seconds = value().parse().unwrap(),
            "--rate" => rate = value().parse().unwrap(),
            "--bin" => bin = value().into(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(meetings > 0 && rate > 0.0 && seconds > 0);
    let nofile = raise_nofile();
    assert!(
        nofile as usize > subscribers + meetings + 256,
        "RLIMIT_NOFILE is {nofile}: too low for {subscribers} subscribers (raise the hard limit)"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let (mut child, base) = common::spawn_nexus(&bin, &dir.path().join("data"), &config, &[]);
    let pid = child.id();
    let addr = base.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(&base, &addr, pid, subscribers, meetings, seconds, rate));
    let _ = child.kill();
    let _ = child.wait();
}

#[allow(clippy::too_many_arguments)]
async fn run(base: &str, addr: &str, pid: u32, subscribers: usize, meetings: usize, seconds: u64, rate: f64) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let (rss_idle, _) = memory(pid);
    let mut ids = Vec::with_capacity(meetings);
    for m in 0..meetings {
        let created = post(
            &http,
            &format!("{base}/api/v1/meetings"),
            &json!({"title": format!("Standup {m}"), "status": "live",
                    "participants": [{"name": "Ana"}, {"name": "Ben"}, {"name": "Maria"}, {"name": "Dev"}]}),
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_string());
    }

    // Subscribers, in batches, round robin over the meetings.
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(subscribers);
    let failed = Arc::new(AtomicUsize::new(0));
    for batch in (0..subscribers).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
        let connecting: Vec<_> = batch
            .iter()
            .map(|&i| {
                let (addr, path) = (addr.to_string(), format!("/api/v1/events?topics=meeting:{}", ids[i % meetings]));
                tokio::spawn(async move { (i % meetings, connect(&addr, &path).await) })
            })
            .collect();
        for c in connecting {
            match c.await.unwrap() {
                (m, Ok(ws)) => handles.push((m, tokio::spawn(subscriber(ws, stop_rx.clone())))),
                (_, Err(e)) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("a subscriber could not connect: {e}");
                    }
                }
            }
        }
    }
    let connected = handles.len();
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_connected, _) = memory(pid);
    let cpu_before = cpu_seconds(pid);

    // Streamers: one per meeting, started evenly over one period.
    let count = (seconds as f64 * rate).ceil() as usize;
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds) + Duration::from_secs_f64(1.0 / rate);
    let mut streamers = Vec::new();
    for (m, id) in ids.iter().enumerate() {
        let ws = connect(addr, &format!("/api/v1/meetings/{id}/stream")).await.expect("a streamer connects");
        let offset = Duration::from_secs_f64(m as f64 / meetings as f64 / rate);
        streamers.push(tokio::spawn(streamer(ws, m, rate, until, offset, count)));
    }
    let stream_started = Instant::now();
    let mut rss_peak_streaming: f64 = 0.0;
    while streamers.iter().any(|s| !s.is_finished()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak_streaming = rss_peak_streaming.max(memory(pid).0);
    }
    let mut streamed = Vec::new();
    for s in streamers {
        streamed.push(s.await.unwrap());
    }
    let stream_secs = stream_started.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let cpu_streaming = cpu_seconds(pid) - cpu_before;
    let (rss_end, hwm_end) = memory(pid);
    stop_tx.send(true).unwrap();

    let mut latency = Vec::new();
    let (mut delivered, mut expected, mut early, mut dropped, mut resynced, mut late_or_missing) = (0, 0, 0, 0, 0, 0);
    let mut reasons: Vec<String> = Vec::new();
    for (m, handle) in handles {
        let got = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(Received { dropped: Some("did not stop".into()), ..Received::default() });
        let acked = &streamed[m].acked;
        let want = acked.iter().filter(|a| a.is_some()).count();
        expected += want;
        let mut seen = vec![false; acked.len()];
        for (n, at) in &got.segments {
            let Some(Some(ack)) = acked.get(*n) else { continue };
            if std::mem::replace(&mut seen[*n], true) {
                continue;
            }
            delivered += 1;
            match at.checked_duration_since(*ack) {
                Some(d) => latency.push(d.as_secs_f64() * 1000.0),
                None => {
                    early += 1;
                    latency.push(0.0);
                }
            }
        }
        late_or_missing += want - seen.iter().zip(acked).filter(|(s, a)| **s && a.is_some()).count();
        resynced += usize::from(got.resync);
        if let Some(reason) = got.dropped {
            dropped += 1;
            if reasons.len() < 3 {
                reasons.push(reason);
            }
        }
    }
    latency.sort_by(f64::total_cmp);
    let mut ack_ms: Vec<f64> = streamed.iter().flat_map(|s| s.ack_ms.iter().copied()).collect();
    ack_ms.sort_by(f64::total_cmp);
    let finals: usize = streamed.iter().map(|s| s.acked.iter().filter(|a| a.is_some()).count()).sum();
    let stream_errors: usize = streamed.iter().map(|s| s.errors).sum();
    if let Some(e) = streamed.iter().find_map(|s| s.first_error.as_ref()) {
        println!("first streamer error: {e}");
    }

    println!(
        "{connected} of {subscribers} subscribers connected over {meetings} meetings in {connect_secs:.1} s ({} failed); \
         {meetings} streamers sent {finals} finals at {rate} per second each for {stream_secs:.1} s ({stream_errors} errors)",
        failed.load(Ordering::Relaxed)
    );
    println!(
        "acknowledgement: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        percentile(&ack_ms, 0.5),
        percentile(&ack_ms, 0.95),
        percentile(&ack_ms, 0.99)
    );
    let p99 = percentile(&latency, 0.99);
    println!(
        "fan-out, acknowledgement to delivery: p50 {:.1} ms, p95 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms \
         (anchor p99 <= {P99_ANCHOR_MS} ms: ratio {:.2}x; {early} arrived before their ack, counted as 0)",
        percentile(&latency, 0.5),
        percentile(&latency, 0.95),
        latency.last().copied().unwrap_or(f64::NAN),
        p99 / P99_ANCHOR_MS
    );
    println!(
        "delivered {delivered} of {expected} expected ({late_or_missing} missing); {dropped} connections dropped, \
         {resynced} told to resync{}",
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join("; ")) }
    );
    println!(
        "server memory: {rss_idle:.0} MiB before, {rss_connected:.0} MiB RSS with {connected} connected \
         (anchor <= {RSS_ANCHOR_MIB} MiB: ratio {:.2}x), peak sampled while streaming {rss_peak_streaming:.0} MiB, \
         {rss_end:.0} MiB RSS at the end, VmHWM {hwm_end:.0} MiB (ratio {:.2}x)",
        rss_connected / RSS_ANCHOR_MIB,
        hwm_end / RSS_ANCHOR_MIB
    );
    println!("server CPU while streaming: {cpu_streaming:.1} s over {:.1} s", stream_secs + DRAIN.as_secs_f64());
}
