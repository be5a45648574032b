//! Transcript files in and out: WebVTT, SRT, Otter-style text, plain `Speaker: text` lines and
//! JSON (Nexus's own export, and QMSum's `meeting_transcripts`).
//!
//! The format is read from the content; a file name whose extension names a format must hold
//! that format (a `.vtt` that is SRT inside is refused, naming what it looks like). No subtitle
//! crate is both maintained and complete for speakers (Zoom's `Name: text` cues, Teams' `<v Name>`
//! voice spans), so the readers are here, each small and tested:
//!
//! - **WebVTT**: the `WEBVTT` header; cues `[id]`, `[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt [settings]`,
//!   payload lines; `NOTE`, `STYLE` and `REGION` blocks skipped; the speaker from a `<v Name>` (or
//!   `<v.class Name>`) span, else from a leading `Name: `; other tags removed, entities decoded.
//! - **SRT**: numbered cues with `hh:mm:ss,ttt --> hh:mm:ss,ttt`; the speaker from `Name: ` or `[Name]`.
//! - **Otter text**: a `Name  m:ss` (or `h:mm:ss`) line opens each turn, paragraphs follow.
//! - **Plain text**: `Name: text` lines; a line without a name continues the turn before. With no
//!   times given, turns are timed at 150 words a minute.
//! - **JSON**: `{"segments": [...]}` (what `GET .../transcript?format=json` gives), or QMSum's
//!   `{"meeting_transcripts": [{"speaker", "content"}]}`, one meeting per object of a JSON array
//!   or per line of JSON Lines. QMSum's transcription marks (`{disfmarker}`, `{vocalsound}`...)
//!   are removed; a turn made only of marks keeps them, so turn `n` is always `seq` `n`.
//!
//! Bytes must be UTF-8 (a byte-order mark is dropped; CRLF line ends are read as LF).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::model::{Meeting, Participant, Segment};
use crate::error::{Error, ErrorCode, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptFormat {
    Vtt,
    Srt,
    /// Otter-style text: a `Name  m:ss` line opens each turn.
    Otter,
    /// `Speaker: text` lines.
    Text,
    Json,
}

impl TranscriptFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptFormat::Vtt => "vtt",
            TranscriptFormat::Srt => "srt",
            TranscriptFormat::Otter => "otter",
            TranscriptFormat::Text => "text",
            TranscriptFormat::Json => "json",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            TranscriptFormat::Vtt => "WebVTT",
            TranscriptFormat::Srt => "SRT",
            TranscriptFormat::Otter => "Otter text",
            TranscriptFormat::Text => "`Speaker: text` lines",
            TranscriptFormat::Json => "JSON",
        }
    }
}

/// A segment read from a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportedSegment {
    pub segment_id: Option<String>,
    pub speaker: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

/// One meeting read from a file.
#[derive(Clone, Debug, Default)]
pub struct ImportedMeeting {
    pub title: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub metadata: Option<Value>,
    pub participants: Vec<Participant>,
    pub segments: Vec<ImportedSegment>,
}

/// What the extension of `file_name` says the file is: `None` when it names no format.
fn named_format(file_name: &str) -> Option<&'static [TranscriptFormat]> {
    let ext = file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "vtt" | "webvtt" => &[TranscriptFormat::Vtt],
        "srt" => &[TranscriptFormat::Srt],
        "json" | "jsonl" | "ndjson" => &[TranscriptFormat::Json],
        "txt" | "text" => &[TranscriptFormat::Otter, TranscriptFormat::Text],
        _ => return None,
    })
}

fn is_cue_timing(line: &str) -> bool {
    line.contains("-->") && line.split("-->").next().is_some_and(|t| parse_time(t.trim()).is_some())
}

