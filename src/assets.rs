//! The static assets of a project's live release: a static site's published files, or
//! the files under a container app's assets directory (the plan's `assetsDir`, such as
//! `public/`), copied out of its image after the build. Each file is indexed once per
//! release with its size, content type, SHA-256 and the edge's cache policy.
//! Invariant: extraction writes only regular files and directories, inside the release's
//! own directory (`<data_dir>/assets/<project>/<deploy>/`), never following a link and
//! never past `MAX_EXTRACT_BYTES`.

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::{
    accounts::Actor,
    edge::{routes::AssetMount, static_files},
    error::{Error, Result},
    labels::Labels,
    model::deploy::{Deploy, DeployStatus},
    pagination::{Page, PageRequest},
    plan::SourcePlan,
    projects::{self, Project},
    runtime::Runtime,
    store::{self, Store},
};

pub use crate::model::asset::Asset;

/// The assets service handle: the store the index lives in, the runtime images are
/// copied out of, this installation's id for the helper's labels, and the directories
/// assets are extracted into (`assets_dir`) and static sites are published in
/// (`sites_dir`).
#[derive(Clone)]
pub struct Assets {
    store: Store,
    runtime: Runtime,
    installation: Arc<str>,
    assets_dir: PathBuf,
    sites_dir: PathBuf,
}

/// The most bytes of assets copied out of one image.
const MAX_EXTRACT_BYTES: u64 = 512 * 1024 * 1024;

/// The cache policies are the edge's, so they are chosen here rather than with the
/// index entry's data in `model`.
impl Asset {
    /// The `Cache-Control` the edge serves the file with: HTML revalidates, the rest may
    /// be cached briefly.
    pub fn cache_policy(&self) -> &'static str {
        if self.content_type.starts_with("text/html") {
            static_files::CACHE_HTML
        } else {
            static_files::CACHE_ASSETS
        }
    }
}

/// One page of the live release's assets.
#[derive(Debug)]
pub struct AssetPage {
    /// The deploy serving them; `None` when nothing is live.
    pub deploy_id: Option<String>,
    pub page: Page<Asset>,
}

impl Assets {
    pub fn new(
        store: Store,
        runtime: Runtime,
        installation: &str,
        assets_dir: PathBuf,
        sites_dir: PathBuf,
    ) -> Self {
        Self {
            store,
            runtime,
            installation: installation.into(),
            assets_dir,
            sites_dir,
        }
    }

    /// Lists the live release's assets whose path starts with `prefix`.
    pub async fn list(
        &self,
        actor: &Actor,
        project_id: String,
        prefix: Option<String>,
        page: PageRequest,
    ) -> Result<AssetPage> {
        let prefix = prefix.unwrap_or_default();
        if prefix.len() > 1024 || prefix.chars().any(char::is_control) {
            return Err(Error::BadRequest(
                "prefix must be at most 1024 characters without control characters".to_owned(),
            ));
        }
        let prefix = prefix.trim_start_matches('/').to_owned();
        let project = projects::get(&self.store, actor, project_id).await?;
        let id = project.id.clone();
        let live = self
            .store
            .call(move |c| {
                Ok(
                    store::deploys::of_project_with_status(c, &id, &[DeployStatus::Running])?
                        .into_iter()
                        .last(),
                )
            })
            .await?;
        let Some(deploy) = live else {
            return Ok(AssetPage {
                deploy_id: None,
                page: Page {
                    items: Vec::new(),
                    next_cursor: None,
                },
            });
        };
        self.ensure_index(&project, &deploy).await?;
        let deploy_id = deploy.id.clone();
        let rows = self
            .store
            .call(move |c| {
                store::backups::assets_page(c, &deploy_id, &prefix, page.after, page.limit + 1)
            })
            .await?;
        Ok(AssetPage {
            deploy_id: Some(deploy.id),
            page: page.finish(rows),
        })
    }

    /// Removes the extracted assets of releases that can no longer be served (their image is
    /// gone). Best effort: a directory left behind is removed with its project.
    pub async fn forget(&self, project_id: &str, deploy_ids: &[String]) {
        for deploy_id in deploy_ids {
            match tokio::fs::remove_dir_all(self.release_dir(project_id, deploy_id)).await {
                Ok(()) => {
                    tracing::debug!(project = %project_id, deploy = %deploy_id, "removed old assets")
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(project = %project_id, deploy = %deploy_id, error = %err, "removing old assets")
                }
            }
        }
    }

