//! The API description and its page: `/docs` served from the binary (no network), public under
//! the server's strict Content-Security-Policy, and `/openapi.json` describing every route with a
//! summary, a description and examples.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Server, client};
use reqwest::blocking::Client;
use serde_json::Value;

const MASTER: &str = "docs-master-key-0123456789abcdef";

/// A server with keys on (the page must be readable without one).
fn keyed_server(data: &std::path::Path) -> Server {
    let server = Server::start_with(data, |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER)
            .env("NEXUS__LIMITS__PER_KEY_PER_SECOND", "0")
            .env("NEXUS__LIMITS__PER_ADDRESS_PER_SECOND", "0");
    });
    server.wait_ready();
    server
}

fn no_redirects() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `attr="..."` values of every tag `tag` in `html`.
fn attribute_values(html: &str, tag: &str, attr: &str) -> Vec<String> {
    html.split(&format!("<{tag}"))
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter_map(|inside| inside.split(&format!("{attr}=\"")).nth(1))
        .filter_map(|value| value.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_docs_page_is_served_from_the_binary_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyed_server(&dir.path().join("data"));
    let http = no_redirects();

    // The data routes need a key; the page does not.
    assert_eq!(http.get(server.url("/api/v1/status")).send().unwrap().status(), 401);
    let redirect = http.get(server.url("/docs")).send().unwrap();
    assert!(redirect.status().is_redirection(), "/docs answered {}", redirect.status());
    assert_eq!(redirect.headers()["location"], "/docs/");

    let page = http.get(server.url("/docs/")).send().unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"), "{headers:?}");
    let csp = headers["content-security-policy"].to_str().unwrap().to_string();
    for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"] {
        assert!(csp.contains(directive), "the page's CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = page.text().unwrap();

    // Nothing inline (the CSP would block it), nothing from elsewhere.
    let scripts = attribute_values(&html, "script", "src");
    assert!(scripts.len() >= 2, "{html}");
    assert_eq!(html.matches("<script").count(), scripts.len(), "an inline script: {html}");
    assert!(!html.contains("style=") && !html.contains("<style"), "an inline style: {html}");
    let links = attribute_values(&html, "link", "href");
    for asset in scripts.iter().chain(&links) {
        assert!(!asset.contains("://") && !asset.starts_with("//"), "{asset} is not on this server");
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        let response = http.get(server.url(&path)).send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let kind = response.headers()["content-type"].to_str().unwrap().to_string();
        let expected = match path.rsplit('.').next() {
            Some("js") => "javascript",
            Some("css") => "text/css",
            Some("png") => "image/png",
            _ => "",
        };
        assert!(kind.contains(expected), "{path} served as {kind}");
        assert!(response.headers().contains_key("content-security-policy"), "{path}");
        assert!(!response.bytes().unwrap().is_empty(), "{path}");
    }
    assert!(scripts.iter().any(|s| s.ends_with("swagger-ui-bundle.js")), "{scripts:?}");

    // The page reads this server's description, and asks no validator elsewhere.
    let init = http.get(server.url("/docs/swagger-initializer.js")).send().unwrap().text().unwrap();
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(!init.contains("petstore") && !init.contains("https://"), "{init}");

    // Other files under /docs are an API-style 404, and the page is not writable.
    let missing = http.get(server.url("/docs/nothing-here.js")).send().unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().unwrap();
    assert_eq!(body["error"]["code"], "route_not_found", "{body}");
    assert_ne!(http.post(server.url("/docs/")).send().unwrap().status(), 200);
}

/// Every operation of the description: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                out.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    out
}

/// `schema` with a `$ref` resolved against the description's components.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}

fn has_example(doc: &Value, media: &Value) -> bool {
    media.get("example").is_some()
        || media["examples"].as_object().is_some_and(|e| !e.is_empty())
        || resolve(doc, &media["schema"]).get("example").is_some()
        || resolve(doc, &media["schema"])["examples"].as_array().is_some_and(|e| !e.is_empty())
}

/// The handlers registered with `routes!` in the router's source: every API route.
fn registered_handlers() -> usize {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs")).unwrap();
    source
        .split("routes!(")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap().split(',').filter(|h| !h.trim().is_empty()).count())
        .sum()
}

