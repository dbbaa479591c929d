//! One-off runs: a command in a container of a release's image, with the release's env,
//! database wiring and volumes, on its release target's network, never routed. `start`
//! makes and starts the container (`start.rs`); one waiter task per run copies its output
//! into the store and to live followers, enforces its timeout and records its end
//! (`waiter.rs`); cancels, the terminal's hooks (`attach_target`, `finish`), the start-up
//! recovery and the sweep of orphan containers are in `control.rs`.
//! Invariant: a run's status moves forward only (the first ending recorded stands); its
//! output lines are stored before they are published, so replay-then-follow never loses or
//! reorders a line; a run never outlives its timeout while the daemon runs, and a run the
//! daemon stopped during is recorded `interrupted` with its container removed.

mod control;
mod start;
mod waiter;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, Notify};

use crate::{
    config::Config,
    database::Databases,
    error::{Error, Result},
    live,
    networks::Networks,
    pagination::{Page, PageRequest},
    runtime::Runtime,
    secrets::SecretBox,
    services::Services,
    store::{self, Store},
};

pub use crate::model::run::{Run, RunCommand, RunLine, RunStatus, RunStream, RunTrigger};

/// The longest timeout a run may ask for: a day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// The timeout of a run that names none: an hour.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3_600;
/// How long an interactive run waits for its terminal before it ends `canceled`.
pub const ATTACH_WITHIN: Duration = Duration::from_secs(60);

/// What to run, validated by the caller's boundary except for what needs the config
/// (the size tier) or the store (the deploy), which `start` checks.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub command: RunCommand,
    /// A size tier of `[scale.sizes]`; `None` is the project's size.
    pub size: Option<String>,
    /// 1 s ..= `MAX_TIMEOUT_SECS`.
    pub timeout: Duration,
    /// Added to the release's env for this run only; never stored or logged.
    pub env: BTreeMap<String, String>,
    /// A production deploy of the project that released an image; `None` is the serving one.
    pub deploy_id: Option<String>,
    pub trigger: RunTrigger,
    /// Created with a TTY and open stdin, started when a terminal attaches.
    pub interactive: bool,
}

/// The runs handle: cheap to clone, one per daemon.
#[derive(Clone)]
pub struct Runs(Arc<Inner>);

struct Inner {
    /// Runs and their output.
    store: Store,
    /// Creates, starts, follows, stops and removes the runs' containers.
    runtime: Runtime,
    /// Opens the env snapshot sealed on the deploy a run uses.
    secrets: SecretBox,
    /// The release target's network each run joins.
    networks: Networks,
    /// The project's volumes and database wiring, for production runs.
    databases: Databases,
    /// The project's services' wiring (add-ons' env), for production runs.
    services: Services,
    /// The `[runs]` section, the size tiers (`[scale]`) and the deploy network's settings.
    config: Arc<Config>,
    /// This installation's id, labelled on every run's container.
    installation: Arc<str>,
    /// Live output channels and the runs this process is waiting on.
    hub: Hub,
}

/// What `Runs::new` is made of; the composition root builds it.
pub struct RunsParts {
    pub store: Store,
    pub runtime: Runtime,
    pub secrets: SecretBox,
    pub networks: Networks,
    pub databases: Databases,
    pub services: Services,
    pub config: Arc<Config>,
    pub installation: Arc<str>,
}

impl Runs {
    pub fn new(parts: RunsParts) -> Self {
        Self(Arc::new(Inner {
            store: parts.store,
            runtime: parts.runtime,
            secrets: parts.secrets,
            networks: parts.networks,
            databases: parts.databases,
            services: parts.services,
            config: parts.config,
            installation: parts.installation,
            hub: Hub::default(),
        }))
    }

    /// The container runtime, once it answers: one that cannot be reached is `Unavailable`.
    async fn engine(&self) -> Result<Runtime> {
        self.0.runtime.ready().await?;
        Ok(self.0.runtime.clone())
    }

    /// A run of the account; another account's (or no such run) answers 404.
    pub async fn get(&self, account_id: &str, run_id: &str) -> Result<Run> {
        let (account_id, run_id) = (account_id.to_owned(), run_id.to_owned());
        self.0
            .store
            .call(move |c| {
                store::runs::by_id(c, &run_id)?
                    .filter(|run| run.account_id == account_id)
                    .ok_or_else(|| Error::NotFound(format!("run `{run_id}` not found")))
            })
            .await
    }

