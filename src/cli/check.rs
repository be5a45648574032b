//! `nexus check`: compare the record with every derived store, on the data directory or through
//! the running server that holds it.

use super::server::server_request;
use crate::app::App;
use crate::config::Config;
use crate::datadir::{DataDir, Holder, LockInfo};
use crate::error::{Error, Result};
use crate::writelog::check::CheckReport;

pub(super) async fn run(config: Config, json: bool) -> Result<i32> {
    let report = match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => check_via_server(&config, info).await?,
        Holder::Free => {
            let app = App::open(config).await?;
            if let crate::auth::MasterKeySource::File { path, generated: true } = &app.auth.master_source {
                eprintln!("nexus: a master key was generated into {} (mode 0600)", path.display());
            }
            let report = app.check().await;
            app.shutdown().await;
            report?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::internal("encode report", e))?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// A running server holds the data directory: ask it.
async fn check_via_server(config: &Config, info: LockInfo) -> Result<CheckReport> {
    let report = server_request(config, &info, reqwest::Method::GET, "/api/v1/admin/check", None).await?;
    serde_json::from_value(report).map_err(|e| Error::internal("read the running server's report", e))
}
