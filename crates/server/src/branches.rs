//! Branches over HTTP: `GET /branches`, `POST /branches` (create one, as `retro branch NAME
//! [REV]`) and `POST /merge` (merge a revision into a branch in one compare-and-swap, as `retro
//! merge REV`; `engine::merge`, docs/branches.md). The handlers and the branch-name rule, which
//! `retro branch` shares.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use depot::{Depot, Expected, LogInfo, RefEdit, RefName, RefValue};

use crate::api::{BranchEntry, BranchRequest, MergeRequest, MergeResult};
use crate::error::{status, status_code_name, ApiError};
use crate::routes::{read, require_json, session};
use crate::AppState;

/// A name that is not a branch's: not `NAME` or `refs/heads/NAME`, or not a valid ref name.
#[derive(Debug, thiserror::Error)]
pub enum BranchNameError {
    /// Another kind of ref (`refs/tags/x`, `HEAD`).
    #[error("'{}' is not a branch name: a branch is NAME or refs/heads/NAME", depot::shown(.0))]
    NotABranch(String),
    /// Not a valid ref name.
    #[error(transparent)]
    Ref(#[from] depot::refdb::RefNameError),
    /// A name that reads as another.
    #[error("branch name '{}' contains an invisible or bidi format character", depot::shown(.0))]
    Invisible(String),
}

/// `NAME` or `refs/heads/NAME`, validated as a ref name (and, as new partition names, without
/// invisible or bidi format characters).
pub fn branch_ref(name: &str) -> Result<RefName, BranchNameError> {
    let full = if name.starts_with("refs/heads/") {
        name.to_owned()
    } else if name.starts_with("refs/") || name == "HEAD" {
        return Err(BranchNameError::NotABranch(name.to_owned()));
    } else {
        format!("refs/heads/{name}")
    };
    let reference = RefName::new(&full)?;
    if full.chars().any(depot::is_invisible) {
        return Err(BranchNameError::Invisible(full));
    }
    Ok(reference)
}

fn bad_branch(err: BranchNameError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_branch", err.to_string())
}

/// The branch `HEAD` names (a depot without a `HEAD` file is on master); detached: `None`.
fn current_branch(depot: &Depot) -> Result<Option<RefName>, depot::Error> {
    match depot.read_ref(&RefName::head())? {
        Some(RefValue::Symbolic(target)) => Ok(Some(target)),
        None => Ok(Some(RefName::master())),
        Some(RefValue::Direct(_)) => Ok(None),
    }
}

fn body_of<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    route: &str,
    shape: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{route} takes {shape}: {e}"),
        )
    })
}

/// The branches (refs under `refs/heads/`), in name order, the current one marked.
#[utoipa::path(get, path = "/branches", tag = "read",
    responses((status = 200, body = Vec<BranchEntry>), (status = "default", body = crate::api::ErrorBody)))]
pub(crate) async fn list_branches(
    State(state): State<AppState>,
) -> Result<Json<Vec<BranchEntry>>, ApiError> {
    let depot = state.depot.clone();
    let list = read(&state, move || {
        let current = current_branch(&depot)?;
        Ok(depot
            .list_refs("refs/heads/")?
            .into_iter()
            .filter_map(|(name, value)| {
                let id = value.id()?;
                let is_current = current.as_ref() == Some(&name);
                Some(BranchEntry::new(&name, &id, is_current))
            })
            .collect())
    })
    .await?;
    Ok(Json(list))
}

/// Creates a branch at a revision (default `HEAD`), by compare-and-swap from nothing: a branch
/// that exists is a 409 and is left as it is.
#[utoipa::path(post, path = "/branches", tag = "write",
    request_body(content = BranchRequest, content_type = "application/json"),
    params(("X-Retro-Session" = Option<String>, Header, description = "The session its reflog line names (default `http`)")),
    responses(
        (status = 201, description = "Created", body = BranchEntry),
        (status = 400, description = "Malformed body, a bad branch name or revision, HEAD unborn", body = crate::api::ErrorBody),
        (status = 404, description = "The revision names nothing", body = crate::api::ErrorBody),
        (status = 409, description = "The branch exists (or a ref its name clashes with)", body = crate::api::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::api::ErrorBody),
        (status = 503, description = "The depot lock is busy: retry", body = crate::api::ErrorBody),
    ))]
