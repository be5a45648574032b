//! What a migration shows while it runs: a line per step and, for long steps, done/total with the
//! rate and an ETA about once a second, on stderr; with `--json`, the same as one JSON object per
//! line on stdout (`{"event": "progress", "step": "records", "done": ..., ...}`).

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

const EVERY: Duration = Duration::from_secs(1);
const NOTE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    json: bool,
    last_note: Mutex<Option<Instant>>,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        Progress { json, last_note: Mutex::new(None) }
    }

    fn emit(&self, value: serde_json::Value, text: String) {
        if self.json {
            println!("{value}");
        } else {
            eprintln!("{text}");
        }
    }

    /// A step begins.
    pub fn step(&self, step: &str, detail: &str) {
        self.emit(json!({"event": "step", "step": step, "detail": detail}), format!("==> {step}: {detail}"));
    }

    pub fn note(&self, text: &str) {
        self.emit(json!({"event": "note", "text": text}), text.to_string());
    }

    /// A note at most every few seconds (for waits).
    pub fn note_every(&self, text: &str) {
        let mut last = self.last_note.lock();
        if last.is_some_and(|t| t.elapsed() < NOTE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        self.note(text);
    }

    /// A step that counts `total` items (`done` of them already, when resuming).
    pub fn counter<'a>(&'a self, step: &'a str, total: u64, done: u64) -> Counter<'a> {
        Counter { progress: self, step, total, done, bytes: 0, resumed: done, started: Instant::now(), printed: None }
    }
}

pub struct Counter<'a> {
    progress: &'a Progress,
    step: &'a str,
    total: u64,
    done: u64,
    bytes: u64,
    /// Done before this run (not part of its rate).
    resumed: u64,
    started: Instant,
    printed: Option<Instant>,
}

impl Counter<'_> {
    /// `n` more items done; `bytes` so far in this run.
    pub fn advance(&mut self, n: u64, bytes: u64) {
        self.done += n;
        self.bytes = bytes;
        if self.printed.is_none_or(|t| t.elapsed() >= EVERY) {
            self.print(false);
        }
    }

    pub fn finish(&mut self) {
        self.print(true);
    }

    fn print(&mut self, last: bool) {
        self.printed = Some(Instant::now());
        let seconds = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = (self.done - self.resumed) as f64 / seconds;
        let mb_per_s = self.bytes as f64 / seconds / 1e6;
        let left = self.total.saturating_sub(self.done);
        let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
        let percent = if self.total > 0 { 100.0 * self.done as f64 / self.total as f64 } else { 100.0 };
        let text = format!(
            "{:<10} {}/{} ({percent:.0}%)  {rate:.0}/s  {mb_per_s:.1} MB/s  {}",
            self.step,
            self.done,
            self.total,
            if last { format!("done in {seconds:.1} s") } else { format!("ETA {eta:.0} s") }
        );
        self.progress.emit(
            json!({
                "event": "progress", "step": self.step, "done": self.done, "total": self.total,
                "rate_per_s": (rate * 10.0).round() / 10.0, "mb_per_s": (mb_per_s * 100.0).round() / 100.0,
                "eta_s": eta.round(), "finished": last, "seconds": (seconds * 100.0).round() / 100.0,
            }),
            text,
        );
    }
}
