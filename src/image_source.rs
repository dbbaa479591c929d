//! A project's image source: connect an image reference (instead of a git repository),
//! show it, disconnect it, and act on registry push notifications (the distribution
//! registry's envelope and Docker Hub's format) by deploying when the connected tag moved.
//! Invariants: a project has one source at a time (connecting an image to a git-connected
//! project is a 409 unless the caller asks to replace it, which disconnects git); the
//! webhook secret is shown once and stored only as its SHA-256, compared in constant time;
//! every delivery is recorded with what came of it (queued, or ignored and why).

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::{
    accounts::Actor,
    clock,
    deploy::Deploys,
    error::{Error, Result},
    ids,
    model::image::ImageReference,
    source::EgressPolicy,
    store::{self, images::StoredImageSource, Store},
};

#[derive(Clone)]
pub struct ImageSources {
    store: Store,
    /// Queues the deploys a registry push asks for.
    deploys: Deploys,
    /// Where the registry of a connected image may be (`git.allowed_networks`).
    egress: EgressPolicy,
}

/// The image source as shown: never the webhook secret.
#[derive(Debug, Clone)]
pub struct ImageSourceView {
    pub reference: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_delivery_at: Option<String>,
    pub last_delivery_result: Option<String>,
}

impl From<&StoredImageSource> for ImageSourceView {
    fn from(stored: &StoredImageSource) -> Self {
        Self {
            reference: stored.reference.clone(),
            created_at: stored.created_at.clone(),
            updated_at: stored.updated_at.clone(),
            last_delivery_at: stored.last_delivery_at.clone(),
            last_delivery_result: stored.last_delivery_result.clone(),
        }
    }
}

/// What a registry delivery led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDelivery {
    Queued { deploy_id: String },
    Ignored { reason: String },
}

/// One push a delivery reports: the repository's path in its registry, and the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Push {
    repository: String,
    tag: Option<String>,
}

