//! `nexus migrate`: an appliance's data onto the cluster stores, or a cluster's data back onto a
//! new data directory (the work is in `crate::migrate`).

use std::path::PathBuf;

use super::server::to_json;
use crate::config::{Config, ConfigFile, FlagOverrides};
use crate::error::{Error, Result};
use crate::store::TenantId;

/// The flags of `nexus migrate`.
pub(super) struct MigrateArgs {
    pub to: Option<PathBuf>,
    pub from: Option<PathBuf>,
    pub to_data_dir: Option<PathBuf>,
    pub tenant: Option<String>,
    pub cutover: bool,
    pub json: bool,
    pub samples: usize,
}

pub(super) async fn run(config: Config, args: MigrateArgs) -> Result<i32> {
    let MigrateArgs { to, from, to_data_dir, tenant, cutover, json, samples } = args;
    let direction = match (to, from, to_data_dir) {
        (Some(to), _, _) => {
            let target = Config::load(ConfigFile::Explicit(&to), &FlagOverrides::default())?;
            crate::migrate::Direction::ToCluster { source: config, target, target_file: to }
        }
        (None, Some(from), Some(dir)) => {
            let source = Config::load(ConfigFile::Explicit(&from), &FlagOverrides::default())?;
            let tenant = tenant.map(TenantId::new).transpose()?;
            crate::migrate::Direction::ToDataDir { source, source_file: from, target_dir: dir, tenant }
        }
        _ => return Err(Error::invalid("use `nexus migrate --to FILE` or `--from FILE --to-data-dir DIR`")),
    };
    let report = crate::migrate::run(direction, &crate::migrate::Options { cutover, json, samples }).await?;
    if json {
        let mut value = to_json(&report)?;
        value["event"] = serde_json::json!("report");
        println!("{value}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.ok { 0 } else { 1 })
}
