//! Preview deployments: a branch, pull request or ref of a project built and released as
//! its own set of containers (labelled `cantila.preview`) at its own hostname
//! `<slug>--<name>-<handle>.<base_domain>`, updated in place by new pushes through the
//! same zero-downtime release path as production, and removed on request, when its pull
//! request closes, or when it has been idle for its TTL.
//! Invariants: a preview never runs with production's data (`PRODUCTION_ONLY_ENV` is never
//! copied into it, and its containers get none of the project's volumes nor its wired
//! database); one hostname belongs to one preview across all accounts; a project never has
//! more than `previews.max_per_project` previews.

use std::{collections::BTreeMap, ops::Deref, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};

use crate::{
    accounts::Actor,
    clock,
    config::PreviewsConfig,
    deploy::{self, Deploy, DeployStatus, Deploys, LogLine, ReleaseTarget},
    error::{Error, Result},
    ids,
    names::{EnvKey, Hostname},
    projects::{self, Project},
    routing::Routing,
    secrets::SecretBox,
    source::GitRef,
    store::{self, Store},
    tls::Tls,
};

pub use crate::model::preview::Preview;

/// The previews handle: cheap to clone, one per daemon. A preview's deploys, its env and
/// its containers go through `Deploys`; the rest is its rows, its route and its
/// certificate.
#[derive(Clone)]
pub struct Previews(Arc<Inner>);

pub struct Inner {
    deploys: Deploys,
    store: Store,
    /// `logs.db`: a removed preview's runtime log lines and metric points are deleted there.
    log_store: Store,
    /// Seals the env overrides.
    secrets: SecretBox,
    /// Forgets a removed preview's certificate.
    tls: Tls,
    routing: Routing,
    config: PreviewsConfig,
    /// Previews are served under it.
    base_domain: String,
}

impl Previews {
    // One handle per part it drives, as the composition root hands them over.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        deploys: Deploys,
        store: Store,
        log_store: Store,
        secrets: SecretBox,
        tls: Tls,
        routing: Routing,
        config: PreviewsConfig,
        base_domain: String,
    ) -> Self {
        Self(Arc::new(Inner {
            deploys,
            store,
            log_store,
            secrets,
            tls,
            routing,
            config,
            base_domain,
        }))
    }
}

// Private to this module: the handle's parts are read as fields.
impl Deref for Previews {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub use crate::deploy::preview_env::{PREVIEW_ENV_KEYS, PRODUCTION_ONLY_ENV};

pub use crate::names::BranchPattern;

/// A validated request to create (or update) a preview.
#[derive(Debug, Clone)]
pub struct PreviewRequest {
    pub source: PreviewSource,
    pub pull_request: Option<u32>,
    /// Replaces the preview's overrides when given.
    pub env: Option<BTreeMap<EnvKey, String>>,
    pub ttl_secs: Option<u64>,
    /// The exact commit to build (a webhook's); the branch head when `None`.
    pub commit: Option<String>,
}

/// What a preview builds.
#[derive(Debug, Clone)]
pub enum PreviewSource {
    Branch(GitRef),
    Ref(GitRef),
}

impl PreviewSource {
    /// `ref: refs/heads/x` is the branch `x`.
    pub fn from_ref(git_ref: GitRef) -> Result<Self> {
        match git_ref.full_branch() {
            Some(branch) => Ok(PreviewSource::Branch(GitRef::parse(branch)?)),
            None => Ok(PreviewSource::Ref(git_ref)),
        }
    }

    fn branch(&self) -> Option<&str> {
        match self {
            PreviewSource::Branch(branch) => Some(branch.as_str()),
            PreviewSource::Ref(_) => None,
        }
    }

    fn text(&self) -> &str {
        match self {
            PreviewSource::Branch(git_ref) | PreviewSource::Ref(git_ref) => git_ref.as_str(),
        }
    }

