//! The entity graph over HTTP: entities, relations with valid and system time, walks in time,
//! entity search and the refusals.

use crate::common;

use common::{Server, client};
use reqwest::blocking::Client;
use serde_json::{Value, json};

struct Api<'a> {
    c: Client,
    server: &'a Server,
}

impl Api<'_> {
    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.c.post(self.server.url(path)).json(&body).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let response = self.c.get(self.server.url(path)).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn entity(&self, name: &str, kind: &str) -> String {
        let (status, body) = self.post("/api/v1/graph/entities", json!({"name": name, "type": kind}));
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    fn relate(&self, source: &str, kind: &str, target: &str, valid_at: &str) -> Value {
        let (status, body) = self.post(
            "/api/v1/graph/relations",
            json!({"source": source, "type": kind, "target": target, "valid_at": valid_at}),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
        body
    }

    /// The targets of `id`'s relations of `kind` in a neighbourhood view.
    fn targets(&self, id: &str, kind: &str, view: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/api/v1/graph/entities/{id}/neighbourhood?hops=1&{view}"));
        assert_eq!(status, 200, "{body}");
        let mut out: Vec<String> = body["relations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["source"] == id && r["type"] == kind)
            .map(|r| r["target"].as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[test]
fn contradicting_facts_close_each_other_in_valid_time_and_nothing_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    server.wait_ready();
    let api = Api { c: client(), server: &server };

    let ana = api.entity("Ana Lima", "person");
    let acme = api.entity("Acme", "organization");
    let globex = api.entity("Globex", "organization");

    let first = api.relate(&ana, "works for", &acme, "2020-01-01T00:00:00Z");
    assert_eq!(first["created"], true);
    assert_eq!(first["type"], "works_for", "types are normalised");
    assert_eq!(first["closed"], json!([]));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let knew_acme_only = now_text();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // A single-valued type: the new employer closes the old one where it begins.
    let second = api.relate(&ana, "works_for", &globex, "2023-01-01T00:00:00Z");
    let closed = second["closed"].as_array().unwrap();
    assert_eq!(closed.len(), 1, "{second}");
    assert_eq!(closed[0]["target"], acme.as_str());
    assert_eq!(closed[0]["valid_at"], "2020-01-01T00:00:00Z");
    assert_eq!(closed[0]["invalid_at"], "2023-01-01T00:00:00Z");
    assert_eq!(closed[0]["supersedes"], first["id"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let knew_globex = now_text();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Back to the first employer: a cycle of contradictions.
    let third = api.relate(&ana, "works_for", &acme, "2025-01-01T00:00:00Z");
    assert_eq!(third["created"], true, "an earlier, closed stint is not the same fact: {third}");
    assert_eq!(third["closed"][0]["target"], globex.as_str());
    assert_eq!(third["closed"][0]["invalid_at"], "2025-01-01T00:00:00Z");

    // Valid time: what was true when.
    assert_eq!(api.targets(&ana, "works_for", "as_of=2021-06-01T00:00:00Z"), vec![acme.clone()]);
    assert_eq!(api.targets(&ana, "works_for", "as_of=2024-06-01T00:00:00Z"), vec![globex.clone()]);
    assert_eq!(api.targets(&ana, "works_for", "as_of=2026-06-01T00:00:00Z"), vec![acme.clone()]);
    assert_eq!(api.targets(&ana, "works_for", "as_of=2019-06-01T00:00:00Z"), Vec::<String>::new());
    // A moment ahead: answered from the facts known to hold then.
    assert_eq!(api.targets(&ana, "works_for", "as_of=2099-01-01T00:00:00Z"), vec![acme.clone()]);

    // System time: what Nexus knew when.
    assert_eq!(
        api.targets(&ana, "works_for", &format!("as_of=2024-06-01T00:00:00Z&known_at={}", enc(&knew_acme_only))),
        vec![acme.clone()],
        "before it learned of Globex, Nexus held Ana at Acme in 2024"
    );
    assert_eq!(
        api.targets(&ana, "works_for", &format!("as_of=2026-06-01T00:00:00Z&known_at={}", enc(&knew_globex))),
        vec![globex.clone()]
    );
    let (_, then) =
        api.get(&format!("/api/v1/graph/entities/{ana}/neighbourhood?hops=1&known_at={}", enc(&knew_acme_only)));
    let then = then["relations"].as_array().unwrap();
    assert_eq!(then.len(), 1);
    assert_eq!(then[0]["id"], first["id"]);
    assert!(then[0]["invalid_at"].is_null(), "as known then, the first fact was open-ended");

    // Nothing was deleted: every version is a record, the replaced ones expired.
    let (_, records) = api.get("/api/v1/records?kind=relation&limit=100");
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "3 facts, 2 corrected versions: {records:?}");
    let expired = records.iter().filter(|r| r["metadata"]["expired_at"].is_string()).count();
    assert_eq!(expired, 2);

    // The same fact again is the known one.
    let again = api.relate(&ana, "works_for", &globex, "2023-01-01T00:00:00Z");
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["id"], third["closed"][0]["id"], "the current version of the Globex fact");

    // A fact that is not single-valued does not close others.
    let bo = api.entity("Bo Chen", "person");
    api.relate(&ana, "knows", &bo, "2021-01-01T00:00:00Z");
    let cy = api.entity("Cy", "person");
    let knows = api.relate(&ana, "knows", &cy, "2022-01-01T00:00:00Z");
    assert_eq!(knows["closed"], json!([]));
    let mut both = vec![bo.clone(), cy.clone()];
    both.sort();
    assert_eq!(api.targets(&ana, "knows", "as_of=2023-01-01T00:00:00Z"), both);
}

fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[test]
fn walks_paths_search_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    server.wait_ready();
    let api = Api { c: client(), server: &server };

    let ana = api.entity("Ana Lima", "person");
    let bo = api.entity("Bo Chen", "person");
    let globex = api.entity("Globex", "organization");
    let acme = api.entity("Acme", "organization");
    api.relate(&ana, "works_for", &acme, "2020-01-01T00:00:00Z");
    api.relate(&ana, "works_for", &globex, "2023-01-01T00:00:00Z");
    api.relate(&bo, "works_for", &globex, "2024-01-01T00:00:00Z");

    // Two hops: Ana - Globex - Bo, in 2024; in 2021 Ana was at Acme and Bo nowhere yet.
    let (status, hood) =
        api.get(&format!("/api/v1/graph/entities/{ana}/neighbourhood?hops=2&as_of=2024-06-01T00:00:00Z"));
    assert_eq!(status, 200, "{hood}");
    let reached: Vec<(&str, u64)> = hood["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(reached[0], (ana.as_str(), 0));
    assert!(reached.contains(&(globex.as_str(), 1)) && reached.contains(&(bo.as_str(), 2)), "{reached:?}");
    assert!(!reached.iter().any(|(id, _)| *id == acme), "Acme is not Ana's employer in 2024: {reached:?}");
    assert_eq!(hood["entities"][0]["entity"]["name"], "Ana Lima");

    let (_, path) = api.get(&format!("/api/v1/graph/path?from={ana}&to={bo}&as_of=2024-06-01T00:00:00Z"));
    assert_eq!(path["path"], json!([ana, globex, bo]), "{path}");
    assert_eq!(path["relations"].as_array().unwrap().len(), 2);
    let (_, path) = api.get(&format!("/api/v1/graph/path?from={ana}&to={bo}&as_of=2021-06-01T00:00:00Z"));
    assert!(path["path"].is_null(), "{path}");
    let (_, path) = api.get(&format!("/api/v1/graph/path?from={ana}&to={bo}"));
    assert_eq!(path["path"], json!([ana, globex, bo]), "{path}");

    // Entity search by name and by alias; adding the same entity merges.
    let (status, merged) =
        api.post("/api/v1/graph/entities", json!({"name": " ana  LIMA", "type": "Person", "aliases": ["Annie"]}));
    assert_eq!(status, 200, "the same entity: {merged}");
    assert_eq!(merged["id"], ana.as_str());
    assert_eq!(merged["aliases"], json!(["Annie"]));
    let (_, found) = api.get("/api/v1/graph/entities?query=Annie");
    assert_eq!(found["entities"][0]["id"], ana.as_str(), "{found}");
    let (_, found) = api.get("/api/v1/graph/entities?query=globex&type=organization");
    assert_eq!(found["entities"][0]["id"], globex.as_str(), "{found}");
    let (_, listed) = api.get("/api/v1/graph/entities?type=person&limit=1");
    assert_eq!(listed["entities"].as_array().unwrap().len(), 1);
    let after = listed["next_after"].as_str().unwrap().to_string();
    let (_, rest) = api.get(&format!("/api/v1/graph/entities?type=person&after={after}"));
    assert_eq!(rest["entities"].as_array().unwrap().len(), 1);

    // Refusals, each with its reason.
    let refusals = [
        (json!({"source": ana, "type": "knows", "target": ana}), 400, "same"),
        (json!({"source": ana, "type": "knows", "target": "ent_missing"}), 404, "not found"),
        (json!({"source": ana, "type": "--", "target": bo}), 400, "type"),
        (json!({"source": ana, "type": "knows", "target": bo, "confidence": 2}), 400, "confidence"),
        (
            json!({"source": ana, "type": "knows", "target": bo, "valid_at": "2024-01-01T00:00:00Z", "invalid_at": "2023-01-01T00:00:00Z"}),
            400,
            "invalid_at",
        ),
    ];
    for (body, status, says) in refusals {
        let (got, answer) = api.post("/api/v1/graph/relations", body.clone());
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    let (status, answer) = api.post("/api/v1/graph/entities", json!({"name": "", "type": "person"}));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) =
        api.get(&format!("/api/v1/graph/entities/{ana}/neighbourhood?known_at=2999-01-01T00:00:00Z"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("future"), "{answer}");
    let (status, _) = api.get(&format!("/api/v1/graph/entities/{ana}/neighbourhood?hops=11"));
    assert_eq!(status, 400);
    let (status, _) = api.get("/api/v1/graph/entities/ent_missing/neighbourhood");
    assert_eq!(status, 404);

    // A dense neighbourhood is bounded: a clear error past the limit, not a huge answer.
    let hub = api.entity("Hub", "project");
    for n in 0..30 {
        let spoke = api.entity(&format!("Spoke {n}"), "person");
        api.relate(&spoke, "member_of", &hub, "2024-01-01T00:00:00Z");
    }
    let (status, answer) = api.get(&format!("/api/v1/graph/entities/{hub}/neighbourhood?hops=10&limit=10"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("more than 10 entities"), "{answer}");
    let (status, answer) = api.get(&format!("/api/v1/graph/entities/{hub}/neighbourhood?hops=10&limit=100"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["entities"].as_array().unwrap().len(), 31);
}

/// A meeting's transcript feeds the entity graph when it ends (here, an imported one): the
/// participants as people, the relations the rules read, each citing its segment.
#[test]
fn an_ended_meeting_adds_its_entities_and_relations() {
    use reqwest::blocking::multipart::{Form, Part};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    server.wait_ready();
    let api = Api { c: client(), server: &server };
    // Globex is already an entity: the transcript's mention resolves to it.
    let globex = api.entity("Globex", "organization");

    let transcript = "Ana Lima: Welcome everyone.\n\
                      Bo Chen: Quick news, Priya Raman joined Globex in March 2024.\n\
                      Ana Lima: And Priya reports to Bo Chen from now on.\n\
                      Bo Chen: The launch checklist was assigned to Dana.\n";
    let form = Form::new()
        .text("title", "Staff sync")
        .part("file", Part::bytes(transcript.as_bytes().to_vec()).file_name("sync.txt"));
    let r = api.c.post(server.url("/api/v1/meetings/import?wait=true")).multipart(form).send().unwrap();
    let job: Value = r.json().unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let finished = &job["result"]["meetings"][0]["finished"];
    assert!(finished["graph"]["relations"].as_u64().unwrap() >= 2, "{finished}");

    let (_, found) = api.get("/api/v1/graph/entities?query=Priya%20Raman");
    let priya = found["entities"][0].clone();
    assert_eq!(priya["name"], "Priya Raman", "{found}");
    assert_eq!(priya["type"], "person");
    let priya = priya["id"].as_str().unwrap().to_string();
    let (_, hood) = api.get(&format!("/api/v1/graph/entities/{priya}/neighbourhood?hops=1"));
    let relations = hood["relations"].as_array().unwrap();
    let works = relations.iter().find(|r| r["type"] == "works_for").expect("works_for");
    assert_eq!(works["target"], globex.as_str(), "resolved to the known Globex: {hood}");
    assert_eq!(works["valid_at"], "2024-03-01T00:00:00Z");
    assert!(works["sources"][0].as_str().unwrap().contains(":seg:"), "{works}");
    assert!(relations.iter().any(|r| r["type"] == "reports_to"), "{hood}");
    for person in ["Ana Lima", "Dana"] {
        let (_, found) = api.get(&format!("/api/v1/graph/entities?type=person&query={}", person.replace(' ', "%20")));
        assert_eq!(found["entities"][0]["name"], person, "{found}");
    }
}

/// A document's entities and relations reach the graph in a background job after ingestion;
/// an unchanged document queues nothing, a new version is read again.
#[test]
fn a_document_adds_its_entities_and_relations() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    server.wait_ready();
    let api = Api { c: client(), server: &server };
    let text = "Org notes\n\nMarta Quinn works at Halvorsen Labs since 2021. \
                The audit was assigned to Marta Quinn. Marta reports to Oskar Brandt.";
    let doc = json!({"source": "notes/org.txt", "text": text, "author": "Oskar Brandt"});
    let (status, body) = api.post("/api/v1/documents/text", doc.clone());
    assert_eq!(status, 201, "{body}");
    let chunk_prefix = body["documents"][0]["document"]["id"].as_str().unwrap().to_string();

    // The job is queued after the answer: wait for it.
    let jobs = |state: &str| -> Vec<Value> {
        let (_, listed) = api.get(&format!("/api/v1/jobs?state={state}&limit=500"));
        listed["jobs"].as_array().unwrap().iter().filter(|j| j["kind"] == "document-entities").cloned().collect()
    };
    let mut done = Vec::new();
    for _ in 0..200 {
        done = jobs("succeeded");
        if !done.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(done.len(), 1, "one job for the new document: {done:?}");
    assert!(done[0]["result"]["relations"].as_u64().unwrap() >= 2, "{}", done[0]);

    let (_, found) = api.get("/api/v1/graph/entities?query=Marta%20Quinn");
    let marta = &found["entities"][0];
    assert_eq!((marta["name"].as_str(), marta["type"].as_str()), (Some("Marta Quinn"), Some("person")), "{found}");
    let marta = marta["id"].as_str().unwrap().to_string();
    let (_, found) = api.get("/api/v1/graph/entities?query=Halvorsen%20Labs");
    assert_eq!(found["entities"][0]["type"], "organization", "{found}");
    let labs = found["entities"][0]["id"].as_str().unwrap().to_string();
    let (_, hood) = api.get(&format!("/api/v1/graph/entities/{marta}/neighbourhood?hops=1"));
    let relations = hood["relations"].as_array().unwrap();
    let works = relations.iter().find(|r| r["type"] == "works_for").expect("works_for");
    assert_eq!(works["target"], labs.as_str(), "{hood}");
    assert_eq!(works["valid_at"], "2021-01-01T00:00:00Z");
    let source = works["sources"][0].as_str().unwrap();
    assert!(source.starts_with(&chunk_prefix) && source != chunk_prefix, "the chunk is the source: {works}");
    let boss = relations.iter().find(|r| r["type"] == "reports_to").expect("reports_to: 'Marta' is Marta Quinn");
    assert_eq!(boss["source"], marta.as_str(), "{hood}");

    // The same text again is unchanged: no second job.
    let (status, body) = api.post("/api/v1/documents/text", doc);
    assert_eq!((status, body["documents"][0]["outcome"].as_str()), (201, Some("unchanged")), "{body}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let all = jobs("succeeded").len() + jobs("queued").len() + jobs("running").len();
    assert_eq!(all, 1, "an unchanged document queues nothing");

    // A new version is read again; what the old one said stays known.
    let v2 = json!({"source": "notes/org.txt", "text": "Org notes\n\nMarta Quinn lives in Bergen."});
    let (status, _) = api.post("/api/v1/documents/text", v2);
    assert_eq!(status, 201);
    for _ in 0..200 {
        if jobs("succeeded").len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(jobs("succeeded").len(), 2);
    let (_, hood) = api.get(&format!("/api/v1/graph/entities/{marta}/neighbourhood?hops=1"));
    let types: Vec<&str> = hood["relations"].as_array().unwrap().iter().filter_map(|r| r["type"].as_str()).collect();
    assert!(types.contains(&"lives_in") && types.contains(&"works_for"), "{hood}");
}

/// With a model configured, documents are read by it in one structured call per batch: its
/// answer repaired when it can be, the rules used when it cannot.
#[test]
fn a_model_reads_entities_and_relations_and_the_rules_stand_in_when_it_fails() {
    let llm = common::fake_llm::ScriptedLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let config = llm.config(dir.path());
    let server = Server::start_with(&dir.path().join("data"), |cmd| {
        cmd.env("NEXUS_CONFIG", &config);
    });
    server.wait_ready();
    let api = Api { c: client(), server: &server };
    let succeeded = |n: usize| -> Vec<Value> {
        for _ in 0..300 {
            let (_, listed) = api.get("/api/v1/jobs?state=succeeded&limit=500");
            let done: Vec<Value> = listed["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["kind"] == "document-entities")
                .cloned()
                .collect();
            if done.len() >= n {
                return done;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the document-entities jobs did not finish");
    };

    // In a code fence with a trailing comma (repaired); "Bob" is an alias of Robert Smith.
    llm.script(&[
        "```json\n{\"entities\": [{\"name\": \"Robert Smith\", \"type\": \"person\", \"aliases\": [\"Bob\"]}, \
        {\"name\": \"Acme Robotics\", \"type\": \"organisation\"}, {\"name\": \"Oslo\", \"type\": \"place\"}], \
        \"relations\": [{\"source\": \"Robert Smith\", \"type\": \"works for\", \"target\": \"Acme Robotics\", \
        \"fact\": \"Robert Smith joined Acme Robotics in February 2020.\", \"text\": 1, \"valid_at\": \"2020-02-01\"}, \
        {\"source\": \"Bob\", \"type\": \"lives_in\", \"target\": \"Oslo\", \"text\": 1},]}\n```",
    ]);
    let text = "Robert Smith joined Acme Robotics in February 2020. These days Bob lives in Oslo.";
    let (status, _) = api.post("/api/v1/documents/text", json!({"source": "people.txt", "text": text}));
    assert_eq!(status, 201);
    let done = succeeded(1);
    assert_eq!(done[0]["result"]["relations"], 2, "{}", done[0]);
    let asked = llm.requests.lock().unwrap().last().unwrap().clone();
    assert!(asked["messages"][1]["content"].as_str().unwrap().contains("[1] Robert Smith joined"), "{asked}");

    let (_, found) = api.get("/api/v1/graph/entities?query=Robert%20Smith");
    let robert = found["entities"][0]["id"].as_str().unwrap().to_string();
    let (_, hood) = api.get(&format!("/api/v1/graph/entities/{robert}/neighbourhood?hops=1"));
    let relations = hood["relations"].as_array().unwrap();
    let works = relations.iter().find(|r| r["type"] == "works_for").expect("works_for");
    assert_eq!(works["valid_at"], "2020-02-01T00:00:00Z");
    assert_eq!(works["confidence"], 0.8, "{works}");
    assert_eq!(works["fact"], "Robert Smith joined Acme Robotics in February 2020.");
    let lives = relations.iter().find(|r| r["type"] == "lives_in").expect("the alias's relation is Robert's");
    assert_eq!(lives["source"], robert.as_str());
    let acme = hood["entities"].as_array().unwrap().iter().find(|e| e["entity"]["name"] == "Acme Robotics").cloned();
    assert_eq!(acme.expect("Acme Robotics")["entity"]["type"], "organization", "{hood}");

    // Two unreadable answers: the rules read the batch, and the job says so.
    llm.script(&["no JSON here", "still none"]);
    let text = "Mia Park works at Globex Inc since 2019.";
    let (status, _) = api.post("/api/v1/documents/text", json!({"source": "mia.txt", "text": text}));
    assert_eq!(status, 201);
    let done = succeeded(2);
    let mia = done.iter().find(|j| j["result"]["rule_batches"] == 1).expect("the rules read the batch");
    assert_eq!(mia["result"]["relations"], 1, "{mia}");
    let (_, found) = api.get("/api/v1/graph/entities?query=Mia%20Park");
    assert_eq!(found["entities"][0]["name"], "Mia Park", "{found}");
}

/// Analytics over HTTP: rankings and groups over the graph or a view of it, stored on request.
#[test]
fn analytics_rank_and_group_entities_in_a_view() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    server.wait_ready();
    let api = Api { c: client(), server: &server };
    // A team of four around Hub since 2024, and a pair apart.
    let hub = api.entity("Hub", "person");
    let team: Vec<String> = (0..4).map(|n| api.entity(&format!("Member {n}"), "person")).collect();
    for member in &team {
        api.relate(member, "reports_to", &hub, "2024-01-01T00:00:00Z");
    }
    let (x, y) = (api.entity("Xavier", "person"), api.entity("Yolanda", "person"));
    api.relate(&x, "knows", &y, "2020-01-01T00:00:00Z");

    let run = |body: Value| {
        let (status, answer) = api.post("/api/v1/graph/analytics", body.clone());
        assert_eq!(status, 200, "{body}: {answer}");
        answer
    };
    let degree = run(json!({"algorithm": "degree"}));
    assert_eq!(degree["entities"], 7);
    assert_eq!(degree["results"][0]["entity_id"], hub.as_str());
    assert!((degree["results"][0]["value"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9, "{degree}");
    let pagerank = run(json!({"algorithm": "pagerank"}));
    assert_eq!(pagerank["results"][0]["entity_id"], hub.as_str(), "reports point at the hub: {pagerank}");
    let sum: f64 = pagerank["results"].as_array().unwrap().iter().map(|r| r["value"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-6);

    let components = run(json!({"algorithm": "components"}));
    let number = |of: &str| {
        components["results"].as_array().unwrap().iter().find(|r| r["entity_id"] == of).unwrap()["value"].clone()
    };
    assert_eq!(number(&hub), json!(0.0), "the largest component is numbered 0");
    assert_eq!(number(&team[2]), json!(0.0));
    assert_eq!(number(&x), json!(1.0));
    assert_eq!(number(&y), json!(1.0));

    // In 2022 the team did not exist yet: the hub is alone.
    let before = run(json!({"algorithm": "degree", "filter": {"as_of": "2022-01-01T00:00:00Z"}}));
    let hub_then = before["results"].as_array().unwrap().iter().find(|r| r["entity_id"] == hub.as_str()).unwrap();
    assert_eq!(hub_then["value"], json!(0.0), "{before}");
    let only_knows = run(json!({"algorithm": "degree", "filter": {"types": ["knows"]}, "limit": 2}));
    assert_eq!(only_knows["results"].as_array().unwrap().len(), 2);
    assert!(
        only_knows["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["entity_id"] == x.as_str() || r["entity_id"] == y.as_str())
    );

    // Stored on request, as an attribute of each entity.
    run(json!({"algorithm": "communities", "store": true}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, entity) = api.get(&format!("/api/v1/graph/entities/{hub}"));
        if entity["attributes"]["communities"].is_number() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the community was not stored: {entity}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let (status, answer) = api.post("/api/v1/graph/analytics", json!({"algorithm": "eigenvalues"}));
    assert_eq!(status, 400);
    assert!(answer["error"]["message"].as_str().unwrap().contains("pagerank"), "{answer}");
}
