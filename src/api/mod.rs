//! The `/v1` API: axum on hyper. One module per resource; handlers parse, authorize, call
//! one domain function and render. Wire types (serde, camelCase) live only here.
//! Invariant: every route is registered through `utoipa_axum::routes!`, so the OpenAPI
//! document and the router are built from the same list and cannot drift apart.

pub mod account;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod build_secrets;
pub mod database;
pub mod deploys;
pub mod domains;
pub mod env;
pub mod error;
pub mod git;
pub mod images;
pub mod instances;
pub mod jobs;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod previews;
pub mod projects;
pub mod registries;
pub mod runs;
pub mod services;
pub mod state;
pub mod state_backups;
pub mod terminal;
pub mod tokens;
pub mod volumes;

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Extension, Router,
};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::ids;

pub use self::state::{ApiState, Handles};

use self::error::{error_response, REQUEST_ID};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// All routes with their OpenAPI descriptions, before state and middleware.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(openapi::router())
        .merge(account::router())
        .merge(projects::router())
        .merge(git::router())
        .merge(images::router())
        .merge(deploys::router())
        .merge(runs::router())
        .merge(jobs::router())
        .merge(services::router())
        .merge(env::router())
        .merge(build_secrets::router())
        .merge(domains::router())
        .merge(instances::router())
        .merge(terminal::router())
        .merge(previews::router())
        .merge(metrics::router())
        .merge(logs::router())
        .merge(volumes::router())
        .merge(database::router())
        .merge(backups::router())
        .merge(assets::router())
        .merge(registries::router())
        .merge(tokens::router())
        .merge(audit::router())
        .merge(state_backups::router())
}

/// The OpenAPI document of every route the router serves.
pub fn openapi_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let (_, mut document) = routes().split_for_parts();
        openapi::add_common_responses(&mut document);
        document
    });
    &DOCUMENT
}

/// The API service: routes, then (outermost last) body limit, the throttle of failed
/// token checks, error fallbacks, request id, access log and timeout, and panic catching.
/// The throttle belongs to this router: the daemon builds it once and serves the same
/// router on the API listener and on the console's hostname, so both count one client's
/// failures together.
pub fn router(app: ApiState) -> Router {
    let (router, _) = routes().split_for_parts();
    let max_body = app.config.api.max_body_bytes;
    let throttle = Arc::new(auth::AuthThrottle::new(
        app.config.api.auth_failures_per_minute,
    ));
    router
        .fallback(outside_the_routes)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(throttle))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            request_envelope,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("a request handler panicked");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has the detail".to_owned(),
            )
        }))
        .with_state(app)
}

/// A path no API route matches: under `/v1` the API's JSON 404; anywhere else the web
/// console, which owns every other path of this listener.
async fn outside_the_routes(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/v1" || path.starts_with("/v1/") {
        return route_not_found();
    }
    crate::console::respond(&method, path, &headers)
}

fn route_not_found() -> Response {
    let mut response = error_response(
        StatusCode::NOT_FOUND,
        "no such endpoint; GET /v1/openapi.json lists every endpoint".to_owned(),
    );
    // Lets the route-coverage test tell "no route" from "no such resource".
    response
        .headers_mut()
        .insert("x-cantila-route", HeaderValue::from_static("none"));
    response
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "this method is not allowed on this endpoint; GET /v1/openapi.json lists the methods"
            .to_owned(),
    )
}

/// Gives each request an id (kept from the client when well-formed), bounds its duration,
/// and writes one structured access-log line. Headers are never logged, so tokens
/// cannot leak into logs.
async fn request_envelope(State(app): State<ApiState>, request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| ids::new_id("req"));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(app.config.api.request_timeout_secs);

    let mut response = REQUEST_ID
        .scope(request_id.clone(), async move {
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the request took longer than {} s and was abandoned",
                        timeout.as_secs()
                    ),
                ),
            }
        })
        .await;

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let client = client.map(|c| c.to_string()).unwrap_or_default();
    tracing::info!(
        target: "cantila::access",
        request_id = %request_id, %method, %path, status, latency_ms, client = %client,
        "request"
    );
    response
}

/// `GET /v1/openapi.json`: the document with this server's configured integer bounds
/// written in (`openapi::ConfiguredBounds`), serialized once per set of bounds.
pub fn openapi_json(config: &crate::config::Config) -> Response {
    static BASE: LazyLock<serde_json::Value> =
        LazyLock::new(|| serde_json::to_value(openapi_document()).unwrap_or_default());
    static SERVED: Mutex<Option<(openapi::ConfiguredBounds, axum::body::Bytes)>> = Mutex::new(None);
    let bounds = openapi::ConfiguredBounds::of(config);
    let json = {
        let mut served = SERVED.lock().unwrap_or_else(PoisonError::into_inner);
        match served.as_ref() {
            Some((served_bounds, json)) if *served_bounds == bounds => json.clone(),
            _ => {
                let mut document = BASE.clone();
                openapi::apply_bounds(&mut document, bounds);
                let json = axum::body::Bytes::from(
                    serde_json::to_string_pretty(&document)
                        .unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}")),
                );
                *served = Some((bounds, json.clone()));
                json
            }
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}