    /// The ref the deploy fetches: the full branch ref, so a tag of the same name never
    /// wins.
    fn deploy_ref(&self) -> String {
        match self {
            PreviewSource::Branch(branch) => format!("refs/heads/{}", branch.as_str()),
            PreviewSource::Ref(git_ref) => git_ref.as_str().to_owned(),
        }
    }
}

/// A preview with what its deploys say about it.
#[derive(Debug, Clone)]
pub struct PreviewInfo {
    pub preview: Preview,
    /// `building` (nothing serves yet), `updating` (an earlier deploy serves while a new
    /// one builds), `running` or `failed`.
    pub status: &'static str,
    pub url: String,
    /// The newest deploy.
    pub latest: Option<Deploy>,
    /// The deploy that serves, if any.
    pub serving: Option<Deploy>,
    /// The keys of the env overrides (values are never shown).
    pub env_keys: Vec<String>,
}

impl PreviewInfo {
    /// The commit that serves, else the one being built.
    pub fn commit_sha(&self) -> Option<&str> {
        self.serving
            .as_ref()
            .and_then(|d| d.commit_sha.as_deref())
            .or_else(|| self.latest.as_ref().and_then(|d| d.commit_sha.as_deref()))
    }
}

/// `building`, `updating`, `running` or `failed` from the preview's deploys (newest first).
fn status_of(latest: Option<&Deploy>, serving: Option<&Deploy>) -> &'static str {
    match (latest.map(|d| d.status), serving.is_some()) {
        (Some(DeployStatus::Queued | DeployStatus::Building | DeployStatus::Releasing), true) => {
            "updating"
        }
        (Some(DeployStatus::Queued | DeployStatus::Building | DeployStatus::Releasing), false)
        | (None, false) => "building",
        (Some(DeployStatus::Running), _) | (_, true) => "running",
        (Some(DeployStatus::Failed | DeployStatus::Canceled | DeployStatus::Superseded), false) => {
            "failed"
        }
    }
}

/// Lowercase ASCII letters and digits, everything else one `-`, trimmed.
fn slug(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

/// Cuts `text` to `max` bytes (it is ASCII) without leaving a trailing `-`.
fn cut(text: &str, max: usize) -> String {
    text[..text.len().min(max)].trim_end_matches('-').to_owned()
}

/// The DNS label of a preview: `<slug>--<name>-<handle>`, at most `max_len` characters
/// (63, or less under a long base domain). A long slug is cut first; when the project's
/// part alone is too long, the whole label is cut and a short hash of `unique` keeps it
/// distinct. Never `xn--`-like (`--` at positions 3-4), so IDNA-aware clients accept it.
pub fn preview_label(
    source: &str,
    project: &str,
    handle: &str,
    unique: &str,
    max_len: usize,
) -> String {
    let mut slug = slug(source);
    if slug.is_empty() {
        slug = "preview".to_owned();
    }
    if slug.len() == 2 {
        slug.push_str("-preview");
    }
    let owner = format!("{project}-{handle}");
    let full = format!("{slug}--{owner}");
    if full.len() <= max_len {
        return full;
    }
    // Keep at least a few characters of the slug so previews stay recognisable.
    if owner.len() + 2 + 4 <= max_len {
        let room = max_len - owner.len() - 2;
        let mut short = cut(&slug, room);
        if short.len() == 2 {
            short = cut(&slug, 1);
        }
        return format!("{short}--{owner}");
    }
    let digest = hex::encode(Sha256::digest(unique.as_bytes()));
    format!("{}-{}", cut(&full, max_len - 7), &digest[..6])
}

/// The longest preview label under `base_domain`: a DNS label is at most 63 octets and a
/// whole name at most 253.
fn label_budget(base_domain: &str) -> usize {
    63.min(253usize.saturating_sub(base_domain.len() + 1))
        .max(8)
}

/// Hostnames for a new preview, best first: the label, then the label with `-2`, `-3`...
/// for when another preview has it. Made one at a time, as the store asks.
fn hostname_candidates<'a>(
    base_domain: &'a str,
    label: &'a str,
    max_len: usize,
) -> impl Iterator<Item = String> + 'a {
    let numbered = (2..100).map(move |n| {
        let suffix = format!("-{n}");
        format!("{}{suffix}", cut(label, max_len - suffix.len()))
    });
    std::iter::once(label.to_owned())
        .chain(numbered)
        .map(move |label| format!("{label}.{base_domain}"))
}

