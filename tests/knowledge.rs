//! The knowledge base end to end: documents in (upload, JSON text, CLI), hybrid search with
//! filters, versions, deletion everywhere, grounded answers (JSON and SSE), jobs.

use crate::common;

use std::io::Read;

use common::{Server, client, nexus, run};
use serde_json::{Value, json};

fn upload(server: &Server, name: &str, bytes: Vec<u8>, collection: &str) -> Value {
    let form = reqwest::blocking::multipart::Form::new()
        .part("file", reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()))
        .text("collection", collection.to_string())
        .text("tags", "kb, test")
        .text("metadata", r#"{"team": "garden", "date": "2024-03-01"}"#);
    let r = client().post(server.url("/api/v1/documents?wait=true")).multipart(form).send().unwrap();
    assert_eq!(r.status(), 202);
    r.json().unwrap()
}

fn search(server: &Server, body: Value) -> Vec<Value> {
    let r: Value = client().post(server.url("/api/v1/search")).json(&body).send().unwrap().json().unwrap();
    r["results"].as_array().unwrap_or_else(|| panic!("{r}")).clone()
}

const GUIDE: &str = "# Greenhouse guide\n\n## Watering\n\nTomatoes need deep watering twice a week in summer.\n\n\
## Pests\n\nAphids gather under leaves; ladybirds eat them.\n";

