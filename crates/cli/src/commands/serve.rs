//! `retro serve`: the HTTP API (see `docs/http.md`) and the read-only web UI, on tokio and axum.
//!
//! Depot and engine calls are synchronous and may wait on an fsync, so they run on tokio's
//! blocking pool, bounded by two semaphores (applies, reads): a flood of clients queues instead of
//! spawning threads. Concurrent `POST /apply` requests meet in the depot's group commit and share
//! fsyncs. An apply is never cut short by a timeout: once its body is read it runs to its outcome,
//! and the answer is that outcome (a timeout answering "failed" for a command that then commits
//! makes a retrying client apply it twice).
//!
//! `GET /watch` streams Server-Sent Events on the async runtime: one thread follows `HEAD` for the
//! whole server and wakes every stream through a `tokio::sync::watch`; each stream then reads its
//! next batch of checkpoints with one blocking task. No thread per client.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that a client that never
//! finishes its request headers is cut off after `--header-timeout`.
//!
//! SIGTERM or SIGINT stop accepting connections, end the event streams, and let in-flight requests
//! (and so their commits) finish before the process exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, Path as UrlPath, Query, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use depot::{Depot, HistoryOrder, ObjectId, RefName, RefValue};
use engine::{ApplyError, Engine};

use super::{apply::load_manifest, depot_dir, open};
use crate::render;

/// The largest request body accepted.
const BODY_LIMIT: usize = 1 << 20;
/// The most checkpoints or events one listing returns.
const MAX_LISTING: usize = 10_000;
/// The most checkpoints one event stream reads per blocking task.
const SSE_BATCH: usize = 64;
/// How long the `HEAD` follower waits between checks when no notification arrives.
const FOLLOW_PAUSE: Duration = Duration::from_millis(250);

/// What `retro serve` was asked for.
pub struct Options {
    /// The address to listen on.
    pub listen: String,
    /// The bearer token writes need, if any.
    pub token: Option<String>,
    /// The domain manifest.
    pub manifest: Option<PathBuf>,
    /// Host headers accepted beyond the loopback names and the listening address.
    pub allow_hosts: Vec<String>,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long a read may take, and a client may take to send an apply's body.
    pub request_timeout: Duration,
}

#[derive(Clone)]
struct AppState {
    depot: Arc<Depot>,
    engine: Engine,
    /// The SHA-256 of the token writes need: compared digest to digest, in constant time.
    token: Option<[u8; 32]>,
    hosts: Arc<Hosts>,
    request_timeout: Duration,
    /// Bounds the applies running at once: beyond a few per core, threads only convoy on the
    /// group commit (measured: 16 clients on 2 vCPUs went from 0.9x to 3.1x one client's rate
    /// with the bound); more clients simply queue here.
    appliers: Arc<Semaphore>,
    /// Bounds the blocking reads (API reads and event-stream batches) running at once.
    readers: Arc<Semaphore>,
    /// Bumped whenever `HEAD` moves (by the one follower thread).
    head: watch::Receiver<u64>,
    /// Turns true when the server starts shutting down.
    stop: watch::Receiver<bool>,
    next_request: Arc<AtomicU64>,
}

/// Blocking tasks running at once, per kind (applies, reads): four per core.
fn concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

/// A request's id: in every error body, in the `X-Request-Id` header, and in the log lines.
#[derive(Clone, Copy, Debug)]
struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// An API error: a status and `{"error": {"code", "message", "request_id"}}`.
#[derive(Clone, Debug)]
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    /// The full error for the server's log (5xx: the client only gets the class).
    log: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            log: None,
        }
    }

    /// A failure of the server itself: the client learns its class (503: retry later; 500),
    /// never its details (they may name files); the log has them.
    fn internal(err: &(dyn std::error::Error + 'static)) -> ApiError {
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
    fn body(&self, id: RequestId) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "request_id": id.to_string()}})
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
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
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
fn depot_error(err: &depot::Error) -> ApiError {
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
    match err.class() {
        ErrorClass::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        ErrorClass::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        ErrorClass::Invalid | ErrorClass::Rejected => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
        }
        ErrorClass::Unavailable => ApiError {
            log: Some(error_text(err)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the depot is busy (locked by another writer) or out of resources; retry later",
            )
        },
        ErrorClass::Corrupt => ApiError {
            log: Some(error_text(err)),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt",
                "stored data is damaged; the server's log has the details ('retro fsck' lists every problem)",
            )
        },
        _ => ApiError::internal(err),
    }
}

impl From<depot::Error> for ApiError {
    fn from(err: depot::Error) -> Self {
        depot_error(&err)
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
            ApplyError::Depot(e) => depot_error(&e),
            other => ApiError::internal(&other),
        }
    }
}

/// The error code of a status without a more specific one (axum's own rejections).
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
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

/// A malformed query string, answered as a JSON 400 like every other error.
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        rejection.body_text(),
    )
}

/// Runs blocking depot reads on tokio's blocking pool, at most `readers` at once.
async fn read<T: Send + 'static>(
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
// Hosts and the token.

