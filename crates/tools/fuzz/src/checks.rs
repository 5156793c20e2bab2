//! Properties checked on arbitrary input, one function per fuzz target.
//!
//! Each function takes raw bytes and panics when a property fails (libFuzzer reports the panic as
//! a crash). They use only `depot`'s public API and no other crate, because this file is also
//! compiled into the main workspace's test binary (`tests/depot/fuzz_smoke.rs`) by `#[path]`.

use std::path::{Component, Path};
use std::str::FromStr;
use std::sync::OnceLock;

use depot::{
    CommitRequest, Depot, Event, EventName, Object, ObjectId, PartitionName, Prefix, RefName,
    Revision, Step,
};

/// A fuzz check: panics when an input breaks an invariant.
pub type Check = fn(&[u8]);

/// Every target, by name, as `corpus-seed/<name>/` and `fuzz_targets/<name>.rs` name them.
pub const TARGETS: &[(&str, Check)] = &[
    ("object_decode", object_decode),
    ("object_id", object_id),
    ("ref_name", ref_name),
    ("partition_name", partition_name),
    ("revision", revision),
    ("event_format", event_format),
    ("group_state", group_state),
    ("inclusion_proof", inclusion_proof),
];

/// A consumer group's stored state (`depot::group::GroupState`) never panics its decoder, as
/// given or as a body under a correct checksum header (so the body parser is reached); what
/// decodes re-encodes to a state that decodes to the same value.
pub fn group_state(data: &[u8]) {
    use depot::group::GroupState;
    let mut framed = format!(
        "retro-group 1 {}\n",
        ObjectId::of(data).to_string().trim_start_matches("sha256:")
    )
    .into_bytes();
    framed.extend_from_slice(data);
    for input in [data, framed.as_slice()] {
        let Ok(state) = GroupState::decode(input) else {
            continue;
        };
        let again = GroupState::decode(&state.encode()).expect("an encoded state decodes");
        assert_eq!(
            again, state,
            "decoding the re-encoding gives the same state"
        );
    }
}

/// `InclusionProof::parse` and `verify` never panic on any bytes; a proof that parses writes
/// back to a file that parses to the same proof, and one that verifies verifies the same way
/// again, and no longer once the trusted id is another.
pub fn inclusion_proof(data: &[u8]) {
    let Ok(proof) = depot::proof::InclusionProof::parse(data) else {
        return;
    };
    let again = depot::proof::InclusionProof::parse(proof.to_json().as_bytes())
        .expect("a parsed proof's own file parses");
    assert_eq!(again, proof, "a proof survives writing and reading back");
    let Ok(proven) = proof.verify(None) else {
        return;
    };
    assert_eq!(proof.verify(Some(proven.at)).ok(), Some(proven.clone()));
    let other = ObjectId::of(proven.at.as_bytes());
    assert!(
        proof.verify(Some(other)).is_err(),
        "a proof at one checkpoint is refused for another"
    );
}

/// An event header's `<format>` token (`json`, `json;v=<N>`) never panics the decoder; one that
/// decodes names the canonical form of its schema version (`json` for 1, `json;v=N` for N >= 2),
/// so the event re-encodes to the very same bytes.
pub fn event_format(data: &[u8]) {
    let Ok(format) = std::str::from_utf8(data) else {
        return;
    };
    if format.contains(['\0', ' ']) {
        return;
    }
    let bytes = format!("event {format} e 2\0{{}}").into_bytes();
    let Ok(Object::Event(event)) = Object::decode(&bytes) else {
        return;
    };
    let canonical = match event.version() {
        1 => "json".to_owned(),
        n => format!("json;v={n}"),
    };
    assert_eq!(canonical, format, "only the canonical form decodes");
    assert_eq!(Object::Event(event).encode(), bytes);
}

/// `Object::decode` never panics; what decodes re-encodes to the very same bytes, decodes again
/// to the same object, and is named by the SHA-256 of those bytes, stably.
pub fn object_decode(data: &[u8]) {
    let Ok(object) = Object::decode(data) else {
        return;
    };
    let encoded = object.encode();
    assert_eq!(
        encoded.as_slice(),
        data,
        "a decoded object must re-encode to the bytes it came from"
    );
    let id = ObjectId::of(data);
    let named = object.to_encoded();
    assert_eq!(named.id(), id, "the id is the hash of the encoding");
    assert_eq!(
        object.to_encoded().id(),
        id,
        "encoding twice gives the same id"
    );
    assert_eq!(named.bytes(), data);
    assert_eq!(
        named.kind().ok(),
        Some(object.kind()),
        "the header names the kind"
    );
    assert_eq!(
        Object::decode(&encoded).as_ref().ok(),
        Some(&object),
        "decoding the re-encoding gives the same object"
    );
    let shown = id.to_string();
    assert_eq!(ObjectId::from_str(&shown).ok(), Some(id));
}

/// `ObjectId::from_str` and `Prefix::from_str` never panic; what parses displays back as given
/// (a prefix without its optional `sha256:` tag) and parses again to the same value.
pub fn object_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = ObjectId::from_str(text) {
        assert_eq!(id.to_string(), text, "an id displays as it was written");
        assert_eq!(ObjectId::from_str(&id.to_string()).ok(), Some(id));
        assert_eq!(ObjectId::from_hex(&id.to_hex()).ok(), Some(id));
        let prefix = Prefix::from_str(text).expect("a full id is also a valid prefix");
        assert!(prefix.matches(&id));
        assert_eq!(prefix.lower_bound(), id);
    }
    if let Ok(prefix) = Prefix::from_str(text) {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        assert_eq!(prefix.to_string(), hex, "a prefix displays without its tag");
        assert_eq!(prefix.as_str(), hex);
        assert!(hex.len() >= Prefix::MIN_LEN && hex.len() <= 64);
        assert_eq!(
            Prefix::from_str(&prefix.to_string()).ok(),
            Some(prefix.clone())
        );
        let lower = prefix.lower_bound();
        assert!(
            prefix.matches(&lower),
            "a prefix matches its own lower bound"
        );
        assert!(lower.to_hex().starts_with(hex));
    }
}

