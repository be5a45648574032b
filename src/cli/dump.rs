//! `nexus dump` and `nexus import` (the work is in `crate::dump`).

use std::path::PathBuf;

use super::server::{print_json, progress_bar, to_json};
use crate::config::Config;
use crate::dump::write::Progress;
use crate::error::Result;

/// A progress bar on the terminal (none with `--json`), fed by the dump's steps.
fn bar(json: bool, name: &str) -> (Option<indicatif::ProgressBar>, impl Fn(Progress) + Send + Sync) {
    let bar = (!json).then(|| progress_bar(0, name, "items"));
    let shown = bar.clone();
    let report = move |p: Progress| {
        if let Some(bar) = &shown {
            bar.set_prefix(p.step);
            bar.set_length(p.total);
            bar.set_position(p.done);
        }
    };
    (bar, report)
}

pub(super) async fn dump(config: Config, to: PathBuf, json: bool) -> Result<i32> {
    let (bar, report) = bar(json, "dump");
    let dumped = crate::dump::write::dump(&config, &to, &report).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let dumped = dumped?;
    if json {
        print_json(&to_json(&dumped)?)?;
        return Ok(0);
    }
    let c = &dumped.info.counts;
    eprintln!(
        "dump: {} records in {} projects, {} keys, {} audit entries, {} jobs, {} files ({} MB), change-log position \
         {}{}; {} MB in {:.1} s",
        c.records,
        c.projects,
        c.keys,
        c.audit,
        c.jobs,
        dumped.objects,
        c.object_bytes >> 20,
        dumped.info.seq,
        if dumped.from_copy { " (read from a consistent copy: a server holds the data directory)" } else { "" },
        dumped.size >> 20,
        dumped.took_ms as f64 / 1000.0
    );
    for note in &dumped.notes {
        eprintln!("note: {note}");
    }
    println!("{}", dumped.path);
    Ok(0)
}

pub(super) async fn import(config: Config, file: PathBuf, json: bool) -> Result<i32> {
    let target = config.data_dir.clone();
    let (bar, report) = bar(json, "import");
    let imported = crate::dump::import::import(&config, &file, &target, &report).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let imported = imported?;
    if json {
        print_json(&to_json(&imported)?)?;
        return Ok(0);
    }
    let c = &imported.info.counts;
    println!(
        "imported {} (dump format {}, Nexus {}, {}) into {}: {} records in {} projects, {} keys, {} audit entries, \
         {} jobs, {} files; derived stores built and checked ({} records agree){}",
        imported.dump,
        imported.info.dump_format,
        imported.info.nexus_version,
        imported.info.created_at.format("%Y-%m-%d %H:%M UTC"),
        imported.data_dir,
        c.records,
        c.projects,
        c.keys,
        c.audit,
        c.jobs,
        imported.objects,
        imported.records_checked,
        if imported.replaced_empty_install { "; the empty data directory of a fresh install was replaced" } else { "" }
    );
    Ok(0)
}
