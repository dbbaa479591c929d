//! A project's git connection: connect (verified by a real fetch), the webhook signing
//! secret (returned once, rotated on demand), and handling of signed deliveries: a push
//! to the connected branch deploys production; pull request events and pushes to other
//! branches create, update or remove previews (`previews`).
//! Invariant: secrets are sealed at rest and appear in exactly one response each, the one
//! that created them.

use std::{net::IpAddr, time::Duration};

use crate::{
    accounts::Actor,
    audit, clock, deploy,
    error::{Error, Result},
    ids,
    previews::{self, HookOutcome},
    source::{self, GitRef, Mirror, PullRequestAction, RepoLocation},
    state::AppState,
    store::{self, git::StoredConnection},
};

/// A validated request to connect a repository.
#[derive(Debug)]
pub struct ConnectRequest {
    pub repo: RepoLocation,
    pub branch: GitRef,
    /// For private https repositories.
    pub access_token: Option<String>,
}

/// The connection as the API shows it: never a secret.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    pub repo: String,
    pub branch: String,
    pub secret_set: bool,
    pub access_token_set: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_delivery_at: Option<String>,
    pub last_delivery_event: Option<String>,
    pub last_delivery_result: Option<String>,
}

impl From<&StoredConnection> for ConnectionView {
    fn from(stored: &StoredConnection) -> Self {
        Self {
            repo: stored.repo.clone(),
            branch: stored.branch.clone(),
            secret_set: !stored.webhook_secret.is_empty(),
            access_token_set: stored.access_token.is_some(),
            created_at: stored.created_at.clone(),
            updated_at: stored.updated_at.clone(),
            last_delivery_at: stored.last_delivery_at.clone(),
            last_delivery_event: stored.last_delivery_event.clone(),
            last_delivery_result: stored.last_delivery_result.clone(),
        }
    }
}

/// A webhook secret: 32 random base62 characters prefixed for recognition.
fn new_webhook_secret() -> String {
    format!("whsec_{}", ids::random_base62(32))
}

async fn owned_project(app: &AppState, actor: &Actor, project_id: &str) -> Result<()> {
    let account_id = actor.account_id.clone();
    let id = project_id.to_owned();
    app.store
        .call(move |c| store::projects::by_id(c, &account_id, &id))
        .await?
        .map(|_| ())
        .ok_or_else(|| Error::NotFound(format!("project `{project_id}` not found")))
}

/// Connects (or reconnects) a repository after fetching it once, so a bad URL, an
/// unreachable host or an unknown branch is a 422 now rather than a failed deploy later.
/// Returns the view and the new webhook secret (shown once).
pub async fn connect(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    request: ConnectRequest,
) -> Result<(ConnectionView, String)> {
    owned_project(app, actor, &project_id).await?;
    request
        .repo
        .check_permitted(&app.config.data_dir, app.config.deploy.allow_local_repos)?;
    let mirror_path = app.config.repos_dir().join(format!("{project_id}.git"));
    let timeout = Duration::from_secs(app.config.deploy.fetch_timeout_secs);
    let location = request.repo.clone();
    let branch = request.branch.clone();
    let token = request.access_token.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mirror = Mirror::open_or_init(&mirror_path)?;
        mirror.fetch(&location, token.as_deref(), timeout)?;
        mirror.resolve(&branch)?;
        Ok(())
    })
    .await
    .map_err(|err| Error::Internal(err.to_string()))??;

    let secret = new_webhook_secret();
    let now = clock::now();
    let stored = StoredConnection {
        project_id: project_id.clone(),
        repo: request.repo.to_string(),
        branch: request.branch.as_str().to_owned(),
        webhook_secret: app.secrets.seal_str(&secret),
        access_token: request
            .access_token
            .as_deref()
            .map(|t| app.secrets.seal_str(t)),
        created_at: now.clone(),
        updated_at: now,
        last_delivery_at: None,
        last_delivery_event: None,
        last_delivery_result: None,
    };
    let actor = actor.clone();
    let view = app
        .store
        .call(move |connection| {
            let tx = connection.transaction()?;
            store::git::upsert(&tx, &stored)?;
            audit::record(&tx, &actor, "git.connect", Some(&stored.project_id))?;
            let saved = store::git::get(&tx, &stored.project_id)?
                .ok_or_else(|| Error::Internal("the connection vanished".to_owned()))?;
            tx.commit()?;
            Ok(ConnectionView::from(&saved))
        })
        .await?;
    Ok((view, secret))
}

