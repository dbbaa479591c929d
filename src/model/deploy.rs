//! Deploys as stored: a deploy, its status, its release target (production or a preview)
//! and the lines of its log.

use serde::Serialize;

use crate::live;

/// The trigger of a deploy the daemon queued itself to make a live release again whose
/// image or static site went missing (`deploy::rebuild`): shown in the deploy list, and
/// what tells the pipeline to release the pulled digest even though the live release
/// names the same one.
pub const RESTORE_TRIGGER: &str = "restore";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployStatus {
    Queued,
    Building,
    Releasing,
    Running,
    Failed,
    Canceled,
    Superseded,
}

impl DeployStatus {
    const ALL: [DeployStatus; 7] = [
        DeployStatus::Queued,
        DeployStatus::Building,
        DeployStatus::Releasing,
        DeployStatus::Running,
        DeployStatus::Failed,
        DeployStatus::Canceled,
        DeployStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeployStatus::Queued => "queued",
            DeployStatus::Building => "building",
            DeployStatus::Releasing => "releasing",
            DeployStatus::Running => "running",
            DeployStatus::Failed => "failed",
            DeployStatus::Canceled => "canceled",
            DeployStatus::Superseded => "superseded",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Whether the deploy's pipeline is over (`running` counts: the release is done).
    pub fn is_final(self) -> bool {
        match self {
            DeployStatus::Queued | DeployStatus::Building | DeployStatus::Releasing => false,
            DeployStatus::Running
            | DeployStatus::Failed
            | DeployStatus::Canceled
            | DeployStatus::Superseded => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deploy {
    pub id: String,
    pub project_id: String,
    pub status: DeployStatus,
    /// What asked for it: `api`, `webhook`, `cli`, `rollback`, or `restore` (the daemon
    /// rebuilding a live release the engine lost).
    pub trigger: String,
    /// The ref asked for; `None` means the connected branch's head (or, for an image
    /// source, the connected tag). For an image source it is a tag or digest of the
    /// connected repository.
    pub git_ref: Option<String>,
    pub commit_sha: Option<String>,
    pub commit_message: Option<String>,
    pub plan: Option<serde_json::Value>,
    pub image: Option<String>,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub building_at: Option<String>,
    pub releasing_at: Option<String>,
    pub finished_at: Option<String>,
    /// For a rollback: the earlier deploy whose image, plan and env it re-releases.
    pub rollback_of: Option<String>,
    /// The preview this deploy releases; `None` for the project's production release.
    pub preview_id: Option<String>,
    /// For a deploy of an image source: the digest it pulled (`sha256:...`).
    pub image_digest: Option<String>,
    /// How the deploy ended besides its status: `unchanged` when the image it pulled was
    /// what already served, so nothing was released.
    pub outcome: Option<String>,
}

/// What a deploy releases: the project's production instances or one preview's. Every
/// step that picks "the previous release", "the running deploy" or "the old instances"
/// looks only within the deploy's own target, so production and previews never touch
/// each other's containers or history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseTarget {
    Production,
    Preview(String),
}

impl ReleaseTarget {
    pub fn preview_id(&self) -> Option<&str> {
        match self {
            ReleaseTarget::Production => None,
            ReleaseTarget::Preview(id) => Some(id),
        }
    }
}

impl Deploy {
    pub fn target(&self) -> ReleaseTarget {
        match &self.preview_id {
            Some(id) => ReleaseTarget::Preview(id.clone()),
            None => ReleaseTarget::Production,
        }
    }
}

/// One stored line of a deploy's log: build output (`log`) or a status change (`status`).
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub text: String,
}

impl LogLine {
    /// The final status this line records, if it is one.
    pub fn final_status(&self) -> Option<DeployStatus> {
        if self.kind != "status" {
            return None;
        }
        let word = self.text.split_whitespace().next().unwrap_or_default();
        DeployStatus::parse(word).filter(|status| status.is_final())
    }
}

impl live::Sequenced for LogLine {
    fn seq(&self) -> i64 {
        self.seq
    }
}
