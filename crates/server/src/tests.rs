//! The library without a socket: the router driven with `tower::ServiceExt::oneshot` over a
//! depot in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::api::{Applied, Health, Stats};
use crate::{router, AppState, Config, Tokens};

const OPEN: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;

fn state(tokens: Tokens) -> AppState {
    state_on(tokens, Arc::new(depot::Depot::in_memory().unwrap()))
}

/// The bank, `quiet/…` (`noop` emits nothing) and `racy/…` (`bump` commits to its own partition
/// behind the engine's back while it runs, so it conflicts on every attempt), on `depot`; an
/// engine that tries twice.
fn state_on(tokens: Tokens, depot: Arc<depot::Depot>) -> AppState {
    let mut manifest = engine::Manifest::new();
    engine::example::register_bank(&mut manifest).unwrap();
    // A command that decides there is nothing to record.
    manifest
        .aggregate::<Quiet>("quiet")
        .unwrap()
        .command("noop", |_, _| Ok(()))
        .unwrap();
    let racer = depot.clone();
    manifest
        .aggregate::<Quiet>("racy")
        .unwrap()
        .command("bump", move |_, ctx| {
            let event = depot::Event::new(depot::EventName::new("Raced").unwrap(), "{}");
            let mut request =
                depot::CommitRequest::new(None, vec![(ctx.path().clone(), event)], "racer", "race");
            request.base = depot::Base::Tip;
            racer.commit(request).unwrap();
            let path = ctx.path().as_str().to_owned();
            ctx.emit_json(&path, "Bumped", &serde_json::json!({}))
        })
        .unwrap();
    let engine = engine::Engine::new(depot.clone(), manifest).with_max_attempts(2);
    let config = Config {
        tokens,
        ..Config::default()
    };
    AppState::new(&config, "127.0.0.1:7070".parse().unwrap(), depot, engine).unwrap()
}

#[derive(Default)]
struct Quiet;

impl engine::Aggregate for Quiet {
    fn apply(&mut self, _: &engine::RecordedEvent) {}
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap().to_owned()
    }
}

async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    call_with(state, method, path, token, &[], body).await
}

async fn call_with(
    state: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost:7070");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == "POST" {
        request = request.header("content-type", "application/json");
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    // An event stream never ends: its headers are enough.
    let body = if headers
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
    {
        Vec::new()
    } else {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn apply_answers_the_applied_struct_and_reads_see_it() {
    let state = state(Tokens::default());
    let applied = call(&state, "POST", "/apply", None, OPEN).await;
    assert_eq!(applied.status, StatusCode::CREATED);
    let applied: Applied = serde_json::from_slice(&applied.body).unwrap();
    assert_eq!(applied.path, "accounts/alice");
    assert_eq!(applied.parent, None);
    assert_eq!(applied.attempts, 1);

    let health = call(&state, "GET", "/health", None, "").await;
    let health: Health = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(health.head.as_deref(), Some(applied.checkpoint.as_str()));

    let log = call(&state, "GET", "/log", None, "").await.json();
    assert_eq!(log[0]["checkpoint"], applied.checkpoint.as_str());
    assert_eq!(log[0]["message"]["name"], "open");
    let events = call(&state, "GET", "/events?glob=accounts/*", None, "")
        .await
        .json();
    assert_eq!(events[0]["name"], "AccountOpened");
    let object = call(&state, "GET", "/checkpoints/HEAD", None, "")
        .await
        .json();
    assert_eq!(object["events"].as_array().unwrap().len(), applied.events);
}

#[tokio::test]
async fn an_idempotency_key_applies_once_and_replays_the_original_answer() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let state = state_on(Tokens::default(), depot.clone());
    let key = [("idempotency-key", "\"open-alice-1\"")];
    let first = call_with(&state, "POST", "/apply", None, &key, OPEN).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let original: Applied = serde_json::from_slice(&first.body).unwrap();
    assert!(!original.replayed);
    assert!(!String::from_utf8_lossy(&first.body).contains("replayed"));

    let again = call_with(&state, "POST", "/apply", None, &key, OPEN).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let replayed: Applied = serde_json::from_slice(&again.body).unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.checkpoint, original.checkpoint);
    assert_eq!(replayed.parent, original.parent);
    assert_eq!(replayed.partitions, original.partitions);
    assert_eq!(replayed.events, original.events);
    assert_eq!(replayed.attempts, 0);
    // Nothing was written: one checkpoint, the original, and HEAD on it.
    assert_eq!(depot.counts().unwrap().0, 1);
    assert_eq!(
        depot.head().unwrap().map(|h| h.to_string()),
        Some(original.checkpoint.clone())
    );
    // The key with the id in the body, the same: still the same command.
    let in_body =
        r#"{"id":"open-alice-1","path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
    let same = call(&state, "POST", "/apply", None, in_body).await;
    assert_eq!(same.headers["idempotent-replayed"], "true");

    // The same key for another command: a conflict, nothing written.
    let other = call_with(
        &state,
        "POST",
        "/apply",
        None,
        &key,
        r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5}}"#,
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.error_code(), "command_id_reused");
    assert_eq!(depot.counts().unwrap().0, 1);

    // A key that is not one token, or that disagrees with the body's id: 400, nothing written.
    for (headers, body) in [
        (vec![("idempotency-key", "has space")], OPEN),
        (vec![("idempotency-key", "k2")], in_body),
        (vec![("x-correlation-id", "")], OPEN),
    ] {
        let refused = call_with(&state, "POST", "/apply", None, &headers, body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(refused.error_code(), "bad_command");
    }
    assert_eq!(depot.counts().unwrap().0, 1);
}

