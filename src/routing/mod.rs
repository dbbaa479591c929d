//! Routing: builds the edge's route table from desired state (projects, their running
//! deploys, their hostnames, their previews) and actual state (which instances Docker
//! reports running, and their addresses), and swaps it in whole. It also asks for the
//! certificate of the console's hostname when the console is on the edge.
//! Invariant: a hostname only ever routes to instances of the deploy that is `running`
//! for its release target (the project's production, or the one preview the hostname
//! belongs to); everything else answers 503 with the state.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use crate::{
    deploy::{Deploy, DeployStatus},
    edge::{Route, RouteTable, RouteTarget},
    error::Result,
    labels::{self, Filter, Key, Kind},
    state::AppState,
    store,
};

/// Rebuilds the route table and swaps it in. Called after every release or deletion, at
/// start-up, and on a timer so the table follows Docker's actual state.
pub async fn refresh(app: &AppState) -> Result<()> {
    let _one_at_a_time = app.route_refresh.lock().await;
    let (projects, mut running, aliases, previews, preview_statuses) = app
        .store
        .call(|connection| {
            Ok((
                store::projects::all(connection)?,
                store::deploys::with_status(connection, &[DeployStatus::Running])?,
                store::aliases::all(connection)?,
                store::previews::all(connection)?,
                store::deploys::newest_status_of_previews(connection)?,
            ))
        })
        .await?;
    // A deploy being switched to leads its release target's routes before the store says so.
    for switching in app.switching_snapshot() {
        running.retain(|deploy| {
            deploy.project_id != switching.project_id || deploy.preview_id != switching.preview_id
        });
        running.push(switching);
    }
    let preview_statuses: HashMap<String, DeployStatus> = preview_statuses.into_iter().collect();
    let mut aliases_by_project: HashMap<String, Vec<String>> = HashMap::new();
    for alias in aliases {
        aliases_by_project
            .entry(alias.project_id)
            .or_default()
            .push(alias.hostname);
    }
    // Production's running deploy per project, and each preview's.
    let running_by_project: HashMap<&str, &Deploy> = running
        .iter()
        .filter(|deploy| deploy.preview_id.is_none())
        .map(|deploy| (deploy.project_id.as_str(), deploy))
        .collect();
    let running_by_preview: HashMap<&str, &Deploy> = running
        .iter()
        .filter_map(|deploy| Some((deploy.preview_id.as_deref()?, deploy)))
        .collect();

    // Instances Docker reports running, by deploy id, with their address on their release
    // target's network (or the shared one of earlier versions, until they are moved).
    let mut instances: HashMap<String, Vec<std::net::IpAddr>> = HashMap::new();
    let needs_docker = running.iter().any(|deploy| !is_static(deploy));
    if needs_docker {
        if let Ok(engine) = app.engine().await {
            let draining = app.draining_snapshot();
            for container in engine
                .containers_matching(
                    &Filter::new()
                        .kind(Kind::Web)
                        .installation(&app.installation),
                )
                .await
                .unwrap_or_default()
            {
                if container.state != "running" || draining.contains(&container.id) {
                    continue;
                }
                let (Some(deploy_id), Some(ip)) = (
                    labels::get(&container.labels, Key::Deploy),
                    crate::networks::address_of(
                        &app.config.deploy,
                        &container.labels,
                        &container.addresses,
                    ),
                ) else {
                    continue;
                };
                instances.entry(deploy_id.to_owned()).or_default().push(ip);
            }
        }
    }

    let mut table = RouteTable::new();
    for project in &projects {
        let target = match running_by_project.get(project.id.as_str()) {
            Some(deploy) if project.instances == 0 && !is_static(deploy) => {
                RouteTarget::Unavailable {
                    state: "stopped".to_owned(),
                }
            }
            Some(deploy) => target_of(app, project, deploy, &instances),
            None => RouteTarget::Unavailable {
                state: project.status.as_str().to_owned(),
            },
        };
        let assets = assets_of(
            app,
            project,
            &target,
            running_by_project.get(project.id.as_str()).copied(),
        );
        let serving = running_by_project.contains_key(project.id.as_str());
        let mut hosts = vec![project.default_hostname(&app.config.base_domain)];
        hosts.extend(aliases_by_project.remove(&project.id).unwrap_or_default());
        for host in hosts {
            let https_redirect = https_once_certified(app, &host, serving);
            let route = Route::new(
                project.id.clone(),
                project.name.to_string(),
                target.clone(),
                https_redirect,
            )
            .with_assets(assets.clone());
            table.insert(&host, Arc::new(route));
        }
    }
    for preview in &previews {
        let Some(project) = projects.iter().find(|p| p.id == preview.project_id) else {
            continue;
        };
        let serving = running_by_preview.get(preview.id.as_str());
        let target = match (serving, preview_statuses.get(&preview.id)) {
            (Some(deploy), _) => target_of(app, project, deploy, &instances),
            (None, Some(DeployStatus::Failed | DeployStatus::Canceled)) => {
                RouteTarget::Unavailable {
                    state: "failed".to_owned(),
                }
            }
            (None, _) => RouteTarget::Unavailable {
                state: "building".to_owned(),
            },
        };
        let assets = assets_of(app, project, &target, serving.copied());
        let https_redirect = https_once_certified(app, &preview.hostname, serving.is_some());
        let route = Route::new(
            project.id.clone(),
            format!("{} (preview)", project.name),
            target,
            https_redirect,
        )
        .for_preview(preview.id.clone())
        .with_assets(assets);
        table.insert(&preview.hostname, Arc::new(route));
    }
    app.routes.replace(table);
    // The console's hostname is served from start-up (by the edge, not the table) and gets
    // its certificate like any served hostname.
    if let Some(console) = app.config.console_hostname() {
        if !app.tls.has_certificate(&console) {
            request_certificate(app, &console);
        }
    }
    Ok(())
}

