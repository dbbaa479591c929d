//! The health check a release runs: the detected check with the project's settings and
//! the defaults applied (`HealthCheck::resolve`), and the effective values the release
//! reads from it.
//! Invariant: a plan stored without the resolved fields (older deploys) reads as the
//! defaults, which are the behaviour from before the settings existed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::health::{defaults, HealthCheckSettings, HealthCheckType};

use super::{HealthCheck, HealthCheckKind};

/// Where a release's health check came from, as the plan shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckSource {
    /// Detected from the source: HTTP for a web process, none for workers only.
    Detection,
    /// The project's settings (`PATCH /v1/projects/:id` `healthCheck`).
    Api,
    /// The `[health]` table of the repository's `cantila.toml`.
    File,
}

impl HealthCheck {
    /// The check a release of this plan runs: the project's settings when it has any
    /// (fields it leaves out take the defaults), otherwise the detected check; every value
    /// filled in, so the plan shows what will happen. `app_port` is the plan's port and
    /// `default_overall_secs` the server's `[deploy] health_timeout_secs`.
    pub fn resolve(
        &self,
        settings: Option<&HealthCheckSettings>,
        app_port: u16,
        default_overall_secs: u64,
    ) -> HealthCheck {
        let default_overall = u32::try_from(default_overall_secs).unwrap_or(u32::MAX);
        let mut check = match settings {
            None => HealthCheck {
                source: Some(HealthCheckSource::Detection),
                ..self.clone()
            },
            Some(settings) => {
                let kind = match settings.kind {
                    HealthCheckType::Http => HealthCheckKind::Http,
                    HealthCheckType::Tcp => HealthCheckKind::Tcp,
                    HealthCheckType::None => HealthCheckKind::None,
                };
                let (status_min, status_max) = settings.status_range();
                HealthCheck {
                    kind,
                    path: settings.path.as_ref().map(|path| path.as_str().to_owned()),
                    interval_secs: self.interval_secs,
                    timeout_secs: settings.timeout_secs.unwrap_or(self.timeout_secs),
                    retries: self.retries,
                    port: settings.port,
                    status_min: Some(status_min),
                    status_max: Some(status_max),
                    start_period_secs: settings.start_period_secs,
                    overall_timeout_secs: settings.overall_timeout_secs,
                    interval_ms: settings.interval_ms,
                    source: Some(HealthCheckSource::Api),
                }
            }
        };
        // Only the fields the kind uses are shown; the rest stay unset.
        match check.kind {
            HealthCheckKind::Http => {
                check.path = Some(check.path.unwrap_or_else(|| defaults::PATH.to_owned()));
                check.status_min = Some(check.status_min.unwrap_or(defaults::STATUS_MIN));
                check.status_max = Some(check.status_max.unwrap_or(defaults::STATUS_MAX));
            }
            HealthCheckKind::Tcp | HealthCheckKind::None => {
                check.path = None;
                check.status_min = None;
                check.status_max = None;
            }
        }
        match check.kind {
            HealthCheckKind::Http | HealthCheckKind::Tcp => {
                check.port = Some(check.port.unwrap_or(app_port));
                check.overall_timeout_secs =
                    Some(check.overall_timeout_secs.unwrap_or(default_overall));
                check.interval_ms = Some(check.interval_ms.unwrap_or(defaults::INTERVAL_MS));
            }
            HealthCheckKind::None => {
                check.port = None;
                check.overall_timeout_secs = None;
                check.interval_ms = None;
            }
        }
        check.start_period_secs = Some(
            check
                .start_period_secs
                .unwrap_or_else(|| check.default_start_period_secs()),
        );
        if let Some(interval_ms) = check.interval_ms {
            check.interval_secs = interval_ms.div_ceil(1000);
        }
        check
    }

    fn default_start_period_secs(&self) -> u32 {
        match self.kind {
            HealthCheckKind::Http | HealthCheckKind::Tcp => defaults::START_PERIOD_SECS,
            HealthCheckKind::None => defaults::START_PERIOD_SECS_NONE,
        }
    }

    /// The port probed: the check's own, or the app's.
    pub fn effective_port(&self, app_port: u16) -> u16 {
        self.port.unwrap_or(app_port)
    }

    /// The statuses that pass an HTTP check.
    pub fn status_range(&self) -> (u16, u16) {
        (
            self.status_min.unwrap_or(defaults::STATUS_MIN),
            self.status_max.unwrap_or(defaults::STATUS_MAX),
        )
    }

