//! The memory API over HTTP against a real server: adds (verbatim, extracted, inferred by a
//! model), duplicates, search with filters and relations, history, updates, expiry, isolation,
//! bad input, and SIGKILL during concurrent adds.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, client, nexus, run};
use reqwest::blocking::Client;
use serde_json::{Value, json};

struct Api {
    c: Client,
    base: String,
    key: Option<String>,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api { c: client(), base: server.url(""), key: None }
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.c.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let response = r.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method.clone(), path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    fn add(&self, body: Value) -> Value {
        self.ok(reqwest::Method::POST, "/api/v1/memories", Some(body))
    }

    /// Adds `text` verbatim as `speaker`'s turn in `run` of `user`'s scope.
    fn say(&self, user: &str, run: &str, speaker: &str, text: &str) {
        self.add(json!({
            "messages": [{"role": "user", "content": text, "name": speaker}],
            "user_id": user, "run_id": run, "infer": false,
        }));
    }

    fn search(&self, body: Value) -> Value {
        self.ok(reqwest::Method::POST, "/api/v1/memories/search", Some(body))
    }

    fn list(&self, query: &str) -> Value {
        self.ok(reqwest::Method::GET, &format!("/api/v1/memories?{query}"), None)
    }
}

fn texts(results: &Value) -> Vec<String> {
    results.as_array().unwrap().iter().map(|r| r["memory"].as_str().unwrap().to_string()).collect()
}

fn server() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    (tmp, server)
}

/// Messages added with only a user_id are put in threads by their times: a gap longer than
/// `memory.thread_gap_secs` starts a new one, and a thread gives its turns numbers and context
/// as a run does.
#[test]
fn messages_without_a_run_are_threaded_by_their_times() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let say = |text: &str, at: i64| {
        let added = api.add(json!({
            "messages": [{"role": "user", "content": text, "name": "Lee"}],
            "user_id": "lee", "infer": false, "timestamp": at,
        }));
        let id = added["results"][0]["id"].as_str().unwrap().to_string();
        api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{id}"), None)
    };
    let day = 1_700_000_000;
    let first = say("We should book the cabin by the lake.", day);
    let second = say("Yes, the one with the red canoe.", day + 300);
    let later = say("My sister is visiting next week.", day + 3 * 86_400);
    assert_eq!((first["turn"].as_u64(), second["turn"].as_u64()), (Some(0), Some(1)), "{first} {second}");
    assert!(first["thread"].is_string(), "{first}");
    assert_eq!(first["thread"], second["thread"], "five minutes apart: one thread");
    assert_ne!(later["thread"], first["thread"], "three days later: a new thread");
    assert_eq!(later["turn"], 0);
    // With a run, the run is the thread: none is made.
    let added = api.add(json!({
        "messages": [{"role": "user", "content": "Run turn."}], "user_id": "lee", "run_id": "r1", "infer": false,
    }));
    let id = added["results"][0]["id"].as_str().unwrap();
    let run_turn = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{id}"), None);
    assert!(run_turn.get("thread").is_none_or(Value::is_null), "{run_turn}");
    assert_eq!(run_turn["turn"], 0);
}

/// The second hop: a name the best candidates mention beyond the query's leads to the other
/// turns that mention it, which the question's own words do not find.
#[test]
fn a_second_hop_finds_turns_that_share_a_name_with_what_matched() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let say = |run: &str, speaker: &str, text: &str| api.say("cara", run, speaker, text);
    say("s1", "Cara", "I moved here from Sweden four years ago, right after school.");
    say("s1", "Mel", "That must have been a big change for you.");
    say("s2", "Cara", "This necklace was a gift from my grandma in Sweden.");
    say("s2", "Mel", "It is lovely, and it suits you.");
    // Cara's other turns share the question's words, so they outrank the necklace on their own.
    let filler = [
        "Four years ago I started painting with watercolours.",
        "I moved my desk closer to the window last week.",
        "I have been running every morning for four years now.",
        "Moving boxes are still stacked in my garage, years later.",
        "My brother moved out of our flat four years ago too.",
        "Four years flew by since school ended.",
        "I moved the couch so the living room feels bigger.",
        "We went camping in the mountains last year.",
        "Where did the four years go? It feels like we moved in yesterday.",
        "I moved on from my old job four years ago.",
        "Four years ago I could not have imagined moving again.",
    ];
    for (i, text) in filler.iter().enumerate() {
        say(&format!("s{}", 3 + i), "Cara", text);
    }
    let necklace = "This necklace was a gift from my grandma in Sweden.";
    let top = |hop: f64| {
        let found = api.search(json!({"query": "Where did Cara move from four years ago?", "user_id": "cara",
                                      "top_k": 3, "hop_weight": hop, "neighbour_weight": 0.0}));
        texts(&found["results"])
    };
    let without = top(0.0);
    assert!(!without.iter().any(|t| t == necklace), "the question's words alone do not reach it: {without:?}");
    let with = top(0.5);
    assert!(with.iter().any(|t| t == necklace), "Sweden leads to it: {with:?}");
    // Out of range: refused.
    let (status, body) = api.send(
        reqwest::Method::POST,
        "/api/v1/memories/search",
        Some(json!({"query": "Sweden", "user_id": "cara", "hop_weight": 1.5})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("hop_weight"), "{body}");
}

