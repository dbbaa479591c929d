//! `/v1/projects/:id/scale` and `/v1/projects/:id/instances`: how many instances of which
//! size run, applied without a rebuild, and what each instance is doing.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    deploy::instances::{InstanceInfo, ScaleRequest},
    names::ProcessType,
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path, Query},
    projects::ProjectView,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(scale))
        .routes(routes!(list))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Number of web instances to run; 0 stops the whole project (workers too). At most
    /// `scale.max_instances` (the document this server serves says its value).
    #[schema(minimum = 0, maximum = 10)]
    pub instances: Option<u32>,
    /// A size tier from `[scale.sizes]` (nano, small, medium, large by default), for
    /// every process type.
    pub size: Option<String>,
    /// Instances per Procfile process type, e.g. `{"worker": 2}`. Types not named keep
    /// their count; a type never scaled runs one instance.
    #[schema(example = json!({"worker": 2}))]
    pub processes: Option<BTreeMap<String, u32>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub deploy_id: String,
    /// The Procfile process type it runs; only `web` takes traffic.
    pub process: String,
    /// `starting`, `healthy`, `draining` or `exited`.
    pub state: String,
    pub restart_count: i64,
    pub started_at: Option<String>,
    pub size: Option<String>,
    /// Address and port on the project's (or the preview's) own network, as the host
    /// reaches it.
    pub address: Option<String>,
}

impl From<InstanceInfo> for InstanceView {
    fn from(info: InstanceInfo) -> Self {
        Self {
            id: info.id,
            name: info.name,
            deploy_id: info.deploy_id,
            process: info.process,
            state: info.state,
            restart_count: info.restart_count,
            started_at: info.started_at,
            size: info.size,
            address: info.address,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<InstanceView>,
}

/// Adjust how many instances run and the size of each. New instances pass their health
/// check before taking traffic; leaving ones drain first. `instances: 0` stops the project.
#[utoipa::path(post, path = "/v1/projects/{id}/scale", tag = "instances",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = Scale, responses((status = 200, body = ProjectView)))]
async fn scale(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<Scale>,
) -> ApiResult<Json<ProjectView>> {
    let processes = request
        .processes
        .unwrap_or_default()
        .iter()
        .map(|(name, count)| Ok((ProcessType::parse(name)?, *count)))
        .collect::<Result<BTreeMap<_, _>, crate::error::Error>>()?;
    if request.instances.is_none() && request.size.is_none() && processes.is_empty() {
        return Err(crate::error::Error::Invalid(
            "pass `instances`, `size`, `processes`, or several".to_owned(),
        )
        .into());
    }
    let project = app
        .deploys
        .scale(
            &auth.actor,
            id,
            ScaleRequest {
                instances: request.instances,
                size: request.size,
                processes,
            },
        )
        .await?;
    Ok(Json(ProjectView::new(&project, &app)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InstancesQuery {
    /// A preview of the project (`prv_...`): list its instances instead of production's.
    pub preview: Option<String>,
}

/// List the project's running instances (production's, or a preview's with `preview`).
#[utoipa::path(get, path = "/v1/projects/{id}/instances", tag = "instances",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "project id"), InstancesQuery),
    responses((status = 200, body = InstanceList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<InstancesQuery>,
) -> ApiResult<Json<InstanceList>> {
    let found = app
        .deploys
        .instances(&auth.actor, id, query.preview)
        .await?;
    Ok(Json(InstanceList {
        instances: found.into_iter().map(InstanceView::from).collect(),
    }))
}