/// The hostname when every candidate is taken: the label with a random suffix.
fn random_hostname(base_domain: &str, label: &str, max_len: usize) -> String {
    let suffix = format!("-{}", ids::random_base62(6).to_ascii_lowercase());
    format!(
        "{}{suffix}.{base_domain}",
        cut(label, max_len - suffix.len())
    )
}

fn not_found(preview_id: &str) -> Error {
    Error::NotFound(format!("preview `{preview_id}` not found"))
}

fn expiry(from: time::OffsetDateTime, ttl_secs: u64) -> String {
    let ttl = time::Duration::seconds(i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2));
    clock::format(from.saturating_add(ttl))
}

/// What a create-or-update did.
#[derive(Debug)]
pub struct Queued {
    pub info: PreviewInfo,
    pub deploy: Deploy,
    /// False when an existing preview (same pull request, branch or ref) was updated.
    pub created: bool,
}

/// A checked create-or-update, run inside the store's transaction.
struct Upsert {
    config: PreviewsConfig,
    base_domain: String,
    trigger: String,
    ttl_secs: Option<u64>,
    sealed_env: Option<Vec<u8>>,
    request: PreviewRequest,
}

impl Upsert {
    /// Updates the project's preview of the same pull request, branch or ref, or creates
    /// one, and queues its deploy.
    fn run(
        self,
        tx: &store::Tx<'_>,
        account_id: &str,
        project_id: &str,
    ) -> Result<(Preview, Deploy, bool, deploy::Superseded)> {
        let project = store::projects::by_id(tx, account_id, project_id)?
            .ok_or_else(|| Error::NotFound(format!("project `{project_id}` not found")))?;
        if store::git::get(tx, &project.id)?.is_none() {
            return Err(Error::Invalid(format!(
                "the project has no git repository to build a preview from; connect one with POST /v1/projects/{}/git",
                project.id
            )));
        }
        let now = time::OffsetDateTime::now_utc();
        let (preview, created) = match self.existing(tx, &project.id)? {
            Some(preview) => (self.update(tx, preview, now)?, false),
            None => (self.insert(tx, &project, now)?, true),
        };
        let git_ref = self
            .request
            .commit
            .clone()
            .unwrap_or_else(|| self.request.source.deploy_ref());
        let deploy = deploy::new_deploy(
            project.id.clone(),
            ReleaseTarget::Preview(preview.id.clone()),
            Some(git_ref),
            &self.trigger,
        );
        let superseded = store::deploys::queue(tx, &deploy)?;
        Ok((preview, deploy, created, superseded))
    }

    /// The project's preview of the request's pull request (else its branch), branch or
    /// ref.
    fn existing(&self, tx: &store::Tx<'_>, project_id: &str) -> Result<Option<Preview>> {
        let request = &self.request;
        Ok(match (request.pull_request, request.source.branch()) {
            (Some(number), branch) => {
                match store::previews::for_pull_request(tx, project_id, number)? {
                    Some(found) => Some(found),
                    None => match branch {
                        Some(branch) => store::previews::for_branch(tx, project_id, branch)?,
                        None => None,
                    },
                }
            }
            (None, Some(branch)) => store::previews::for_branch(tx, project_id, branch)?,
            (None, None) => store::previews::for_ref(tx, project_id, request.source.text())?,
        })
    }

    /// An existing preview at the request's ref; its TTL restarts.
    fn update(
        &self,
        tx: &store::Tx<'_>,
        mut preview: Preview,
        now: time::OffsetDateTime,
    ) -> Result<Preview> {
        preview.git_ref = self.request.source.text().to_owned();
        preview.pull_request = self.request.pull_request.or(preview.pull_request);
        if let Some(sealed) = &self.sealed_env {
            preview.sealed_env = Some(sealed.clone());
        }
        preview.ttl_secs = self.ttl_secs.unwrap_or(preview.ttl_secs);
        preview.updated_at = clock::format(now);
        preview.expires_at = expiry(now, preview.ttl_secs);
        store::previews::update(tx, &preview)?;
        Ok(preview)
    }

