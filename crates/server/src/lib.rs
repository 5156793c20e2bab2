//! retro's HTTP API and read-only web UI as a library: what `retro serve` runs (see
//! `docs/http.md` for every endpoint).
//!
//! The caller opens the depot and builds the [`engine::Engine`] (with its domain manifest); this
//! crate never opens a depot itself. Then either
//!
//! - [`serve`] (or [`Server::bind`] and [`Server::run`]) listens on [`Config::listen`] and serves
//!   connections with hyper's HTTP/1, with a header read timeout and a graceful shutdown; or
//! - [`router`] gives an [`axum::Router`] to mount in an application of one's own (the Host and
//!   token checks, error bodies and request ids come with it; the header timeout, being a
//!   property of connections, does not).
//!
//! Depot and engine calls are synchronous and may wait on an fsync, so they run on tokio's
//! blocking pool, bounded by two semaphores (applies, reads; [`Config::workers`] each): a flood of
//! clients queues instead of spawning threads. Concurrent `POST /apply` requests meet in the
//! depot's group commit and share fsyncs. An apply is never cut short by a timeout: once its body
//! is read it runs to its outcome, and the answer is that outcome.
//!
//! `GET /watch` streams Server-Sent Events on the async runtime: one thread follows `HEAD` for
//! the whole server and wakes every stream; each stream reads its next batch of checkpoints with
//! one blocking task. No thread per client.
//!
//! Every route has a class ([`Class`]: read, write, admin) and the token check is a layer per
//! class (see [`Tokens`] for which token opens what). The bodies are the structs of [`api`],
//! shared with the CLI's `--json` output, and [`openapi::document`] describes them (served at
//! `GET /openapi.json`). Requests are traced with `tower-http`'s `TraceLayer` (span `request`
//! with the request id, method and path; a `DEBUG` event when a request starts, `INFO` when it is
//! answered); server failures are logged as `ERROR` events with the request id and the full
//! error, which their 500/503 bodies do not carry. Each apply runs in a span `apply` (path,
//! command, session, outcome, checkpoint, attempts). Installing a `tracing` subscriber is the
//! caller's business.
//!
//! `GET /metrics` answers the Prometheus text format (0.0.4): what this server process counted
//! (checkpoints written, rejections, conflicts, each apply's duration, requests by route and
//! status) and each durable consumer's lag behind `HEAD`, read when scraped (`docs/http.md` lists
//! every metric). It is a read route.
//!
//! # Embedding
//!
//! ```
//! use std::sync::Arc;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let depot = Arc::new(depot::Depot::in_memory()?);
//! let mut manifest = engine::Manifest::new();
//! engine::example::register_bank(&mut manifest)?;
//! let engine = engine::Engine::new(depot.clone(), manifest);
//!
//! let config = server::Config {
//!     tokens: server::Tokens {
//!         write: Some("s3cret".to_owned()),
//!         ..Default::default()
//!     },
//!     ..Default::default()
//! };
//!
//! // Mounted in an application of one's own, under /retro:
//! let state = server::AppState::new(&config, "127.0.0.1:8080".parse()?, depot.clone(), engine.clone())?;
//! let app: axum::Router = axum::Router::new().nest("/retro", server::router(state));
//! # drop(app);
//! # Ok(())
//! # }
//! ```
//!
//! Or on a socket of its own, until SIGINT or SIGTERM:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let depot = std::sync::Arc::new(depot::Depot::in_memory()?);
//! # let engine = engine::Engine::new(depot.clone(), engine::Manifest::new());
//! let config = server::Config {
//!     listen: "127.0.0.1:7070".to_owned(),
//!     ..Default::default()
//! };
//! server::runtime(&config)?.block_on(server::serve(&config, depot, engine))?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
mod auth;
pub mod branches;
mod command_ids;
mod error;
mod group_api;
mod hosts;
mod metrics;
pub mod openapi;
mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::{watch, Semaphore};
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

use depot::{Depot, RefName};
use engine::Engine;

pub use auth::{Class, Tokens};
pub use error::{apply_error_code, status, ServeError};

