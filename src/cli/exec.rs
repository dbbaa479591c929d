//! `cantila exec [-i] [-t] APP [--instance ID] [--process P] -- CMD...`: runs a command
//! inside one of a project's running instances through the API, joined to this terminal,
//! and exits with the command's exit code.

use clap::Args;
use reqwest::Method;
use serde_json::json;

use super::{
    client::{Client, ClientArgs},
    terminal::{self, Options},
};

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Send stdin to the command (keep it open).
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal; with -i on a terminal, this one is in raw mode meanwhile.
    #[arg(short, long)]
    tty: bool,
    /// The project, by id (prj_...) or name.
    app: String,
    /// The instance to run in, by id or name (`cantila instances APP` lists them)
    /// [default: a running instance of --process].
    #[arg(long)]
    instance: Option<String>,
    /// The process type whose instance to pick [default: web].
    #[arg(long)]
    process: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let code = terminal::run_blocking(async move {
        let client = Client::new(&args.client)?;
        let project = client.resolve_project(&args.app).await?;
        let mut body = json!({"command": args.command, "tty": args.tty});
        if let Some(process) = &args.process {
            body["process"] = json!(process);
        }
        if let (true, Some((cols, rows))) = (args.tty, terminal::local_size()) {
            body["cols"] = json!(cols);
            body["rows"] = json!(rows);
        }
        let instance = args.instance.as_deref().unwrap_or("any");
        let instance =
            percent_encoding::utf8_percent_encode(instance, percent_encoding::NON_ALPHANUMERIC);
        let created = client
            .send(
                Method::POST,
                &format!("/v1/projects/{project}/instances/{instance}/exec"),
                Some(body),
            )
            .await?;
        let path = created["attachUrl"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the API answered without an attachUrl"))?;
        terminal::attach(
            &client,
            path,
            Options {
                interactive: args.interactive,
                tty: args.tty,
            },
        )
        .await
    })?;
    terminal::exit_with(code)
}
