//! Cantila: a self-hosted PaaS in one binary. `run` starts the whole daemon on listeners
//! the caller has already bound, so tests run the real daemon in-process on port 0.

#![forbid(unsafe_code)]

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

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::{config::Config, store::Store};

/// The daemon's bound sockets. Binding is separate from `run` so a caller can bind port 0
/// and learn the addresses first.
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
    /// that changes it.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            api: bind_one(
                config.api_listen,
                "the API",
                "--api-listen / CANTILA_API_LISTEN",
            )
            .await?,
            http: bind_one(
                config.http_listen,
                "the HTTP edge",
                "--http-listen / CANTILA_HTTP_LISTEN",
            )
            .await?,
            https: bind_one(
                config.https_listen,
                "the HTTPS edge",
                "--https-listen / CANTILA_HTTPS_LISTEN",
            )
            .await?,
            metrics: match config.metrics_listen {
                Some(addr) => Some(
                    bind_one(
                        addr,
                        "the metrics listener",
                        "metrics_listen in the config file",
                    )
                    .await?,
                ),
                None => None,
            },
        })
    }

    /// Binds all three on `127.0.0.1:0`, for tests.
    pub async fn ephemeral() -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Self {
            api: TcpListener::bind(any).await?,
            http: TcpListener::bind(any).await?,
            https: TcpListener::bind(any).await?,
            metrics: None,
        })
    }
}

async fn bind_one(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
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
    let log_store = store.companion()?;
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
    // Backups a crash interrupted are failed before anything can list them as running.
    if let Err(err) = services.backups.recover().await {
        tracing::warn!(error = %err, "recovering interrupted backups");
    }
    if let Err(err) = services.state_backups.recover().await {
        tracing::warn!(error = %err, "recovering interrupted state backups");
    }
    // Runs the previous process left going are recorded interrupted and their containers
    // removed before the API can start new ones.
    if let Err(err) = services.runs.recover().await {
        tracing::warn!(error = %err, "recovering interrupted runs");
    }
    let api_addr = listeners.api.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let https_addr = listeners.https.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };

    // One API router, so the API listener and the console's hostname share its throttle
    // of failed token checks.
    let api_router = api::router(services.clone());
    let api_service = api_router
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    let api_graceful = stopped();
    let api_server = tokio::spawn(async move {
        axum::serve(listeners.api, api_service)
            .with_graceful_shutdown(api_graceful)
            .await
    });
    let edge_server = tokio::spawn(edge::serve(
        public_edge(&services, api_router),
        services.tls.clone(),
        listeners.http.into_std()?,
        listeners.https.into_std()?,
        stopped(),
    ));

    let metrics_server = match listeners.metrics {
        Some(listener) => {
            let metrics_addr = listener.local_addr()?;
            tracing::info!(metrics = %metrics_addr, "serving GET /metrics without a token on this address");
            let service = api::metrics::unauthenticated_router(services.clone());
            let graceful = stopped();
            Some(tokio::spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(graceful)
                    .await
            }))
        }
        None => None,
    };
    let collector = tokio::spawn(metrics::collector::run(services.metrics.clone(), stopped()));
    let worker = tokio::spawn(services.deploys.clone().run_worker(stopped()));
    let router_task = tokio::spawn(services.routing.clone().run(stopped()));
    let reconciler = tokio::spawn(services.deploys.clone().run_reconciler(stopped()));
    let renewals = tokio::spawn(crate::tls::run_renewals(tls, stopped()));
    let preview_sweep = tokio::spawn(services.previews.clone().run_expiry_sweep(stopped()));
    let log_writer = tokio::spawn(logs::collector::run(services.logs.clone(), stopped()));
    let backup_scheduler = tokio::spawn(services.backups.clone().run_scheduler(stopped()));
    let upload_retries = tokio::spawn(services.backups.clone().run_retries(stopped()));
    let state_backup_scheduler =
        tokio::spawn(services.state_backups.clone().run_scheduler(stopped()));
    // At shutdown it ends the runs still going (so their live streams close and the API
    // can finish its in-flight requests).
    let run_sweeper = tokio::spawn(services.runs.clone().run_sweeper(stopped()));
    // Started after the runs' recovery above, so a run the last daemon left `running` is
    // already `interrupted` when a `forbid` job looks for its running runs.
    let job_scheduler = tokio::spawn(services.jobs.clone().run_scheduler(stopped()));
    let services_reconciler = tokio::spawn(services.services.clone().run_reconciler(stopped()));
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
    // Spawned once the listeners serve, and cut short by shutdown, so it never outlives the
    // daemon (a store closing under it, or a rebuild queued after the worker stopped).
    let startup = tokio::spawn(async move {
        tokio::select! {
            () = startup_pass => {}
            () = startup_stopped => {}
        }
    });

    tracing::info!(api = %api_addr, http = %http_addr, https = %https_addr, "cantila is listening");
    // Tell systemd (Type=notify) we are ready; a no-op when not run under systemd.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    api_server.await?.context("API server")?;
    edge_server.await?.context("edge")?;
    if let Some(server) = metrics_server {
        server.await?.context("metrics listener")?;
    }
    let _ = collector.await;
    let _ = worker.await;
    let _ = router_task.await;
    let _ = reconciler.await;
    let _ = renewals.await;
    let _ = preview_sweep.await;
    let _ = log_writer.await;
    let _ = backup_scheduler.await;
    let _ = upload_retries.await;
    let _ = state_backup_scheduler.await;
    let _ = run_sweeper.await;
    let _ = job_scheduler.await;
    let _ = services_reconciler.await;
    let _ = startup.await;
    tokio::task::spawn_blocking(move || store.close()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
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
    .with_access_log(services.logs.access_log_sink());
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
