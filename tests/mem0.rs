//! The Mem0 wire contract against a real server: each generation's routes and response shapes,
//! events, pagination, the filter grammar, errors as `{detail, code}`, and bad input. The official
//! Python clients themselves are driven by `tests/mem0/clients.py` (`.ci/mem0.sh`).

use crate::common;

use common::{Server, client};
use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};

struct Api {
    c: Client,
    base: String,
    key: Option<String>,
}

impl Api {
    fn new(server: &Server, key: Option<&str>) -> Api {
        Api { c: client(), base: server.url(""), key: key.map(str::to_string) }
    }

    fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.c.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.header("Authorization", format!("Token {k}"));
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let response = r.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method.clone(), path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    /// A request that must fail with `status` and Mem0's error body (with Nexus's code).
    fn fails(&self, status: u16, method: Method, path: &str, body: Option<Value>) -> Value {
        let (got, v) = self.send(method.clone(), path, body);
        assert_eq!(got, status, "{method} {path}: {v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{method} {path}: no detail in {v}");
        assert!(v["code"].as_str().is_some_and(|c| !c.is_empty()), "{method} {path}: no code in {v}");
        assert!(v.get("error").is_none(), "{method} {path}: Nexus's own error shape leaked: {v}");
        v
    }

    fn add(&self, user: &str, text: &str, extra: Value) -> String {
        let mut body = json!({"messages": [{"role": "user", "content": text}], "user_id": user, "infer": false});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let v = self.ok(Method::POST, "/v1/memories/", Some(body));
        v["results"][0]["id"].as_str().expect("an added memory").to_string()
    }

    fn event(&self, id: &str) -> Value {
        for _ in 0..300 {
            let v = self.ok(Method::GET, &format!("/v1/event/{id}/"), None);
            if v["status"] == "SUCCEEDED" || v["status"] == "FAILED" {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("event {id} did not finish");
    }
}

fn open_server() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    (tmp, server)
}

fn ids(list: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        list.as_array().expect("a list").iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

#[test]
fn ping_names_the_keys_org_and_project_and_errors_carry_detail_and_code() {
    const MASTER: &str = "test-master-key-0123456789abcdef";
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER);
    });
    server.wait_ready();
    let master = Api::new(&server, Some(MASTER));
    master.send(Method::POST, "/api/v1/orgs", Some(json!({"id": "acme"})));
    let (status, _) = master.send(Method::POST, "/api/v1/projects", Some(json!({"id": "shop", "org_id": "acme"})));
    assert_eq!(status, 201);
    let (_, created) = master.send(
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "mem0", "project": "shop", "scopes": ["read", "write"]})),
    );
    let key = created["key"].as_str().unwrap();

    let ping = Api::new(&server, Some(key)).ok(Method::GET, "/v1/ping/", None);
    assert_eq!(ping, json!({"status": "ok", "org_id": "acme", "project_id": "shop", "user_email": null}));
    let v = Api::new(&server, Some("nx_wrong")).fails(401, Method::GET, "/v1/ping/", None);
    assert_eq!(v["code"], "unauthorized");
    Api::new(&server, None).fails(401, Method::GET, "/v1/memories/", None);
    let v = Api::new(&server, Some(key)).fails(404, Method::GET, "/v1/no-such-route/", None);
    assert_eq!(v["code"], "route_not_found");
    // Nexus's own routes keep Nexus's error shape.
    let (status, v) = Api::new(&server, Some("nx_wrong")).send(Method::GET, "/api/v1/memories", None);
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")));
}

