//! `nexus ingest`: walk files (globs, stable order), skip unchanged ones, show progress; through
//! the running server when one holds the data directory, else on the data directory directly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::server::server_base;
use crate::app::App;
use crate::config::Config;
use crate::datadir::{DataDir, Holder};
use crate::error::{Error, ErrorCode, Result};
use crate::knowledge::documents::{DEFAULT_COLLECTION, DocumentMeta};
use crate::store::TenantId;

pub(super) struct IngestArgs {
    pub paths: Vec<PathBuf>,
    pub collection: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub tags: Vec<String>,
}

fn globs(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| Error::config(format!("bad glob {p:?}: {e}")))?);
    }
    Ok(Some(builder.build().map_err(|e| Error::config(format!("bad globs: {e}")))?))
}

/// Files under `paths`, in a stable order, filtered by globs on the file name or path.
fn files(args: &IngestArgs) -> Result<Vec<PathBuf>> {
    let include = globs(&args.include)?;
    let exclude = globs(&args.exclude)?;
    let matches = |set: &GlobSet, p: &Path| set.is_match(p) || p.file_name().is_some_and(|n| set.is_match(n));
    let mut out = Vec::new();
    for root in &args.paths {
        if !root.exists() {
            return Err(Error::new(ErrorCode::NotFound, format!("{} does not exist", root.display())));
        }
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.map_err(|e| Error::store("walk", e))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let p = entry.path();
            if include.as_ref().is_some_and(|s| !matches(s, p)) || exclude.as_ref().is_some_and(|s| matches(s, p)) {
                continue;
            }
            out.push(p.to_path_buf());
        }
    }
    Ok(out)
}

fn bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{bar:40}] {pos}/{len} files {msg} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

pub(super) async fn run(config: Config, args: IngestArgs) -> Result<i32> {
    let files = files(&args)?;
    let collection = args.collection.clone().unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
    let server = match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => Some(server_base(&info)?),
        Holder::Free => None,
    };
    let app = match &server {
        None => Some(App::open(config.clone()).await?),
        Some(_) => None,
    };
    let tenant = TenantId::default_tenant();
    let progress = bar(files.len() as u64);
    let started = Instant::now();
    let (mut created, mut updated, mut unchanged, mut failed, mut chunks) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for path in &files {
        let source = path.to_string_lossy().to_string();
        let outcome: Result<Vec<Value>> = async {
            let bytes = std::fs::read(path)?;
            if bytes.len() as u64 > config.knowledge.max_upload_bytes {
                return Err(Error::new(ErrorCode::PayloadTooLarge, "larger than knowledge.max_upload_bytes"));
            }
            let meta = DocumentMeta {
                source: source.clone(),
                collection: Some(collection.clone()),
                tags: args.tags.clone(),
                ..Default::default()
            };
            match (&app, &server) {
                (Some(app), _) => {
                    let sha = hex::encode(Sha256::digest(&bytes));
                    // Unchanged files are skipped before parsing: a second run is fast.
                    if app.documents.is_unchanged(&tenant, &collection, &source, &sha).await? {
                        return Ok(vec![json!({"outcome": "unchanged", "document": {"chunks": 0}})]);
                    }
                    let outcomes = app.documents.ingest_bytes(&tenant, &meta, bytes.into()).await?;
                    Ok(outcomes.iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect())
                }
                (None, Some(url)) => upload(url, crate::auth::client_master_key(&config), &meta, bytes).await,
                (None, None) => unreachable!("either in-process or through the server"),
            }
        }
        .await;
        match outcome {
            Ok(outcomes) => {
                for o in outcomes {
                    match o["outcome"].as_str() {
                        Some("created") => created += 1,
                        Some("updated") => updated += 1,
                        _ => unchanged += 1,
                    }
                    if o["outcome"] != "unchanged" {
                        chunks += o["document"]["chunks"].as_u64().unwrap_or(0);
                    }
                }
            }
            Err(e) => {
                failed += 1;
                progress.suspend(|| eprintln!("{}: {} ({})", path.display(), e, e.code.as_str()));
            }
        }
        progress.inc(1);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        progress.set_message(format!(
            "{:.1} files/s, {:.1} chunks/s",
            progress.position() as f64 / secs,
            chunks as f64 / secs
        ));
    }
    progress.finish();
    if let Some(app) = &app {
        let head = app.stores.records.head_seq().await?;
        app.writes.wait_indexed(head).await;
        app.shutdown().await;
    }
    println!(
        "ingested {} files in {:.1}s: {created} created, {updated} updated, {unchanged} unchanged, {failed} failed; {chunks} chunks",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed > 0 { 1 } else { 0 })
}

async fn upload(url: &str, key: Option<String>, meta: &DocumentMeta, bytes: Vec<u8>) -> Result<Vec<Value>> {
    let name = meta.source.clone();
    let mut form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name))
        .text("collection", meta.collection.clone().unwrap_or_default());
    if !meta.tags.is_empty() {
        form = form.text("tags", meta.tags.join(","));
    }
    let mut request = reqwest::Client::new().post(format!("{url}/api/v1/documents?wait=true")).multipart(form);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| Error::internal("upload to the running server", e))?;
    let body: Value = response.json().await.map_err(|e| Error::internal("read the server's answer", e))?;
    if let Some(err) = body.get("error") {
        return Err(Error::invalid(err["message"].as_str().unwrap_or("upload refused").to_string()));
    }
    let job = &body["jobs"][0];
    match job["state"].as_str() {
        Some("succeeded") => Ok(job["result"]["documents"].as_array().cloned().unwrap_or_default()),
        _ => {
            Err(Error::invalid(job["error"].as_str().unwrap_or("ingestion did not finish within a minute").to_string()))
        }
    }
}
