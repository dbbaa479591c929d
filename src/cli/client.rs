//! The API client commands. Every one of them goes through the `/v1` API exactly as a
//! script would; the CLI has no private path into the daemon.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::config::Overrides;

use super::{output, DataDirArgs};

mod build;
mod health;
mod previews;
pub use build::{build, build_secrets, BuildArgs, BuildSecretsArgs};
pub use health::{health, HealthArgs};
pub use previews::{previews, PreviewsArgs};

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
    pub(super) json: bool,
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

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
}

impl Client {
    pub(super) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
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
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
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
        Err(refusal(status.as_u16(), &text))
    }

    /// A project id for an id or a name in the token's account.
    pub(super) async fn resolve_project(&self, project: &str) -> anyhow::Result<String> {
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

pub(super) fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(
    future: F,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
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

#[derive(Debug, Args)]
pub struct GitArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: GitCommand,
}

#[derive(Debug, Subcommand)]
enum GitCommand {
    /// Connect (or reconnect) a repository; prints the webhook secret once.
    Connect {
        /// Project id or name.
        project: String,
        /// https URL, owner/name, local path or file:// URL.
        repo: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Access token for a private https repository.
        #[arg(long, env = "CANTILA_GIT_TOKEN", hide_env_values = true)]
        access_token: Option<String>,
    },
    /// Show the connection and the last webhook delivery.
    Show { project: String },
    /// Replace the webhook secret; prints the new one once.
    RotateSecret { project: String },
}

pub fn git(args: GitArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            GitCommand::Connect {
                project,
                repo,
                branch,
                access_token,
            } => {
                let id = client.resolve_project(&project).await?;
                let mut body = json!({ "repo": repo, "branch": branch });
                if let Some(token) = access_token {
                    body["accessToken"] = json!(token);
                }
                let connected = client
                    .send(Method::POST, &format!("/v1/projects/{id}/git"), Some(body))
                    .await?;
                if json {
                    return print_json(&connected);
                }
                println!(
                    "connected {} ({})",
                    output::cell(&connected, "repo"),
                    output::cell(&connected, "branch")
                );
                println!(
                    "webhook URL path: {}",
                    output::cell(&connected, "webhookPath")
                );
                println!(
                    "webhook secret (shown once): {}",
                    output::cell(&connected, "webhookSecret")
                );
                Ok(())
            }
            GitCommand::Show { project } => {
                let id = client.resolve_project(&project).await?;
                let view = client
                    .send(Method::GET, &format!("/v1/projects/{id}/git"), None)
                    .await?;
                print_json(&view)
            }
            GitCommand::RotateSecret { project } => {
                let id = client.resolve_project(&project).await?;
                let rotated = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/git/rotate-secret"),
                        None,
                    )
                    .await?;
                if json {
                    print_json(&rotated)
                } else {
                    println!("{}", output::cell(&rotated, "webhookSecret"));
                    Ok(())
                }
            }
        }
    })
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
    /// Branch, tag or commit (default: the connected branch).
    #[arg(long = "ref", conflicts_with = "image")]
    git_ref: Option<String>,
    /// For a project whose source is an image: a tag or sha256: digest of the connected
    /// repository to deploy (default: the connected tag).
    #[arg(long)]
    image: Option<String>,
    /// Stream the build and release log until the deploy ends; the exit code is the outcome.
    #[arg(long, short)]
    follow: bool,
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let body = match (&args.git_ref, &args.image) {
            (Some(git_ref), _) => json!({ "ref": git_ref }),
            (None, Some(image)) => json!({ "image": image }),
            (None, None) => json!({}),
        };
        if !args.follow {
            let created = client
                .send(
                    Method::POST,
                    &format!("/v1/projects/{id}/deploy"),
                    Some(body),
                )
                .await?;
            if json {
                return print_json(&created);
            }
            println!(
                "{} {}",
                output::cell(&created, "deployId"),
                output::cell(&created, "status")
            );
            return Ok(());
        }
        let status = client
            .follow(&format!("/v1/projects/{id}/deploy/stream"), body, json)
            .await?;
        if status == "unchanged" {
            if !json {
                eprintln!(
                    "==> unchanged: the image's digest is what already serves; nothing deployed"
                );
            }
            Ok(())
        } else if status == "running" {
            Ok(())
        } else {
            bail!("the deploy ended {status}")
        }
    })
}