use error::{status_code_name, ApiError};
use hosts::Hosts;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;
/// How long the `HEAD` follower waits between checks when no notification arrives.
const FOLLOW_PAUSE: Duration = Duration::from_millis(250);

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on ([`Server::bind`], [`serve`]). Default `127.0.0.1:7070`.
    pub listen: String,
    /// The bearer tokens of the route classes. Default: none (every route open).
    pub tokens: Tokens,
    /// Host headers accepted beyond `localhost`, `127.0.0.1`, `[::1]` and the listening
    /// address: `NAME` (alone or with the port), `NAME:PORT` (exactly), `*` (any).
    pub allow_hosts: Vec<String>,
    /// How long a client may take to send its request headers (also closes idle keep-alive
    /// connections). Default 10 s.
    pub header_timeout: Duration,
    /// How long a read may take, and a client may take to send an apply's body (408 beyond).
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Blocking tasks running at once, per kind (applies, reads). Default four per core.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:7070".to_owned(),
            tokens: Tokens::default(),
            allow_hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()) * 4,
        }
    }
}

/// A multi-threaded tokio runtime sized for `config`: its blocking pool is a backstop above the
/// two semaphores' bounds.
pub fn runtime(config: &Config) -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(2 * config.workers.max(1) + 4)
        .build()
        .map_err(ServeError::Runtime)
}

/// A request's id: in every error body, in the `X-Request-Id` header, and in the log.
#[derive(Clone, Copy, Debug)]
struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Tells the `HEAD` follower and the event streams to stop, once: by [`AppState::shutdown`], or
/// when the last clone of the state goes.
struct Stopper(watch::Sender<bool>);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// What the handlers share: the depot, the engine, the checks, the bounds, the `HEAD`
/// follower. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    depot: Arc<Depot>,
    engine: Engine,
    keys: Arc<auth::Keys>,
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
    stopper: Arc<Stopper>,
    next_request: Arc<AtomicU64>,
    /// The OpenAPI document served at `/openapi.json` (built from the routes, so it is handed to
    /// them here, keeping the module graph acyclic: openapi → routes).
    openapi: Arc<str>,
    /// What `GET /metrics` reports: this process's counters.
    metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// The state for a server answering at `local_addr` (which the Host check accepts), on
    /// `depot` through `engine` (built on the same depot). Starts the thread that follows `HEAD`
    /// for the event streams; it ends at [`AppState::shutdown`] or when the last clone of the
    /// state is dropped.
    pub fn new(
        config: &Config,
        local_addr: SocketAddr,
        depot: Arc<Depot>,
        engine: Engine,
    ) -> Result<AppState, ServeError> {
        let (stop_tx, stop) = watch::channel(false);
        let workers = config.workers.max(1);
        Ok(AppState {
            head: follow_head(depot.clone(), stop.clone())?,
            depot,
            engine,
            keys: Arc::new(auth::Keys::new(&config.tokens)),
            hosts: Arc::new(Hosts::new(local_addr, &config.allow_hosts)),
            request_timeout: config.request_timeout,
            appliers: Arc::new(Semaphore::new(workers)),
            readers: Arc::new(Semaphore::new(workers)),
            stop,
            stopper: Arc::new(Stopper(stop_tx)),
            next_request: Arc::new(AtomicU64::new(0)),
            openapi: openapi::document_json().into(),
            metrics: Arc::new(metrics::Metrics::new()),
        })
    }

    /// Ends the event streams and stops following `HEAD`; requests in flight go on.
    pub fn shutdown(&self) {
        let _ = self.stopper.0.send(true);
    }

    /// Whether anyone who reaches the server may use routes of `class` (no token guards it).
    pub fn is_open(&self, class: Class) -> bool {
        self.keys.is_open(class)
    }
}

/// The API and the web UI as a router, every route behind its class's token layer, the Host
/// check, request ids, JSON error bodies, a 1 MiB body limit, `request_timeout` on reads, and
/// request tracing.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new();
    for route in routes::routes() {
        let guard = auth::Guard {
            keys: state.keys.clone(),
            class: route.class,
        };
        let mut handler = route
            .handler
            .route_layer(from_fn_with_state(guard, auth::require));
        if route.timed {
            handler = handler.layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                state.request_timeout,
            ));
        }
        // Outermost: every answer of the route (a refused token, a timeout) carries its pattern
        // for `retro_http_requests_total`.
        let pattern = RoutePattern(route.path);
        handler = handler.layer(axum::middleware::map_response(
            move |mut response: Response| async move {
                response.extensions_mut().insert(pattern);
                response
            },
        ));
        app = app.route(route.path, handler);
    }
    app.fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        id = %id,
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // A server failure is logged by `guard`, with its cause.
                .on_failure(()),
        )
        .layer(from_fn_with_state(state.clone(), guard))
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

