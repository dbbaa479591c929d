//! The OpenAPI 3.1 document: base info, the bearer scheme, the shared error responses
//! added to every operation, and the route that serves the document.

use axum::{extract::State, response::Response};
use serde_json::{json, Value};
use utoipa::{
    openapi::{
        path::Operation,
        response::ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, OpenApi, Ref, RefOr,
    },
    OpenApi as _,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::api::ApiState;

use super::error::{ErrorBody, ErrorDetail};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Cantila API",
        description = "The /v1 API of Cantila, a self-hosted PaaS. Every endpoint but this \
            document requires `Authorization: Bearer sk_live_...`. Scopes are ordered \
            read < deploy < admin; each operation's security requirement names the least \
            scope it needs. Errors are always `{\"error\":{\"code\",\"message\"}}`."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "projects", description = "Projects are the unit Cantila deploys and runs."),
        (name = "deploys", description = "Deploys: build and release a project's source."),
        (name = "runs", description = "One-off runs of a command in a release's image."),
        (name = "jobs", description = "Scheduled jobs: a command run on a schedule, each firing a one-off run."),
        (name = "services", description = "Services: containers beside the app (datastores, queues), reached by name on the project's private network."),
        (name = "git", description = "The project's git connection and its webhook."),
        (name = "images", description = "The project's image source and its registry webhook."),
        (name = "env", description = "The project's environment variables."),
        (name = "build", description = "The project's build secrets (build settings are part of the project)."),
        (name = "domains", description = "Hostnames, aliases and their certificates."),
        (name = "instances", description = "Scaling and the running instances."),
        (name = "terminal", description = "Commands run inside running instances (exec), over a WebSocket."),
        (name = "previews", description = "Preview deployments of branches and pull requests."),
        (name = "metrics", description = "CPU, memory and request metrics; Prometheus exposition."),
        (name = "logs", description = "Runtime logs of the project's instances and its edge traffic."),
        (name = "registries", description = "The account's registry credentials, for image pulls."),
        (name = "tokens", description = "API tokens of the account."),
        (name = "audit", description = "The account's audit log."),
        (name = "account", description = "The calling token's account."),
        (name = "meta", description = "This document."),
    )
)]
struct ApiDoc;

pub fn base() -> OpenApi {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("sk_live_...")
                .build(),
        ),
    );
    document
}

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This OpenAPI document (no authentication).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(State(app): State<ApiState>) -> Response {
    super::openapi_json(&app.config)
}

/// Integer bounds that come from the config. The document a server serves states its
/// own values, so a client (or a schema fuzzer) reads the limits this server enforces
/// rather than the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfiguredBounds {
    /// The `limit` of every paginated list: `api.max_page_size`.
    pub max_page_size: u32,
    /// The `limit` of the runtime logs: `logs.max_limit`.
    pub max_log_lines: u32,
    /// Instances of one process type: `scale.max_instances`.
    pub max_instances: u32,
}

impl ConfiguredBounds {
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            max_page_size: config.api.max_page_size,
            max_log_lines: config.logs.max_limit,
            max_instances: config.scale.max_instances,
        }
    }
}

/// The operation whose `limit` counts log lines rather than a page's items.
const LOGS_PATH: &str = "/v1/projects/{id}/logs";
/// The request body whose instance counts are bounded by `scale.max_instances`.
const SCALE_SCHEMA: &str = "Scale";

/// Writes `bounds` into the document (as JSON): every query `limit` and the instance
/// counts of `Scale`. Returns how many places were written, so a test notices when a
/// renamed parameter or schema would leave the document's default standing.
pub fn apply_bounds(document: &mut Value, bounds: ConfiguredBounds) -> usize {
    let mut written = 0;
    if let Some(paths) = document
        .pointer_mut("/paths")
        .and_then(Value::as_object_mut)
    {
        for (path, item) in paths.iter_mut() {
            let maximum = if path == LOGS_PATH {
                bounds.max_log_lines
            } else {
                bounds.max_page_size
            };
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let Some(parameters) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                for parameter in parameters {
                    if parameter["in"] == "query" && parameter["name"] == "limit" {
                        set_range(&mut parameter["schema"], 1, maximum);
                        written += 1;
                    }
                }
            }
        }
    }
    for pointer in [
        format!("/components/schemas/{SCALE_SCHEMA}/properties/instances"),
        format!("/components/schemas/{SCALE_SCHEMA}/properties/processes/additionalProperties"),
    ] {
        if let Some(count) = document.pointer_mut(&pointer) {
            set_range(count, 0, bounds.max_instances);
            written += 1;
        }
    }
    written
}