/// What the content looks like, if it is a transcript at all.
pub fn sniff(text: &str) -> Option<TranscriptFormat> {
    let trimmed = text.trim_start();
    if trimmed.starts_with("WEBVTT") {
        return Some(TranscriptFormat::Vtt);
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return Some(TranscriptFormat::Json);
    }
    let lines: Vec<&str> = trimmed.lines().map(str::trim).filter(|l| !l.is_empty()).take(40).collect();
    if lines.len() >= 2 && lines[0].parse::<u64>().is_ok() && is_cue_timing(lines[1]) {
        return Some(TranscriptFormat::Srt);
    }
    if lines.iter().any(|l| is_cue_timing(l)) {
        return None;
    }
    if lines.first().is_some_and(|l| otter_header(l).is_some()) {
        return Some(TranscriptFormat::Otter);
    }
    let named = lines.iter().filter(|l| speaker_prefix(l).is_some()).count();
    if !lines.is_empty() && named * 2 >= lines.len() {
        return Some(TranscriptFormat::Text);
    }
    None
}

/// Reads a transcript file; refuses a file that is not what its name says.
pub fn parse(file_name: &str, bytes: &[u8]) -> Result<(TranscriptFormat, Vec<ImportedMeeting>)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorCode::UnsupportedFormat,
            format!("{file_name} is not UTF-8 text ({e}); transcripts are read as UTF-8"),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text).replace("\r\n", "\n").replace('\r', "\n");
    if text.trim().is_empty() {
        return Err(Error::invalid(format!("{file_name} is empty")));
    }
    let sniffed = sniff(&text);
    let format = match (named_format(file_name), sniffed) {
        (Some(named), Some(found)) if named.contains(&found) => found,
        (Some(named), found) => {
            let looks = found.map_or("no transcript format Nexus reads".to_string(), |f| f.describe().to_string());
            return Err(Error::new(
                ErrorCode::UnsupportedFormat,
                format!(
                    "{file_name} is named as {} but its content is {looks}; rename it or send the right file",
                    named[0].describe()
                ),
            ));
        }
        (None, Some(found)) => found,
        (None, None) => {
            return Err(Error::new(
                ErrorCode::UnsupportedFormat,
                format!(
                    "{file_name} is not a transcript Nexus reads: send WebVTT, SRT, Otter text, `Speaker: text` lines or JSON"
                ),
            ));
        }
    };
    let corrupt = |e: String| Error::new(ErrorCode::CorruptDocument, format!("{file_name}: {e}"));
    let meetings = match format {
        TranscriptFormat::Vtt => vec![read_vtt(&text).map_err(corrupt)?],
        TranscriptFormat::Srt => vec![read_srt(&text).map_err(corrupt)?],
        TranscriptFormat::Otter => vec![read_otter(&text).map_err(corrupt)?],
        TranscriptFormat::Text => vec![read_plain(&text)],
        TranscriptFormat::Json => read_json(&text).map_err(corrupt)?,
    };
    for (i, m) in meetings.iter().enumerate() {
        if m.segments.is_empty() {
            let which = if meetings.len() > 1 { format!(" (meeting {})", i + 1) } else { String::new() };
            return Err(corrupt(format!("no transcript segment found{which}")));
        }
    }
    Ok((format, meetings))
}

/// `[hh:]mm:ss.ttt` or `hh:mm:ss,ttt` (also without a fraction) in milliseconds.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    let (clock, fraction) = match text.rsplit_once(['.', ',']) {
        Some((c, f)) if f.len() <= 3 && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            (c, f.parse::<u64>().ok()? * 10u64.pow(3 - f.len() as u32))
        }
        _ => (text, 0),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let n: Vec<u64> = parts.iter().map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (h, m, s) = if n.len() == 3 { (n[0], n[1], n[2]) } else { (0, n[0], n[1]) };
    if (m >= 60 && n.len() == 3) || s >= 60 {
        return None;
    }
    Some(((h * 60 + m) * 60 + s) * 1000 + fraction)
}

fn timing(line: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = line.split_once("-->").ok_or_else(|| format!("{line:?} is not a cue timing"))?;
    let start = parse_time(a).ok_or_else(|| format!("bad start time in {line:?}"))?;
    let end_text = b.split_whitespace().next().unwrap_or_default();
    let end = parse_time(end_text).ok_or_else(|| format!("bad end time in {line:?}"))?;
    if end < start {
        return Err(format!("cue ends before it starts: {line:?}"));
    }
    Ok((start, end))
}