fn sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Equal-length byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ImageSources {
    pub fn new(store: Store, deploys: Deploys, egress: EgressPolicy) -> Self {
        Self {
            store,
            deploys,
            egress,
        }
    }

    async fn owned_project(&self, actor: &Actor, project_id: &str) -> Result<()> {
        let account_id = actor.account_id.clone();
        let id = project_id.to_owned();
        self.store
            .call(move |c| store::projects::by_id(c, &account_id, &id))
            .await?
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("project `{project_id}` not found")))
    }

    pub async fn get(&self, actor: &Actor, project_id: String) -> Result<ImageSourceView> {
        self.owned_project(actor, &project_id).await?;
        let id = project_id.clone();
        self.store
            .call(move |c| store::images::get(c, &id))
            .await?
            .map(|stored| ImageSourceView::from(&stored))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "project `{project_id}` has no image source; connect one with POST /v1/projects/{project_id}/image"
                ))
            })
    }

    /// A deploy's `image`: a tag or digest of the connected repository, checked against
    /// it; returns what the deploy asks the pipeline for.
    pub async fn selector(
        &self,
        actor: &Actor,
        project_id: String,
        requested: &str,
    ) -> Result<String> {
        self.owned_project(actor, &project_id).await?;
        let id = project_id.clone();
        let stored = self
            .store
            .call(move |c| store::images::get(c, &id))
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "image is for projects whose source is an image; project `{project_id}` has none"
                ))
            })?;
        let connected = ImageReference::parse(&stored.reference)?;
        let chosen = connected.with_selector(requested)?;
        crate::registry_api::check_host(
            &chosen.registry(),
            &self.egress,
            crate::registry_api::Unresolved::Allow,
        )
        .await?;
        Ok(chosen.pull_selector())
    }

    /// Connects `reference` as the project's source; returns the view and the new webhook
    /// secret (shown once). A git-connected project answers 409 unless `replace`, which
    /// disconnects git in the same transaction.
    pub async fn connect(
        &self,
        actor: &Actor,
        project_id: String,
        reference: ImageReference,
        replace: bool,
    ) -> Result<(ImageSourceView, String)> {
        self.owned_project(actor, &project_id).await?;
        // Refused up front: a host that only resolves inside would fail every deploy.
        crate::registry_api::check_host(
            &reference.registry(),
            &self.egress,
            crate::registry_api::Unresolved::Allow,
        )
        .await?;
        let secret = format!("whsec_{}", ids::random_base62(32));
        let now = clock::now();
        let stored = StoredImageSource {
            project_id: project_id.clone(),
            reference: reference.to_string(),
            webhook_secret_sha256: sha256(&secret),
            created_at: now.clone(),
            updated_at: now,
            last_delivery_at: None,
            last_delivery_result: None,
        };
        let audit = store::Audit::by(actor, "image.connect", &project_id);
        let view = self
            .store
            .write_audited(audit, move |tx| {
                if store::git::get(tx, &stored.project_id)?.is_some() {
                    if !replace {
                        return Err(Error::Conflict(format!(
                            "project `{}` takes its releases from a git repository; send \"replace\": true to switch it to the image (the git connection is removed)",
                            stored.project_id
                        )));
                    }
                    store::git::delete(tx, &stored.project_id)?;
                }
                store::images::upsert(tx, &stored)?;
                let saved = store::images::get(tx, &stored.project_id)?
                    .ok_or_else(|| Error::Internal("the image source vanished".to_owned()))?;
                Ok(ImageSourceView::from(&saved))
            })
            .await?;
        Ok((view, secret))
    }

    pub async fn disconnect(&self, actor: &Actor, project_id: String) -> Result<ImageSourceView> {
        self.owned_project(actor, &project_id).await?;
        let audit = store::Audit::by(actor, "image.disconnect", &project_id);
        self.store
            .write_audited(audit, move |tx| {
                let found = store::images::get(tx, &project_id)?.ok_or_else(|| {
                    Error::NotFound(format!("project `{project_id}` has no image source"))
                })?;
                store::images::delete(tx, &project_id)?;
                Ok(ImageSourceView::from(&found))
            })
            .await
    }

    /// A registry's push notification for the project, authenticated by the project's
    /// image webhook secret (`token`). Deploys when a push moved the connected tag of the
    /// connected repository; anything else is recorded as ignored, with the reason.
    pub async fn handle_delivery(
        &self,
        project_id: String,
        token: Option<String>,
        body: &[u8],
        client_addr: Option<IpAddr>,
    ) -> Result<ImageDelivery> {
        let rejected = || {
            Error::Unauthenticated(
                "the webhook secret is missing or does not match (send it as `Authorization: Bearer <secret>` or `?token=<secret>`)"
                    .to_owned(),
            )
        };
        let id = project_id.clone();
        let found = self
            .store
            .call(move |c| {
                Ok((
                    store::projects::by_id_unscoped(c, &id)?,
                    store::images::get(c, &id)?,
                ))
            })
            .await?;
        let (Some(project), Some(stored)) = found else {
            return Err(rejected());
        };
        let presented = token.ok_or_else(rejected)?;
        if !constant_time_eq(&sha256(&presented), &stored.webhook_secret_sha256) {
            return Err(rejected());
        }
        let outcome = match (parse_pushes(body), ImageReference::parse(&stored.reference)) {
            (Err(why), _) => ImageDelivery::Ignored { reason: why },
            (_, Err(err)) => ImageDelivery::Ignored {
                reason: err.to_string(),
            },
            (Ok(pushes), Ok(reference)) => match matching_push(&pushes, &reference) {
                Err(reason) => ImageDelivery::Ignored { reason },
                Ok(()) => {
                    let actor = Actor::webhook(
                        project.account_id.clone(),
                        project.handle.clone(),
                        client_addr,
                    );
                    let deploy = self
                        .deploys
                        .enqueue(&actor, project.id.clone(), None, "webhook")
                        .await?;
                    ImageDelivery::Queued {
                        deploy_id: deploy.id,
                    }
                }
            },
        };
        let result = match &outcome {
            ImageDelivery::Queued { deploy_id } => format!("queued {deploy_id}"),
            ImageDelivery::Ignored { reason } => format!("ignored: {reason}"),
        };
        tracing::info!(project = %project.id, %result, "registry delivery");
        let id = project.id.clone();
        self.store
            .call(move |c| store::images::record_delivery(c, &id, &clock::now(), &result))
            .await?;
        Ok(outcome)
    }
}