/// The path pattern of the route that answered (`/objects/{id}`), put in its responses'
/// extensions: the `route` label of `retro_http_requests_total` (bounded: one per route).
#[derive(Clone, Copy, Debug)]
struct RoutePattern(&'static str);

/// Every request: an id, the Host check, every error answered as the JSON error shape (axum's
/// own rejections included), server failures logged in full with the request id, and the answer
/// counted for `GET /metrics`.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let metrics = state.metrics.clone();
    let response = answer(state, request, next).await;
    let route = response
        .extensions()
        .get::<RoutePattern>()
        .map_or("unmatched", |p| p.0);
    metrics.request(route, response.status().as_u16());
    response
}

async fn answer(state: AppState, mut request: Request, next: Next) -> Response {
    let id = RequestId(state.next_request.fetch_add(1, Ordering::Relaxed) + 1);
    request.extensions_mut().insert(id);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = match hosts::check_host(&state.hosts, request.headers()) {
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
        tracing::error!("request {id} ({method} {path}): {log}");
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
    if error.challenge {
        parts
            .headers
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    let body = serde_json::to_vec(&error.body(id)).unwrap_or_default();
    with_id(Response::from_parts(parts, Body::from(body)), id)
}

fn with_id(mut response: Response, id: RequestId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The server.

/// A server bound to its address, not serving yet.
pub struct Server {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    state: AppState,
    header_timeout: Duration,
}

impl Server {
    /// Binds [`Config::listen`] and makes the state (which starts following `HEAD`).
    pub async fn bind(
        config: &Config,
        depot: Arc<Depot>,
        engine: Engine,
    ) -> Result<Server, ServeError> {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                address: config.listen.clone(),
                source,
            })?;
        let address = listener.local_addr().map_err(ServeError::LocalAddr)?;
        let state = AppState::new(config, address, depot, engine)?;
        Ok(Server {
            listener,
            address,
            state,
            header_timeout: config.header_timeout,
        })
    }

    /// The address it listens on (with the port the kernel chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Its state (for [`AppState::is_open`], say).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes; then stops accepting connections, ends the event
    /// streams, lets the requests in flight (and so their commits) finish, and returns. Warns
    /// (a `WARN` event) when it listens beyond loopback, or takes any Host, while anyone may
    /// write.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            listener,
            address,
            state,
            header_timeout,
        } = self;
        if state.is_open(Class::Write) && (!address.ip().is_loopback() || state.hosts.any) {
            tracing::warn!(
                "listening on {address} without a token: anyone who can reach it can apply \
                 commands; set --token or RETRO_TOKEN"
            );
        }
        let mut stop = state.stop.clone();
        let stopper = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            stopper.shutdown();
        });
        let app = router(state);
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
                        tracing::error!("could not accept a connection: {err}");
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
        Ok(())
    }
}

/// Binds `config.listen` and serves `depot` through `engine` until SIGINT or SIGTERM
/// ([`shutdown_signal`]), then shuts down gracefully. Runs on the caller's tokio runtime (a
/// multi-threaded one: see [`runtime`]).
pub async fn serve(config: &Config, depot: Arc<Depot>, engine: Engine) -> Result<(), ServeError> {
    Server::bind(config, depot, engine)
        .await?
        .run(shutdown_signal())
        .await
}

/// Completes on SIGINT or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
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
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Returns once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// One thread for the whole server follows `HEAD` (inotify, `LISTEN`, or polling: the depot's
/// subscription does the waiting) and bumps the returned counter whenever it moves.
fn follow_head(
    depot: Arc<Depot>,
    stop: watch::Receiver<bool>,
) -> Result<watch::Receiver<u64>, ServeError> {
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
                            tracing::error!("could not follow HEAD (retrying): {err}");
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
                        tracing::error!("could not follow HEAD (retrying): {err}");
                        failing = true;
                        break;
                    }
                }
            }
        })
        .map_err(ServeError::Follower)?;
    Ok(rx)
}

#[cfg(test)]
mod tests;
