//! `nexus backup`, `nexus backup verify|list` and `nexus restore` (the work is in
//! `crate::backup`). A backup of a data directory a server holds is taken by that server (a job
//! followed here); otherwise by this process. Targets are directories or `s3://bucket/prefix`;
//! an archive on S3 is downloaded beside the data directory before it is verified or restored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server::{print_json, progress_bar, server_request, to_json};
use crate::app::App;
use crate::backup::target::{self, Target};
use crate::backup::{self, BackupOptions, Progress, Taken};
use crate::config::Config;
use crate::datadir::{DataDir, Holder, LockInfo};
use crate::error::{Error, ErrorCode, Result};

pub(super) async fn take(config: Config, to: Option<String>, no_derived: bool, json: bool) -> Result<i32> {
    let location = match to {
        Some(to) if target::is_s3(&to) => {
            crate::config::parse_s3(&to)?;
            to
        }
        Some(to) => std::path::absolute(PathBuf::from(to))?.display().to_string(),
        None => target::default_location(&config),
    };
    let taken = match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => take_via_server(&config, &info, &location, no_derived, json).await?,
        Holder::Free => {
            let target = Target::open(&config, Some(&location)).await?;
            let app = App::open(config).await?;
            let bar = (!json).then(|| progress_bar(0, "backup", "bytes"));
            let report = |p: Progress| {
                if let Some(bar) = &bar {
                    bar.set_prefix(p.step);
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                }
            };
            let taken = backup::take(&app, &BackupOptions { target, no_derived }, &report).await;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            app.shutdown().await;
            taken?
        }
    };
    if json {
        print_json(&to_json(&taken)?)?;
    } else {
        eprintln!(
            "backup: {} files, {} MB of data at change-log position {}, archive {} MB in {:.1} s",
            taken.header.files,
            taken.header.bytes >> 20,
            taken.header.seq,
            taken.archive.size >> 20,
            taken.took_ms as f64 / 1000.0
        );
        println!("{}", taken.archive.path);
    }
    Ok(0)
}

/// The server holding the data directory takes the backup as a job; this follows it.
async fn take_via_server(
    config: &Config,
    info: &LockInfo,
    location: &str,
    no_derived: bool,
    json: bool,
) -> Result<Taken> {
    let body = serde_json::json!({"dir": location, "no_derived": no_derived});
    let job = server_request(config, info, reqwest::Method::POST, "/api/v1/admin/backups", Some(body)).await?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let bar = (!json).then(|| progress_bar(0, "backup", "bytes"));
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let job = server_request(config, info, reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None).await?;
        if let Some(bar) = &bar {
            bar.set_length(job["progress"]["total"].as_u64().unwrap_or(0));
            bar.set_position(job["progress"]["done"].as_u64().unwrap_or(0));
        }
        match job["state"].as_str() {
            Some("succeeded") => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return serde_json::from_value(job["result"].clone())
                    .map_err(|e| Error::internal("read the backup job's result", e));
            }
            Some("failed" | "dead" | "cancelled") => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                let code = match job["error_code"].as_str() {
                    Some("archive_invalid") => ErrorCode::ArchiveInvalid,
                    Some("disk_full") => ErrorCode::DiskFull,
                    Some("backend_unavailable") => ErrorCode::BackendUnavailable,
                    Some("config_invalid") => ErrorCode::ConfigInvalid,
                    Some("conflict") => ErrorCode::Conflict,
                    Some("invalid_request") => ErrorCode::InvalidRequest,
                    _ => ErrorCode::Internal,
                };
                return Err(Error::new(code, job["error"].as_str().unwrap_or("the backup failed").to_string()));
            }
            _ => {}
        }
    }
}

pub(super) async fn verify(config: Config, archive: PathBuf, json: bool) -> Result<i32> {
    let url = archive.to_string_lossy().to_string();
    let report = if target::is_s3(&url) {
        let (location, name) = target::split_archive_url(&url)?;
        let target = Target::open(&config, Some(&location)).await?;
        backup::verify_in(&config, &target, &name).await?
    } else {
        backup::restore::verify(&config, &archive).await?
    };
    if json {
        print_json(&to_json(&report)?)?;
    } else {
        println!(
            "{}: ok — checksum file {}, {} files ({} MB) match the manifest, record store integrity {}, \
             change log at {}, {} records agree with the derived stores{}",
            report.archive,
            if report.checksum_file { "matches" } else { "absent" },
            report.files,
            report.bytes >> 20,
            report.integrity,
            report.header.seq,
            report.records_checked,
            if report.rebuilt.is_empty() {
                String::new()
            } else {
                format!(" (rebuilt: {})", report.rebuilt.join(", "))
            }
        );
    }
    Ok(0)
}

pub(super) async fn list(config: Config, to: Option<String>, json: bool) -> Result<i32> {
    let target = Target::open(&config, to.as_deref()).await?;
    let archives = target.list().await?;
    if json {
        print_json(&to_json(&archives)?)?;
        return Ok(0);
    }
    println!("{}", target.describe());
    for a in &archives {
        println!(
            "  {}  {:>8} KB  position {:>8}  {}{}",
            a.created_at.format("%Y-%m-%d %H:%M:%S"),
            a.size >> 10,
            a.seq,
            a.name,
            if a.derived { "" } else { "  (no derived stores)" }
        );
    }
    if archives.is_empty() {
        println!("  no backups");
    }
    Ok(0)
}

pub(super) async fn restore(config: Config, archive: PathBuf, replace: bool, json: bool) -> Result<i32> {
    let target = config.data_dir.clone();
    let url = archive.to_string_lossy().to_string();
    let restored = if target::is_s3(&url) {
        let (location, name) = target::split_archive_url(&url)?;
        let source = Target::open(&config, Some(&location)).await?;
        // Downloaded beside the data directory: the restore unpacks there too.
        let near = std::path::absolute(&target)?.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        std::fs::create_dir_all(&near)?;
        let fetched = source.fetch(&name, &near).await?;
        let mut restored = backup::restore::restore(&config, &fetched.path, &target, replace).await?;
        restored.report.archive = url;
        restored
    } else {
        backup::restore::restore(&config, &archive, &target, replace).await?
    };
    if json {
        print_json(&to_json(&restored)?)?;
    } else {
        println!(
            "restored {} into {}: {} files, change log at {}, {} records checked{}",
            archive.display(),
            restored.data_dir,
            restored.report.files,
            restored.report.header.seq,
            restored.report.records_checked,
            if restored.report.rebuilt.is_empty() {
                String::new()
            } else {
                format!(", rebuilt: {}", restored.report.rebuilt.join(", "))
            }
        );
        if let Some(previous) = &restored.previous {
            println!("the previous data directory is kept at {previous}; remove it once you no longer need it");
        }
    }
    Ok(0)
}
