//! Client commands for a project's data: `cantila db`, `cantila volumes`, `cantila backups`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    client::{block_on, print_json, Client, ClientArgs},
    output,
};

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Wire a database to a project.
    Create {
        project: String,
        /// `postgres` (the operator's server) or `sqlite` (a file on a volume at /data).
        #[arg(long, default_value = "postgres")]
        engine: String,
    },
    /// Show the database's connection metadata (never the password).
    Show { project: String },
    /// Print the connection env (DATABASE_URL, PG*), password included.
    Credentials { project: String },
    /// Delete the database for good, after a final backup.
    Delete {
        project: String,
        /// The project's name, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

#[derive(Debug, Args)]
pub struct VolumesArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: VolumesCommand,
}

#[derive(Debug, Subcommand)]
enum VolumesCommand {
    /// List a project's volumes.
    List { project: String },
    /// Declare a volume mounted at an absolute path in every container of the project.
    Create {
        project: String,
        name: String,
        /// Where the volume appears inside the containers, e.g. /app/uploads.
        #[arg(long)]
        mount: String,
    },
    /// Delete a volume and its files for good.
    Delete {
        project: String,
        name: String,
        /// The project's name, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

#[derive(Debug, Args)]
pub struct BackupsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: BackupsCommand,
}

#[derive(Debug, Subcommand)]
enum BackupsCommand {
    /// List a project's backups, newest first.
    List { project: String },
    /// Back up the database, volumes and add-ons now (or one of them) and wait for the result.
    Create {
        project: String,
        /// Only the database.
        #[arg(long, conflicts_with_all = ["volume", "service"])]
        database: bool,
        /// Only this volume.
        #[arg(long, conflicts_with = "service")]
        volume: Option<String>,
        /// Only this add-on (a service such as `redis`), with its engine's own tools.
        #[arg(long)]
        service: Option<String>,
        /// Return at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Download a completed backup's file and check its SHA-256.
    Download {
        backup: String,
        /// The file to write [default: the server's file name].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Restore a backup over the project's current data (a safety backup is taken first).
    Restore {
        backup: String,
        /// The project's name, to confirm.
        #[arg(long)]
        confirm: String,
    },
    /// Restore the newest backup of every database, volume and add-on of the account's
    /// projects (or of the ones named): after moving the installation to a new server.
    RestoreLatest {
        /// A project (name or id) to restore; repeat for several; omitted: every project.
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Wait until every restore has finished, printing each as it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Show or set the project's backup schedule.
    Schedule {
        project: String,
        /// `daily at HH:MM` (UTC) or a cron expression; omitted: show the schedule.
        #[arg(long)]
        set: Option<String>,
        #[arg(long)]
        keep_daily: Option<u32>,
        #[arg(long)]
        keep_weekly: Option<u32>,
    },
}

fn print_fields(value: &Value, fields: &[&str]) {
    for field in fields {
        println!("{field:<12} {}", output::cell(value, field));
    }
}

fn print_backups(backups: &[Value]) {
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            vec![
                output::cell(b, "id"),
                output::cell(b, "kind"),
                output::cell(b, "subject"),
                output::cell(b, "trigger"),
                output::cell(b, "status"),
                output::cell(b, "sizeBytes"),
                output::cell(b, "startedAt"),
                // The copy in S3 (`[backups.s3]`): pending, uploaded or failed.
                output::cell(&b["remote"], "status"),
                match (&b["error"], &b["remote"]["error"]) {
                    (Value::String(error), _) => error.clone(),
                    (_, Value::String(upload)) => format!("upload: {upload}"),
                    _ => "-".to_owned(),
                },
            ]
        })
        .collect();
    output::print_table(
        &[
            "ID", "KIND", "OF", "TRIGGER", "STATUS", "BYTES", "STARTED", "REMOTE", "ERROR",
        ],
        &rows,
    );
}

pub fn db(args: DbArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let shown = match args.command {
            DbCommand::Create { project, engine } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/database"),
                        Some(json!({ "engine": engine })),
                    )
                    .await?
            }
            DbCommand::Show { project } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(Method::GET, &format!("/v1/projects/{id}/database"), None)
                    .await?
            }
            DbCommand::Credentials { project } => {
                let id = client.resolve_project(&project).await?;
                let credentials = client
                    .send(
                        Method::GET,
                        &format!("/v1/projects/{id}/database/credentials"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&credentials);
                }
                for (key, value) in credentials["env"].as_object().into_iter().flatten() {
                    println!("{key}={}", value.as_str().unwrap_or_default());
                }
                return Ok(());
            }
            DbCommand::Delete { project, confirm } => {
                let id = client.resolve_project(&project).await?;
                let deleted = client
                    .send(
                        Method::DELETE,
                        &format!("/v1/projects/{id}/database"),
                        Some(json!({ "confirm": confirm })),
                    )
                    .await?;
                if json {
                    return print_json(&deleted);
                }
                match deleted["finalBackup"]["id"].as_str() {
                    Some(backup) => println!("deleted; final backup {backup}"),
                    None => println!("deleted; the database was already gone, no final backup"),
                }
                return Ok(());
            }
        };
        if json {
            return print_json(&shown);
        }
        print_fields(
            &shown,
            &[
                "engine",
                "host",
                "port",
                "database",
                "user",
                "status",
                "sizeBytes",
                "volume",
                "createdAt",
            ],
        );
        Ok(())
    })
}

