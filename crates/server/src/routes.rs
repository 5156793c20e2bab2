//! The endpoints: one table ([`routes`]) that the router is built from and the OpenAPI document
//! is checked against, and the handlers, each documented with `#[utoipa::path]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use utoipa::IntoParams;

use depot::{HistoryOrder, ObjectId, RefName};

use crate::api::{
    Applied, CheckpointSummary, CheckpointView, ConsumerStatus, Delivered, EventEntry, Health,
    ObjectView, PartitionEntry, RefEntry, Stats,
};
use crate::auth::Class;
use crate::error::{status_code_name, ApiError};
use crate::metrics::Outcome;
use crate::{stopped, AppState, RequestId};

/// The most checkpoints or events one listing returns.
pub(crate) const MAX_LISTING: usize = 10_000;
/// The most checkpoints one event stream reads per blocking task.
const SSE_BATCH: usize = 64;

/// One endpoint: its method, path (axum's and OpenAPI's `{param}` syntax), class, whether
/// `request_timeout` bounds it, and its handler.
pub(crate) struct Route {
    /// The handler's method (the router takes it from the handler; the OpenAPI check reads it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) class: Class,
    pub(crate) timed: bool,
    pub(crate) handler: MethodRouter<AppState>,
}

fn route(
    method: Method,
    path: &'static str,
    class: Class,
    timed: bool,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        class,
        timed,
        handler,
    }
}

/// Every endpoint. Not timed: the UI (static), `/watch` (a stream) and `/apply` (answered with
/// its outcome; only its body read is timed).
pub(crate) fn routes() -> Vec<Route> {
    use Class::{Admin, Read, Write};
    vec![
        route(Method::GET, "/", Read, false, get(index)),
        route(Method::GET, "/openapi.json", Read, false, get(openapi)),
        route(Method::GET, "/health", Read, true, get(health)),
        route(Method::POST, "/apply", Write, false, post(apply)),
        route(Method::GET, "/refs", Read, true, get(refs)),
        route(Method::GET, "/log", Read, true, get(log)),
        route(Method::GET, "/objects/{id}", Read, true, get(object)),
        route(
            Method::GET,
            "/checkpoints/{rev}",
            Read,
            true,
            get(checkpoint),
        ),
        route(Method::GET, "/partitions", Read, true, get(partitions)),
        route(Method::GET, "/events", Read, true, get(events)),
        route(Method::GET, "/watch", Read, false, get(watch)),
        route(Method::GET, "/metrics", Read, true, get(metrics)),
        route(Method::GET, "/failed", Read, true, get(failed)),
        route(Method::GET, "/projections", Read, true, get(projections)),
        route(
            Method::GET,
            "/branches",
            Read,
            true,
            get(crate::branches::list_branches),
        ),
        route(
            Method::POST,
            "/branches",
            Write,
            true,
            post(crate::branches::create_branch),
        ),
        // A merge may replay commands through handlers: answered with its outcome, as /apply.
        route(
            Method::POST,
            "/merge",
            Write,
            false,
            post(crate::branches::merge),
        ),
        route(Method::GET, "/groups", Read, true, get(groups)),
        route(Method::GET, "/groups/{name}", Read, true, get(group)),
        route(Method::GET, "/admin/stats", Admin, true, get(stats)),
        route(Method::POST, "/redact", Admin, true, post(redact)),
    ]
}

/// A malformed query string, answered as a JSON 400 like every other error.
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        rejection.body_text(),
    )
}

/// `upcast` is for `/events` only: elsewhere it would be silently ignored, so it is refused.
fn refuse_upcast(query: &GlobQuery, route: &str) -> Result<(), ApiError> {
    match query.upcast {
        None => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{route} takes no 'upcast' parameter: it serves the stored events (upcast reads are GET /events and GET /checkpoints/{{rev}})"),
        )),
    }
}

/// Runs blocking depot work on tokio's blocking pool, at most `readers` at once.
pub(crate) async fn read<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = state.readers.clone().acquire_owned().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
}

