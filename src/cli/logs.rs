//! `cantila logs PROJECT`: a project's runtime logs through the API, or followed live (with
//! reconnects that resume after the last line shown), one colour per instance on a terminal.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::client::{block_on, print_json, Client, ClientArgs};

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Project id or name.
    project: String,
    /// Lines at or after this time: RFC 3339 or a window before now (30s, 10m, 2h, 1d).
    #[arg(long)]
    since: Option<String>,
    /// Lines before this time, in the same forms (not with --follow).
    #[arg(long)]
    until: Option<String>,
    /// Keep printing new lines as they come, until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
    /// Only this instance's lines (an id from `cantila instances`), or `edge`.
    #[arg(long)]
    instance: Option<String>,
    /// Only stdout, stderr or edge (the edge's access lines).
    #[arg(long)]
    stream: Option<String>,
    /// Only lines containing this text (case-sensitive).
    #[arg(long)]
    grep: Option<String>,
    /// The most lines shown (the newest); the API's default when not given.
    #[arg(long, short = 'n')]
    limit: Option<u32>,
    /// A preview's id (prv_...): its lines instead of production's.
    #[arg(long)]
    preview: Option<String>,
    /// Only this service's lines (`cantila services list`).
    #[arg(long)]
    service: Option<String>,
}

impl LogsArgs {
    /// `cantila services logs APP NAME`: the project's logs of one service.
    pub(super) fn of_service(
        client: ClientArgs,
        project: String,
        service: String,
        follow: bool,
        since: Option<String>,
    ) -> Self {
        Self {
            client,
            project,
            since,
            until: None,
            follow,
            instance: None,
            stream: None,
            grep: None,
            limit: None,
            preview: None,
            service: Some(service),
        }
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut add = |key: &'static str, value: &Option<String>| {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        };
        add("since", &self.since);
        add("until", &self.until);
        add("instance", &self.instance);
        add("stream", &self.stream);
        add("q", &self.grep);
        add("preview", &self.preview);
        add("service", &self.service);
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        query
    }
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    let colour = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    block_on(async move {
        let id = client.resolve_project(&args.project).await?;
        let path = format!("/v1/projects/{id}/logs");
        if !args.follow {
            let query = args.query();
            let page = send_query(&client, &path, &query).await?;
            if json {
                return print_json(&page);
            }
            let mut out = std::io::stdout().lock();
            for line in page["lines"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if writeln!(out, "{}", format_line(line, colour)).is_err() {
                    return Ok(()); // the reader went away (`| head`): done.
                }
            }
            if page["truncated"] == true {
                eprintln!("(older lines left out; use --limit or --since to see them)");
            }
            return Ok(());
        }
        tokio::select! {
            result = follow(&client, &path, &args, json, colour) => result,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

async fn send_query(
    client: &Client,
    path: &str,
    query: &[(&'static str, String)],
) -> anyhow::Result<Value> {
    let encoded = reqwest::Url::parse_with_params("http://x/", query)
        .map(|url| url.query().unwrap_or_default().to_owned())
        .unwrap_or_default();
    client
        .send(Method::GET, &format!("{path}?{encoded}"), None)
        .await
}

/// Prints the live stream until Ctrl-C; after a dropped connection (a daemon restart) it
/// reconnects and resumes after the last line printed, so nothing shows twice.
async fn follow(
    client: &Client,
    path: &str,
    args: &LogsArgs,
    json: bool,
    colour: bool,
) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let mut query = args.query();
        query.push(("follow", "true".to_owned()));
        let mut request = client
            .http
            .request(Method::GET, format!("{}{path}", client.base))
            .query(&query)
            .bearer_auth(&client.token)
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) if last_id.is_some() && failures < 60 => {
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
        match print_events(response, &mut last_id, json, colour).await {
            Printed::ReaderGone => return Ok(()),
            Printed::StreamEnded => {
                eprintln!("(the stream ended; reconnecting)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

enum Printed {
    /// Stdout was closed (`| head`).
    ReaderGone,
    /// The connection closed or failed.
    StreamEnded,
}

async fn print_events(
    mut response: reqwest::Response,
    last_id: &mut Option<String>,
    json: bool,
    colour: bool,
) -> Printed {
    let mut buffer = String::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => return Printed::StreamEnded,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("id:") {
                    id = Some(rest.trim().to_owned());
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                }
            }
            if data.is_empty() {
                continue;
            }
            let Ok(line) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            let text = if json {
                line.to_string()
            } else {
                format_line(&line, colour)
            };
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return Printed::ReaderGone;
            }
            if id.is_some() {
                *last_id = id;
            }
        }
    }
}

/// ANSI colours for instance prefixes: distinct, readable on dark and light terminals.
const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

/// One line for people: `time process[instance] text`, the prefix in the instance's colour,
/// stderr marked.
pub fn format_line(line: &Value, colour: bool) -> String {
    let field = |name: &str| line[name].as_str().unwrap_or_default();
    let at = field("at");
    // Milliseconds are plenty on a terminal.
    let at = if at.len() > 23 {
        format!("{}Z", &at[..23])
    } else {
        at.to_owned()
    };
    let instance = field("instance");
    let prefix = if field("process") == "edge" {
        "edge".to_owned()
    } else {
        format!("{}[{instance}]", field("process"))
    };
    let marker = if field("stream") == "stderr" {
        " (stderr)"
    } else {
        ""
    };
    if colour {
        let hash = instance.bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        let code = if instance == "edge" {
            "90"
        } else {
            PALETTE[hash as usize % PALETTE.len()]
        };
        format!(
            "\x1b[2m{at}\x1b[0m \x1b[{code}m{prefix}{marker}\x1b[0m {}",
            field("line")
        )
    } else {
        format!("{at} {prefix}{marker} {}", field("line"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_read_well_with_and_without_colour() {
        let line = json!({
            "id": 7, "at": "2026-01-02T15:04:05.123456789Z", "instance": "3f2a9c1b7d10",
            "process": "web", "stream": "stderr", "line": "boom"
        });
        assert_eq!(
            format_line(&line, false),
            "2026-01-02T15:04:05.123Z web[3f2a9c1b7d10] (stderr) boom"
        );
        let coloured = format_line(&line, true);
        assert!(
            coloured.contains("\x1b[") && coloured.ends_with(" boom"),
            "{coloured:?}"
        );
        let edge = json!({
            "id": 8, "at": "2026-01-02T15:04:05.123456789Z", "instance": "edge",
            "process": "edge", "stream": "edge", "line": "GET / 200"
        });
        assert_eq!(
            format_line(&edge, false),
            "2026-01-02T15:04:05.123Z edge GET / 200"
        );
        // The same instance always gets the same colour.
        assert_eq!(format_line(&line, true), coloured);
    }
}
