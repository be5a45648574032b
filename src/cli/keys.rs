//! `nexus keys`: create, list and revoke API keys, on the data directory or through the running
//! server that holds it.

use super::KeysCommand;
use super::server::{AuthTarget, auth_target, print_json, server_request, to_json};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::TenantId;

pub(super) async fn run(config: Config, command: KeysCommand) -> Result<i32> {
    use crate::auth::{Scope, Within};
    use crate::store::auth::ApiKey;
    let target = auth_target(&config).await?;
    match command {
        KeysCommand::Create { name, project, scopes, expires_in_days, json } => {
            let scopes = scopes
                .iter()
                .map(|s| {
                    Scope::parse(s.trim())
                        .ok_or_else(|| Error::invalid(format!("unknown scope `{s}`; use read, write or admin")))
                })
                .collect::<Result<Vec<_>>>()?;
            let created = match &target {
                AuthTarget::Offline { store, .. } => {
                    let input =
                        crate::http::keys::KeyInput { name, project: None, scopes, expires_at: None, expires_in_days };
                    to_json(&crate::http::keys::create_key(&**store, TenantId::new(project)?, input).await?)?
                }
                AuthTarget::Server(info) => {
                    let body = serde_json::json!({"name": name, "project": project, "scopes": scopes,
                                                  "expires_in_days": expires_in_days});
                    server_request(&config, info, reqwest::Method::POST, "/api/v1/keys", Some(body)).await?
                }
            };
            if json {
                print_json(&created)?;
            } else {
                let key: ApiKey = serde_json::from_value(created["api_key"].clone())
                    .map_err(|e| Error::internal("read the created key", e))?;
                println!("{}", created["key"].as_str().unwrap_or_default());
                eprintln!(
                    "created key {} for project {} with scopes {}; it is shown only now, store it safely",
                    key.id,
                    key.project,
                    key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                );
            }
        }
        KeysCommand::List { project, json } => {
            let list = match &target {
                AuthTarget::Offline { store, .. } => {
                    let within = match project {
                        Some(p) => Within::Tenant(TenantId::new(p)?),
                        None => Within::All,
                    };
                    serde_json::json!({"keys": to_json(&store.list_keys(&within).await?)?})
                }
                AuthTarget::Server(info) => {
                    let path = match project {
                        Some(p) => format!("/api/v1/keys?project={p}"),
                        None => "/api/v1/keys".to_string(),
                    };
                    server_request(&config, info, reqwest::Method::GET, &path, None).await?
                }
            };
            if json {
                print_json(&list)?;
            } else {
                let keys: Vec<ApiKey> = serde_json::from_value(list["keys"].clone())
                    .map_err(|e| Error::internal("read the key list", e))?;
                println!("{:<16}  {:<20}  {:<16}  {:<17}  {:<10}  name", "id", "project", "scopes", "expires", "state");
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
                        "expired"
                    } else {
                        "active"
                    };
                    let scopes = k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                    let expires = k.expires_at.map_or("never".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string());
                    println!(
                        "{:<16}  {:<20}  {scopes:<16}  {expires:<17}  {state:<10}  {}",
                        k.id,
                        k.project.as_str(),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            match &target {
                AuthTarget::Offline { store, .. } => {
                    store
                        .revoke_key(&Within::All, &id, chrono::Utc::now())
                        .await?
                        .ok_or_else(|| Error::not_found("key", &id))?;
                }
                AuthTarget::Server(info) => {
                    let path = format!("/api/v1/keys/{id}");
                    server_request(&config, info, reqwest::Method::DELETE, &path, None).await?;
                }
            }
            println!("revoked key {id}");
        }
    }
    Ok(0)
}