    /// A new preview with the first free hostname, within `previews.max_per_project`.
    fn insert(
        &self,
        tx: &store::Tx<'_>,
        project: &Project,
        now: time::OffsetDateTime,
    ) -> Result<Preview> {
        let request = &self.request;
        let count = store::previews::count_of_project(tx, &project.id)?;
        if count >= self.config.max_per_project {
            return Err(Error::Conflict(format!(
                "the project already has {count} previews, the limit (previews.max_per_project = {}); delete one first",
                self.config.max_per_project
            )));
        }
        let slug_source = match (request.source.branch(), request.pull_request) {
            (Some(branch), _) => branch.to_owned(),
            (None, Some(number)) => format!("pr-{number}"),
            (None, None) => request.source.text().to_owned(),
        };
        let base_domain = &self.base_domain;
        let max_len = label_budget(base_domain);
        let label = preview_label(
            &slug_source,
            project.name.as_str(),
            project.handle.as_str(),
            &format!("{}:{slug_source}", project.id),
            max_len,
        );
        let candidates = hostname_candidates(base_domain, &label, max_len);
        let hostname = store::previews::first_free_hostname(tx, candidates)?
            .unwrap_or_else(|| random_hostname(base_domain, &label, max_len));
        // Belt and braces: the label rules above always give a valid name.
        Hostname::parse(&hostname)?;
        let ttl_secs = self.ttl_secs.unwrap_or(self.config.default_ttl_secs);
        let now_text = clock::format(now);
        let preview = Preview {
            id: ids::new_id("prv"),
            project_id: project.id.clone(),
            hostname,
            branch: request.source.branch().map(str::to_owned),
            git_ref: request.source.text().to_owned(),
            pull_request: request.pull_request,
            sealed_env: self.sealed_env.clone(),
            ttl_secs,
            trigger: self.trigger.clone(),
            created_at: now_text.clone(),
            updated_at: now_text,
            expires_at: expiry(now, ttl_secs),
        };
        store::previews::insert(tx, &preview)?;
        Ok(preview)
    }
}

impl Previews {
    /// Creates a preview of the request's branch or ref and queues its deploy, or, when the
    /// project already has a preview of that pull request, branch or ref, queues a new deploy
    /// of it in place (same hostname). A new preview beyond `previews.max_per_project`
    /// answers 409 naming the limit.
    pub async fn create_or_update(
        &self,
        actor: &Actor,
        project_id: String,
        request: PreviewRequest,
        trigger: &str,
    ) -> Result<Queued> {
        let (ttl_secs, sealed_env) = self.check_request(&request)?;
        let upsert = Upsert {
            config: self.config.clone(),
            base_domain: self.base_domain.clone(),
            trigger: trigger.to_owned(),
            ttl_secs,
            sealed_env,
            request,
        };
        let account_id = actor.account_id.clone();
        // The preview's entry says whether it was created or updated, which only the
        // transaction finds out; the deploy's follows it.
        let audit = {
            let actor = actor.clone();
            move |(preview, deploy, created, _): &(Preview, Deploy, bool, deploy::Superseded)| {
                let action = if *created {
                    "preview.create"
                } else {
                    "preview.update"
                };
                vec![
                    store::Audit::by(&actor, action, &preview.id),
                    store::Audit::by(&actor, "deploy.create", &deploy.id),
                ]
            }
        };
        let (preview, deploy, created, superseded) = self
            .store
            .write_audited(audit, move |tx| upsert.run(tx, &account_id, &project_id))
            .await?;
        self.deploys.announce(&deploy.id, superseded);
        if created {
            // The hostname answers 503 "building" at once rather than 404.
            if let Err(err) = self.routing.refresh().await {
                tracing::warn!(error = %err, "refreshing routes after a preview was created");
            }
        }
        let info = self.describe(preview).await?;
        Ok(Queued {
            info,
            deploy,
            created,
        })
    }

