//! Deploys: the durable queue in the store, the lifecycle
//! `queued → building → releasing → running` (or `failed` / `canceled` / `superseded`),
//! the ordered log of each deploy, and live streams of it.
//! Invariant: a deploy's status changes and log lines are written by one writer per deploy,
//! in order, to the store first and to live subscribers second, so a replay from the store
//! followed by the live stream never loses or reorders a line.

pub mod access;
pub mod context;
pub mod images;
pub mod instances;
pub mod pipeline;
pub mod planning;
pub mod preview_env;
pub mod pull;
pub mod rebuild;
pub mod reconcile;
pub mod stack;
pub mod teardown;
pub mod worker;

use std::{collections::HashMap, ops::Deref, sync::Arc, sync::Mutex, time::Duration};

use tokio::sync::{broadcast, mpsc, watch, Notify};

use crate::{
    accounts::Actor,
    assets::Assets,
    clock,
    config::Config,
    database::Databases,
    env::Env,
    error::{Error, Result},
    ids, live,
    locks::ProjectLocks,
    logs::Logs,
    networks::Networks,
    pagination::{Page, PageRequest},
    projects::Projects,
    registries::Registries,
    routing::Routing,
    runtime::Runtime,
    secrets::SecretBox,
    services::Services,
    store::{self, Store},
    tls::Tls,
};

pub use crate::model::deploy::{Deploy, DeployStatus, LogLine, ReleaseTarget};

/// The deploys handle: cheap to clone, one per daemon. Holds the queue's live side (the
/// hub), the per-project locks and the lower services a release calls.
#[derive(Clone)]
pub struct Deploys(Arc<Inner>);

/// What a deploy, a scale, a repair or a project's teardown uses.
pub struct Inner {
    store: Store,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
    /// Opens env snapshots and access tokens, seals new snapshots.
    secrets: SecretBox,
    /// The TLS mode (a preview's URL scheme) and forgetting deleted hostnames' certificates.
    tls: Tls,
    /// This installation's id, labelled on everything a deploy creates.
    installation: Arc<str>,
    /// The whole configuration: a deploy reads the `deploy`, `scale`, `build` and `git`
    /// sections, the data directory's layout (repos, builds, sites, assets, backups), the
    /// base domain and the local-repository policy (which spans `deploy`, `git` and the
    /// default handle), so one shared copy is simpler than a struct of most of it.
    config: Arc<Config>,
    /// Live deploy logs, cancel switches and the worker's wake-up.
    hub: DeployHub,
    /// One release change (deploy switch, scale, repair) per project at a time; shared
    /// with volumes, backups and previews.
    locks: ProjectLocks,
    projects: Projects,
    env: Env,
    networks: Networks,
    databases: Databases,
    /// The project's services' wiring (add-ons' env) for production containers.
    services: Services,
    routing: Routing,
    logs: Logs,
    assets: Assets,
    /// The account's registry credentials, for image pulls.
    registries: Registries,
    /// Wakes the job scheduler after a release wrote the project's `cantila.toml` jobs
    /// (`jobs` sits above `deploy`, so it hands this down rather than being called).
    jobs_changed: Arc<tokio::sync::Notify>,
}

/// What `Deploys::new` is made of; the composition root builds it.
pub struct DeploysParts {
    pub store: Store,
    pub runtime: Runtime,
    pub secrets: SecretBox,
    pub tls: Tls,
    pub installation: Arc<str>,
    pub config: Arc<Config>,
    pub locks: ProjectLocks,
    pub projects: Projects,
    pub env: Env,
    pub networks: Networks,
    pub databases: Databases,
    pub services: Services,
    pub routing: Routing,
    pub logs: Logs,
    pub assets: Assets,
    pub registries: Registries,
    pub jobs_changed: Arc<tokio::sync::Notify>,
}

