//! `retro serve`: the HTTP API (see `docs/http.md`) and the read-only web UI, on tokio and axum.
//!
//! Depot and engine calls are synchronous and may wait on an fsync, so they run on tokio's
//! blocking pool; concurrent `POST /apply` requests meet in the depot's group commit and share
//! fsyncs. `GET /watch` streams Server-Sent Events from a subscription running on its own thread.
//! SIGTERM or SIGINT stop accepting connections, end the event streams, and let in-flight requests
//! (and so their commits) finish before the process exits.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use depot::{Depot, HistoryOrder, ObjectId, RefName, RefValue};
use engine::{ApplyError, Engine};

use super::{apply::load_manifest, depot_dir, open};
use crate::render;

/// The largest request body accepted.
const BODY_LIMIT: usize = 1 << 20;
/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most checkpoints or events one listing returns.
const MAX_LISTING: usize = 10_000;

#[derive(Clone)]
struct AppState {
    depot: Arc<Depot>,
    engine: Engine,
    token: Option<Arc<str>>,
    stopping: Arc<AtomicBool>,
    /// Bounds the applies running at once: beyond a few per core, threads only convoy on the
    /// group commit (measured: 16 clients on 2 vCPUs went from 0.9x to 3.1x one client's rate
    /// with the bound); more clients simply queue here.
    appliers: Arc<tokio::sync::Semaphore>,
}

/// Applies running at once: four per core.
fn apply_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

/// An API error: a status and `{"error": {"code", "message"}}`.
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        (self.status, body).into_response()
    }
}