    /// Checks a request's TTL and env overrides, and seals the overrides.
    fn check_request(&self, request: &PreviewRequest) -> Result<(Option<u64>, Option<Vec<u8>>)> {
        let ttl_secs = match request.ttl_secs {
            Some(ttl) if ttl == 0 || ttl > self.config.max_ttl_secs => {
                return Err(Error::Invalid(format!(
                    "ttl must be between 1 second and {} seconds (previews.max_ttl_secs)",
                    self.config.max_ttl_secs
                )))
            }
            other => other,
        };
        if let Some(env) = &request.env {
            for (key, value) in env {
                if PREVIEW_ENV_KEYS.contains(&key.as_str()) {
                    return Err(Error::Invalid(format!(
                        "env key `{}` is set by Cantila in every preview and cannot be overridden",
                        key.as_str()
                    )));
                }
                crate::env::validate_value(key, value)?;
            }
        }
        let sealed_env = request.env.as_ref().map(|env| {
            let plain: BTreeMap<&str, &str> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.secrets
                .seal(&serde_json::to_vec(&plain).unwrap_or_default())
        });
        Ok((ttl_secs, sealed_env))
    }

    /// A preview with its status, from its deploys.
    async fn describe(&self, preview: Preview) -> Result<PreviewInfo> {
        let id = preview.id.clone();
        let deploys = self
            .store
            .call(move |c| store::deploys::of_preview(c, &id, 50))
            .await?;
        let latest = deploys.first().cloned();
        let serving = deploys
            .iter()
            .find(|d| d.status == DeployStatus::Running)
            .cloned();
        let env_keys = match &preview.sealed_env {
            Some(sealed) => self
                .deploys
                .preview_overrides(sealed)?
                .into_keys()
                .collect(),
            None => Vec::new(),
        };
        Ok(PreviewInfo {
            status: status_of(latest.as_ref(), serving.as_ref()),
            url: self.deploys.preview_url(&preview.hostname),
            preview,
            latest,
            serving,
            env_keys,
        })
    }

    /// The project's previews, oldest first.
    pub async fn list(&self, actor: &Actor, project_id: String) -> Result<Vec<PreviewInfo>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let previews = self
            .store
            .call(move |c| store::previews::of_project(c, &project.id))
            .await?;
        let mut found = Vec::with_capacity(previews.len());
        for preview in previews {
            found.push(self.describe(preview).await?);
        }
        Ok(found)
    }

    /// One preview of one of the actor's projects; another account's answers 404 alike.
    pub async fn get(
        &self,
        actor: &Actor,
        project_id: String,
        preview_id: String,
    ) -> Result<Preview> {
        let project = projects::get(&self.store, actor, project_id).await?;
        self.store
            .call(move |c| {
                store::previews::by_id(c, &project.id, &preview_id)?
                    .ok_or_else(|| not_found(&preview_id))
            })
            .await
    }

    /// Removes a preview: its deploys stop (queued ones are canceled, building ones are asked
    /// to stop, the serving one is marked superseded), its route goes at once, and its
    /// containers, published sites, images only it used, and certificate record are removed.
    pub async fn delete(
        &self,
        actor: &Actor,
        project_id: String,
        preview_id: String,
    ) -> Result<()> {
        let preview = self.get(actor, project_id, preview_id).await?;
        self.remove(actor, preview, "the preview was deleted").await
    }

    /// The removal behind `delete`, a closed pull request and the expiry sweep.
    async fn remove(&self, actor: &Actor, preview: Preview, why: &'static str) -> Result<()> {
        let audit = store::Audit::by(actor, "preview.delete", &preview.id);
        let id = preview.id.clone();
        let project_id = preview.project_id.clone();
        let (deploys, lines) = self
            .store
            .write_audited(audit, move |tx| {
                if !store::previews::delete(tx, &id)? {
                    return Err(not_found(&id));
                }
                let deploys = store::deploys::of_preview(tx, &id, 1000)?;
                let now = clock::now();
                let mut lines = Vec::new();
                for deploy in &deploys {
                    let ends_as = match deploy.status {
                        DeployStatus::Queued => DeployStatus::Canceled,
                        DeployStatus::Running => DeployStatus::Superseded,
                        // Building and releasing ones are stopped through their pipeline.
                        DeployStatus::Building
                        | DeployStatus::Releasing
                        | DeployStatus::Failed
                        | DeployStatus::Canceled
                        | DeployStatus::Superseded => continue,
                    };
                    store::deploys::set_status(tx, &deploy.id, ends_as, &now)?;
                    let seq = store::deploys::last_log_seq(tx, &deploy.id)? + 1;
                    let line = LogLine {
                        seq,
                        at: now.clone(),
                        kind: "status".to_owned(),
                        text: format!("{} ({why})", ends_as.as_str()),
                    };
                    store::deploys::append_logs(tx, &deploy.id, std::slice::from_ref(&line))?;
                    lines.push((deploy.id.clone(), line));
                }
                Ok((deploys, lines))
            })
            .await?;
        self.deploys.publish_final(lines);
        // Its runtime logs and metric points (in `logs.db`, another file, so after the
        // commit) go with it; production's stay. Should this fail, the log writer's sweep of
        // removed previews deletes them within a minute.
        let (logs_of, preview_id) = (project_id, preview.id.clone());
        if let Err(err) = self
            .log_store
            .call(move |c| store::logs::sweep_preview(c, &logs_of, &preview_id))
            .await
        {
            tracing::warn!(preview = %preview.id, error = %err, "deleting a removed preview's logs");
        }
        for deploy in &deploys {
            if matches!(
                deploy.status,
                DeployStatus::Building | DeployStatus::Releasing
            ) {
                self.deploys.request_cancel(&deploy.id);
            }
        }
        tracing::info!(preview = %preview.id, host = %preview.hostname, reason = why, "removing a preview");
        // The hostname stops routing before anything is stopped.
        if let Err(err) = self.routing.refresh().await {
            tracing::warn!(error = %err, "refreshing routes after a preview was removed");
        }
        // Waits for a certificate request in flight for the name, then deletes the record.
        if let Err(err) = self.tls.forget(&preview.hostname).await {
            tracing::warn!(host = %preview.hostname, error = %err, "forgetting a preview's certificate");
        }
        let deploys_handle = self.deploys.clone();
        tokio::spawn(async move {
            deploys_handle
                .remove_preview_files(&preview, &deploys)
                .await
        });
        Ok(())
    }
}

