//! Cantila: a self-hosted PaaS in one binary. `run` starts the whole daemon on listeners
//! the caller has already bound, so tests run the real daemon in-process on port 0.

#![deny(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod assets;
pub mod audit;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod compose;
pub mod config;
pub mod console;
pub mod database;
pub mod deploy;
pub mod domains;
pub mod duration;
pub mod edge;
pub mod env;
pub mod error;
pub mod git_connection;
pub mod handoff;
pub mod ids;
pub mod image_source;
pub mod jobs;
pub mod labels;
pub mod live;
pub mod locks;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod names;
pub mod networks;
pub mod pagination;
pub mod plan;
pub mod previews;
pub mod projects;
pub mod registries;
pub mod registry_api;
pub mod routing;
pub mod runs;
pub mod runtime;
pub mod s3;
pub mod secrets;
pub mod services;
pub mod source;
pub mod stack;
pub mod state_backup;
pub mod state_restore;
pub mod store;
pub mod terminal;
pub mod tls;
pub mod volumes;

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
};

use anyhow::Context;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    config::Config,
    handoff::{Inherited, Lifecycle, Predecessor, Role, Upgrader},
    store::Store,
};

/// The daemon's listening sockets, nonblocking. Binding is separate from `run` so a
/// caller can bind port 0 and learn the addresses first, and so they can come from
/// systemd or from the process a hand-off replaces (`Listeners::inherit_or_bind`).
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub http: TcpListener,
    pub https: TcpListener,
    /// `GET /metrics` without a token, when `metrics_listen` is set.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the config names. A failure names the address and the flag
    /// that changes it. (Async only so that its callers need not change: binding is
    /// immediate.)
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        Self::inherit_or_bind(config, &mut Inherited::default())
    }

    /// Takes each listener from `inherited` (socket activation, a hand-off) and binds the
    /// ones it lacks. A passed socket wins over the config's address; a difference is
    /// logged, since the socket unit is then what decides.
    pub fn inherit_or_bind(config: &Config, inherited: &mut Inherited) -> anyhow::Result<Self> {
        let mut one = |role: Role, addr: SocketAddr, what: &str, flag: &str| match inherited
            .take(role)
        {
            Some(listener) => {
                let at = listener.local_addr()?;
                if at != addr {
                    tracing::info!(socket = role.name(), passed = %at, config = %addr, "serving on the passed socket, not the configured address");
                }
                Ok(listener)
            }
            None => bind_one(addr, what, flag),
        };
        let api = one(
            Role::Api,
            config.api_listen,
            "the API",
            "--api-listen / CANTILA_API_LISTEN",
        )?;
        let http = one(
            Role::Http,
            config.http_listen,
            "the HTTP edge",
            "--http-listen / CANTILA_HTTP_LISTEN",
        )?;
        let https = one(
            Role::Https,
            config.https_listen,
            "the HTTPS edge",
            "--https-listen / CANTILA_HTTPS_LISTEN",
        )?;
        let metrics = match (inherited.take(Role::Metrics), config.metrics_listen) {
            (Some(listener), _) => Some(listener),
            (None, Some(addr)) => Some(bind_one(
                addr,
                "the metrics listener",
                "metrics_listen in the config file",
            )?),
            (None, None) => None,
        };
        Ok(Self {
            api,
            http,
            https,
            metrics,
        })
    }

    /// Binds all three on `127.0.0.1:0`, for tests.
    pub async fn ephemeral() -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = || -> std::io::Result<TcpListener> {
            let listener = TcpListener::bind(any)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        Ok(Self {
            api: bind()?,
            http: bind()?,
            https: bind()?,
            metrics: None,
        })
    }

    /// Each listener with its role, for the hand-off's copies.
    fn roles(&self) -> Vec<(Role, &TcpListener)> {
        let mut roles = vec![
            (Role::Api, &self.api),
            (Role::Http, &self.http),
            (Role::Https, &self.https),
        ];
        if let Some(metrics) = &self.metrics {
            roles.push((Role::Metrics, metrics));
        }
        roles
    }
}

