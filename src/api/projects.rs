//! `/v1/projects`: list, create, fetch (by id or by handle and name), update, delete.

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    model::build::{
        check_arg_value, BuildName, BuildSettings, BuildTarget, DockerfilePath, RootDir, WatchPath,
        MAX_BUILD_ARGS, MAX_WATCH_PATHS,
    },
    model::health::{HealthCheckFields, HealthCheckSettings},
    names::{ProcessType, ProjectName, Runtime},
    pagination::PageRequest,
    previews::BranchPattern,
    projects::{self, BuildChanges, NewProject, Project, ProjectChanges},
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path, Query},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(get_by_handle))
}

/// A project as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectView {
    #[schema(example = "prj_3kTq9ZbW1xYpLm0aVc7D")]
    pub id: String,
    #[schema(example = "marketing-site")]
    pub name: String,
    /// The owning account's handle.
    #[schema(example = "your-handle")]
    pub handle: String,
    /// `created` (never deployed), `building`, `running`, `failed` or `stopped`.
    #[schema(example = "running")]
    pub status: String,
    /// The runtime hint, or null when the runtime is detected from the source.
    pub runtime: Option<String>,
    /// The hostname the project is served on: `<name>.<handle>.<base_domain>`.
    pub hostname: String,
    /// Desired web instances (0 = stopped).
    pub instances: u32,
    /// The size tier of each instance.
    pub size: String,
    /// Instances per process type that was scaled: `web` (the same as `instances`) and
    /// any Procfile type given a count; other types of the release run one instance.
    #[schema(example = json!({"web": 2, "worker": 1}))]
    pub processes: BTreeMap<String, u32>,
    /// Preview settings.
    pub previews: PreviewSettings,
    /// Build settings set through the API (null or empty: the repository's `cantila.toml`
    /// or detection decides; the deploy plan shows what applies and where it came from).
    pub build: BuildSettingsView,
    /// The health check settings set through the API; null when the defaults apply. The
    /// deploy plan (`POST /v1/deploy/plan`) shows the check a release would run.
    pub health_check: Option<HealthCheckFields>,
    pub created_at: String,
    pub updated_at: String,
}

/// `previews` of a project: which branches' pushes create previews.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewSettings {
    /// Branch patterns (`*` within a path segment, `**` across) whose pushes create a
    /// preview; empty = only pull requests and the API create previews.
    #[schema(example = json!(["feature/*"]))]
    pub branches: Vec<String>,
}

/// `build` of a project, as set through the API.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSettingsView {
    /// The directory of the repository the build runs in (its context), relative to the
    /// repository's root; null = the root.
    #[schema(example = "apps/web")]
    pub root_dir: Option<String>,
    /// The Dockerfile, relative to the root directory; null = `Dockerfile` there, or a
    /// generated one.
    #[schema(example = "docker/Dockerfile")]
    pub dockerfile: Option<String>,
    /// The stage of a multi-stage Dockerfile to build; null = the last stage.
    #[schema(example = "prod")]
    pub target: Option<String>,
    /// Build-time variables (`ARG`s). Not for secrets: use build secrets.
    #[schema(example = json!({"NODE_ENV": "production"}))]
    pub build_args: BTreeMap<String, String>,
    /// Globs of repository paths (relative to the repository's root); a push that changes
    /// none of them is ignored. Empty = every push deploys.
    #[schema(example = json!(["apps/web/**", "packages/**"]))]
    pub watch_paths: Vec<String>,
}

impl From<&BuildSettings> for BuildSettingsView {
    fn from(settings: &BuildSettings) -> Self {
        Self {
            root_dir: settings.root_dir.as_ref().map(|root| root.to_string()),
            dockerfile: settings.dockerfile.as_ref().map(|path| path.to_string()),
            target: settings.target.as_ref().map(|target| target.to_string()),
            build_args: settings
                .build_args
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
            watch_paths: settings
                .watch_paths
                .iter()
                .map(|path| path.as_str().to_owned())
                .collect(),
        }
    }
}

/// `build` of `PATCH /v1/projects/:id`: each field present replaces that setting; `null`
/// (or `{}`, `[]`) clears it; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateBuildSettings {
    /// Relative to the repository's root, without `..`; `.` or null = the root.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "apps/web", max_length = 255)]
    pub root_dir: Option<Option<String>>,
    /// Relative to the root directory, without `..`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "docker/Dockerfile", max_length = 255)]
    pub dockerfile: Option<Option<String>>,
    /// A stage name of the Dockerfile.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "prod", pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,127}$")]
    pub target: Option<Option<String>>,
    /// At most 100; names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`), values at most 32 KiB.
    #[serde(default, deserialize_with = "present_map")]
    #[schema(value_type = Option<BTreeMap<String, String>>, example = json!({"NODE_ENV": "production"}))]
    pub build_args: Option<Option<BTreeMap<String, String>>>,
    /// At most 50 globs of repository paths.
    #[serde(default, deserialize_with = "present_list")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["apps/web/**"]), max_items = 50)]
    pub watch_paths: Option<Option<Vec<String>>>,
}