pub fn volumes(args: VolumesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            VolumesCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(Method::GET, &format!("/v1/projects/{id}/volumes"), None)
                    .await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list["volumes"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| {
                        vec![
                            output::cell(v, "name"),
                            output::cell(v, "mountPath"),
                            output::cell(v, "dockerVolume"),
                            output::cell(v, "createdAt"),
                        ]
                    })
                    .collect();
                output::print_table(&["NAME", "MOUNT", "DOCKER VOLUME", "CREATED"], &rows);
                Ok(())
            }
            VolumesCommand::Create {
                project,
                name,
                mount,
            } => {
                let id = client.resolve_project(&project).await?;
                let volume = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/volumes"),
                        Some(json!({ "name": name, "mountPath": mount })),
                    )
                    .await?;
                if json {
                    return print_json(&volume);
                }
                println!(
                    "created {} at {} (mounted from the next deploy on)",
                    output::cell(&volume, "name"),
                    output::cell(&volume, "mountPath")
                );
                Ok(())
            }
            VolumesCommand::Delete {
                project,
                name,
                confirm,
            } => {
                let id = client.resolve_project(&project).await?;
                client
                    .send(
                        Method::DELETE,
                        &format!("/v1/projects/{id}/volumes/{name}"),
                        Some(json!({ "confirm": confirm })),
                    )
                    .await?;
                println!("deleted {name}");
                Ok(())
            }
        }
    })
}