#[tokio::test]
async fn traceparent_and_the_id_headers_land_in_the_checkpoint() {
    let state = state(Tokens::default());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let applied = call_with(
        &state,
        "POST",
        "/apply",
        None,
        &[("traceparent", traceparent)],
        OPEN,
    )
    .await;
    assert_eq!(applied.status, StatusCode::CREATED);
    let shown = call(&state, "GET", "/checkpoints/HEAD", None, "")
        .await
        .json();
    assert_eq!(shown["correlation-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(shown["causation-id"], "00f067aa0ba902b7");
    assert!(shown.get("command-id").is_none());

    // Explicit headers win over traceparent; a malformed traceparent is ignored.
    let deposit = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5}}"#;
    let applied = call_with(
        &state,
        "POST",
        "/apply",
        None,
        &[
            ("traceparent", traceparent),
            ("x-correlation-id", "order-7"),
            ("x-causation-id", "sha256:abc"),
        ],
        deposit,
    )
    .await;
    assert_eq!(applied.status, StatusCode::CREATED);
    let shown = call(&state, "GET", "/checkpoints/HEAD", None, "")
        .await
        .json();
    assert_eq!(shown["correlation-id"], "order-7");
    assert_eq!(shown["causation-id"], "sha256:abc");
    let applied = call_with(
        &state,
        "POST",
        "/apply",
        None,
        &[("traceparent", "00-nonsense")],
        deposit,
    )
    .await;
    assert_eq!(applied.status, StatusCode::CREATED);
    let shown = call(&state, "GET", "/checkpoints/HEAD", None, "")
        .await
        .json();
    assert!(shown.get("correlation-id").is_none());
}

#[tokio::test]
async fn errors_are_the_json_error_with_the_request_id() {
    let state = state(Tokens::default());
    let missing = call(&state, "GET", "/nowhere", None, "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let body = missing.json();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(
        missing.headers["x-request-id"].to_str().unwrap(),
        body["error"]["request_id"].as_str().unwrap()
    );
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::CREATED
    );
    let rejected = call(
        &state,
        "POST",
        "/apply",
        None,
        r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":5}}"#,
    )
    .await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(rejected.error_code(), "insufficient_funds");
}