/// Prefixes a validation message with the field it is about, so a 422 names it.
fn in_field<T>(
    field: &str,
    result: Result<T, crate::error::Error>,
) -> Result<T, crate::error::Error> {
    result.map_err(|err| match err {
        crate::error::Error::Invalid(message) => {
            crate::error::Error::Invalid(format!("{field}: {message}"))
        }
        other => other,
    })
}

impl TryFrom<UpdateBuildSettings> for BuildChanges {
    type Error = crate::error::Error;

    fn try_from(request: UpdateBuildSettings) -> Result<Self, Self::Error> {
        Ok(BuildChanges {
            root_dir: in_field(
                "build.rootDir",
                request
                    .root_dir
                    .map(|root| root.as_deref().map(RootDir::parse).transpose())
                    .transpose(),
            )?,
            dockerfile: in_field(
                "build.dockerfile",
                request
                    .dockerfile
                    .map(|path| path.as_deref().map(DockerfilePath::parse).transpose())
                    .transpose(),
            )?,
            target: in_field(
                "build.target",
                request
                    .target
                    .map(|target| target.as_deref().map(BuildTarget::parse).transpose())
                    .transpose(),
            )?,
            build_args: in_field(
                "build.buildArgs",
                request
                    .build_args
                    .map(|args| {
                        let args = args.unwrap_or_default();
                        if args.len() > MAX_BUILD_ARGS {
                            return Err(crate::error::Error::Invalid(format!(
                                "at most {MAX_BUILD_ARGS} build args are accepted"
                            )));
                        }
                        args.into_iter()
                            .map(|(name, value)| {
                                let name = BuildName::parse(&name)?;
                                check_arg_value(&name, &value)?;
                                Ok((name, value))
                            })
                            .collect()
                    })
                    .transpose(),
            )?,
            watch_paths: in_field(
                "build.watchPaths",
                request
                    .watch_paths
                    .map(|paths| {
                        let paths = paths.unwrap_or_default();
                        if paths.len() > MAX_WATCH_PATHS {
                            return Err(crate::error::Error::Invalid(format!(
                                "at most {MAX_WATCH_PATHS} watch paths are accepted"
                            )));
                        }
                        paths.iter().map(|path| WatchPath::parse(path)).collect()
                    })
                    .transpose(),
            )?,
        })
    }
}

impl ProjectView {
    pub fn new(project: &Project, app: &ApiState) -> Self {
        Self {
            id: project.id.clone(),
            name: project.name.to_string(),
            handle: project.handle.to_string(),
            status: project.status.as_str().to_owned(),
            runtime: project.runtime.map(|r| r.as_str().to_owned()),
            hostname: project.default_hostname(&app.config.base_domain),
            instances: project.instances,
            size: project
                .size
                .clone()
                .unwrap_or_else(|| app.config.scale.default_size.clone()),
            processes: std::iter::once((ProcessType::WEB.to_owned(), project.instances))
                .chain(project.process_instances.clone())
                .collect(),
            previews: PreviewSettings {
                branches: project.preview_branches.clone(),
            },
            build: BuildSettingsView::from(&project.build),
            health_check: project.health_check.clone().map(HealthCheckFields::from),
            created_at: project.created_at.clone(),
            updated_at: project.updated_at.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters shared by list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Items per page (default 50, at most 200 unless configured otherwise).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page(&self, app: &ApiState) -> Result<PageRequest, crate::error::Error> {
        PageRequest::parse(
            self.limit,
            self.cursor.as_deref(),
            app.config.api.default_page_size,
            app.config.api.max_page_size,
        )
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Unique within the account; a lowercase DNS label (1-63 of `a-z`, `0-9`, `-`).
    #[schema(
        example = "marketing-site",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        min_length = 1,
        max_length = 63
    )]
    pub name: String,
    /// Optional runtime hint: dockerfile, static, node, python, go, rust, ruby or php.
    #[schema(value_type = Option<Runtime>)]
    pub runtime: Option<String>,
}

impl TryFrom<CreateProject> for NewProject {
    type Error = crate::error::Error;