/// The Host headers the server answers (DNS rebinding: a page of another site that resolves its
/// name to this machine must not reach the API).
struct Hosts {
    any: bool,
    port: u16,
    /// Names accepted alone or with the listening port.
    names: Vec<String>,
    /// `name:port` values accepted exactly.
    exact: Vec<String>,
}

impl Hosts {
    fn new(bound: SocketAddr, allow: &[String]) -> Hosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .map(str::to_owned)
            .into();
        if !bound.ip().is_unspecified() {
            names.push(match bound.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        let mut hosts = Hosts {
            any: false,
            port: bound.port(),
            names,
            exact: Vec::new(),
        };
        for host in allow {
            let host = host.trim().to_ascii_lowercase();
            if host == "*" {
                hosts.any = true;
            } else if split_host(&host).is_some_and(|(_, port)| !port.is_empty()) {
                hosts.exact.push(host);
            } else {
                hosts.names.push(host);
            }
        }
        hosts
    }

    fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host.to_ascii_lowercase();
        if self.exact.contains(&host) {
            return true;
        }
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let port_ok = port.is_empty() || port.parse::<u16>().ok() == Some(self.port);
        port_ok && self.names.iter().any(|n| n == name)
    }
}

/// `name[:port]` or `[v6][:port]` → (name, port digits or "").
fn split_host(host: &str) -> Option<(&str, &str)> {
    if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let rest = &host[end..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((&host[..end], port)),
            None if rest.is_empty() => Some((&host[..end], "")),
            None => None,
        };
    }
    Some(host.rsplit_once(':').unwrap_or((host, "")))
}

fn check_host(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).map(HeaderValue::to_str);
    match host {
        Some(Ok(host)) if state.hosts.allows(host) => Ok(()),
        Some(Ok(host)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "Host '{}' is not one this server answers; start it with --allow-host NAME to accept it",
                host.escape_debug()
            ),
        )),
        Some(Err(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "the Host header is not ASCII",
        )),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "a Host header is required",
        )),
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Whether the request carries the token: the digests of the given and the expected value are
/// compared in full, in constant time (no length or prefix leaks through timing).
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    let given = digest(given);
    let diff = expected
        .iter()
        .zip(given.iter())
        .fold(0u8, |diff, (a, b)| diff | (a ^ b));
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------------------------
// The server.

/// Runs `retro serve` until SIGTERM or SIGINT.
pub fn run(flag: Option<&std::path::Path>, options: &Options) -> Result<()> {
    let dir = depot_dir(flag)?;
    let depot = open(flag)?;
    let engine = Engine::new(
        depot.clone(),
        load_manifest(&dir, options.manifest.as_deref())?,
    );
    let token = options.token.as_deref().filter(|t| !t.is_empty());
    let workers = concurrency();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Applies and reads are bounded by their semaphores; this is only a backstop.
        .max_blocking_threads(2 * workers + 4)
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .with_context(|| format!("could not listen on {}", options.listen))?;
        let address = listener.local_addr()?;
        eprintln!(
            "retro: serving {} on http://{address}/",
            super::shown_location(&dir)
        );
        let hosts = Hosts::new(address, &options.allow_hosts);
        if token.is_none() && (!address.ip().is_loopback() || hosts.any) {
            eprintln!(
                "retro: warning: listening on {address} without a token: anyone who can reach it \
                 can apply commands; set --token or RETRO_TOKEN"
            );
        }
        let (stop_tx, stop) = watch::channel(false);
        let state = AppState {
            head: follow_head(depot.clone(), stop.clone()),
            depot,
            engine,
            token: token.map(|t| digest(t.as_bytes())),
            hosts: Arc::new(hosts),
            request_timeout: options.request_timeout,
            appliers: Arc::new(Semaphore::new(workers)),
            readers: Arc::new(Semaphore::new(workers)),
            stop: stop.clone(),
            next_request: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("retro: shutting down: finishing requests in flight");
            let _ = stop_tx.send(true);
            // Keep the sender: dropping it would read as a change to every receiver forever.
            std::future::pending::<()>().await;
        });
        serve(listener, router(state), options.header_timeout, stop).await;
        Ok(())
    })
}