/// `Name: text` with a short name (at most six words, no URL).
fn speaker_prefix(line: &str) -> Option<(&str, &str)> {
    let (name, text) = line.split_once(": ")?;
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 80
        && name.split_whitespace().count() <= 6
        && !name.contains("://")
        && !name.contains(['<', '>', '{', '}', '"'])
        && name.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '(' || c == '[');
    ok.then(|| (name, text.trim()))
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A cue payload's speaker (from `<v Name>`) and its text without tags.
fn vtt_payload(payload: &str) -> (Option<String>, String) {
    let mut speaker = None;
    let mut text = String::new();
    let mut rest = payload;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            text.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let tag = &rest[open + 1..open + close];
        if speaker.is_none()
            && let Some(voice) = tag.strip_prefix('v')
            && (voice.starts_with(' ') || voice.starts_with('.'))
        {
            let name = voice.split_once(' ').map(|(_, n)| n.trim()).unwrap_or_default();
            if !name.is_empty() {
                speaker = Some(decode_entities(name));
            }
        }
        rest = &rest[open + close + 1..];
    }
    text.push_str(rest);
    (speaker, decode_entities(text.trim()))
}

/// SRT's formatting tags (`<i>`, `<b>`, `<u>`, `<font ...>` and their ends) removed; other text kept.
fn strip_srt_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let tail = &rest[open + 1..];
        let name = tail.trim_start_matches('/');
        let formatting = ["i>", "b>", "u>", "font>", "font "].iter().any(|t| name.to_ascii_lowercase().starts_with(t));
        match tail.find('>') {
            Some(close) if formatting => rest = &tail[close + 1..],
            _ => {
                out.push('<');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

fn with_speaker(speaker: Option<String>, text: String) -> (String, String) {
    match speaker {
        Some(s) => (s, text),
        None => match speaker_prefix(&text) {
            Some((name, body)) => (name.to_string(), body.to_string()),
            None => (String::new(), text),
        },
    }
}

fn read_vtt(text: &str) -> std::result::Result<ImportedMeeting, String> {
    let mut meeting = ImportedMeeting::default();
    let mut blocks = text.split("\n\n").map(|b| b.trim_matches('\n')).filter(|b| !b.trim().is_empty());
    let header = blocks.next().unwrap_or_default();
    if !header.starts_with("WEBVTT") {
        return Err("a WebVTT file starts with WEBVTT".into());
    }
    for block in blocks {
        let first = block.lines().next().unwrap_or_default();
        if ["NOTE", "STYLE", "REGION"].iter().any(|k| first == *k || first.starts_with(&format!("{k} "))) {
            continue;
        }
        let lines: Vec<&str> = block.lines().collect();
        let Some(at) = lines.iter().position(|l| l.contains("-->")) else {
            return Err(format!("a cue without a timing line: {first:?}"));
        };
        let (start_ms, end_ms) = timing(lines[at])?;
        let id = (at > 0).then(|| lines[..at].join(" ").trim().to_string()).filter(|i| !i.is_empty());
        let (speaker, body) = vtt_payload(&lines[at + 1..].join(" "));
        let (speaker, body) = with_speaker(speaker, body);
        if body.is_empty() {
            continue;
        }
        meeting.segments.push(ImportedSegment { segment_id: id, speaker, start_ms, end_ms, text: body });
    }
    Ok(meeting)
}

fn read_srt(text: &str) -> std::result::Result<ImportedMeeting, String> {
    let mut meeting = ImportedMeeting::default();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let lines: Vec<&str> = block.trim_matches('\n').lines().collect();
        let Some(at) = lines.iter().position(|l| l.contains("-->")) else {
            return Err(format!("a cue without a timing line: {:?}", lines.first().unwrap_or(&"")));
        };
        let (start_ms, end_ms) = timing(lines[at])?;
        let body = strip_srt_tags(lines[at + 1..].join(" ").trim());
        let (speaker, body) = match body.strip_prefix('[').and_then(|b| b.split_once(']')) {
            Some((name, rest)) if !name.trim().is_empty() => (name.trim().to_string(), rest.trim().to_string()),
            _ => with_speaker(None, body),
        };
        if body.is_empty() {
            continue;
        }
        let id = at.checked_sub(1).map(|i| lines[i].trim().to_string()).filter(|i| !i.is_empty());
        meeting.segments.push(ImportedSegment { segment_id: id, speaker, start_ms, end_ms, text: body });
    }
    Ok(meeting)
}

/// `Name  1:02` or `Name 01:02:03`: the name and the start in milliseconds.
fn otter_header(line: &str) -> Option<(String, u64)> {
    let (name, time) = line.trim().rsplit_once(char::is_whitespace)?;
    let ms = parse_time(time).filter(|_| !time.contains(['.', ',']))?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= 80 && !name.contains(':') && name.split_whitespace().count() <= 6)
        .then(|| (name.to_string(), ms))
}

