//! `cantila health show|set|reset`: a project's health check settings through the API
//! (`healthCheck` of `PATCH /v1/projects/:id`). The server validates every value; this
//! only turns flags into the JSON object.

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{block_on, output, print_json, Client, ClientArgs};

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: HealthCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CheckType {
    /// `GET path` must answer with a status in the range.
    Http,
    /// The port must accept a TCP connection.
    Tcp,
    /// No probe: the process must stay up for the start period.
    None,
}

#[derive(Debug, Subcommand)]
enum HealthCommand {
    /// Show the project's health check settings (or that the defaults apply).
    Show {
        /// Project id or name.
        project: String,
    },
    /// Replace the project's health check settings; flags left out take their defaults.
    Set {
        /// Project id or name.
        project: String,
        /// The check's type.
        #[arg(long = "type", value_enum, default_value = "http")]
        kind: CheckType,
        /// `http`: the path probed (default /).
        #[arg(long)]
        path: Option<String>,
        /// `http`: the statuses that pass, MIN-MAX (default 200-499).
        #[arg(long, value_name = "MIN-MAX", value_parser = parse_status_range)]
        status: Option<(u16, u16)>,
        /// `http`, `tcp`: the port probed (default: the app's port).
        #[arg(long)]
        port: Option<u16>,
        /// Seconds of grace after the start before failures count; for `none`, how long
        /// the process must stay up (default 0; 3 for `none`).
        #[arg(long, value_name = "SECS")]
        start_period: Option<u32>,
        /// `http`, `tcp`: each probe's timeout in seconds (default 2).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u32>,
        /// `http`, `tcp`: seconds after the start period before the deploy fails (default:
        /// the server's `[deploy] health_timeout_secs`).
        #[arg(long, value_name = "SECS")]
        overall_timeout: Option<u32>,
        /// `http`, `tcp`: milliseconds between probes (default 500).
        #[arg(long, value_name = "MS")]
        interval_ms: Option<u32>,
    },
    /// Return the project to the default health check.
    Reset {
        /// Project id or name.
        project: String,
    },
}

/// `200-399` as (200, 399); the server checks the range itself.
fn parse_status_range(value: &str) -> Result<(u16, u16), String> {
    let (min, max) = value
        .split_once('-')
        .ok_or_else(|| format!("`{value}` is not MIN-MAX (for example 200-399)"))?;
    let number = |part: &str| {
        part.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{part}` in `{value}` is not a status code"))
    };
    Ok((number(min)?, number(max)?))
}

pub fn health(args: HealthArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    block_on(async move {
        let (project, settings) = match args.command {
            HealthCommand::Show { project } => {
                let id = client.resolve_project(&project).await?;
                let view = client
                    .send(Method::GET, &format!("/v1/projects/{id}"), None)
                    .await?;
                return show(&view, json);
            }
            HealthCommand::Reset { project } => (project, Value::Null),
            HealthCommand::Set {
                project,
                kind,
                path,
                status,
                port,
                start_period,
                timeout,
                overall_timeout,
                interval_ms,
            } => {
                let mut settings = Map::new();
                let kind = match kind {
                    CheckType::Http => "http",
                    CheckType::Tcp => "tcp",
                    CheckType::None => "none",
                };
                settings.insert("type".to_owned(), json!(kind));
                let fields = [
                    ("path", path.map(Value::from)),
                    ("statusMin", status.map(|(min, _)| Value::from(min))),
                    ("statusMax", status.map(|(_, max)| Value::from(max))),
                    ("port", port.map(Value::from)),
                    ("startPeriodSecs", start_period.map(Value::from)),
                    ("timeoutSecs", timeout.map(Value::from)),
                    ("overallTimeoutSecs", overall_timeout.map(Value::from)),
                    ("intervalMs", interval_ms.map(Value::from)),
                ];
                for (name, value) in fields {
                    if let Some(value) = value {
                        settings.insert(name.to_owned(), value);
                    }
                }
                (project, Value::Object(settings))
            }
        };
        let id = client.resolve_project(&project).await?;
        let view = client
            .send(
                Method::PATCH,
                &format!("/v1/projects/{id}"),
                Some(json!({ "healthCheck": settings })),
            )
            .await?;
        show(&view, json)
    })
}

/// A plan's resolved health check in one line: `http GET /healthz on port 8080, passing
/// 200-399, start period 10 s, up to 60 s (api)`.
pub(super) fn describe(check: &Value) -> String {
    let number = |field: &str| output::cell(check, field);
    let mut text = match check["kind"].as_str() {
        Some("http") => format!(
            "http GET {} on port {}, passing {}-{}",
            number("path"),
            number("port"),
            number("statusMin"),
            number("statusMax")
        ),
        Some("tcp") => format!("tcp connect to port {}", number("port")),
        Some("none") => "none".to_owned(),
        _ => return "-".to_owned(),
    };
    text.push_str(&format!(", start period {} s", number("startPeriodSecs")));
    if check["overallTimeoutSecs"].is_number() {
        text.push_str(&format!(", up to {} s", number("overallTimeoutSecs")));
    }
    text.push_str(&format!(" ({})", number("source")));
    text
}

/// Prints the project's settings: one `key: value` line each, or the defaults.
fn show(view: &Value, json: bool) -> anyhow::Result<()> {
    let settings = &view["healthCheck"];
    if json {
        return print_json(settings);
    }
    let name = output::cell(view, "name");
    match settings {
        Value::Null => println!(
            "{name}: the default health check (HTTP GET / on the app's port, passing 200-499; none for worker-only Procfiles)"
        ),
        Value::Object(fields) => {
            println!("{name}:");
            for key in fields.keys() {
                println!("  {key}: {}", output::cell(settings, key));
            }
        }
        other => return Err(anyhow!("unexpected healthCheck in the answer: {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{describe, parse_status_range};
    use serde_json::json;

    #[test]
    fn status_ranges_parse() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert!(parse_status_range("200").is_err());
        assert!(parse_status_range("2xx-399").is_err());
    }

    #[test]
    fn a_plans_check_reads_in_one_line() {
        assert_eq!(
            describe(
                &json!({"kind": "http", "path": "/healthz", "port": 8080, "statusMin": 200,
                "statusMax": 399, "startPeriodSecs": 10, "overallTimeoutSecs": 60, "source": "api"})
            ),
            "http GET /healthz on port 8080, passing 200-399, start period 10 s, up to 60 s (api)"
        );
        assert_eq!(
            describe(&json!({"kind": "none", "startPeriodSecs": 3, "source": "detection"})),
            "none, start period 3 s (detection)"
        );
        assert_eq!(describe(&serde_json::Value::Null), "-");
    }
}