fn bind_one(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .map_err(|err| {
            let hint = match err.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                }
                std::io::ErrorKind::AddrInUse => " (another program is using this port)",
                _ => "",
            };
            anyhow::anyhow!(
                "cannot listen on {addr} for {what}: {err}{hint}; choose another address with {flag}"
            )
        })
}

/// Runs the daemon until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish, and closes the store.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(config, listeners, Lifecycle::plain(shutdown)).await
}

/// One stop signal for a group of tasks.
struct StopSignal(watch::Sender<bool>);

impl StopSignal {
    fn new() -> Self {
        Self(watch::channel(false).0)
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop_rx = self.0.subscribe();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    }

    fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// `run`, driven by a `Lifecycle`: `cantila serve` upgrades on SIGHUP, and a process a
/// hand-off started waits for the old one before it starts each part (see `handoff`).
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    lifecycle: Lifecycle,
) -> anyhow::Result<()> {
    let Lifecycle {
        shutdown,
        upgrade_on_sighup,
        predecessor,
    } = lifecycle;
    let mut shutdown = shutdown;
    let mut predecessor = predecessor.map(Predecessor::new).transpose()?;
    for note in config.deprecations() {
        tracing::warn!("config: {note}");
    }
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir))
        .await
        .context("opening the store")??;
    let bootstrap_store = store.clone();
    let bootstrap_config = config.clone();
    let token_path = tokio::task::spawn_blocking(move || {
        accounts::bootstrap(&bootstrap_store, &bootstrap_config)
    })
    .await??;
    if let Some(path) = token_path {
        tracing::info!(
            path = %path.display(),
            handle = %config.default_handle,
            "first start: created the default account and wrote its admin token"
        );
    }

    let secrets_dir = config.data_dir.clone();
    let secrets = tokio::task::spawn_blocking(move || {
        crate::secrets::SecretBox::load_or_create(&secrets_dir)
    })
    .await?
    .context("loading the secret key")?;
    let tls_dir = config.data_dir.clone();
    let tls_config = config.tls.clone();
    let tls = tokio::task::spawn_blocking(move || crate::tls::Tls::start(&tls_dir, tls_config))
        .await?
        .context("starting TLS")?;
    let id_dir = config.data_dir.clone();
    let installation = tokio::task::spawn_blocking(move || installation_id(&id_dir))
        .await?
        .context("reading the installation id")?;
    // The one place the runtime's implementation is chosen: the local Docker engine.
    let runtime: runtime::Runtime = std::sync::Arc::new(runtime::docker::DockerRuntime::new(
        config.deploy.docker_socket.clone(),
    ));
    // Before anything can start or adopt a container: a restored data directory must not
    // drive the containers its original installation may still be running.
    let restored =
        state_restore::check_at_start(&config.data_dir, &installation, &runtime, config.take_over)
            .await?;
    if restored {
        tracing::info!("restored installation: releases come back through the reconciler");
    }
    let uploads = backup::remote::Uploader::from_config(&config.backups.s3)
        .map_err(|err| anyhow::anyhow!("config: {err}"))?;
    let state_backups = state_backup::StateBackups::new(state_backup::StateBackupsParts {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        config: config.state_backup.clone(),
        config_file: config.file.clone(),
        s3: config.backups.s3.clone(),
    })
    .map_err(|err| anyhow::anyhow!("config: {err}"))?;
    // Log lines and metric points live in `logs.db` beside the state (`store::logs`).
    let log_store = store.open_logs()?;
    let services = compose::build(compose::Adapters {
        config,
        store: store.clone(),
        log_store,
        secrets,
        tls: tls.clone(),
        installation,
        uploads,
        state_backups,
        runtime,
    });
    // The edge starts with the table of what is already running, so a restart of the
    // daemon serves the apps again at once.
    if let Err(err) = services.routing.refresh().await {
        tracing::warn!(error = %err, "building the first route table");
    }
    let api_addr = listeners.api.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let https_addr = listeners.https.local_addr()?;
    let upgrader = if upgrade_on_sighup {
        Some(Upgrader::new(&listeners.roles())?)
    } else {
        None
    };
    // SIGHUP is taken over from its default (ending the process) only where it upgrades.
    let mut sighup = if upgrade_on_sighup {
        Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        )?)
    } else {
        None
    };

    // Two groups, stopped apart in a hand-off: the servers (accepting, then draining), and
    // the background work that must never run in two processes at once.
    let serving = StopSignal::new();
    let working = StopSignal::new();
    let mut servers: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
    let mut background: Vec<JoinHandle<()>> = Vec::new();

    if predecessor.is_none() {
        recover_interrupted(&services).await;
    }
    // One API router, so the API listener and the console's hostname share its throttle
    // of failed token checks.
    let api_router = api::router(services.clone());
    let edge_stopped = serving.stopped();
    let edge = public_edge(&services, api_router.clone());
    let edge_tls = services.tls.clone();
    let (http, https) = (listeners.http, listeners.https);
    servers.push((
        "edge",
        tokio::spawn(async move {
            edge::serve(edge, edge_tls, http, https, edge_stopped).await?;
            Ok(())
        }),
    ));
    if let Some(listener) = listeners.metrics {
        let metrics_addr = listener.local_addr()?;
        tracing::info!(metrics = %metrics_addr, "serving GET /metrics without a token on this address");
        let service = api::metrics::unauthenticated_router(services.clone());
        let graceful = serving.stopped();
        servers.push((
            "metrics listener",
            tokio::spawn(async move {
                axum::serve(tokio::net::TcpListener::from_std(listener)?, service)
                    .with_graceful_shutdown(graceful)
                    .await?;
                Ok(())
            }),
        ));
    }
    // The route table follows the store in every process that serves; it only reads.
    background.push(tokio::spawn(
        services.routing.clone().run(serving.stopped()),
    ));

    // A hand-off: the edge serves beside the old process; the API waits until the old one
    // stopped accepting and its background work ended (runs it left are then recovered
    // before this API can start new ones); background work waits until it exited.
    let mut stopping = false;
    if let Some(predecessor) = &mut predecessor {
        predecessor.serving().await?;
        tracing::info!(
            pid = std::process::id(),
            "hand-off: serving; waiting for the old process to release"
        );
        tokio::select! {
            () = predecessor.released() => recover_interrupted(&services).await,
            () = &mut shutdown => stopping = true,
        }
    }
    let api_service = api_router.into_make_service_with_connect_info::<SocketAddr>();
    let api_graceful = serving.stopped();
    let api_listener = listeners.api;
    servers.insert(
        0,
        (
            "API server",
            tokio::spawn(async move {
                axum::serve(
                    tokio::net::TcpListener::from_std(api_listener)?,
                    api_service,
                )
                .with_graceful_shutdown(api_graceful)
                .await?;
                Ok(())
            }),
        ),
    );
    if !stopping {
        if let Some(predecessor) = &mut predecessor {
            tokio::select! {
                () = predecessor.exited() => {
                    tracing::info!("hand-off: the old process exited; starting background work");
                    // What the old process released in its last moments is served too.
                    if let Err(err) = services.routing.refresh().await {
                        tracing::warn!(error = %err, "refreshing the route table");
                    }
                }
                () = &mut shutdown => stopping = true,
            }
        }
    }
    if !stopping {
        background.extend(start_background(&services, &working));
    }

    tracing::info!(api = %api_addr, http = %http_addr, https = %https_addr, pid = std::process::id(), "cantila is listening");
    // Tell systemd (Type=notify) we are ready; a no-op when not run under systemd.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    // Until shutdown, or a hand-off whose new process serves.
    let mut successor = None;
    while !stopping {
        let hangup = async {
            match &mut sighup {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => stopping = true,
            _ = hangup => {
                let Some(upgrader) = &upgrader else { continue };
                tracing::info!("upgrade requested (SIGHUP): starting the binary on disk with the listening sockets");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                match upgrader.start_successor().await {
                    Ok(next) => {
                        tracing::info!(new_pid = next.pid, "hand-off: the new process serves; this one stops accepting and hands over its work");
                        successor = Some(next);
                        stopping = true;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "upgrade failed; this process keeps serving");
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    }
                }
            }
        }
    }

    match &mut successor {
        Some(successor) => {
            // Background work first, so the new process can start its own while this one
            // still drains its connections.
            serving.stop();
            working.stop();
            for task in background.drain(..) {
                let _ = task.await;
            }
            if let Err(err) = successor.release().await {
                tracing::warn!(error = %err, "hand-off: telling the new process its turn came");
            }
            tracing::info!("hand-off: background work handed over; finishing in-flight requests");
        }
        None => {
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            serving.stop();
            working.stop();
        }
    }
    if successor.is_some() {
        // The new process waits for this one's exit to start background work, so a
        // connection that never ends (a followed log stream on the API) must not hold the
        // exit: past the edge's drain time (and a margin for the API's own), what is left
        // is closed.
        let drain = services.config.edge.drain_timeout_secs;
        let limit = std::time::Duration::from_secs(drain.saturating_add(5));
        let aborts: Vec<_> = servers
            .iter()
            .map(|(_, server)| server.abort_handle())
            .collect();
        let drained = tokio::time::timeout(limit, async {
            for (what, server) in servers {
                if let Ok(Err(err)) = server.await {
                    tracing::warn!(error = %format!("{err:#}"), "hand-off: {what} ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                after_secs = limit.as_secs(),
                "hand-off: connections still open after the drain; closing them"
            );
            for abort in aborts {
                abort.abort();
            }
        }
    } else {
        for (what, server) in servers {
            server.await?.context(what)?;
        }
    }
    for task in background {
        let _ = task.await;
    }
    tokio::task::spawn_blocking(move || store.close()).await?;
    match successor {
        Some(successor) => {
            tracing::info!(new_pid = successor.pid, "hand-off done; this process exits")
        }
        None => tracing::info!("stopped cleanly"),
    }
    Ok(())
}

/// What a process that stopped mid-way left behind, recovered before the API can start
/// anything new: backups a crash interrupted are failed before anything can list them as
/// running, and runs left going are recorded interrupted and their containers removed.
async fn recover_interrupted(services: &api::ApiState) {
    if let Err(err) = services.backups.recover().await {
        tracing::warn!(error = %err, "recovering interrupted backups");
    }
    if let Err(err) = services.state_backups.recover().await {
        tracing::warn!(error = %err, "recovering interrupted state backups");
    }
    if let Err(err) = services.runs.recover().await {
        tracing::warn!(error = %err, "recovering interrupted runs");
    }
}

/// Starts the background work (each task with only the handle it runs), which ends when
/// `working` stops. Exactly one process runs it at a time.
fn start_background(services: &api::ApiState, working: &StopSignal) -> Vec<JoinHandle<()>> {
    let stopped = || working.stopped();
    let mut tasks = vec![
        tokio::spawn(metrics::collector::run(services.metrics.clone(), stopped())),
        tokio::spawn(services.deploys.clone().run_worker(stopped())),
        tokio::spawn(services.deploys.clone().run_reconciler(stopped())),
        tokio::spawn(crate::tls::run_renewals(services.tls.clone(), stopped())),
        tokio::spawn(services.previews.clone().run_expiry_sweep(stopped())),
        tokio::spawn(logs::collector::run(services.logs.clone(), stopped())),
        tokio::spawn(services.backups.clone().run_scheduler(stopped())),
        tokio::spawn(services.backups.clone().run_retries(stopped())),
        tokio::spawn(services.state_backups.clone().run_scheduler(stopped())),
        // At shutdown it ends the runs still going (so their live streams close and the
        // API can finish its in-flight requests).
        tokio::spawn(services.runs.clone().run_sweeper(stopped())),
        // Started after the runs' recovery, so a run the last daemon left `running` is
        // already `interrupted` when a `forbid` job looks for its running runs.
        tokio::spawn(services.jobs.clone().run_scheduler(stopped())),
        tokio::spawn(services.services.clone().run_reconciler(stopped())),
    ];
    // What should run comes back on an engine (or a PostgreSQL server) that lost it: the
    // projects' databases are made again first, then rebuilds are queued for live releases
    // whose image or site is gone (the reconciler repeats that check on every pass, and
    // every release makes sure of its database itself). In the background: an unreachable
    // server or engine never delays the API.
    let startup_databases = services.databases.clone();
    let startup_deploys = services.deploys.clone();
    let startup_stopped = stopped();
    let startup_pass = async move {
        if let Err(err) = startup_databases.ensure_all_present().await {
            tracing::warn!(error = %err, "recreating missing PostgreSQL databases");
        }
        match startup_deploys.rebuild_missing().await {
            Ok(rebuilds) if !rebuilds.queued.is_empty() => {
                tracing::info!(
                    rebuilds = rebuilds.queued.len(),
                    "queued rebuilds of live releases the engine lost"
                )
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "looking for live releases the engine lost"),
        }
    };
    // Cut short by shutdown, so it never outlives the daemon (a store closing under it, or
    // a rebuild queued after the worker stopped).
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            () = startup_pass => {}
            () = startup_stopped => {}
        }
    }));
    tasks
}