// ---------------------------------------------------------------------------------------------
// The UI, the document, health.

/// The read-only web UI.
#[utoipa::path(get, path = "/", tag = "read",
    responses((status = 200, description = "The web UI", content_type = "text/html", body = String)))]
async fn index() -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "read",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object)))]
async fn openapi(State(state): State<AppState>) -> Response {
    let mut response = state.openapi.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The server answers, and where `HEAD` is.
#[utoipa::path(get, path = "/health", tag = "read",
    responses((status = 200, body = Health), (status = "default", body = crate::api::ErrorBody)))]
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let depot = state.depot.clone();
    let head = read(&state, move || Ok(depot.head()?)).await?;
    Ok(Json(Health {
        status: "ok".to_owned(),
        head: head.map(|h| h.to_string()),
    }))
}

/// The depot's counts: refs, objects, partitions, events (reads every object id).
#[utoipa::path(get, path = "/admin/stats", tag = "admin",
    responses((status = 200, body = Stats), (status = "default", body = crate::api::ErrorBody)))]
async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let depot = state.depot.clone();
    Ok(Json(read(&state, move || Ok(Stats::read(&depot)?)).await?))
}

/// Redacts events (or checkpoints' commands): their data is erased from every file of the
/// depot before the answer, every id stays valid, and a redaction checkpoint records it
/// (docs/redaction.md). Every id is checked before anything is written.
#[utoipa::path(post, path = "/redact", tag = "admin",
    request_body(content = crate::api::RedactRequest, content_type = "application/json"),
    params(("X-Retro-Session" = Option<String>, Header, description = "The session (default `http`)")),
    responses(
        (status = 200, description = "Redacted (ids redacted already are listed as such)", body = crate::api::Redacted),
        (status = 400, description = "Malformed body, a bad reason or id, an object that is not redactable", body = crate::api::ErrorBody),
        (status = 404, description = "An id names no object: nothing was written", body = crate::api::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::api::ErrorBody),
        (status = 503, description = "The depot lock is busy: retry", body = crate::api::ErrorBody),
    ))]
async fn redact(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<crate::api::Redacted>, ApiError> {
    check_json(&headers)?;
    let session = session(&headers)?;
    let request: crate::api::RedactRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("POST /redact takes {{\"events\": [ids], \"reason\": text}}: {e}"),
        )
    })?;
    let depot = state.depot.clone();
    read(&state, move || {
        let ids = request
            .events
            .iter()
            .map(|name| depot.resolve_revision(name))
            .collect::<Result<Vec<_>, _>>()?;
        let report = depot.redact(&ids, &request.reason, &session)?;
        Ok(Json(crate::api::Redacted::new(&report)))
    })
    .await
}

/// The server's metrics in the Prometheus text format (version 0.0.4): this process's counters
/// and each durable consumer's and consumer group's lag, read from the depot now.
#[utoipa::path(get, path = "/metrics", tag = "read",
    responses(
        (status = 200, description = "The Prometheus text exposition format, version 0.0.4 (docs/http.md lists every metric)",
            content_type = "text/plain; version=0.0.4", body = String),
        (status = "default", body = crate::api::ErrorBody)))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let depot = state.depot.clone();
    let engine = state.engine.clone();
    let (consumers, projections, groups) = read(&state, move || {
        Ok((
            ConsumerStatus::read_all(&depot)?,
            crate::api::ProjectionView::read_all(&engine)?,
            crate::api::GroupStatusBody::read_all(&depot)?,
        ))
    })
    .await?;
    let mut text = state.metrics.render_with(&consumers, &projections);
    text.push_str(&crate::metrics::render_groups(&groups));
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

// ---------------------------------------------------------------------------------------------
// Writes.

/// `Content-Type: application/json` (parameters allowed). Anything else is refused: the types a
/// browser may send cross-origin without asking (text/plain, forms, none at all) included.
fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    require_json(headers, "POST /apply")
}