/// A question that names one of the people who speak is searched without the name: the speaker
/// cue prefers that person's turns, and the name would make every one of them, and every turn
/// that addresses them ("Thanks, Cara!"), match as if it answered.
#[test]
fn a_named_speakers_turns_are_found_by_what_they_say_not_by_the_name() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let say = |run: &str, speaker: &str, text: &str| api.say("pair", run, speaker, text);
    let answer = "I loved reading Charlotte's Web as a kid.";
    say("s1", "Cara", answer);
    for (i, text) in
        ["Cara! Hi Cara, so good to see you, Cara.", "Thanks, Cara! Have a lovely day, Cara."].iter().enumerate()
    {
        say(&format!("m{i}"), "Mel", text);
    }
    for (i, text) in
        ["We went camping in the mountains last summer.", "My dog Bailey loves the beach."].iter().enumerate()
    {
        say(&format!("c{i}"), "Cara", text);
    }
    let found = api.search(json!({"query": "What books has Cara read?", "user_id": "pair", "top_k": 5,
                                  "neighbour_weight": 0.0}));
    let results = found["results"].as_array().unwrap();
    assert_eq!(results[0]["memory"], answer, "{found}");
    let best = results[0]["score"].as_f64().unwrap();
    for other in &results[1..] {
        assert!(other["score"].as_f64().unwrap() < best / 2.0, "only the answer is about books: {found}");
    }
}

#[test]
fn verbatim_adds_merge_duplicates_and_are_found_by_search() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let added = api.add(json!({
        "messages": [
            {"role": "user", "content": "I adopted a grey cat called Miso last spring.", "name": "Dana"},
            {"role": "assistant", "content": "Miso is a lovely name for a cat."},
            {"role": "system", "content": "You are helpful."}
        ],
        "user_id": "dana", "infer": false, "metadata": {"channel": "chat"}, "timestamp": 1684000000
    }));
    let results = added["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "system messages are not memories: {added}");
    assert!(results.iter().all(|r| r["event"] == "ADD" && r["tier"] == "episodic"));
    let miso = results[0]["id"].as_str().unwrap().to_string();

    // The same words again, and a near-identical message: merged, not stored twice.
    let again = api.add(json!({"messages": [{"role": "user", "content": "I adopted a grey cat called Miso last spring!"}], "user_id": "dana", "infer": false}));
    assert_eq!(again["results"][0]["event"], "NONE", "{again}");
    assert_eq!(again["results"][0]["id"], miso.as_str());
    // Another user's identical message is theirs.
    let other = api.add(json!({"messages": [{"role": "user", "content": "I adopted a grey cat called Miso last spring."}], "user_id": "eli", "infer": false}));
    assert_eq!(other["results"][0]["event"], "ADD");
    assert_eq!(api.list("user_id=dana")["total"], 2);

    let got = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{miso}"), None);
    assert_eq!(got["memory"], "I adopted a grey cat called Miso last spring.");
    assert_eq!(got["metadata"]["channel"], "chat");
    assert_eq!(got["metadata"]["role"], "user");
    assert_eq!(got["metadata"]["name"], "Dana");
    assert_eq!(got["event_time"], "2023-05-13T17:46:40Z");
    assert_eq!(got["user_id"], "dana");

    let found = api.search(json!({"query": "what pet does Dana have?", "user_id": "dana"}));
    let hits = found["results"].as_array().unwrap();
    assert_eq!(hits[0]["id"], miso.as_str(), "{found}");
    assert!(hits.iter().all(|h| h["user_id"] == "dana"), "only dana's memories");
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)) && scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Dana's message names Miso: the graph links Dana to it, and search returns the relation.
    let relations = found["relations"].as_array().unwrap();
    assert!(relations.iter().any(|r| r["source"] == "Dana" && r["target"] == "Miso"), "{found}");

    // A high threshold keeps only what is relevant enough.
    let strict = api.search(json!({"query": "what pet does Dana have?", "user_id": "dana", "threshold": 0.99}));
    assert!(strict["results"].as_array().unwrap().is_empty(), "{strict}");
}

