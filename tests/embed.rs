//! Embeddings: the built-in model against sentence-transformers' reference vectors, the service
//! (batching, back-pressure, cache, long texts), the OpenAI-compatible client, and the embedder
//! identity of a data directory.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_openai::{FakeOpenAi, KEY, fake_vector};
use common::{Server, client, nexus, run};
use nexus::config::{EmbedConfig, EmbedProvider, OpenAiEmbedConfig};
use nexus::embed::builtin::{MAX_TOKENS, MiniLm, WEIGHTS_VERSION};
use nexus::embed::openai::OpenAiEmbedder;
use nexus::embed::{EmbedService, Embedder, mean_unit};
use nexus::error::ErrorCode;
use serde_json::{Value, json};
use sha2::Digest;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn reference() -> Vec<(String, Vec<f32>, usize)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/embeddings/reference.json"))
            .unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    fixture["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let vector = item["vector"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (item["text"].as_str().unwrap().to_string(), vector, item["tokens"].as_u64().unwrap() as usize)
        })
        .collect()
}

#[test]
fn builtin_model_matches_sentence_transformers() {
    let model = MiniLm::load().unwrap();
    let items = reference();
    assert!(items.len() >= 50);
    assert!(items.iter().any(|(_, _, tokens)| *tokens > MAX_TOKENS), "the fixture has inputs over 256 tokens");
    let texts: Vec<String> = items.iter().map(|(t, _, _)| t.clone()).collect();
    // One at a time, and all in one padded batch: both must match.
    let batched = model.embed_blocking(&texts).unwrap();
    let mut worst = 1.0f32;
    for ((text, expected, _), in_batch) in items.iter().zip(&batched) {
        let alone = model.embed_blocking(std::slice::from_ref(text)).unwrap().remove(0);
        assert_eq!(alone.len(), 384);
        for got in [&alone, in_batch] {
            let c = cosine(got, expected);
            worst = worst.min(c);
            assert!(c >= 0.999, "cosine {c} for {:?}", &text.chars().take(60).collect::<String>());
        }
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit vectors");
    }
    eprintln!("worst cosine to sentence-transformers: {worst:.6}");
}

#[test]
fn weights_version_is_the_shipped_file() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/all-minilm-l6-v2/model.f16.safetensors"))
            .unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(WEIGHTS_VERSION, format!("f16-{}", &digest[..12]));
}

fn embed_config(batch_size: usize, queue_capacity: usize) -> EmbedConfig {
    EmbedConfig { provider: EmbedProvider::Builtin, batch_size, queue_capacity, cache_entries: 1000, openai: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_are_embedded_in_pieces_never_truncated() {
    let model = Arc::new(MiniLm::load().unwrap());
    let service = EmbedService::start(model.clone(), &embed_config(32, 1024));
    let first = "Photosynthesis in plants converts light into chemical energy. ".repeat(40);
    let second = "The stock market fell sharply after the interest rate decision. ".repeat(40);
    let long = format!("{first}{second}");
    assert!(model.token_count(&long).unwrap() > 2 * MAX_TOKENS);
    let pieces = service.embed_chunks(&long).await.unwrap();
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    for (piece, _) in &pieces {
        assert!(model.token_count(piece).unwrap() <= MAX_TOKENS, "every piece fits the model");
    }
    let joined: String =
        pieces.iter().map(|(p, _)| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join(" ");
    assert_eq!(joined, long.split_whitespace().collect::<Vec<_>>().join(" "), "pieces cover the whole text");
    let whole = service.embed_one(&long).await.unwrap();
    let vectors: Vec<Vec<f32>> = pieces.iter().map(|(_, v)| v.clone()).collect();
    assert!(cosine(&whole, &mean_unit(&vectors)) > 0.9999, "a long text's vector averages its pieces");
    // The end of the text counts: a truncating embedder would ignore the market half entirely.
    let market = service.embed_one(&second).await.unwrap();
    let truncated = model.embed_blocking(std::slice::from_ref(&long)).unwrap().remove(0);
    assert!(cosine(&whole, &market) > cosine(&truncated, &market) + 0.05);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_batches_and_repeats_hit_the_cache() {
    let model = Arc::new(MiniLm::load().unwrap());
    let service = EmbedService::start(model.clone(), &embed_config(32, 1024));
    let texts: Vec<String> = (0..64).map(|i| format!("sentence number {i} about topic {}", i % 7)).collect();
    let tasks: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let service = service.clone();
            tokio::spawn(async move { service.embed_one(&t).await.unwrap() })
        })
        .collect();
    let mut vectors = Vec::new();
    for t in tasks {
        vectors.push(t.await.unwrap());
    }
    let stats = service.stats();
    assert_eq!(stats.texts, 64);
    assert!(stats.batches < 32, "64 concurrent callers ran in {} forward passes", stats.batches);
    // Each caller got its own text's vector.
    let direct = model.embed_blocking(&texts).unwrap();
    for (a, b) in vectors.iter().zip(&direct) {
        assert!(cosine(a, b) > 0.9999);
    }
    let again = service.embed_one(&texts[5]).await.unwrap();
    assert_eq!(again, vectors[5]);
    assert_eq!(service.stats().cache_hits, 1);
    assert_eq!(service.stats().texts, 64, "a repeat is not embedded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_overloaded() {
    let model = Arc::new(MiniLm::load().unwrap());
    let service = EmbedService::start(model, &embed_config(4, 8));
    let long = "a sentence long enough to keep the model busy for a while ".repeat(20);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let service = service.clone();
            let text = format!("{i} {long}");
            tokio::spawn(async move { service.embed_one(&text).await })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Overloaded);
                assert!(e.message.contains("embed.queue_capacity"), "{}", e.message);
                refused += 1;
            }
        }
    }
    assert!(ok >= 8 && refused > 0, "ok {ok}, refused {refused}");
    assert_eq!(service.queue_len(), 0, "every permit came back");
}