impl Client {
    /// GETs a deploy's event stream and prints it; returns the final status.
    async fn follow_get(&self, path: &str, json: bool) -> anyhow::Result<String> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.follow_request(request, json).await
    }

    /// POSTs and prints the SSE stream; returns the final status from `done`.
    async fn follow(&self, path: &str, body: Value, json: bool) -> anyhow::Result<String> {
        let request = self.http.post(format!("{}{path}", self.base)).json(&body);
        self.follow_request(request, json).await
    }

    async fn follow_request(
        &self,
        request: reqwest::RequestBuilder,
        json: bool,
    ) -> anyhow::Result<String> {
        let mut response = request
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach the Cantila API at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            return Err(refusal(status, &text));
        }
        let mut buffer = String::new();
        let mut final_status = String::from("unknown");
        while let Some(chunk) = response.chunk().await? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix("event:") {
                        event = if rest.trim() == "status" {
                            "status"
                        } else if rest.trim() == "log" {
                            "log"
                        } else if rest.trim() == "done" {
                            "done"
                        } else {
                            "other"
                        };
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push_str(rest.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if json {
                    println!("{}", json!({ "event": event, "data": value }));
                }
                match event {
                    "log" if !json => println!("{}", value["line"].as_str().unwrap_or_default()),
                    "status" if !json => {
                        let detail = value["detail"]
                            .as_str()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default();
                        eprintln!(
                            "==> {}{detail}",
                            value["status"].as_str().unwrap_or_default()
                        );
                    }
                    "done" => {
                        final_status = value["status"].as_str().unwrap_or("unknown").to_owned();
                        // A deploy that found nothing new ends `canceled` with this
                        // outcome: it is a success for the caller.
                        if value["outcome"] == "unchanged" {
                            final_status = "unchanged".to_owned();
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(final_status)
    }
}

#[derive(Debug, Args)]
pub struct DeploysArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
}

pub fn deploys(args: DeploysArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let list = client
            .send(
                Method::GET,
                &format!("/v1/projects/{id}/deploys?limit=50"),
                None,
            )
            .await?;
        if json {
            return print_json(&list);
        }
        let rows: Vec<Vec<String>> = list["deploys"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|d| {
                let sha = output::cell(d, "commitSha");
                vec![
                    output::cell(d, "id"),
                    output::cell(d, "status"),
                    sha.chars().take(12).collect(),
                    output::cell(d, "trigger"),
                    output::cell(d, "createdAt"),
                    output::cell(d, "error"),
                ]
            })
            .collect();
        output::print_table(
            &["ID", "STATUS", "COMMIT", "TRIGGER", "CREATED", "ERROR"],
            &rows,
        );
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name (plans its connected repository).
    #[arg(required_unless_present = "repo")]
    project: Option<String>,
    /// Plan any repository instead: https URL, owner/name, local path or file:// URL.
    #[arg(long)]
    repo: Option<String>,
    #[arg(long = "ref")]
    git_ref: Option<String>,
}

pub fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let mut body = json!({});
        if let Some(project) = &args.project {
            body["projectId"] = json!(client.resolve_project(project).await?);
        }
        if let Some(repo) = &args.repo {
            body["repo"] = json!(repo);
        }
        if let Some(git_ref) = &args.git_ref {
            body["ref"] = json!(git_ref);
        }
        let plan = client
            .send(Method::POST, "/v1/deploy/plan", Some(body))
            .await?;
        if json {
            return print_json(&plan);
        }
        for field in [
            "runtime",
            "builder",
            "port",
            "startCommand",
            "instances",
            "hostnames",
            "envKeys",
            "warnings",
        ] {
            println!("{field:<13} {}", output::cell(&plan, field));
        }
        println!(
            "{:<13} {}",
            "healthCheck",
            health::describe(&plan["healthCheck"])
        );
        if let Some(dockerfile) = plan["dockerfile"].as_str() {
            println!("\n{dockerfile}");
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(Debug, Subcommand)]
enum EnvCommand {
    /// List variables (secret values masked); pending ones apply on the next deploy.
    List { project: String },
    /// Set KEY=VALUE pairs.
    Set {
        project: String,
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Mark the values secret (masked when listed).
        #[arg(long)]
        secret: bool,
    },
    /// Remove keys.
    Unset {
        project: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub fn env(args: EnvArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let (project, body) = match &args.command {
            EnvCommand::List { project } => (project, None),
            EnvCommand::Set {
                project,
                pairs,
                secret,
            } => {
                let mut vars = serde_json::Map::new();
                for pair in pairs {
                    let (key, value) = pair
                        .split_once('=')
                        .ok_or_else(|| anyhow!("`{pair}` is not KEY=VALUE"))?;
                    let value = if *secret {
                        json!({ "value": value, "secret": true })
                    } else {
                        json!(value)
                    };
                    vars.insert(key.to_owned(), value);
                }
                (project, Some(json!({ "vars": vars })))
            }
            EnvCommand::Unset { project, keys } => {
                let vars: serde_json::Map<String, Value> =
                    keys.iter().map(|k| (k.clone(), Value::Null)).collect();
                (project, Some(json!({ "vars": vars })))
            }
        };
        let id = client.resolve_project(project).await?;
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let listing = client
            .send(method, &format!("/v1/projects/{id}/env"), body)
            .await?;
        if json {
            return print_json(&listing);
        }
        let pending: Vec<&str> = listing["pending"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let rows: Vec<Vec<String>> = listing["vars"]
            .as_object()
            .map(|vars| {
                vars.iter()
                    .map(|(key, value)| {
                        vec![
                            key.clone(),
                            value.as_str().unwrap_or_default().to_owned(),
                            if pending.contains(&key.as_str()) {
                                "next deploy".to_owned()
                            } else {
                                "-".to_owned()
                            },
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        output::print_table(&["KEY", "VALUE", "PENDING"], &rows);
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
    /// Number of web instances (0 stops the whole project).
    #[arg(long)]
    instances: Option<u32>,
    /// Size tier (nano, small, medium, large by default).
    #[arg(long)]
    size: Option<String>,
    /// Instances per Procfile process type, as TYPE=COUNT (`worker=2 web=3`).
    #[arg(value_name = "TYPE=COUNT", value_parser = parse_process_count)]
    processes: Vec<(String, u32)>,
}

fn parse_process_count(value: &str) -> Result<(String, u32), String> {
    let (process, count) = value
        .split_once('=')
        .ok_or_else(|| format!("`{value}` is not TYPE=COUNT (for example worker=2)"))?;
    let count = count
        .parse()
        .map_err(|_| format!("`{count}` in `{value}` is not a whole number"))?;
    Ok((process.to_owned(), count))
}

pub fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let mut body = json!({});
        if let Some(instances) = args.instances {
            body["instances"] = json!(instances);
        }
        if let Some(size) = &args.size {
            body["size"] = json!(size);
        }
        if !args.processes.is_empty() {
            let processes: serde_json::Map<String, Value> = args
                .processes
                .iter()
                .map(|(process, count)| (process.clone(), json!(count)))
                .collect();
            body["processes"] = Value::Object(processes);
        }
        let project = client
            .send(
                Method::POST,
                &format!("/v1/projects/{id}/scale"),
                Some(body),
            )
            .await?;
        if json {
            return print_json(&project);
        }
        let counts: Vec<String> = project["processes"]
            .as_object()
            .map(|counts| {
                counts
                    .iter()
                    .map(|(process, count)| format!("{process}={count}"))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{}: {} of size {} ({})",
            output::cell(&project, "name"),
            counts.join(" "),
            output::cell(&project, "size"),
            output::cell(&project, "status")
        );
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct InstancesArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
    /// A preview's id (prv_...): its instances instead of production's.
    #[arg(long)]
    preview: Option<String>,
}

pub fn instances(args: InstancesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let query = match &args.preview {
            Some(preview) => format!("?preview={}", urlencode(preview)),
            None => String::new(),
        };
        let list = client
            .send(
                Method::GET,
                &format!("/v1/projects/{id}/instances{query}"),
                None,
            )
            .await?;
        if json {
            return print_json(&list);
        }
        let rows: Vec<Vec<String>> = list["instances"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|i| {
                [
                    "id",
                    "process",
                    "state",
                    "deployId",
                    "size",
                    "address",
                    "restartCount",
                    "startedAt",
                ]
                .iter()
                .map(|f| output::cell(i, f))
                .collect()
            })
            .collect();
        output::print_table(
            &[
                "ID", "PROCESS", "STATE", "DEPLOY", "SIZE", "ADDRESS", "RESTARTS", "STARTED",
            ],
            &rows,
        );
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
    /// The deploy to re-release (default: the one before the current release).
    #[arg(long)]
    deploy: Option<String>,
    /// Stream the release log until it ends; the exit code is the outcome.
    #[arg(long, short)]
    follow: bool,
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let body = match &args.deploy {
            Some(deploy) => json!({ "deployId": deploy }),
            None => json!({}),
        };
        let created = client
            .send(
                Method::POST,
                &format!("/v1/projects/{id}/rollback"),
                Some(body),
            )
            .await?;
        let deploy_id = output::cell(&created, "deployId");
        if !args.follow {
            if json {
                return print_json(&created);
            }
            println!("{deploy_id} {}", output::cell(&created, "status"));
            return Ok(());
        }
        let status = client
            .follow_get(&format!("/v1/deploys/{deploy_id}/events"), json)
            .await?;
        if status == "running" {
            Ok(())
        } else {
            bail!("the rollback ended {status}")
        }
    })
}

#[derive(Debug, Args)]
pub struct DomainsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: DomainsCommand,
}

#[derive(Debug, Subcommand)]
enum DomainsCommand {
    /// Every hostname of the project with its certificate state.
    List { project: String },
    /// Attach an alias hostname.
    Add { project: String, hostname: String },
    /// Detach an alias hostname.
    Remove { project: String, hostname: String },
}

pub fn domains(args: DomainsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            DomainsCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(Method::GET, &format!("/v1/projects/{id}/domains"), None)
                    .await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list["domains"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|d| {
                        vec![
                            output::cell(d, "hostname"),
                            output::cell(d, "kind"),
                            output::cell(&d["certificate"], "status"),
                            output::cell(&d["certificate"], "expiresAt"),
                            output::cell(&d["certificate"], "error"),
                        ]
                    })
                    .collect();
                output::print_table(
                    &["HOSTNAME", "KIND", "CERTIFICATE", "EXPIRES", "ERROR"],
                    &rows,
                );
                Ok(())
            }
            DomainsCommand::Add { project, hostname } => {
                let id = client.resolve_project(&project).await?;
                let alias = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/aliases"),
                        Some(json!({ "hostname": hostname })),
                    )
                    .await?;
                if json {
                    print_json(&alias)
                } else {
                    println!("added {}", output::cell(&alias, "hostname"));
                    Ok(())
                }
            }
            DomainsCommand::Remove { project, hostname } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(
                        Method::DELETE,
                        &format!("/v1/projects/{id}/aliases/{hostname}"),
                        None,
                    )
                    .await?;
                println!("removed {hostname}");
                Ok(())
            }
        }
    })
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
    /// How far back the sparklines reach (30m, 1h, 6h, 1d, ...).
    #[arg(long, default_value = "1h")]
    since: String,
    /// Width of each sparkline step; default: one minute.
    #[arg(long, default_value = "1m")]
    step: String,
    /// A preview's id (prv_...): its figures instead of production's.
    #[arg(long)]
    preview: Option<String>,
}

/// A compact table of the project's figures: the current value and a sparkline per row.
pub fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let mut query = format!(
            "since={}&step={}",
            urlencode(&args.since),
            urlencode(&args.step)
        );
        if let Some(preview) = &args.preview {
            query.push_str(&format!("&preview={}", urlencode(preview)));
        }
        let report = client
            .send(
                Method::GET,
                &format!("/v1/projects/{id}/metrics?{query}"),
                None,
            )
            .await?;
        if json {
            return print_json(&report);
        }
        print!("{}", metrics_table(&report));
        Ok(())
    })
}

