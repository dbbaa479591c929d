//! Routing: builds the edge's route table from desired state (projects, their running
//! deploys, their hostnames) and actual state (which instances Docker reports running,
//! and their addresses), and swaps it in whole.
//! Invariant: a hostname only ever routes to instances of the deploy that is `running`
//! for its project; everything else answers 503 with the project's state.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use crate::{
    deploy::DeployStatus,
    edge::{Route, RouteTable, RouteTarget},
    error::Result,
    state::AppState,
    store,
};

/// Rebuilds the route table and swaps it in. Called after every release or deletion, at
/// start-up, and on a timer so the table follows Docker's actual state.
pub async fn refresh(app: &AppState) -> Result<()> {
    let (projects, running) = app
        .store
        .call(|connection| {
            Ok((
                store::projects::all(connection)?,
                store::deploys::with_status(connection, &[DeployStatus::Running])?,
            ))
        })
        .await?;
    let running_by_project: HashMap<&str, &crate::deploy::Deploy> = running
        .iter()
        .map(|deploy| (deploy.project_id.as_str(), deploy))
        .collect();

    // Instances Docker reports running, by deploy id, with their address on our network.
    let mut instances: HashMap<String, Vec<std::net::IpAddr>> = HashMap::new();
    let needs_docker = running.iter().any(|deploy| !is_static(deploy));
    if needs_docker {
        if let Ok(engine) = app.engine().await {
            let network = &app.config.deploy.network;
            for container in engine
                .containers(&[("cantila.kind", "web")])
                .await
                .unwrap_or_default()
            {
                if container.state != "running" {
                    continue;
                }
                let (Some(deploy_id), Some(ip)) = (
                    container.labels.get("cantila.deploy"),
                    container.addresses.get(network),
                ) else {
                    continue;
                };
                instances.entry(deploy_id.clone()).or_default().push(*ip);
            }
        }
    }

    let mut table = RouteTable::new();
    for project in &projects {
        let target = match running_by_project.get(project.id.as_str()) {
            Some(deploy) if is_static(deploy) => RouteTarget::Static {
                root: app.config.sites_dir().join(&project.id).join(&deploy.id),
                spa_fallback: false,
            },
            Some(deploy) => {
                let port = deploy
                    .plan
                    .as_ref()
                    .and_then(|plan| plan.get("port"))
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|port| u16::try_from(port).ok())
                    .unwrap_or(crate::plan::DEFAULT_PORT);
                let mut addresses: Vec<SocketAddr> = instances
                    .get(&deploy.id)
                    .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                    .unwrap_or_default();
                addresses.sort();
                if addresses.is_empty() {
                    RouteTarget::Unavailable {
                        state: "starting".to_owned(),
                    }
                } else {
                    RouteTarget::Instances(addresses)
                }
            }
            None => RouteTarget::Unavailable {
                state: project.status.as_str().to_owned(),
            },
        };
        let route = Arc::new(Route::new(
            project.id.clone(),
            project.name.to_string(),
            target,
            false,
        ));
        table.insert(&project.default_hostname(&app.config.base_domain), route);
    }
    app.routes.replace(table);
    Ok(())
}

fn is_static(deploy: &crate::deploy::Deploy) -> bool {
    deploy
        .plan
        .as_ref()
        .and_then(|plan| plan.get("builder"))
        .and_then(serde_json::Value::as_str)
        == Some("static")
}

/// Refreshes the table every few seconds, so instances that die or come back are followed
/// even without a deploy.
pub async fn run(app: AppState, stopped: impl std::future::Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        if let Err(err) = refresh(&app).await {
            tracing::warn!(error = %err, "refreshing the route table");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = &mut stopped => break,
        }
    }
}