#[test]
fn adds_answer_in_each_generations_shape_and_events_complete() {
    let (_tmp, server) = open_server();
    let api = Api::new(&server, None);
    let msg = |t: &str| json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": t}]);

    // v1, synchronous: v1.1 results (system messages are not memories).
    let v = api.ok(
        Method::POST,
        "/v1/memories/",
        Some(json!({"messages": msg("I drink green tea"), "user_id": "u",
        "infer": false, "output_format": "v1.1", "version": "v2", "org_id": "ignored", "project_id": "ignored"})),
    );
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        (v["results"][0]["memory"].as_str(), v["results"][0]["event"].as_str()),
        (Some("I drink green tea"), Some("ADD"))
    );
    assert!(v["relations"].is_array(), "{v}");
    let tea = v["results"][0]["id"].as_str().unwrap().to_string();
    // v1.0: the bare list; a repeat is merged (NONE, same id).
    let v = api.ok(
        Method::POST,
        "/v1/memories/",
        Some(json!({"messages": msg("I drink green tea"), "user_id": "u",
        "infer": false, "output_format": "v1.0"})),
    );
    assert_eq!((v[0]["event"].as_str(), v[0]["id"].as_str()), (Some("NONE"), Some(tea.as_str())), "{v}");

    // v1, asynchronous (1.0.x's default): queued, then the event holds the results.
    let v = api.ok(
        Method::POST,
        "/v1/memories/",
        Some(json!({"messages": msg("I cycle to work"), "user_id": "u",
        "infer": false, "async_mode": true})),
    );
    let queued = &v["results"][0];
    assert_eq!(queued["status"], "PENDING");
    assert!(queued["message"].as_str().unwrap().contains("queued"));
    let event = api.event(queued["event_id"].as_str().unwrap());
    assert_eq!(
        (event["status"].as_str(), event["results"][0]["memory"].as_str()),
        (Some("SUCCEEDED"), Some("I cycle to work"))
    );

    // v3 (2.x): infer=false answers the results and an event that has already succeeded.
    let v = api.ok(
        Method::POST,
        "/v3/memories/add/",
        Some(json!({"messages": msg("I live in Lyon"),
        "filters": {"user_id": "u"}, "infer": false})),
    );
    assert_eq!(v["status"], "SUCCEEDED");
    assert_eq!(v["results"][0]["memory"], "I live in Lyon");
    let event = api.event(v["event_id"].as_str().unwrap());
    assert_eq!(event["results"][0]["id"], v["results"][0]["id"]);
    // v3 with inference: queued; no LLM, so the deterministic extractor yields the fact.
    let v = api.ok(
        Method::POST,
        "/v3/memories/add/",
        Some(json!({"messages": msg("I am allergic to peanuts."),
        "filters": {"user_id": "u"}})),
    );
    assert_eq!((v["status"].as_str(), v.get("results")), (Some("PENDING"), None));
    let event = api.event(v["event_id"].as_str().unwrap());
    assert_eq!(event["status"], "SUCCEEDED");
    assert!(event["results"][0]["memory"].as_str().unwrap().contains("peanuts"), "{event}");
    api.fails(404, Method::GET, "/v1/event/not-an-event/", None);

    let m = api.ok(Method::GET, &format!("/v1/memories/{tea}/"), None);
    for field in [
        "id",
        "memory",
        "user_id",
        "agent_id",
        "app_id",
        "run_id",
        "metadata",
        "categories",
        "created_at",
        "updated_at",
        "expiration_date",
    ] {
        assert!(m.get(field).is_some(), "memory lacks {field}: {m}");
    }
    assert_eq!((m["user_id"].as_str(), m["metadata"]["role"].as_str()), (Some("u"), Some("user")));
    assert!(m["created_at"].as_str().unwrap().ends_with("+00:00"), "an offset, as Mem0 writes times: {m}");
}