pub async fn get(app: &AppState, actor: &Actor, project_id: String) -> Result<ConnectionView> {
    owned_project(app, actor, &project_id).await?;
    app.store
        .call(move |c| {
            store::git::get(c, &project_id)?
                .map(|stored| ConnectionView::from(&stored))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "project `{project_id}` has no git connection; connect one with POST /v1/projects/{project_id}/git"
                    ))
                })
        })
        .await
}

/// Replaces the webhook secret; the new one is returned once.
pub async fn rotate_secret(app: &AppState, actor: &Actor, project_id: String) -> Result<String> {
    owned_project(app, actor, &project_id).await?;
    let secret = new_webhook_secret();
    let sealed = app.secrets.seal_str(&secret);
    let actor = actor.clone();
    app.store
        .call(move |connection| {
            let tx = connection.transaction()?;
            if !store::git::set_secret(&tx, &project_id, &sealed, &clock::now())? {
                // The project exists (it was just checked), so this is a state the
                // request conflicts with, not a missing resource.
                return Err(Error::Conflict(format!(
                    "project `{project_id}` has no git connection to rotate a secret of; connect one with POST /v1/projects/{project_id}/git"
                )));
            }
            audit::record(&tx, &actor, "git.rotate_secret", Some(&project_id))?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    Ok(secret)
}

/// The headers of a webhook delivery that matter.
#[derive(Debug, Default)]
pub struct Delivery {
    pub event: Option<String>,
    pub delivery_id: Option<String>,
    pub github_signature: Option<String>,
    pub gitea_signature: Option<String>,
    pub gitlab_token: Option<String>,
    pub client_addr: Option<IpAddr>,
}

/// What became of a delivery.
#[derive(Debug)]
pub enum DeliveryOutcome {
    Pong,
    Duplicate,
    Ignored(String),
    /// A deploy was queued: production's, or a preview's when `preview_id` is set.
    Queued {
        deploy_id: String,
        preview_id: Option<String>,
    },
    PreviewRemoved {
        preview_id: String,
    },
}

impl DeliveryOutcome {
    fn describe(&self) -> String {
        match self {
            DeliveryOutcome::Pong => "pong".to_owned(),
            DeliveryOutcome::Duplicate => "duplicate".to_owned(),
            DeliveryOutcome::Ignored(reason) => format!("ignored: {reason}"),
            DeliveryOutcome::Queued {
                deploy_id,
                preview_id: None,
            } => format!("queued {deploy_id}"),
            DeliveryOutcome::Queued {
                deploy_id,
                preview_id: Some(preview_id),
            } => format!("queued {deploy_id} for preview {preview_id}"),
            DeliveryOutcome::PreviewRemoved { preview_id } => {
                format!("removed preview {preview_id}")
            }
        }
    }
}

/// Verifies and acts on a delivery. An unknown project, a project without a connection,
/// and a bad signature all answer 401 alike, so the endpoint reveals nothing unsigned.
pub async fn handle_delivery(
    app: &AppState,
    project_id: String,
    delivery: Delivery,
    body: &[u8],
) -> Result<DeliveryOutcome> {
    let rejected =
        || Error::Unauthenticated("the webhook signature is missing or does not match".to_owned());
    let id = project_id.clone();
    let found = app
        .store
        .call(move |c| {
            Ok((
                store::projects::by_id_unscoped(c, &id)?,
                store::git::get(c, &id)?,
            ))
        })
        .await?;
    let (Some(project), Some(stored)) = found else {
        return Err(rejected());
    };
    let secret = app.secrets.open(&stored.webhook_secret)?;
    let verified = if delivery.github_signature.is_some() {
        source::verify_github(&secret, body, delivery.github_signature.as_deref()).is_ok()
    } else if delivery.gitea_signature.is_some() {
        source::verify_gitea(&secret, body, delivery.gitea_signature.as_deref()).is_ok()
    } else if delivery.gitlab_token.is_some() {
        source::verify_gitlab(&secret, delivery.gitlab_token.as_deref()).is_ok()
    } else {
        false
    };
    if !verified {
        return Err(rejected());
    }
    let event = delivery.event.clone().unwrap_or_else(|| "push".to_owned());
    let now = clock::now();
    if let Some(delivery_id) = delivery.delivery_id.clone() {
        let id = project_id.clone();
        let at = now.clone();
        let first = app
            .store
            .call(move |c| store::git::first_delivery(c, &id, &delivery_id, &at))
            .await?;
        if !first {
            return Ok(DeliveryOutcome::Duplicate);
        }
    }
    let actor = Actor::webhook(
        project.account_id.clone(),
        project.handle.clone(),
        delivery.client_addr,
    );
    let outcome = match event.as_str() {
        "ping" | "Ping Hook" => DeliveryOutcome::Pong,
        "push" | "Push Hook" => {
            let push = source::PushEvent::parse(body)?;
            match (&push.branch, push.deleted) {
                (Some(branch), true) if *branch == stored.branch => {
                    DeliveryOutcome::Ignored("the push deleted the branch".to_owned())
                }
                (Some(branch), false) if *branch == stored.branch => {
                    let git_ref = push.after.clone().or(Some(branch.clone()));
                    let deploy =
                        deploy::enqueue(app, &actor, project_id.clone(), git_ref, "webhook")
                            .await?;
                    DeliveryOutcome::Queued {
                        deploy_id: deploy.id,
                        preview_id: None,
                    }
                }
                (Some(branch), deleted) => previews::branch_pushed(
                    app,
                    &actor,
                    &project,
                    branch,
                    push.after.clone(),
                    deleted,
                )
                .await?
                .into(),
                (None, _) => {
                    DeliveryOutcome::Ignored(format!("`{}` is not a branch", push.git_ref))
                }
            }
        }
        "pull_request" | "Merge Request Hook" => {
            let pull = source::PullRequestEvent::parse(body)?;
            match pull.action {
                // A fork's code would run with the project's env (its secrets included)
                // and on this host; only branches of the connected repository get previews.
                PullRequestAction::Updated if pull.from_fork => DeliveryOutcome::Ignored(format!(
                    "pull request #{} comes from a fork; previews are built only for branches of the connected repository, since a fork's code would run with the project's env",
                    pull.number
                )),
                PullRequestAction::Updated => previews::pull_request_updated(
                    app,
                    &actor,
                    &project,
                    pull.number,
                    &pull.branch,
                    pull.head_sha,
                )
                .await?
                .into(),
                PullRequestAction::Closed => {
                    previews::pull_request_closed(app, &actor, &project, pull.number)
                        .await?
                        .into()
                }
                PullRequestAction::Other(action) => DeliveryOutcome::Ignored(format!(
                    "pull request action `{action}` is not acted on"
                )),
            }
        }
        other => DeliveryOutcome::Ignored(format!("event `{other}` is not acted on")),
    };
    let result = outcome.describe();
    let id = project_id.clone();
    app.store
        .call(move |c| store::git::record_delivery(c, &id, &now, &event, &result))
        .await?;
    Ok(outcome)
}

impl From<HookOutcome> for DeliveryOutcome {
    fn from(outcome: HookOutcome) -> Self {
        match outcome {
            HookOutcome::Queued {
                deploy_id,
                preview_id,
            } => DeliveryOutcome::Queued {
                deploy_id,
                preview_id: Some(preview_id),
            },
            HookOutcome::Removed { preview_id } => DeliveryOutcome::PreviewRemoved { preview_id },
            HookOutcome::Ignored(reason) => DeliveryOutcome::Ignored(reason),
        }
    }
}