/// 150 words a minute: how long a text takes to say.
fn spoken_ms(text: &str) -> u64 {
    (text.split_whitespace().count() as u64 * 400).max(400)
}

fn read_otter(text: &str) -> std::result::Result<ImportedMeeting, String> {
    let mut meeting = ImportedMeeting::default();
    let mut current: Option<ImportedSegment> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("Transcribed by") {
            continue;
        }
        if let Some((name, start_ms)) = otter_header(line) {
            meeting.segments.extend(current.take());
            current = Some(ImportedSegment { speaker: name, start_ms, end_ms: start_ms, ..Default::default() });
            continue;
        }
        match current.as_mut() {
            Some(seg) => {
                if !seg.text.is_empty() {
                    seg.text.push(' ');
                }
                seg.text.push_str(line);
            }
            None => return Err(format!("text before the first `Name  m:ss` line: {line:?}")),
        }
    }
    meeting.segments.extend(current);
    meeting.segments.retain(|s| !s.text.is_empty());
    let starts: Vec<u64> = meeting.segments.iter().map(|s| s.start_ms).collect();
    for (i, seg) in meeting.segments.iter_mut().enumerate() {
        let said = seg.start_ms + spoken_ms(&seg.text);
        seg.end_ms = starts
            .get(i + 1)
            .copied()
            .filter(|next| *next > seg.start_ms)
            .map_or(said, |next| next.min(said).max(seg.start_ms));
    }
    Ok(meeting)
}

fn read_plain(text: &str) -> ImportedMeeting {
    let mut turns: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match (speaker_prefix(line), turns.last_mut()) {
            (Some((name, body)), _) => turns.push((name.to_string(), body.to_string())),
            (None, Some((_, body))) => {
                body.push(' ');
                body.push_str(line);
            }
            (None, None) => turns.push((String::new(), line.to_string())),
        }
    }
    let mut at = 0;
    let segments = turns
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(speaker, text)| {
            let start_ms = at;
            at += spoken_ms(&text);
            ImportedSegment { segment_id: None, speaker, start_ms, end_ms: at, text }
        })
        .collect();
    ImportedMeeting { segments, ..Default::default() }
}

/// Removes QMSum's transcription marks (`{disfmarker}`, `{vocalsound}`, `{gap}`...).
pub fn strip_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        match rest[open..].find('}') {
            Some(close) if rest[open + 1..open + close].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    let cleaned = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned = cleaned.replace(" ,", ",").replace(" .", ".").replace(" ?", "?");
    if cleaned.trim().is_empty() { text.trim().to_string() } else { cleaned }
}

#[derive(Deserialize)]
struct NexusExport {
    #[serde(default)]
    meeting: Option<NexusMeeting>,
    #[serde(default)]
    participants: Vec<Participant>,
    segments: Vec<NexusSegment>,
}

