//! Scheduled backups: `[backup] schedule` (cron, UTC) takes a backup into `[backup] dir` (a
//! directory or `s3://bucket/prefix`), verifies it (unless `verify = false`; from S3, a download
//! first) and prunes older archives by `keep_last`, `keep_daily` and `keep_weekly`. Every outcome is counted in `/metrics`, written to the audit log and kept
//! in [`ScheduleStatus`] for `GET /api/v1/admin/backups`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::target::Target;
use super::{BackupArchive, BackupOptions};
use crate::app::App;
use crate::error::Result;
use crate::store::auth::AuditEvent;

/// What the schedule did last and will do next.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ScheduleStatus {
    /// The cron expression; empty when backups are only taken on request.
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    /// The last archive the schedule took and whether it verified.
    pub last_archive: Option<String>,
    pub last_verified: Option<bool>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub failures: u64,
}

/// Which archives retention keeps: the newest `keep_last`, and the newest archive of each of
/// the `keep_daily` most recent days and `keep_weekly` most recent ISO weeks that have one.
pub fn keep(archives: &[BackupArchive], keep_last: u32, keep_daily: u32, keep_weekly: u32) -> HashSet<String> {
    let mut newest_first: Vec<&BackupArchive> = archives.iter().collect();
    newest_first.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    let mut kept: HashSet<String> = newest_first.iter().take(keep_last as usize).map(|a| a.name.clone()).collect();
    let mut by_period = |limit: u32, period: &dyn Fn(&DateTime<Utc>) -> (i32, u32)| {
        let mut seen = Vec::new();
        for archive in &newest_first {
            let p = period(&archive.created_at);
            if seen.contains(&p) {
                continue;
            }
            if seen.len() >= limit as usize {
                break;
            }
            seen.push(p);
            kept.insert(archive.name.clone());
        }
    };
    by_period(keep_daily, &|t| (t.year(), t.ordinal()));
    by_period(keep_weekly, &|t| {
        let week = t.iso_week();
        (week.year(), week.week())
    });
    kept
}

/// Removes the archives of `dir` that retention does not keep (and their checksum files).
pub fn prune(dir: &Path, keep_last: u32, keep_daily: u32, keep_weekly: u32) -> Result<Vec<String>> {
    let archives = super::list(dir)?;
    let kept = keep(&archives, keep_last, keep_daily, keep_weekly);
    let mut removed = Vec::new();
    for archive in archives.iter().filter(|a| !kept.contains(&a.name)) {
        let path = dir.join(&archive.name);
        std::fs::remove_file(&path)?;
        let _ = std::fs::remove_file(super::archive::checksum_path(&path));
        removed.push(archive.name.clone());
    }
    Ok(removed)
}

/// Starts the schedule when `[backup] schedule` is set.
pub fn start(app: Arc<App>, mut shutdown: watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
    let expression = app.config.backup.schedule.trim().to_string();
    // Present from the start, so that a first failure is an increase alerts see, and the age of
    // the newest archive is known before the first scheduled run.
    for stage in ["backup", "verify", "retention"] {
        metrics::counter!("nexus_backup_failures_total", "stage" => stage).increment(0);
    }
    metrics::gauge!("nexus_backup_scheduled").set(if expression.is_empty() { 0.0 } else { 1.0 });
    let location = super::target::default_location(&app.config);
    if super::target::is_s3(&location) {
        // The bucket answers when it does; the start does not wait for it.
        let config = app.config.clone();
        tokio::spawn(async move {
            let newest = match Target::open(&config, None).await {
                Ok(target) => target.list().await.ok().and_then(|l| l.first().map(|a| a.created_at)),
                Err(_) => None,
            };
            metrics::gauge!("nexus_backup_last_success_timestamp_seconds")
                .set(newest.map_or(0.0, |t| t.timestamp() as f64));
        });
    } else {
        let newest = super::list(&super::default_dir(&app.config)).ok().and_then(|l| l.first().map(|a| a.created_at));
        metrics::gauge!("nexus_backup_last_success_timestamp_seconds")
            .set(newest.map_or(0.0, |t| t.timestamp() as f64));
    }
    if expression.is_empty() {
        return None;
    }
    let cron: croner::Cron = expression.parse().ok()?;
    app.backup_status.lock().schedule = expression;
    Some(tokio::spawn(async move {
        loop {
            let Ok(next) = cron.find_next_occurrence(&Utc::now(), false) else {
                tracing::error!("the backup schedule has no next run");
                return;
            };
            app.backup_status.lock().next_run = Some(next);
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            run_once(&app).await;
        }
    }))
}

/// One scheduled run: backup, verification, retention.
pub async fn run_once(app: &App) {
    let config = &app.config.backup;
    app.backup_status.lock().last_run = Some(Utc::now());
    let outcome: std::result::Result<(String, Option<bool>), (&'static str, String)> = async {
        let target = Target::open(&app.config, None).await.map_err(|e| ("backup", e.to_string()))?;
        let options = BackupOptions { target: target.clone(), no_derived: config.no_derived };
        let taken = super::take(app, &options, &|_| {}).await.map_err(|e| ("backup", e.to_string()))?;
        let name = Path::new(&taken.archive.path).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let verified = if config.verify {
            let report = super::verify_in(&app.config, &target, &name).await;
            metrics::counter!("nexus_backup_verifications_total", "outcome" => if report.is_ok() { "ok" } else { "failed" })
                .increment(1);
            report.map_err(|e| ("verify", format!("{name} failed verification: {e}")))?;
            metrics::gauge!("nexus_backup_last_verified_timestamp_seconds").set(Utc::now().timestamp() as f64);
            Some(true)
        } else {
            None
        };
        let removed = target
            .prune(config.keep_last, config.keep_daily, config.keep_weekly)
            .await
            .map_err(|e| ("retention", e.to_string()))?;
        if !removed.is_empty() {
            tracing::info!(removed = ?removed, "old backups removed by retention");
        }
        Ok((name, verified))
    }
    .await;
    let mut status = app.backup_status.lock();
    let event = |status: u16, object: Option<String>| AuditEvent {
        at: Utc::now(),
        principal: "scheduler".into(),
        key_id: None,
        tenant: None,
        method: "SCHEDULE".into(),
        route: "backup".into(),
        object_id: object,
        status,
        client: None,
    };
    match outcome {
        Ok((name, verified)) => {
            status.last_archive = Some(name.clone());
            status.last_verified = verified;
            status.last_success = Some(Utc::now());
            status.last_error = None;
            app.auth.audit.record(event(200, Some(name)));
        }
        Err((stage, message)) => {
            metrics::counter!("nexus_backup_failures_total", "stage" => stage).increment(1);
            tracing::error!(stage, error = %message, "scheduled backup failed");
            status.failures += 1;
            status.last_error = Some(message.clone());
            if stage == "verify" {
                status.last_verified = Some(false);
            }
            app.auth.audit.record(event(500, Some(format!("{stage}: {message}"))));
        }
    }
}
