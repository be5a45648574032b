//! Meetings end to end on the real binary: CRUD, segments (seq order, idempotency, partials),
//! transcripts exported in every format and imported back, imports of each format, hybrid
//! search over turn windows with sources and filters, insights and summaries, the end job and
//! the memories it makes, and bad input that stores nothing.

use crate::common;

use common::{Server, client};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

fn start() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    (tmp, server)
}

fn call(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = client().request(method, server.url(path));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn ok(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(server, method.clone(), path, body);
    assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
    v
}

fn post(server: &Server, path: &str, body: Value) -> Value {
    ok(server, reqwest::Method::POST, path, Some(body))
}

fn get(server: &Server, path: &str) -> Value {
    ok(server, reqwest::Method::GET, path, None)
}

fn create(server: &Server, title: &str, participants: Value) -> String {
    let m = post(server, "/api/v1/meetings", json!({"title": title, "participants": participants}));
    m["id"].as_str().unwrap().to_string()
}

fn seg(id: &str, speaker: &str, start: u64, text: &str) -> Value {
    json!({"segment_id": id, "speaker": speaker, "start_ms": start, "end_ms": start + 1500, "text": text, "is_final": true})
}

fn send(server: &Server, meeting: &str, segments: Vec<Value>) -> Value {
    post(server, &format!("/api/v1/meetings/{meeting}/segments?wait=true"), json!({"segments": segments}))
}

fn import(server: &Server, name: &str, bytes: Vec<u8>, title: Option<&str>) -> (u16, Value) {
    let mut form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_string()));
    if let Some(t) = title {
        form = form.text("title", t.to_string());
    }
    let r = client().post(server.url("/api/v1/meetings/import?wait=true")).multipart(form).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// Imports and returns the first meeting's id, checking the job succeeded.
