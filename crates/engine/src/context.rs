//! What a command handler sees: the command, the session, its aggregate's address and version,
//! read access to other aggregates, and where to put the events it emits.
//!
//! It builds on the vocabulary in [`aggregate`](crate::aggregate) only; the runners and the
//! manifest in [`domain`](crate::domain) build on it, never the other way round.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use depot::{Depot, Event, EventName, PartitionName};

use crate::aggregate::{
    fold, to_event, Aggregate, DomainError, DomainEvent, EventError, Events, RecordedEvent,
};
use crate::command::Command;
use crate::upcast::{UpcastError, Upcasters};

/// Makes ids for new aggregates (`accounts` → `accounts/<id>`).
pub type IdFn = dyn Fn() -> String + Send + Sync;

/// Another aggregate, loaded for reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// Its state.
    pub state: A,
    /// How many events it has (0: it does not exist).
    pub version: u64,
}

/// The handler's view of one command application.
pub struct Context<'a> {
    pub(crate) depot: &'a Depot,
    pub(crate) command: &'a Command,
    pub(crate) path: PartitionName,
    pub(crate) session: &'a str,
    pub(crate) version: u64,
    pub(crate) emitted: Vec<(PartitionName, Event)>,
    pub(crate) reads: Vec<PartitionName>,
    pub(crate) id_fn: &'a IdFn,
    /// A failure to read the depot inside `load`: the handler sees a `read_failed` rejection
    /// (it cannot go on), but the engine reports the depot's error, classed as what it is (often
    /// retryable), and records no domain rejection.
    pub(crate) read_failure: Option<depot::Error>,
    /// A stored event that does not decode, met while rehydrating (this aggregate, or one
    /// loaded): the engine reports it as [`crate::ApplyError::Event`], not as a rejection.
    pub(crate) event_failure: Option<EventError>,
    /// The snapshot policy of this aggregate, if any.
    pub(crate) snapshot_policy: Option<std::sync::Arc<crate::domain::SnapshotPolicy>>,
    /// Whether the engine wants the rehydrated state for a new snapshot (Rust aggregates).
    pub(crate) snapshot_wanted: bool,
    /// The state a runner handed back for a snapshot (encoded).
    pub(crate) snapshot_state: Option<Vec<u8>>,
    /// Why the snapshot the runner was given cannot be used (it did not run the command).
    pub(crate) snapshot_unusable: Option<String>,
    /// The domain's upcasters: events read are upcast, events emitted get their name's newest
    /// schema version.
    pub(crate) upcasters: &'a Upcasters,
    /// A stored event that cannot be upcast, met inside `load`: reported as
    /// [`crate::ApplyError::Upcast`], not as a rejection.
    pub(crate) upcast_failure: Option<UpcastError>,
}

impl<'a> Context<'a> {
    /// The aggregate's address (`accounts/alice`).
    pub fn path(&self) -> &PartitionName {
        &self.path
    }

    /// The session applying the command.
    pub fn session(&self) -> &str {
        self.session
    }

    /// How many events the aggregate had when rehydrated.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the aggregate had any event.
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// The command as given.
    pub fn command(&self) -> &Command {
        self.command
    }

    /// The parameters.
    pub fn params(&self) -> &Map<String, Value> {
        self.command.params()
    }

    /// One parameter, typed; a missing or mistyped one is an `invalid_params` rejection.
    pub fn param<T: DeserializeOwned>(&self, key: &str) -> Result<T, DomainError> {
        let value = self
            .params()
            .get(key)
            .ok_or_else(|| DomainError::invalid_params(format!("missing parameter '{key}'")))?;
        serde_json::from_value(value.clone())
            .map_err(|e| DomainError::invalid_params(format!("parameter '{key}': {e}")))
    }

