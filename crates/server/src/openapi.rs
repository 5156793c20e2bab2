//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` and the [`api`]
//! structs, served at `GET /openapi.json`.
//!
//! [`api`]: crate::api

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::OpenApi as _;

use crate::api;
use crate::branches;
use crate::routes;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "retro",
        description = "The HTTP API of a retro depot (`retro serve`). Every error is an \
            `ErrorBody`. Each operation's tag is its class (read, write, admin), which says which \
            bearer token it needs when the server has tokens."
    ),
    paths(
        routes::index,
        routes::openapi,
        routes::health,
        routes::apply,
        routes::refs,
        routes::log,
        routes::object,
        routes::checkpoint,
        routes::partitions,
        routes::events,
        routes::watch,
        routes::metrics,
        routes::failed,
        routes::projections,
        routes::groups,
        routes::group,
        routes::stats,
        routes::redact,
        branches::list_branches,
        branches::create_branch,
        branches::merge,
    ),
    components(schemas(
        api::Health,
        api::Command,
        api::Applied,
        api::NothingWritten,
        api::ErrorBody,
        api::ErrorDetail,
        api::RefKind,
        api::RefEntry,
        api::CheckpointSummary,
        api::CheckpointView,
        api::AffixEvent,
        api::EventEntry,
        api::PartitionEntry,
        api::SnapshotEntry,
        api::ObjectView,
        api::EventObject,
        api::AffixObject,
        api::AffixPartition,
        api::CheckpointObject,
        api::DataObject,
        api::RedactRequest,
        api::Redacted,
        api::Delivered,
        api::DeliveredCheckpoint,
        api::NonFastForward,
        api::Stats,
        api::ConsumerStatus,
        api::ProjectionView,
        api::GenerationView,
        api::ParkedView,
        api::ParkedEventView,
        api::FailedEntry,
        api::GroupStatusBody,
        api::GroupMemberEntry,
        api::GroupSlotEntry,
        api::GroupDelivered,
        api::GroupCheckpoint,
        api::GroupEventEntry,
        api::GroupSlots,
        api::GroupNonFastForward,
        api::LineErrorDetail,
        api::BranchEntry,
        api::BranchRequest,
        api::MergeRequest,
        api::MergeResult,
        api::ReplayedEntry,
    )),
    tags(
        (name = "read", description = "Open unless the server has a read token"),
        (name = "write", description = "Need the write or admin token when the server has one"),
        (name = "admin", description = "Need the admin token (else the write token, else the read token) when the server has one"),
    ),
    modifiers(&Bearer),
)]
struct Document;

/// Declares the bearer scheme and lets every operation use it (optionally: a server without
/// tokens needs none).
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                operation.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                ]);
            }
        }
    }
}

/// The OpenAPI 3 document of the API.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = Document::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}

/// The document as JSON, made once.
pub(crate) fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().unwrap_or_default())
        .clone()
}