/// What a webhook delivery did to previews.
#[derive(Debug)]
pub enum HookOutcome {
    Queued {
        deploy_id: String,
        preview_id: String,
    },
    Removed {
        preview_id: String,
    },
    Ignored(String),
    /// The delivery named a commit that is not the branch's head as fetched now.
    Stale(String),
}

impl Previews {
    /// A pull request was opened, reopened or pushed to: create or update its preview, at the
    /// head commit.
    pub async fn pull_request_updated(
        &self,
        actor: &Actor,
        project: &Project,
        number: u32,
        branch: &str,
        head_sha: Option<String>,
    ) -> Result<HookOutcome> {
        let request = PreviewRequest {
            source: PreviewSource::Branch(GitRef::parse(branch)?),
            pull_request: Some(number),
            env: None,
            ttl_secs: None,
            commit: head_sha,
        };
        self.queue_from_hook(actor, project, request).await
    }

    /// Creates or updates a preview for a webhook. The cap is reported as the delivery's
    /// outcome (kept on the git connection's last delivery), not as a failed delivery.
    async fn queue_from_hook(
        &self,
        actor: &Actor,
        project: &Project,
        request: PreviewRequest,
    ) -> Result<HookOutcome> {
        match self
            .create_or_update(actor, project.id.clone(), request, "webhook")
            .await
        {
            Ok(queued) => Ok(HookOutcome::Queued {
                deploy_id: queued.deploy.id,
                preview_id: queued.info.preview.id,
            }),
            Err(Error::Conflict(reason)) => Ok(HookOutcome::Ignored(reason)),
            Err(err) => Err(err),
        }
    }

    /// A pull request was closed (or merged): remove its preview.
    pub async fn pull_request_closed(
        &self,
        actor: &Actor,
        project: &Project,
        number: u32,
    ) -> Result<HookOutcome> {
        let project_id = project.id.clone();
        let found = self
            .store
            .call(move |c| store::previews::for_pull_request(c, &project_id, number))
            .await?;
        match found {
            Some(preview) => {
                let preview_id = preview.id.clone();
                self.remove(actor, preview, "its pull request was closed")
                    .await?;
                Ok(HookOutcome::Removed { preview_id })
            }
            None => Ok(HookOutcome::Ignored(format!(
                "pull request #{number} has no preview"
            ))),
        }
    }