    /// The directory a release's extracted assets live in.
    pub fn release_dir(&self, project_id: &str, deploy_id: &str) -> PathBuf {
        self.assets_dir.join(project_id).join(deploy_id)
    }

    /// Copies a freshly built image's assets out and indexes them. Best effort: a failure is
    /// logged and listed later, when the index is built on demand.
    pub async fn prepare(
        &self,
        project: &Project,
        deploy: &Deploy,
        plan: &SourcePlan,
        image: &str,
    ) {
        let Some(dir) = &plan.assets_dir else {
            return;
        };
        if let Err(err) = self.extract(project, &deploy.id, image, dir).await {
            tracing::warn!(project = %project.id, deploy = %deploy.id, error = %err, "extracting assets");
            return;
        }
        let root = self.release_dir(&project.id, &deploy.id);
        if let Err(err) = self.store_index(&deploy.id, root, url_prefix(dir)).await {
            tracing::warn!(project = %project.id, deploy = %deploy.id, error = %err, "indexing assets");
        }
    }

    /// Builds the release's index when it has none yet.
    async fn ensure_index(&self, project: &Project, deploy: &Deploy) -> Result<()> {
        let id = deploy.id.clone();
        if self
            .store
            .call(move |c| store::backups::has_assets_index(c, &id))
            .await?
        {
            return Ok(());
        }
        let (root, prefix) = match &deploy.image {
            None => (
                self.sites_dir.join(&project.id).join(&deploy.id),
                Vec::new(),
            ),
            Some(image) => {
                let plan: Option<SourcePlan> = deploy
                    .plan
                    .clone()
                    .and_then(|plan| serde_json::from_value(plan).ok());
                let Some(dir) = plan.and_then(|plan| plan.assets_dir) else {
                    return Ok(());
                };
                let root = self.release_dir(&project.id, &deploy.id);
                if !tokio::fs::try_exists(&root).await.unwrap_or(false) {
                    self.extract(project, &deploy.id, image, &dir).await?;
                }
                (root, url_prefix(&dir))
            }
        };
        self.store_index(&deploy.id, root, prefix).await
    }

    /// Indexes the files under `root`, listed by the URL path the edge serves them at.
    async fn store_index(
        &self,
        deploy_id: &str,
        root: PathBuf,
        url_prefix: Vec<String>,
    ) -> Result<()> {
        let mut assets = tokio::task::spawn_blocking(move || index_tree(&root))
            .await
            .map_err(|err| Error::Internal(err.to_string()))??;
        if !url_prefix.is_empty() {
            let prefix = url_prefix.join("/");
            for asset in &mut assets {
                asset.path = format!("{prefix}/{}", asset.path);
            }
        }
        let id = deploy_id.to_owned();
        self.store
            .write(move |tx| {
                store::backups::replace_assets(tx, &id, &assets)?;
                Ok(())
            })
            .await
    }

    /// Copies `<workdir>/<dir>` out of the image into the release's assets directory.
    async fn extract(
        &self,
        project: &Project,
        deploy_id: &str,
        image: &str,
        dir: &str,
    ) -> Result<()> {
        self.runtime.ready().await?;
        let engine = &self.runtime;
        let workdir = engine.image_workdir(image).await?;
        let source = format!("{}/{dir}", workdir.trim_end_matches('/'));
        let labels = Labels::helper(&self.installation, &project.id).to_map();
        let helper = engine
            .create_helper(
                &format!(
                    "cantila-{}-assets-{}",
                    project.id.to_ascii_lowercase(),
                    crate::ids::random_base62(6).to_ascii_lowercase()
                ),
                image,
                &[],
                labels,
                None,
            )
            .await?;
        let target = self.release_dir(&project.id, deploy_id);
        let partial = target.with_extension("partial");
        let result = async {
            let mut archive = Vec::new();
            let mut stream = Box::pin(engine.download_tar(&helper, &source));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|err| match err {
                    crate::runtime::RuntimeError::NotFound(_) => {
                        Error::Invalid(format!("the image has no `{source}`"))
                    }
                    other => other.into(),
                })?;
                archive.extend_from_slice(&chunk);
                if archive.len() as u64 > MAX_EXTRACT_BYTES {
                    return Err(Error::Invalid(format!(
                        "the assets under `{source}` exceed {} MiB",
                        MAX_EXTRACT_BYTES / 1024 / 1024
                    )));
                }
            }
            let (partial, target) = (partial.clone(), target.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let _ = std::fs::remove_dir_all(&partial);
                unpack(&archive, &partial)?;
                let _ = std::fs::remove_dir_all(&target);
                std::fs::rename(&partial, &target)
                    .map_err(|err| Error::Internal(format!("placing assets: {err}")))
            })
            .await
            .map_err(|err| Error::Internal(err.to_string()))?
        }
        .await;
        let _ = engine
            .stop_and_remove(&helper, Duration::from_secs(1))
            .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&partial).await;
        }
        result
    }
}