/// [`check_json`] for the route named `route` (`POST /merge`), which its refusal names.
pub(crate) fn require_json(headers: &HeaderMap, route: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = given
        .as_deref()
        .map(|t| t.split(';').next().unwrap_or_default().trim());
    if essence.is_some_and(|t| t.eq_ignore_ascii_case("application/json")) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        match given {
            Some(t) => format!(
                "{route} takes 'Content-Type: application/json', not '{}'",
                t.escape_debug()
            ),
            None => format!("{route} takes 'Content-Type: application/json' (none was given)"),
        },
    ))
}

/// `X-Retro-Session`, default `http`; a value that is not visible ASCII is refused.
pub(crate) fn session(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("x-retro-session") {
        None => Ok("http".to_owned()),
        Some(value) => value.to_str().map(str::to_owned).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_command",
                "X-Retro-Session must be a session id: letters, digits, '-', '_' or '.' (it is not ASCII)",
            )
        }),
    }
}

/// Applies a command. Answered with its outcome, however long it takes (only reading the body
/// is timed).
#[utoipa::path(post, path = "/apply", tag = "write",
    request_body(content = crate::api::Command, content_type = "application/json"),
    params(
        ("X-Retro-Session" = Option<String>, Header, description = "The session (default `http`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "The command id: applied once; a repeat answers the original checkpoint with `Idempotent-Replayed: true`"),
        ("X-Correlation-Id" = Option<String>, Header, description = "The correlation id kept in the checkpoint"),
        ("X-Causation-Id" = Option<String>, Header, description = "The causation id kept in the checkpoint"),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context: its trace id is the correlation id and its parent id the causation id, unless given otherwise"),
    ),
    responses(
        (status = 201, description = "Applied", body = Applied),
        (status = 200, description = "The handler emitted nothing: nothing written", body = crate::api::NothingWritten),
        (status = 400, description = "Malformed command, bad session, unknown command", body = crate::api::ErrorBody),
        (status = 401, description = "A token is required", body = crate::api::ErrorBody),
        (status = 403, description = "Host not allowed, or a token of a lower class", body = crate::api::ErrorBody),
        (status = 408, description = "The body did not arrive in time; nothing was applied", body = crate::api::ErrorBody),
        (status = 409, description = "The aggregate kept changing, or the command id was applied by another command", body = crate::api::ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = crate::api::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::api::ErrorBody),
        (status = 422, description = "Rejected by the domain, or a live session is required", body = crate::api::ErrorBody),
        (status = 500, description = "The server failed (class and request id only)", body = crate::api::ErrorBody),
        (status = 502, description = "The handler failed", body = crate::api::ErrorBody),
        (status = 503, description = "Busy or out of resources: retry", body = crate::api::ErrorBody),
    ))]