/// Query values here are durations and RFC 3339 times; only `+` and `:` need escaping.
fn urlencode(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// The table `cantila metrics` prints, from the API's JSON.
fn metrics_table(report: &Value) -> String {
    let series: &[Value] = report["series"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let summary = &report["summary"];
    let column =
        |field: &str| -> Vec<Option<f64>> { series.iter().map(|p| p[field].as_f64()).collect() };
    let sum = |field: &str| -> f64 { series.iter().filter_map(|p| p[field].as_f64()).sum() };
    let number = |value: Option<f64>, unit: &str| match value {
        Some(v) => format!("{v:.1}{unit}"),
        None => "-".to_owned(),
    };
    let bytes_of = |value: Option<f64>| value.map(output::bytes).unwrap_or_else(|| "-".to_owned());
    let rows: Vec<(String, String, Vec<Option<f64>>)> = vec![
        (
            "cpu".into(),
            format!(
                "{} of a core, {} of limit",
                number(summary["cpuPercent"].as_f64(), "%"),
                number(summary["cpuLimitPercent"].as_f64(), "%")
            ),
            column("cpuPercent"),
        ),
        (
            "memory".into(),
            format!(
                "{} of {}",
                bytes_of(summary["memoryBytes"].as_f64()),
                bytes_of(summary["memoryLimitBytes"].as_f64())
            ),
            column("memoryBytes"),
        ),
        (
            "requests/s".into(),
            number(summary["requestsPerSecond"].as_f64(), ""),
            column("requestsPerSecond"),
        ),
        (
            "p95 latency".into(),
            number(summary["p95Ms"].as_f64(), " ms"),
            column("p95Ms"),
        ),
        (
            "4xx".into(),
            format!("{} in window", summary["status4xx"].as_u64().unwrap_or(0)),
            column("status4xx"),
        ),
        (
            "5xx".into(),
            format!("{} in window", summary["status5xx"].as_u64().unwrap_or(0)),
            column("status5xx"),
        ),
        (
            "network in".into(),
            format!("{} in window", output::bytes(sum("networkRxBytes"))),
            column("networkRxBytes"),
        ),
        (
            "network out".into(),
            format!("{} in window", output::bytes(sum("networkTxBytes"))),
            column("networkTxBytes"),
        ),
        (
            "disk r/w".into(),
            format!(
                "{} / {}",
                output::bytes(sum("blockReadBytes")),
                output::bytes(sum("blockWriteBytes"))
            ),
            column("blockWriteBytes"),
        ),
        (
            "restarts".into(),
            format!("{} in window", summary["restarts"].as_u64().unwrap_or(0)),
            column("restarts"),
        ),
    ];
    let label_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let mut out = format!(
        "{} over the last {} in {} steps ({} requests: {} 2xx, {} 3xx, {} 4xx, {} 5xx)\n",
        report["projectId"].as_str().unwrap_or("-"),
        report["since"].as_str().unwrap_or("-"),
        report["step"].as_str().unwrap_or("-"),
        summary["requests"].as_u64().unwrap_or(0),
        summary["status2xx"].as_u64().unwrap_or(0),
        summary["status3xx"].as_u64().unwrap_or(0),
        summary["status4xx"].as_u64().unwrap_or(0),
        summary["status5xx"].as_u64().unwrap_or(0),
    );
    for (label, now, values) in rows {
        out.push_str(&format!(
            "{label:<label_width$}  {now:<value_width$}  {}\n",
            output::sparkline(&values)
        ));
    }
    let instances: &[Value] = summary["instances"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !instances.is_empty() {
        out.push('\n');
        for instance in instances {
            out.push_str(&format!(
                "instance {}  cpu {}  memory {} of {}  restarts {}\n",
                output::cell(instance, "id"),
                number(instance["cpuPercent"].as_f64(), "%"),
                bytes_of(instance["memoryBytes"].as_f64()),
                bytes_of(instance["memoryLimitBytes"].as_f64()),
                output::cell(instance, "restartCount"),
            ));
        }
    }
    out
}

/// The error an API refusal stands for: the message of its JSON error body (`{"error":
/// {"message": ...}}`), or the body itself when it has none, with the HTTP status.
pub(super) fn refusal(status: u16, body: &str) -> anyhow::Error {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    anyhow::anyhow!("{message} (HTTP {status})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_table_has_a_row_and_a_sparkline_per_figure() {
        let report = json!({
            "projectId": "prj_1", "since": "1h", "step": "1m",
            "summary": { "cpuPercent": 12.5, "cpuLimitPercent": 25.0, "memoryBytes": 1048576,
                "memoryLimitBytes": 536870912, "requestsPerSecond": 2.0, "requests": 120,
                "status2xx": 118, "status3xx": 0, "status4xx": 2, "status5xx": 0, "p95Ms": 3.2,
                "restarts": 0, "instances": [{ "id": "abc", "cpuPercent": 12.5,
                "memoryBytes": 1048576, "memoryLimitBytes": 536870912, "restartCount": 0 }] },
            "series": [
                { "cpuPercent": null, "memoryBytes": null, "requestsPerSecond": 0.0 },
                { "cpuPercent": 5.0, "memoryBytes": 1000, "requestsPerSecond": 1.0 },
                { "cpuPercent": 10.0, "memoryBytes": 2000, "requestsPerSecond": 2.0 }
            ]
        });
        let table = metrics_table(&report);
        assert!(
            table.starts_with("prj_1 over the last 1h in 1m steps (120 requests: 118 2xx"),
            "{table}"
        );
        let cpu = table.lines().find(|l| l.starts_with("cpu ")).unwrap();
        assert!(cpu.contains("12.5% of a core, 25.0% of limit"), "{cpu}");
        assert!(cpu.ends_with(" ▅█"), "{cpu}");
        assert!(
            table.contains("memory       1.0 MiB of 512.0 MiB"),
            "{table}"
        );
        assert!(
            table.contains("instance abc  cpu 12.5%  memory 1.0 MiB of 512.0 MiB  restarts 0"),
            "{table}"
        );
    }
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Take the project's releases from an image; prints the registry webhook secret once.
    Connect {
        /// Project id or name.
        project: String,
        /// [registry[:port]/]name[:tag][@sha256:<digest>]
        image: String,
        /// Switch a git-connected project to the image (its git connection is removed).
        #[arg(long)]
        replace: bool,
    },
    /// Show the connected image and the last registry delivery.
    Show { project: String },
    /// Disconnect the image (the running release keeps serving).
    Disconnect { project: String },
}

pub fn image(args: ImageArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            ImageCommand::Connect {
                project,
                image,
                replace,
            } => {
                let id = client.resolve_project(&project).await?;
                let connected = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/image"),
                        Some(json!({ "image": image, "replace": replace })),
                    )
                    .await?;
                if json {
                    return print_json(&connected);
                }
                println!("connected {}", output::cell(&connected, "image"));
                println!(
                    "registry webhook URL path: {}",
                    output::cell(&connected, "webhookPath")
                );
                println!(
                    "webhook secret (shown once; send it as `Authorization: Bearer <secret>`, or `?token=<secret>` for Docker Hub): {}",
                    output::cell(&connected, "webhookSecret")
                );
                Ok(())
            }
            ImageCommand::Show { project } => {
                let id = client.resolve_project(&project).await?;
                let view = client
                    .send(Method::GET, &format!("/v1/projects/{id}/image"), None)
                    .await?;
                print_json(&view)
            }
            ImageCommand::Disconnect { project } => {
                let id = client.resolve_project(&project).await?;
                let view = client
                    .send(Method::DELETE, &format!("/v1/projects/{id}/image"), None)
                    .await?;
                if json {
                    return print_json(&view);
                }
                println!("disconnected {}", output::cell(&view, "image"));
                Ok(())
            }
        }
    })
}