/// Where the edge answers a container app's asset files for `deploy`: its extracted
/// assets directory, when its plan names one. Static sites are served whole instead.
pub fn mount_of(assets_dir: &Path, project_id: &str, deploy: &Deploy) -> Option<AssetMount> {
    deploy.image.as_ref()?;
    let dir = deploy.plan.as_ref()?.get("assetsDir")?.as_str()?;
    Some(AssetMount {
        root: assets_dir.join(project_id).join(&deploy.id),
        url_prefix: url_prefix(dir),
    })
}

/// The URL path an assets directory is served under, as segments: frameworks serve
/// `public/` at the site's root (Express, Rails, Laravel) and `static/` under `/static/`
/// (Flask, Django's usual `STATIC_URL`, FastAPI's usual mount).
pub fn url_prefix(assets_dir: &str) -> Vec<String> {
    if assets_dir == "public" {
        return Vec::new();
    }
    assets_dir
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Unpacks regular files and directories of `archive` under `into`, dropping the
/// archive's top directory; anything else (links, devices, `..`) is skipped.
fn unpack(archive: &[u8], into: &Path) -> Result<()> {
    let io = |err: std::io::Error| Error::Internal(format!("unpacking assets: {err}"));
    std::fs::create_dir_all(into).map_err(io)?;
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let mut components = path.components();
        components.next(); // the copied directory itself
        let relative: PathBuf = components.as_path().to_owned();
        if relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let destination = into.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&destination).map_err(io)?;
        } else if kind.is_file() {
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let mut out = std::fs::File::create(&destination).map_err(io)?;
            std::io::copy(&mut entry, &mut out).map_err(io)?;
        }
    }
    Ok(())
}

/// Every regular file under `root` (links are not followed), sorted by path.
fn index_tree(root: &Path) -> Result<Vec<Asset>> {
    let io = |err: std::io::Error| Error::Internal(format!("indexing assets: {err}"));
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = match std::fs::read_dir(root.join(&relative)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io(err)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            let child = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(child);
            } else if kind.is_file() {
                let Some(path) = child.to_str().map(str::to_owned) else {
                    continue;
                };
                let mut file = std::fs::File::open(entry.path()).map_err(io)?;
                let mut hasher = Sha256::new();
                let size = std::io::copy(&mut file, &mut hasher).map_err(io)?;
                let mime = mime_guess::from_path(&path).first_or_octet_stream();
                found.push(Asset {
                    path,
                    size_bytes: size as i64,
                    content_type: static_files::content_type(&mime),
                    sha256: hex::encode(hasher.finalize()),
                });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_files_with_type_hash_and_cache_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("css")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(dir.path().join("css/site.css"), "abc").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("leak")).unwrap();
        let assets = index_tree(dir.path()).unwrap();
        let paths: Vec<&str> = assets.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["css/site.css", "index.html"]);
        assert_eq!(assets[0].content_type, "text/css; charset=utf-8");
        assert_eq!(
            assets[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(assets[0].cache_policy(), "public, max-age=300");
        assert_eq!(assets[1].cache_policy(), "no-cache");
    }

    #[test]
    fn unpacking_keeps_files_and_drops_links_and_escapes() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("public/app.js", b"js", tar::EntryType::Regular);
        add("public/img/logo.svg", b"<svg/>", tar::EntryType::Regular);
        add("public/link", b"", tar::EntryType::Symlink);
        let archive = builder.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack(&archive, dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("app.js")).unwrap(), b"js");
        assert!(dir.path().join("img/logo.svg").is_file());
        assert!(std::fs::symlink_metadata(dir.path().join("link")).is_err());
    }
}
