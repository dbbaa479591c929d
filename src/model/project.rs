//! Projects as stored: the unit Cantila deploys and runs, and where it stands.

use std::collections::BTreeMap;

use crate::{
    model::build::BuildSettings,
    model::health::HealthCheckSettings,
    names::{Handle, ProjectName, Runtime},
};

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub account_id: String,
    pub handle: Handle,
    pub name: ProjectName,
    /// The runtime hint; `None` means detect from the source.
    pub runtime: Option<Runtime>,
    pub status: ProjectStatus,
    pub created_at: String,
    pub updated_at: String,
    /// How many web instances should run (0 = stopped).
    pub instances: u32,
    /// The size tier; `None` means the configured default.
    pub size: Option<String>,
    /// Branch patterns whose pushes create previews (`previews.branches`); empty = none.
    pub preview_branches: Vec<String>,
    /// Desired instances of non-web process types that were scaled explicitly; a type
    /// not listed runs one instance (see `deploy::instances::desired_instances`).
    pub process_instances: BTreeMap<String, u32>,
    /// The build settings set through the API (`PATCH /v1/projects/:id`, `build`); the
    /// repository's `cantila.toml` and detection fill in what is not set here.
    pub build: BuildSettings,
    /// The health check settings (`healthCheck`); `None` means the defaults.
    pub health_check: Option<HealthCheckSettings>,
}

impl Project {
    /// The hostname every project gets: `<name>.<handle>.<base_domain>`. Two labels keep
    /// it unambiguous (`a-b` of `c` and `a` of `b-c` never collide).
    pub fn default_hostname(&self, base_domain: &str) -> String {
        format!("{}.{}.{base_domain}", self.name, self.handle)
    }
}

/// Where a project stands, as the API and the edge's 503 page report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectStatus {
    /// Never deployed.
    Created,
    Building,
    Running,
    Failed,
    Stopped,
}

impl ProjectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::Created => "created",
            ProjectStatus::Building => "building",
            ProjectStatus::Running => "running",
            ProjectStatus::Failed => "failed",
            ProjectStatus::Stopped => "stopped",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            ProjectStatus::Created,
            ProjectStatus::Building,
            ProjectStatus::Running,
            ProjectStatus::Failed,
            ProjectStatus::Stopped,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }
}