/// Asserts that `name`, joined onto a directory, names something inside that directory.
fn assert_stays_inside(name: &str) {
    let base = Path::new("/depot/root");
    let joined = base.join(name);
    assert!(
        joined.starts_with(base),
        "{name:?} joined onto {base:?} leaves it: {joined:?}"
    );
    for component in joined
        .strip_prefix(base)
        .expect("checked above")
        .components()
    {
        assert!(
            matches!(component, Component::Normal(_)),
            "{name:?} has a {component:?} component once joined onto a directory"
        );
    }
    assert!(!name.contains('\0'), "{name:?} holds a NUL byte");
}

/// `RefName::new` never panics, and an accepted name never contains `..`, never starts with `/`,
/// has no component starting with `.`, and joined onto a directory stays inside it.
pub fn ref_name(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = RefName::new(text) else {
        return;
    };
    assert_eq!(name.as_str(), text);
    assert!(!text.contains(".."), "{text:?} contains '..'");
    assert!(!text.starts_with('/'), "{text:?} starts with '/'");
    assert!(!text.ends_with('/'), "{text:?} ends with '/'");
    for component in text.split('/') {
        assert!(!component.is_empty(), "{text:?} has an empty component");
        assert!(
            !component.starts_with('.'),
            "{text:?} has a component starting with '.'"
        );
        assert!(
            !component.ends_with(".lock"),
            "{text:?} has a component ending with '.lock'"
        );
    }
    assert!(
        text == "HEAD" || text.starts_with("refs/"),
        "{text:?} is neither HEAD nor under refs/"
    );
    assert_stays_inside(text);
    // The lock file and the reflog beside it stay inside too.
    assert_stays_inside(&format!("{text}.lock"));
    assert_stays_inside(&format!("logs/{text}"));
    assert_eq!(
        RefName::from_str(&name.to_string()).ok(),
        Some(name.clone())
    );
    let _ = name.short();
}

/// `PartitionName::new` never panics, and an accepted name has only non-empty segments that are
/// not `.` or `..`, never starts with `/`, holds no whitespace or control characters, and joined
/// onto a directory stays inside it.
pub fn partition_name(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = PartitionName::new(text) else {
        return;
    };
    assert_eq!(name.as_str(), text);
    assert!(!text.is_empty() && text.len() <= PartitionName::MAX_LEN);
    // Unlike a ref name, a partition may contain `..` inside a segment (`a..b`, `...x`) and a
    // segment may start with `.`: its contract is about whole segments (see `corpus-seed/
    // partition_name/dots-inside-a-segment`, found by libFuzzer against a stricter check).
    assert!(!text.starts_with('/'), "{text:?} starts with '/'");
    for segment in text.split('/') {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{text:?} has a bad segment {segment:?}"
        );
    }
    assert!(
        !text.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{text:?} holds whitespace or a control character"
    );
    assert_stays_inside(text);
    assert_eq!(
        PartitionName::from_str(name.as_ref()).ok(),
        Some(name.clone())
    );
    assert!(text.starts_with(name.kind()) && !name.kind().is_empty());
}

/// A small in-memory depot with three checkpoints on `master`, for resolving revisions.
fn revision_depot() -> &'static Depot {
    static DEPOT: OnceLock<Depot> = OnceLock::new();
    DEPOT.get_or_init(|| {
        let depot = Depot::in_memory().expect("an in-memory depot");
        let mut base = None;
        for n in 0..3 {
            let partition = PartitionName::new(&format!("fuzz/{n}")).expect("valid partition");
            let event = Event::new(
                EventName::new("Fuzzed").expect("valid event name"),
                format!(r#"{{"n":{n}}}"#),
            );
            let request = CommitRequest::new(base, vec![(partition, event)], "fuzz", "seed");
            base = Some(depot.commit(request).expect("commit").checkpoint);
        }
        depot
    })
}

/// `Revision::parse` never panics; what parses has a non-empty base without `~` or `^`, and its
/// canonical form parses to the same revision. Resolving any text against a small depot never
/// panics either, and what resolves exists.
pub fn revision(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = Revision::parse(text) {
        assert!(
            !parsed.base.is_empty(),
            "{text:?} parsed with an empty base"
        );
        assert!(
            !parsed.base.contains(['~', '^']),
            "{text:?} parsed with a base holding '~' or '^'"
        );
        assert!(text.starts_with(&parsed.base));
        let mut canonical = parsed.base.clone();
        for step in &parsed.steps {
            match step {
                Step::Ancestor(n) => canonical.push_str(&format!("~{n}")),
                Step::Parent(n) => canonical.push_str(&format!("^{n}")),
            }
        }
        if canonical.len() <= 1024 {
            assert_eq!(
                Revision::parse(&canonical).ok().as_ref(),
                Some(&parsed),
                "the canonical form {canonical:?} of {text:?} parses differently"
            );
        }
    }
    let depot = revision_depot();
    if let Ok(id) = depot.resolve_revision(text) {
        assert!(
            depot.objects().contains(&id).unwrap_or(false),
            "{text:?} resolved to {id}, which the depot does not hold"
        );
    }
}