    /// A push to a branch other than production's: update the branch's preview in place; or
    /// create one when the branch matches the project's `previews.branches`; or remove the
    /// branch's preview when the push deleted the branch. Previews of pull requests are left
    /// to the pull request's own `synchronize` event, so one push never builds twice.
    /// `fetched_head` fetches the repository and answers the branch's head now; it is asked
    /// only when the push would be acted on, and only that head is ever deployed
    /// (`source::confirm_head`): a stale or replayed push is reported, not acted on.
    pub async fn branch_pushed(
        &self,
        actor: &Actor,
        project: &Project,
        branch: &str,
        after: Option<String>,
        deleted: bool,
        fetched_head: impl AsyncFnOnce() -> Result<Option<String>>,
    ) -> Result<HookOutcome> {
        let project_id = project.id.clone();
        let lookup = branch.to_owned();
        let existing = self
            .store
            .call(move |c| store::previews::for_branch(c, &project_id, &lookup))
            .await?;
        match (existing, deleted) {
            (Some(preview), true) => {
                // A replayed deletion must not remove the preview of a branch pushed again.
                if let Some(head) = fetched_head().await? {
                    return Ok(HookOutcome::Stale(format!(
                        "the push deleted `{branch}`, but the branch exists at {} now",
                        &head[..head.len().min(12)]
                    )));
                }
                let preview_id = preview.id.clone();
                self.remove(actor, preview, "its branch was deleted")
                    .await?;
                Ok(HookOutcome::Removed { preview_id })
            }
            (None, true) => Ok(HookOutcome::Ignored(format!(
                "the push deleted `{branch}`, which has no preview"
            ))),
            (Some(preview), false) if preview.pull_request.is_some() => {
                Ok(HookOutcome::Ignored(format!(
                "`{branch}` has the preview of pull request #{}; its synchronize event updates it",
                preview.pull_request.unwrap_or_default()
            )))
            }
            (existing, false) => {
                let opted_in = project
                    .preview_branches
                    .iter()
                    .filter_map(|p| BranchPattern::parse(p).ok())
                    .any(|p| p.matches(branch));
                if existing.is_none() && !opted_in {
                    return Ok(HookOutcome::Ignored(format!(
                    "push to `{branch}`; this project deploys another branch and creates previews for none matching it (previews.branches)"
                )));
                }
                let head = match crate::source::confirm_head(
                    branch,
                    after.as_deref(),
                    fetched_head().await?.as_deref(),
                ) {
                    Ok(head) => head,
                    Err(reason) => return Ok(HookOutcome::Stale(reason)),
                };
                let request = PreviewRequest {
                    source: PreviewSource::Branch(GitRef::parse(branch)?),
                    pull_request: None,
                    env: None,
                    ttl_secs: None,
                    commit: Some(head),
                };
                self.queue_from_hook(actor, project, request).await
            }
        }
    }