#[derive(Deserialize)]
struct NexusMeeting {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct NexusSegment {
    #[serde(default)]
    segment_id: Option<String>,
    #[serde(default)]
    speaker: String,
    #[serde(default)]
    start_ms: u64,
    #[serde(default)]
    end_ms: u64,
    text: String,
}

#[derive(Deserialize)]
struct QmsumTurn {
    #[serde(default)]
    speaker: String,
    content: String,
}

fn read_one_json(value: Value) -> std::result::Result<ImportedMeeting, String> {
    if value.get("meeting_transcripts").is_some() {
        let turns: Vec<QmsumTurn> = serde_json::from_value(value["meeting_transcripts"].clone())
            .map_err(|e| format!("meeting_transcripts must be a list of {{speaker, content}}: {e}"))?;
        let mut at = 0;
        let segments = turns
            .into_iter()
            .map(|t| {
                let text = strip_marks(&t.content);
                let start_ms = at;
                at += spoken_ms(&text);
                ImportedSegment { segment_id: None, speaker: t.speaker.trim().to_string(), start_ms, end_ms: at, text }
            })
            .collect();
        return Ok(ImportedMeeting { segments, ..Default::default() });
    }
    if value.get("segments").is_some() {
        let export: NexusExport =
            serde_json::from_value(value).map_err(|e| format!("not a Nexus transcript export: {e}"))?;
        let meeting = export.meeting.unwrap_or(NexusMeeting { title: None, started_at: None, metadata: None });
        return Ok(ImportedMeeting {
            title: meeting.title,
            started_at: meeting.started_at,
            metadata: meeting.metadata,
            participants: export.participants,
            segments: export
                .segments
                .into_iter()
                .map(|s| ImportedSegment {
                    segment_id: s.segment_id,
                    speaker: s.speaker,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    text: s.text,
                })
                .collect(),
        });
    }
    Err("a JSON transcript holds `segments` (Nexus) or `meeting_transcripts` (QMSum)".into())
}

fn read_json(text: &str) -> std::result::Result<Vec<ImportedMeeting>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items.into_iter().map(read_one_json).collect(),
        Ok(value) => Ok(vec![read_one_json(value)?]),
        // JSON Lines: one meeting per line.
        Err(whole) => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() < 2 {
                return Err(format!("invalid JSON: {whole}"));
            }
            lines
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    let value: Value =
                        serde_json::from_str(line).map_err(|e| format!("line {}: invalid JSON: {e}", i + 1))?;
                    read_one_json(value).map_err(|e| format!("line {}: {e}", i + 1))
                })
                .collect()
        }
    }
}