#[test]
fn lists_and_searches_answer_lists_or_pages_by_version() {
    let (_tmp, server) = open_server();
    let api = Api::new(&server, None);
    let a = api.add("ann", "Ann plays chess on Sundays", json!({}));
    let b = api.add("ann", "Ann is vegetarian", json!({}));
    let c = api.add("ann", "Ann works as a pilot", json!({}));
    api.add("ben", "Ben plays chess too", json!({}));
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort();

    assert_eq!(ids(&api.ok(Method::GET, "/v1/memories/?user_id=ann&org_id=o&project_id=p", None)), all);
    assert_eq!(ids(&api.ok(Method::POST, "/v2/memories/", Some(json!({"filters": {"user_id": "ann"}})))), all);
    assert_eq!(
        ids(&api.ok(Method::POST, "/v2/memories/", Some(json!({"user_id": "ann"})))),
        all,
        "v2 takes top-level ids"
    );
    let p1 = api.ok(Method::GET, "/v1/memories/?user_id=ann&page=1&page_size=2", None);
    assert_eq!((p1["count"].as_u64(), p1["results"].as_array().unwrap().len()), (Some(3), 2));
    assert!(p1["next"].as_str().unwrap().contains("page=2") && p1["previous"].is_null(), "{p1}");
    let p2 = api.ok(Method::POST, "/v3/memories/?page=2&page_size=2", Some(json!({"filters": {"user_id": "ann"}})));
    assert_eq!((p2["count"].as_u64(), p2["results"].as_array().unwrap().len()), (Some(3), 1));
    assert!(p2["next"].is_null() && p2["previous"].as_str().unwrap().contains("page=1"), "{p2}");
    let mut paged: Vec<String> = ids(&p1["results"]);
    paged.extend(ids(&p2["results"]));
    paged.sort();
    assert_eq!(paged, all, "pages cover every memory once");

    let v3 =
        api.ok(Method::POST, "/v3/memories/search/", Some(json!({"query": "chess", "filters": {"user_id": "ann"}})));
    let results = v3["results"].as_array().unwrap();
    assert_eq!(results[0]["id"].as_str(), Some(a.as_str()), "{v3}");
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)) && scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(results.iter().all(|r| r["user_id"] == "ann"), "the filter keeps ben out: {v3}");
    assert!(v3["relations"].is_array());
    let v2 = api.ok(
        Method::POST,
        "/v2/memories/search/",
        Some(json!({"query": "chess", "filters": {"user_id": "ann"}, "top_k": 1})),
    );
    assert_eq!(ids(&v2), vec![a.clone()], "v2: a bare list, top_k respected");
    let v1 = api.ok(Method::POST, "/v1/memories/search/", Some(json!({"query": "chess", "user_id": "ben"})));
    assert_eq!(v1.as_array().unwrap().len(), 1);
    let v11 = api.ok(
        Method::POST,
        "/v1/memories/search/",
        Some(json!({"query": "chess", "user_id": "ben", "output_format": "v1.1"})),
    );
    assert_eq!(v11["results"].as_array().unwrap().len(), 1);

    // v3 wants ids inside filters; an empty query is refused on every version.
    api.fails(400, Method::POST, "/v3/memories/search/", Some(json!({"query": "chess", "user_id": "ann"})));
    api.fails(400, Method::POST, "/v3/memories/", Some(json!({"user_id": "ann"})));
    for path in ["/v1/memories/search/", "/v2/memories/search/", "/v3/memories/search/"] {
        api.fails(400, Method::POST, path, Some(json!({"query": "  ", "filters": {"user_id": "ann"}})));
    }
    api.fails(400, Method::POST, "/v3/memories/search/", Some(json!({"query": "x", "top_k": 1001})));
    api.fails(400, Method::POST, "/v3/memories/?page=0", Some(json!({})));
}

