//! A project's git connection: connect (verified by a real fetch), who may use which
//! repository (`Deploys::permit_repo`), the webhook signing secret (returned once, rotated on
//! demand), and handling of signed deliveries: a push to the connected branch deploys
//! production; pull request events and pushes to other branches create, update or remove
//! previews (`previews`).
//! Invariants: secrets are sealed at rest and appear in exactly one response each, the one
//! that created them; a local repository is used only by an account the operator allows
//! and never by two accounts; a delivery deploys only the branch's head as fetched when it
//! arrived, and a replayed body is ignored whatever its delivery id.

use std::{net::IpAddr, ops::Deref, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{
    accounts::Actor,
    clock,
    deploy::Deploys,
    error::{Error, Result},
    ids,
    model::build::{RootDir, WatchPath},
    previews::{HookOutcome, Previews},
    projects::Project,
    secrets::SecretBox,
    source::{
        self, EgressPolicy, GitRef, Mirror, PullRequestAction, PullRequestEvent, PushEvent,
        RepoLocation,
    },
    store::{
        self,
        git::{DeliveryKey, Seen, StoredConnection},
        Store,
    },
};

/// How long a delivery's id and body are remembered: within it, a replay is ignored
/// whatever delivery id it carries. Older replays still deploy nothing but the branch's
/// current head (`source::confirm_head`).
pub const DELIVERY_MEMORY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The git connections handle: cheap to clone, one per daemon. Deliveries queue
/// production deploys through `Deploys` and previews through `Previews`.
#[derive(Clone)]
pub struct GitConnections(Arc<Inner>);

pub struct Inner {
    deploys: Deploys,
    previews: Previews,
    store: Store,
    /// Seals webhook secrets and access tokens, opens them to verify and fetch.
    secrets: SecretBox,
    /// Where the projects' mirrors live (`<data_dir>/repos`).
    repos_dir: PathBuf,
    /// `deploy.fetch_timeout_secs`: a connect's or a delivery's fetch gives up after it.
    fetch_timeout: Duration,
    /// Which networks a fetch may reach (`git.allowed_networks`).
    egress: EgressPolicy,
}

impl GitConnections {
    pub fn new(
        deploys: Deploys,
        previews: Previews,
        store: Store,
        secrets: SecretBox,
        repos_dir: PathBuf,
        fetch_timeout: Duration,
        egress: EgressPolicy,
    ) -> Self {
        Self(Arc::new(Inner {
            deploys,
            previews,
            store,
            secrets,
            repos_dir,
            fetch_timeout,
            egress,
        }))
    }
}

// Private to this module: the handle's parts are read as fields.
impl Deref for GitConnections {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

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

/// A project has one source at a time: connecting git to one that takes its releases from
/// an image is refused, saying how to switch.
fn image_source_conflict(project_id: &str) -> Error {
    Error::Conflict(format!(
        "project `{project_id}` takes its releases from an image; disconnect it first (DELETE /v1/projects/{project_id}/image), then connect the repository"
    ))
}

/// A webhook secret: 32 random base62 characters prefixed for recognition.
fn new_webhook_secret() -> String {
    format!("whsec_{}", ids::random_base62(32))
}

impl GitConnections {
    async fn owned_project(&self, actor: &Actor, project_id: &str) -> Result<()> {
        let account_id = actor.account_id.clone();
        let id = project_id.to_owned();
        self.store
            .call(move |c| store::projects::by_id(c, &account_id, &id))
            .await?
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("project `{project_id}` not found")))
    }

    /// Connects (or reconnects) a repository after fetching it once, so a bad URL, an
    /// unreachable host or an unknown branch is a 422 now rather than a failed deploy later.
    /// Returns the view and the new webhook secret (shown once).
    pub async fn connect(
        &self,
        actor: &Actor,
        project_id: String,
        request: ConnectRequest,
    ) -> Result<(ConnectionView, String)> {
        self.owned_project(actor, &project_id).await?;
        // Checked before the fetch (a quick answer) and again in the write (a race).
        let id = project_id.clone();
        let image = self.store.call(move |c| store::images::get(c, &id)).await?;
        if image.is_some() {
            return Err(image_source_conflict(&project_id));
        }
        self.deploys
            .permit_repo(&actor.account_id, actor.handle.as_str(), &request.repo)
            .await?;
        let mirror_path = self.repos_dir.join(format!("{project_id}.git"));
        let timeout = self.fetch_timeout;
        let egress = self.egress.clone();
        let location = request.repo.clone();
        let branch = request.branch.clone();
        let token = request.access_token.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mirror = Mirror::open_or_init(&mirror_path)?;
            mirror.fetch(&location, token.as_deref(), timeout, &egress)?;
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
            webhook_secret: self.secrets.seal_str(&secret),
            access_token: request
                .access_token
                .as_deref()
                .map(|t| self.secrets.seal_str(t)),
            created_at: now.clone(),
            updated_at: now,
            last_delivery_at: None,
            last_delivery_event: None,
            last_delivery_result: None,
        };
        let audit = store::Audit::by(actor, "git.connect", &stored.project_id);
        let view = self
            .store
            .write_audited(audit, move |tx| {
                if store::images::get(tx, &stored.project_id)?.is_some() {
                    return Err(image_source_conflict(&stored.project_id));
                }
                store::git::upsert(tx, &stored)?;
                let saved = store::git::get(tx, &stored.project_id)?
                    .ok_or_else(|| Error::Internal("the connection vanished".to_owned()))?;
                Ok(ConnectionView::from(&saved))
            })
            .await?;
        Ok((view, secret))
    }

    pub async fn get(&self, actor: &Actor, project_id: String) -> Result<ConnectionView> {
        self.owned_project(actor, &project_id).await?;
        self.store
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
    pub async fn rotate_secret(&self, actor: &Actor, project_id: String) -> Result<String> {
        self.owned_project(actor, &project_id).await?;
        let secret = new_webhook_secret();
        let sealed = self.secrets.seal_str(&secret);
        let audit = store::Audit::by(actor, "git.rotate_secret", &project_id);
        self.store
        .write_audited(audit, move |tx| {
            if !store::git::set_secret(tx, &project_id, &sealed, &clock::now())? {
                // The project exists (it was just checked), so this is a state the
                // request conflicts with, not a missing resource.
                return Err(Error::Conflict(format!(
                    "project `{project_id}` has no git connection to rotate a secret of; connect one with POST /v1/projects/{project_id}/git"
                )));
            }
            Ok(())
        })
        .await?;
        Ok(secret)
    }
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
    /// Its delivery id or its body was received before (a redelivery or a replay).
    Duplicate(String),
    Ignored(String),
    /// It named a commit that is not the branch's head as fetched now.
    Stale(String),
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
            DeliveryOutcome::Duplicate(reason) => format!("duplicate: {reason}"),
            DeliveryOutcome::Ignored(reason) => format!("ignored: {reason}"),
            DeliveryOutcome::Stale(reason) => format!("stale: {reason}"),
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

impl GitConnections {
    /// Verifies and acts on a delivery. An unknown project, a project without a connection,
    /// and a bad signature all answer 401 alike, so the endpoint reveals nothing unsigned.
    pub async fn handle_delivery(
        &self,
        project_id: String,
        delivery: Delivery,
        body: Bytes,
    ) -> Result<DeliveryOutcome> {
        let rejected = || {
            Error::Unauthenticated("the webhook signature is missing or does not match".to_owned())
        };
        let id = project_id.clone();
        let found = self
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
        let secret = self.secrets.open(&stored.webhook_secret)?;
        let verified = if delivery.github_signature.is_some() {
            source::verify_github(&secret, &body, delivery.github_signature.as_deref()).is_ok()
        } else if delivery.gitea_signature.is_some() {
            source::verify_gitea(&secret, &body, delivery.gitea_signature.as_deref()).is_ok()
        } else if delivery.gitlab_token.is_some() {
            source::verify_gitlab(&secret, delivery.gitlab_token.as_deref()).is_ok()
        } else {
            false
        };
        if !verified {
            return Err(rejected());
        }
        // The rest runs as a task of its own: a provider that hangs up (GitHub waits 10 s,
        // and the delivery now waits for a fetch) must not cancel a delivery half handled.
        let connections = self.clone();
        tokio::spawn(async move {
            connections
                .act_on_delivery(&project, &stored, &delivery, &body)
                .await
        })
        .await
        .map_err(|err| Error::Internal(format!("the delivery task failed: {err}")))?
    }
}

/// The event a delivery carries, parsed before anything is recorded.
enum Event {
    Ping,
    Push(PushEvent),
    PullRequest(PullRequestEvent),
    Other(String),
}

impl GitConnections {
    async fn act_on_delivery(
        &self,
        project: &Project,
        stored: &StoredConnection,
        delivery: &Delivery,
        body: &[u8],
    ) -> Result<DeliveryOutcome> {
        let event_name = delivery.event.clone().unwrap_or_else(|| "push".to_owned());
        let now = clock::now();
        let event = match Event::parse(&event_name, body) {
            Ok(event) => event,
            Err(err) => {
                let (id, at, name) = (project.id.clone(), now.clone(), event_name.clone());
                let result = failure(&err);
                self.store
                    .call(move |c| store::git::record_delivery(c, &id, &at, &name, &result))
                    .await?;
                return Err(err);
            }
        };
        // The signature (GitHub, Gitea) covers the body but not the delivery id, and GitLab's
        // token covers neither, so the body's digest is what recognises a replay.
        let digest: [u8; 32] = Sha256::digest(body).into();
        let subject = match &event {
            Event::Push(push) => Some(push.git_ref.clone()),
            _ => None,
        };
        let remembered = {
            let project_id = project.id.clone();
            let delivery_id = delivery.delivery_id.clone();
            let subject = subject.clone();
            let at = now.clone();
            let since = clock::format(time::OffsetDateTime::now_utc() - DELIVERY_MEMORY);
            self.store
                .call(move |c| {
                    let key = DeliveryKey {
                        project_id: &project_id,
                        delivery_id: delivery_id.as_deref(),
                        body_sha256: &digest,
                        subject: subject.as_deref(),
                    };
                    store::git::remember_delivery(c, &key, &at, &since)
                })
                .await?
        };
        let outcome = match remembered {
        Seen::DeliveryId(at) => Ok(DeliveryOutcome::Duplicate(format!(
            "delivery id `{}` was received at {at}",
            delivery.delivery_id.as_deref().unwrap_or_default()
        ))),
        Seen::Body(at) => Ok(DeliveryOutcome::Duplicate(format!(
            "the same body was received at {at}; a replayed delivery is ignored whatever its delivery id"
        ))),
        Seen::New => self.dispatch(project, stored, delivery, event).await,
    };
        let project_id = project.id.clone();
        let delivery_id = delivery.delivery_id.clone();
        let acted_on_push = matches!(
            outcome,
            Ok(DeliveryOutcome::Queued { .. } | DeliveryOutcome::PreviewRemoved { .. })
        ) && subject.is_some();
        let failed = outcome.is_err();
        let result = match &outcome {
            Ok(outcome) => outcome.describe(),
            Err(err) => failure(err),
        };
        self.store
            .call(move |c| {
                let key = DeliveryKey {
                    project_id: &project_id,
                    delivery_id: delivery_id.as_deref(),
                    body_sha256: &digest,
                    subject: subject.as_deref(),
                };
                if failed {
                    // Forgotten, so the provider's redelivery of a delivery that failed here
                    // (the repository was unreachable) is handled rather than a duplicate.
                    store::git::forget_delivery(c, &key)?;
                }
                if acted_on_push {
                    store::git::retire_earlier_bodies(c, &key)?;
                }
                store::git::record_delivery(c, &project_id, &now, &event_name, &result)?;
                Ok(())
            })
            .await?;
        outcome
    }
}

impl Event {
    fn parse(name: &str, body: &[u8]) -> Result<Event> {
        Ok(match name {
            "ping" | "Ping Hook" => Event::Ping,
            "push" | "Push Hook" => Event::Push(PushEvent::parse(body)?),
            "pull_request" | "Merge Request Hook" => {
                Event::PullRequest(PullRequestEvent::parse(body)?)
            }
            other => Event::Other(other.to_owned()),
        })
    }
}

/// A failed delivery's recorded result, so it says why where deliveries are shown (an
/// unreachable repository, a malformed payload); internal details stay in the log.
fn failure(err: &Error) -> String {
    match err {
        Error::Store(_) | Error::Internal(_) => {
            "failed: an internal error; the server log has the detail".to_owned()
        }
        other => format!("failed: {other}"),
    }
}

impl GitConnections {
    /// Acts on a new (not replayed) delivery.
    async fn dispatch(
        &self,
        project: &Project,
        stored: &StoredConnection,
        delivery: &Delivery,
        event: Event,
    ) -> Result<DeliveryOutcome> {
        let actor = Actor::webhook(
            project.account_id.clone(),
            project.handle.clone(),
            delivery.client_addr,
        );
        let mut heads = FetchedHeads {
            connections: self,
            project,
            stored,
            fetched: false,
        };
        Ok(match event {
        Event::Ping => DeliveryOutcome::Pong,
        Event::Push(push) => match (&push.branch, push.deleted) {
            (Some(branch), true) if *branch == stored.branch => {
                DeliveryOutcome::Ignored("the push deleted the branch".to_owned())
            }
            (Some(branch), false) if *branch == stored.branch => {
                let head = heads.head_of(branch).await?;
                match source::confirm_head(branch, push.after.as_deref(), head.as_deref()) {
                    Ok(head) => match self.unwatched(project, &head).await? {
                        Some(reason) => DeliveryOutcome::Ignored(reason),
                        None => {
                            let deploy = self
                                .deploys
                                .enqueue(&actor, project.id.clone(), Some(head), "webhook")
                                .await?;
                            DeliveryOutcome::Queued {
                                deploy_id: deploy.id,
                                preview_id: None,
                            }
                        }
                    },
                    Err(reason) => DeliveryOutcome::Stale(reason),
                }
            }
            (Some(branch), deleted) => self.previews.branch_pushed(
                &actor,
                project,
                branch,
                push.after.clone(),
                deleted,
                async || heads.head_of(branch).await,
            )
            .await?
            .into(),
            (None, _) => DeliveryOutcome::Ignored(format!("`{}` is not a branch", push.git_ref)),
        },
        Event::PullRequest(pull) => match pull.action {
            // A fork's code would run with the project's env (its secrets included)
            // and on this host; only branches of the connected repository get previews.
            PullRequestAction::Updated if pull.from_fork => DeliveryOutcome::Ignored(format!(
                "pull request #{} comes from a fork; previews are built only for branches of the connected repository, since a fork's code would run with the project's env",
                pull.number
            )),
            PullRequestAction::Updated => {
                let head = heads.head_of(&pull.branch).await?;
                let named = pull.head_sha.as_deref();
                match source::confirm_head(&pull.branch, named, head.as_deref()) {
                    Ok(head) => self.previews.pull_request_updated(
                        &actor,
                        project,
                        pull.number,
                        &pull.branch,
                        Some(head),
                    )
                    .await?
                    .into(),
                    Err(reason) => DeliveryOutcome::Stale(reason),
                }
            }
            PullRequestAction::Closed => {
                self.previews.pull_request_closed(&actor, project, pull.number)
                    .await?
                    .into()
            }
            PullRequestAction::Other(action) => DeliveryOutcome::Ignored(format!(
                "pull request action `{action}` is not acted on"
            )),
        },
        Event::Other(other) => DeliveryOutcome::Ignored(format!("event `{other}` is not acted on")),
    })
    }
}

/// The most of a `cantila.toml` read for its watch paths.
const SETTINGS_FILE_LIMIT: usize = 64 * 1024;

impl GitConnections {
    /// Why a push of `head` to production deploys nothing: the project has watch paths
    /// (its API settings', else its `cantila.toml`'s at `head`) and no file changed since
    /// the serving release's commit matches one. `None` means deploy: no watch paths,
    /// nothing serving, a commit the mirror cannot compare, or a watched change (a change
    /// of the settings file itself counts). A manual deploy never asks.
    async fn unwatched(&self, project: &Project, head: &str) -> Result<Option<String>> {
        let project_id = project.id.clone();
        let serving = self
            .store
            .call(move |c| {
                store::deploys::of_target_with_status(
                    c,
                    &project_id,
                    None,
                    &[crate::deploy::DeployStatus::Running],
                )
            })
            .await?
            .into_iter()
            .find_map(|deploy| deploy.commit_sha);
        let Some(serving) = serving else {
            return Ok(None);
        };
        let api_paths = project.build.watch_paths.clone();
        let root = project
            .build
            .root_dir
            .clone()
            .unwrap_or_else(RootDir::repository);
        let settings_file = root.join(crate::plan::CONFIG_FILE);
        let mirror_path = self.repos_dir.join(format!("{}.git", project.id));
        let head_sha = head.to_owned();
        let serving_commit = serving.clone();
        let file = settings_file.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<_> {
            let mirror = Mirror::open_or_init(&mirror_path)?;
            let (watch_paths, from) = if api_paths.is_empty() {
                // A file that does not parse decides nothing here: the deploy reports it.
                let from_file = mirror
                    .read_file(&head_sha, &file, SETTINGS_FILE_LIMIT)?
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .and_then(|text| crate::plan::parse_file_settings(&text, &file).ok())
                    .map(|settings| settings.build.watch_paths)
                    .unwrap_or_default();
                (from_file, "the watch paths of the settings file")
            } else {
                (api_paths, "the project's watch paths")
            };
            // Without watch paths every push deploys: nothing to compare.
            if watch_paths.is_empty() {
                return Ok(None);
            }
            match mirror.changed_paths(&serving, &head_sha) {
                Ok(changed) => Ok(Some((watch_paths, from, changed))),
                // The serving commit is gone (a force push): nothing to compare with.
                Err(source::SourceError::RefNotFound(_)) => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))??;
        let Some((watch_paths, from, changed)) = found else {
            return Ok(None);
        };
        Ok(unwatched_reason(
            &watch_paths,
            from,
            &changed,
            &settings_file,
            (head, &serving_commit),
        ))
    }
}

/// Why a change of `changed` paths deploys nothing under `watch_paths` (`from` says whose),
/// or `None` when one is watched (or there are no watch paths). A change to the settings
/// file always deploys: it may change the watch paths themselves.
fn unwatched_reason(
    watch_paths: &[WatchPath],
    from: &str,
    changed: &[String],
    settings_file: &str,
    (head, serving): (&str, &str),
) -> Option<String> {
    if watch_paths.is_empty() {
        return None;
    }
    let watched = changed
        .iter()
        .any(|path| path == settings_file || watch_paths.iter().any(|watch| watch.matches(path)));
    if watched {
        return None;
    }
    let globs: Vec<&str> = watch_paths.iter().map(WatchPath::as_str).collect();
    let shown: Vec<&str> = changed.iter().take(5).map(String::as_str).collect();
    let more = changed.len().saturating_sub(shown.len());
    let files = if changed.is_empty() {
        "no file changed".to_owned()
    } else if more > 0 {
        format!("changed: {} and {more} more", shown.join(", "))
    } else {
        format!("changed: {}", shown.join(", "))
    };
    Some(format!(
        "no changed file matches {from} ({}) between the serving commit {} and {}; {files}",
        globs.join(", "),
        short(serving),
        short(head),
    ))
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

/// Branch heads as the repository has them when a delivery arrives: the project's mirror
/// is fetched once, on the first question, under the same checks as a deploy's fetch.
struct FetchedHeads<'a> {
    connections: &'a GitConnections,
    project: &'a Project,
    stored: &'a StoredConnection,
    fetched: bool,
}

impl FetchedHeads<'_> {
    /// The commit `branch` points to, or `None` when the repository has no such branch.
    async fn head_of(&mut self, branch: &str) -> Result<Option<String>> {
        let location = RepoLocation::parse(&self.stored.repo)?;
        if !self.fetched {
            self.connections
                .deploys
                .permit_repo(
                    &self.project.account_id,
                    self.project.handle.as_str(),
                    &location,
                )
                .await?;
        }
        let token = self
            .stored
            .access_token
            .as_deref()
            .map(|sealed| self.connections.secrets.open_string(sealed))
            .transpose()?;
        let mirror_path = self
            .connections
            .repos_dir
            .join(format!("{}.git", self.project.id));
        let timeout = self.connections.fetch_timeout;
        let egress = self.connections.egress.clone();
        let fetch = !self.fetched;
        let branch = GitRef::parse(&format!("refs/heads/{branch}"))?;
        let head = tokio::task::spawn_blocking(move || -> Result<Option<String>> {
            let mirror = Mirror::open_or_init(&mirror_path)?;
            if fetch {
                mirror.fetch(&location, token.as_deref(), timeout, &egress)?;
            }
            match mirror.resolve(&branch) {
                Ok(commit) => Ok(Some(commit.sha)),
                Err(source::SourceError::RefNotFound(_)) => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))??;
        self.fetched = true;
        Ok(head)
    }
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
            HookOutcome::Stale(reason) => DeliveryOutcome::Stale(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_outside_every_watch_path_is_ignored() {
        let watch = [
            WatchPath::parse("apps/web/**").unwrap(),
            WatchPath::parse("packages/**").unwrap(),
        ];
        let check = |changed: &[&str]| {
            let changed: Vec<String> = changed.iter().map(|p| (*p).to_owned()).collect();
            unwatched_reason(
                &watch,
                "the project's watch paths",
                &changed,
                "apps/web/cantila.toml",
                ("b".repeat(40).as_str(), "a".repeat(40).as_str()),
            )
        };
        assert_eq!(check(&["apps/web/src/app.js"]), None);
        assert_eq!(check(&["README.md", "packages/ui/button.js"]), None);
        assert_eq!(check(&["apps/web/cantila.toml"]), None);
        let reason = check(&["apps/api/main.go", "README.md"]).unwrap();
        assert!(
            reason.contains("apps/web/**, packages/**")
                && reason.contains("apps/api/main.go, README.md")
                && reason.contains(&"a".repeat(12)),
            "{reason}"
        );
        let many: Vec<String> = (0..8).map(|i| format!("docs/{i}.md")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(check(&many).unwrap().contains("and 3 more"));
        assert_eq!(
            unwatched_reason(&[], "none", &["x".to_owned()], "cantila.toml", ("b", "a")),
            None
        );
    }
}