pub fn backups(args: BackupsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        match args.command {
            BackupsCommand::List { project } => {
                let id = client.resolve_project(&project).await?;
                let list = client
                    .send(Method::GET, &format!("/v1/projects/{id}/backups"), None)
                    .await?;
                if json {
                    return print_json(&list);
                }
                print_backups(
                    list["backups"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                );
                Ok(())
            }
            BackupsCommand::Create {
                project,
                database,
                volume,
                service,
                no_wait,
            } => {
                let id = client.resolve_project(&project).await?;
                let body = match (database, volume, service) {
                    (true, _, _) => json!({ "kind": "database" }),
                    (false, Some(volume), _) => json!({ "kind": "volume", "volume": volume }),
                    (false, None, Some(service)) => {
                        json!({ "kind": "service", "service": service })
                    }
                    (false, None, None) => json!({}),
                };
                let started = client
                    .send(
                        Method::POST,
                        &format!("/v1/projects/{id}/backups"),
                        Some(body),
                    )
                    .await?;
                let mut backups: Vec<Value> =
                    started["backups"].as_array().cloned().unwrap_or_default();
                if !no_wait {
                    for backup in &mut backups {
                        let backup_id = output::cell(backup, "id");
                        while backup["status"] == "running" {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            *backup = client
                                .send(Method::GET, &format!("/v1/backups/{backup_id}"), None)
                                .await?;
                        }
                    }
                }
                if json {
                    print_json(&Value::Array(backups.clone()))?;
                } else {
                    print_backups(&backups);
                }
                if backups.iter().any(|b| b["status"] == "failed") {
                    bail!("a backup failed");
                }
                Ok(())
            }
            BackupsCommand::Download { backup, output } => {
                let url = format!("{}/v1/backups/{backup}/download", client.base);
                let response = client
                    .http
                    .get(&url)
                    .bearer_auth(&client.token)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the Cantila API at {}", client.base))?;
                if !response.status().is_success() {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    bail!(
                        "{} (HTTP {status})",
                        body["error"]["message"]
                            .as_str()
                            .unwrap_or("download failed")
                    );
                }
                let expected = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim_matches('"').to_owned());
                let name = response
                    .headers()
                    .get("content-disposition")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split("filename=\"").nth(1))
                    .map(|v| v.trim_end_matches('"').to_owned())
                    .unwrap_or_else(|| format!("{backup}.backup"));
                let path = output.unwrap_or_else(|| PathBuf::from(name));
                let partial = path.with_extension("partial");
                let mut file = tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                let mut response = response;
                let mut size = 0u64;
                use tokio::io::AsyncWriteExt;
                while let Some(chunk) = response.chunk().await? {
                    sha2::Digest::update(&mut hasher, &chunk);
                    file.write_all(&chunk).await?;
                    size += chunk.len() as u64;
                }
                file.sync_all().await?;
                let actual = hex::encode(sha2::Digest::finalize(hasher));
                if expected.as_deref().is_some_and(|e| e != actual) {
                    let _ = tokio::fs::remove_file(&partial).await;
                    bail!("the download's SHA-256 {actual} does not match the backup's; nothing was kept");
                }
                tokio::fs::rename(&partial, &path).await?;
                println!("wrote {} ({size} bytes, sha256 {actual})", path.display());
                Ok(())
            }
            BackupsCommand::Restore { backup, confirm } => {
                let restored = client
                    .send(
                        Method::POST,
                        &format!("/v1/backups/{backup}/restore"),
                        Some(json!({ "confirm": confirm })),
                    )
                    .await?;
                if json {
                    return print_json(&restored);
                }
                println!(
                    "restored {backup}; the data before the restore is in backup {}",
                    output::cell(&restored["safetyBackup"], "id")
                );
                Ok(())
            }
            BackupsCommand::RestoreLatest { projects, wait } => {
                let body = if projects.is_empty() {
                    json!({})
                } else {
                    let mut ids = Vec::new();
                    for project in &projects {
                        ids.push(client.resolve_project(project).await?);
                    }
                    json!({ "projects": ids })
                };
                let mut run = client
                    .send(Method::POST, "/v1/backups/restore-latest", Some(body))
                    .await?;
                let run_id = output::cell(&run, "id");
                if !json {
                    println!("restore run {run_id}:");
                    print_latest_rows(&run);
                }
                if wait {
                    let mut shown: Vec<String> = Vec::new();
                    while run["done"] != true {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        run = client
                            .send(
                                Method::GET,
                                &format!("/v1/backups/restore-latest/{run_id}"),
                                None,
                            )
                            .await?;
                        if !json {
                            print_latest_progress(&run, &mut shown);
                        }
                    }
                }
                if json {
                    print_json(&run)?;
                }
                let rows = run["restores"].as_array().cloned().unwrap_or_default();
                if rows.iter().any(|r| r["status"] == "failed") {
                    bail!("a restore failed");
                }
                if wait && !json {
                    println!("done");
                }
                Ok(())
            }
            BackupsCommand::Schedule {
                project,
                set,
                keep_daily,
                keep_weekly,
            } => {
                let id = client.resolve_project(&project).await?;
                let path = format!("/v1/projects/{id}/backups/schedule");
                let schedule = match set {
                    Some(schedule) => {
                        client
                            .send(
                                Method::PUT,
                                &path,
                                Some(json!({
                                    "schedule": schedule,
                                    "keepDaily": keep_daily,
                                    "keepWeekly": keep_weekly,
                                })),
                            )
                            .await?
                    }
                    None => client.send(Method::GET, &path, None).await?,
                };
                if json {
                    return print_json(&schedule);
                }
                print_fields(
                    &schedule,
                    &[
                        "schedule",
                        "keepDaily",
                        "keepWeekly",
                        "source",
                        "lastRunAt",
                        "lastStatus",
                        "lastError",
                    ],
                );
                Ok(())
            }
        }
    })
}

/// Each row of a restore-latest run: project, target, backup and status.
fn print_latest_rows(run: &Value) {
    for row in run["restores"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!("  {}", latest_row(row));
    }
}

/// The rows of a run that reached their end since the last call, once each.
fn print_latest_progress(run: &Value, shown: &mut Vec<String>) {
    for row in run["restores"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let key = format!(
            "{}/{}",
            output::cell(row, "projectId"),
            output::cell(row, "target")
        );
        let status = row["status"].as_str().unwrap_or_default();
        if matches!(status, "restored" | "failed") && !shown.contains(&key) {
            println!("  {}", latest_row(row));
            shown.push(key);
        }
    }
}

fn latest_row(row: &Value) -> String {
    let mut line = format!(
        "{} {} {} {}",
        output::cell(row, "projectId"),
        row["target"].as_str().unwrap_or("(nothing)"),
        row["backupId"].as_str().unwrap_or("-"),
        output::cell(row, "status"),
    );
    if let Some(error) = row["error"].as_str() {
        line.push_str(&format!(": {error}"));
    }
    line
}
