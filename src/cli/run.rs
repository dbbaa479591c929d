//! `cantila run APP -- CMD ARGS...`: starts a one-off run through the API, prints its
//! output as it comes (stdout to stdout, stderr to stderr; reconnecting with
//! `Last-Event-ID` after a dropped connection) and exits with the command's exit code.
//! Ctrl-C cancels the run (a second Ctrl-C leaves it running and exits). `cantila runs
//! list|cancel` list a project's runs and cancel one.

use std::{collections::BTreeMap, io::Write, process::ExitCode, time::Duration};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    client::{block_on, print_json, Client, ClientArgs},
    output,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    pub project: String,
    /// A size tier (see `[scale.sizes]`); default the project's size.
    #[arg(long)]
    pub size: Option<String>,
    /// Seconds before the run is stopped and ends `timed_out` (1 to 86400; default 3600).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Extra env for this run only: KEY=VALUE, or KEY to pass this shell's value (whose
    /// value then stays out of the process list). Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Run in this deploy's image and env instead of the serving release's.
    #[arg(long)]
    pub deploy: Option<String>,
    /// Interactive: send stdin to the command over its terminal (with -t for a shell).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal, this one in raw mode meanwhile (with -i).
    #[arg(short, long)]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// A project's runs, newest first.
    List {
        /// Project id or name.
        project: String,
    },
    /// Cancel a pending or running run (SIGTERM, then SIGKILL after the grace period).
    Cancel {
        /// The run's id (run_...).
        run: String,
    },
}