#[test]
fn every_route_is_described_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyed_server(&dir.path().join("data"));
    let http = client();
    let doc: Value = http.get(server.url("/openapi.json")).send().unwrap().json().unwrap();
    let operations = operations(&doc);

    // Every route the router registers is in the description, and every described route is one
    // the router answers (not `route_not_found` / `method_not_allowed`).
    assert_eq!(operations.len(), registered_handlers(), "operations in /openapi.json vs handlers in routes!");
    for (method, path, _) in &operations {
        let concrete = path.replace('{', "x").replace('}', "");
        let request = http
            .request(method.parse().unwrap(), server.url(&concrete))
            .bearer_auth(MASTER)
            .header("content-type", "application/json")
            .body("{\"docs_walk\": 1}");
        let response = request.send().unwrap();
        let status = response.status();
        let code = response
            .json::<Value>()
            .ok()
            .and_then(|b| b["error"]["code"].as_str().or(b["code"].as_str()).map(str::to_string));
        assert!(
            !matches!(code.as_deref(), Some("route_not_found" | "method_not_allowed")),
            "{method} {path} is described but not routed ({status} {code:?})"
        );
    }

    // The key goes in through Authorize: the schemes are declared and every keyed route uses them.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http", "{schemes}");
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["api_key"]["in"], "header", "{schemes}");

    let mut problems = Vec::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (method, path, op) in &operations {
        let at = format!("{method} {path}");
        *ids.entry(op["operationId"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        for field in ["summary", "description"] {
            if op[field].as_str().is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{at}: no {field}"));
            }
        }
        if op["tags"].as_array().is_none_or(|t| t.is_empty()) {
            problems.push(format!("{at}: no tag"));
        }
        if let Some(content) = op["requestBody"]["content"].as_object() {
            for (media_type, media) in content {
                if !has_example(&doc, media) {
                    problems.push(format!("{at}: the {media_type} request body has no example"));
                }
            }
        }
        for parameter in op["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap_or_default();
            let documented = parameter.get("example").is_some()
                || parameter["examples"].as_object().is_some_and(|e| !e.is_empty())
                || resolve(&doc, &parameter["schema"]).get("example").is_some();
            if !documented {
                problems.push(format!("{at}: parameter `{name}` has no example"));
            }
            if parameter["description"].as_str().is_none_or(|d| d.trim().is_empty()) {
                problems.push(format!("{at}: parameter `{name}` has no description"));
            }
        }
    }
    // Every schema a route refers to is in the description.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        if doc["components"]["schemas"].get(name).is_none() {
            problems.push(format!("`#/components/schemas/{name}` is referred to but not described"));
        }
    }
    problems.sort();
    problems.dedup();
    let duplicated: BTreeSet<&String> = ids.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(duplicated.is_empty(), "operation ids used more than once: {duplicated:?}");
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

/// The example of a parameter or body: its own, else its schema's.
fn example_of(doc: &Value, holder: &Value) -> Option<Value> {
    holder.get("example").cloned().or_else(|| resolve(doc, &holder["schema"]).get("example").cloned())
}

#[test]
fn every_example_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyed_server(&dir.path().join("data"));
    let http = client();
    let doc: Value = http.get(server.url("/openapi.json")).send().unwrap().json().unwrap();
    let mut operations = operations(&doc);
    // Writes first, so that reads and deletes find something; deletes last.
    operations.sort_by_key(|(method, _, _)| match method.as_str() {
        "POST" | "PUT" => 0,
        "GET" => 1,
        _ => 2,
    });
    let mut refused = Vec::new();
    for (method, path, op) in &operations {
        let mut url = path.clone();
        let mut query = Vec::new();
        for parameter in op["parameters"].as_array().into_iter().flatten() {
            let value = match example_of(&doc, parameter) {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => continue,
            };
            match parameter["in"].as_str() {
                Some("path") => url = url.replace(&format!("{{{}}}", parameter["name"].as_str().unwrap()), &value),
                Some("query") => query.push((parameter["name"].as_str().unwrap().to_string(), value)),
                _ => {}
            }
        }
        let mut request = http.request(method.parse().unwrap(), server.url(&url)).query(&query).bearer_auth(MASTER);
        let content = &op["requestBody"]["content"];
        if let Some(media) = content.get("application/json") {
            request = request.json(&example_of(&doc, media).unwrap());
        } else if let Some(media) = content.get("application/octet-stream") {
            request = request.body(example_of(&doc, media).unwrap().as_str().unwrap().to_string());
        } else if content.get("multipart/form-data").is_some() {
            use reqwest::blocking::multipart::{Form, Part};
            // The fields the example names, with a file of the kind the route takes.
            let form = if path.starts_with("/api/v1/meetings") {
                Form::new().text("title", "Stand-up").part(
                    "file",
                    Part::text("Dana: We ship on Friday.\nLee: I will write the notes.\n").file_name("standup.txt"),
                )
            } else {
                Form::new()
                    .text("collection", "handbook")
                    .part("file", Part::text("Paid leave: 25 days.").file_name("leave.txt"))
            };
            request = request.multipart(form);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().or(body["code"].as_str()).unwrap_or_default().to_string();
        // An example id may name nothing yet (404); anything else must be taken as it is.
        let documented = op["responses"].get(status.to_string()).is_some() || op["responses"].get("default").is_some();
        if !(status < 400 || code == "not_found") || !documented {
            refused.push(format!("{method} {url}: {status} {body}"));
        }
    }
    assert!(refused.is_empty(), "examples refused:\n{}", refused.join("\n"));
}