fn clock(ms: u64, separator: char) -> String {
    let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{f:03}")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The transcript in `format` (Otter-style text is read, never written: `text` gives `Speaker: text` lines).
pub fn render(format: TranscriptFormat, meeting: &Meeting, segments: &[Segment]) -> String {
    let mut out = String::new();
    match format {
        TranscriptFormat::Json => {
            let value = json!({
                "format": "nexus.meeting.v1",
                "meeting": {
                    "id": meeting.id, "title": meeting.title, "status": meeting.status,
                    "started_at": meeting.started_at, "ended_at": meeting.ended_at, "metadata": meeting.metadata,
                },
                "participants": meeting.participants,
                "segments": segments,
            });
            out = serde_json::to_string_pretty(&value).unwrap_or_default();
        }
        TranscriptFormat::Vtt => {
            out.push_str("WEBVTT\n\n");
            for s in segments {
                let voice = if s.speaker.is_empty() { String::new() } else { format!("<v {}>", escape(&s.speaker)) };
                out.push_str(&format!(
                    "{}\n{} --> {}\n{voice}{}\n\n",
                    s.seq,
                    clock(s.start_ms, '.'),
                    clock(s.end_ms, '.'),
                    escape(&one_line(&s.text))
                ));
            }
        }
        TranscriptFormat::Srt => {
            for s in segments {
                let who = if s.speaker.is_empty() { String::new() } else { format!("{}: ", s.speaker) };
                out.push_str(&format!(
                    "{}\n{} --> {}\n{who}{}\n\n",
                    s.seq + 1,
                    clock(s.start_ms, ','),
                    clock(s.end_ms, ','),
                    one_line(&s.text)
                ));
            }
        }
        TranscriptFormat::Text | TranscriptFormat::Otter => {
            for s in segments {
                let who = if s.speaker.is_empty() { String::new() } else { format!("{}: ", s.speaker) };
                out.push_str(&format!("{who}{}\n", one_line(&s.text)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speakers_and_texts(m: &ImportedMeeting) -> Vec<(String, String)> {
        m.segments.iter().map(|s| (s.speaker.clone(), s.text.clone())).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn zoom_vtt_names_speakers_in_the_cue_text() {
        let file = "\u{feff}WEBVTT\r\n\r\n1\r\n00:00:01.000 --> 00:00:04.500\r\nAlice Smith: Let's start with the budget.\r\n\r\n2\r\n00:00:05.000 --> 00:00:07.250\r\nBob: Sounds good &amp; quick.\r\n";
        let (format, meetings) = parse("zoom.vtt", file.as_bytes()).unwrap();
        assert_eq!(format, TranscriptFormat::Vtt);
        let m = &meetings[0];
        assert_eq!(
            speakers_and_texts(m),
            pairs(&[("Alice Smith", "Let's start with the budget."), ("Bob", "Sounds good & quick.")])
        );
        assert_eq!((m.segments[0].start_ms, m.segments[0].end_ms), (1000, 4500));
        assert_eq!(m.segments[1].segment_id.as_deref(), Some("2"));
    }

    #[test]
    fn teams_vtt_names_speakers_in_voice_spans_and_skips_notes() {
        let file = "WEBVTT - Teams\n\nNOTE written by the meeting app\n\nSTYLE\n::cue { color: red }\n\n3f0e/12-0\n00:01.000 --> 00:03.000 align:start\n<v Carol Jones>Ship it on <b>Friday</b>.</v>\n\n3f0e/13-0\n00:03.500 --> 00:05.000\n<v.loud Dan>Agreed,\nfully.</v>\n";
        let (_, meetings) = parse("teams.vtt", file.as_bytes()).unwrap();
        assert_eq!(
            speakers_and_texts(&meetings[0]),
            pairs(&[("Carol Jones", "Ship it on Friday."), ("Dan", "Agreed, fully.")])
        );
    }

    #[test]
    fn srt_reads_names_and_bracketed_speakers() {
        let file = "1\n00:00:00,000 --> 00:00:02,000\nEve: Hello there.\n\n2\n00:00:02,500 --> 00:00:04,000\n[Frank] Hi Eve.\n\n3\n00:00:04,000 --> 00:00:05,000\nNo speaker here.\n";
        let (format, meetings) = parse("call.srt", file.as_bytes()).unwrap();
        assert_eq!(format, TranscriptFormat::Srt);
        assert_eq!(
            speakers_and_texts(&meetings[0]),
            pairs(&[("Eve", "Hello there."), ("Frank", "Hi Eve."), ("", "No speaker here.")])
        );
        assert_eq!(meetings[0].segments[1].start_ms, 2500);
    }

    #[test]
    fn otter_text_opens_turns_with_name_and_time() {
        let file = "Grace Hopper  0:00\nWelcome to the review.\nWe have three items.\n\nAlan  1:05\nFirst, the compiler.\n\nTranscribed by https://otter.ai\n";
        let (format, meetings) = parse("notes.txt", file.as_bytes()).unwrap();
        assert_eq!(format, TranscriptFormat::Otter);
        let m = &meetings[0];
        assert_eq!(
            speakers_and_texts(m),
            pairs(&[("Grace Hopper", "Welcome to the review. We have three items."), ("Alan", "First, the compiler.")])
        );
        assert_eq!((m.segments[1].start_ms, m.segments[0].end_ms), (65_000, 3_200));
    }

    #[test]
    fn plain_lines_continue_turns_and_are_timed_by_words() {
        let file = "Ann: We should pick the red case.\nIt tested better.\nBen: Fine by me.\n";
        let (format, meetings) = parse("chat", file.as_bytes()).unwrap();
        assert_eq!(format, TranscriptFormat::Text);
        let m = &meetings[0];
        assert_eq!(
            speakers_and_texts(m),
            pairs(&[("Ann", "We should pick the red case. It tested better."), ("Ben", "Fine by me.")])
        );
        assert_eq!((m.segments[0].end_ms, m.segments[1].start_ms), (3600, 3600));
    }

    #[test]
    fn qmsum_json_lines_are_meetings_with_marks_removed() {
        let line = |who: &str| {
            json!({"topic_list": [], "meeting_transcripts": [
                {"speaker": who, "content": "Okay {disfmarker} so the remote {vocalsound} needs buttons ."},
                {"speaker": "Industrial Designer", "content": "{vocalsound}"}
            ]})
            .to_string()
        };
        let file = format!("{}\n{}\n", line("Project Manager"), line("Marketing"));
        let (format, meetings) = parse("test_product.jsonl", file.as_bytes()).unwrap();
        assert_eq!(format, TranscriptFormat::Json);
        assert_eq!(meetings.len(), 2);
        assert_eq!(
            speakers_and_texts(&meetings[0]),
            pairs(&[("Project Manager", "Okay so the remote needs buttons."), ("Industrial Designer", "{vocalsound}")])
        );
    }

    #[test]
    fn nexus_json_keeps_ids_times_and_participants() {
        let file = json!({"format": "nexus.meeting.v1", "meeting": {"title": "Sync"},
            "participants": [{"id": "p1", "name": "Ann", "user_id": "ann"}],
            "segments": [{"seq": 0, "segment_id": "a", "speaker": "Ann", "start_ms": 5, "end_ms": 9, "text": "Hi."}]});
        let (_, meetings) = parse("export.json", file.to_string().as_bytes()).unwrap();
        let m = &meetings[0];
        assert_eq!(m.title.as_deref(), Some("Sync"));
        assert_eq!(m.participants[0].user_id.as_deref(), Some("ann"));
        assert_eq!(
            m.segments[0],
            ImportedSegment {
                segment_id: Some("a".into()),
                speaker: "Ann".into(),
                start_ms: 5,
                end_ms: 9,
                text: "Hi.".into()
            }
        );
    }

    #[test]
    fn a_file_that_is_not_what_its_name_says_is_refused() {
        let srt = "1\n00:00:00,000 --> 00:00:02,000\nEve: Hello.\n";
        let e = parse("meeting.vtt", srt.as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedFormat);
        assert!(e.message.contains("named as WebVTT") && e.message.contains("SRT"), "{}", e.message);
        let e = parse("meeting.json", b"Ann: hello").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedFormat);
        assert_eq!(parse("x.srt", b"\xff\xfe").unwrap_err().code, ErrorCode::UnsupportedFormat);
        assert_eq!(
            parse("unknown.bin", b"just some words without speakers").unwrap_err().code,
            ErrorCode::UnsupportedFormat
        );
        let broken = "WEBVTT\n\n00:00:01.000 --> 00:0x:02.000\nAnn: hi\n";
        assert_eq!(parse("broken.vtt", broken.as_bytes()).unwrap_err().code, ErrorCode::CorruptDocument);
        assert_eq!(parse("empty.json", b"{\"segments\": []}").unwrap_err().code, ErrorCode::CorruptDocument);
    }

    #[test]
    fn every_written_format_reads_back() {
        let meeting = Meeting {
            id: "mtg_1".into(),
            title: "Review".into(),
            status: super::super::model::Status::Ended,
            started_at: None,
            ended_at: None,
            source: "live".into(),
            participants: vec![],
            segments: 2,
            metadata: json!({}),
            key: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let segments = vec![
            Segment {
                seq: 0,
                segment_id: "a".into(),
                speaker: "Ann Lee".into(),
                start_ms: 0,
                end_ms: 1500,
                text: "Budget is <fine> & done.".into(),
            },
            Segment {
                seq: 1,
                segment_id: "b".into(),
                speaker: "Ben".into(),
                start_ms: 3_723_004,
                end_ms: 3_725_000,
                text: "Next: hiring.".into(),
            },
        ];
        for (format, name) in [
            (TranscriptFormat::Vtt, "t.vtt"),
            (TranscriptFormat::Srt, "t.srt"),
            (TranscriptFormat::Text, "t.txt"),
            (TranscriptFormat::Json, "t.json"),
        ] {
            let text = render(format, &meeting, &segments);
            let (read_as, meetings) = parse(name, text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            assert_eq!(read_as, format, "{text}");
            let m = &meetings[0];
            let got: Vec<(String, String)> = m.segments.iter().map(|s| (s.speaker.clone(), s.text.clone())).collect();
            let want: Vec<(String, String)> = segments.iter().map(|s| (s.speaker.clone(), s.text.clone())).collect();
            assert_eq!(got, want, "{name}:\n{text}");
            if format != TranscriptFormat::Text {
                let times: Vec<(u64, u64)> = m.segments.iter().map(|s| (s.start_ms, s.end_ms)).collect();
                assert_eq!(times, vec![(0, 1500), (3_723_004, 3_725_000)], "{name}");
            }
        }
    }
}