fn imported(server: &Server, name: &str, bytes: Vec<u8>) -> Vec<String> {
    let (status, v) = import(server, name, bytes, None);
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    v["result"]["meetings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["meeting"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn transcript(server: &Server, id: &str) -> Vec<(String, String, u64, u64)> {
    let t = get(server, &format!("/api/v1/meetings/{id}/transcript?format=json"));
    t["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["speaker"].as_str().unwrap().to_string(),
                s["text"].as_str().unwrap().to_string(),
                s["start_ms"].as_u64().unwrap(),
                s["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn meetings_crud_segments_in_order_and_transcripts_round_trip() {
    let (_tmp, server) = start();
    let id = create(&server, "Weekly sync", json!([{"name": "Ann Lee", "email": "ann@example.com", "user_id": "ann"}]));
    let m = get(&server, &format!("/api/v1/meetings/{id}"));
    assert_eq!(
        (m["title"].as_str(), m["status"].as_str(), m["segments"].as_u64()),
        (Some("Weekly sync"), Some("scheduled"), Some(0))
    );
    assert_eq!(m["participants"][0]["id"], "p1");

    // Finals get seq 0, 1, 2...; a partial is acknowledged and not stored; a repeat keeps its seq.
    let first = send(
        &server,
        &id,
        vec![
            seg("a", "Ann Lee", 0, "Welcome to the weekly sync & review."),
            json!({"segment_id": "b", "speaker": "Ben", "text": "Thanks, I", "is_final": false}),
            seg("b", "Ben", 2000, "Thanks, I have two updates."),
        ],
    );
    let acks: Vec<(String, Value, String)> = first["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["segment_id"].as_str().unwrap().into(), a["seq"].clone(), a["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        acks,
        vec![
            ("a".into(), json!(0), "stored".into()),
            ("b".into(), Value::Null, "partial".into()),
            ("b".into(), json!(1), "stored".into())
        ]
    );
    assert_eq!(first["indexed"], true);
    let again = send(
        &server,
        &id,
        vec![seg("b", "Ben", 2000, "Thanks, I have two updates."), seg("c", "Ann Lee", 4000, "Go ahead: first one?")],
    );
    assert_eq!(again["acks"][0]["seq"], 1);
    assert_eq!(again["acks"][0]["status"], "duplicate");
    assert_eq!(again["acks"][1]["seq"], 2);
    let m = get(&server, &format!("/api/v1/meetings/{id}"));
    assert_eq!((m["status"].as_str(), m["segments"].as_u64()), (Some("live"), Some(3)));
    let names: Vec<&str> = m["participants"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Ann Lee", "Ben"], "speakers join as participants");

    // Patch and participants.
    let patched = ok(
        &server,
        reqwest::Method::PATCH,
        &format!("/api/v1/meetings/{id}"),
        Some(json!({"title": "Weekly sync (eng)", "metadata": {"team": "eng"}})),
    );
    assert_eq!(
        (patched["title"].as_str(), patched["metadata"]["team"].as_str()),
        (Some("Weekly sync (eng)"), Some("eng"))
    );
    let people = post(
        &server,
        &format!("/api/v1/meetings/{id}/participants"),
        json!({"participants": [{"name": "ben", "user_id": "ben"}, {"name": "Cleo"}]}),
    );
    assert_eq!(people["participants"].as_array().unwrap().len(), 3);
    assert_eq!(people["participants"][1]["user_id"], "ben", "merged by name");
    let list = get(&server, "/api/v1/meetings?status=live");
    assert_eq!(list["meetings"].as_array().unwrap().len(), 1);
    assert!(get(&server, "/api/v1/meetings?status=ended")["meetings"].as_array().unwrap().is_empty());

    // Every export format reads back through import.
    let original = transcript(&server, &id);
    assert_eq!(original.len(), 3);
    for (format, name) in [("vtt", "sync.vtt"), ("srt", "sync.srt"), ("text", "sync.txt"), ("json", "sync.json")] {
        let r = client().get(server.url(&format!("/api/v1/meetings/{id}/transcript?format={format}"))).send().unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().unwrap().to_vec();
        let ids = imported(&server, name, body);
        let back = transcript(&server, &ids[0]);
        let said = |t: &[(String, String, u64, u64)]| t.iter().map(|s| (s.0.clone(), s.1.clone())).collect::<Vec<_>>();
        assert_eq!(said(&back), said(&original), "{format}");
        if format != "text" {
            assert_eq!(back, original, "{format} keeps times");
        }
        let m = get(&server, &format!("/api/v1/meetings/{}", ids[0]));
        assert_eq!(m["status"], "ended");
        assert_eq!(m["source"], format!("import:{}", if format == "text" { "text" } else { format }));
    }
    let (status, body) =
        call(&server, reqwest::Method::GET, &format!("/api/v1/meetings/{id}/transcript?format=docx"), None);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));

    // Delete removes the meeting and its parts from every store.
    let hits = post(
        &server,
        "/api/v1/search",
        json!({"query": "weekly sync review", "sources": ["meetings"], "filters": {"meeting_id": id}}),
    );
    assert!(!hits["results"].as_array().unwrap().is_empty());
    ok(&server, reqwest::Method::DELETE, &format!("/api/v1/meetings/{id}"), None);
    assert_eq!(call(&server, reqwest::Method::GET, &format!("/api/v1/meetings/{id}"), None).0, 404);
    let hits = post(
        &server,
        "/api/v1/search",
        json!({"query": "weekly sync review", "sources": ["meetings"], "filters": {"meeting_id": id}}),
    );
    assert!(hits["results"].as_array().unwrap().is_empty(), "{hits}");
    for kind in ["meeting_segment", "meeting_chunk", "meeting_insight", "meeting_summary"] {
        let left = get(&server, &format!("/api/v1/records?kind={kind}&limit=1000"));
        assert!(
            left["records"].as_array().unwrap().iter().all(|r| r["metadata"]["meeting_id"] != id.as_str()),
            "{kind} left behind"
        );
    }
    let check = get(&server, "/api/v1/admin/check");
    assert_eq!(check["ok"], true, "{check}");
}

const ZOOM: &str = "WEBVTT\n\n1\n00:00:01.000 --> 00:00:03.000\nAnn: The prototype ships in June.\n\n2\n00:00:03.500 --> 00:00:06.000\nBen: Then marketing starts in July.\n";
const TEAMS: &str = "WEBVTT\n\nNOTE exported\n\nab/1-0\n00:00:00.000 --> 00:00:02.000\n<v Cleo Park>Budget review first.</v>\n\nab/2-0\n00:00:02.000 --> 00:00:04.000\n<v Dev>Agreed.</v>\n";
const SRT: &str =
    "1\n00:00:00,000 --> 00:00:02,000\nEve: Hello there.\n\n2\n00:00:02,500 --> 00:00:04,000\nFrank: Hi Eve.\n";
const OTTER: &str =
    "Grace  0:00\nWelcome to the review.\n\nAlan  0:07\nFirst, the compiler.\n\nTranscribed by https://otter.ai\n";
const PLAIN: &str = "Ann: We should pick the red case.\nBen: Fine by me.\n";

/// A file name, its content, and the (speaker, text) turns it holds.
type ImportCase = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

#[test]
fn imports_each_format_and_refuses_bad_input_storing_nothing() {
    let (_tmp, server) = start();
    let cases: [ImportCase; 5] = [
        ("zoom.vtt", ZOOM, &[("Ann", "The prototype ships in June."), ("Ben", "Then marketing starts in July.")]),
        ("teams.vtt", TEAMS, &[("Cleo Park", "Budget review first."), ("Dev", "Agreed.")]),
        ("call.srt", SRT, &[("Eve", "Hello there."), ("Frank", "Hi Eve.")]),
        ("otter.txt", OTTER, &[("Grace", "Welcome to the review."), ("Alan", "First, the compiler.")]),
        ("chat.txt", PLAIN, &[("Ann", "We should pick the red case."), ("Ben", "Fine by me.")]),
    ];
    for (name, content, want) in cases {
        let ids = imported(&server, name, content.as_bytes().to_vec());
        let got: Vec<(String, String)> = transcript(&server, &ids[0]).into_iter().map(|s| (s.0, s.1)).collect();
        let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(got, want, "{name}");
    }
    // QMSum: one meeting per line, turn n is seq n.
    let line = |who: &str| {
        json!({"topic_list": [], "meeting_transcripts": [
            {"speaker": who, "content": "So {disfmarker} the remote needs big buttons ."},
            {"speaker": "Marketing", "content": "{vocalsound}"},
            {"speaker": "Industrial Designer", "content": "And a rubber case ."}]})
        .to_string()
    };
    let (status, v) = import(
        &server,
        "test_product.jsonl",
        format!("{}\n{}\n", line("Project Manager"), line("User Interface")).into_bytes(),
        Some("Product"),
    );
    assert_eq!((status, v["state"].as_str(), v["meetings"].as_u64()), (202, Some("succeeded"), Some(2)), "{v}");
    let first = v["result"]["meetings"][0]["meeting"].clone();
    assert_eq!(first["title"], "Product #1");
    let t = transcript(&server, first["id"].as_str().unwrap());
    assert_eq!(t[0].1, "So the remote needs big buttons.");
    assert_eq!((t[1].1.as_str(), t.len()), ("{vocalsound}", 3));

    // Refusals: nothing is stored, and the error says why.
    let before = get(&server, "/api/v1/meetings?limit=500")["meetings"].as_array().unwrap().len();
    let (status, v) = import(&server, "meeting.vtt", SRT.as_bytes().to_vec(), None);
    assert_eq!((status, v["error"]["code"].as_str()), (415, Some("unsupported_format")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("named as WebVTT but its content is SRT"), "{v}");
    let (status, v) =
        import(&server, "broken.vtt", b"WEBVTT\n\n00:00:01.000 --> 00:0x:02.000\nAnn: hi\n".to_vec(), None);
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("corrupt_document")), "{v}");
    let (status, _) =
        import(&server, "notes.json", b"{\"meeting_transcripts\": [{\"speaker\": \"A\"}]}".to_vec(), None);
    assert_eq!(status, 422);
    assert_eq!(get(&server, "/api/v1/meetings?limit=500")["meetings"].as_array().unwrap().len(), before);
    let uploads = get(&server, "/api/v1/objects?prefix=uploads/");
    assert!(uploads["objects"].as_array().unwrap().is_empty(), "{uploads}");

    // Segments: malformed JSON, an oversized text, one bad segment in a batch: nothing stored.
    let id = create(&server, "Refusals", json!([]));
    let r = client()
        .post(server.url(&format!("/api/v1/meetings/{id}/segments")))
        .header("content-type", "application/json")
        .body("{\"segments\": [")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "invalid_json");
    let big = "word ".repeat(5000);
    let (status, v) = call(
        &server,
        reqwest::Method::POST,
        &format!("/api/v1/meetings/{id}/segments"),
        Some(json!({"segments": [seg("x", "A", 0, &big)]})),
    );
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("payload_too_large")), "{v}");
    let batch = json!({"segments": [seg("ok", "A", 0, "fine"), {"segment_id": "bad", "text": "t", "start_ms": 9, "end_ms": 1}]});
    let (status, v) = call(&server, reqwest::Method::POST, &format!("/api/v1/meetings/{id}/segments"), Some(batch));
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let unknown = json!({"segments": [{"segment_id": "u", "text": "t", "colour": "red"}]});
    assert_eq!(call(&server, reqwest::Method::POST, &format!("/api/v1/meetings/{id}/segments"), Some(unknown)).0, 400);
    assert_eq!(get(&server, &format!("/api/v1/meetings/{id}"))["segments"], 0);
    assert_eq!(
        call(
            &server,
            reqwest::Method::POST,
            "/api/v1/meetings/mtg_none/segments",
            Some(json!({"segments": [seg("a", "A", 0, "hi")]}))
        )
        .0,
        404
    );
    // An ended meeting takes no more segments.
    post(&server, &format!("/api/v1/meetings/{id}/end?wait=true"), json!({}));
    let (status, v) = call(
        &server,
        reqwest::Method::POST,
        &format!("/api/v1/meetings/{id}/segments"),
        Some(json!({"segments": [seg("late", "A", 0, "late")]})),
    );
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("conflict")), "{v}");
}