impl Deploys {
    pub fn new(parts: DeploysParts) -> Self {
        Self(Arc::new(Inner {
            store: parts.store,
            runtime: parts.runtime,
            secrets: parts.secrets,
            tls: parts.tls,
            installation: parts.installation,
            config: parts.config,
            hub: DeployHub::default(),
            locks: parts.locks,
            projects: parts.projects,
            env: parts.env,
            networks: parts.networks,
            databases: parts.databases,
            services: parts.services,
            routing: parts.routing,
            logs: parts.logs,
            assets: parts.assets,
            registries: parts.registries,
            jobs_changed: parts.jobs_changed,
        }))
    }

    /// The container runtime, once it answers (the first call connects): a runtime that
    /// cannot be reached is `Unavailable`, with what to check.
    async fn engine(&self) -> Result<Runtime> {
        self.runtime.ready().await?;
        Ok(self.runtime.clone())
    }

    /// The lock serialising release changes of one project.
    fn project_lock(&self, project_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.of(project_id)
    }

    /// Follows a deploy's log from after `after`: stored lines first, then live ones,
    /// ending after the final status. Lines arrive exactly once and in order.
    pub fn follow(&self, deploy_id: String, after: i64) -> mpsc::Receiver<LogLine> {
        let store = self.store.clone();
        let fetch_id = deploy_id.clone();
        let live = self.clone();
        live::replay_then_follow(live::FollowSource {
            fetch_after: move |after| {
                let store = store.clone();
                let deploy_id = fetch_id.clone();
                async move {
                    logs_after(&store, deploy_id, after)
                        .await
                        .unwrap_or_default()
                }
            },
            subscribe: move || live.hub.subscribe(&deploy_id),
            keep: |_: &LogLine| true,
            is_last: |line: &LogLine| line.final_status().is_some(),
            after,
            _line: std::marker::PhantomData,
        })
    }
}

// Private to `deploy` and its submodules: the handle's parts are read as fields.
impl Deref for Deploys {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Live channels and cancel switches of deploys in progress, and the worker's wake-up.
struct DeployHub {
    live: live::Topics<LogLine>,
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Wakes the worker when a deploy is queued.
    wake: Notify,
}

impl Default for DeployHub {
    fn default() -> Self {
        Self {
            live: live::Topics::new(1024),
            cancels: Mutex::default(),
            wake: Notify::new(),
        }
    }
}

impl DeployHub {
    /// Opens the live channel of a deploy that has not finished.
    fn open(&self, deploy_id: &str) {
        self.live.open(deploy_id);
    }

    /// A receiver of the deploy's future lines, or `None` when it has finished.
    fn subscribe(&self, deploy_id: &str) -> Option<broadcast::Receiver<LogLine>> {
        self.live.subscribe(deploy_id)
    }

    fn publish(&self, deploy_id: &str, line: LogLine) {
        self.live.publish(deploy_id, line);
    }

    fn close(&self, deploy_id: &str) {
        self.live.close(deploy_id);
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(deploy_id);
    }