async fn apply(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    check_json(headers)?;
    let session = session(headers)?;
    let header_ids = crate::command_ids::from_headers(headers)?;
    // Only reading the body is timed: nothing has happened yet, so a 408 is the truth.
    let body = match tokio::time::timeout(state.request_timeout, Bytes::from_request(request, &()))
        .await
    {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {} s; nothing was applied",
                    state.request_timeout.as_secs()
                ),
            ))
        }
        Ok(Err(rejection)) => {
            let status = rejection.status();
            return Err(ApiError::new(
                status,
                status_code_name(status),
                rejection.body_text(),
            ));
        }
        Ok(Ok(body)) => body,
    };
    let permit = state.appliers.clone().acquire_owned().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    // The apply runs to its outcome even if this request is dropped (the client left): its
    // commit is bounded by the handler's timeout and the depot's lock timeout, not by ours.
    let engine = state.engine.clone();
    let metrics = state.metrics.clone();
    // A child of the request's span; entered on the blocking thread.
    let span = tracing::info_span!(
        "apply",
        path = tracing::field::Empty,
        command = tracing::field::Empty,
        session = session.as_str(),
        checkpoint = tracing::field::Empty,
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let (tx, rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let entered = span.enter();
        let started = std::time::Instant::now();
        let outcome = engine::Command::parse(&body)
            .and_then(|command| command.with_ids(header_ids.explicit))
            .map(|command| command.or_ids(header_ids.ambient))
            .map_err(engine::ApplyError::from)
            .and_then(|command| {
                span.record("path", command.path());
                span.record("command", command.name());
                engine.apply_command(&session, command)
            });
        let elapsed = started.elapsed();
        let counted = Outcome::of(&outcome);
        metrics.apply(counted, elapsed);
        span.record("outcome", tracing::field::display(counted.as_str()));
        if let Ok(applied) = &outcome {
            span.record("checkpoint", tracing::field::display(&applied.checkpoint));
            span.record("attempts", applied.attempts);
        }
        tracing::debug!(
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "applied"
        );
        // The span ends before the answer leaves: a client that stops the server as soon as it
        // has its answer still finds the span among those flushed at exit.
        drop(entered);
        drop(span);
        if let Err(Ok(applied)) = tx.send(outcome) {
            tracing::warn!(
                "request {id}: the client left before the answer; its command was applied as {}",
                applied.checkpoint
            );
        }
    });
    let applied = match rx.await.map_err(|e| ApiError::internal(&e))? {
        Ok(applied) => applied,
        // The handler emitted nothing: a success that wrote nothing, said so in the body.
        Err(err) => match crate::api::NothingWritten::from_error(&err) {
            Some(body) => return Ok((StatusCode::OK, Json(body)).into_response()),
            None => return Err(err.into()),
        },
    };
    let mut response = (StatusCode::CREATED, Json(Applied::from(&applied))).into_response();
    if applied.replayed {
        response.headers_mut().insert(
            crate::command_ids::REPLAYED_HEADER,
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Reads.

/// Every projection the server's domain manifest declares or the depot has state for, by name,
/// as `retro project status --json` gives them (docs/http.md).
#[utoipa::path(get, path = "/projections", tag = "read",
    responses((status = 200, body = Vec<crate::api::ProjectionView>), (status = "default", body = crate::api::ErrorBody)))]
pub(crate) async fn projections(
    State(state): State<AppState>,
) -> Result<Json<Vec<crate::api::ProjectionView>>, ApiError> {
    let engine = state.engine.clone();
    let views = read(&state, move || {
        Ok(crate::api::ProjectionView::read_all(&engine)?)
    })
    .await?;
    Ok(Json(views))
}

/// Every consumer group: its members, slots, positions and lag (`retro group status --json`).
#[utoipa::path(get, path = "/groups", tag = "read",
    responses((status = 200, body = Vec<crate::api::GroupStatusBody>), (status = "default", body = crate::api::ErrorBody)))]
async fn groups(
    State(state): State<AppState>,
) -> Result<Json<Vec<crate::api::GroupStatusBody>>, ApiError> {
    let depot = state.depot.clone();
    let groups = read(&state, move || {
        Ok(crate::api::GroupStatusBody::read_all(&depot)?)
    })
    .await?;
    Ok(Json(groups))
}

/// One consumer group (`retro group status NAME --json`); 404 when there is none of that name.
#[utoipa::path(get, path = "/groups/{name}", tag = "read",
    params(("name" = String, Path, description = "The group's name")),
    responses(
        (status = 200, body = crate::api::GroupStatusBody),
        (status = 400, description = "Not a valid group name", body = crate::api::ErrorBody),
        (status = 404, description = "No such group", body = crate::api::ErrorBody),
        (status = "default", body = crate::api::ErrorBody)))]
async fn group(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<crate::api::GroupStatusBody>, ApiError> {
    let depot = state.depot.clone();
    let status = read(&state, move || {
        Ok(crate::api::GroupStatusBody::from(
            &depot.group_status(&name)?,
        ))
    })
    .await?;
    Ok(Json(status))
}

/// The recorded failed commands (rejected or broken), oldest first, as `retro failed --json`
/// gives them; one whose checkpoint cannot be read is left out (and logged).
#[utoipa::path(get, path = "/failed", tag = "read",
    responses((status = 200, body = Vec<crate::api::FailedEntry>), (status = "default", body = crate::api::ErrorBody)))]