    /// Removes previews idle past their TTL, every `previews.sweep_interval_secs`.
    pub async fn run_expiry_sweep(self, stopped: impl std::future::Future<Output = ()>) {
        tokio::pin!(stopped);
        let interval = Duration::from_secs(self.config.sweep_interval_secs);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut stopped => break,
            }
            if let Err(err) = self.sweep().await {
                tracing::warn!(error = %err, "sweeping expired previews");
            }
        }
    }

    /// One pass of the expiry sweep; returns the ids removed.
    pub async fn sweep(&self) -> Result<Vec<String>> {
        let now = clock::now();
        let expired = self
            .store
            .call(move |c| {
                let mut found = Vec::new();
                for preview in store::previews::expired(c, &now)? {
                    if let Some(project) = store::projects::by_id_unscoped(c, &preview.project_id)?
                    {
                        found.push((project, preview));
                    }
                }
                Ok(found)
            })
            .await?;
        let mut removed = Vec::new();
        for (project, preview) in expired {
            let actor = Actor::background(
                project.account_id.clone(),
                project.handle.clone(),
                "preview-expiry",
            );
            let id = preview.id.clone();
            match self.remove(&actor, preview, "it expired").await {
                Ok(()) => removed.push(id),
                // Deleted meanwhile by someone else: nothing left to do.
                Err(Error::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_slugged_and_fit_dns_rules() {
        let cases: [(&str, &str, &str, usize, &str); 7] = [
            (
                "feature/login",
                "blog",
                "ann",
                63,
                "feature-login--blog-ann",
            ),
            ("Fix_Bug#12", "blog", "ann", 63, "fix-bug-12--blog-ann"),
            ("///", "blog", "ann", 63, "preview--blog-ann"),
            ("ab", "blog", "ann", 63, "ab-preview--blog-ann"),
            ("UPPER--double", "web", "x", 63, "upper-double--web-x"),
            (
                "a-very-long-branch-name-that-goes-on-and-on-and-on-forever",
                "blog",
                "ann",
                63,
                "a-very-long-branch-name-that-goes-on-and-on-and-on-fo--blog-ann",
            ),
            ("feature/x", "blog", "ann", 20, "feature-x--blog-ann"),
        ];
        for (source, project, handle, max, expected) in cases {
            let label = preview_label(source, project, handle, "u", max);
            assert_eq!(label, expected, "{source}");
            assert!(label.len() <= max, "{label}");
        }
    }

    #[test]
    fn an_overlong_project_part_is_cut_and_hashed() {
        let project = "p".repeat(60);
        let a = preview_label("main", &project, "handle", "prj_a:main", 63);
        let b = preview_label("main", &project, "handle", "prj_b:main", 63);
        assert_eq!(a.len(), 63);
        assert_ne!(a, b, "the hash keeps cut labels distinct");
        for label in [&a, &b] {
            assert!(!label.ends_with('-') && !label.starts_with('-'));
            assert!(label
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
            assert_ne!(&label[2..4], "--");
        }
    }

    #[test]
    fn every_label_is_a_valid_hostname() {
        for source in [
            "x",
            "ab",
            "abc",
            "-lead",
            "trail-",
            "ünïcode/ß",
            "1234567",
            &"z".repeat(300),
        ] {
            for max in [8, 20, 63] {
                let label = preview_label(source, "blog", "ann", "u", max);
                assert!(label.len() <= max.max(8), "{source} {max}: {label}");
                Hostname::parse(&format!("{label}.apps.example.com"))
                    .unwrap_or_else(|err| panic!("{source}: {label}: {err}"));
                assert!(!(label.len() > 3 && &label[2..4] == "--"), "{label}");
            }
        }
    }

    #[test]
    fn hostname_candidates_number_the_label_and_keep_it_within_the_budget() {
        let label = "feature-login--blog-ann";
        let candidates: Vec<String> = hostname_candidates("apps.test", label, 24).collect();
        assert_eq!(candidates.len(), 99);
        assert_eq!(candidates[0], "feature-login--blog-ann.apps.test");
        assert_eq!(candidates[1], "feature-login--blog-an-2.apps.test");
        assert_eq!(candidates[98], "feature-login--blog-a-99.apps.test");
        let fallback = random_hostname("apps.test", label, 24);
        assert!(fallback.starts_with("feature-login--bl-") && fallback.ends_with(".apps.test"));
        for hostname in candidates.iter().chain([&fallback]) {
            let label = hostname.trim_end_matches(".apps.test");
            assert!(label.len() <= 24, "{hostname}");
            Hostname::parse(hostname).unwrap_or_else(|err| panic!("{hostname}: {err}"));
        }
    }

    #[test]
    fn status_follows_the_newest_deploy_and_what_serves() {
        let deploy = |status| {
            let mut d = deploy::new_deploy("prj".into(), ReleaseTarget::Production, None, "api");
            d.status = status;
            d
        };
        let running = deploy(DeployStatus::Running);
        let cases = [
            (None, None, "building"),
            (Some(deploy(DeployStatus::Queued)), None, "building"),
            (
                Some(deploy(DeployStatus::Building)),
                Some(running.clone()),
                "updating",
            ),
            (Some(running.clone()), Some(running.clone()), "running"),
            (
                Some(deploy(DeployStatus::Failed)),
                Some(running.clone()),
                "running",
            ),
            (Some(deploy(DeployStatus::Failed)), None, "failed"),
            (Some(deploy(DeployStatus::Canceled)), None, "failed"),
        ];
        for (latest, serving, expected) in cases {
            assert_eq!(status_of(latest.as_ref(), serving.as_ref()), expected);
        }
    }
}