/// Accepts connections until `stop`, serving each with hyper's HTTP/1 (with a header read
/// timeout); then lets the open connections finish their requests and returns.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                if !matches!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) {
                    // Out of descriptors, say: give the process a moment instead of spinning.
                    eprintln!("retro: could not accept a connection: {err}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// Returns once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|stopping| *stopping).await;
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

/// One thread for the whole server follows `HEAD` (inotify, `LISTEN`, or polling: the depot's
/// subscription does the waiting) and bumps the returned counter whenever it moves.
fn follow_head(depot: Arc<Depot>, stop: watch::Receiver<bool>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    std::thread::Builder::new()
        .name("retro-head".to_owned())
        .spawn(move || {
            let mut failing = false;
            while !*stop.borrow() {
                let subscription = depot
                    .head()
                    .and_then(|head| depot.subscribe(&RefName::head(), "**", head));
                let mut subscription = match subscription {
                    Ok(subscription) => subscription,
                    Err(err) => {
                        if !failing {
                            eprintln!("retro: could not follow HEAD (retrying): {err}");
                        }
                        failing = true;
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                // Wake the streams: they may have missed a move while this was failing.
                tx.send_modify(|n| *n += 1);
                failing = false;
                while !*stop.borrow() {
                    let before = subscription.position();
                    let result = subscription.next_timeout(FOLLOW_PAUSE);
                    if subscription.position() != before {
                        tx.send_modify(|n| *n += 1);
                    }
                    if let Err(err) = result {
                        eprintln!("retro: could not follow HEAD (retrying): {err}");
                        failing = true;
                        break;
                    }
                }
            }
        })
        .expect("could not start the HEAD follower thread");
    rx
}

fn router(state: AppState) -> Router {
    let reads = Router::new()
        .route("/health", get(health))
        .route("/refs", get(refs))
        .route("/log", get(log))
        .route("/objects/{id}", get(object))
        .route("/checkpoints/{rev}", get(checkpoint))
        .route("/partitions", get(partitions))
        .route("/events", get(events))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.request_timeout,
        ));
    Router::new()
        .route("/", get(index))
        .route("/watch", get(watch))
        // No timeout layer: an apply answers with its outcome (its body read is bounded).
        .route("/apply", post(apply))
        .merge(reads)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not answer {method}", uri.path()),
    )
}

/// Every request: an id, the Host check, and every error answered as the JSON error shape
/// (axum's own rejections included); server failures logged in full with the request id.
async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = RequestId(state.next_request.fetch_add(1, Ordering::Relaxed) + 1);
    request.extensions_mut().insert(id);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = match check_host(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    };
    let status = response.status();
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if status.is_client_error() || status.is_server_error() => {
            let (parts, body) = response.into_parts();
            let text = axum::body::to_bytes(body, 64 * 1024)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            let json_already = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
            let message = match text.is_empty() {
                true => status.canonical_reason().unwrap_or("error").to_owned(),
                false => text,
            };
            if json_already {
                response = Response::from_parts(parts, Body::from(message));
                return with_id(response, id);
            }
            response = Response::from_parts(parts, Body::empty());
            ApiError::new(status, status_code_name(status), message)
        }
        None => return with_id(response, id),
    };
    if let Some(log) = &error.log {
        eprintln!("retro: request {id} ({method} {path}): {log}");
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Retryable: a lock held too long, resources short. Nothing was changed.
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    with_id(
        Response::from_parts(parts, Body::from(error.body(id).to_string())),
        id,
    )
}

fn with_id(mut response: Response, id: RequestId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../../assets/index.html"))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let depot = state.depot.clone();
    let head = read(&state, move || Ok(depot.head()?)).await?;
    Ok(Json(
        json!({"status": "ok", "head": head.map(|h| h.to_string())}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Writes.

/// `Content-Type: application/json` (parameters allowed). Anything else is refused: the types a
/// browser may send cross-origin without asking (text/plain, forms, none at all) included.
fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
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
                "POST /apply takes 'Content-Type: application/json', not '{}'",
                t.escape_debug()
            ),
            None => {
                "POST /apply takes 'Content-Type: application/json' (none was given)".to_owned()
            }
        },
    ))
}

/// `X-Retro-Session`, default `http`; a value that is not visible ASCII is refused.
fn session(headers: &HeaderMap) -> Result<String, ApiError> {
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

async fn apply(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if !authorized(&state, headers) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server requires 'Authorization: Bearer <token>' for writes",
        ));
    }
    check_json(headers)?;
    let session = session(headers)?;
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
    let (tx, rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let outcome = engine.apply(&session, &body);
        if let Err(Ok(applied)) = tx.send(outcome) {
            eprintln!(
                "retro: request {id}: the client left before the answer; its command was applied as {}",
                applied.checkpoint
            );
        }
    });
    let applied = rx.await.map_err(|e| ApiError::internal(&e))??;
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

// ---------------------------------------------------------------------------------------------
// Reads.

async fn refs(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let depot = state.depot.clone();
    let refs = read(&state, move || Ok(depot.list_refs("")?)).await?;
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
    read(&state, move || {
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
    read(&state, move || {
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
    let list = read(&state, move || {
        Ok(depot.partitions(query.glob.as_deref().unwrap_or("**"))?)
    })
    .await?;
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
    let list = read(&state, move || {
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
            out.push(render::event_json(&record));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.

async fn watch(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    query: Result<Query<GlobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
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
                    eprintln!("retro: request {id} (event stream): {log}");
                }
                let event = Event::default()
                    .event("error")
                    .data(err.body(id).to_string());
                let _ = tx.send(event).await;
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
    let value = super::watch::delivery_json(delivery);
    let (kind, id) = match delivery {
        depot::Delivery::Checkpoint { id, .. } => ("checkpoint", Some(*id)),
        depot::Delivery::NonFastForward { base, .. } => ("non_fast_forward", *base),
    };
    let event = Event::default().event(kind).data(value.to_string());
    match id {
        Some(id) => event.id(id.to_string()),
        None => event.id("start"),
    }
}