fn remote(url: &str, model: &str) -> OpenAiEmbedConfig {
    OpenAiEmbedConfig {
        url: url.to_string(),
        model: model.to_string(),
        dimensions: 384,
        api_key_env: Some("NEXUS_TEST_EMBED_KEY".into()),
        api_key_file: None,
        send_dimensions: false,
        timeout_secs: 1,
        max_retries: 2,
        max_input_chars: 50,
        concurrency: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_client_speaks_the_wire_format_and_fails_clearly() {
    let server = FakeOpenAi::start();
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("NEXUS_TEST_EMBED_KEY", KEY) };
    let ok = OpenAiEmbedder::new(&remote(&server.url(), "ok")).unwrap();
    let texts = vec!["first".to_string(), "second".to_string(), "third".to_string()];
    let vectors = ok.embed_batch(texts.clone()).await.unwrap();
    for (t, v) in texts.iter().zip(&vectors) {
        assert!(cosine(v, &fake_vector(t, 384)) > 0.99999, "answers are matched to inputs by index");
    }

    // 429 with Retry-After: waits as told, then succeeds.
    let limited = OpenAiEmbedder::new(&remote(&server.url(), "rate-limited-once")).unwrap();
    let started = Instant::now();
    limited.embed_batch(vec!["x".into()]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After honoured");

    let cases = [
        ("always-500", "gave up after 3 attempts"),
        ("slow", "no answer within 1 s"),
        ("wrong-dims", "100 dimensions"),
        ("bad-model", "check embed.openai.model"),
    ];
    for (model, needle) in cases {
        let embedder = OpenAiEmbedder::new(&remote(&server.url(), model)).unwrap();
        let err = embedder.embed_batch(vec!["x".into()]).await.err().unwrap();
        assert_eq!(err.code, ErrorCode::EmbedderUnavailable, "{model}");
        assert!(err.message.contains(needle), "{model}: {}", err.message);
    }

    // A wrong key is a clear, immediate failure (no retries).
    unsafe { std::env::set_var("NEXUS_TEST_EMBED_KEY_WRONG", "nope") };
    let mut config = remote(&server.url(), "ok");
    config.api_key_env = Some("NEXUS_TEST_EMBED_KEY_WRONG".into());
    let before = server.calls.requests.load(std::sync::atomic::Ordering::SeqCst);
    let err = OpenAiEmbedder::new(&config).unwrap().embed_batch(vec!["x".into()]).await.err().unwrap();
    assert!(err.message.contains("rejected the API key"), "{}", err.message);
    assert!(!err.message.contains("nope"), "the key is never shown");
    assert_eq!(server.calls.requests.load(std::sync::atomic::Ordering::SeqCst), before + 1);

    // An unset key variable is a configuration error.
    let mut config = remote(&server.url(), "ok");
    config.api_key_env = Some("NEXUS_TEST_EMBED_KEY_UNSET".into());
    let err = OpenAiEmbedder::new(&config).err().unwrap();
    assert_eq!(err.code, ErrorCode::ConfigInvalid);

    // Long texts are sent in pieces of at most max_input_chars and averaged.
    let service =
        EmbedService::start(Arc::new(OpenAiEmbedder::new(&remote(&server.url(), "ok")).unwrap()), &embed_config(8, 64));
    let long = "word ".repeat(30);
    let pieces = service.embed_chunks(&long).await.unwrap();
    assert!(pieces.len() >= 3 && pieces.iter().all(|(p, _)| p.len() <= 50));
}

fn openai_config(dir: &std::path::Path, url: &str, model: &str) -> std::path::PathBuf {
    let path = dir.join("remote.toml");
    std::fs::write(
        &path,
        format!(
            "[embed]\nprovider = \"openai\"\nbatch_size = 16\n[embed.openai]\nurl = \"{url}\"\nmodel = \"{model}\"\ndimensions = 384\napi_key_env = \"NEXUS_TEST_EMBED_KEY\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn changing_the_embedder_needs_a_resumable_reembed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let remote = FakeOpenAi::start();

    // Records embedded by the built-in model, plus one with a client vector (kept as is).
    let server = Server::start(&data);
    server.wait_ready();
    let c = client();
    let writes: Vec<Value> = (0..600)
        .map(|i| json!({"op": "upsert", "record": {"id": format!("r{i}"), "kind": "note", "body": format!("note {i} about subject {}", i % 13)}}))
        .collect();
    for chunk in writes.chunks(200) {
        let r = c.post(server.url("/api/v1/records/batch")).json(&json!({"writes": chunk})).send().unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text());
    }
    let mut own = vec![0.0f32; 384];
    own[0] = 1.0;
    c.post(server.url("/api/v1/records?wait=true"))
        .json(&json!({"id": "own", "kind": "note", "body": "client vector", "vector": own}))
        .send()
        .unwrap();
    let hit: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"similar_to": "note 7 about subject 7"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hit["hits"][0]["id"], "r7", "the built-in model's vectors serve semantic search");
    assert_eq!(server.stop().code(), Some(0));

    // Another embedder is refused until the vectors are re-embedded.
    let config = openai_config(tmp.path(), &remote.url(), "paced");
    let out = run(nexus(&data).arg("--config").arg(&config).env("NEXUS_TEST_EMBED_KEY", KEY).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nexus reindex --store vectors") && stderr.contains("builtin:all-minilm-l6-v2"),
        "{stderr}"
    );

    // Interrupt a re-embed after its first page, then resume it.
    let mut child = nexus(&data)
        .arg("--config")
        .arg(&config)
        .env("NEXUS_TEST_EMBED_KEY", KEY)
        .args(["reindex", "--store", "vectors"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = data.join("reembed.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["done_through"].as_u64());
        if done.is_some_and(|d| d > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "re-embed made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(nexus(&data).arg("--config").arg(&config).env("NEXUS_TEST_EMBED_KEY", KEY).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"), "an unfinished re-embed blocks serving");
    let out = run(nexus(&data)
        .arg("--config")
        .arg(&config)
        .env("NEXUS_TEST_EMBED_KEY", KEY)
        .args(["reindex", "--store", "vectors"]));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resumed after key"), "{stdout}");
    assert!(!progress.exists());

    // Now it serves, with the remote embedder's vectors.
    let server = Server::start_with(&data, |cmd| {
        cmd.arg("--config").arg(&config).env("NEXUS_TEST_EMBED_KEY", KEY);
    });
    server.wait_ready();
    let got: Value = c.get(server.url("/api/v1/records/r42?include_vector=true")).send().unwrap().json().unwrap();
    let v: Vec<f32> = got["vector"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(cosine(&v, &fake_vector("note 42 about subject 3", 384)) > 0.9999);
    let own: Value = c.get(server.url("/api/v1/records/own?include_vector=true")).send().unwrap().json().unwrap();
    assert_eq!(own["vector"][0], 1.0, "client vectors are not re-embedded");
    let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn embed_command_and_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = run(nexus(&data).args(["embed", "Nexus keeps what you tell it"]));
    assert!(out.status.success(), "{out:?}");
    let vector: Vec<f32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vector.len(), 384);
    assert!(!data.exists(), "embedding needs no data directory");

    let server = Server::start_with(&data, |cmd| {
        cmd.env("NEXUS__EMBED__BATCH_SIZE", "1").env("NEXUS__EMBED__QUEUE_CAPACITY", "1");
    });
    server.wait_ready();
    let c = client();
    let r: Value = c
        .post(server.url("/api/v1/embed"))
        .json(&json!({"texts": ["Nexus keeps what you tell it"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["embedder"]["model"], "all-minilm-l6-v2");
    let from_http: Vec<f32> = r["vectors"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(cosine(&from_http, &vector) > 0.99999);
    assert_eq!(c.post(server.url("/api/v1/embed")).json(&json!({"texts": []})).send().unwrap().status(), 400);

    // Back-pressure over HTTP: a queue of one text refuses concurrent callers with 503 + Retry-After.
    let long = "keep the model busy with a long sentence ".repeat(25);
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let url = server.url("/api/v1/embed");
            let text = format!("{i} {long}");
            std::thread::spawn(move || client().post(url).json(&json!({"texts": [text]})).send().unwrap())
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused: Vec<_> = responses.iter().filter(|r| r.status() == 503).collect();
    assert!(!refused.is_empty(), "some callers are refused");
    assert!(responses.iter().any(|r| r.status() == 200));
    for r in refused {
        assert_eq!(r.headers()["retry-after"], "1");
    }
}