#[tokio::test]
async fn a_request_without_an_allowed_host_is_refused() {
    let state = state(Tokens::default());
    let request = Request::builder()
        .uri("/health")
        .header("host", "evil.example")
        .body(Body::empty())
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

fn all_tokens() -> Tokens {
    Tokens {
        read: Some("r".to_owned()),
        write: Some("w".to_owned()),
        admin: Some("a".to_owned()),
    }
}

#[tokio::test]
async fn each_route_class_takes_its_token_or_a_higher_one() {
    let state = state(all_tokens());
    // Reads: any of the three tokens.
    let anonymous = call(&state, "GET", "/health", None, "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.error_code(), "unauthorized");
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    for token in ["r", "w", "a"] {
        assert_eq!(
            call(&state, "GET", "/health", Some(token), "").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&state, "GET", "/refs", Some("nope"), "").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Writes: the write or admin token; the read token is known but not enough.
    let with_read = call(&state, "POST", "/apply", Some("r"), OPEN).await;
    assert_eq!(with_read.status, StatusCode::FORBIDDEN);
    assert_eq!(with_read.error_code(), "forbidden");
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), OPEN).await.status,
        StatusCode::CREATED
    );
    let second = r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#;
    assert_eq!(
        call(&state, "POST", "/apply", Some("a"), second)
            .await
            .status,
        StatusCode::CREATED
    );
    // Admin: the admin token only.
    for token in [None, Some("r"), Some("w")] {
        let answer = call(&state, "GET", "/admin/stats", token, "").await;
        assert!(
            matches!(
                answer.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "{token:?}: {}",
            answer.status
        );
    }
    let stats = call(&state, "GET", "/admin/stats", Some("a"), "").await;
    assert_eq!(stats.status, StatusCode::OK);
    let stats: Stats = serde_json::from_slice(&stats.body).unwrap();
    // Two applies on the bank: accounts/alice, accounts/bob and the registry.
    assert_eq!(stats.refs, 2, "{stats:?}");
    assert!(stats.partitions >= 2 && stats.events >= 2, "{stats:?}");
    // Every checkpoint, affix and event is an object.
    assert!(stats.objects >= 2 + 2 + stats.events, "{stats:?}");
}

#[tokio::test]
async fn without_a_read_token_reads_are_open_and_writes_still_guarded() {
    let state = state(Tokens {
        write: Some("w".to_owned()),
        ..Tokens::default()
    });
    assert_eq!(
        call(&state, "GET", "/log", None, "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Without an admin token, the write token is the admin token.
    assert_eq!(
        call(&state, "GET", "/admin/stats", None, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&state, "GET", "/admin/stats", Some("w"), "")
            .await
            .status,
        StatusCode::OK
    );
}

/// The document's operations, as (METHOD, path).
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                operations.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes() {
    let state = state(Tokens::default());
    let answer = call(&state, "GET", "/openapi.json", None, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let document = answer.json();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let routed: BTreeSet<(String, String)> = crate::routes::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(routed, documented(&document));
    // Each operation's tag is its route's class.
    for route in crate::routes::routes() {
        let operation = &document["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert_eq!(operation["tags"][0], route.class.as_str(), "{}", route.path);
    }
    // And the router answers every documented operation (the routes table is the router): with
    // one checkpoint in the depot, `HEAD` fills every path parameter.
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::CREATED
    );
    // A consumer group for `/groups/{name}`.
    state
        .depot
        .join_group("g", "m", &depot::group::GroupOptions::new())
        .unwrap()
        .leave()
        .unwrap();
    for (method, path) in documented(&document) {
        let path = path
            .replace("{id}", "HEAD")
            .replace("{rev}", "HEAD")
            .replace("{name}", "g");
        let body = if path == "/redact" {
            let events = call(&state, "GET", "/events?glob=accounts/*", None, "").await;
            let event = events.json()[0]["event"].as_str().unwrap().to_owned();
            format!(r#"{{"events":["{event}"],"reason":"the document's own test"}}"#)
        } else if path == "/branches" {
            r#"{"name":"documented"}"#.to_owned()
        } else if path == "/merge" {
            r#"{"rev":"HEAD"}"#.to_owned()
        } else if method == "POST" {
            OPEN.replace("alice", "carol")
        } else {
            String::new()
        };
        let answer = call(&state, &method, &path, None, &body).await;
        assert!(
            answer.status.is_success(),
            "{method} {path}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    // Every schema a path refers to is defined.
    let text = answer.body.clone();
    let text = String::from_utf8(text).unwrap();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "{name} is not defined");
    }
}

#[tokio::test]
async fn a_command_that_emits_nothing_answers_200_written_false_and_moves_nothing() {
    let state = state(Tokens::default());
    let before = call(&state, "GET", "/health", None, "").await.json();
    let answer = call(
        &state,
        "POST",
        "/apply",
        None,
        r#"{"path":"quiet/q1","name":"noop","params":{}}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body: crate::api::NothingWritten = serde_json::from_slice(&answer.body).unwrap();
    assert!(!body.written);
    assert_eq!(body.checkpoint, None);
    assert_eq!(body.command, "noop");
    let after = call(&state, "GET", "/health", None, "").await.json();
    assert_eq!(before["head"], after["head"], "nothing moved");
}

// ---------------------------------------------------------------------------------------------
// GET /metrics.

/// A strict reader of the text format (0.0.4): each family is `# HELP`, then `# TYPE`, then its
/// samples; every sample belongs to the family above it (a histogram's `_bucket`, `_sum` and
/// `_count`); label values are quoted with `\\`, `\"` and `\n` escapes; values are numbers.
/// Returns every sample as `name{labels}` (labels sorted, unescaped) → value, and the families
/// with their types.
fn parse_exposition(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut families = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut helped: Option<String> = None;
    assert!(text.ends_with('\n'), "the text ends with a line feed");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(is_metric_name(name), "{line}");
            assert!(!help.is_empty(), "{line}");
            assert!(!families.contains_key(name), "{name} declared twice");
            helped = Some(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert_eq!(
                helped.take().as_deref(),
                Some(name),
                "HELP before TYPE: {line}"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_owned(), kind.to_owned());
            current = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (family, kind) = current.clone().expect("a sample after its TYPE");
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        let allowed = match kind.as_str() {
            "histogram" => vec![
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ],
            _ => vec![family.clone()],
        };
        assert!(
            allowed.iter().any(|a| a == name),
            "{name} is not of {family}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            (labels, rest) = parse_label_list(inner, line);
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let number: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        labels.sort();
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let shown: Vec<String> = labels.iter().map(|(l, v)| format!("{l}={v}")).collect();
            format!("{name}{{{}}}", shown.join(","))
        };
        assert!(samples.insert(key, number).is_none(), "{line} twice");
    }
    assert!(helped.is_none(), "a HELP without its TYPE");
    (samples, families)
}

/// The labels of a sample: `name="value",…}` up to and including the `}`; returns them
/// (unescaped) and the text after the `}`.
fn parse_label_list<'a>(text: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        let eq = rest.find('=').expect("label=");
        let label = &rest[..eq];
        assert!(is_metric_name(label), "label {label:?} in {line}");
        let quoted = rest[eq + 1..].strip_prefix('"').expect("a quoted value");
        let mut value = String::new();
        let mut iter = quoted.char_indices();
        let end = loop {
            match iter.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match iter.next().expect("an escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other} in {line}"),
                },
                (_, '\n') => panic!("a raw line feed in {line}"),
                (_, c) => value.push(c),
            }
        };
        labels.push((label.to_owned(), value));
        let after = &quoted[end + 1..];
        if let Some(more) = after.strip_prefix(',') {
            rest = more;
        } else {
            return (labels, after.strip_prefix('}').expect("a closing brace"));
        }
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

async fn scrape(state: &AppState, token: Option<&str>) -> BTreeMap<String, f64> {
    let answer = call(state, "GET", "/metrics", token, "").await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(answer.body).unwrap();
    let (samples, families) = parse_exposition(&text);
    for (family, kind) in [
        ("retro_commits_total", "counter"),
        ("retro_commit_rejections_total", "counter"),
        ("retro_commit_conflicts_total", "counter"),
        ("retro_commit_duration_seconds", "histogram"),
        ("retro_consumer_lag_checkpoints", "gauge"),
        ("retro_projection_lag_checkpoints", "gauge"),
        ("retro_http_requests_total", "counter"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    // The histogram is cumulative and its +Inf bucket is its count.
    let buckets: Vec<f64> = crate::metrics::DURATION_BUCKETS
        .iter()
        .map(|le| samples[&format!("retro_commit_duration_seconds_bucket{{le={le}}}")])
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = samples["retro_commit_duration_seconds_count"];
    assert_eq!(
        samples["retro_commit_duration_seconds_bucket{le=+Inf}"],
        count
    );
    assert!(buckets.last().is_some_and(|&last| last <= count));
    samples
}

#[tokio::test]
async fn metrics_count_commits_rejections_and_conflicts() {
    let state = state(Tokens::default());
    let before = scrape(&state, None).await;
    assert_eq!(before["retro_commits_total"], 0.0);
    assert_eq!(before["retro_commit_duration_seconds_count"], 0.0);
    assert!(!before.keys().any(|k| k.starts_with("retro_projection_lag")));

    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::CREATED
    );
    let after_apply = scrape(&state, None).await;
    assert_eq!(after_apply["retro_commits_total"], 1.0);
    assert_eq!(after_apply["retro_commit_rejections_total"], 0.0);
    assert_eq!(after_apply["retro_commit_duration_seconds_count"], 1.0);
    assert!(after_apply["retro_commit_duration_seconds_sum"] > 0.0);

    let withdraw = r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":5}}"#;
    let rejected = call(&state, "POST", "/apply", None, withdraw).await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let after_rejection = scrape(&state, None).await;
    assert_eq!(after_rejection["retro_commits_total"], 1.0);
    assert_eq!(after_rejection["retro_commit_rejections_total"], 1.0);

    let bump = r#"{"path":"racy/r1","name":"bump","params":{}}"#;
    let conflict = call(&state, "POST", "/apply", None, bump).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.error_code(), "conflict");
    // Neither a commit nor a rejection, and a malformed command is neither either.
    let malformed = call(&state, "POST", "/apply", None, "{").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let after = scrape(&state, None).await;
    assert_eq!(after["retro_commits_total"], 1.0);
    assert_eq!(after["retro_commit_rejections_total"], 1.0);
    assert_eq!(after["retro_commit_conflicts_total"], 1.0);
    assert_eq!(
        after["retro_commit_duration_seconds_count"],
        after["retro_commits_total"] + after["retro_commit_rejections_total"]
    );
    // Requests by route pattern and status; the scrapes themselves are counted.
    assert_eq!(
        after["retro_http_requests_total{route=/apply,status=201}"],
        1.0
    );
    assert_eq!(
        after["retro_http_requests_total{route=/apply,status=422}"],
        1.0
    );
    assert_eq!(
        after["retro_http_requests_total{route=/apply,status=409}"],
        1.0
    );
    assert_eq!(
        after["retro_http_requests_total{route=/apply,status=400}"],
        1.0
    );
    // Three scrapes answered before this one (which is counted once answered).
    assert_eq!(
        after["retro_http_requests_total{route=/metrics,status=200}"],
        3.0
    );
    let missing = call(&state, "GET", "/objects/nowhere", None, "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&state, "GET", "/no/such/route", None, "").await.status,
        StatusCode::NOT_FOUND
    );
    let last = scrape(&state, None).await;
    assert_eq!(
        last["retro_http_requests_total{route=/objects/{id},status=404}"],
        1.0
    );
    assert_eq!(
        last["retro_http_requests_total{route=unmatched,status=404}"],
        1.0
    );
}

#[tokio::test]
async fn metrics_report_each_consumers_lag_behind_head() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let state = state_on(Tokens::default(), depot.clone());
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::CREATED
    );
    let head = depot.head().unwrap().unwrap();
    let at_head = depot::RefName::new("refs/consumers/billing").unwrap();
    depot
        .update_refs(&[depot::RefEdit::cas(
            at_head,
            None,
            head,
            depot::LogInfo {
                session: String::new(),
                message: "test".to_owned(),
            },
        )])
        .unwrap();
    assert_eq!(
        scrape(&state, None).await["retro_consumer_lag_checkpoints{consumer=billing}"],
        0.0
    );
    let n: u32 = 3;
    for i in 0..n {
        let deposit = format!(
            r#"{{"path":"accounts/alice","name":"deposit","params":{{"amount":{}}}}}"#,
            i + 1
        );
        assert_eq!(
            call(&state, "POST", "/apply", None, &deposit).await.status,
            StatusCode::CREATED
        );
    }
    let samples = scrape(&state, None).await;
    assert_eq!(
        samples["retro_consumer_lag_checkpoints{consumer=billing}"],
        f64::from(n)
    );
    // The same figure `retro status` shows.
    let status = crate::api::ConsumerStatus::read_all(&depot).unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "billing");
    assert_eq!(status[0].behind, Some(u64::from(n)));
}

#[tokio::test]
async fn groups_are_listed_with_their_lag_and_on_metrics() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let state = state_on(Tokens::default(), depot.clone());
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::CREATED
    );
    let options = depot::group::GroupOptions {
        slots: Some(4),
        ..depot::group::GroupOptions::new()
    };
    // A member that has delivered nothing yet: every slot is one checkpoint behind.
    let member = depot.join_group("billing", "m1", &options).unwrap();
    let answer = call(&state, "GET", "/groups/billing", None, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["behind"], 1, "{body}");
    assert_eq!(body["unowned"], 0, "{body}");
    assert_eq!(body["members"][0]["id"], "m1", "{body}");
    assert_eq!(body["members"][0]["slots"], 4, "{body}");
    let samples = scrape(&state, None).await;
    assert_eq!(samples["retro_group_lag_checkpoints{group=billing}"], 1.0);
    assert_eq!(samples["retro_group_members{group=billing}"], 1.0);
    assert_eq!(samples["retro_group_unowned_slots{group=billing}"], 0.0);
    member.leave().unwrap();
    let samples = scrape(&state, None).await;
    assert_eq!(samples["retro_group_members{group=billing}"], 0.0);
    assert_eq!(samples["retro_group_unowned_slots{group=billing}"], 4.0);
    let list = call(&state, "GET", "/groups", None, "").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Unknown and malformed names.
    let answer = call(&state, "GET", "/groups/nope", None, "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = call(&state, "GET", "/groups/.bad", None, "").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_are_a_read_route() {
    let state = state(all_tokens());
    let anonymous = call(&state, "GET", "/metrics", None, "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for token in ["r", "w", "a"] {
        scrape(&state, Some(token)).await;
    }
    // A refused request is counted under its route too.
    let samples = scrape(&state, Some("r")).await;
    assert_eq!(
        samples["retro_http_requests_total{route=/metrics,status=401}"],
        1.0
    );
    assert_eq!(
        samples["retro_http_requests_total{route=/metrics,status=200}"],
        3.0
    );
    let open = state_on(
        Tokens {
            write: Some("w".to_owned()),
            ..Tokens::default()
        },
        Arc::new(depot::Depot::in_memory().unwrap()),
    );
    // Without a read token, scraping needs no token (as every read). A scrape is counted once
    // answered: the first one sees no request yet.
    let samples = scrape(&open, None).await;
    assert!(!samples
        .keys()
        .any(|k| k.starts_with("retro_http_requests_total")));
    let samples = scrape(&open, None).await;
    assert_eq!(
        samples["retro_http_requests_total{route=/metrics,status=200}"],
        1.0
    );
}