pub(crate) async fn create_branch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers, "POST /branches")?;
    let session = session(&headers)?;
    let request: BranchRequest = body_of(
        &body,
        "POST /branches",
        "{\"name\": branch, \"at\": revision (optional)}",
    )?;
    let name = branch_ref(&request.name).map_err(bad_branch)?;
    let depot = state.depot.clone();
    let created = read(&state, move || {
        let at = match &request.at {
            Some(rev) => depot.resolve_revision(rev)?,
            None => depot.head()?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "HEAD has no checkpoint yet: give 'at', or apply a command first",
                )
            })?,
        };
        if let Some(value) = depot.read_ref(&name)? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ref_exists",
                format!("branch '{name}' already exists and holds {value}"),
            ));
        }
        depot.update_refs(&[RefEdit {
            name: name.clone(),
            expected: Expected::MustNotExist,
            new: Some(RefValue::Direct(at)),
            log: LogInfo {
                session,
                message: "branch: created".to_owned(),
            },
        }])?;
        let current = current_branch(&depot)?.as_ref() == Some(&name);
        Ok(BranchEntry::new(&name, &at, current))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// The answer for a merge that did not happen (the branch is as it was), by the error's class:
/// a replay's failure as `POST /apply` answers it (a rejection with the domain's code, a broken
/// handler 502, …), its message saying what the merge was doing.
fn merge_error(err: &engine::merge::MergeError) -> ApiError {
    use engine::merge::MergeError;
    let code = match err {
        MergeError::Depot(e) => return crate::error::depot_error(e),
        MergeError::ReplayFailed { source, .. } => {
            let inner = ApiError::of_apply(source);
            if inner.status.is_server_error() && inner.status != StatusCode::BAD_GATEWAY {
                return inner;
            }
            let message = format!("{err}: {}", inner.message);
            return ApiError::new(inner.status, &inner.code, message);
        }
        MergeError::Rejected { error, .. } => error.code.clone(),
        MergeError::Unrelated { .. } => "unrelated_histories".to_owned(),
        MergeError::MergeInReplay { .. } => "merge_in_replay".to_owned(),
        MergeError::FailedCommand { .. } => "failed_command".to_owned(),
        MergeError::BadSession(_) => "bad_session".to_owned(),
        _ => status_code_name(status(err.class())).to_owned(),
    };
    let status = status(err.class());
    if status.is_server_error() {
        return ApiError::internal(err);
    }
    ApiError::new(status, &code, err.to_string())
}

/// Merges a revision into a branch (default: the one `HEAD` names) in one compare-and-swap: a
/// fast-forward, a two-parent merge checkpoint when the sides wrote disjoint partitions, or the
/// other side's commands re-run on top with the server's manifest (docs/branches.md). Whatever
/// fails, the branch is as it was.
#[utoipa::path(post, path = "/merge", tag = "write",
    request_body(content = MergeRequest, content_type = "application/json"),
    params(("X-Retro-Session" = Option<String>, Header, description = "The session the merge is written in (default `http`)")),
    responses(
        (status = 200, description = "Merged (or already up to date)", body = MergeResult),
        (status = 400, description = "Malformed body, a bad branch name or session, unrelated histories, a failed command's checkpoint, a merge checkpoint that would have to be replayed, HEAD detached", body = crate::api::ErrorBody),
        (status = 404, description = "The revision or the branch names nothing", body = crate::api::ErrorBody),
        (status = 409, description = "The branch kept moving during the merge: retry", body = crate::api::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::api::ErrorBody),
        (status = 422, description = "The domain rejected a replayed command (its code); nothing was merged", body = crate::api::ErrorBody),
        (status = 503, description = "The depot lock is busy: retry", body = crate::api::ErrorBody),
    ))]
pub(crate) async fn merge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<MergeResult>, ApiError> {
    require_json(&headers, "POST /merge")?;
    let session = session(&headers)?;
    let request: MergeRequest = body_of(
        &body,
        "POST /merge",
        "{\"rev\": revision, \"into\": branch (optional)}",
    )?;
    let into = request
        .into
        .as_deref()
        .map(branch_ref)
        .transpose()
        .map_err(bad_branch)?;
    let engine = state.engine.clone();
    let result = read(&state, move || {
        let depot = engine.depot();
        let branch = match into {
            Some(branch) => {
                if depot.read_ref(&branch)?.is_none() {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no such branch '{branch}'"),
                    ));
                }
                branch
            }
            None => current_branch(depot)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "HEAD is detached, not on a branch: give 'into'",
                )
            })?,
        };
        let theirs = depot.resolve_revision(&request.rev)?;
        let outcome = engine::merge::merge(
            depot,
            engine.manifest(),
            &branch,
            theirs,
            &request.rev,
            &session,
        )
        .map_err(|e| merge_error(&e))?;
        Ok(MergeResult::new(&branch, &outcome))
    })
    .await?;
    Ok(Json(result))
}