#[test]
fn search_finds_an_answer_spanning_two_turns_with_sources_and_filters() {
    let (_tmp, server) = start();
    let id = create(&server, "Office move", json!([]));
    let filler = [
        ("Ann", "Good morning, let's get started with the agenda."),
        ("Ben", "The parking permits were renewed last week."),
        ("Ann", "Great, and the coffee machine is fixed too."),
        ("Cleo", "Sure, I sent the floor plan to everybody on Monday."),
        ("Ann", "What did the vendor quote for the new standing desks?"),
        ("Ben", "Twelve hundred euros each, delivered in March."),
        ("Cleo", "The kitchen needs new cups as well."),
        ("Ann", "Let's wrap up, thanks everyone."),
    ];
    let segments =
        filler.iter().enumerate().map(|(i, (who, text))| seg(&format!("s{i}"), who, i as u64 * 3000, text)).collect();
    send(&server, &id, segments);
    let other = create(&server, "Unrelated", json!([]));
    send(
        &server,
        &other,
        vec![
            seg("o1", "Dan", 0, "The standing order for paper is monthly."),
            seg("o2", "Dan", 2000, "Paper costs went up."),
        ],
    );
    post(
        &server,
        "/api/v1/documents/text",
        json!({"text": "Standing desks reduce back pain according to our wellness guide.", "source": "wellness.txt"}),
    );

    let query = "how much do the standing desks cost and when are they delivered";
    for mode in ["keyword", "semantic", "hybrid"] {
        let r =
            post(&server, "/api/v1/search", json!({"query": query, "mode": mode, "sources": ["meetings"], "top_k": 3}));
        let top = &r["results"][0];
        assert_eq!(
            (top["domain"].as_str(), top["meeting_id"].as_str()),
            (Some("meetings"), Some(id.as_str())),
            "{mode}: {r}"
        );
        let (start, end) = (top["seq_start"].as_u64().unwrap(), top["seq_end"].as_u64().unwrap());
        assert!(start <= 4 && end >= 5, "{mode}: the question (4) and its answer (5) in one result: {top}");
        assert!(top["text"].as_str().unwrap().contains("Ann: What did the vendor quote"), "{top}");
        assert!(top["speaker"].is_string() && top["speakers"].as_array().unwrap().len() >= 2);
    }
    // Hybrid search ranks meeting windows a third way, by the passage around them; the fused
    // score is the three reciprocal ranks.
    let r = post(&server, "/api/v1/search", json!({"query": query, "sources": ["meetings"], "top_k": 3}));
    for hit in r["results"].as_array().unwrap() {
        let s = &hit["scores"];
        let part = |rank: &str| s[rank].as_f64().map_or(0.0, |r| 1.0 / (60.0 + r));
        assert!(s["context_rank"].as_u64().is_some() && s["context_score"].as_f64().is_some(), "{hit}");
        let fused = part("keyword_rank") + part("semantic_rank") + part("context_rank");
        assert!((s["fused"].as_f64().unwrap() - fused).abs() < 1e-6, "{hit}");
    }
    let r = post(
        &server,
        "/api/v1/search",
        json!({"query": query, "sources": ["meetings"], "fusion": {"context_weight": 0}}),
    );
    assert!(r["results"].as_array().unwrap().iter().all(|h| h["scores"].get("context_rank").is_none()), "{r}");
    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        "/api/v1/search",
        Some(json!({"query": query, "sources": ["meetings"], "fusion": {"context_weight": -1}})),
    );
    assert_eq!(status, 400, "{body}");
    // Default sources: documents only, as before, and without a context ranking.
    let r = post(&server, "/api/v1/search", json!({"query": query}));
    assert!(
        r["results"].as_array().unwrap().iter().all(|h| h["domain"] == "documents"
            && h["meeting_id"].is_null()
            && h["scores"].get("context_rank").is_none()),
        "{r}"
    );
    let r = post(&server, "/api/v1/search", json!({"query": query, "sources": ["documents", "meetings"], "top_k": 10}));
    let domains: Vec<&str> = r["results"].as_array().unwrap().iter().map(|h| h["domain"].as_str().unwrap()).collect();
    assert!(domains.contains(&"documents") && domains.contains(&"meetings"), "{domains:?}");
    // Filters: meeting, speaker.
    let r = post(
        &server,
        "/api/v1/search",
        json!({"query": "standing", "sources": ["meetings"], "filters": {"meeting_id": other}}),
    );
    assert!(
        r["results"].as_array().unwrap().iter().all(|h| h["meeting_id"] == other.as_str())
            && !r["results"].as_array().unwrap().is_empty()
    );
    let r = post(
        &server,
        "/api/v1/search",
        json!({"query": "paper cups kitchen", "sources": ["meetings"], "filters": {"speaker": "cleo"}}),
    );
    let results = r["results"].as_array().unwrap();
    assert!(
        !results.is_empty() && results.iter().all(|h| h["speakers"].as_array().unwrap().contains(&json!("Cleo"))),
        "{r}"
    );
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/api/v1/search",
        Some(json!({"query": "x", "sources": ["meetings"], "filters": {"kinds": ["chunk"]}})),
    );
    assert_eq!(status, 400);
    let (status, _) =
        call(&server, reqwest::Method::POST, "/api/v1/search", Some(json!({"query": "x", "sources": ["calendars"]})));
    assert_eq!(status, 400);
}