#[derive(Debug, Args)]
pub struct RegistriesArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: RegistriesCommand,
}

#[derive(Debug, Subcommand)]
enum RegistriesCommand {
    /// Store credentials for a registry (replacing earlier ones for that server).
    Add {
        /// The registry's host[:port], e.g. ghcr.io (docker.io for Docker Hub).
        server: String,
        #[arg(long)]
        username: String,
        /// The password or access token (prefer --password-stdin or the environment).
        #[arg(long, env = "CANTILA_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password or token from stdin.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
    },
    /// List the account's registry credentials (never their passwords).
    List,
    /// Remove registry credentials by id.
    Remove { id: String },
}

pub fn registries(args: RegistriesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            RegistriesCommand::Add {
                server,
                username,
                password,
                password_stdin,
            } => {
                let password = match (password, password_stdin) {
                    (Some(password), _) => password,
                    (None, true) => {
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                        text.trim_end_matches(['\n', '\r']).to_owned()
                    }
                    (None, false) => {
                        bail!(
                            "give the password with --password-stdin or CANTILA_REGISTRY_PASSWORD"
                        )
                    }
                };
                let added = client
                    .send(
                        Method::POST,
                        "/v1/registries",
                        Some(
                            json!({ "server": server, "username": username, "password": password }),
                        ),
                    )
                    .await?;
                if json {
                    return print_json(&added);
                }
                println!(
                    "{} {} as {}",
                    output::cell(&added, "id"),
                    output::cell(&added, "server"),
                    output::cell(&added, "username")
                );
                Ok(())
            }
            RegistriesCommand::List => {
                let listed = client.send(Method::GET, "/v1/registries", None).await?;
                if json {
                    return print_json(&listed);
                }
                for registry in listed["registries"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  {}  {}",
                        output::cell(registry, "id"),
                        output::cell(registry, "server"),
                        output::cell(registry, "username"),
                        output::cell(registry, "createdAt")
                    );
                }
                Ok(())
            }
            RegistriesCommand::Remove { id } => {
                let removed = client
                    .send(Method::DELETE, &format!("/v1/registries/{id}"), None)
                    .await?;
                if json {
                    return print_json(&removed);
                }
                println!("removed {}", output::cell(&removed, "server"));
                Ok(())
            }
        }
    })
}
