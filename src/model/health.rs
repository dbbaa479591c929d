//! A project's health check settings: how a new instance proves it is ready before it
//! takes traffic (an HTTP request, a TCP connect, or only staying up), as a user writes them
//! in `PATCH /v1/projects/:id` (`healthCheck`) and, later, in `cantila.toml` (`[health]`).
//! Invariant: a `HealthCheckSettings` that exists holds only values inside the documented
//! bounds, and only the fields its check type uses; unset fields mean the default.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Error;

/// The check's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    /// `GET path` on the port must answer with a status in `statusMin..=statusMax`.
    #[default]
    Http,
    /// The port must accept a TCP connection (apps that do not speak HTTP).
    Tcp,
    /// No probe: the instance is healthy once it has run for `startPeriodSecs` without
    /// exiting (worker-only apps that serve nothing).
    None,
}

impl HealthCheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckType::Http => "http",
            HealthCheckType::Tcp => "tcp",
            HealthCheckType::None => "none",
        }
    }
}

/// The defaults, which are also today's behaviour without settings.
pub mod defaults {
    /// The HTTP path probed.
    pub const PATH: &str = "/";
    /// The statuses that pass: anything below 500 (a 404 still proves the server is up).
    pub const STATUS_MIN: u16 = 200;
    pub const STATUS_MAX: u16 = 499;
    /// HTTP and TCP checks start counting at once.
    pub const START_PERIOD_SECS: u32 = 0;
    /// A `none` check (and any non-web process) is healthy after staying up this long.
    pub const START_PERIOD_SECS_NONE: u32 = 3;
    /// Each probe's own timeout.
    pub const TIMEOUT_SECS: u32 = 2;
    /// The pause between probes.
    pub const INTERVAL_MS: u32 = 500;
}

/// The documented bounds of each number, enforced by `HealthCheckSettings::try_from` and
/// stated in the OpenAPI schema of `HealthCheckFields` (keep the two the same).
pub mod bounds {
    use std::ops::RangeInclusive;

    /// A lower bound of 5xx would count server errors as healthy.
    pub const STATUS_MIN: RangeInclusive<u16> = 100..=499;
    /// An upper bound below 200 would accept no success status.
    pub const STATUS_MAX: RangeInclusive<u16> = 200..=599;
    pub const PORT: RangeInclusive<u16> = 1..=65535;
    pub const START_PERIOD_SECS: RangeInclusive<u32> = 0..=3600;
    pub const TIMEOUT_SECS: RangeInclusive<u32> = 1..=60;
    pub const OVERALL_TIMEOUT_SECS: RangeInclusive<u32> = 1..=3600;
    pub const INTERVAL_MS: RangeInclusive<u32> = 100..=60_000;
    /// The longest path accepted, in bytes.
    pub const PATH_LEN: usize = 1024;
}

/// The health check settings as written: the `healthCheck` object of the API and the
/// `[health]` table of a file (camelCase keys; the snake_case spelling is accepted too, as
/// TOML files tend to use it). Unknown keys are refused. Turned into
/// `HealthCheckSettings`, which checks every value, before anything uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckFields {
    /// `http` (the default), `tcp` or `none`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HealthCheckType>)]
    pub kind: Option<HealthCheckType>,
    /// `http` only: the path probed (default `/`); starts with `/`, visible ASCII without
    /// `#`, at most 1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "/healthz", pattern = "^/[!-\"$-~]*$", max_length = 1024)]
    pub path: Option<String>,
    /// `http` only: the lowest status that passes (default 200).
    #[serde(default, alias = "status_min", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 499, example = 200)]
    pub status_min: Option<u16>,
    /// `http` only: the highest status that passes (default 499: any answer below 500);
    /// at least `statusMin`.
    #[serde(default, alias = "status_max", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 200, maximum = 599, example = 399)]
    pub status_max: Option<u16>,
    /// `http` and `tcp`: the port probed inside the instance (default: the app's port,
    /// the one `PORT` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535, example = 8080)]
    pub port: Option<u16>,
    /// Seconds of grace after the instance starts: probes that fail meanwhile do not count,
    /// and the overall timeout starts after it. For `none`, how long the instance must stay
    /// up (default 3; 0 for `http` and `tcp`).
    #[serde(
        default,
        alias = "start_period_secs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 3600, example = 10)]
    pub start_period_secs: Option<u32>,
    /// `http` and `tcp`: each probe's own timeout in seconds (default 2).
    #[serde(
        default,
        alias = "timeout_secs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 60, example = 2)]
    pub timeout_secs: Option<u32>,
    /// `http` and `tcp`: how long, after the start period, an instance may take to pass
    /// before the deploy fails (default: the server's `[deploy] health_timeout_secs`, 60).
    #[serde(
        default,
        alias = "overall_timeout_secs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 3600, example = 60)]
    pub overall_timeout_secs: Option<u32>,
    /// `http` and `tcp`: milliseconds between probes (default 500).
    #[serde(
        default,
        alias = "interval_ms",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 100, maximum = 60000, example = 500)]
    pub interval_ms: Option<u32>,
}