/// The public edge as the daemon runs it: the live route table and counters, the config's
/// limits, TLS's ACME answers, the log collector's access-log sink, and (when `[console]`
/// is on) the console's hostname answered by `api_router`. The edge is handed values; it
/// never reaches into the daemon's state.
fn public_edge(services: &api::ApiState, api_router: axum::Router) -> edge::Edge {
    let edge = edge::Edge::new(
        services.routing.routes().clone(),
        services.metrics.edge_counters(),
        edge::EdgeConfig::from(&services.config.edge),
        services.tls.challenges(),
    )
    .with_access_log(services.logs.access_log_sink())
    .with_static_memory(
        services
            .config
            .edge
            .static_memory_mb
            .saturating_mul(1024 * 1024),
    );
    match services.config.console_hostname() {
        Some(hostname) => edge.with_console(
            edge::ConsoleHost::new(
                hostname,
                services.tls.mode() != tls::TlsMode::Off,
                api_router,
            )
            .with_certificates(services.tls.clone()),
        ),
        None => edge,
    }
}

/// The id of this installation, made once and kept in `<data_dir>/installation-id`.
fn installation_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("installation-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = ids::random_base62(16).to_ascii_lowercase();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Installs the tracing subscriber for `cantila serve`: text or JSON to stderr, filtered
/// by `RUST_LOG` or the config's level.
pub fn init_logging(config: &config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    // rustls warns on every odd handshake (an IP address as SNI, say), which lets any
    // client flood the log; it speaks at `error` unless the filter names it.
    let with_quiet_tls = |filter: &str| {
        if filter.contains("rustls") {
            filter.to_owned()
        } else {
            format!("{filter},rustls=error")
        }
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|env| EnvFilter::try_new(with_quiet_tls(&env)).ok())
        .or_else(|| EnvFilter::try_new(with_quiet_tls(&config.level)).ok())
        .unwrap_or_else(|| EnvFilter::new("info,rustls=error"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match config.format {
        config::LogFormat::Text => builder.try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
    // Already installed (a test harness); keep the first.
    drop(result);
}