async fn failed(
    State(state): State<AppState>,
) -> Result<Json<Vec<crate::api::FailedEntry>>, ApiError> {
    let depot = state.depot.clone();
    let entries = read(&state, move || {
        let mut out = Vec::new();
        for id in depot.failures()? {
            match crate::api::FailedEntry::read(&depot, &id) {
                Ok(entry) => out.push(entry),
                Err(e) => tracing::warn!("failed command {id} is unreadable: {e}"),
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(entries))
}

/// Every ref, `HEAD` included.
#[utoipa::path(get, path = "/refs", tag = "read",
    responses((status = 200, body = Vec<RefEntry>), (status = "default", body = crate::api::ErrorBody)))]
async fn refs(State(state): State<AppState>) -> Result<Json<Vec<RefEntry>>, ApiError> {
    let depot = state.depot.clone();
    let refs = read(&state, move || Ok(depot.list_refs("")?)).await?;
    Ok(Json(
        refs.iter()
            .map(|(name, value)| RefEntry::new(name, value))
            .collect(),
    ))
}

/// `GET /log`'s parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Where to start (default `HEAD`).
    rev: Option<String>,
    /// How many (default 50, at most 10,000).
    n: Option<usize>,
    /// Only checkpoints touching partitions matching this glob.
    partition: Option<String>,
}

/// Checkpoints, newest first, along first parents.
#[utoipa::path(get, path = "/log", tag = "read", params(LogQuery),
    responses((status = 200, body = Vec<CheckpointSummary>), (status = "default", body = crate::api::ErrorBody)))]
async fn log(
    State(state): State<AppState>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<Vec<CheckpointSummary>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let depot = state.depot.clone();
    let list = read(&state, move || {
        let start = match &query.rev {
            Some(rev) => Some(depot.resolve_revision(rev)?),
            None => depot.head()?,
        };
        let limit = query.n.unwrap_or(50).min(MAX_LISTING);
        let mut out = Vec::new();
        if let Some(start) = start {
            depot.walk(start, HistoryOrder::FirstParent, |id, checkpoint| {
                if out.len() >= limit {
                    return Ok(false);
                }
                if let Some(glob) = &query.partition {
                    if !depot.checkpoint_touches(checkpoint, glob)? {
                        return Ok(true);
                    }
                }
                let affix = depot.read_affix(&checkpoint.affix())?;
                out.push(CheckpointSummary::new(&id, checkpoint, Some(&affix)));
                Ok(true)
            })?;
        }
        Ok(out)
    })
    .await?;
    Ok(Json(list))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// An object: its raw bytes, or decoded with `Accept: application/json`.
#[utoipa::path(get, path = "/objects/{id}", tag = "read",
    params(("id" = String, Path, description = "An id, a unique prefix (at least 4 hex digits) or a revision")),
    responses(
        (status = 200, content(
            (ObjectView = "application/json"),
            (Vec<u8> = "application/octet-stream"))),
        (status = "default", body = crate::api::ErrorBody)))]
async fn object(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let depot = state.depot.clone();
    let json = wants_json(&headers);
    read(&state, move || {
        let id: ObjectId = depot.resolve_revision(&name)?;
        if json {
            // Events resolved: a sealed event with its data, a redacted one with its tombstone.
            let decoded = depot.read_resolved(&id)?;
            return Ok(Json(ObjectView::new(&id, &decoded)).into_response());
        }
        let object = depot.read_object(&id)?;
        Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            object.into_bytes(),
        )
            .into_response())
    })
    .await
}

/// A checkpoint with its events.
#[utoipa::path(get, path = "/checkpoints/{rev}", tag = "read",
    params(("rev" = String, Path, description = "A revision: `HEAD`, `master~2`, an id or a prefix"), CheckpointQuery),
    responses((status = 200, body = CheckpointView), (status = "default", body = crate::api::ErrorBody)))]
