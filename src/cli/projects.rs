//! `nexus projects`: create and list projects (tenants), like `nexus keys`.

use super::ProjectsCommand;
use super::server::{AuthTarget, auth_target, print_json, server_request, to_json};
use crate::config::Config;
use crate::error::Result;
use crate::store::TenantId;

pub(super) async fn run(config: Config, command: ProjectsCommand) -> Result<i32> {
    use crate::auth::Within;
    let target = auth_target(&config).await?;
    match command {
        ProjectsCommand::Create { id, name, org } => {
            match &target {
                AuthTarget::Offline { store, .. } => {
                    let tenant = TenantId::new(id.clone())?;
                    store.create_project(&tenant, &org, name.as_deref().unwrap_or(&id)).await?;
                }
                AuthTarget::Server(info) => {
                    let body = serde_json::json!({"id": id, "name": name, "org_id": org});
                    server_request(&config, info, reqwest::Method::POST, "/api/v1/projects", Some(body)).await?;
                }
            }
            println!("created project {id} in organisation {org}");
        }
        ProjectsCommand::List { json } => {
            let list = match &target {
                AuthTarget::Offline { store, .. } => {
                    serde_json::json!({"projects": to_json(&store.list_projects(&Within::All).await?)?})
                }
                AuthTarget::Server(info) => {
                    server_request(&config, info, reqwest::Method::GET, "/api/v1/projects", None).await?
                }
            };
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24}  {:<16}  name", "id", "org");
                for p in list["projects"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24}  {:<16}  {}",
                        p["id"].as_str().unwrap_or_default(),
                        p["org_id"].as_str().unwrap_or_default(),
                        p["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(0)
}