#[test]
fn the_filter_grammar_excludes_and_bad_filters_are_400() {
    let (_tmp, server) = open_server();
    let api = Api::new(&server, None);
    let tea = api.add("cy", "Cy likes tea", json!({"metadata": {"drink": "tea"}, "categories": ["food"]}));
    let ski = api.add("cy", "Cy goes skiing", json!({"metadata": {"sport": "ski"}, "agent_id": "coach"}));
    let dee = api.add("dee", "Dee likes coffee", json!({"metadata": {"drink": "coffee"}}));
    let list = |filters: Value| {
        let v = api.ok(Method::POST, "/v3/memories/", Some(json!({"filters": filters})));
        ids(&v["results"])
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(list(json!({"AND": [{"user_id": "cy"}, {"metadata": {"drink": "tea"}}]})), vec![tea.clone()]);
    assert_eq!(
        list(json!({"OR": [{"user_id": "dee"}, {"agent_id": "coach"}]})),
        sorted(vec![ski.clone(), dee.clone()])
    );
    assert_eq!(list(json!({"AND": [{"user_id": "cy"}, {"NOT": {"agent_id": "*"}}]})), vec![tea.clone()]);
    assert_eq!(list(json!({"user_id": {"in": ["cy", "dee"]}, "categories": {"contains": "food"}})), vec![tea.clone()]);
    assert_eq!(list(json!({"user_id": {"ne": "cy"}})), vec![dee.clone()]);
    assert_eq!(list(json!({"user_id": "cy", "created_at": {"lte": "2001-01-01"}})), Vec::<String>::new());
    assert_eq!(list(json!({"user_id": "cy", "created_at": {"gte": "2001-01-01"}})).len(), 2);

    let v = api.fails(400, Method::POST, "/v3/memories/", Some(json!({"filters": {"colour": "red"}})));
    assert!(v["detail"].as_str().unwrap().contains("colour"), "{v}");
    api.fails(
        400,
        Method::POST,
        "/v2/memories/search/",
        Some(json!({"query": "x", "filters": {"AND": {"user_id": "cy"}}})),
    );
    api.fails(400, Method::POST, "/v2/memories/", Some(json!({"filters": "user_id=cy"})));

    // delete_all: by id, or by filters in the query string (JSON, or the Python literal 2.x sends).
    api.fails(400, Method::DELETE, "/v1/memories/", None);
    let v = api.ok(Method::DELETE, "/v1/memories/?filters=%7B%27user_id%27%3A+%27dee%27%7D", None);
    assert_eq!(v["deleted"], 1, "{v}");
    api.fails(404, Method::GET, &format!("/v1/memories/{dee}/"), None);
    let v = api.ok(Method::DELETE, "/v1/memories/?user_id=cy&org_id=o&project_id=p", None);
    assert_eq!((v["message"].as_str(), v["deleted"].as_u64()), (Some("Memories deleted successfully!"), Some(2)));
}

#[test]
fn update_history_batches_entities_and_feedback() {
    let (_tmp, server) = open_server();
    let api = Api::new(&server, None);
    let a = api.add("eve", "Eve owns a red bicycle", json!({}));
    let b = api.add("eve", "Eve reads science fiction", json!({"agent_id": "librarian"}));

    let v = api.ok(Method::PUT, &format!("/v1/memories/{a}/"), Some(json!({"text": "Eve owns a blue bicycle"})));
    assert_eq!((v["id"].as_str(), v["memory"].as_str()), (Some(a.as_str()), Some("Eve owns a blue bicycle")));
    api.ok(Method::PUT, &format!("/v1/memories/{a}/"), Some(json!({"expiration_date": "2001-01-01"})));
    assert_eq!(ids(&api.ok(Method::GET, "/v1/memories/?user_id=eve", None)), vec![b.clone()], "expired: hidden");
    assert_eq!(api.ok(Method::GET, &format!("/v1/memories/{a}/"), None)["expiration_date"], "2001-01-01");
    api.ok(Method::PUT, &format!("/v1/memories/{a}/"), Some(json!({"expiration_date": null})));
    assert_eq!(ids(&api.ok(Method::GET, "/v1/memories/?user_id=eve", None)).len(), 2, "null clears it");
    api.fails(400, Method::PUT, &format!("/v1/memories/{a}/"), Some(json!({})));
    api.fails(404, Method::PUT, "/v1/memories/nope/", Some(json!({"text": "x"})));

    let h = api.ok(Method::GET, &format!("/v1/memories/{a}/history/"), None);
    let events: Vec<&str> = h.as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["ADD", "UPDATE", "UPDATE", "UPDATE"], "{h}");
    assert_eq!(
        (h[1]["old_memory"].as_str(), h[1]["new_memory"].as_str()),
        (Some("Eve owns a red bicycle"), Some("Eve owns a blue bicycle"))
    );
    assert_eq!(h[0]["input"][0]["content"], "Eve owns a red bicycle", "an add's input is its messages: {h}");

    // Batches: all or nothing when an id is unknown; 1-1000 items.
    let unknown =
        json!({"memories": [{"memory_id": a, "text": "must not be written"}, {"memory_id": "nope", "text": "x"}]});
    api.fails(404, Method::PUT, "/v1/batch/", Some(unknown));
    assert_eq!(api.ok(Method::GET, &format!("/v1/memories/{a}/"), None)["memory"], "Eve owns a blue bicycle");
    let many: Vec<Value> = (0..1001).map(|_| json!({"memory_id": a, "text": "x"})).collect();
    api.fails(400, Method::PUT, "/v1/batch/", Some(json!({"memories": many})));
    api.fails(400, Method::PUT, "/v1/batch/", Some(json!({"memories": []})));
    let v = api.ok(Method::PUT, "/v1/batch/", Some(json!({"memories": [{"memory_id": b, "metadata": {"shelf": 3}}]})));
    assert_eq!(v["message"], "Successfully updated 1 memories");
    assert_eq!(api.ok(Method::GET, &format!("/v1/memories/{b}/"), None)["metadata"], json!({"shelf": 3}));

    // Feedback.
    let v = api.ok(
        Method::POST,
        "/v1/feedback/",
        Some(json!({"memory_id": b, "feedback": "positive", "feedback_reason": "ok"})),
    );
    assert_eq!((v["feedback"].as_str(), v["memory_id"].as_str()), (Some("POSITIVE"), Some(b.as_str())));
    api.fails(400, Method::POST, "/v1/feedback/", Some(json!({"memory_id": b, "feedback": "MEH"})));
    api.fails(404, Method::POST, "/v1/feedback/", Some(json!({"memory_id": "nope", "feedback": "NEGATIVE"})));

    // Entities: who has memories; deleting one deletes its memories.
    let e = api.ok(Method::GET, "/v1/entities/", None);
    let names: Vec<(String, String, u64)> = e["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["type"].as_str().unwrap().into(),
                x["name"].as_str().unwrap().into(),
                x["total_memories"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, vec![("user".into(), "eve".into(), 2), ("agent".into(), "librarian".into(), 1)]);
    assert_eq!(e["count"], 2);
    api.fails(400, Method::DELETE, "/v2/entities/planet/mars/", None);
    api.fails(404, Method::DELETE, "/v2/entities/user/nobody/", None);
    api.ok(Method::DELETE, "/v2/entities/agent/librarian/", None);
    api.fails(404, Method::GET, &format!("/v1/memories/{b}/"), None);

    let v = api.ok(Method::DELETE, "/v1/batch/", Some(json!({"memories": [{"memory_id": a}]})));
    assert_eq!(v["message"], "Successfully deleted 1 memories");
    assert_eq!(api.ok(Method::GET, "/v1/entities/", None)["results"], json!([]));
    let h = api.ok(Method::GET, &format!("/v1/memories/{a}/history/"), None);
    assert_eq!(h.as_array().unwrap().last().unwrap()["event"], "DELETE");
    api.fails(404, Method::DELETE, &format!("/v1/memories/{a}/"), None);
}

#[test]
fn bad_adds_are_refused_and_write_nothing() {
    let (_tmp, server) = open_server();
    let api = Api::new(&server, None);
    api.add("fay", "Fay sings in a choir", json!({}));
    for path in ["/v1/memories/", "/v3/memories/add/"] {
        let huge = "x".repeat(2 * 1024 * 1024);
        let v = api.fails(
            413,
            Method::POST,
            path,
            Some(json!({"messages": [{"role": "user", "content": huge}], "user_id": "fay", "infer": false})),
        );
        assert_eq!(v["code"], "payload_too_large");
        api.fails(
            400,
            Method::POST,
            path,
            Some(json!({"messages": [{"role": "user", "content": "no scope"}], "infer": false})),
        );
        api.fails(400, Method::POST, path, Some(json!({"messages": "not a list", "user_id": "fay"})));
        api.fails(400, Method::POST, path, Some(json!({"messages": [], "user_id": "fay"})));
        api.fails(
            400,
            Method::POST,
            path,
            Some(json!({"messages": [{"role": "user", "content": "x"}], "filters": {"colour": "red"}})),
        );
        let (status, v) = {
            let r = api
                .c
                .post(format!("{}{path}", api.base))
                .header("Content-Type", "application/json")
                .body("{oops")
                .send()
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().unwrap())
        };
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_json")), "{v}");
    }
    assert_eq!(api.ok(Method::GET, "/v1/memories/?user_id=fay", None).as_array().unwrap().len(), 1, "nothing written");
    assert_eq!(api.ok(Method::GET, "/v1/entities/", None)["count"], 1);
}