#[test]
fn insights_summaries_and_the_end_job_make_memories() {
    let (_tmp, server) = start();
    let start = "2026-11-30T09:00:00Z";
    let m = post(
        &server,
        "/api/v1/meetings",
        json!({"title": "Launch planning", "status": "live", "started_at": start,
               "participants": [{"name": "Alice", "user_id": "alice"}, {"name": "Bob Stone", "user_id": "bob"}]}),
    );
    let id = m["id"].as_str().unwrap().to_string();
    let script = [
        ("Alice", "Welcome everyone, today we plan the launch of the beta."),
        ("Bob Stone", "Should we launch the beta in March or wait for the security audit?"),
        ("Alice", "The audit finishes in February, so March works for the schedule."),
        ("Bob Stone", "After the review we decided to launch the beta in March."),
        ("Alice", "Great. I'll send the launch checklist by Friday."),
        ("Alice", "Bob, can you update the pricing page before next Wednesday?"),
        ("Bob Stone", "Yes, I will update the pricing page and the launch announcement."),
        ("Alice", "The launch announcement also needs new screenshots of the beta dashboard."),
        ("Bob Stone", "Who owns the support rota during the launch week?"),
        ("Alice", "Let's keep that open for now and revisit it next meeting."),
        ("Bob Stone", "Fine, thanks Alice."),
    ];
    let mut found = Vec::new();
    for (i, (who, text)) in script.iter().enumerate() {
        let r = send(&server, &id, vec![seg(&format!("t{i}"), who, i as u64 * 4000, text)]);
        found.extend(r["insights"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap().to_string()));
    }
    assert!(
        found.contains(&"decision".to_string()) && found.contains(&"action_item".to_string()),
        "insights arrive with their segments: {found:?}"
    );

    let insights = get(&server, &format!("/api/v1/meetings/{id}/insights"))["insights"].as_array().unwrap().clone();
    let decision = insights.iter().find(|i| i["kind"] == "decision").expect("a decision");
    assert_eq!(decision["seqs"], json!([3]));
    let checklist = insights
        .iter()
        .find(|i| i["kind"] == "action_item" && i["text"].as_str().unwrap().contains("checklist"))
        .unwrap();
    assert_eq!(
        (checklist["owner"].as_str(), checklist["due_date"].as_str()),
        (Some("Alice"), Some("2026-12-04")),
        "{checklist}"
    );
    let pricing = insights.iter().find(|i| i["kind"] == "action_item" && i["seqs"] == json!([5])).unwrap();
    assert_eq!(
        (pricing["owner"].as_str(), pricing["due_date"].as_str()),
        (Some("Bob Stone"), Some("2026-12-09")),
        "{pricing}"
    );
    assert!(insights.iter().any(|i| i["kind"] == "question" && i["seqs"] == json!([8])), "{insights:?}");
    assert!(insights.iter().any(|i| i["kind"] == "topic"), "topics after ten segments: {insights:?}");
    let only =
        get(&server, &format!("/api/v1/meetings/{id}/insights?kind=decision"))["insights"].as_array().unwrap().len();
    assert_eq!(only, 1);
    let rolling = get(&server, &format!("/api/v1/meetings/{id}/summary"));
    assert_eq!((rolling["kind"].as_str(), rolling["upto_seq"].as_u64()), (Some("rolling"), Some(9)), "{rolling}");
    assert!(!rolling["bullets"].as_array().unwrap().is_empty());

    let ended = post(&server, &format!("/api/v1/meetings/{id}/end?wait=true"), json!({}));
    assert_eq!(
        (ended["meeting"]["status"].as_str(), ended["job_state"].as_str()),
        (Some("ended"), Some("succeeded")),
        "{ended}"
    );
    let result = &ended["result"];
    assert_eq!(result["extractor"], "rules");
    let summary = get(&server, &format!("/api/v1/meetings/{id}/summary"));
    assert_eq!(
        (summary["kind"].as_str(), summary["generator"].as_str(), summary["upto_seq"].as_u64()),
        (Some("final"), Some("extractive"), Some(10))
    );
    assert!(summary["text"].as_str().unwrap().contains("decided to launch the beta in March"), "{summary}");

    // One episodic memory per participant, the meeting as the run; action items for their owners.
    let memories =
        |user: &str| get(&server, &format!("/api/v1/memories?user_id={user}"))["memories"].as_array().unwrap().clone();
    let alice = memories("alice");
    let episodic = alice.iter().find(|m| m["tier"] == "episodic").expect("alice's episodic memory");
    assert_eq!(episodic["run_id"], id.as_str());
    assert!(episodic["memory"].as_str().unwrap().contains("Launch planning"), "{episodic}");
    let action = alice.iter().find(|m| m["tier"] == "factual").expect("alice's action item");
    assert!(
        action["memory"].as_str().unwrap().contains("checklist")
            && action["memory"].as_str().unwrap().contains("2026-12-04"),
        "{action}"
    );
    let bob = memories("bob");
    assert!(
        bob.iter().any(|m| m["tier"] == "factual" && m["memory"].as_str().unwrap().contains("pricing page")),
        "{bob:?}"
    );
    // Ending again changes nothing already there.
    let count = alice.len() + bob.len();
    let again = post(&server, &format!("/api/v1/meetings/{id}/end?wait=true"), json!({}));
    assert_eq!(again["job_state"], "succeeded");
    assert_eq!(memories("alice").len() + memories("bob").len(), count);
    // Memories are searchable beside meetings.
    let r = post(&server, "/api/v1/search", json!({"query": "launch checklist", "sources": ["memories"]}));
    let top = &r["results"][0];
    assert_eq!((top["domain"].as_str(), top["user_id"].as_str()), (Some("memories"), Some("alice")), "{r}");
}

