//! `cantila build show|set` (a project's build settings) and `cantila build-secrets
//! set|list|remove` through the API. A secret's value is read from stdin, never from an
//! argument, which `ps` and shell history would show.

use std::io::Read;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{block_on, output, print_json, Client, ClientArgs};

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: BuildCommand,
}

#[derive(Debug, Subcommand)]
enum BuildCommand {
    /// Show the build settings set through the API (`cantila plan` shows what applies).
    Show {
        /// Project id or name.
        project: String,
    },
    /// Change build settings; options not given stay as they are.
    Set {
        /// Project id or name.
        project: String,
        /// The directory of the repository to build from (`.` = its root).
        #[arg(long)]
        root_dir: Option<String>,
        /// The Dockerfile, relative to the root directory (`""` clears it).
        #[arg(long)]
        dockerfile: Option<String>,
        /// The stage to build (`""` clears it).
        #[arg(long)]
        target: Option<String>,
        /// A build arg, KEY=VALUE (repeatable; replaces all build args).
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// Remove every build arg.
        #[arg(long, conflicts_with = "build_args")]
        clear_build_args: bool,
        /// A watch path glob (repeatable; replaces all watch paths).
        #[arg(long = "watch", value_name = "GLOB")]
        watch_paths: Vec<String>,
        /// Remove every watch path: every push deploys.
        #[arg(long, conflicts_with = "watch_paths")]
        clear_watch: bool,
    },
}

/// `""` on the command line clears a setting (`null` in the API).
fn text_or_null(value: &str) -> Value {
    if value.is_empty() {
        Value::Null
    } else {
        json!(value)
    }
}

pub fn build(args: BuildArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let (project, body) = match &args.command {
            BuildCommand::Show { project } => (project, None),
            BuildCommand::Set {
                project,
                root_dir,
                dockerfile,
                target,
                build_args,
                clear_build_args,
                watch_paths,
                clear_watch,
            } => {
                let mut build = Map::new();
                if let Some(root_dir) = root_dir {
                    build.insert("rootDir".to_owned(), text_or_null(root_dir));
                }
                if let Some(dockerfile) = dockerfile {
                    build.insert("dockerfile".to_owned(), text_or_null(dockerfile));
                }
                if let Some(target) = target {
                    build.insert("target".to_owned(), text_or_null(target));
                }
                if !build_args.is_empty() || *clear_build_args {
                    let mut args = Map::new();
                    for pair in build_args {
                        let (key, value) = pair
                            .split_once('=')
                            .ok_or_else(|| anyhow!("`{pair}` is not KEY=VALUE"))?;
                        args.insert(key.to_owned(), json!(value));
                    }
                    build.insert("buildArgs".to_owned(), Value::Object(args));
                }
                if !watch_paths.is_empty() || *clear_watch {
                    build.insert("watchPaths".to_owned(), json!(watch_paths));
                }
                if build.is_empty() {
                    bail!("nothing to set: give --root-dir, --dockerfile, --target, --build-arg or --watch");
                }
                (project, Some(json!({ "build": build })))
            }
        };
        let id = client.resolve_project(project).await?;
        let method = if body.is_some() {
            Method::PATCH
        } else {
            Method::GET
        };
        let project = client
            .send(method, &format!("/v1/projects/{id}"), body)
            .await?;
        let build = &project["build"];
        if json {
            return print_json(build);
        }
        for field in ["rootDir", "dockerfile", "target", "buildArgs", "watchPaths"] {
            println!("{field:<11} {}", output::cell(build, field));
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct BuildSecretsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: BuildSecretsCommand,
}

#[derive(Debug, Subcommand)]
enum BuildSecretsCommand {
    /// List the project's build secrets (names only: values are never shown).
    List {
        /// Project id or name.
        project: String,
    },
    /// Set a build secret; its value is read from stdin (`printf %s "$TOKEN" | ...`).
    Set {
        /// Project id or name.
        project: String,
        /// The secret's name, as the Dockerfile's `--mount=type=secret,id=NAME` uses it.
        name: String,
    },
    /// Remove a build secret.
    Remove {
        /// Project id or name.
        project: String,
        name: String,
    },
}

/// A name goes into the request's path, so anything but an identifier's characters is
/// refused here rather than changing which path is asked for.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("`{name}` is not a valid build secret name: use letters, digits and `_`");
    }
    Ok(())
}

pub fn build_secrets(args: BuildSecretsArgs) -> anyhow::Result<()> {
    if let BuildSecretsCommand::Set { name, .. } | BuildSecretsCommand::Remove { name, .. } =
        &args.command
    {
        check_name(name)?;
    }
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match &args.command {
            BuildSecretsCommand::List { project } => {
                let id = client.resolve_project(project).await?;
                let listing = client
                    .send(
                        Method::GET,
                        &format!("/v1/projects/{id}/build-secrets"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&listing);
                }
                let rows: Vec<Vec<String>> = listing["secrets"]
                    .as_array()
                    .map(|secrets| {
                        secrets
                            .iter()
                            .map(|secret| {
                                vec![
                                    output::cell(secret, "name"),
                                    output::cell(secret, "updatedAt"),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                output::print_table(&["NAME", "UPDATED"], &rows);
            }
            BuildSecretsCommand::Set { project, name } => {
                let mut value = String::new();
                std::io::stdin().read_to_string(&mut value)?;
                // One trailing newline is the shell's, not the secret's.
                let value = value.strip_suffix('\n').unwrap_or(&value);
                let value = value.strip_suffix('\r').unwrap_or(value);
                let id = client.resolve_project(project).await?;
                let set = client
                    .send(
                        Method::PUT,
                        &format!("/v1/projects/{id}/build-secrets/{name}"),
                        Some(json!({ "value": value })),
                    )
                    .await?;
                if json {
                    return print_json(&set);
                }
                println!("set build secret {}", output::cell(&set, "name"));
            }
            BuildSecretsCommand::Remove { project, name } => {
                let id = client.resolve_project(project).await?;
                client
                    .send(
                        Method::DELETE,
                        &format!("/v1/projects/{id}/build-secrets/{name}"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&json!({ "removed": name }));
                }
                println!("removed build secret {name}");
            }
        }
        Ok(())
    })
}