async fn checkpoint(
    State(state): State<AppState>,
    UrlPath(rev): UrlPath<String>,
    query: Result<Query<CheckpointQuery>, QueryRejection>,
) -> Result<Json<CheckpointView>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let depot = state.depot.clone();
    let engine = state.engine.clone();
    read(&state, move || {
        let id = depot.resolve_revision(&rev)?;
        if query.upcast.unwrap_or(false) {
            let upcasters = engine.manifest().upcasters();
            return Ok(Json(CheckpointView::read_upcast(&depot, &id, upcasters)?));
        }
        Ok(Json(CheckpointView::read(&depot, &id)?))
    })
    .await
}

/// The parameters of `GET /partitions`, `GET /events` and `GET /watch`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GlobQuery {
    /// Partitions matching this glob (`*` within a segment, `**` across; default `**`).
    glob: Option<String>,
    /// After this revision (`/events`); `start` or a checkpoint id (`/watch`).
    since: Option<String>,
    /// The most events (`/events`: default 1000, at most 10,000).
    limit: Option<usize>,
    /// `/events`: the events as the domain reads them, upcast to their newest schema version
    /// (each changed one with `upcast`: the stored name and version). Default false.
    upcast: Option<bool>,
}

/// The parameters of `GET /checkpoints/{rev}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CheckpointQuery {
    /// The events as the domain reads them, upcast to their newest schema version. Default
    /// false.
    upcast: Option<bool>,
}

/// Partitions and their event counts.
#[utoipa::path(get, path = "/partitions", tag = "read", params(GlobQuery),
    responses((status = 200, body = Vec<PartitionEntry>), (status = "default", body = crate::api::ErrorBody)))]
