//! `/v1/projects/:id/services`: a project's services, containers beside the app reached by
//! their name on the project's private network, with their live state.

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    backup::Backups,
    error::Error,
    names::{MountPath, ServiceName, VolumeName},
    services::{
        addons::{self, Addon, AddonVersion, Engine},
        AddonRef, RestartPolicy, ServiceEnv, ServiceHealth, ServicePatch, ServiceSource,
        ServiceSpec, ServiceState, ServiceView as Live, ServiceVolume, Services,
    },
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path, Query},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}

/// A service's volume as the API writes it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeField {
    /// A lowercase DNS label of at most 32 characters, unique among the project's volumes.
    #[schema(example = "redis-data")]
    pub name: String,
    /// Where it is mounted inside the service's containers.
    #[schema(example = "/data")]
    pub path: String,
}

/// The add-on a service runs: an engine name (`"redis"`), or the engine and its version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AddonField {
    #[schema(example = "redis")]
    Engine(String),
    Versioned {
        #[schema(example = "postgres")]
        engine: String,
        #[schema(example = "16")]
        version: Option<String>,
    },
}

/// One container of a service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstanceView {
    /// The container's short id.
    #[schema(example = "4f2a9c1b7e3d")]
    pub id: String,
    pub state: ServiceState,
    /// `healthy`, `unhealthy` or `starting`; null without a health check.
    #[schema(example = "healthy")]
    pub health: Option<String>,
    pub started_at: Option<String>,
}

/// What an add-on wires into the app's containers (B: add-ons); null for other services.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    #[schema(example = json!(["REDIS_URL"]))]
    pub env_keys: Vec<String>,
}

/// A service, with its live state. Env values are never shown: only their keys.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    #[schema(example = "svc_3kT9")]
    pub id: String,
    pub project_id: String,
    #[schema(example = "redis")]
    pub name: String,
    pub source: ServiceSource,
    /// The image its containers start from.
    #[schema(example = "redis:7")]
    pub image: String,
    pub addon: Option<AddonRef>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    #[schema(example = json!(["MAXMEMORY"]))]
    pub env_keys: Vec<String>,
    pub volumes: Vec<VolumeField>,
    pub health: ServiceHealth,
    pub restart: RestartPolicy,
    /// The size tier; null is the configured default.
    pub size: Option<String>,
    #[schema(minimum = 0, maximum = 10)]
    pub count: u32,
    #[schema(minimum = 1, maximum = 65535, example = 6379)]
    pub port: Option<u16>,
    pub depends_on: Vec<String>,
    pub state: ServiceState,
    /// Why it is `failed`.
    pub error: Option<String>,
    pub instances: Vec<ServiceInstanceView>,
    pub connection: Option<ConnectionView>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Live> for ServiceView {
    fn from(live: Live) -> Self {
        let service = live.service;
        let spec = service.spec;
        let spec_addon = spec.addon.clone();
        Self {
            id: service.id,
            project_id: service.project_id,
            name: spec.name.to_string(),
            source: service.source,
            image: spec.image,
            addon: spec.addon.clone(),
            command: spec.command,
            entrypoint: spec.entrypoint,
            env_keys: live.env_keys,
            volumes: spec
                .volumes
                .into_iter()
                .map(|v| VolumeField {
                    name: v.name.to_string(),
                    path: v.path.to_string(),
                })
                .collect(),
            health: spec.health,
            restart: spec.restart,
            size: spec.size,
            count: spec.count,
            port: spec.port,
            depends_on: spec.depends_on.iter().map(ToString::to_string).collect(),
            state: live.state,
            error: live.error,
            instances: live
                .instances
                .into_iter()
                .map(|i| ServiceInstanceView {
                    id: i.id,
                    state: i.state,
                    health: i.health,
                    started_at: i.started_at,
                })
                .collect(),
            connection: addons::engine_of_spec(spec_addon.as_ref()).map(|engine| ConnectionView {
                env_keys: engine.env_keys().iter().map(|k| (*k).to_owned()).collect(),
            }),
            created_at: service.created_at,
            updated_at: service.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceView>,
}

/// `POST /v1/projects/:id/services`: exactly one of `image` and `addon`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateService {
    /// 1-40 lowercase letters, digits and hyphens, starting with a letter; the host name
    /// the project's containers reach it at. Not `web` nor one of the app's process types.
    /// Required with `image`; an add-on is named after its engine when absent.
    #[schema(example = "redis")]
    pub name: Option<String>,
    /// The image its containers start from; pulled (with the account's registry
    /// credentials) when not present.
    #[schema(example = "redis:7")]
    pub image: Option<String>,
    pub addon: Option<AddonField>,
    /// Overrides the image's CMD.
    #[schema(example = json!(["redis-server", "--appendonly", "yes"]), min_items = 1, max_items = 256)]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT.
    #[schema(min_items = 1, max_items = 256)]
    pub entrypoint: Option<Vec<String>>,
    /// Its env; values are sealed at rest and never shown again.
    pub env: Option<BTreeMap<String, String>>,
    /// Named volumes of its own (kept across restarts and changes).
    #[schema(max_items = 16)]
    pub volumes: Option<Vec<VolumeField>>,
    /// What `ready` means; no check (ready once running) when absent.
    pub health: Option<ServiceHealth>,
    /// `always` (the default), `on-failure` or `no`.
    pub restart: Option<RestartPolicy>,
    /// A size tier of `[scale.sizes]`; the configured default when absent.
    pub size: Option<String>,
    /// Containers to run (default 1; 0 keeps it declared but stopped).
    #[schema(minimum = 0, maximum = 10)]
    pub count: Option<u32>,
    /// The port it listens on inside the project's network (the default port of a
    /// `tcp`/`http` check); nothing is published.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u32>,
    /// Services of the project it starts after.
    pub depends_on: Option<Vec<String>>,
}

/// `PATCH /v1/projects/:id/services/:name`: each field present replaces the service's;
/// `env` entries are merged (null removes a key); `command`, `entrypoint`, `size` and
/// `port` may be null. A change of what its containers are made from restarts only it;
/// `count` alone starts or stops containers.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateService {
    #[schema(example = "redis:7.2")]
    pub image: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub command: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub entrypoint: Option<Option<Vec<String>>>,
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub env: Option<BTreeMap<String, Option<String>>>,
    #[schema(max_items = 16)]
    pub volumes: Option<Vec<VolumeField>>,
    pub health: Option<ServiceHealth>,
    pub restart: Option<RestartPolicy>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub size: Option<Option<String>>,
    #[schema(minimum = 0, maximum = 10)]
    pub count: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65535)]
    pub port: Option<Option<u32>>,
    pub depends_on: Option<Vec<String>>,
}