/// The pushes a delivery reports: the distribution registry's envelope
/// (`{"events":[{"action":"push","target":{"repository","tag","digest"}}]}`) or Docker
/// Hub's (`{"push_data":{"tag"},"repository":{"repo_name"}}`).
fn parse_pushes(body: &[u8]) -> std::result::Result<Vec<Push>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("the body is not JSON ({err})"))?;
    if let Some(events) = value.get("events").and_then(|e| e.as_array()) {
        return Ok(events
            .iter()
            .filter(|event| event.get("action").and_then(|a| a.as_str()) == Some("push"))
            .filter_map(|event| {
                let target = event.get("target")?;
                Some(Push {
                    repository: target.get("repository")?.as_str()?.to_owned(),
                    tag: target
                        .get("tag")
                        .and_then(|t| t.as_str())
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                })
            })
            .collect());
    }
    if let (Some(tag), Some(repository)) = (
        value.pointer("/push_data/tag").and_then(|t| t.as_str()),
        value
            .pointer("/repository/repo_name")
            .and_then(|r| r.as_str()),
    ) {
        return Ok(vec![Push {
            repository: repository.to_owned(),
            tag: Some(tag.to_owned()),
        }]);
    }
    Err("the body is neither a registry notification envelope (`events`) nor a Docker Hub push (`push_data`)".to_owned())
}

/// Whether one of `pushes` moved the connected tag of the connected repository; the
/// reason when none did.
fn matching_push(pushes: &[Push], reference: &ImageReference) -> std::result::Result<(), String> {
    if reference.digest().is_some() {
        return Err(format!(
            "the connected image {reference} is pinned to a digest; a push cannot move it"
        ));
    }
    let tag = reference.tag_or_latest();
    let path = reference.remote_path();
    let same_repository =
        |push: &Push| push.repository == path || push.repository == reference.repository();
    if pushes.is_empty() {
        return Err("the delivery reports no push".to_owned());
    }
    if pushes
        .iter()
        .any(|push| same_repository(push) && push.tag.as_deref() == Some(tag))
    {
        return Ok(());
    }
    let seen: Vec<String> = pushes
        .iter()
        .map(|push| match &push.tag {
            Some(t) => format!("{}:{t}", push.repository),
            None => format!("{} (no tag)", push.repository),
        })
        .collect();
    Err(format!(
        "no push of {path}:{tag}, the connected tag (the delivery reports {})",
        seen.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_deploy_only_a_push_of_the_connected_tag() {
        let reference = ImageReference::parse("127.0.0.1:5932/team/app:1").unwrap();
        let envelope = |repository: &str, tag: Option<&str>, action: &str| {
            serde_json::json!({"events": [
                {"action": action, "target": {"mediaType": "application/octet-stream", "repository": repository, "digest": "sha256:aa"}},
                {"action": action, "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": repository, "digest": "sha256:bb", "tag": tag}}
            ]})
            .to_string()
        };
        let check = |body: String| matching_push(&parse_pushes(body.as_bytes())?, &reference);
        assert_eq!(check(envelope("team/app", Some("1"), "push")), Ok(()));
        assert!(check(envelope("team/app", Some("2"), "push"))
            .unwrap_err()
            .contains("no push of team/app:1"));
        assert!(check(envelope("team/other", Some("1"), "push")).is_err());
        assert!(check(envelope("team/app", Some("1"), "pull"))
            .unwrap_err()
            .contains("no push"));
        let hub =
            serde_json::json!({"push_data": {"tag": "1"}, "repository": {"repo_name": "team/app"}});
        assert_eq!(check(hub.to_string()), Ok(()));
        assert!(check("{}".to_owned()).unwrap_err().contains("neither"));
        assert!(check("not json".to_owned())
            .unwrap_err()
            .contains("not JSON"));
        let pinned = ImageReference::parse(&format!("a/b@sha256:{}", "0".repeat(64))).unwrap();
        assert!(matching_push(
            &[Push {
                repository: "a/b".into(),
                tag: Some("latest".into())
            }],
            &pinned
        )
        .unwrap_err()
        .contains("pinned"));
        let official = ImageReference::parse("nginx").unwrap();
        assert_eq!(
            matching_push(
                &[Push {
                    repository: "library/nginx".into(),
                    tag: Some("latest".into())
                }],
                &official
            ),
            Ok(())
        );
        assert!(constant_time_eq(&sha256("a"), &sha256("a")));
        assert!(!constant_time_eq(&sha256("a"), &sha256("b")));
    }
}
