//! The API client commands. Every one of them goes through the `/v1` API exactly as a
//! script would; the CLI has no private path into the daemon.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::config::Overrides;

use super::{output, DataDirArgs};

/// How to reach the API: URL and token from flags, the environment, or, on the server,
/// `<data_dir>/admin-token`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The API's base URL.
    #[arg(
        long,
        env = "CANTILA_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    url: String,
    /// An API token; defaults to <data_dir>/admin-token when readable.
    #[arg(long, env = "CANTILA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    paths: DataDirArgs,
}

#[derive(Debug, Args)]
pub struct ProjectsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ProjectsCommand,
}

#[derive(Debug, Subcommand)]
enum ProjectsCommand {
    /// List every project of the account.
    List,
    /// Create a project.
    Create {
        name: String,
        /// Runtime hint: dockerfile, static, node, python, go, rust, ruby, php.
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Show one project, by id (prj_...) or name.
    Get { project: String },
    /// Delete a project, by id or name.
    Delete { project: String },
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// List the account's tokens.
    List,
    /// Mint a token; prints only the token unless --json.
    Create {
        /// read, deploy or admin.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match &args.token {
            Some(token) => token.clone(),
            None => {
                let config = args.paths.load(Overrides::default())?;
                let path = config.admin_token_path();
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|_| {
                        anyhow!(
                            "no API token: pass --token or set CANTILA_TOKEN (on the server, {} is used when readable)",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Self {
            http: reqwest::Client::builder()
                .user_agent(concat!("cantila-cli/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends a request; returns the JSON body of a success, or the API's error message.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the Cantila API at {}; is `cantila serve` running?",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).context("the API answered with invalid JSON");
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{message} (HTTP {})", status.as_u16())
    }

    /// A project id for an id or a name in the token's account.
    async fn resolve_project(&self, project: &str) -> anyhow::Result<String> {
        if project.starts_with("prj_") {
            return Ok(project.to_owned());
        }
        let account = self.send(Method::GET, "/v1/account", None).await?;
        let handle = account["handle"].as_str().unwrap_or_default();
        let found = self
            .send(
                Method::GET,
                &format!("/v1/projects/by-handle/{handle}/{project}"),
                None,
            )
            .await?;
        found["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the API returned a project without an id"))
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_project(project: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(project);
    }
    for field in [
        "id",
        "name",
        "handle",
        "status",
        "runtime",
        "hostname",
        "createdAt",
        "updatedAt",
    ] {
        println!("{field:<10} {}", output::cell(project, field));
    }
    Ok(())
}

pub fn projects(args: ProjectsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            ProjectsCommand::List => {
                let mut projects = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let path = match &cursor {
                        Some(cursor) => format!("/v1/projects?limit=200&cursor={cursor}"),
                        None => "/v1/projects?limit=200".to_owned(),
                    };
                    let page = client.send(Method::GET, &path, None).await?;
                    projects.extend(page["projects"].as_array().cloned().unwrap_or_default());
                    match page["nextCursor"].as_str() {
                        Some(next) => cursor = Some(next.to_owned()),
                        None => break,
                    }
                }
                if json {
                    print_json(&json!({ "projects": projects }))
                } else {
                    output::print_projects(&projects);
                    Ok(())
                }
            }
            ProjectsCommand::Create { name, runtime } => {
                let mut body = json!({ "name": name });
                if let Some(runtime) = runtime {
                    body["runtime"] = json!(runtime);
                }
                let project = client
                    .send(Method::POST, "/v1/projects", Some(body))
                    .await?;
                print_project(&project, json)
            }
            ProjectsCommand::Get { project } => {
                let id = client.resolve_project(&project).await?;
                let project = client
                    .send(Method::GET, &format!("/v1/projects/{id}"), None)
                    .await?;
                print_project(&project, json)
            }
            ProjectsCommand::Delete { project } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(Method::DELETE, &format!("/v1/projects/{id}"), None)
                    .await?;
                if json {
                    print_json(&json!({ "deleted": id }))
                } else {
                    println!("deleted {id}");
                    Ok(())
                }
            }
        }
    })
}

pub fn tokens(args: TokensArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            TokensCommand::List => {
                let list = client.send(Method::GET, "/v1/tokens", None).await?;
                if json {
                    print_json(&list)
                } else {
                    output::print_tokens(&list["tokens"]);
                    Ok(())
                }
            }
            TokensCommand::Create { scope, name } => {
                let mut body = json!({ "scope": scope });
                if let Some(name) = name {
                    body["name"] = json!(name);
                }
                let created = client.send(Method::POST, "/v1/tokens", Some(body)).await?;
                if json {
                    print_json(&created)
                } else {
                    println!("{}", output::cell(&created, "token"));
                    Ok(())
                }
            }
            TokensCommand::Revoke { id } => {
                let revoked = client
                    .send(Method::DELETE, &format!("/v1/tokens/{id}"), None)
                    .await?;
                if json {
                    print_json(&revoked)
                } else {
                    println!("revoked {id}");
                    Ok(())
                }
            }
        }
    })
}

pub fn whoami(args: super::client::ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    let json = args.json;
    block_on(async move {
        let account = client.send(Method::GET, "/v1/account", None).await?;
        if json {
            print_json(&account)
        } else {
            println!(
                "{} (account {}, token {}, scope {})",
                output::cell(&account, "handle"),
                output::cell(&account, "id"),
                output::cell(&account, "tokenId"),
                output::cell(&account, "scope")
            );
            Ok(())
        }
    })
}