    /// The project's runs, newest first.
    pub async fn list(
        &self,
        account_id: &str,
        project_id: &str,
        page: PageRequest,
    ) -> Result<Page<Run>> {
        let (account_id, project_id) = (account_id.to_owned(), project_id.to_owned());
        let rows = self
            .0
            .store
            .call(move |c| {
                if store::projects::by_id(c, &account_id, &project_id)?.is_none() {
                    return Err(Error::NotFound(format!("project `{project_id}` not found")));
                }
                store::runs::page(c, &project_id, page.after, page.limit + 1)
            })
            .await?;
        Ok(page.finish(rows))
    }

    /// A job's runs that are pending or running, oldest first (its concurrency policy
    /// reads them).
    pub async fn active_for_job(&self, job_id: &str) -> Result<Vec<Run>> {
        let job_id = job_id.to_owned();
        self.0
            .store
            .call(move |c| store::runs::active_of_job(c, &job_id))
            .await
    }

    /// Follows a run's output from after `after`: stored lines first, then live ones,
    /// ending once the run has ended and every line is sent. Lines arrive exactly once and
    /// in order (a line the output cap pruned is skipped).
    pub fn follow(&self, run_id: &str, after: i64) -> mpsc::Receiver<RunLine> {
        let store = self.0.store.clone();
        let fetch_id = run_id.to_owned();
        let topic_id = run_id.to_owned();
        let live = self.clone();
        live::replay_then_follow(live::FollowSource {
            fetch_after: move |after| {
                let store = store.clone();
                let run_id = fetch_id.clone();
                async move {
                    store
                        .call(move |c| store::runs::output_after(c, &run_id, after, 500))
                        .await
                        .unwrap_or_default()
                }
            },
            subscribe: move || live.0.hub.live.subscribe(&topic_id),
            keep: |_: &RunLine| true,
            // The stream ends when the run's topic closes, after its last line.
            is_last: |_: &RunLine| false,
            after,
            _line: std::marker::PhantomData,
        })
    }
}

/// Live output channels of runs not over yet, and what this process knows of each run it
/// waits on.
struct Hub {
    live: live::Topics<RunLine>,
    active: Mutex<HashMap<String, Arc<ActiveRun>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            live: live::Topics::new(1024),
            active: Mutex::default(),
        }
    }
}

impl Hub {
    /// Registers a run this process now owns, before its container exists, so the
    /// orphan sweep never takes its container for a leftover; opens its live channel.
    fn register(&self, run_id: &str) -> Arc<ActiveRun> {
        self.live.open(run_id);
        let run = Arc::new(ActiveRun::default());
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_owned(), run.clone());
        run
    }

    fn get(&self, run_id: &str) -> Option<Arc<ActiveRun>> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
    }

    fn is_active(&self, run_id: &str) -> bool {
        self.get(run_id).is_some()
    }

    fn all(&self) -> Vec<(String, Arc<ActiveRun>)> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, run)| (id.clone(), run.clone()))
            .collect()
    }

    /// The run is over: its followers see the end of the stream, and a cancel waiting
    /// for the end returns.
    fn release(&self, run_id: &str) {
        let run = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        self.live.close(run_id);
        if let Some(run) = run {
            run.ended.notify_waiters();
        }
    }
}

/// One run this process waits on: the signals its waiter listens to and what they decided.
#[derive(Default)]
struct ActiveRun {
    state: Mutex<ActiveState>,
    /// A cancel was asked for (`state.stopping` says so too).
    cancel: Notify,
    /// A terminal attached to the (interactive) run and is starting it.
    attached: Notify,
    /// The run is over and recorded.
    ended: Notify,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ActiveState {
    attach: Attach,
    /// Set before the waiter signals the container: the run then ends with this status
    /// (`canceled`, `timed_out`), whatever its exit code.
    stopping: Option<RunStatus>,
}

/// Where an interactive run stands with its terminal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Attach {
    #[default]
    Waiting,
    Attached,
    /// Nobody attached in time (or it was canceled first): the run is over.
    Expired,
}

impl ActiveRun {
    fn state(&self) -> std::sync::MutexGuard<'_, ActiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