/// A field that is present (even as null) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteQuery {
    /// Also delete the service's volumes and their data (otherwise a service owning a
    /// volume answers 409).
    pub delete_data: Option<bool>,
}

fn volumes(fields: Vec<VolumeField>) -> Result<Vec<ServiceVolume>, Error> {
    fields
        .into_iter()
        .map(|field| {
            Ok(ServiceVolume {
                name: VolumeName::parse(&field.name)
                    .map_err(|err| Error::Invalid(format!("`volumes`: {err}")))?,
                path: MountPath::parse(&field.path)
                    .map_err(|err| Error::Invalid(format!("`volumes`: {err}")))?,
            })
        })
        .collect()
}

fn depends_on(names: Vec<String>) -> Result<Vec<ServiceName>, Error> {
    names
        .iter()
        .map(|name| {
            ServiceName::parse(name).map_err(|err| Error::Invalid(format!("`dependsOn`: {err}")))
        })
        .collect()
}

fn port(port: u32) -> Result<u16, Error> {
    u16::try_from(port)
        .ok()
        .filter(|port| *port >= 1)
        .ok_or_else(|| Error::Invalid(format!("`port` is {port}; use 1..=65535")))
}

/// A service name from the path: one that cannot exist is simply not found.
fn path_name(name: &str) -> Result<ServiceName, Error> {
    ServiceName::parse(name)
        .map_err(|_| Error::NotFound(format!("the project has no service named `{name}`")))
}

impl TryFrom<CreateService> for ServiceSpec {
    type Error = Error;

    fn try_from(request: CreateService) -> Result<Self, Error> {
        let image = match (request.image, request.addon) {
            (Some(image), None) => image,
            (None, Some(_)) => {
                return Err(Error::Internal(
                    "an add-on request reached the image path".to_owned(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "give either `image` or `addon`, not both".to_owned(),
                ))
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "`image` (or `addon`) is required".to_owned(),
                ))
            }
        };
        let name = ServiceName::parse(
            request
                .name
                .as_deref()
                .ok_or_else(|| Error::Invalid("`name` is required with `image`".to_owned()))?,
        )
        .map_err(|err| Error::Invalid(format!("`name`: {err}")))?;
        Ok(ServiceSpec {
            name,
            image,
            addon: None,
            command: request.command,
            entrypoint: request.entrypoint,
            env: ServiceEnv(request.env.unwrap_or_default()),
            volumes: volumes(request.volumes.unwrap_or_default())?,
            health: request.health.unwrap_or_default(),
            restart: request.restart.unwrap_or_default(),
            size: request.size,
            count: request.count.unwrap_or(1),
            port: request.port.map(port).transpose()?,
            depends_on: depends_on(request.depends_on.unwrap_or_default())?,
        })
    }
}

/// The add-on a request names: an engine word, or `{engine, version}`.
fn addon_of(field: &AddonField) -> Result<Addon, Error> {
    match field {
        AddonField::Engine(engine) => Ok(Addon::of(Engine::parse(engine, "addon")?)),
        AddonField::Versioned { engine, version } => {
            let engine = Engine::parse(engine, "addon.engine")?;
            Ok(match version {
                Some(version) => Addon::at(engine, AddonVersion::parse(version)?)?,
                None => Addon::of(engine),
            })
        }
    }
}

