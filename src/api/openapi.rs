//! The OpenAPI 3.1 document: base info, the bearer scheme, the shared error responses
//! added to every operation, and the route that serves the document.

use axum::response::Response;
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

use crate::state::AppState;

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
        (name = "git", description = "The project's git connection and its webhook."),
        (name = "env", description = "The project's environment variables."),
        (name = "domains", description = "Hostnames, aliases and their certificates."),
        (name = "instances", description = "Scaling and the running instances."),
        (name = "previews", description = "Preview deployments of branches and pull requests."),
        (name = "metrics", description = "CPU, memory and request metrics; Prometheus exposition."),
        (name = "logs", description = "Runtime logs of the project's instances and its edge traffic."),
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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This OpenAPI document (no authentication).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json() -> Response {
    super::openapi_json()
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