    /// All parameters as one typed value.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, DomainError> {
        serde_json::from_value(Value::Object(self.params().clone()))
            .map_err(|e| DomainError::invalid_params(e.to_string()))
    }

    /// Emits an event to this aggregate's partition.
    pub fn emit<E: DomainEvent>(&mut self, event: &E) -> Result<(), DomainError> {
        let event = self.stamped(to_event(event)?);
        self.emitted.push((self.path.clone(), event));
        Ok(())
    }

    /// Emits an event to another partition (in the same affix: all or nothing).
    pub fn emit_to<E: DomainEvent>(
        &mut self,
        partition: &str,
        event: &E,
    ) -> Result<(), DomainError> {
        let partition = other_partition(partition)?;
        let event = self.stamped(to_event(event)?);
        self.emitted.push((partition, event));
        Ok(())
    }

    /// Emits one of the domain's [`Events`] to this aggregate's partition.
    pub fn emit_event<E: Events>(&mut self, event: &E) -> Result<(), DomainError> {
        let event = self.stamped(event.to_event()?);
        self.emitted.push((self.path.clone(), event));
        Ok(())
    }

    /// Emits one of the domain's [`Events`] to another partition (in the same affix: all or
    /// nothing).
    pub fn emit_event_to<E: Events>(
        &mut self,
        partition: &str,
        event: &E,
    ) -> Result<(), DomainError> {
        let partition = other_partition(partition)?;
        let event = self.stamped(event.to_event()?);
        self.emitted.push((partition, event));
        Ok(())
    }

    /// Emits an untyped event.
    pub fn emit_json(
        &mut self,
        partition: &str,
        name: &str,
        data: &Value,
    ) -> Result<(), DomainError> {
        let partition = other_partition(partition)?;
        let name =
            EventName::new(name).map_err(|e| DomainError::new("bad_event", e.to_string()))?;
        let event = self.stamped(Event::new(name, data.to_string()));
        self.emitted.push((partition, event));
        Ok(())
    }

    /// Emits an untyped event at an explicit schema version (the events of [`Context::emit`]
    /// and the others get their name's newest version, as the domain's upcasters declare it).
    /// A version newer than the domain knows is a `bad_event` rejection.
    pub fn emit_json_versioned(
        &mut self,
        partition: &str,
        name: &str,
        version: u32,
        data: &Value,
    ) -> Result<(), DomainError> {
        let partition = other_partition(partition)?;
        let newest = self.upcasters.current(name);
        if version == 0 || version > newest {
            return Err(DomainError::new(
                "bad_event",
                format!("event {name} v{version}: the domain's versions of it are v1 to v{newest}"),
            ));
        }
        let name =
            EventName::new(name).map_err(|e| DomainError::new("bad_event", e.to_string()))?;
        self.emitted.push((
            partition,
            Event::new(name, data.to_string()).with_version(version),
        ));
        Ok(())
    }

    /// The newest schema version of event `name` in this domain (1 without upcasters).
    pub fn event_version(&self, name: &str) -> u32 {
        self.upcasters.current(name)
    }

    /// `event` at its name's newest schema version.
    pub(crate) fn stamped(&self, event: Event) -> Event {
        let version = self.upcasters.current(event.name().as_str());
        event.with_version(version)
    }

    /// Rehydrates another aggregate for reading. It joins the command's read set: if it changes
    /// before this command lands, the command is re-run on fresh state.
    pub fn load<A: Aggregate>(&mut self, path: &str) -> Result<Loaded<A>, DomainError> {
        let partition = PartitionName::new(path)
            .map_err(|e| DomainError::new("bad_partition", e.to_string()))?;
        let records = match self.depot.partition_events(&partition) {
            Ok(records) => records,
            Err(e) => {
                let rejection = DomainError::new("read_failed", e.to_string());
                self.read_failure = Some(e);
                return Err(rejection);
            }
        };
        let recorded: Vec<RecordedEvent> = match self.upcasters.recorded(&records) {
            Ok(recorded) => recorded,
            Err(e) => {
                let rejection = DomainError::new("malformed_event", e.to_string());
                self.upcast_failure = Some(e);
                return Err(rejection);
            }
        };
        let state = match fold::<A>(&partition, &recorded) {
            Ok(state) => state,
            Err(e) => {
                let rejection = DomainError::new("malformed_event", e.to_string());
                self.event_failure = Some(e);
                return Err(rejection);
            }
        };
        self.reads.push(partition);
        Ok(Loaded {
            state,
            version: records.len() as u64,
        })
    }

    /// A fresh id from the engine's id function.
    pub fn new_id(&self) -> String {
        (self.id_fn)()
    }
}

/// A partition named by a handler, or the `bad_partition` rejection.
fn other_partition(name: &str) -> Result<PartitionName, DomainError> {
    PartitionName::new(name).map_err(|e| DomainError::new("bad_partition", e.to_string()))
}