#[test]
fn without_a_model_the_extractor_keeps_facts_and_events_in_their_tiers() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let added = api.add(json!({
        "messages": [{"role": "user", "content": "Hello there! I'm allergic to peanuts. Last week I ran the Berlin marathon. Can you suggest a snack?"}],
        "user_id": "fay"
    }));
    let results = added["results"].as_array().unwrap();
    let by_text: HashMap<&str, &str> =
        results.iter().map(|r| (r["memory"].as_str().unwrap(), r["tier"].as_str().unwrap())).collect();
    assert_eq!(by_text.len(), 2, "greeting and question dropped: {added}");
    assert_eq!(by_text["I'm allergic to peanuts."], "factual");
    assert_eq!(by_text["Last week I ran the Berlin marathon."], "episodic");
    let factual = api.search(json!({"query": "food allergy", "user_id": "fay", "tiers": ["factual"]}));
    assert_eq!(texts(&factual["results"]), vec!["I'm allergic to peanuts."]);
}

#[test]
fn updates_keep_history_immutable_text_stays_and_deletes_are_recorded() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let id = api.add(json!({"text": "Prefers window seats", "user_id": "gus", "infer": false, "tier": "factual"}))["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/memories/{id}");
    let updated =
        api.ok(reqwest::Method::PUT, &path, Some(json!({"text": "Prefers aisle seats", "categories": ["Travel"]})));
    assert_eq!(updated["memory"], "Prefers aisle seats");
    assert_eq!(updated["categories"], json!(["travel"]));
    let found = api.search(json!({"query": "aisle seat", "user_id": "gus"}));
    assert_eq!(texts(&found["results"])[0], "Prefers aisle seats", "the new text is what is indexed");

    let history = api.ok(reqwest::Method::GET, &format!("{path}/history"), None)["history"].clone();
    let events: Vec<&str> = history.as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["ADD", "UPDATE"]);
    assert_eq!(history[1]["old_memory"], "Prefers window seats");
    assert_eq!(history[1]["new_memory"], "Prefers aisle seats");
    assert_eq!(history[1]["actor"], "open");

    let locked =
        api.add(json!({"text": "Blood type is O negative", "user_id": "gus", "infer": false, "immutable": true}));
    let locked = locked["results"][0]["id"].as_str().unwrap().to_string();
    let (status, body) =
        api.send(reqwest::Method::PUT, &format!("/api/v1/memories/{locked}"), Some(json!({"text": "Blood type is A"})));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(
        api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{locked}"), None)["memory"],
        "Blood type is O negative"
    );

    api.ok(reqwest::Method::DELETE, &path, None);
    assert_eq!(api.send(reqwest::Method::GET, &path, None).0, 404);
    let history = api.ok(reqwest::Method::GET, &format!("{path}/history"), None)["history"].clone();
    assert_eq!(history.as_array().unwrap().last().unwrap()["event"], "DELETE", "history outlives the memory");
    let found = api.search(json!({"query": "aisle seat", "user_id": "gus"}));
    assert!(!texts(&found["results"]).contains(&"Prefers aisle seats".to_string()));

    let deleted = api.ok(reqwest::Method::DELETE, "/api/v1/memories?user_id=gus", None);
    assert_eq!(deleted["deleted"], 1);
    assert_eq!(api.list("user_id=gus")["total"], 0);
}