fn with_llm(model: &str) -> (common::fake_llm::FakeLlm, tempfile::TempDir, Server) {
    let llm = common::fake_llm::FakeLlm::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("llm.toml");
    std::fs::write(
        &config,
        format!("[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"{}\"\nmodel = \"{model}\"\n", llm.openai_url()),
    )
    .unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS_CONFIG", &config);
    });
    server.wait_ready();
    (llm, tmp, server)
}

#[test]
fn with_an_unusable_llm_answer_the_rules_insights_stay() {
    let (llm, _tmp, server) = with_llm("any-key");
    let id = create(&server, "Short", json!([]));
    send(
        &server,
        &id,
        vec![
            seg("1", "Ann", 0, "We agreed to move the launch to May."),
            seg("2", "Ben", 2000, "I'll tell the press team tomorrow."),
        ],
    );
    let ended = post(&server, &format!("/api/v1/meetings/{id}/end?wait=true"), json!({}));
    assert_eq!(ended["job_state"], "succeeded", "{ended}");
    assert_eq!(ended["result"]["extractor"], "rules");
    assert!(llm.calls.requests() >= 1, "the model was asked");
    let kinds: Vec<String> = get(&server, &format!("/api/v1/meetings/{id}/insights"))["insights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"decision".into()) && kinds.contains(&"action_item".into()), "{kinds:?}");
}

#[test]
fn a_usable_llm_answer_gives_the_final_insights_and_summary() {
    let (llm, _tmp, server) = with_llm("meeting-notes");
    let m = post(
        &server,
        "/api/v1/meetings",
        json!({"title": "Press", "status": "live", "started_at": "2026-11-30T09:00:00Z", "participants": [{"name": "Ben", "user_id": "ben"}]}),
    );
    let id = m["id"].as_str().unwrap().to_string();
    send(
        &server,
        &id,
        vec![
            seg("1", "Ann", 0, "We agreed to move the launch to May."),
            seg("2", "Ben", 2000, "I'll tell the press team tomorrow."),
        ],
    );
    let ended = post(&server, &format!("/api/v1/meetings/{id}/end?wait=true"), json!({}));
    assert_eq!(
        (ended["job_state"].as_str(), ended["result"]["extractor"].as_str()),
        (Some("succeeded"), Some("llm")),
        "{ended}"
    );
    let sent = llm.calls.last_body_with("[1] Ben: I'll tell the press team tomorrow.");
    assert_eq!(sent["model"], "meeting-notes", "{sent}");
    let insights = get(&server, &format!("/api/v1/meetings/{id}/insights"))["insights"].as_array().unwrap().clone();
    let by_model: Vec<&Value> = insights.iter().filter(|i| i["extractor"] == "llm").collect();
    assert_eq!(by_model.len(), 2, "the item outside the transcript is dropped: {insights:?}");
    assert!(insights.iter().all(|i| i["extractor"] == "llm" || i["kind"] == "topic"), "the rules' items are replaced");
    let action = by_model.iter().find(|i| i["kind"] == "action_item").unwrap();
    assert_eq!(
        (action["owner"].as_str(), action["due_date"].as_str(), &action["seqs"]),
        (Some("Ben"), Some("2026-12-01"), &json!([1]))
    );
    let summary = get(&server, &format!("/api/v1/meetings/{id}/summary"));
    assert_eq!(
        (summary["generator"].as_str(), summary["text"].as_str()),
        (Some("llm"), Some("The launch moves to May; Ben tells the press."))
    );
    let memories = get(&server, "/api/v1/memories?user_id=ben")["memories"].as_array().unwrap().clone();
    assert!(
        memories
            .iter()
            .any(|m| m["tier"] == "factual" && m["memory"].as_str().unwrap().contains("Tell the press team")),
        "{memories:?}"
    );
}
