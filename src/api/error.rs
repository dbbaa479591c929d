//! HTTP errors: the one exhaustive mapping from domain errors to statuses, the JSON error
//! body, and extractors whose rejections use that body too.

use axum::{
    extract::{
        rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
        FromRequest, FromRequestParts,
    },
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

tokio::task_local! {
    /// The current request's id, so a 500 body can name it without threading it through
    /// every handler.
    pub static REQUEST_ID: String;
}

/// The body of every error response: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable machine-readable code such as `not_found` or `forbidden`.
    pub code: String,
    /// A sentence for people: what was wrong and what is accepted.
    pub message: String,
    /// Present on 500s: quote it when reporting the problem; the log has the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error as the API answers it.
#[derive(Debug)]
pub enum ApiError {
    /// A domain operation failed.
    Domain(Error),
    /// The HTTP layer refused the request before any domain code ran (bad JSON, wrong
    /// content type, body too large, no such route).
    Http { status: StatusCode, message: String },
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::Domain(err)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The one mapping from domain errors to HTTP statuses.
fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Store(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The stable code clients match on, derived from the status so the two cannot disagree.
pub fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        429 => "rate_limited",
        503 => "unavailable",
        507 => "insufficient_storage",
        504 => "timeout",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}

/// Renders an error body with the given status; 500s carry the request id.
pub fn error_response(status: StatusCode, message: String) -> Response {
    let request_id = if status.is_server_error() {
        REQUEST_ID.try_with(Clone::clone).ok()
    } else {
        None
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: code_of(status).to_owned(),
            message,
            request_id,
        },
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Http { status, message } => error_response(status, message),
            ApiError::Domain(err) => {
                let status = status_of(&err);
                let hidden = matches!(err, Error::Store(_) | Error::Internal(_));
                if hidden {
                    // The detail goes to the log only: it may name files or SQL.
                    tracing::error!(error = %err, "request failed");
                    return error_response(
                        status,
                        "internal error; the server log has the detail under this request id"
                            .to_owned(),
                    );
                }
                let mut response = error_response(status, err.to_string());
                match &err {
                    Error::RateLimited { retry_after_secs } => {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                    }
                    Error::Unauthenticated(_) => {
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    }
                    Error::Unavailable(_) => {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(5));
                    }
                    Error::StorageFull(_) => {
                        // The operator has to act; a client cannot fix this.
                        tracing::warn!(error = %err, "a write was refused: the data directory's disk is full");
                    }
                    Error::NotFound(_)
                    | Error::Conflict(_)
                    | Error::Invalid(_)
                    | Error::BadRequest(_)
                    | Error::Forbidden(_)
                    | Error::Store(_)
                    | Error::Internal(_) => {}
                }
                response
            }
        }
    }
}

/// A webhook delivery's raw body that could not be read (the git and registry webhooks
/// take the bytes, to verify them before parsing).
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the delivery is larger than the configured limit (api.max_body_bytes)".to_owned()
        } else {
            rejection.body_text()
        };
        ApiError::Http { status, message }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "the request body must be JSON with `Content-Type: application/json`".to_owned()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is larger than the configured limit (api.max_body_bytes)"
                    .to_owned()
            }
            _ => rejection.body_text(),
        };
        ApiError::Http { status, message }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Http {
            status: StatusCode::BAD_REQUEST,
            message: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Http {
            status: StatusCode::BAD_REQUEST,
            message: rejection.body_text(),
        }
    }
}

/// `axum::Json` whose rejections are `ApiError`s, and which takes only a JSON object:
/// serde would otherwise read a struct from an array of its fields in order, so
/// `[null, null]` would pass for `{"name": null, "runtime": null}`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        if !value.is_object() {
            return Err(ApiError::Http {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "the request body must be a JSON object".to_owned(),
            });
        }
        // The path names the field at fault (`pullRequest`, `processes.worker`), which
        // serde's own message leaves out.
        serde_path_to_error::deserialize(value)
            .map(Json)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let message = if path == "." {
                    format!("the request body does not match the expected shape: {inner}")
                } else {
                    format!("the request body does not match the expected shape: `{path}`: {inner}")
                };
                ApiError::Http {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    message,
                }
            })
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections are `ApiError`s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` whose rejections are `ApiError`s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A JSON body that may be absent: an empty body is `None`; anything else must be JSON
/// (`Content-Type: application/json`) of type `T`, with the same errors as `Json`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let has_body = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v != "0")
            .unwrap_or_else(|| request.headers().contains_key(header::TRANSFER_ENCODING));
        if !has_body {
            return Ok(Self(None));
        }
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(Some(value)))
    }
}