    fn try_from(request: CreateProject) -> Result<Self, Self::Error> {
        Ok(NewProject {
            name: ProjectName::parse(&request.name)?,
            runtime: request.runtime.as_deref().map(Runtime::parse).transpose()?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// A new name, unique within the account.
    #[schema(
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        min_length = 1,
        max_length = 63
    )]
    pub name: Option<String>,
    /// A new runtime hint; `null` clears it so the runtime is detected again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Runtime>)]
    pub runtime: Option<Option<String>>,
    /// Preview settings: `{"branches": ["feature/*"]}`; `[]` turns branch previews off.
    #[serde(default, deserialize_with = "object")]
    pub previews: Option<PreviewSettings>,
    /// Build settings: root directory, Dockerfile path, target, build args, watch paths.
    #[serde(default, deserialize_with = "object")]
    pub build: Option<UpdateBuildSettings>,
    /// Health check settings for the next releases: `{"type": "http", "path": "/healthz",
    /// "statusMax": 399}`, `{"type": "tcp"}` or `{"type": "none"}`; fields left out take
    /// their defaults, and `null` returns to the defaults (an HTTP check of `/` on the app's
    /// port that passes below 500).
    #[serde(rename = "healthCheck", default, deserialize_with = "present_object")]
    #[schema(value_type = Option<HealthCheckFields>)]
    pub health_check: Option<Option<HealthCheckSettings>>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A JSON object (or null) read into `T`. Serde would also read a struct from an array
/// of its fields in order, which the API's schema does not allow, so anything but an
/// object is refused here.
fn object<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        // The inner path names the field at fault (`port: invalid value...`).
        Some(value @ serde_json::Value::Object(_)) => serde_path_to_error::deserialize(value)
            .map(Some)
            .map_err(|err| {
                let path = err.path().to_string();
                serde::de::Error::custom(format!("{path}: {}", err.into_inner()))
            }),
        Some(_) => Err(serde::de::Error::custom("expected an object")),
    }
}

/// `object`, telling an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present_object<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    object(deserializer).map(Some)
}

fn present_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<BTreeMap<String, String>>>, D::Error> {
    Option::<BTreeMap<String, String>>::deserialize(deserializer).map(Some)
}

fn present_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Vec<String>>>, D::Error> {
    Option::<Vec<String>>::deserialize(deserializer).map(Some)
}

impl TryFrom<UpdateProject> for ProjectChanges {
    type Error = crate::error::Error;

    fn try_from(request: UpdateProject) -> Result<Self, Self::Error> {
        Ok(ProjectChanges {
            name: request
                .name
                .as_deref()
                .map(ProjectName::parse)
                .transpose()?,
            runtime: request
                .runtime
                .map(|runtime| runtime.as_deref().map(Runtime::parse).transpose())
                .transpose()?,
            preview_branches: request
                .previews
                .map(|settings| {
                    if settings.branches.len() > 50 {
                        return Err(crate::error::Error::Invalid(
                            "previews.branches takes at most 50 patterns".to_owned(),
                        ));
                    }
                    settings
                        .branches
                        .iter()
                        .map(|pattern| BranchPattern::parse(pattern))
                        .collect()
                })
                .transpose()?,
            build: request.build.map(BuildChanges::try_from).transpose()?,
            health_check: request.health_check,
        })
    }
}

/// List the projects in the current account, oldest first.
#[utoipa::path(get, path = "/v1/projects", tag = "projects",
    security(("bearer" = ["read"])), params(ListQuery),
    responses((status = 200, body = ProjectList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<ProjectList>> {
    let page = projects::list(&app.store, &auth.actor, query.page(&app)?).await?;
    Ok(Json(ProjectList {
        projects: page
            .items
            .iter()
            .map(|p| ProjectView::new(p, &app))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Create a new project.
#[utoipa::path(post, path = "/v1/projects", tag = "projects",
    security(("bearer" = ["deploy"])), request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, description = "name taken", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Json(request): Json<CreateProject>,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
    let project = app
        .projects
        .create(&auth.actor, request.try_into()?)
        .await?;
    // Its hostname answers (503, "created") from now on rather than 404.
    app.routing.refresh_or_warn("a project creation").await;
    Ok((StatusCode::CREATED, Json(ProjectView::new(&project, &app))))
}

/// Fetch one project by its id.
#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = ProjectView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProjectView>> {
    let project = projects::get(&app.store, &auth.actor, id).await?;
    Ok(Json(ProjectView::new(&project, &app)))
}

/// Rename a project, change its runtime hint, set which branches get previews, or change
/// its build settings (the next deploy builds with them).
/// Rename a project, change its runtime hint, set which branches get previews, or set its
/// health check.
#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "projects",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = UpdateProject,
    responses((status = 200, body = ProjectView), (status = 409, description = "name taken", body = super::error::ErrorBody)))]
async fn update(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<UpdateProject>,
) -> ApiResult<Json<ProjectView>> {
    let project = app
        .projects
        .update(&auth.actor, id, request.try_into()?)
        .await?;
    // A new name is a new hostname.
    app.routing.refresh_or_warn("a project update").await;
    Ok(Json(ProjectView::new(&project, &app)))
}

/// Delete a project and everything attached to it.
#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    responses((status = 204, description = "deleted"),
        (status = 409, description = "the project still holds a database or volumes; delete them first", body = super::error::ErrorBody)))]
async fn delete(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.deploys.delete_project(&auth.actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Look a project up by account handle and project name.
#[utoipa::path(get, path = "/v1/projects/by-handle/{handle}/{name}", tag = "projects",
    security(("bearer" = ["read"])),
    params(("handle" = String, Path, description = "account handle"), ("name" = String, Path, description = "project name")),
    responses((status = 200, body = ProjectView)))]
async fn get_by_handle(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path((handle, name)): Path<(String, String)>,
) -> ApiResult<Json<ProjectView>> {
    let project = projects::get_by_handle(&app.store, &auth.actor, &handle, name).await?;
    Ok(Json(ProjectView::new(&project, &app)))
}