    /// Grace after the start: failures do not count, and the overall timeout starts after
    /// it. For `none`, how long the process must stay up.
    pub fn start_period(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.start_period_secs
                .unwrap_or_else(|| self.default_start_period_secs()),
        ))
    }

    /// How long after the start period an instance may take to pass.
    pub fn overall_timeout(&self, default_secs: u64) -> Duration {
        Duration::from_secs(
            self.overall_timeout_secs
                .map(u64::from)
                .unwrap_or(default_secs),
        )
    }

    /// The pause between probes.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms.unwrap_or(defaults::INTERVAL_MS)))
    }

    /// Each probe's own timeout (at least a second).
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_secs.max(1)))
    }

    /// The check in words, for the deploy log: `HTTP GET /healthz on port 8080, passing
    /// 200-399`.
    pub fn describe(&self, app_port: u16) -> String {
        let port = self.effective_port(app_port);
        match self.kind {
            HealthCheckKind::Http => {
                let (min, max) = self.status_range();
                format!(
                    "HTTP GET {} on port {port}, passing {min}-{max}",
                    self.path.as_deref().unwrap_or(defaults::PATH)
                )
            }
            HealthCheckKind::Tcp => format!("TCP connect to port {port}"),
            HealthCheckKind::None => "none (the process must stay up)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: serde_json::Value) -> HealthCheckSettings {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn without_settings_the_detected_check_gets_todays_defaults() {
        let check = HealthCheck::http().resolve(None, 3000, 60);
        assert_eq!(
            serde_json::to_value(&check).unwrap(),
            json!({"kind": "http", "path": "/", "intervalSecs": 1, "timeoutSecs": 2, "retries": 30,
                   "port": 3000, "statusMin": 200, "statusMax": 499, "startPeriodSecs": 0,
                   "overallTimeoutSecs": 60, "intervalMs": 500, "source": "detection"})
        );
        let worker = HealthCheck::none().resolve(None, 3000, 60);
        assert_eq!(
            serde_json::to_value(&worker).unwrap(),
            json!({"kind": "none", "path": null, "intervalSecs": 2, "timeoutSecs": 2, "retries": 30,
                   "startPeriodSecs": 3, "source": "detection"})
        );
    }

    #[test]
    fn settings_override_detection_and_fill_the_rest_with_defaults() {
        let check = HealthCheck::http().resolve(
            Some(&settings(
                json!({"path": "/healthz", "statusMax": 399, "startPeriodSecs": 10}),
            )),
            8080,
            60,
        );
        assert_eq!(
            check.describe(8080),
            "HTTP GET /healthz on port 8080, passing 200-399"
        );
        assert_eq!(check.start_period(), Duration::from_secs(10));
        assert_eq!(check.overall_timeout(999), Duration::from_secs(60));
        assert_eq!(check.source, Some(HealthCheckSource::Api));

        let tcp = HealthCheck::http().resolve(
            Some(&settings(
                json!({"type": "tcp", "port": 6379, "timeoutSecs": 5, "intervalMs": 1500}),
            )),
            8080,
            60,
        );
        assert_eq!(tcp.describe(8080), "TCP connect to port 6379");
        assert_eq!((tcp.path.as_deref(), tcp.status_min), (None, None));
        assert_eq!(
            (tcp.probe_timeout(), tcp.interval_secs),
            (Duration::from_secs(5), 2)
        );

        let none = HealthCheck::http().resolve(Some(&settings(json!({"type": "none"}))), 8080, 60);
        assert_eq!(
            (none.kind, none.start_period()),
            (HealthCheckKind::None, Duration::from_secs(3))
        );
        assert_eq!(none.port, None);
    }

    #[test]
    fn a_plan_stored_before_the_settings_reads_as_the_defaults() {
        let old: HealthCheck = serde_json::from_value(json!(
            {"kind": "http", "path": "/", "intervalSecs": 2, "timeoutSecs": 2, "retries": 30}
        ))
        .unwrap();
        assert_eq!(old.effective_port(8080), 8080);
        assert_eq!(old.status_range(), (200, 499));
        assert_eq!(old.start_period(), Duration::ZERO);
        assert_eq!(old.overall_timeout(60), Duration::from_secs(60));
        assert_eq!(old.interval(), Duration::from_millis(500));
    }
}