/// A health check path. Invariant: starts with `/`, at most `bounds::PATH_LEN` bytes of
/// visible ASCII other than `#` (no space, CR, LF or other control character), so it
/// forms a request line and a URL as it is, with nothing added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPath(String);

impl HealthPath {
    pub fn parse(field: &str, value: &str) -> Result<Self, Error> {
        let invalid = |why: String| {
            Error::Invalid(format!(
                "`{field}` `{}` is invalid: {why}; use a path such as `/healthz`",
                value.escape_debug()
            ))
        };
        if !value.starts_with('/') {
            return Err(invalid("it must start with `/`".to_owned()));
        }
        if value.len() > bounds::PATH_LEN {
            return Err(invalid(format!(
                "it is longer than {} bytes",
                bounds::PATH_LEN
            )));
        }
        if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic() || *c == '#') {
            return Err(invalid(format!(
                "`{}` is not allowed (visible ASCII only, no `#`)",
                bad.escape_debug()
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validated health check settings: every value inside its bounds, only the fields the
/// type uses, `statusMin <= statusMax`. `None` fields take the defaults when the plan is
/// made (`plan::HealthCheck::resolve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HealthCheckFields", into = "HealthCheckFields")]
pub struct HealthCheckSettings {
    pub kind: HealthCheckType,
    pub path: Option<HealthPath>,
    pub status_min: Option<u16>,
    pub status_max: Option<u16>,
    pub port: Option<u16>,
    pub start_period_secs: Option<u32>,
    pub timeout_secs: Option<u32>,
    pub overall_timeout_secs: Option<u32>,
    pub interval_ms: Option<u32>,
}

impl HealthCheckSettings {
    /// The statuses that pass, defaults filled in.
    pub fn status_range(&self) -> (u16, u16) {
        (
            self.status_min.unwrap_or(defaults::STATUS_MIN),
            self.status_max.unwrap_or(defaults::STATUS_MAX),
        )
    }
}

/// `value` when it is inside `range`; otherwise an error naming the field and the range.
fn within<T>(
    field: &str,
    value: Option<T>,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, Error>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    match value {
        Some(value) if !range.contains(&value) => Err(Error::Invalid(format!(
            "`{field}` {value} is out of range: use {}..={}",
            range.start(),
            range.end()
        ))),
        other => Ok(other),
    }
}

impl TryFrom<HealthCheckFields> for HealthCheckSettings {
    type Error = Error;

    fn try_from(fields: HealthCheckFields) -> Result<Self, Error> {
        let kind = fields.kind.unwrap_or_default();
        // A field the type does not use is refused rather than silently ignored: a `tcp`
        // check with a `path` is a mistake worth saying.
        let used: &[&str] = match kind {
            HealthCheckType::Http => &[],
            HealthCheckType::Tcp => &["path", "statusMin", "statusMax"],
            HealthCheckType::None => &[
                "path",
                "statusMin",
                "statusMax",
                "port",
                "timeoutSecs",
                "overallTimeoutSecs",
                "intervalMs",
            ],
        };
        let present = [
            ("path", fields.path.is_some()),
            ("statusMin", fields.status_min.is_some()),
            ("statusMax", fields.status_max.is_some()),
            ("port", fields.port.is_some()),
            ("timeoutSecs", fields.timeout_secs.is_some()),
            ("overallTimeoutSecs", fields.overall_timeout_secs.is_some()),
            ("intervalMs", fields.interval_ms.is_some()),
        ];
        if let Some((field, _)) = present
            .iter()
            .find(|(field, set)| *set && used.contains(field))
        {
            let what = match kind {
                HealthCheckType::None => {
                    "a `none` check probes nothing; it only waits `startPeriodSecs`"
                }
                HealthCheckType::Tcp | HealthCheckType::Http => {
                    "a `tcp` check only connects to the port"
                }
            };
            return Err(Error::Invalid(format!(
                "`{field}` does not apply to a `{}` check: {what}",
                kind.as_str()
            )));
        }
        let settings = HealthCheckSettings {
            kind,
            path: fields
                .path
                .as_deref()
                .map(|path| HealthPath::parse("path", path))
                .transpose()?,
            status_min: within("statusMin", fields.status_min, bounds::STATUS_MIN)?,
            status_max: within("statusMax", fields.status_max, bounds::STATUS_MAX)?,
            port: within("port", fields.port, bounds::PORT)?,
            start_period_secs: within(
                "startPeriodSecs",
                fields.start_period_secs,
                bounds::START_PERIOD_SECS,
            )?,
            timeout_secs: within("timeoutSecs", fields.timeout_secs, bounds::TIMEOUT_SECS)?,
            overall_timeout_secs: within(
                "overallTimeoutSecs",
                fields.overall_timeout_secs,
                bounds::OVERALL_TIMEOUT_SECS,
            )?,
            interval_ms: within("intervalMs", fields.interval_ms, bounds::INTERVAL_MS)?,
        };
        let (min, max) = settings.status_range();
        if min > max {
            return Err(Error::Invalid(format!(
                "`statusMin` {min} is above `statusMax` {max}: the range would accept no status"
            )));
        }
        Ok(settings)
    }
}

impl From<HealthCheckSettings> for HealthCheckFields {
    fn from(settings: HealthCheckSettings) -> Self {
        HealthCheckFields {
            kind: Some(settings.kind),
            path: settings.path.map(|path| path.0),
            status_min: settings.status_min,
            status_max: settings.status_max,
            port: settings.port,
            start_period_secs: settings.start_period_secs,
            timeout_secs: settings.timeout_secs,
            overall_timeout_secs: settings.overall_timeout_secs,
            interval_ms: settings.interval_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses a JSON object as the API does; `Ok` with the settings, or the message.
    fn parse(value: serde_json::Value) -> Result<HealthCheckSettings, String> {
        serde_json::from_value(value).map_err(|err| err.to_string())
    }

    #[test]
    fn valid_settings_parse_and_round_trip() {
        for value in [
            json!({}),
            json!({"type": "http", "path": "/healthz", "statusMin": 200, "statusMax": 399, "port": 9000,
                   "startPeriodSecs": 10, "timeoutSecs": 5, "overallTimeoutSecs": 120, "intervalMs": 250}),
            json!({"type": "tcp", "port": 5432, "startPeriodSecs": 0}),
            json!({"type": "none", "startPeriodSecs": 30}),
            json!({"path": "/ready?full=1", "statusMin": 100, "statusMax": 599}),
            json!({"statusMin": 499}),
            json!({"statusMax": 200}),
            json!({"port": 1, "timeoutSecs": 60, "overallTimeoutSecs": 3600, "intervalMs": 100}),
        ] {
            let settings = parse(value.clone()).unwrap_or_else(|err| panic!("{value}: {err}"));
            let again: HealthCheckSettings =
                serde_json::from_value(serde_json::to_value(&settings).unwrap()).unwrap();
            assert_eq!(again, settings, "{value}");
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        for (value, names) in [
            (json!({"type": "grpc"}), "grpc"),
            (json!({"path": "healthz"}), "`path`"),
            (json!({"path": "/a\r\nX-Injected: 1"}), "`path`"),
            (json!({"path": "/a b"}), "`path`"),
            (json!({"path": "/a#b"}), "`path`"),
            (json!({"path": format!("/{}", "a".repeat(1024))}), "`path`"),
            (json!({"statusMin": 99}), "`statusMin`"),
            (json!({"statusMin": 500}), "`statusMin`"),
            (json!({"statusMax": 199}), "`statusMax`"),
            (json!({"statusMax": 600}), "`statusMax`"),
            (json!({"statusMin": 400, "statusMax": 399}), "`statusMin`"),
            (json!({"port": 0}), "`port`"),
            (json!({"port": 65536}), "u16"),
            (json!({"startPeriodSecs": 3601}), "`startPeriodSecs`"),
            (json!({"timeoutSecs": 0}), "`timeoutSecs`"),
            (json!({"timeoutSecs": 61}), "`timeoutSecs`"),
            (json!({"overallTimeoutSecs": 0}), "`overallTimeoutSecs`"),
            (json!({"intervalMs": 99}), "`intervalMs`"),
            (json!({"type": "tcp", "path": "/"}), "`path`"),
            (json!({"type": "none", "port": 80}), "`port`"),
            (json!({"type": "none", "statusMax": 399}), "`statusMax`"),
            (json!({"pathh": "/"}), "pathh"),
        ] {
            match parse(value.clone()) {
                Ok(settings) => panic!("{value} parsed: {settings:?}"),
                Err(message) => assert!(message.contains(names), "{value}: {message}"),
            }
        }
    }

    #[test]
    fn a_snake_case_table_reads_like_the_camel_case_object() {
        let snake: HealthCheckSettings = serde_json::from_value(
            json!({"type": "http", "status_min": 204, "start_period_secs": 5, "overall_timeout_secs": 9}),
        )
        .unwrap();
        let camel = parse(json!({"type": "http", "statusMin": 204, "startPeriodSecs": 5, "overallTimeoutSecs": 9})).unwrap();
        assert_eq!(snake, camel);
    }

    #[test]
    fn a_toml_table_deserializes_and_unknown_keys_are_named() {
        #[derive(Debug, Deserialize)]
        struct File {
            health: HealthCheckSettings,
        }
        let file: File = toml::from_str(
            "[health]\ntype = \"http\"\npath = \"/healthz\"\nstatus_max = 399\nstart_period_secs = 10\n",
        )
        .unwrap();
        assert_eq!(
            file.health.path.as_ref().map(HealthPath::as_str),
            Some("/healthz")
        );
        assert_eq!(file.health.status_range(), (200, 399));
        let err = toml::from_str::<File>("[health]\npaht = \"/\"\n").unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
        let err = toml::from_str::<File>("[health]\npath = \"healthz\"\n").unwrap_err();
        assert!(err.to_string().contains("`path`"), "{err}");
    }
}