#[test]
fn an_escaped_label_value_reads_back_as_it_was() {
    let name = "we\"ird\\\nname";
    let consumers = [crate::api::ConsumerStatus {
        name: name.to_owned(),
        position: None,
        behind: Some(7),
    }];
    let text = crate::metrics::Metrics::new().render(&consumers);
    let (samples, _) = parse_exposition(&text);
    assert_eq!(
        samples[&format!("retro_consumer_lag_checkpoints{{consumer={name}}}")],
        7.0
    );
}

#[tokio::test]
async fn i16_6_an_unknown_full_id_is_no_such_object_over_http_too() {
    let state = state(Tokens::default());
    let id = format!("sha256:{}", "ab".repeat(32));
    let missing = call(&state, "GET", &format!("/objects/{id}"), None, "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let body = missing.json();
    assert_eq!(
        body["error"]["message"].as_str(),
        Some(format!("no such object '{id}'").as_str()),
        "{body}"
    );
    let prefix = call(&state, "GET", "/objects/abcd1234", None, "").await;
    assert_eq!(prefix.status, StatusCode::NOT_FOUND);
    let text = prefix.json()["error"]["message"].to_string();
    assert!(text.contains("no object id starts with it"), "{text}");
}

#[tokio::test]
async fn i16_11_failed_commands_are_served_with_their_error_as_code_and_message() {
    let state = state(Tokens::default());
    assert_eq!(
        call(&state, "GET", "/failed", None, "").await.json(),
        serde_json::json!([])
    );
    let rejected = call(
        &state,
        "POST",
        "/apply",
        None,
        r#"{"path":"accounts/nobody","name":"deposit","params":{"amount":5}}"#,
    )
    .await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let failed = call(&state, "GET", "/failed", None, "").await;
    assert_eq!(failed.status, StatusCode::OK);
    let entries = failed.json();
    let entries = entries.as_array().expect("an array");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["error"]["code"], rejected.error_code());
    assert!(entries[0]["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(entries[0]["command"]["path"], "accounts/nobody");
    assert_eq!(entries[0]["session"], "http");
}

/// A depot with two v1 `Deposited {"amount": N}` in `wallets/w` (one commit), served by an
/// engine whose domain upcasts `Deposited` v1 → v2 (`amount` → `cents`) and splits `Noted` v1
/// into two events; `future` adds a `Deposited` at v7, newer than the domain knows.
fn upcasting_state(future: bool) -> AppState {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let partition = depot::PartitionName::new("wallets/w").unwrap();
    let event = |name: &str, version: u32, data: &str| {
        (
            partition.clone(),
            depot::Event::new(depot::EventName::new(name).unwrap(), data).with_version(version),
        )
    };
    let mut events = vec![
        event("Deposited", 1, r#"{"amount":5}"#),
        event("Noted", 1, r#"{"a":1,"b":2}"#),
    ];
    if future {
        events.push(event("Deposited", 7, r#"{"cents":1}"#));
    }
    depot
        .commit(depot::CommitRequest::new(None, events, "s", "{}"))
        .unwrap();
    let mut manifest = engine::Manifest::new();
    manifest
        .upcast(
            "Deposited",
            1,
            engine::Upcaster::Transform(engine::Transform {
                rename: [("amount".to_owned(), "cents".to_owned())].into(),
                ..engine::Transform::default()
            }),
        )
        .unwrap()
        .upcast(
            "Noted",
            1,
            engine::Upcaster::Split(vec![
                engine::Transform {
                    remove: vec!["b".to_owned()],
                    ..engine::Transform::default()
                },
                engine::Transform {
                    remove: vec!["a".to_owned()],
                    rename_event: Some("NotedToo".to_owned()),
                    ..engine::Transform::default()
                },
            ]),
        )
        .unwrap();
    let engine = engine::Engine::new(depot.clone(), manifest);
    AppState::new(
        &Config::default(),
        "127.0.0.1:7070".parse().unwrap(),
        depot,
        engine,
    )
    .unwrap()
}

#[tokio::test]
async fn upcast_true_serves_events_as_the_domain_reads_them_with_their_provenance() {
    let state = upcasting_state(false);
    let stored = call(&state, "GET", "/events", None, "").await.json();
    assert_eq!(stored.as_array().unwrap().len(), 2);
    assert_eq!(stored[0]["data"], serde_json::json!({"amount": 5}));
    assert!(stored[0].get("upcast").is_none() && stored[0].get("schema_version").is_none());

    let upcast = call(&state, "GET", "/events?upcast=true", None, "").await;
    assert_eq!(upcast.status, StatusCode::OK);
    let upcast = upcast.json();
    let list = upcast.as_array().unwrap();
    assert_eq!(list.len(), 3, "{upcast}");
    assert_eq!(list[0]["data"], serde_json::json!({"cents": 5}));
    assert_eq!(list[0]["schema_version"], 2);
    assert_eq!(list[0]["event"], stored[0]["event"], "the stored id");
    assert_eq!(
        list[0]["upcast"],
        serde_json::json!({"name": "Deposited", "version": 1})
    );
    assert_eq!(list[1]["name"], "Noted");
    assert_eq!(list[2]["name"], "NotedToo");
    assert_eq!(list[2]["event"], stored[1]["event"]);
    // `limit` counts entries.
    let limited = call(&state, "GET", "/events?upcast=true&limit=2", None, "")
        .await
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 2);

    let checkpoint = call(&state, "GET", "/checkpoints/HEAD?upcast=true", None, "")
        .await
        .json();
    let names: Vec<&str> = checkpoint["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Deposited", "Noted", "NotedToo"]);
    let plain = call(&state, "GET", "/checkpoints/HEAD", None, "")
        .await
        .json();
    assert_eq!(plain["events"].as_array().unwrap().len(), 2);
    let bad = call(&state, "GET", "/events?upcast=maybe", None, "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    for route in ["/watch?upcast=true", "/partitions?upcast=false"] {
        let refused = call(&state, "GET", route, None, "").await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{route}");
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("takes no 'upcast' parameter"),
            "{route}"
        );
    }
}

#[tokio::test]
async fn an_event_newer_than_the_domain_knows_is_a_500_naming_it() {
    let state = upcasting_state(true);
    for path in ["/events?upcast=true", "/checkpoints/HEAD?upcast=true"] {
        let answer = call(&state, "GET", path, None, "").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(answer.error_code(), "unknown_event_version", "{path}");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("(Deposited v7, event 3 of 'wallets/w') is newer than this domain knows: its newest Deposited is v2")
                || message.contains("(Deposited v7, event 0 of 'wallets/w') is newer than this domain knows"),
            "{path}: {message}"
        );
    }
    // Stored events are still served as they are.
    let stored = call(&state, "GET", "/events", None, "").await;
    assert_eq!(stored.status, StatusCode::OK);
}

#[tokio::test]
async fn post_redact_takes_the_admin_token_and_events_read_as_tombstones() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    depot.set_seal_events(true).unwrap();
    let state = state_on(all_tokens(), depot.clone());
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), OPEN).await.status,
        StatusCode::CREATED
    );
    let events = call(&state, "GET", "/events?glob=accounts/*", Some("r"), "").await;
    let event = events.json()[0]["event"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"events":["{event}"],"reason":"erasure 3"}}"#);
    for token in [None, Some("r"), Some("w")] {
        let answer = call(&state, "POST", "/redact", token, &body).await;
        assert!(
            matches!(
                answer.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "{token:?}: {}",
            answer.status
        );
    }
    // Bad bodies and unknown ids: nothing written.
    let bad = call(&state, "POST", "/redact", Some("a"), r#"{"events":[]}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = format!(
        r#"{{"events":["sha256:{}"],"reason":"r"}}"#,
        "ab".repeat(32)
    );
    let answer = call(&state, "POST", "/redact", Some("a"), &unknown).await;
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(depot.redactions().is_empty());

    let answer = call(&state, "POST", "/redact", Some("a"), &body).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let redacted = answer.json();
    assert_eq!(redacted["redacted"][0], event.as_str());
    assert_eq!(redacted["checkpoints"].as_array().unwrap().len(), 1);
    let events = call(&state, "GET", "/events?glob=accounts/*", Some("r"), "").await;
    let data = &events.json()[0]["data"];
    assert_eq!(data["redacted"], true, "{data}");
    assert_eq!(data["reason"], "erasure 3");
    let object = call(&state, "GET", &format!("/objects/{event}"), Some("r"), "").await;
    assert_eq!(object.status, StatusCode::OK);
    // The raw object is intact (its id verifies); its data object is gone.
    assert!(object
        .body
        .starts_with(b"event sealed AccountOpened 77\0data sha256:"));
    assert_eq!(depot::ObjectId::of(&object.body).to_string(), event);
}

