//! The server's errors: [`ServeError`] (the server could not start or run) and the API errors
//! every request may answer with (statuses by error class, bodies as [`ErrorBody`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use engine::ApplyError;

use crate::api::{ErrorBody, ErrorDetail};
use crate::RequestId;

/// Why the server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening address could not be bound.
    #[error("could not listen on {address}")]
    Bind {
        /// The address asked for.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("could not read the listening address")]
    LocalAddr(#[source] std::io::Error),
    /// The async runtime could not be started.
    #[error("could not start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The thread that follows `HEAD` for the event streams could not be started.
    #[error("could not start the thread that follows HEAD")]
    Follower(#[source] std::io::Error),
}

/// An API error: a status and `{"error": {"code", "message", "request_id"}}`.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    /// The full error for the server's log (5xx: the client only gets the class).
    pub(crate) log: Option<String>,
    /// Sent as `WWW-Authenticate` (a 401).
    pub(crate) challenge: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            log: None,
            challenge: false,
        }
    }

    /// A failure of the server itself: the client learns its class (503: retry later; 500),
    /// never its details (they may name files); the log has them.
    pub(crate) fn internal(err: &(dyn std::error::Error + 'static)) -> ApiError {
        let detail = error_text(err);
        let (status, code, message) = if is_transient(err) {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the depot is busy (locked by another writer) or out of resources; retry later",
            )
        } else if has_io_error(err) {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
                "the server could not read or write the depot; its log has the details",
            )
        } else {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server failed; its log has the details",
            )
        };
        ApiError {
            log: Some(detail),
            ..ApiError::new(status, code, message)
        }
    }

    /// The error body, with the request's id.
    pub(crate) fn body(&self, id: RequestId) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.clone(),
                message: self.message.clone(),
                request_id: id.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The body is written by `guard`, which knows the request id.
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// An error and its causes on one line, as the CLI prints them.
pub(crate) fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let part = err.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = err.source();
    }
    text
}

fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

fn has_io_error(err: &(dyn std::error::Error + 'static)) -> bool {
    causes(err).any(|e| e.is::<std::io::Error>())
}

/// An I/O failure that may pass: out of space, descriptors or memory, a busy or timed-out
/// resource; or the depot lock held by another writer past the lock timeout.
fn is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    causes(err).any(|e| {
        if let Some(depot::Error::Refs(depot::refdb::Error::Locked { .. })) =
            e.downcast_ref::<depot::Error>()
        {
            return true;
        }
        if matches!(
            e.downcast_ref::<depot::refdb::Error>(),
            Some(depot::refdb::Error::Locked { .. })
        ) {
            return true;
        }
        let Some(io) = e.downcast_ref::<std::io::Error>() else {
            return false;
        };
        matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) || io.raw_os_error().is_some_and(|code| {
            [
                libc::ENOSPC,
                libc::EDQUOT,
                libc::EAGAIN,
                libc::EBUSY,
                libc::ETIMEDOUT,
                libc::EMFILE,
                libc::ENFILE,
                libc::ENOMEM,
            ]
            .contains(&code)
        })
    })
}

/// The HTTP answer for a depot failure, by its class (docs/errors.md): 409, 404, 400, 503 for
/// retryable ones, 500 for damage and the rest (whose details only the log gets).
pub(crate) fn depot_error(err: &depot::Error) -> ApiError {
    use depot::ErrorClass;
    let message = err.to_string();
    match err {
        depot::Error::Batch(inner) => return depot_error(inner),
        // Asked for by id and not there: the request's problem, not the depot's.
        depot::Error::MissingObject { .. } => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
        }
        _ => {}
    }
    let class = err.class();
    let status = status(class);
    match class {
        ErrorClass::Conflict | ErrorClass::NotFound | ErrorClass::Invalid | ErrorClass::Rejected => {
            ApiError::new(status, status_code_name(status), message)
        }
        ErrorClass::Unavailable => ApiError {
            log: Some(error_text(err)),
            ..ApiError::new(
                status,
                "unavailable",
                "the depot is busy (locked by another writer) or out of resources; retry later",
            )
        },
        ErrorClass::Corrupt => ApiError {
            log: Some(error_text(err)),
            ..ApiError::new(
                status,
                "corrupt",
                "stored data is damaged; the server's log has the details ('retro fsck' lists every problem)",
            )
        },
        _ => ApiError::internal(err),
    }
}

/// The HTTP status of each error class: the table in docs/errors.md, which a test reads.
pub fn status(class: depot::ErrorClass) -> StatusCode {
    use depot::ErrorClass;
    match class {
        ErrorClass::Invalid => StatusCode::BAD_REQUEST,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Corrupt | ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<depot::Error> for ApiError {
    fn from(err: depot::Error) -> Self {
        depot_error(&err)
    }
}

/// The HTTP answer for an event that cannot be upcast: 500 `unknown_event_version` for an event
/// newer than the domain knows (or with no step from its version), 502 `upcaster_failed` for a
/// failing step (as for a failing handler). Their messages name the event, not files.
pub(crate) fn upcast_error(err: &engine::UpcastError) -> ApiError {
    let message = err.to_string();
    match err {
        engine::UpcastError::StepFailed { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "upcaster_failed", message)
        }
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown_event_version",
            message,
        ),
    }
}

impl From<engine::projection::ProjectionError> for ApiError {
    fn from(err: engine::projection::ProjectionError) -> Self {
        match err {
            engine::projection::ProjectionError::Depot(e) => depot_error(&e),
            e => {
                let class = e.class();
                ApiError::new(
                    status(class),
                    status_code_name(status(class)),
                    e.to_string(),
                )
            }
        }
    }
}

impl From<engine::UpcastError> for ApiError {
    fn from(err: engine::UpcastError) -> Self {
        upcast_error(&err)
    }
}

impl From<crate::api::UpcastReadError> for ApiError {
    fn from(err: crate::api::UpcastReadError) -> Self {
        match err {
            crate::api::UpcastReadError::Depot(e) => depot_error(&e),
            crate::api::UpcastReadError::Upcast(e) => upcast_error(&e),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(err: ApplyError) -> Self {
        ApiError::of_apply(&err)
    }
}

impl ApiError {
    /// The answer for an engine failure: its status, code and message.
    pub(crate) fn of_apply(err: &ApplyError) -> ApiError {
        let message = err.to_string();
        match err {
            ApplyError::Command(_) | ApplyError::BadSession(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_command", message)
            }
            ApplyError::Resolve(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_command", message)
            }
            ApplyError::SessionRequired { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "session_required",
                message,
            ),
            ApplyError::Rejected { error, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                &error.code,
                error.message.clone(),
            ),
            ApplyError::Handler { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "handler_failed", message)
            }
            ApplyError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ApplyError::CommandIdReused { .. } => {
                ApiError::new(StatusCode::CONFLICT, "command_id_reused", message)
            }
            ApplyError::UnknownSession(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_session", message)
            }
            ApplyError::Depot(e) => depot_error(e),
            ApplyError::Upcast(e) => upcast_error(e),
            other => ApiError::internal(other),
        }
    }
}

/// The machine-readable code `POST /apply` answers an engine failure with (`bad_command`,
/// `unknown_command`, `insufficient_funds`, `handler_failed`, `conflict`, `unavailable`, …): the
/// `code` of its [`ErrorBody`](crate::api::ErrorBody). `retro apply --batch --json` reports its
/// failed lines with the same codes.
pub fn apply_error_code(err: &ApplyError) -> String {
    ApiError::of_apply(err).code
}

/// The error code of a status without a more specific one (axum's own rejections).
pub(crate) fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}
