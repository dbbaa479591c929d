//! `cantila previews list|create|delete`: preview deployments through the API.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::{block_on, output, print_json, Client, ClientArgs};

#[derive(Debug, Args)]
pub struct PreviewsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: PreviewsCommand,
}

#[derive(Debug, Subcommand)]
enum PreviewsCommand {
    /// List the project's previews with status, hostname, ref, commit and expiry.
    List {
        /// Project id or name.
        project: String,
    },
    /// Preview a branch or ref (a preview of the same branch is updated in place).
    Create {
        /// Project id or name.
        project: String,
        /// The branch to preview.
        #[arg(long, conflicts_with = "git_ref", required_unless_present = "git_ref")]
        branch: Option<String>,
        /// A branch, tag or commit to preview.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// The pull request the preview belongs to.
        #[arg(long)]
        pull_request: Option<u32>,
        /// An env override, KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Idle time before removal: seconds or 30m, 12h, 7d.
        #[arg(long)]
        ttl: Option<String>,
        /// Stream the build and release log until it ends; the exit code is the outcome.
        #[arg(long, short)]
        follow: bool,
    },
    /// Tear a preview down (containers, route, certificate record).
    Delete {
        /// Project id or name.
        project: String,
        /// The preview's id (prv_...).
        preview: String,
    },
}

pub fn previews(args: PreviewsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            PreviewsCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(Method::GET, &format!("/v1/projects/{id}/previews"), None)
                    .await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list["previews"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        let commit = output::cell(p, "commitSha");
                        vec![
                            output::cell(p, "id"),
                            output::cell(p, "status"),
                            output::cell(p, "hostname"),
                            output::cell(p, "ref"),
                            output::cell(p, "pullRequest"),
                            commit.chars().take(12).collect(),
                            output::cell(p, "createdAt"),
                            output::cell(p, "expiresAt"),
                        ]
                    })
                    .collect();
                output::print_table(
                    &[
                        "ID", "STATUS", "HOSTNAME", "REF", "PR", "COMMIT", "CREATED", "EXPIRES",
                    ],
                    &rows,
                );
                Ok(())
            }
            PreviewsCommand::Create {
                project,
                branch,
                git_ref,
                pull_request,
                env,
                ttl,
                follow,
            } => {
                let id = client.resolve_project(&project).await?;
                let mut body = json!({});
                if let Some(branch) = branch {
                    body["branch"] = json!(branch);
                }
                if let Some(git_ref) = git_ref {
                    body["ref"] = json!(git_ref);
                }
                if let Some(number) = pull_request {
                    body["pullRequest"] = json!(number);
                }
                if !env.is_empty() {
                    let mut vars = serde_json::Map::new();
                    for pair in &env {
                        let (key, value) = pair
                            .split_once('=')
                            .with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
                        vars.insert(key.to_owned(), Value::String(value.to_owned()));
                    }
                    body["env"] = Value::Object(vars);
                }
                if let Some(ttl) = ttl {
                    body["ttl"] = json!(ttl);
                }
                let preview = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/previews"),
                        Some(body),
                    )
                    .await?;
                if !follow {
                    if json {
                        return print_json(&preview);
                    }
                    println!(
                        "{} {} {}",
                        output::cell(&preview, "id"),
                        output::cell(&preview, "url"),
                        output::cell(&preview, "deployId")
                    );
                    return Ok(());
                }
                eprintln!(
                    "preview {} at {}",
                    output::cell(&preview, "id"),
                    output::cell(&preview, "url")
                );
                let deploy_id = output::cell(&preview, "deployId");
                let status = client
                    .follow_get(&format!("/v1/deploys/{deploy_id}/events"), json)
                    .await?;
                if status == "running" {
                    Ok(())
                } else {
                    bail!("the preview's deploy ended {status}")
                }
            }
            PreviewsCommand::Delete { project, preview } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(
                        Method::DELETE,
                        &format!("/v1/projects/{id}/previews/{preview}"),
                        None,
                    )
                    .await?;
                println!("removed {preview}");
                Ok(())
            }
        }
    })
}