async fn partitions(
    State(state): State<AppState>,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Json<Vec<PartitionEntry>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    refuse_upcast(&query, "/partitions")?;
    let depot = state.depot.clone();
    let list = read(&state, move || {
        Ok(depot
            .partitions(query.glob.as_deref().unwrap_or("**"))?
            .into_iter()
            .take(MAX_LISTING)
            .map(|(p, events)| PartitionEntry {
                snapshot: crate::api::SnapshotEntry::newest(&depot, &p),
                partition: p.to_string(),
                events,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(list))
}

/// Events, oldest first.
#[utoipa::path(get, path = "/events", tag = "read", params(GlobQuery),
    responses((status = 200, body = Vec<EventEntry>), (status = "default", body = crate::api::ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Json<Vec<EventEntry>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let depot = state.depot.clone();
    let engine = state.engine.clone();
    let list = read(&state, move || {
        let upcasters = query
            .upcast
            .unwrap_or(false)
            .then(|| engine.manifest().upcasters());
        let mut upcast_failure = None;
        let since = query
            .since
            .as_deref()
            .map(|rev| depot.resolve_revision(rev))
            .transpose()?;
        let limit = query.limit.unwrap_or(1000).min(MAX_LISTING);
        let mut out = Vec::new();
        // The glob and `since` are checked even for `limit=0`, which answers `[]`.
        depot.events_matching(query.glob.as_deref().unwrap_or("**"), since, |record| {
            if out.len() >= limit {
                return Ok(false);
            }
            match upcasters {
                // An upcast event may be several: the limit counts entries.
                Some(upcasters) => match EventEntry::upcast(&record, upcasters) {
                    Ok(entries) => {
                        out.extend(entries);
                        out.truncate(limit);
                    }
                    Err(e) => {
                        upcast_failure = Some(e);
                        return Ok(false);
                    }
                },
                None => out.push(EventEntry::from(&record)),
            }
            Ok(out.len() < limit)
        })?;
        if let Some(e) = upcast_failure {
            return Err(e.into());
        }
        Ok(out)
    })
    .await?;
    Ok(Json(list))
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.

/// Server-Sent Events: whole checkpoints as they land on `HEAD` (`event: checkpoint`, `event:
/// non_fast_forward`, `event: error`), each `data` a [`Delivered`] (an error's: the error body).
#[utoipa::path(get, path = "/watch", tag = "read", params(GlobQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this checkpoint (browsers send it when they reconnect)")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = Delivered),
        (status = "default", body = crate::api::ErrorBody)))]
async fn watch(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    refuse_upcast(&query, "/watch")?;
    let glob: Arc<str> = Arc::from(query.glob.as_deref().unwrap_or("**"));
    // Resume after the last event the client saw, else after `since`, else from now.
    let resume = match headers.get("last-event-id") {
        Some(value) => Some((
            "Last-Event-ID",
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Last-Event-ID is not ASCII: it must be a checkpoint id an event stream sent",
                )
            })?,
        )),
        None => query.since.map(|since| ("since", since)),
    };
    let depot = state.depot.clone();
    let checked_glob = glob.clone();
    let start = read(&state, move || {
        let start = match &resume {
            Some((_, rev)) if rev == "start" => None,
            Some((_, rev)) => Some(depot.resolve_revision(rev)?),
            None => depot.head()?,
        };
        if let (Some(id), Some((what, rev))) = (start, &resume) {
            if let Err(depot::Error::WrongKind { found, .. }) = depot.read_checkpoint(&id) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "{what} '{}' names {id}, which is an {found}, not a checkpoint: a stream \
                         resumes after a checkpoint (the ids the stream sends)",
                        rev.escape_debug()
                    ),
                ));
            }
        }
        // Validates the glob and the start before answering 200.
        depot.subscribe(&RefName::head(), &checked_glob, start)?;
        Ok(start)
    })
    .await?;
    let (tx, rx) = mpsc::channel::<Event>(SSE_BATCH);
    tokio::spawn(stream_checkpoints(state, glob, start, tx, id));
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Feeds one event stream: reads the checkpoints after `position` in batches (one blocking task
/// each), then waits on the shared `HEAD` follower; ends at shutdown or when the client leaves.
async fn stream_checkpoints(
    state: AppState,
    glob: Arc<str>,
    mut position: Option<ObjectId>,
    tx: mpsc::Sender<Event>,
    id: RequestId,
) {
    let mut head = state.head.clone();
    let mut stop = state.stop.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        // Seen before reading: a move during the batch wakes the wait below.
        head.borrow_and_update();
        let depot = state.depot.clone();
        let glob = glob.clone();
        let batch = read(&state, move || {
            let mut subscription = depot.subscribe(&RefName::head(), &glob, position)?;
            let mut deliveries = Vec::new();
            while deliveries.len() < SSE_BATCH {
                match subscription.poll()? {
                    Some(delivery) => deliveries.push(delivery),
                    None => break,
                }
            }
            Ok((deliveries, subscription.position()))
        })
        .await;
        let (deliveries, reached) = match batch {
            Ok(batch) => batch,
            Err(err) => {
                if let Some(log) = &err.log {
                    tracing::error!("request {id} (event stream): {log}");
                }
                let data = serde_json::to_string(&err.body(id)).unwrap_or_default();
                let _ = tx.send(Event::default().event("error").data(data)).await;
                return;
            }
        };
        let full = deliveries.len() == SSE_BATCH;
        position = reached;
        for delivery in &deliveries {
            if tx.send(sse_event(delivery)).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopped(&mut stop) => return,
            _ = tx.closed() => return,
        }
    }
}

fn sse_event(delivery: &depot::Delivery) -> Event {
    let data = serde_json::to_string(&Delivered::from(delivery)).unwrap_or_default();
    let (kind, id) = match delivery {
        depot::Delivery::Checkpoint { id, .. } => ("checkpoint", Some(*id)),
        depot::Delivery::NonFastForward { base, .. } => ("non_fast_forward", *base),
    };
    let event = Event::default().event(kind).data(data);
    match id {
        Some(id) => event.id(id.to_string()),
        None => event.id("start"),
    }
}