/// An engine on `depot`'s branch `branch` (the bank), to write on a branch `HEAD` does not name.
fn bank_on(depot: &Arc<depot::Depot>, branch: &str) -> engine::Engine {
    let mut manifest = engine::Manifest::new();
    engine::example::register_bank(&mut manifest).unwrap();
    engine::Engine::new(depot.clone(), manifest)
        .with_ref(depot::RefName::new(&format!("refs/heads/{branch}")).unwrap())
}

#[tokio::test]
async fn branches_are_listed_and_created_with_the_write_token() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let state = state_on(all_tokens(), depot.clone());
    assert_eq!(
        call(
            &state,
            "POST",
            "/branches",
            Some("w"),
            r#"{"name":"early"}"#
        )
        .await
        .error_code(),
        "bad_request",
        "HEAD unborn and no 'at'"
    );
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), OPEN).await.status,
        StatusCode::CREATED
    );
    let head = depot.head().unwrap().unwrap().to_string();
    let listed = call(&state, "GET", "/branches", Some("r"), "").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.json(),
        serde_json::json!([{"name":"master","ref":"refs/heads/master","checkpoint":head,"current":true}])
    );
    // A write: the read token is not enough, nothing is created.
    for token in [None, Some("r")] {
        let answer = call(&state, "POST", "/branches", token, r#"{"name":"feature"}"#).await;
        assert!(
            matches!(
                answer.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "{token:?}: {}",
            answer.status
        );
    }
    assert_eq!(depot.list_refs("refs/heads/").unwrap().len(), 1);
    let created = call(
        &state,
        "POST",
        "/branches",
        Some("w"),
        r#"{"name":"feature","at":"HEAD"}"#,
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(
        created.json(),
        serde_json::json!({"name":"feature","ref":"refs/heads/feature","checkpoint":head,"current":false})
    );
    // It exists now: a second create is a conflict and moves nothing.
    let again = call(
        &state,
        "POST",
        "/branches",
        Some("a"),
        r#"{"name":"refs/heads/feature"}"#,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "ref_exists");
    // Bad bodies, names and revisions: each its status, nothing created.
    for (body, status, code) in [
        (
            r#"{"name":"refs/tags/v1"}"#,
            StatusCode::BAD_REQUEST,
            "bad_branch",
        ),
        (r#"{"name":"a..b"}"#, StatusCode::BAD_REQUEST, "bad_branch"),
        (
            "{\"name\":\"x\u{202e}y\"}",
            StatusCode::BAD_REQUEST,
            "bad_branch",
        ),
        (
            r#"{"name":"x","at":"nope"}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            r#"{"name":"x","at":"HEAD~9"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            r#"{"name":"x","from":"HEAD"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (r#"{"name":7}"#, StatusCode::BAD_REQUEST, "bad_request"),
        ("not json", StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let answer = call(&state, "POST", "/branches", Some("w"), body).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (status, code),
            "{body}: {}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    assert_eq!(depot.list_refs("refs/heads/").unwrap().len(), 2);
    let listed = call(&state, "GET", "/branches", Some("r"), "").await.json();
    assert_eq!(listed[0]["name"], "feature");
    assert_eq!(listed[1]["current"], true);
}

#[tokio::test]
async fn merge_fast_forwards_merges_disjoint_sides_and_replays_overlapping_ones() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let state = state_on(all_tokens(), depot.clone());
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), OPEN).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        call(
            &state,
            "POST",
            "/branches",
            Some("w"),
            r#"{"name":"feature"}"#
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let feature = bank_on(&depot, "feature");
    let bob = r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#;
    let on_feature = feature.apply("http", bob.as_bytes()).unwrap();
    // The read token cannot merge; nothing moves.
    let refused = call(&state, "POST", "/merge", Some("r"), r#"{"rev":"feature"}"#).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_ne!(depot.head().unwrap(), Some(on_feature.checkpoint));
    // master has not moved: a fast-forward.
    let merged = call(&state, "POST", "/merge", Some("w"), r#"{"rev":"feature"}"#).await;
    assert_eq!(
        merged.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&merged.body)
    );
    let body = merged.json();
    assert_eq!(body["outcome"], "fast-forward", "{body}");
    assert_eq!(body["ref"], "refs/heads/master");
    assert_eq!(body["to"], on_feature.checkpoint.to_string());
    assert_eq!(depot.head().unwrap(), Some(on_feature.checkpoint));
    let again = call(&state, "POST", "/merge", Some("w"), r#"{"rev":"feature"}"#).await;
    assert_eq!(again.json()["outcome"], "up-to-date");
    // Both sides move; the same partition on both: feature's command is replayed on master.
    let deposit = |amount: u64| {
        format!(r#"{{"path":"accounts/alice","name":"deposit","params":{{"amount":{amount}}}}}"#)
    };
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), &deposit(10))
            .await
            .status,
        StatusCode::CREATED
    );
    let theirs = feature.apply("http", deposit(5).as_bytes()).unwrap();
    let replayed = call(
        &state,
        "POST",
        "/merge",
        Some("a"),
        r#"{"rev":"refs/heads/feature","into":"master"}"#,
    )
    .await;
    let body = replayed.json();
    assert_eq!(replayed.status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "replayed", "{body}");
    assert_eq!(body["replayed"][0]["from"], theirs.checkpoint.to_string());
    assert_eq!(body["to"], depot.head().unwrap().unwrap().to_string());
    let events = call(&state, "GET", "/events?glob=accounts/alice", Some("r"), "").await;
    // Opened, then both deposits: master's own and feature's, replayed on top.
    assert_eq!(events.json().as_array().unwrap().len(), 3);
    // Sides that wrote disjoint partitions: one merge checkpoint with two parents.
    assert_eq!(
        call(&state, "POST", "/branches", Some("w"), r#"{"name":"side"}"#)
            .await
            .status,
        StatusCode::CREATED
    );
    let side = bank_on(&depot, "side");
    let carol = side
        .apply(
            "http",
            br#"{"path":"accounts/carol","name":"open","params":{"owner":"Carol"}}"#,
        )
        .unwrap();
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), &deposit(1))
            .await
            .status,
        StatusCode::CREATED
    );
    let merged = call(&state, "POST", "/merge", Some("w"), r#"{"rev":"side"}"#).await;
    let body = merged.json();
    assert_eq!(merged.status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "merged", "{body}");
    assert!(body["partitions"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("accounts/carol")));
    let head = depot.head().unwrap().unwrap();
    assert_eq!(body["to"], head.to_string());
    let checkpoint = depot.read_checkpoint(&head).unwrap();
    assert_eq!(checkpoint.parents()[1], carol.checkpoint);
}

#[tokio::test]
async fn a_merge_that_cannot_happen_answers_its_class_and_moves_nothing() {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let state = state_on(all_tokens(), depot.clone());
    assert_eq!(
        call(&state, "POST", "/apply", Some("w"), OPEN).await.status,
        StatusCode::CREATED
    );
    // A history of its own: refs/heads/other shares no checkpoint with master.
    let other = bank_on(&depot, "other");
    other
        .apply(
            "http",
            br#"{"path":"accounts/zed","name":"open","params":{"owner":"Zed"}}"#,
        )
        .unwrap();
    let head = depot.head().unwrap();
    for (body, status, code) in [
        (
            r#"{"rev":"other"}"#,
            StatusCode::BAD_REQUEST,
            "unrelated_histories",
        ),
        (r#"{"rev":"nope"}"#, StatusCode::NOT_FOUND, "not_found"),
        (
            r#"{"rev":"other","into":"refs/tags/x"}"#,
            StatusCode::BAD_REQUEST,
            "bad_branch",
        ),
        (
            r#"{"rev":"other","into":"missing"}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            r#"{"rev":"other","onto":"master"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            r#"{"into":"master"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("[]", StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let answer = call(&state, "POST", "/merge", Some("w"), body).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (status, code),
            "{body}: {}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let bad_session = call_with(
        &state,
        "POST",
        "/merge",
        Some("w"),
        &[("x-retro-session", "two words")],
        r#"{"rev":"other"}"#,
    )
    .await;
    assert_eq!(bad_session.status, StatusCode::BAD_REQUEST);
    assert_eq!(depot.head().unwrap(), head);
}

#[tokio::test]
async fn a_partial_clone_serves_what_it_holds_and_refuses_the_rest_naming_its_filter() {
    // The source: accounts (the bank) and a partition of its own.
    let source = depot::Depot::in_memory().unwrap();
    let note = depot::Event::new(depot::EventName::new("Noted").unwrap(), "{}");
    let part = depot::PartitionName::new("notes/n1").unwrap();
    source
        .commit(depot::CommitRequest::new(
            None,
            vec![(part, note)],
            "s",
            "note",
        ))
        .unwrap();
    let clone = Arc::new(depot::Depot::in_memory().unwrap());
    let filter = depot::PartialFilter::new(["accounts/*", "registry/*"]).unwrap();
    clone.begin_partial_clone(&filter).unwrap();
    clone
        .sync_from(&source, &depot::SyncOptions::default(), |_| {})
        .unwrap();
    let state = state_on(Tokens::default(), clone.clone());
    let refused = call(&state, "GET", "/events?glob=notes/*", None, "").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("'notes/n1'") && message.contains("'accounts/*', 'registry/*'"),
        "{message}"
    );
    // A command on a partition outside the filter (`quiet/…` would answer 200, nothing written).
    let noop = r#"{"path":"quiet/q1","name":"noop","params":{}}"#;
    let refused = call(&state, "POST", "/apply", None, noop).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("'quiet/q1' is outside the partial clone"),
        "{message}"
    );
    assert!(clone
        .partition_events(&depot::PartitionName::new("notes/n1").unwrap())
        .is_err());
    // What it holds works as anywhere: an apply (the bank's open writes accounts/alice and
    // registry/accounts), and its events.
    assert_eq!(
        call(&state, "POST", "/apply", None, OPEN).await.status,
        StatusCode::CREATED
    );
    let events = call(&state, "GET", "/events?glob=accounts/*", None, "").await;
    assert_eq!(events.status, StatusCode::OK);
    assert_eq!(events.json().as_array().unwrap().len(), 1);
    assert!(clone.fsck(|_| {}).unwrap().is_clean());
}
