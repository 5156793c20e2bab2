//! The library without a socket: the router driven with `tower::ServiceExt::oneshot` over a
//! depot in memory.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::api::{Applied, Health, Stats};
use crate::{router, AppState, Config, Tokens};

const OPEN: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;

fn state(tokens: Tokens) -> AppState {
    let depot = Arc::new(depot::Depot::in_memory().unwrap());
    let mut manifest = engine::Manifest::new();
    engine::example::register_bank(&mut manifest).unwrap();
    // A command that decides there is nothing to record.
    manifest
        .aggregate::<Quiet>("quiet")
        .unwrap()
        .command("noop", |_, _| Ok(()))
        .unwrap();
    let engine = engine::Engine::new(depot.clone(), manifest);
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
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost:7070");
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
    for (method, path) in documented(&document) {
        let path = path.replace("{id}", "HEAD").replace("{rev}", "HEAD");
        let body = if method == "POST" {
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