    /// A switch the pipeline watches; flipped by `cancel`.
    fn cancel_switch(&self, deploy_id: &str) -> watch::Receiver<bool> {
        let mut cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        cancels
            .entry(deploy_id.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    fn request_cancel(&self, deploy_id: &str) -> bool {
        let cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        match cancels.get(deploy_id) {
            Some(switch) => {
                let _ = switch.send(true);
                true
            }
            None => false,
        }
    }
}

/// What the writer task is told, in order.
enum LogMessage {
    Line(String),
    Status {
        status: DeployStatus,
        failure: Option<(String, String)>,
    },
}

/// The pipeline's handle on its deploy's log. Lines are batched into the store (one
/// transaction per batch, so a chatty build does not fsync per line), then published.
#[derive(Clone)]
pub struct DeployLog {
    tx: mpsc::UnboundedSender<LogMessage>,
}

impl DeployLog {
    pub fn line(&self, text: impl Into<String>) {
        let _ = self.tx.send(LogMessage::Line(text.into()));
    }

    pub fn status(&self, status: DeployStatus) {
        let _ = self.tx.send(LogMessage::Status {
            status,
            failure: None,
        });
    }

    pub fn failed(&self, step: &str, error: &str) {
        let _ = self.tx.send(LogMessage::Status {
            status: DeployStatus::Failed,
            failure: Some((step.to_owned(), error.to_owned())),
        });
    }
}

const BATCH_LINES: usize = 200;
const BATCH_WAIT: Duration = Duration::from_millis(150);

impl Deploys {
    /// Starts the writer of one deploy's log; the returned task ends when every `DeployLog`
    /// clone is dropped and all lines are stored.
    pub(crate) fn start_log(&self, deploy_id: &str) -> (DeployLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogMessage>();
        let deploys = self.clone();
        let deploy_id = deploy_id.to_owned();
        deploys.hub.open(&deploy_id);
        let task = tokio::spawn(async move {
            let deploy_for_seq = deploy_id.clone();
            let mut next_seq = deploys
                .store
                .call(move |c| store::deploys::last_log_seq(c, &deploy_for_seq))
                .await
                .unwrap_or(0)
                + 1;
            let mut finished = false;
            loop {
                let Some(first) = rx.recv().await else { break };
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + BATCH_WAIT;
                while batch.len() < BATCH_LINES {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(message)) => batch.push(message),
                        Ok(None) | Err(_) => break,
                    }
                }
                let mut lines = Vec::with_capacity(batch.len());
                let mut statuses = Vec::new();
                for message in batch {
                    let at = clock::now();
                    let (kind, text) = match message {
                        LogMessage::Line(text) => ("log", text),
                        LogMessage::Status { status, failure } => {
                            finished |= status.is_final();
                            let text = match &failure {
                                Some((step, error)) => format!("failed at {step}: {error}"),
                                None => status.as_str().to_owned(),
                            };
                            statuses.push((lines.len(), status, failure, at.clone()));
                            ("status", text)
                        }
                    };
                    lines.push(LogLine {
                        seq: next_seq,
                        at,
                        kind: kind.to_owned(),
                        text,
                    });
                    next_seq += 1;
                }
                let stored = lines.clone();
                let id = deploy_id.clone();
                let result = deploys
                    .store
                    .write(move |tx| {
                        store::deploys::append_logs(tx, &id, &stored)?;
                        for (_, status, failure, at) in &statuses {
                            store::deploys::set_status(tx, &id, *status, at)?;
                            if let Some((step, error)) = failure {
                                store::deploys::set_failure(tx, &id, step, error)?;
                            }
                        }
                        Ok(())
                    })
                    .await;
                if let Err(err) = result {
                    tracing::error!(deploy = %deploy_id, error = %err, "storing deploy log lines");
                }
                for line in lines {
                    deploys.hub.publish(&deploy_id, line);
                }
            }
            if finished {
                deploys.hub.close(&deploy_id);
            }
        });
        (DeployLog { tx }, task)
    }

    /// Queues a deploy of the project at `git_ref` (or the connected branch's head). A deploy
    /// still queued for the project is superseded by this one.
    pub async fn enqueue(
        &self,
        actor: &Actor,
        project_id: String,
        git_ref: Option<String>,
        trigger: &str,
    ) -> Result<Deploy> {
        self.enqueue_with(actor, project_id, git_ref, trigger, None)
            .await
    }