/// `cantila run`: the command's exit code, or 1 with the error on stderr.
pub fn run(args: RunArgs) -> ExitCode {
    if args.interactive || args.tty {
        return run_attached(&args);
    }
    let result = Client::new(&args.client).and_then(|client| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run_and_follow(&client, &args))
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cantila run -it`: an interactive run, joined to this terminal over its attach
/// WebSocket (`cli::terminal`), exiting with the command's exit code.
fn run_attached(args: &RunArgs) -> ExitCode {
    let result = super::terminal::run_blocking(async {
        let client = Client::new(&args.client)?;
        let project = client.resolve_project(&args.project).await?;
        let mut body = run_body(args)?;
        body["interactive"] = json!(true);
        let created = client
            .send(
                Method::POST,
                &format!("/v1/projects/{project}/runs"),
                Some(body),
            )
            .await?;
        let run_id = created["runId"]
            .as_str()
            .ok_or_else(|| anyhow!("the API returned a run without an id"))?;
        let options = super::terminal::Options {
            interactive: args.interactive,
            tty: args.tty,
        };
        super::terminal::attach(&client, &format!("/v1/runs/{run_id}/attach"), options).await
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The request body of a run.
fn run_body(args: &RunArgs) -> anyhow::Result<Value> {
    let mut env = BTreeMap::new();
    for item in &args.env {
        let (key, value) = match item.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (
                item.clone(),
                std::env::var(item).with_context(|| {
                    format!("-e {item}: no `{item}` in this shell's environment")
                })?,
            ),
        };
        env.insert(key, value);
    }
    let mut body = json!({ "command": args.command });
    if let Some(size) = &args.size {
        body["size"] = json!(size);
    }
    if let Some(timeout) = args.timeout {
        body["timeoutSecs"] = json!(timeout);
    }
    if !env.is_empty() {
        body["env"] = json!(env);
    }
    if let Some(deploy) = &args.deploy {
        body["deployId"] = json!(deploy);
    }
    Ok(body)
}

async fn run_and_follow(client: &Client, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let project = client.resolve_project(&args.project).await?;
    let created = client
        .send(
            Method::POST,
            &format!("/v1/projects/{project}/runs"),
            Some(run_body(args)?),
        )
        .await?;
    let run_id = created["runId"]
        .as_str()
        .ok_or_else(|| anyhow!("the API returned a run without an id"))?
        .to_owned();
    match follow_to_end(client, &run_id).await? {
        Some(ended) => Ok(exit_code_of(&ended)),
        None => Ok(ExitCode::from(130)),
    }
}

/// Prints a run's output until it ends and returns the run as it ended. A first Ctrl-C
/// cancels the run (its output keeps coming while it stops); a second leaves it running
/// and answers `None`. `cantila jobs run-now --follow` follows a job's run the same way.
pub(super) async fn follow_to_end(client: &Client, run_id: &str) -> anyhow::Result<Option<Value>> {
    let run_id = run_id.to_owned();
    let mut interrupted = false;
    // Kept across the loop: following again after a Ctrl-C resumes after the last line.
    let mut last_id: Option<String> = None;
    let ended = loop {
        tokio::select! {
            ended = follow(client, &run_id, &mut last_id) => break ended?,
            _ = tokio::signal::ctrl_c() => {
                if interrupted {
                    eprintln!("(left run {run_id} running; `cantila runs cancel {run_id}` stops it)");
                    return Ok(None);
                }
                interrupted = true;
                eprintln!("(canceling run {run_id}; Ctrl-C again to leave it running)");
                // Sent on the side: the output keeps coming while the run stops.
                let cancel = client
                    .http
                    .post(format!("{}/v1/runs/{run_id}/cancel", client.base))
                    .bearer_auth(&client.token)
                    .send();
                tokio::spawn(async move {
                    if let Err(err) = cancel.await {
                        eprintln!("(could not cancel: {err})");
                    }
                });
            }
        }
    };
    Ok(Some(ended))
}

/// What the run's final status means for this process: the command's exit code when it
/// has one (a note on stderr when it did not simply exit), otherwise 1.
fn exit_code_of(run: &Value) -> ExitCode {
    ExitCode::from(exit_status_of(run))
}

/// The exit status `exit_code_of` stands for, as a number (`cantila jobs run-now
/// --follow` hands it to `main` as a `CommandExit`).
pub(super) fn exit_status_of(run: &Value) -> u8 {
    let status = run["status"].as_str().unwrap_or("unknown");
    if status != "succeeded" && status != "failed" || run["error"].is_string() {
        eprintln!(
            "run {} ended {status}{}",
            output::cell(run, "id"),
            run["error"]
                .as_str()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        );
    }
    match run["exitCode"].as_i64() {
        Some(code) => u8::try_from(code).unwrap_or(1),
        None => 1,
    }
}

/// Prints the run's output until its `status` event; returns the run as it ended. A
/// dropped connection is resumed after the last line printed.
async fn follow(
    client: &Client,
    run_id: &str,
    last_id: &mut Option<String>,
) -> anyhow::Result<Value> {
    let mut failures = 0u32;
    loop {
        let mut request = client
            .http
            .request(
                Method::GET,
                format!("{}/v1/runs/{run_id}/events", client.base),
            )
            .bearer_auth(&client.token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_id.as_ref() {
            request = request.header("last-event-id", id);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) if failures < 60 => {
                failures += 1;
                eprintln!("(connection lost: {err}; retrying)");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot reach the Cantila API at {}", client.base))
            }
        };
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            return Err(super::client::refusal(status, &text));
        }
        failures = 0;
        if let Some(ended) = print_events(response, last_id).await {
            return Ok(ended);
        }
        // The stream ended without the run's status (the daemon restarted): resume.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints `output` events as they come; the run of the `status` event, or `None` when
/// the connection ended first.
async fn print_events(
    mut response: reqwest::Response,
    last_id: &mut Option<String>,
) -> Option<Value> {
    let mut buffer = String::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => return None,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = rest.trim().to_owned();
                } else if let Some(rest) = line.strip_prefix("id:") {
                    id = Some(rest.trim().to_owned());
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                }
            }
            let Ok(value) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            match event.as_str() {
                "status" => return Some(value),
                "output" => {
                    let text = value["line"].as_str().unwrap_or_default();
                    // A reader that went away (`| head`) is not the run's failure.
                    let _ = if value["stream"] == "stderr" {
                        let mut err = std::io::stderr().lock();
                        writeln!(err, "{text}").and_then(|()| err.flush())
                    } else {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{text}").and_then(|()| out.flush())
                    };
                    if id.is_some() {
                        *last_id = id;
                    }
                }
                _ => {}
            }
        }
    }
}

/// `cantila runs list|cancel`.
pub fn runs(args: RunsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            RunsCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(
                        Method::GET,
                        &format!("/v1/projects/{id}/runs?limit=50"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list["runs"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|run| {
                        let command: Vec<&str> = run["command"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(Value::as_str)
                            .collect();
                        vec![
                            output::cell(run, "id"),
                            output::cell(run, "status"),
                            output::cell(run, "exitCode"),
                            output::cell(run, "createdAt"),
                            output::cell(run, "durationMs"),
                            output::cell(run, "startedBy"),
                            command.join(" "),
                        ]
                    })
                    .collect();
                output::print_table(
                    &["ID", "STATUS", "EXIT", "CREATED", "MS", "BY", "COMMAND"],
                    &rows,
                );
                Ok(())
            }
            RunsCommand::Cancel { run } => {
                let ended = client
                    .send(Method::POST, &format!("/v1/runs/{run}/cancel"), None)
                    .await?;
                if json {
                    return print_json(&ended);
                }
                println!(
                    "run {} {}",
                    output::cell(&ended, "id"),
                    output::cell(&ended, "status")
                );
                Ok(())
            }
        }
    })
}
