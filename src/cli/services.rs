//! `cantila services list|add|rm|logs APP`: a project's services through the API.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    client::{block_on, print_json, Client, ClientArgs},
    logs::LogsArgs,
    output,
};

#[derive(Debug, Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ServicesCommand,
}

#[derive(Debug, Subcommand)]
enum ServicesCommand {
    /// A project's services with their state.
    List {
        /// Project id or name.
        project: String,
    },
    /// Add a service: an add-on by engine (`cantila services add APP redis`) or any image
    /// (`cantila services add APP --image busybox --name cache -- CMD ARGS...`).
    Add {
        /// Project id or name.
        project: String,
        /// An add-on engine (redis, postgres, mariadb, ...); or give --image.
        engine: Option<String>,
        /// The image its containers start from.
        #[arg(long, conflicts_with = "engine")]
        image: Option<String>,
        /// The service's name, its host name on the project's network [default: the
        /// engine's name].
        #[arg(long)]
        name: Option<String>,
        /// An env var of the service (repeatable); values are never shown again.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// A volume of its own, `NAME:/path` (repeatable).
        #[arg(long = "volume", value_name = "NAME:/PATH")]
        volumes: Vec<String>,
        /// The port it listens on inside the project's network.
        #[arg(long)]
        port: Option<u16>,
        /// What ready means: `tcp` (the port accepts), `none`, or `cmd:ARG ARG...` (a
        /// command inside the container exits 0).
        #[arg(long)]
        health: Option<String>,
        /// How many containers [default: 1].
        #[arg(long)]
        count: Option<u32>,
        /// Wait until it is ready (an add-on always waits).
        #[arg(long)]
        wait: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Remove a service (one owning a volume needs --delete-data).
    Rm {
        /// Project id or name.
        project: String,
        name: String,
        /// Also delete its volumes and their data.
        #[arg(long)]
        delete_data: bool,
    },
    /// A service's output (its lines of `cantila logs APP --service NAME`).
    Logs {
        /// Project id or name.
        project: String,
        name: String,
        /// Keep printing new lines as they come, until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        /// Lines at or after this time: RFC 3339 or a window before now (30s, 10m, 2h, 1d).
        #[arg(long)]
        since: Option<String>,
    },
}

/// The body of `add` from its flags.
#[allow(clippy::too_many_arguments)]
fn add_body(
    engine: Option<String>,
    image: Option<String>,
    name: Option<String>,
    env: Vec<String>,
    volumes: Vec<String>,
    port: Option<u16>,
    health: Option<String>,
    count: Option<u32>,
    command: Vec<String>,
) -> anyhow::Result<Value> {
    // An add-on without --name is named by the server after its engine (`mysql` is
    // MariaDB's alias, so that one is named `mariadb`).
    let mut body = match (&name, &engine) {
        (Some(name), _) => json!({ "name": name }),
        (None, Some(_)) => json!({}),
        (None, None) => anyhow::bail!("give --name with --image"),
    };
    match (engine, image) {
        (Some(engine), None) => body["addon"] = json!(engine),
        (None, Some(image)) => body["image"] = json!(image),
        _ => anyhow::bail!("give an add-on engine (redis, postgres, ...) or --image"),
    }
    if !env.is_empty() {
        let mut map = serde_json::Map::new();
        for pair in env {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--env {pair:?}: use KEY=VALUE"))?;
            map.insert(key.to_owned(), json!(value));
        }
        body["env"] = Value::Object(map);
    }
    if !volumes.is_empty() {
        let mut list = Vec::new();
        for volume in volumes {
            let (name, path) = volume
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--volume {volume:?}: use NAME:/path"))?;
            list.push(json!({ "name": name, "path": path }));
        }
        body["volumes"] = json!(list);
    }
    if let Some(port) = port {
        body["port"] = json!(port);
    }
    if let Some(health) = health {
        body["health"] = match health.as_str() {
            "tcp" => json!({ "type": "tcp" }),
            "none" => json!({ "type": "none" }),
            other => match other.strip_prefix("cmd:") {
                Some(command) => json!({
                    "type": "command",
                    "command": command.split_whitespace().collect::<Vec<_>>(),
                }),
                None => anyhow::bail!("--health {other:?}: use tcp, none or cmd:COMMAND ARGS"),
            },
        };
    }
    if let Some(count) = count {
        body["count"] = json!(count);
    }
    if !command.is_empty() {
        body["command"] = json!(command);
    }
    Ok(body)
}

/// Polls the service until it is ready; fails when it fails, or after 5 minutes.
async fn wait_ready(client: &Client, project_id: &str, name: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let service = client
            .send(
                Method::GET,
                &format!("/v1/projects/{project_id}/services/{name}"),
                None,
            )
            .await?;
        match service["state"].as_str() {
            Some("ready") => return Ok(service),
            Some("failed") => anyhow::bail!(
                "service {name} failed: {}",
                service["error"].as_str().unwrap_or("no reason given")
            ),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "service {name} is still {} after 5 minutes",
                output::cell(&service, "state")
            );
        }
        // The poll interval: the state is read again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn keys(value: &Value) -> String {
    value
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cantila services ...`.
pub fn services(args: ServicesArgs) -> anyhow::Result<()> {
    if let ServicesCommand::Logs {
        project,
        name,
        follow,
        since,
    } = args.command
    {
        return super::logs::logs(LogsArgs::of_service(
            args.client,
            project,
            name,
            follow,
            since,
        ));
    }
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            ServicesCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(Method::GET, &format!("/v1/projects/{id}/services"), None)
                    .await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list["services"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|service| {
                        let state = match service["error"].as_str() {
                            Some(error) => format!("{} ({error})", output::cell(service, "state")),
                            None => output::cell(service, "state"),
                        };
                        let running = service["instances"].as_array().map_or(0, Vec::len);
                        vec![
                            output::cell(service, "name"),
                            output::cell(service, "image"),
                            state,
                            format!("{running}/{}", output::cell(service, "count")),
                            output::cell(service, "source"),
                        ]
                    })
                    .collect();
                output::print_table(&["NAME", "IMAGE", "STATE", "RUNNING", "SOURCE"], &rows);
                Ok(())
            }
            ServicesCommand::Add {
                project,
                engine,
                image,
                name,
                env,
                volumes,
                port,
                health,
                count,
                wait,
                command,
            } => {
                let addon = engine.is_some();
                let body = add_body(
                    engine, image, name, env, volumes, port, health, count, command,
                )?;
                let id = client.resolve_project(&project).await?;
                let created = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/services"),
                        Some(body),
                    )
                    .await?;
                let name = created["name"].as_str().unwrap_or_default().to_owned();
                let service = if wait || addon {
                    if !json {
                        println!("service {name} added; waiting until it is ready");
                    }
                    wait_ready(&client, &id, &name).await?
                } else {
                    created
                };
                if json {
                    return print_json(&service);
                }
                println!("service {name} is {}", output::cell(&service, "state"));
                let wired = keys(&service["connection"]["envKeys"]);
                if !wired.is_empty() {
                    println!("the app's containers get {wired} from their next start");
                }
                Ok(())
            }
            ServicesCommand::Rm {
                project,
                name,
                delete_data,
            } => {
                let id = client.resolve_project(&project).await?;
                let path = if delete_data {
                    format!("/v1/projects/{id}/services/{name}?deleteData=true")
                } else {
                    format!("/v1/projects/{id}/services/{name}")
                };
                client.send(Method::DELETE, &path, None).await?;
                if !json {
                    println!("service {name} removed");
                }
                Ok(())
            }
            ServicesCommand::Logs { .. } => Ok(()),
        }
    })
}