    /// Queues a rollback to `deploy_id`, or to the deploy that served before the current
    /// release. It runs through the same queue and release path, without a rebuild.
    pub async fn rollback(
        &self,
        actor: &Actor,
        project_id: String,
        deploy_id: Option<String>,
    ) -> Result<Deploy> {
        let account_id = actor.account_id.clone();
        let id = project_id.clone();
        let target = self
        .store
        .call(move |connection| {
            if store::projects::by_id(connection, &account_id, &id)?.is_none() {
                return Err(Error::NotFound(format!("project `{id}` not found")));
            }
            let history = store::deploys::page(connection, &id, None, 200)?;
            let ran = |d: &Deploy| {
                d.plan.is_some()
                    && matches!(d.status, DeployStatus::Running | DeployStatus::Superseded)
            };
            match deploy_id {
                Some(wanted) => {
                    let (_, found) = history
                        .into_iter()
                        .find(|(_, d)| d.id == wanted)
                        .ok_or_else(|| {
                            // The project in the path exists; the body names nothing of it,
                            // so the field is what is wrong (another account's deploy alike).
                            Error::Invalid(format!("deployId `{wanted}` names no deploy of project `{id}`"))
                        })?;
                    if !ran(&found) {
                        return Err(Error::Invalid(format!(
                            "deploy `{wanted}` never ran (it is {}); roll back to a deploy that was running",
                            found.status.as_str()
                        )));
                    }
                    Ok(found)
                }
                None => history
                    .into_iter()
                    .map(|(_, d)| d)
                    .find(|d| d.status == DeployStatus::Superseded && d.plan.is_some())
                    .ok_or_else(|| {
                        Error::Invalid("there is no earlier successful deploy to roll back to".to_owned())
                    }),
            }
        })
        .await?;
        let git_ref = target.commit_sha.clone().or(target.git_ref.clone());
        self.enqueue_with(actor, project_id, git_ref, "rollback", Some(target.id))
            .await
    }

    async fn enqueue_with(
        &self,
        actor: &Actor,
        project_id: String,
        git_ref: Option<String>,
        trigger: &str,
        rollback_of: Option<String>,
    ) -> Result<Deploy> {
        let mut deploy = new_deploy(
            project_id.clone(),
            ReleaseTarget::Production,
            git_ref,
            trigger,
        );
        deploy.rollback_of = rollback_of;
        let audit = store::Audit::by(actor, "deploy.create", &deploy.id);
        let account_id = actor.account_id.clone();
        let queued = deploy.clone();
        let superseded = self
            .store
            .write_audited(audit, move |tx| {
                if store::projects::by_id(tx, &account_id, &project_id)?.is_none() {
                    return Err(Error::NotFound(format!("project `{project_id}` not found")));
                }
                store::deploys::queue(tx, &queued)
            })
            .await?;
        self.announce(&deploy.id, superseded);
        Ok(deploy)
    }
}

/// A new queued deploy of `target`, not yet stored.
pub(crate) fn new_deploy(
    project_id: String,
    target: ReleaseTarget,
    git_ref: Option<String>,
    trigger: &str,
) -> Deploy {
    Deploy {
        id: ids::new_id("dep"),
        project_id,
        status: DeployStatus::Queued,
        trigger: trigger.to_owned(),
        git_ref,
        commit_sha: None,
        commit_message: None,
        plan: None,
        image: None,
        failed_step: None,
        error: None,
        created_at: clock::now(),
        building_at: None,
        releasing_at: None,
        finished_at: None,
        rollback_of: None,
        preview_id: target.preview_id().map(str::to_owned),
        image_digest: None,
        outcome: None,
    }
}

pub(crate) use crate::store::deploys::Superseded;

impl Deploys {
    /// After `store::deploys::queue`'s transaction committed: ends the superseded deploys' live streams,
    /// opens the new one's and wakes the worker.
    pub(crate) fn announce(&self, deploy_id: &str, superseded: Superseded) {
        for (id, line) in superseded {
            self.hub.publish(&id, line);
            self.hub.close(&id);
        }
        self.hub.open(deploy_id);
        self.hub.wake.notify_one();
    }