/// An integer schema's range, with the narrowest format that holds it.
fn set_range(schema: &mut Value, minimum: u32, maximum: u32) {
    schema["minimum"] = json!(minimum);
    schema["maximum"] = json!(maximum);
    schema["format"] = json!(if i32::try_from(maximum).is_ok() {
        "int32"
    } else {
        "int64"
    });
}

/// Adds the error responses every operation can give, so each lists its full contract
/// without repeating it in every `#[utoipa::path]`.
pub fn add_common_responses(document: &mut OpenApi) {
    for item in document.paths.paths.values_mut() {
        // (operation, whether it writes to the store)
        let operations = [
            (&mut item.get, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, true),
        ];
        for (operation, writes) in operations {
            let Some(operation) = operation else {
                continue;
            };
            let authenticated = operation
                .security
                .as_ref()
                .is_some_and(|requirements| !requirements.is_empty());
            let add = |operation: &mut Operation, status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error_response(description));
            };
            add(
                operation,
                "400",
                "malformed request (bad query, path or JSON syntax)",
            );
            add(
                operation,
                "500",
                "internal error; the body carries a request id",
            );
            if authenticated {
                add(operation, "401", "missing, unknown or revoked token");
                add(
                    operation,
                    "403",
                    "the token lacks the scope this operation needs",
                );
                add(operation, "404", "no such resource in this account");
                add(
                    operation,
                    "429",
                    "too many failed token checks from this address; see Retry-After",
                );
            }
            if writes {
                add(
                    operation,
                    "507",
                    "the data directory's disk is full; nothing was changed",
                );
            }
            if operation.request_body.is_some() {
                add(operation, "413", "body larger than api.max_body_bytes");
                add(operation, "415", "body is not application/json");
                add(
                    operation,
                    "422",
                    "a field failed validation; the message says which",
                );
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::response::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_bounds_reach_every_limit_and_instance_count() {
        let mut document = serde_json::to_value(super::super::openapi_document()).unwrap();
        let bounds = ConfiguredBounds {
            max_page_size: 123,
            max_log_lines: 4567,
            max_instances: 89,
        };
        let written = apply_bounds(&mut document, bounds);
        let range = |pointer: &str| {
            let schema = document
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{pointer}"));
            (
                schema["minimum"].as_u64(),
                schema["maximum"].as_u64(),
                schema["format"].as_str(),
            )
        };
        let scale = "/components/schemas/Scale/properties";
        assert_eq!(
            range(&format!("{scale}/instances")),
            (Some(0), Some(89), Some("int32"))
        );
        assert_eq!(
            range(&format!("{scale}/processes/additionalProperties")),
            (Some(0), Some(89), Some("int32"))
        );
        let mut limits = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for operation in item.as_object().unwrap().values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "query" && parameter["name"] == "limit" {
                        limits.push((path.as_str(), parameter["schema"]["maximum"].as_u64()));
                    }
                }
            }
        }
        assert!(limits.contains(&(LOGS_PATH, Some(4567))), "{limits:?}");
        assert!(limits.contains(&("/v1/projects", Some(123))), "{limits:?}");
        assert!(
            limits
                .iter()
                .all(|(path, max)| *max == Some(if *path == LOGS_PATH { 4567 } else { 123 })),
            "{limits:?}"
        );
        assert_eq!(written, limits.len() + 2);

        // A bound past i32 is documented as int64, never as an int32 it does not fit.
        let mut document = serde_json::to_value(super::super::openapi_document()).unwrap();
        apply_bounds(
            &mut document,
            ConfiguredBounds {
                max_instances: u32::MAX,
                ..bounds
            },
        );
        assert_eq!(
            document.pointer(&format!("{scale}/instances")).unwrap()["format"],
            "int64"
        );
    }
}