#[test]
fn expired_memories_leave_search_and_lists_but_not_get() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let old = api.add(json!({"text": "Parking spot is B12 this week", "user_id": "hal", "infer": false, "expiration_date": "2020-01-01"}));
    let old = old["results"][0]["id"].as_str().unwrap().to_string();
    let scratch =
        api.add(json!({"text": "Draft the parking memo next", "run_id": "run-1", "infer": false, "ttl_seconds": 1}));
    assert_eq!(scratch["results"][0]["tier"], "working", "a run's own memory is working memory");
    std::thread::sleep(Duration::from_millis(1500));

    let found = api.search(json!({"query": "parking", "user_id": "hal"}));
    assert!(found["results"].as_array().unwrap().is_empty(), "{found}");
    assert!(api.search(json!({"query": "parking memo", "run_id": "run-1"}))["results"].as_array().unwrap().is_empty());
    assert_eq!(api.list("user_id=hal")["total"], 0);
    assert_eq!(api.list("user_id=hal&show_expired=true")["total"], 1);
    let shown = api.search(json!({"query": "parking", "user_id": "hal", "show_expired": true}));
    assert_eq!(shown["results"][0]["id"], old.as_str());
    let got = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{old}"), None);
    assert_eq!(got["expiration_date"], "2020-01-01");
}

#[test]
fn filters_follow_the_mem0_grammar_and_unknown_fields_are_refused() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    for (user, text, category, city) in [
        ("ivy", "Ivy runs every morning", "health", "Oslo"),
        ("ivy", "Ivy is learning Norwegian", "learning", "Oslo"),
        ("jon", "Jon runs on weekends", "health", "Rome"),
    ] {
        api.add(json!({"text": text, "user_id": user, "infer": false, "categories": [category], "metadata": {"city": city}}));
    }
    let list = |filters: Value| {
        let v = api.ok(reqwest::Method::POST, "/api/v1/memories/list", Some(json!({"filters": filters})));
        let mut t = texts(&v["memories"]);
        t.sort();
        t
    };
    assert_eq!(
        list(json!({"OR": [{"user_id": "jon"}, {"categories": {"contains": "learning"}}]})),
        vec!["Ivy is learning Norwegian", "Jon runs on weekends"]
    );
    assert_eq!(
        list(json!({"AND": [{"user_id": {"in": ["ivy", "jon"]}}, {"NOT": {"metadata": {"city": "Oslo"}}}]})),
        vec!["Jon runs on weekends"]
    );
    assert_eq!(
        list(json!({"user_id": "*", "keywords": {"icontains": "RUNS"}, "created_at": {"gte": "2020-01-01"}})),
        vec!["Ivy runs every morning", "Jon runs on weekends"]
    );
    let found = api.search(json!({"query": "running", "filters": {"metadata": {"city": "Rome"}}}));
    assert_eq!(texts(&found["results"]), vec!["Jon runs on weekends"]);

    for filters in
        [json!({"colour": "red"}), json!({"user_id": {"like": "i%"}}), json!({"AND": {"user_id": "ivy"}}), json!("ivy")]
    {
        let (status, body) = api.send(
            reqwest::Method::POST,
            "/api/v1/memories/search",
            Some(json!({"query": "running", "filters": filters})),
        );
        assert_eq!(status, 400, "{filters}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
}

#[test]
fn bad_input_is_refused_with_a_code_and_writes_nothing() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    api.add(json!({"text": "Kim plays the cello", "user_id": "kim", "infer": false}));
    let cases = [
        (json!({"query": "", "user_id": "kim"}), "/api/v1/memories/search", 400, "invalid_request"),
        (json!({"query": "cello", "top_k": 0}), "/api/v1/memories/search", 400, "invalid_request"),
        (json!({"text": "no scope", "infer": false}), "/api/v1/memories", 400, "invalid_request"),
        (json!({"messages": [], "user_id": "kim"}), "/api/v1/memories", 400, "invalid_request"),
        (
            json!({"text": "x".repeat(70_000), "user_id": "kim", "infer": false}),
            "/api/v1/memories",
            413,
            "payload_too_large",
        ),
        (
            json!({"text": "bad day", "user_id": "kim", "expiration_date": "next tuesday"}),
            "/api/v1/memories",
            400,
            "invalid_request",
        ),
        (json!({"text": "bad meta", "user_id": "kim", "metadata": [1, 2]}), "/api/v1/memories", 400, "invalid_request"),
    ];
    for (body, path, status, code) in cases {
        let (got, answer) = api.send(reqwest::Method::POST, path, Some(body.clone()));
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    assert_eq!(api.list("user_id=kim")["total"], 1, "nothing was written");
    let (status, _) = api.send(reqwest::Method::GET, "/api/v1/memories/not-a-memory", None);
    assert_eq!(status, 404);
    let (status, _) = api.send(reqwest::Method::DELETE, "/api/v1/memories", None);
    assert_eq!(status, 400, "deleting everything needs a scope");
}

#[test]
fn asynchronous_adds_answer_with_an_event_that_completes() {
    let (_tmp, server) = server();
    let api = Api::new(&server);
    let queued = api.ok(
        reqwest::Method::POST,
        "/api/v1/memories?async=true",
        Some(json!({"text": "Lee is moving to Porto in May", "user_id": "lee", "infer": false})),
    );
    assert_eq!(queued["status"], "PENDING");
    let event = queued["event_id"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    for _ in 0..100 {
        last = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/events/{event}"), None);
        if last["status"] == "SUCCEEDED" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last["status"], "SUCCEEDED", "{last}");
    assert_eq!(last["results"][0]["memory"], "Lee is moving to Porto in May");
    assert_eq!(api.list("user_id=lee")["total"], 1);
}

#[test]
fn each_project_sees_only_its_own_memories() {
    let tmp = tempfile::tempdir().unwrap();
    const MASTER: &str = "memory-test-master-key-0123456789";
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER).env("NEXUS__LIMITS__PER_KEY_PER_SECOND", "0");
    });
    server.wait_ready();
    let mut admin = Api::new(&server);
    admin.key = Some(MASTER.into());
    let mut keys = Vec::new();
    for project in ["north", "south"] {
        admin.ok(reqwest::Method::POST, "/api/v1/projects", Some(json!({"id": project})));
        let created = admin.ok(
            reqwest::Method::POST,
            "/api/v1/keys",
            Some(json!({"name": project, "project": project, "scopes": ["read", "write"]})),
        );
        keys.push(created["key"].as_str().unwrap().to_string());
    }
    let (mut north, mut south) = (Api::new(&server), Api::new(&server));
    north.key = Some(keys[0].clone());
    south.key = Some(keys[1].clone());
    let id = north.add(json!({"text": "The vault code is 4471", "user_id": "max", "infer": false}))["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(south.search(json!({"query": "vault code", "user_id": "max"}))["results"].as_array().unwrap().is_empty());
    assert_eq!(south.list("user_id=max")["total"], 0);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        assert_eq!(south.send(method, &format!("/api/v1/memories/{id}"), None).0, 404);
    }
    assert_eq!(
        south.send(reqwest::Method::PUT, &format!("/api/v1/memories/{id}"), Some(json!({"text": "0000"}))).0,
        404
    );
    assert_eq!(
        north.ok(reqwest::Method::GET, &format!("/api/v1/memories/{id}"), None)["memory"],
        "The vault code is 4471"
    );
    assert_eq!(
        north.ok(reqwest::Method::GET, &format!("/api/v1/memories/{id}/history"), None)["history"][0]["actor"]
            .as_str()
            .map(|a| a.starts_with("key_") || !a.is_empty()),
        Some(true)
    );
}

