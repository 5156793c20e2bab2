//! The durable state of one projection: which generation is live, which one is rebuilding, and
//! which are parked on a failing batch.
//!
//! A projection `NAME` owns the refs under `refs/projections/NAME/`:
//!
//! - `state` → a *state record*: a root checkpoint with an empty affix, session
//!   [`STATE_SESSION`], whose message is the JSON of [`State`]. Records are immutable objects like
//!   any other (verified by their hash on read); a change of state writes a new record and moves
//!   `state` to it by compare-and-swap, so a switch of the live generation, a rebuild request, a
//!   park and an un-park are each one CAS, and concurrent changes are re-read and re-applied,
//!   never lost (`update`).
//! - `gen-N` → the last checkpoint generation `N` acknowledged (absent: none yet, the generation
//!   starts from the beginning of history).

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use depot::{
    Affix, Checkpoint, Depot, EncodedObject, Expected, LogInfo, Object, ObjectId, RefEdit, RefName,
    RefValue,
};

use super::ProjectionError;

/// The session of state records (and of the commands a process manager issues:
/// `projection-NAME`).
pub const STATE_SESSION: &str = "projection";

/// How often a state change is re-read and re-applied after losing its compare-and-swap.
const UPDATE_ATTEMPTS: u32 = 16;

/// What a state record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The projection's name.
    pub projection: String,
    /// The live generation.
    pub live: u64,
    /// The generation being rebuilt beside it, if any.
    #[serde(default)]
    pub next: Option<u64>,
    /// Generations stopped on a batch that kept failing.
    #[serde(default)]
    pub parked: Vec<Parked>,
}

/// A generation stopped on a failing batch: nothing after it is delivered until
/// `retro project retry` (or [`super::retry`]) clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parked {
    /// The generation.
    pub generation: u64,
    /// The checkpoint of the failing batch (`null`: the switch notice of a caught-up rebuild).
    pub checkpoint: Option<String>,
    /// The failing events: the one the handler named, else every event of the batch.
    pub events: Vec<ParkedEvent>,
    /// The last attempt's error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was parked (RFC 3339, UTC).
    pub at: String,
}

/// One event of a parked batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkedEvent {
    /// The event's id.
    pub id: String,
    /// Its partition.
    pub partition: String,
    /// Its position in the partition.
    pub version: u64,
    /// Its name.
    pub name: String,
}

impl State {
    /// A new projection: generation 1 live, nothing rebuilding or parked.
    pub fn new(projection: &str) -> State {
        State {
            projection: projection.to_owned(),
            live: 1,
            next: None,
            parked: Vec::new(),
        }
    }

    /// The parked record of `generation`, if it is parked.
    pub fn parked(&self, generation: u64) -> Option<&Parked> {
        self.parked.iter().find(|p| p.generation == generation)
    }
}

/// The time now, as state records write it.
pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The ref holding projection `name`'s state record.
pub fn state_ref(name: &str) -> Result<RefName, ProjectionError> {
    Ok(RefName::new(&format!("refs/projections/{name}/state"))?)
}

/// The ref holding generation `generation`'s position.
pub fn generation_ref(name: &str, generation: u64) -> Result<RefName, ProjectionError> {
    Ok(RefName::new(&format!(
        "refs/projections/{name}/gen-{generation}"
    ))?)
}

