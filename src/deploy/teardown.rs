//! Deleting a project end to end: its rows go (`projects`), then what lived outside the
//! store is torn down here, the highest service involved: deploys in progress canceled,
//! routes refreshed, previews' certificates forgotten, and in the background its
//! containers, networks, published site, git mirror, backups and assets removed.

use crate::{accounts::Actor, error::Result, state::AppState};

/// Deletes the project and everything attached to it: deploys in progress are canceled,
/// its rows go, and in the background its containers, published site and git mirror are
/// removed.
pub async fn delete_project(app: &AppState, actor: &Actor, id: String) -> Result<()> {
    let deleted = app.projects.delete(actor, id.clone()).await?;
    for deploy in deleted.active {
        super::request_cancel(app, &deploy.id);
    }
    // The hostname stops routing at once.
    if let Err(err) = app.routing.refresh().await {
        tracing::warn!(error = %err, "refreshing routes after a project deletion");
    }
    // Previews' certificate records go with their hostnames.
    for preview in deleted.previews {
        if let Err(err) = app.tls.forget(&preview.hostname).await {
            tracing::warn!(host = %preview.hostname, error = %err, "forgetting a deleted preview's certificate");
        }
    }
    let app = app.clone();
    tokio::spawn(async move { remove_project_files(&app, &id).await });
    Ok(())
}

/// Removes a deleted project's containers and networks, then its directories on disk.
async fn remove_project_files(app: &AppState, project_id: &str) {
    super::pipeline::remove_project_containers(app, project_id).await;
    let sites = app.config.sites_dir().join(project_id);
    let mirror = app.config.repos_dir().join(format!("{project_id}.git"));
    let backups = app.config.backups_dir().join(project_id);
    let assets = app.config.assets_dir().join(project_id);
    for dir in [sites, mirror, backups, assets] {
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %err, "removing a deleted project's files");
            }
        }
    }
}