// ---- Inference with a model: a scripted OpenAI-compatible server --------------------------------

#[test]
fn a_model_extracts_and_decides_and_malformed_answers_are_repaired_or_retried() {
    let llm = common::fake_llm::ScriptedLlm::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("llm.toml");
    std::fs::write(
        &config,
        format!("[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"http://{}/v1\"\nmodel = \"scripted\"\n", llm.addr),
    )
    .unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS_CONFIG", &config);
    });
    server.wait_ready();
    let api = Api::new(&server);

    // Step one answers in a code fence with a trailing comma (repaired); nothing similar exists
    // yet, and step two first answers prose (retried), then adds both facts.
    llm.script(&[
        "```json\n{\"facts\": [{\"text\": \"Nia is vegetarian\", \"tier\": \"factual\", \"categories\": [\"food\"]}, {\"text\": \"Nia visited Kyoto in 2023\", \"tier\": \"episodic\"},], \"relations\": [{\"source\": \"Nia\", \"relationship\": \"visited\", \"target\": \"Kyoto\"}]}\n```",
        "I think both are new.",
        "{\"memory\": [{\"text\": \"Nia is vegetarian\", \"event\": \"ADD\"}, {\"text\": \"Nia visited Kyoto in 2023\", \"event\": \"ADD\"}]}",
    ]);
    let first = api.add(json!({"messages": [{"role": "user", "content": "I'm Nia. I don't eat meat, and I loved Kyoto last year."}], "user_id": "nia"}));
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{first}");
    let veg = results.iter().find(|r| r["memory"] == "Nia is vegetarian").expect("fact added");
    assert_eq!(veg["tier"], "factual");
    let veg_id = veg["id"].as_str().unwrap().to_string();
    assert!(
        first["relations"].as_array().unwrap().iter().any(|r| r["relationship"] == "visited" && r["target"] == "Kyoto")
    );
    let got = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{veg_id}"), None);
    assert_eq!(got["categories"], json!(["food"]));

    // The model was shown the existing memories under short ids only.
    llm.script(&[
        "{\"facts\": [\"Nia is vegan\"]}",
        "{\"memory\": [{\"id\": \"0\", \"text\": \"Nia is vegan\", \"event\": \"UPDATE\"}, {\"id\": \"17\", \"text\": \"Nia likes tofu\", \"event\": \"UPDATE\"}]}",
    ]);
    let second = api.add(json!({"messages": [{"role": "user", "content": "Actually I'm fully vegan now, and I like tofu."}], "user_id": "nia"}));
    let decide = llm.requests.lock().unwrap().last().unwrap().clone();
    let shown = decide["messages"][1]["content"].as_str().unwrap();
    assert!(shown.contains("\"id\":\"0\"") && !shown.contains(&veg_id), "real ids never reach the model: {shown}");
    let events: Vec<(String, String)> = second["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["event"].as_str().unwrap().into(), r["memory"].as_str().unwrap().into()))
        .collect();
    assert!(events.contains(&("UPDATE".into(), "Nia is vegan".into())), "{second}");
    assert!(events.contains(&("ADD".into(), "Nia likes tofu".into())), "an invented id becomes a new memory: {second}");
    let history = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{veg_id}/history"), None)["history"].clone();
    assert_eq!(history[1]["event"], "UPDATE");
    assert_eq!(history[1]["old_memory"], "Nia is vegetarian");
    assert_eq!(history[1]["new_memory"], "Nia is vegan");

    // Answers that stay unreadable: the facts are still added, and the history says why.
    llm.script(&["not json at all", "still not json"]);
    let third =
        api.add(json!({"messages": [{"role": "user", "content": "My sister Ana lives in Lima."}], "user_id": "nia"}));
    let added = third["results"].as_array().unwrap();
    assert!(!added.is_empty(), "nothing is silently dropped: {third}");
    let id = added[0]["id"].as_str().unwrap();
    let history = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{id}/history"), None)["history"].clone();
    assert!(history[0]["note"].as_str().unwrap().contains("deterministic extractor"), "{history}");
}

