//! A project's persistent volume as stored.

#[derive(Debug, Clone)]
pub struct Volume {
    pub project_id: String,
    pub name: String,
    pub mount_path: String,
    /// The Docker volume: `cantila_<project id>_<name>`.
    pub docker_name: String,
    pub created_at: String,
    /// The service that owns and alone mounts it; `None` for the app's volumes, which
    /// every app container mounts.
    pub service: Option<String>,
}