#[test]
fn documents_search_versions_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    let c = client();

    let queued = upload(&server, "guide.md", GUIDE.as_bytes().to_vec(), "garden");
    let job = &queued["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{queued}");
    let doc = &job["result"]["documents"][0];
    assert_eq!(doc["outcome"], "created");
    let id = doc["document"]["id"].as_str().unwrap().to_string();
    assert_eq!(doc["document"]["title"], "Greenhouse guide");
    assert!(doc["document"]["chunks"].as_u64().unwrap() >= 2);

    let text = json!({"text": "The workshop keeps chisels on shelf B2 and planes on shelf C4.", "source": "notes/workshop.txt",
                      "collection": "workshop", "title": "Workshop notes", "date": "2023-06-01"});
    let r = c.post(server.url("/api/v1/documents/text")).json(&text).send().unwrap();
    assert_eq!(r.status(), 201);

    // Every mode finds the right document; keyword hits carry highlights, hybrid a breakdown.
    for mode in ["keyword", "semantic", "hybrid"] {
        let hits = search(&server, json!({"query": "how often should tomatoes be watered", "mode": mode}));
        assert_eq!(hits[0]["document_id"], id.as_str(), "{mode}: {hits:?}");
        assert_eq!(hits[0]["source"], "guide.md");
        assert_eq!(hits[0]["collection"], "garden");
    }
    let hits = search(&server, json!({"query": "watering tomatoes", "mode": "hybrid"}));
    assert!(hits[0]["scores"]["keyword_rank"].is_number() && hits[0]["scores"]["semantic_rank"].is_number());
    assert!(!hits[0]["snippet"]["highlights"].as_array().unwrap().is_empty());
    assert!(hits[0]["text"].as_str().unwrap().contains("Watering"), "chunks carry their heading path");

    // Filters: collection, metadata, tags, dates.
    let q =
        |filters: Value| search(&server, json!({"query": "shelf tomatoes aphids", "filters": filters, "top_k": 20}));
    assert!(q(json!({"collection": "workshop"})).iter().all(|h| h["collection"] == "workshop"));
    assert!(!q(json!({"collection": "workshop"})).is_empty());
    assert!(q(json!({"metadata": {"team": "garden"}})).iter().all(|h| h["document_id"] == id.as_str()));
    assert!(q(json!({"tags": ["kb"]})).iter().all(|h| h["document_id"] == id.as_str()));
    let dated = q(json!({"date_from": "2023-01-01", "date_to": "2023-12-31"}));
    assert!(!dated.is_empty() && dated.iter().all(|h| h["collection"] == "workshop"), "{dated:?}");
    let bad = c
        .post(server.url("/api/v1/search"))
        .json(&json!({"query": "x", "filters": {"date_from": "yesterday"}}))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Pagination is stable.
    let all = search(&server, json!({"query": "shelf tomatoes aphids ladybirds", "top_k": 4}));
    let second = search(&server, json!({"query": "shelf tomatoes aphids ladybirds", "top_k": 2, "offset": 2}));
    assert_eq!(all[2]["chunk_id"], second[0]["chunk_id"]);

    // The same content again is unchanged; changed content is a new version with new chunks only.
    let again = upload(&server, "guide.md", GUIDE.as_bytes().to_vec(), "garden");
    assert_eq!(again["jobs"][0]["result"]["documents"][0]["outcome"], "unchanged");
    let changed = GUIDE.replace("twice a week", "every morning");
    let updated = upload(&server, "guide.md", changed.into_bytes(), "garden");
    let updated = &updated["jobs"][0]["result"]["documents"][0];
    assert_eq!(updated["outcome"], "updated");
    assert_eq!(updated["document"]["version"], 2);
    assert_eq!(updated["document"]["id"], id.as_str(), "same collection and source: same document");
    let hits = search(&server, json!({"query": "tomatoes watering", "mode": "keyword"}));
    assert!(hits.iter().any(|h| h["text"].as_str().unwrap().contains("every morning")));
    assert!(hits.iter().all(|h| !h["text"].as_str().unwrap().contains("twice a week")), "old chunks are gone");

    // Listing, collections, the original file.
    let list: Value = c.get(server.url("/api/v1/documents?collection=garden")).send().unwrap().json().unwrap();
    assert_eq!(list["documents"].as_array().unwrap().len(), 1);
    let cols: Value = c.get(server.url("/api/v1/collections")).send().unwrap().json().unwrap();
    assert_eq!(cols["collections"], json!([{"name": "garden", "documents": 1}, {"name": "workshop", "documents": 1}]));
    let mut original = String::new();
    c.get(server.url(&format!("/api/v1/documents/{id}/content")))
        .send()
        .unwrap()
        .read_to_string(&mut original)
        .unwrap();
    assert!(original.contains("every morning"));

    // Unsupported and corrupt files fail their job with a clear error; others are unaffected.
    let bad = upload(&server, "picture.png", vec![0x89, b'P', b'N', b'G', 0, 1, 2], "garden");
    assert_eq!(bad["jobs"][0]["state"], "failed", "{bad}");
    assert!(
        bad["jobs"][0]["error"].as_str().unwrap().contains("png")
            || bad["jobs"][0]["error"].as_str().unwrap().contains("supported")
    );
    let jobs: Value = c.get(server.url("/api/v1/jobs?state=failed")).send().unwrap().json().unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);

    // Delete removes the document from every store, its original included.
    let r = c.delete(server.url(&format!("/api/v1/documents/{id}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get(server.url(&format!("/api/v1/documents/{id}"))).send().unwrap().status(), 404);
    for mode in ["keyword", "semantic"] {
        assert!(
            search(&server, json!({"query": "tomatoes watering", "mode": mode, "top_k": 50}))
                .iter()
                .all(|h| h["document_id"] != id.as_str())
        );
    }
    let objects: Value = c.get(server.url("/api/v1/objects?prefix=originals/")).send().unwrap().json().unwrap();
    assert_eq!(objects["objects"].as_array().unwrap().len(), 1, "only the workshop note's original is left");
    let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn grounded_answers_without_an_llm_are_extractive() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    upload(&server, "guide.md", GUIDE.as_bytes().to_vec(), "garden");
    let c = client();
    let answer: Value = c
        .post(server.url("/api/v1/ask"))
        .json(&json!({"query": "what eats aphids?", "top_k": 3}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["mode"], "extractive");
    assert!(answer["answer"].as_str().unwrap().contains("ladybirds"), "{answer}");
    assert!(answer["answer"].as_str().unwrap().contains("[1]"));
    assert_eq!(answer["citations"][0]["n"], 1);
    assert_eq!(answer["citations"][0]["source"], "guide.md");

    let mut sse = String::new();
    c.post(server.url("/api/v1/ask"))
        .header("accept", "text/event-stream")
        .json(&json!({"query": "what eats aphids?"}))
        .send()
        .unwrap()
        .read_to_string(&mut sse)
        .unwrap();
    let citations = sse.find("event: citations").expect(&sse);
    let delta = sse.find("event: delta").expect(&sse);
    let done = sse.find("event: done").expect(&sse);
    assert!(citations < delta && delta < done, "{sse}");
    assert!(sse.contains("ladybirds"));
}

#[test]
fn cli_ingest_and_search() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("guide.md"), GUIDE).unwrap();
    std::fs::write(docs.join("sub/notes.txt"), "Bees pollinate the squash flowers in July.").unwrap();
    std::fs::write(docs.join("sub/skip.log"), "not ingested").unwrap();
    std::fs::write(docs.join("broken.pdf"), "%PDF-1.4 truncated").unwrap();

    let out = run(nexus(&data).arg("ingest").arg(&docs).args(["--exclude", "*.log", "--collection", "home"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed file makes the run fail, the rest continue: {stdout}");
    assert!(stdout.contains("2 created") && stdout.contains("1 failed"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.pdf"));
    let out = run(nexus(&data).arg("ingest").arg(&docs).args([
        "--exclude",
        "*.log",
        "--exclude",
        "*.pdf",
        "--collection",
        "home",
    ]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 unchanged"), "second run skips unchanged files");

    let search_json = |data: &std::path::Path| -> Value {
        let out =
            run(nexus(data).args(["search", "who pollinates squash", "--json", "--top-k", "3", "--mode", "hybrid"]));
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let offline = search_json(&data);
    let top = &offline["results"][0];
    assert!(top["source"].as_str().unwrap().ends_with("sub/notes.txt"), "{offline}");
    for key in ["document_id", "chunk_id", "title", "score", "snippet"] {
        assert!(!top[key].is_null(), "{key} missing: {top}");
    }
    // With a server holding the data directory, the CLI talks to it.
    let server = Server::start(&data);
    server.wait_ready();
    let online = search_json(&data);
    assert_eq!(online["results"][0]["chunk_id"], top["chunk_id"]);
    std::fs::write(docs.join("sub/more.txt"), "Marigolds keep pests away from tomatoes.").unwrap();
    let out = run(nexus(&data).arg("ingest").arg(docs.join("sub/more.txt")).args(["--collection", "home"]));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 created"));
}

#[test]
fn grounded_answers_with_an_llm_stream_its_words_and_cite_the_sources() {
    let llm = common::fake_llm::FakeLlm::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("llm.toml");
    std::fs::write(
        &config,
        format!("[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"{}\"\nmodel = \"any-key\"\n", llm.openai_url()),
    )
    .unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS_CONFIG", &config);
    });
    server.wait_ready();
    upload(&server, "guide.md", GUIDE.as_bytes().to_vec(), "garden");
    let c = client();
    let answer: Value = c
        .post(server.url("/api/v1/ask"))
        .json(&json!({"query": "what eats aphids?", "top_k": 3}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["mode"], "llm", "{answer}");
    assert_eq!(answer["answer"], common::fake_llm::answer());
    assert!(!answer["citations"].as_array().unwrap().is_empty());
    // The model was given the numbered sources and the question.
    let sent = llm.calls.last_body_with("what eats aphids?");
    let prompt = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect::<String>();
    assert!(prompt.contains("[1]") && prompt.contains("ladybirds") && prompt.contains("what eats aphids?"), "{prompt}");

    let mut sse = String::new();
    c.post(server.url("/api/v1/ask"))
        .header("accept", "text/event-stream")
        .json(&json!({"query": "what eats aphids?"}))
        .send()
        .unwrap()
        .read_to_string(&mut sse)
        .unwrap();
    assert_eq!(sse.matches("event: delta").count(), common::fake_llm::PIECES.len(), "{sse}");
    assert!(sse.contains(r#""mode":"llm""#));
}

#[test]
fn uploads_over_the_limit_are_refused_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__KNOWLEDGE__MAX_UPLOAD_BYTES", "2048");
    });
    server.wait_ready();
    let form = reqwest::blocking::multipart::Form::new()
        .part("file", reqwest::blocking::multipart::Part::bytes(vec![b'a'; 5000]).file_name("big.txt"));
    let r = client().post(server.url("/api/v1/documents")).multipart(form).send().unwrap();
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let objects: Value = client().get(server.url("/api/v1/objects?prefix=uploads/")).send().unwrap().json().unwrap();
    assert!(objects["objects"].as_array().unwrap().is_empty(), "nothing of the refused upload is kept");
    assert_eq!(client().get(server.url("/health")).send().unwrap().status(), 200);
    let small = upload(&server, "small.txt", b"a small note about compost".to_vec(), "garden");
    assert_eq!(small["jobs"][0]["state"], "succeeded");
}