    /// Publishes final status lines written by another party (a preview's removal) and ends
    /// those deploys' live streams.
    pub(crate) fn publish_final(&self, lines: Vec<(String, LogLine)>) {
        for (id, line) in lines {
            self.hub.publish(&id, line);
            self.hub.close(&id);
        }
    }
}

/// A deploy of one of the actor's projects; another account's answers 404.
pub async fn get(store: &Store, actor: &Actor, deploy_id: String) -> Result<Deploy> {
    let account_id = actor.account_id.clone();
    store
        .call(move |connection| {
            let missing = || Error::NotFound(format!("deploy `{deploy_id}` not found"));
            let deploy = store::deploys::by_id(connection, &deploy_id)?.ok_or_else(missing)?;
            store::projects::by_id(connection, &account_id, &deploy.project_id)?
                .ok_or_else(missing)?;
            Ok(deploy)
        })
        .await
}

pub async fn list(
    store: &Store,
    actor: &Actor,
    project_id: String,
    page: PageRequest,
) -> Result<Page<Deploy>> {
    let account_id = actor.account_id.clone();
    let rows = store
        .call(move |connection| {
            if store::projects::by_id(connection, &account_id, &project_id)?.is_none() {
                return Err(Error::NotFound(format!("project `{project_id}` not found")));
            }
            store::deploys::page(connection, &project_id, page.after, page.limit + 1)
        })
        .await?;
    Ok(page.finish(rows))
}

impl Deploys {
    /// Cancels a queued or in-progress deploy. A finished deploy answers 409.
    pub async fn cancel(&self, actor: &Actor, deploy_id: String) -> Result<Deploy> {
        let deploy = get(&self.store, actor, deploy_id.clone()).await?;
        if deploy.status.is_final() {
            return Err(Error::Conflict(format!(
            "deploy `{deploy_id}` is already {}; only queued, building or releasing deploys can be canceled",
            deploy.status.as_str()
        )));
        }
        self.store
            .write_audited(store::Audit::by(actor, "deploy.cancel", &deploy_id), |_| {
                Ok(())
            })
            .await?;
        // A queued deploy is canceled in the store, atomically against the worker claiming
        // it; one already claimed is stopped through its pipeline's switch.
        let id = deploy_id.clone();
        let canceled_in_queue = self
            .store
            .write(move |tx| {
                let now = clock::now();
                if !store::deploys::claim_queued(tx, &id, DeployStatus::Canceled, &now)? {
                    return Ok(None);
                }
                let line = LogLine {
                    seq: store::deploys::last_log_seq(tx, &id)? + 1,
                    at: now,
                    kind: "status".to_owned(),
                    text: DeployStatus::Canceled.as_str().to_owned(),
                };
                store::deploys::append_logs(tx, &id, std::slice::from_ref(&line))?;
                Ok(Some(line))
            })
            .await?;
        match canceled_in_queue {
            Some(line) => {
                self.hub.publish(&deploy_id, line);
                self.hub.close(&deploy_id);
            }
            None => {
                self.hub.request_cancel(&deploy_id);
            }
        }
        // Wait briefly for the pipeline to stop so the answer shows the outcome; ownership
        // was checked above.
        for _ in 0..100 {
            let current = get_unscoped(&self.store, deploy_id.clone()).await?;
            if current.status.is_final() {
                return Ok(current);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        get_unscoped(&self.store, deploy_id).await
    }
}

/// A deploy by id without the account check; only for callers that did the check.
pub(crate) async fn get_unscoped(store: &Store, deploy_id: String) -> Result<Deploy> {
    store
        .call(move |connection| {
            store::deploys::by_id(connection, &deploy_id)?
                .ok_or_else(|| Error::NotFound(format!("deploy `{deploy_id}` not found")))
        })
        .await
}

/// Stored lines after `after`, for replays.
pub async fn logs_after(store: &Store, deploy_id: String, after: i64) -> Result<Vec<LogLine>> {
    store
        .call(move |connection| store::deploys::logs_after(connection, &deploy_id, after))
        .await
}

/// Shared so tests and the worker agree on what a cancel looks like.
pub type CancelSwitch = watch::Receiver<bool>;

impl Deploys {
    /// Asks a running pipeline to stop; a no-op for deploys not in progress here.
    pub(crate) fn request_cancel(&self, deploy_id: &str) {
        self.hub.request_cancel(deploy_id);
    }

    fn cancel_switch(&self, deploy_id: &str) -> CancelSwitch {
        self.hub.cancel_switch(deploy_id)
    }

    /// Gives up a switch taken for a deploy the worker did not get to run.
    fn release_switch(&self, deploy_id: &str) {
        self.hub
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(deploy_id);
    }
}