/// Where a running deploy's requests go: its published site, or its instances that Docker
/// reports running (503 "starting" while there are none).
fn target_of(
    app: &AppState,
    project: &crate::projects::Project,
    deploy: &Deploy,
    instances: &HashMap<String, Vec<std::net::IpAddr>>,
) -> RouteTarget {
    if is_static(deploy) {
        return RouteTarget::Static {
            root: app.config.sites_dir().join(&project.id).join(&deploy.id),
            spa_fallback: false,
        };
    }
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

/// The asset files the edge answers before a running container release's instances.
fn assets_of(
    app: &AppState,
    project: &crate::projects::Project,
    target: &RouteTarget,
    serving: Option<&Deploy>,
) -> Option<crate::edge::routes::AssetMount> {
    match (target, serving) {
        (RouteTarget::Instances(_), Some(deploy)) => {
            crate::assets::mount_of(app, &project.id, deploy)
        }
        _ => None,
    }
}

/// Plain HTTP moves to HTTPS once the hostname has a certificate; a served hostname
/// without one gets a certificate requested.
fn https_once_certified(app: &AppState, host: &str, serving: bool) -> bool {
    let https_redirect = app.tls.has_certificate(host);
    if serving && !https_redirect {
        request_certificate(app, host);
    }
    https_redirect
}

/// Asks for a certificate in the background when TLS is on; the TLS module keeps the
/// outcome (and backs off after failures), visible on the project's domains.
fn request_certificate(app: &AppState, host: &str) {
    if app.tls.mode() == crate::tls::TlsMode::Off {
        return;
    }
    if !app
        .certificate_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(host.to_owned())
    {
        return;
    }
    let app = app.clone();
    let host = host.to_owned();
    tokio::spawn(async move {
        match app.tls.ensure_certificate(&host).await {
            Ok(_) => {
                tracing::info!(%host, "certificate ready");
                // The redirect to HTTPS starts with the next table.
                let refresh_app = app.clone();
                tokio::spawn(async move {
                    let _ = refresh(&refresh_app).await;
                });
            }
            // `ensure_certificate` logged it, once per change of the hostname's state; a
            // line per refresh would let one tenant's many hostnames flood the log.
            Err(err) => tracing::debug!(%host, error = %err, "certificate request failed"),
        }
        app.certificate_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&host);
    });
}

fn is_static(deploy: &Deploy) -> bool {
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
