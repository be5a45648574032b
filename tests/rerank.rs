//! The reranker (`[rerank]`) against a real server and a local stand-in for Cohere's rerank API:
//! memory, Mem0 and document searches reordered by its scores, with paging; a failing, flaky or
//! slow reranker, after which searches still answer in their own order and say so; and asking for
//! it with none configured.

use crate::common;

use common::fake_rerank::{self, FakeRerank};
use common::{Server, client};
use serde_json::{Value, json};

const KEY_VAR: &str = "NEXUS_TEST_RERANK_KEY";

fn start(tmp: &std::path::Path, rerank: Option<&FakeRerank>) -> Server {
    let config = tmp.join("nexus.toml");
    let section = match rerank {
        Some(fake) => format!(
            "[rerank]\nprovider = \"cohere\"\nurl = \"{}\"\nmodel = \"{}\"\napi_key_env = \"{KEY_VAR}\"\n\
             candidates = 20\ntimeout_ms = 1500\nmax_retries = 1\n",
            fake.url(),
            fake_rerank::MODEL
        ),
        None => String::new(),
    };
    std::fs::write(&config, section).unwrap();
    let server = Server::start_with(&tmp.join("data"), |cmd| {
        cmd.env("NEXUS_CONFIG", &config).env(KEY_VAR, fake_rerank::KEY);
    });
    server.wait_ready();
    server
}

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(server.url(path)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn ok(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = post(server, path, body.clone());
    assert!((200..300).contains(&status), "{path} {body}: {status} {v}");
    v
}

const TURNS: [&str; 6] = [
    "I signed up for a pottery class last week",
    "Which class did you sign up for? Was it pottery?",
    "The weather at the lake was lovely on Sunday",
    "My pottery teacher says my bowls are getting better",
    "We took the kids camping in the mountains",
    "I read a book about the history of ceramics and pottery",
];

fn add_turns(server: &Server) {
    for (i, text) in TURNS.iter().enumerate() {
        let speaker = if i == 1 { "Bea" } else { "Ann" };
        ok(
            server,
            "/api/v1/memories",
            json!({"messages": [{"role": "user", "content": text, "name": speaker}],
                   "user_id": "ann", "run_id": "chat-1", "infer": false}),
        );
    }
}

fn texts(results: &Value) -> Vec<String> {
    results.as_array().unwrap().iter().map(|r| r["memory"].as_str().unwrap().to_string()).collect()
}

#[test]
fn memory_and_mem0_searches_are_reordered_by_the_reranker() {
    let fake = FakeRerank::start();
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), Some(&fake));
    add_turns(&server);
    let query = "Which pottery class did Ann sign up for?";

    let own = ok(&server, "/api/v1/memories/search", json!({"query": query, "user_id": "ann", "rerank": false}));
    assert!(own.get("reranked").is_none(), "{own}");
    assert!(own["results"].as_array().unwrap().iter().all(|r| r.get("rerank_score").is_none()));
    assert_eq!(fake.calls.requests(), 0, "rerank: false sends nothing");

    // Reranked by default: the order is the reranker's, and each result carries its score.
    let found = ok(&server, "/api/v1/memories/search", json!({"query": query, "user_id": "ann", "top_k": 4}));
    assert_eq!(found["reranked"], true, "{found}");
    let body = fake.calls.last_body();
    assert_eq!(body["model"], fake_rerank::MODEL);
    assert_eq!(body["query"], query, "the question as asked, names included");
    let documents: Vec<String> =
        body["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    assert_eq!(documents.len(), TURNS.len(), "every candidate is sent: {documents:?}");
    assert_eq!(body["top_n"], TURNS.len());
    assert!(documents.contains(&"Bea: Which class did you sign up for? Was it pottery?".to_string()), "{documents:?}");
    assert_eq!(
        fake.calls.authorizations.lock().last().unwrap().as_deref(),
        Some(&*format!("Bearer {}", fake_rerank::KEY))
    );
    let mut expected: Vec<(f64, String)> = TURNS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (fake_rerank::score(query, &format!("{}: {t}", if i == 1 { "Bea" } else { "Ann" })), t.to_string())
        })
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: Vec<String> = expected.into_iter().take(4).map(|(_, t)| t).collect();
    assert_eq!(texts(&found["results"]), expected);
    let scores: Vec<f64> =
        found["results"].as_array().unwrap().iter().map(|r| r["rerank_score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The reranker's own order differs from the search's: the question turn, which the search
    // lowers, holds every word of the question.
    assert_ne!(texts(&own["results"])[..4], expected[..], "the test must tell the two orders apart");

    // Mem0's search takes `rerank` too, and its results carry `rerank_score`.
    let mem0 = ok(
        &server,
        "/v2/memories/search/",
        json!({"query": query, "filters": {"user_id": "ann"}, "rerank": true,
                                                          "top_k": 4, "threshold": 0.0}),
    );
    let mem0 = mem0.as_array().expect("v2 search answers a bare list").clone();
    assert_eq!(mem0.iter().map(|r| r["memory"].as_str().unwrap().to_string()).collect::<Vec<_>>(), expected);
    assert!(mem0[0]["rerank_score"].is_number(), "{mem0:?}");
    let unranked = ok(
        &server,
        "/v2/memories/search/",
        json!({"query": query, "filters": {"user_id": "ann"},
                                                              "rerank": false, "threshold": 0.0}),
    );
    assert!(unranked[0].get("rerank_score").is_none());
}

#[test]
fn a_failing_flaky_or_slow_reranker_leaves_searches_in_their_own_order() {
    let fake = FakeRerank::start();
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), Some(&fake));
    add_turns(&server);

    for (query, reranked) in
        [("pottery class fail500", false), ("pottery class flaky", true), ("pottery class slow", false)]
    {
        let own = ok(&server, "/api/v1/memories/search", json!({"query": query, "user_id": "ann", "rerank": false}));
        let before = fake.calls.requests();
        let found = ok(&server, "/api/v1/memories/search", json!({"query": query, "user_id": "ann"}));
        assert_eq!(found["reranked"], reranked, "{query}: {found}");
        if reranked {
            assert_eq!(fake.calls.requests() - before, 2, "{query}: one retry after the 503");
            assert!(found["results"][0]["rerank_score"].is_number());
        } else {
            let ids = |v: &Value| v["results"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
            assert_eq!(ids(&found), ids(&own), "{query}: the search's own order");
            assert!(found["results"].as_array().unwrap().iter().all(|r| r.get("rerank_score").is_none()));
        }
    }
    let metrics = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    let count = |outcome: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("nexus_rerank_requests_total") && l.contains(&format!("outcome=\"{outcome}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    assert_eq!(count("failed"), Some(2.0), "{metrics}");
    assert_eq!(count("ok"), Some(1.0), "{metrics}");
}

#[test]
fn document_search_and_ask_are_reranked_and_paged() {
    let fake = FakeRerank::start();
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), Some(&fake));
    let notes = [
        ("Kiln", "The kiln in the studio fires pottery at 1200 degrees on Thursdays."),
        ("Glazes", "Pottery class glazes: the back room."),
        ("Parking", "Parking is free behind the studio after six."),
        ("Pottery class", "The pottery class meets on Tuesdays at seven in the studio."),
    ];
    for (title, text) in notes {
        let r = client()
            .post(server.url("/api/v1/documents/text"))
            .json(&json!({"text": text, "title": title, "collection": "studio",
                          "source": format!("{}.txt", title.to_lowercase().replace(' ', "-"))}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    }
    let query = "When does the pottery class meet?";
    let own = ok(&server, "/api/v1/search", json!({"query": query, "top_k": 4, "rerank": false}));
    assert!(own.get("reranked").is_none(), "{own}");
    let all = ok(&server, "/api/v1/search", json!({"query": query, "top_k": 4}));
    assert_eq!(all["reranked"], true, "{all}");
    let titles = |v: &Value| v["results"].as_array().unwrap().iter().map(|r| r["title"].clone()).collect::<Vec<_>>();
    let all_titles = titles(&all);
    let mut expected: Vec<(f64, &str)> =
        notes.iter().map(|(title, text)| (fake_rerank::score(query, &format!("{title}: {text}")), *title)).collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: Vec<Value> = expected.iter().map(|(_, t)| json!(t)).collect();
    assert_eq!(all_titles, expected, "{all}");
    assert_ne!(titles(&own), expected, "the test must tell the two orders apart");
    let documents = fake.calls.last_body()["documents"].clone();
    assert!(
        documents.as_array().unwrap().iter().any(|d| d == "Parking: Parking is free behind the studio after six."),
        "{documents}"
    );

    // A page further down is the same reranked list, cut where asked.
    let page = ok(&server, "/api/v1/search", json!({"query": query, "top_k": 2, "offset": 1}));
    assert_eq!(titles(&page), all_titles[1..3].to_vec());

    // Grounded answers cite the passages in the reranker's order.
    let answer = ok(&server, "/api/v1/ask", json!({"query": query, "top_k": 2}));
    assert_eq!(answer["citations"][0]["title"], expected[0], "{answer}");
}

#[test]
fn asking_for_a_reranker_when_none_is_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), None);
    add_turns(&server);
    for path in ["/api/v1/memories/search", "/api/v1/search"] {
        let (status, body) = post(&server, path, json!({"query": "pottery", "rerank": true}));
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("[rerank]"), "{body}");
    }
    // Left out, nothing is reranked and nothing says so.
    let found = ok(&server, "/api/v1/memories/search", json!({"query": "pottery", "user_id": "ann"}));
    assert!(found.get("reranked").is_none(), "{found}");
    // Mem0's clients may send `rerank`; without a reranker it is ignored, as Mem0 does.
    let mem0 =
        ok(&server, "/v2/memories/search/", json!({"query": "pottery", "filters": {"user_id": "ann"}, "rerank": true}));
    assert!(!mem0.as_array().unwrap().is_empty());
}