/// The first field of a create request that an add-on sets itself.
fn addon_refuses(request: &CreateService) -> Option<&'static str> {
    [
        ("command", request.command.is_some()),
        ("entrypoint", request.entrypoint.is_some()),
        ("env", request.env.is_some()),
        ("volumes", request.volumes.is_some()),
        ("health", request.health.is_some()),
        ("port", request.port.is_some()),
        ("dependsOn", request.depends_on.is_some()),
    ]
    .into_iter()
    .find(|(_, given)| *given)
    .map(|(field, _)| field)
}

/// List the project's services with their live state.
#[utoipa::path(get, path = "/v1/projects/{id}/services", tag = "services",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = ServiceList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(services): State<Services>,
    Path(id): Path<String>,
) -> ApiResult<Json<ServiceList>> {
    let listed = services.list(&auth.actor, &id).await?;
    Ok(Json(ServiceList {
        services: listed.into_iter().map(ServiceView::from).collect(),
    }))
}

/// Declare a service: its containers start in the background (follow `state` until
/// `ready`), on the project's private network, reachable by the project's containers at
/// its name. A bad field is a 422 naming it.
#[utoipa::path(post, path = "/v1/projects/{id}/services", tag = "services",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = CreateService,
    responses((status = 201, body = ServiceView), (status = 409, description = "the name or a volume name is taken, or the project has 32 services", body = super::error::ErrorBody), (status = 422, description = "a field is invalid", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(services): State<Services>,
    Path(id): Path<String>,
    Json(request): Json<CreateService>,
) -> ApiResult<(StatusCode, Json<ServiceView>)> {
    let created = match (&request.addon, &request.image) {
        (Some(addon), None) => {
            let addon = addon_of(addon)?;
            let name = request
                .name
                .as_deref()
                .map(|name| {
                    ServiceName::parse(name).map_err(|err| Error::Invalid(format!("`name`: {err}")))
                })
                .transpose()?;
            if let Some(field) = addon_refuses(&request) {
                return Err(Error::Invalid(format!(
                    "`{field}` does not go with `addon`: an add-on's image, command, env, volumes and health check are Cantila's; change them afterwards with PATCH if you must"
                ))
                .into());
            }
            services.create_addon(&auth.actor, &id, name, addon).await?
        }
        _ => {
            let spec = ServiceSpec::try_from(request)?;
            services.create(&auth.actor, &id, spec).await?
        }
    };
    let view = services.get(&auth.actor, &id, created.name()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// One service with its live state.
#[utoipa::path(get, path = "/v1/projects/{id}/services/{name}", tag = "services",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(services): State<Services>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceView>> {
    let name = path_name(&name)?;
    Ok(Json(services.get(&auth.actor, &id, &name).await?.into()))
}

/// Change a service. A change of what its containers are made from (image, command, env,
/// volumes, health check, restart, size, port) replaces its containers, and only its;
/// its volumes keep their data. A compose file's service answers 409.
#[utoipa::path(patch, path = "/v1/projects/{id}/services/{name}", tag = "services",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "service name")),
    request_body = UpdateService,
    responses((status = 200, body = ServiceView), (status = 409, description = "the service comes from a compose file", body = super::error::ErrorBody), (status = 422, description = "a field is invalid", body = super::error::ErrorBody)))]
async fn update(
    auth: Auth<DeployScope>,
    State(services): State<Services>,
    Path((id, name)): Path<(String, String)>,
    Json(request): Json<UpdateService>,
) -> ApiResult<Json<ServiceView>> {
    let name = path_name(&name)?;
    let patch = ServicePatch {
        image: request.image,
        command: request.command,
        entrypoint: request.entrypoint,
        env: request.env,
        volumes: request.volumes.map(volumes).transpose()?,
        health: request.health,
        restart: request.restart,
        size: request.size,
        count: request.count,
        port: request.port.map(|p| p.map(port).transpose()).transpose()?,
        depends_on: request.depends_on.map(depends_on).transpose()?,
    };
    services.update(&auth.actor, &id, &name, patch).await?;
    Ok(Json(services.get(&auth.actor, &id, &name).await?.into()))
}

/// Delete a service: its containers stop and go. One owning a volume answers 409 unless
/// `deleteData=true`, which removes its volumes and their data too, after a `final`
/// backup of an add-on's data (a failed final backup keeps the add-on: 409).
#[utoipa::path(delete, path = "/v1/projects/{id}/services/{name}", tag = "services",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "service name"), DeleteQuery),
    responses((status = 204, description = "deleted"), (status = 409, description = "the service owns a volume (add deleteData=true), or comes from a compose file", body = super::error::ErrorBody)))]
async fn delete(
    auth: Auth<DeployScope>,
    State(backups): State<Backups>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let name = path_name(&name)?;
    // Through the backups: an add-on's data gets a final backup before it goes.
    backups
        .delete_service(&auth.actor, &id, &name, query.delete_data.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
