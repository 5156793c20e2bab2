//! `retro serve`: opens the depot and its manifest, installs the log on stderr (and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OTLP exporter of the spans), and runs the server
//! crate (`crates/server`, lib `server`), which owns the router, the checks and the event streams
//! (see `docs/http.md`).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use engine::projection::{ProjectionRunner, Until};
use engine::Engine;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use super::{apply::load_manifest, depot_dir, open, shown_location};

/// What the log shows without `RUST_LOG`: warnings, server failures (5xx, with their request
/// id) and the server's own notices (shutting down).
const DEFAULT_LOG: &str = "warn,server=info";

/// The spans exported over OTLP, whatever `RUST_LOG` says: the server's and the engine's
/// (`request`, `apply`, `handler`, `commit`).
const OTLP_SPANS: &str = "warn,server=info,engine=info,tower_http=info";

/// Why the OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTEL_EXPORTER_OTLP_ENDPOINT is set, but the OTLP exporter could not be set up")]
pub struct OtlpError(#[source] opentelemetry_otlp::ExporterBuildError);

/// What `retro serve` was asked for.
pub struct Options {
    /// The address to listen on.
    pub listen: String,
    /// The bearer tokens of the route classes.
    pub tokens: server::Tokens,
    /// The domain manifest.
    pub manifest: Option<PathBuf>,
    /// Whether to run the manifest's projections beside the server.
    pub projections: bool,
    /// Host headers accepted beyond the loopback names and the listening address.
    pub allow_hosts: Vec<String>,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long a read may take, and a client may take to send an apply's body.
    pub request_timeout: Duration,
}

/// Runs `retro serve` until SIGTERM or SIGINT.
pub fn run(flag: Option<&std::path::Path>, options: Options) -> Result<()> {
    let dir = depot_dir(flag)?;
    let depot = open(flag)?;
    let engine = Engine::new(
        depot.clone(),
        load_manifest(&dir, options.manifest.as_deref())?,
    );
    if options.projections && engine.manifest().projections().next().is_none() {
        return Err(
            anyhow::Error::new(engine::projection::ProjectionError::NoneDeclared)
                .context("retro serve --projections"),
        );
    }
    let exporter = install_log()?;
    let stop = Arc::new(AtomicBool::new(false));
    let runners = if options.projections {
        start_projections(&engine, &stop)
    } else {
        Vec::new()
    };
    let config = server::Config {
        listen: options.listen,
        tokens: options.tokens,
        allow_hosts: options.allow_hosts,
        header_timeout: options.header_timeout,
        request_timeout: options.request_timeout,
        ..server::Config::default()
    };
    let runtime = server::runtime(&config)?;
    let served = runtime.block_on(async {
        let server = server::Server::bind(&config, depot, engine).await?;
        eprintln!(
            "retro: serving {} on http://{}/",
            shown_location(&dir),
            server.local_addr()
        );
        server.run(server::shutdown_signal()).await?;
        Ok(())
    });
    stop.store(true, Ordering::Relaxed);
    for runner in runners {
        let _ = runner.join();
    }
    if let Some(provider) = exporter {
        // Sends the spans still queued; a collector that is gone only costs a warning.
        if let Err(err) = provider.shutdown() {
            eprintln!("retro: warning: could not send the last spans over OTLP: {err}");
        }
    }
    served
}

/// How long a projection runner that failed (the depot unavailable, another runner moving its
/// position) waits before it starts again.
const RUNNER_RESTART: Duration = Duration::from_secs(5);

/// `--projections`: one thread per declared projection, each running it until `stop`; a runner
/// that fails is logged and started again after [`RUNNER_RESTART`].
fn start_projections(engine: &Engine, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for def in engine.manifest().projections() {
        let name = def.name().to_owned();
        let engine = engine.clone();
        let stop = stop.clone();
        tracing::info!("running projection {name} ({})", def.describe());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let result = ProjectionRunner::new(engine.clone(), &name)
                    .and_then(|mut runner| runner.run(Until::Stopped, &stop));
                match result {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(
                        "projection {name} stopped: {e}; starting it again in {} s",
                        RUNNER_RESTART.as_secs()
                    ),
                }
                let until = std::time::Instant::now() + RUNNER_RESTART;
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }
    threads
}

/// When `OTEL_EXPORTER_OTLP_ENDPOINT` is set (to a collector's OTLP/HTTP base URL, such as
/// `http://127.0.0.1:4318`; spans go to `/v1/traces` below it, protobuf-encoded), a provider that
/// batches spans to it on a thread of its own. The exporter reads the other `OTEL_EXPORTER_OTLP_*`
/// variables (headers, timeout, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) itself.
fn otlp_provider() -> Result<Option<SdkTracerProvider>, OtlpError> {
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(OtlpError)?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("retro");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The log on stderr: `RUST_LOG` (an `EnvFilter`), else [`DEFAULT_LOG`]; each line
/// `retro: [warning: ]MESSAGE [FIELDS] [(SPAN FIELDS)…]`, as the CLI's other messages. With
/// [`otlp_provider`], the spans of [`OTLP_SPANS`] are also exported; the provider is returned, to
/// be shut down (flushed) at exit.
fn install_log() -> Result<Option<SdkTracerProvider>, OtlpError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(&value).unwrap_or_else(|err| {
            eprintln!(
                "retro: warning: RUST_LOG='{}' is not a log filter ({err}); using '{DEFAULT_LOG}'",
                value.escape_debug()
            );
            EnvFilter::new(DEFAULT_LOG)
        }),
        _ => EnvFilter::new(DEFAULT_LOG),
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Lines)
        .with_filter(filter);
    let provider = otlp_provider()?;
    let otlp = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("retro"))
            .with_filter(EnvFilter::new(OTLP_SPANS))
    });
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(otlp)
        .try_init();
    Ok(provider)
}

/// One line per event, in the CLI's `retro: …` form.
struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "retro: ")?;
        match *event.metadata().level() {
            Level::WARN => write!(writer, "warning: ")?,
            Level::DEBUG | Level::TRACE => write!(writer, "{}: ", event.metadata().level())?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, " ({} {fields})", span.name())?;
                    }
                }
            }
        }
        writeln!(writer)
    }
}