impl From<depot::Error> for ApiError {
    fn from(err: depot::Error) -> Self {
        let message = err.to_string();
        match err {
            depot::Error::Conflict { .. } | depot::Error::RefMissing(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            depot::Error::UnknownRevision(_) | depot::Error::MissingObject { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            depot::Error::AmbiguousPrefix { .. }
            | depot::Error::BadRevision { .. }
            | depot::Error::Glob { .. }
            | depot::Error::RefName(_)
            | depot::Error::Id(_)
            | depot::Error::Name(_)
            | depot::Error::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(err: ApplyError) -> Self {
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
            ApplyError::Rejected { error, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, &error.code, error.message)
            }
            ApplyError::Handler { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "handler_failed", message)
            }
            ApplyError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ApplyError::Depot(e) => e.into(),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

/// A malformed query string, answered as a JSON 400 like every other error.
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        rejection.body_text(),
    )
}

/// Runs blocking depot work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

/// Runs `retro serve` until SIGTERM or SIGINT.
pub fn run(
    flag: Option<&Path>,
    listen: &str,
    token: Option<String>,
    manifest: Option<&Path>,
) -> Result<()> {
    let dir = depot_dir(flag)?;
    let depot = open(flag)?;
    let engine = Engine::new(depot.clone(), load_manifest(&dir, manifest)?);
    let state = AppState {
        depot,
        engine,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
        stopping: Arc::new(AtomicBool::new(false)),
        appliers: Arc::new(tokio::sync::Semaphore::new(apply_concurrency())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("could not listen on {listen}"))?;
        let address = listener.local_addr()?;
        eprintln!(
            "retro: serving {} on http://{address}/",
            super::shown_location(&dir)
        );
        let stopping = state.stopping.clone();
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                eprintln!("retro: shutting down: finishing requests in flight");
                stopping.store(true, Ordering::SeqCst);
            })
            .await
            .context("the server failed")
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/apply", post(apply))
        .route("/refs", get(refs))
        .route("/log", get(log))
        .route("/objects/{id}", get(object))
        .route("/checkpoints/{rev}", get(checkpoint))
        .route("/partitions", get(partitions))
        .route("/events", get(events))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    Router::new()
        .route("/", get(index))
        .route("/watch", get(watch))
        .merge(api)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../../assets/index.html"))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let depot = state.depot.clone();
    let head = blocking(move || Ok(depot.head()?)).await?;
    Ok(Json(
        json!({"status": "ok", "head": head.map(|h| h.to_string())}),
    ))
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compare in constant time over the expected length.
    let expected = token.as_bytes();
    let given = given.as_bytes();
    let mut diff = (expected.len() ^ given.len()) as u8;
    for (i, byte) in expected.iter().enumerate() {
        diff |= byte ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

async fn apply(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server requires 'Authorization: Bearer <token>' for writes",
        ));
    }
    let session = headers
        .get("x-retro-session")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http")
        .to_owned();
    let _permit =
        state.appliers.acquire().await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
        })?;
    let engine = state.engine.clone();
    let applied = blocking(move || Ok(engine.apply(&session, &body)?)).await?;
    let body = json!({
        "checkpoint": applied.checkpoint.to_string(),
        "parent": applied.parent.map(|p| p.to_string()),
        "path": applied.path,
        "events": applied.events,
        "partitions": applied.partitions,
        "attempts": applied.attempts,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn refs(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let depot = state.depot.clone();
    let refs = blocking(move || Ok(depot.list_refs("")?)).await?;
    let list: Vec<Value> = refs
        .into_iter()
        .map(|(name, value)| match value {
            RefValue::Direct(id) => {
                json!({"ref": name.as_str(), "kind": "direct", "target": id.to_string()})
            }
            RefValue::Symbolic(target) => {
                json!({"ref": name.as_str(), "kind": "symbolic", "target": target.as_str()})
            }
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
struct LogQuery {
    rev: Option<String>,
    n: Option<usize>,
    partition: Option<String>,
}

async fn log(
    State(state): State<AppState>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let depot = state.depot.clone();
    let list = blocking(move || {
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
                out.push(render::checkpoint_json(&id, checkpoint, Some(&affix)));
                Ok(true)
            })?;
        }
        Ok(out)
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

async fn object(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let depot = state.depot.clone();
    let json = wants_json(&headers);
    blocking(move || {
        let id: ObjectId = depot.resolve_revision(&name)?;
        let object = depot.read_object(&id)?;
        if !json {
            return Ok((
                [(header::CONTENT_TYPE, "application/octet-stream")],
                object.into_bytes(),
            )
                .into_response());
        }
        let decoded = object
            .decode()
            .map_err(|source| depot::Error::Decode { id, source })?;
        let body = match &decoded {
            depot::Object::Event(event) => json!({
                "id": id.to_string(), "kind": "event", "name": event.name().as_str(),
                "data": render::data_value(event.data()),
            }),
            depot::Object::Affix(affix) => json!({
                "id": id.to_string(), "kind": "affix",
                "partitions": affix.partitions().map(|(p, ids)| json!({
                    "partition": p.as_str(),
                    "events": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
            depot::Object::Checkpoint(checkpoint) => {
                let mut value = render::checkpoint_json(&id, checkpoint, None);
                value["kind"] = json!("checkpoint");
                value["id"] = json!(id.to_string());
                value
            }
        };
        Ok(Json(body).into_response())
    })
    .await
}

async fn checkpoint(
    State(state): State<AppState>,
    UrlPath(rev): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let depot = state.depot.clone();
    blocking(move || {
        let id = depot.resolve_revision(&rev)?;
        let value = render::checkpoint_with_events_json(&depot, &id)?;
        Ok(Json(value))
    })
    .await
}

#[derive(Deserialize)]
struct GlobQuery {
    glob: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn partitions(
    State(state): State<AppState>,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let depot = state.depot.clone();
    let list =
        blocking(move || Ok(depot.partitions(query.glob.as_deref().unwrap_or("**"))?)).await?;
    Ok(Json(Value::Array(
        list.into_iter()
            .take(MAX_LISTING)
            .map(|(p, n)| json!({"partition": p.as_str(), "events": n}))
            .collect(),
    )))
}

async fn events(
    State(state): State<AppState>,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let depot = state.depot.clone();
    let list = blocking(move || {
        let since = query
            .since
            .as_deref()
            .map(|rev| depot.resolve_revision(rev))
            .transpose()?;
        let limit = query.limit.unwrap_or(1000).min(MAX_LISTING);
        let mut out = Vec::new();
        depot.events_matching(query.glob.as_deref().unwrap_or("**"), since, |record| {
            out.push(render::event_json(&record));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

async fn watch(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let glob = query.glob.unwrap_or_else(|| "**".to_owned());
    // Resume after the last event the client saw, else after `since`, else from now.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.since);
    let depot = state.depot.clone();
    let start = {
        let depot = depot.clone();
        blocking(move || match resume.as_deref() {
            Some("start") => Ok(None),
            Some(rev) => Ok(Some(depot.resolve_revision(rev)?)),
            None => Ok(depot.head()?),
        })
        .await?
    };
    // Validate the glob before answering 200.
    depot::Depot::subscribe(&depot, &RefName::head(), &glob, start)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let stopping = state.stopping.clone();
    std::thread::spawn(move || {
        let Ok(mut subscription) = depot.subscribe(&RefName::head(), &glob, start) else {
            return;
        };
        while !stopping.load(Ordering::SeqCst) && !tx.is_closed() {
            match subscription.next_timeout(Duration::from_millis(250)) {
                Ok(Some(delivery)) => {
                    let value = super::watch::delivery_json(&delivery);
                    let (kind, id) = match &delivery {
                        depot::Delivery::Checkpoint { id, .. } => ("checkpoint", Some(*id)),
                        depot::Delivery::NonFastForward { base, .. } => ("non_fast_forward", *base),
                    };
                    let mut event = Event::default().event(kind).data(value.to_string());
                    event = match id {
                        Some(id) => event.id(id.to_string()),
                        None => event.id("start"),
                    };
                    if tx.blocking_send(event).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    let _ = tx.blocking_send(Event::default().event("error").data(err.to_string()));
                    return;
                }
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