// ---- Crash safety ---------------------------------------------------------------------------------

#[test]
fn memories_acknowledged_before_a_sigkill_are_all_found_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default(); // (id, unique word)
    for round in 0..3 {
        let server = Server::start(&data);
        server.wait_ready();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (base, acked, stop) = (server.url(""), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let c = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let word = format!("zq{round}x{w}x{n}");
                        let body = json!({"text": format!("Note {word} about round {round}"), "user_id": format!("writer{w}"), "infer": false});
                        match c.post(format!("{base}/api/v1/memories")).json(&body).send() {
                            Ok(r) if r.status().is_success() => {
                                let v: Value = r.json().unwrap();
                                acked.lock().unwrap().push((v["results"][0]["id"].as_str().unwrap().into(), word));
                            }
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500 + 700 * round as u64));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 10, "only {} adds were acknowledged", acked.len());
    let server = Server::start(&data);
    server.wait_ready();
    let api = Api::new(&server);
    for (id, word) in &acked {
        let got = api.ok(reqwest::Method::GET, &format!("/api/v1/memories/{id}"), None);
        assert!(got["memory"].as_str().unwrap().contains(word.as_str()), "{word}: {got}");
    }
    // And searchable: a sample by their unique word.
    for (id, word) in acked.iter().step_by((acked.len() / 20).max(1)) {
        let user = format!("writer{}", word.split('x').nth(1).unwrap());
        let found = api.search(json!({"query": word, "user_id": user, "mode": "keyword", "top_k": 3}));
        assert_eq!(found["results"][0]["id"], id.as_str(), "{word}: {found}");
    }
    drop(server);
    let check = run(nexus(&data).arg("check"));
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
