//! The command line: `cantila serve`, `cantila admin ...` (direct on the data dir), and the
//! API client commands (`projects`, `tokens`, `whoami`, `previews`, `health`, `logs`,
//! `metrics`, `db`, `volumes`, `backups`, `run`, `runs`, `jobs`, `services`, ...).

mod admin;
mod client;
mod data;
mod exec;
mod jobs;
mod logs;
mod output;
mod run;
mod services;
mod state_backup;
mod terminal;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(name = "cantila", version, about = "A self-hosted PaaS in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: the API, the edge and the background workers.
    Serve(ServeArgs),
    /// Work on the data directory directly (on the server, even while the daemon runs).
    Admin(AdminArgs),
    /// Manage projects through the API.
    Projects(client::ProjectsArgs),
    /// Manage API tokens through the API.
    Tokens(client::TokensArgs),
    /// Show which account and scope the token has.
    Whoami(client::ClientArgs),
    /// Connect a project to a git repository.
    Git(client::GitArgs),
    /// Take a project's releases from an image instead of a repository.
    Image(client::ImageArgs),
    /// The account's registry credentials, for image pulls.
    Registries(client::RegistriesArgs),
    /// Deploy a project (optionally following the live log).
    Deploy(client::DeployArgs),
    /// List a project's deploys.
    Deploys(client::DeploysArgs),
    /// Run a one-off command in a project's release (`cantila run APP -- CMD ARGS...`),
    /// print its output and exit with its exit code.
    Run(run::RunArgs),
    /// A project's one-off runs: list, cancel.
    Runs(run::RunsArgs),
    /// A project's scheduled jobs: list, add, remove, run-now.
    Jobs(jobs::JobsArgs),
    /// A project's services (datastores, queues, any image) beside the app: list, add,
    /// rm, logs.
    Services(services::ServicesArgs),
    /// Show what a deploy would build and run, without deploying.
    Plan(client::PlanArgs),
    /// A project's environment variables.
    Env(client::EnvArgs),
    /// A project's build settings: root directory, Dockerfile, target, build args, watch paths.
    Build(client::BuildArgs),
    /// A project's build secrets (values read from stdin, never shown).
    BuildSecrets(client::BuildSecretsArgs),
    /// Change how many instances run, and their size, without a rebuild.
    Scale(client::ScaleArgs),
    /// A project's health check settings: show, set, reset.
    Health(client::HealthArgs),
    /// List a project's instances (or a preview's, with --preview).
    Instances(client::InstancesArgs),
    /// Re-release an earlier deploy (default: the one before the current release).
    Rollback(client::RollbackArgs),
    /// A project's alias hostnames and domains.
    Domains(client::DomainsArgs),
    /// Preview deployments of branches and pull requests.
    Previews(client::PreviewsArgs),
    /// A project's CPU, memory and request figures, with sparklines of the last hour.
    Metrics(client::MetricsArgs),
    /// A project's runtime logs (instances' output and the edge's access lines), or follow them.
    Logs(logs::LogsArgs),
    /// The database wired to a project.
    Db(data::DbArgs),
    /// A project's persistent volumes.
    Volumes(data::VolumesArgs),
    /// Backups: list, create, download, restore, schedule.
    Backups(data::BackupsArgs),
    /// Run a command inside a running instance (-it for an interactive terminal).
    Exec(exec::ExecArgs),
}

/// Where the configuration and data directory are; shared by `serve`, `admin` and the
/// client's token fallback.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// A TOML config file (see config.example.toml).
    #[arg(long, env = "CANTILA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The data directory [default: cantila-data].
    #[arg(long, env = "CANTILA_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    fn load(&self, overrides: Overrides) -> anyhow::Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            // Only from the environment: a flag would show the secret in `ps`.
            s3_secret_access_key: std::env::var("CANTILA_BACKUP_S3_SECRET_ACCESS_KEY").ok(),
            ..overrides
        };
        Ok(Config::load(self.config.as_deref(), overrides)?)
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    paths: DataDirArgs,
    /// Address of the /v1 API [default: 127.0.0.1:7070].
    #[arg(long, env = "CANTILA_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// Address of the public HTTP edge [default: 0.0.0.0:80].
    #[arg(long, env = "CANTILA_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Address of the public HTTPS edge [default: 0.0.0.0:443].
    #[arg(long, env = "CANTILA_HTTPS_LISTEN")]
    https_listen: Option<SocketAddr>,
    /// Projects are served at <name>.<handle>.<base-domain> [default: localhost].
    #[arg(long, env = "CANTILA_BASE_DOMAIN")]
    base_domain: Option<String>,
    /// After `cantila admin restore`: start even though the engine still has containers of
    /// the restored installation (the original server's), and adopt them.
    /// `CANTILA_TAKE_OVER` takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "CANTILA_TAKE_OVER", value_parser = clap::builder::BoolishValueParser::new())]
    take_over: bool,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    paths: DataDirArgs,
    #[command(subcommand)]
    command: admin::AdminCommand,
}

/// Parses the command line and runs it; errors are printed as one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Admin(args) => admin::run(args),
        Command::Projects(args) => client::projects(args),
        Command::Tokens(args) => client::tokens(args),
        Command::Whoami(args) => client::whoami(args),
        Command::Git(args) => client::git(args),
        Command::Image(args) => client::image(args),
        Command::Registries(args) => client::registries(args),
        Command::Deploy(args) => client::deploy(args),
        Command::Deploys(args) => client::deploys(args),
        // Exits with the run's own exit code, so it reports its errors itself.
        Command::Run(args) => return run::run(args),
        Command::Runs(args) => run::runs(args),
        Command::Jobs(args) => jobs::jobs(args),
        Command::Services(args) => services::services(args),
        Command::Plan(args) => client::plan(args),
        Command::Env(args) => client::env(args),
        Command::Build(args) => client::build(args),
        Command::BuildSecrets(args) => client::build_secrets(args),
        Command::Scale(args) => client::scale(args),
        Command::Health(args) => client::health(args),
        Command::Instances(args) => client::instances(args),
        Command::Rollback(args) => client::rollback(args),
        Command::Domains(args) => client::domains(args),
        Command::Previews(args) => client::previews(args),
        Command::Metrics(args) => client::metrics(args),
        Command::Logs(args) => logs::logs(args),
        Command::Db(args) => data::db(args),
        Command::Volumes(args) => data::volumes(args),
        Command::Backups(args) => data::backups(args),
        Command::Exec(args) => exec::exec(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A remote command's exit code is this process's, with nothing printed.
        Err(err) if err.downcast_ref::<terminal::CommandExit>().is_some() => {
            let code = err
                .downcast_ref::<terminal::CommandExit>()
                .map_or(1, |e| e.0);
            ExitCode::from(code)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.paths.load(Overrides {
        data_dir: None,
        api_listen: args.api_listen,
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        base_domain: args.base_domain,
        s3_secret_access_key: None,
        take_over: args.take_over,
    })?;
    crate::init_logging(&config.log);
    // Before any thread starts: it takes the passed descriptors and clears their variables.
    let mut inherited = crate::handoff::Inherited::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listeners = crate::Listeners::inherit_or_bind(&config, &mut inherited)?;
        let lifecycle = crate::handoff::Lifecycle {
            shutdown: Box::pin(shutdown_signal()),
            upgrade_on_sighup: true,
            predecessor: inherited.take_control(),
        };
        crate::run_with(config, listeners, lifecycle).await
    })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
