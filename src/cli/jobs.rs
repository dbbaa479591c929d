//! `cantila jobs list|add|remove|run-now APP`: a project's scheduled jobs through the API.

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    client::{block_on, print_json, Client, ClientArgs},
    output,
};

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Concurrency {
    Forbid,
    Allow,
    Replace,
}

impl Concurrency {
    fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// A project's jobs: schedule, next firing, last run, latest skip.
    List {
        /// Project id or name.
        project: String,
    },
    /// Add a job: `cantila jobs add APP NAME --schedule "0 3 * * *" -- CMD ARGS...`.
    Add {
        /// Project id or name.
        project: String,
        /// The job's name (a lowercase DNS label, unique within the project).
        name: String,
        /// Five cron fields (`0 3 * * *`), `daily at HH:MM`, `hourly`, or `every 15m` /
        /// `every 2h`.
        #[arg(long)]
        schedule: String,
        /// An IANA time zone the schedule reads (`Europe/Paris`); default UTC.
        #[arg(long = "time-zone", alias = "tz")]
        time_zone: Option<String>,
        /// Seconds before a run is stopped (1 to 86400; default 3600).
        #[arg(long)]
        timeout: Option<u64>,
        /// What a firing does while a run of the job is still going [default: forbid].
        #[arg(long, value_enum)]
        concurrency: Option<Concurrency>,
        /// A size tier (see `[scale.sizes]`); default the project's size.
        #[arg(long)]
        size: Option<String>,
        /// Add it disabled (it runs only with run-now until enabled).
        #[arg(long)]
        disabled: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Remove a job (one declared in cantila.toml is removed by removing it from the file).
    Remove {
        /// Project id or name.
        project: String,
        name: String,
    },
    /// Start a run of the job now; prints the run's id, or with `--follow` its output, and
    /// then exits with the command's exit code.
    RunNow {
        /// Project id or name.
        project: String,
        name: String,
        /// Print the run's output until it ends and exit with its exit code (Ctrl-C
        /// cancels the run, a second Ctrl-C leaves it running).
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

/// The job's newest run in a few words: `succeeded (0)`, `running`, `-`.
fn last_run(job: &Value) -> String {
    let run = &job["lastRun"];
    if run.is_null() {
        return "-".to_owned();
    }
    match run["exitCode"].as_i64() {
        Some(code) => format!("{} ({code})", output::cell(run, "status")),
        None => output::cell(run, "status"),
    }
}

fn command_of(job: &Value) -> String {
    job["command"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cantila jobs ...`.
pub fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            JobsCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(Method::GET, &format!("/v1/projects/{id}/jobs"), None)
                    .await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list["jobs"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|job| {
                        let schedule = match job["timeZone"].as_str() {
                            Some(zone) => format!("{} ({zone})", output::cell(job, "schedule")),
                            None => output::cell(job, "schedule"),
                        };
                        let next = if job["enabled"] == json!(false) {
                            "disabled".to_owned()
                        } else {
                            output::cell(job, "nextRunAt")
                        };
                        vec![
                            output::cell(job, "name"),
                            schedule,
                            next,
                            last_run(job),
                            output::cell(job, "skippedCount"),
                            output::cell(job, "source"),
                            command_of(job),
                        ]
                    })
                    .collect();
                output::print_table(
                    &[
                        "NAME", "SCHEDULE", "NEXT", "LAST RUN", "SKIPPED", "SOURCE", "COMMAND",
                    ],
                    &rows,
                );
                Ok(())
            }
            JobsCommand::Add {
                project,
                name,
                schedule,
                time_zone,
                timeout,
                concurrency,
                size,
                disabled,
                command,
            } => {
                let id = client.resolve_project(&project).await?;
                let mut body = json!({ "name": name, "schedule": schedule, "command": command });
                if let Some(zone) = time_zone {
                    body["timeZone"] = json!(zone);
                }
                if let Some(timeout) = timeout {
                    body["timeoutSecs"] = json!(timeout);
                }
                if let Some(concurrency) = concurrency {
                    body["concurrency"] = json!(concurrency.as_str());
                }
                if let Some(size) = size {
                    body["size"] = json!(size);
                }
                if disabled {
                    body["enabled"] = json!(false);
                }
                let job = client
                    .send(Method::POST, &format!("/v1/projects/{id}/jobs"), Some(body))
                    .await?;
                if json {
                    return print_json(&job);
                }
                println!(
                    "job {} added; next run {}",
                    output::cell(&job, "name"),
                    output::cell(&job, "nextRunAt")
                );
                Ok(())
            }
            JobsCommand::Remove { project, name } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(
                        Method::DELETE,
                        &format!("/v1/projects/{id}/jobs/{name}"),
                        None,
                    )
                    .await?;
                if !json {
                    println!("job {name} removed");
                }
                Ok(())
            }
            JobsCommand::RunNow {
                project,
                name,
                follow,
            } => {
                let id = client.resolve_project(&project).await?;
                let run = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/jobs/{name}/run"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&run);
                }
                println!(
                    "run {} {}",
                    output::cell(&run, "runId"),
                    output::cell(&run, "status")
                );
                if !follow {
                    return Ok(());
                }
                let run_id = run["runId"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("the API returned a run without an id"))?;
                match super::run::follow_to_end(&client, run_id).await? {
                    Some(ended) => match super::run::exit_status_of(&ended) {
                        0 => Ok(()),
                        code => Err(super::terminal::CommandExit(code).into()),
                    },
                    None => Err(super::terminal::CommandExit(130).into()),
                }
            }
        }
    })
}