/// The names of the projections that have state in `depot`, sorted.
pub fn names_in(depot: &Depot) -> Result<Vec<String>, ProjectionError> {
    let mut names = Vec::new();
    for (name, _) in depot.list_refs("refs/projections/")? {
        if let Some(rest) = name.as_str().strip_prefix("refs/projections/") {
            if let Some(projection) = rest.strip_suffix("/state") {
                names.push(projection.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Reads projection `name`'s state record: its id and what it says (`None`: never run).
pub fn read(depot: &Depot, name: &str) -> Result<Option<(ObjectId, State)>, ProjectionError> {
    let Some(value) = depot.read_ref(&state_ref(name)?)? else {
        return Ok(None);
    };
    let RefValue::Direct(id) = value else {
        return Err(ProjectionError::BadState {
            projection: name.to_owned(),
            reason: format!("the ref holds '{value}', not a state record"),
        });
    };
    let checkpoint = depot.read_checkpoint(&id)?;
    let state: State =
        serde_json::from_slice(checkpoint.message()).map_err(|e| ProjectionError::BadState {
            projection: name.to_owned(),
            reason: format!("record {id} is not a projection state: {e}"),
        })?;
    if state.projection != name {
        return Err(ProjectionError::BadState {
            projection: name.to_owned(),
            reason: format!("record {id} is the state of '{}'", state.projection),
        });
    }
    Ok(Some((id, state)))
}

/// The position of generation `generation` (`None`: nothing acknowledged yet).
pub fn position(
    depot: &Depot,
    name: &str,
    generation: u64,
) -> Result<Option<ObjectId>, ProjectionError> {
    Ok(depot
        .read_ref(&generation_ref(name, generation)?)?
        .and_then(|v| v.id()))
}

/// Writes `state` as a new record (objects first: a record no ref names is garbage, never
/// damage) and moves the state ref from `old` to it, with `extra` edits in the same
/// transaction. A lost compare-and-swap is a depot conflict.
fn write(
    depot: &Depot,
    old: Option<ObjectId>,
    state: &State,
    extra: Vec<RefEdit>,
    message: &str,
) -> Result<ObjectId, ProjectionError> {
    let affix = Object::Affix(Affix::new()).to_encoded();
    let body = serde_json::to_vec(state).expect("a state serializes");
    let mut checkpoint = Checkpoint::new(affix.id(), Vec::new(), STATE_SESSION, Utc::now(), body)
        .expect("constant session and a valid date");
    depot.sign_checkpoint(&mut checkpoint);
    let checkpoint: EncodedObject = Object::Checkpoint(checkpoint).to_encoded();
    let id = checkpoint.id();
    depot.write_objects(&[affix, checkpoint])?;
    let mut edits = vec![RefEdit {
        name: state_ref(&state.projection)?,
        expected: Expected::MustBeOrAbsent(old),
        new: Some(RefValue::Direct(id)),
        log: LogInfo {
            session: STATE_SESSION.to_owned(),
            message: message.to_owned(),
        },
    }];
    edits.extend(extra);
    depot.update_refs(&edits)?;
    Ok(id)
}

/// What a change of state decided.
pub(crate) enum Change<T> {
    /// Write this state (with these extra ref edits) and return the value.
    Write(State, Vec<RefEdit>, T),
    /// Write nothing; return the value.
    Keep(T),
}

/// Reads the state, lets `change` decide, writes the result by compare-and-swap; on a lost
/// race, reads again and decides again (so a concurrent change is never overwritten).
pub(crate) fn update<T>(
    depot: &Depot,
    name: &str,
    message: &str,
    mut change: impl FnMut(Option<&State>) -> Result<Change<T>, ProjectionError>,
) -> Result<T, ProjectionError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let current = read(depot, name)?;
        let (old, state) = match &current {
            Some((id, state)) => (Some(*id), Some(state)),
            None => (None, None),
        };
        match change(state)? {
            Change::Keep(value) => return Ok(value),
            Change::Write(new, extra, value) => match write(depot, old, &new, extra, message) {
                Ok(_) => return Ok(value),
                Err(ProjectionError::Depot(e)) if e.class() == depot::ErrorClass::Conflict => {
                    continue
                }
                Err(e) => return Err(e),
            },
        }
    }
    Err(ProjectionError::Contended {
        projection: name.to_owned(),
    })
}

/// The edit deleting generation `generation`'s position ref, if it exists.
pub(crate) fn delete_generation(
    depot: &Depot,
    name: &str,
    generation: u64,
) -> Result<Option<RefEdit>, ProjectionError> {
    let Some(at) = position(depot, name, generation)? else {
        return Ok(None);
    };
    Ok(Some(RefEdit {
        name: generation_ref(name, generation)?,
        expected: Expected::MustBe(at),
        new: None,
        log: LogInfo {
            session: STATE_SESSION.to_owned(),
            message: format!("projection {name}: generation {generation} retired"),
        },
    }))
}
