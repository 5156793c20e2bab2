use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;

fn id(text: &str) -> ObjectId {
    text.parse().unwrap()
}

fn p(name: &str) -> PartitionName {
    PartitionName::new(name).unwrap()
}

#[test]
fn go_retro_event_vector() {
    let event = Event::new(
        EventName::new("dummy").unwrap(),
        r#"{"foo":"hello","bar":"world"}"#,
    );
    let encoded = Object::from(event.clone()).to_encoded();
    assert_eq!(
        encoded.bytes(),
        b"event json dummy 29\0{\"foo\":\"hello\",\"bar\":\"world\"}"
    );
    assert_eq!(
        encoded.id(),
        id("sha256:0756fae7f4a43d60b5532e1d4da5665daeb0f1a5274f363b99a7757511ec88db")
    );
    assert_eq!(encoded.decode().unwrap(), Object::Event(event));
}

#[test]
fn go_retro_affix_vector() {
    let h = ObjectId::of(b"foo");
    let affix: Affix = [(p("baz/123"), h), (p("bar/123"), h)].into_iter().collect();
    let encoded = Object::from(affix.clone()).to_encoded();
    assert!(encoded.bytes().starts_with(b"affix 164\0"));
    assert_eq!(
        encoded.id(),
        id("sha256:f51b6e929c8f79300603460b9d545c51993cfc5c7d2f05808357baec29f84a4d")
    );
    assert_eq!(encoded.decode().unwrap(), Object::Affix(affix));
}

#[test]
fn go_retro_checkpoint_vector() {
    let mut fields = BTreeMap::new();
    fields.insert(
        FieldKey::new("session").unwrap(),
        FieldValue::new("DEADBEEF-SESSIONID").unwrap(),
    );
    let checkpoint =
        Checkpoint::with_fields(ObjectId::of(b"hello"), vec![], fields, r#"{"foo":"bar"}"#);
    let encoded = Object::from(checkpoint.clone()).to_encoded();
    assert!(encoded
        .bytes()
        .starts_with(b"checkpoint 120\0affix sha256:2cf24dba"));
    assert_eq!(
        encoded.id(),
        id("sha256:7903903299257e21884b0fd0f5fa50145bdf47ef0b0ffac60dbf52642b758044")
    );
    let decoded = encoded.decode().unwrap();
    assert_eq!(decoded, Object::Checkpoint(checkpoint));
    let Object::Checkpoint(decoded) = decoded else {
        unreachable!()
    };
    assert_eq!(decoded.session(), "DEADBEEF-SESSIONID");
    assert_eq!(decoded.date(), None);
}

#[test]
fn checkpoint_with_parents_and_date_round_trips() {
    let date = Utc.with_ymd_and_hms(2019, 2, 11, 14, 51, 0).unwrap();
    let checkpoint = Checkpoint::new(
        ObjectId::of(b"a"),
        vec![ObjectId::of(b"p1"), ObjectId::of(b"p2")],
        "s1",
        date,
        "line one\n\nline three",
    )
    .unwrap();
    let bytes = Object::from(checkpoint.clone()).encode();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\ndate 2019-02-11T14:51:00Z\nsession s1\n\nline one"));
    let Object::Checkpoint(decoded) = Object::decode(&bytes).unwrap() else {
        panic!("not a checkpoint")
    };
    assert_eq!(decoded, checkpoint);
    assert_eq!(decoded.date(), Some(date));
    assert_eq!(decoded.parents().len(), 2);
}

fn err(bytes: &[u8]) -> String {
    Object::decode(bytes).unwrap_err().to_string()
}

#[test]
fn decoding_names_what_is_wrong() {
    assert_eq!(
        err(b"no nul here"),
        "object has no header: no NUL byte in the first 512 bytes"
    );
    assert_eq!(err(b"blob 3\0abc"), "unknown object kind 'blob'");
    assert_eq!(
        err(b"event json x 4\0abc"),
        "header declares a body of 4 bytes but the body has 3"
    );
    assert_eq!(err(b"affix 03\0abc"), "malformed object header 'affix 03'");
    assert_eq!(
        err(b"event xml x 0\0"),
        "event encoding 'xml' is not supported (only 'json', 'sealed', 'json;v=<N>' and 'sealed;v=<N>')"
    );
    let affix = b"0 a/1 sha256:zz\n";
    let mut bytes = format!("affix {}\0", affix.len()).into_bytes();
    bytes.extend_from_slice(affix);
    assert!(err(&bytes).starts_with("affix line 1: bad object id"));

    let h = ObjectId::of(b"x");
    let body = format!("affix {h}\ndate 2019-02-11T14:51:00Z\n\nmsg\n");
    let bytes = format!("checkpoint {}\0{body}", body.len());
    assert_eq!(err(bytes.as_bytes()), "checkpoint has no 'session' field");

    let body = format!("affix {h}\nsession s\ndate 2019-02-11T14:51:00Z\n\nmsg\n");
    let bytes = format!("checkpoint {}\0{body}", body.len());
    assert!(err(bytes.as_bytes()).contains("out of order"));

    let body = format!("affix {h}\ndate yesterday\nsession s\n\nmsg\n");
    let bytes = format!("checkpoint {}\0{body}", body.len());
    assert!(err(bytes.as_bytes()).contains("date 'yesterday'"));
}

#[test]
fn affix_indexes_and_order_are_checked() {
    let h = ObjectId::of(b"x");
    for body in [
        format!("1 a/1 {h}\n"),
        format!("0 b/1 {h}\n1 a/1 {h}\n"),
        format!("0 a/1 {h}\n2 b/1 {h}\n"),
        format!("0 a/1 {h}\n1 a/1 {h}\n"),
        format!("0 a/1 {h}"),
    ] {
        let bytes = format!("affix {}\0{body}", body.len());
        assert!(Object::decode(bytes.as_bytes()).is_err(), "{body}");
    }
}

fn partition_strategy() -> impl Strategy<Value = PartitionName> {
    "[a-z_]{1,6}(/[a-z0-9-]{1,6}){0,2}".prop_map(|s| PartitionName::new(&s).unwrap())
}

fn id_strategy() -> impl Strategy<Value = ObjectId> {
    any::<[u8; 32]>().prop_map(ObjectId::from_bytes)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Object::decode(&bytes);
        let _ = EncodedObject::from_bytes(bytes).kind();
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        kind in prop_oneof![Just("affix"), Just("checkpoint"), Just("event json e")],
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = format!("{kind} {}\0", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        if let Ok(object) = Object::decode(&bytes) {
            prop_assert_eq!(object.encode(), bytes);
        }
    }

    #[test]
    fn events_round_trip(name in "[A-Za-z][A-Za-z0-9_.:-]{0,20}", data in ".{0,100}") {
        let event = Object::Event(Event::new(EventName::new(&name).unwrap(), data.as_bytes()));
        let bytes = event.encode();
        prop_assert_eq!(Object::decode(&bytes).unwrap(), event);
    }

    #[test]
    fn affixes_round_trip(entries in proptest::collection::vec((partition_strategy(), id_strategy()), 0..12)) {
        let affix = Object::Affix(entries.into_iter().collect());
        let bytes = affix.encode();
        prop_assert_eq!(Object::decode(&bytes).unwrap(), affix);
    }

    #[test]
    fn checkpoints_round_trip(
        affix in id_strategy(),
        parents in proptest::collection::vec(id_strategy(), 0..3),
        session in "[A-Za-z0-9-]{1,40}",
        secs in 0i64..4_000_000_000,
        message in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let date = Utc.timestamp_opt(secs, 0).unwrap();
        let checkpoint = Object::Checkpoint(Checkpoint::new(affix, parents, &session, date, message).unwrap());
        let bytes = checkpoint.encode();
        prop_assert_eq!(Object::decode(&bytes).unwrap(), checkpoint);
    }
}

#[test]
fn versioned_event_vector() {
    // Format version 2: a schema version >= 2 goes into the header as `json;v=<N>`.
    let event = Event::new(
        EventName::new("Deposited").unwrap(),
        r#"{"amount":5000,"currency":"EUR"}"#,
    )
    .with_version(2);
    let encoded = Object::from(event.clone()).to_encoded();
    assert_eq!(
        encoded.bytes(),
        b"event json;v=2 Deposited 32\0{\"amount\":5000,\"currency\":\"EUR\"}"
    );
    assert_eq!(encoded.id(), ObjectId::of(encoded.bytes()));
    assert_eq!(
        encoded.id().to_string(),
        "sha256:c617b4cf0210bcb9bd9809bbdac44aea29824f2f63732d4fcf5da44ee58b28b4",
    );
    let decoded = encoded.decode().unwrap();
    assert_eq!(decoded, Object::Event(event));
    let Object::Event(decoded) = decoded else {
        unreachable!()
    };
    assert_eq!(decoded.version(), 2);
}

#[test]
fn version_one_is_plain_json_and_keeps_go_retro_ids() {
    let plain = Event::new(
        EventName::new("dummy").unwrap(),
        r#"{"foo":"hello","bar":"world"}"#,
    );
    let explicit = plain.clone().with_version(1);
    assert_eq!(explicit, plain);
    assert_eq!(plain.version(), 1);
    assert_eq!(
        Object::from(explicit).to_encoded().id(),
        id("sha256:0756fae7f4a43d60b5532e1d4da5665daeb0f1a5274f363b99a7757511ec88db")
    );
    // 0 is no version: taken as 1.
    assert_eq!(plain.clone().with_version(0).version(), 1);
}

#[test]
fn large_versions_round_trip() {
    let event = Event::new(EventName::new("e").unwrap(), "{}").with_version(u32::MAX);
    let bytes = Object::from(event.clone()).encode();
    assert_eq!(bytes, b"event json;v=4294967295 e 2\0{}");
    assert_eq!(Object::decode(&bytes).unwrap(), Object::Event(event));
}

#[test]
fn versions_that_are_never_written_do_not_decode() {
    for format in [
        "json;v=1",
        "json;v=0",
        "json;v=02",
        "json;v=",
        "json;v=-2",
        "json;v=+2",
        "json;v=2x",
        "json;v=4294967296",
    ] {
        let bytes = format!("event {format} e 2\0{{}}");
        assert_eq!(
            err(bytes.as_bytes()),
            format!("event encoding '{format}' has an invalid schema version (expected 'json;v=<N>' or 'sealed;v=<N>', N a decimal number >= 2 without leading zeros)"),
            "{format}"
        );
    }
    for format in ["json;x=2", "json;", "JSON;v=2", "json;v=2;v=3", "sealedish"] {
        let bytes = format!("event {format} e 2\0{{}}");
        assert!(
            err(bytes.as_bytes()).starts_with(&format!("event encoding '{format}' ")),
            "{format}: {}",
            err(bytes.as_bytes())
        );
    }
    assert_eq!(parse_event_format("json"), Ok(1));
    assert_eq!(parse_event_format("json;v=17"), Ok(17));
    assert_eq!(parse_event_format("sealed;v=3"), Ok(3));
}

/// The data object of the sealed-event vector: salt 00 01 … 0f and the go-retro vector's JSON.
fn vector_data() -> Data {
    let salt: [u8; SALT_LEN] = std::array::from_fn(|i| i as u8);
    Data::new(salt, r#"{"foo":"hello","bar":"world"}"#)
}

#[test]
fn data_object_vector() {
    let encoded = Object::from(vector_data()).to_encoded();
    assert_eq!(
        encoded.bytes(),
        b"data 67\0salt 000102030405060708090a0b0c0d0e0f\n{\"foo\":\"hello\",\"bar\":\"world\"}"
    );
    assert_eq!(encoded.id(), id(DATA_VECTOR_ID));
    assert_eq!(encoded.kind().unwrap(), Kind::Data);
    assert_eq!(encoded.decode().unwrap(), Object::Data(vector_data()));
}

const DATA_VECTOR_ID: &str =
    "sha256:ad1ba5223801fc5f001c736f6dfea2127b2959b77e0ad327754cd723185e25ff";

#[test]
fn sealed_event_vector() {
    let data_id = id(DATA_VECTOR_ID);
    let event = Event::new_sealed(EventName::new("dummy").unwrap(), data_id);
    let encoded = Object::from(event.clone()).to_encoded();
    let expected = format!("event sealed dummy 77\0data {DATA_VECTOR_ID}\n");
    assert_eq!(encoded.bytes(), expected.as_bytes());
    assert_eq!(
        encoded.id(),
        id("sha256:df130314424b0792fccbc8b72b9fda588104c00669946c7d339b4fa75d07d25d")
    );
    let decoded = encoded.decode().unwrap();
    assert_eq!(decoded, Object::Event(event.clone()));
    let Object::Event(decoded) = decoded else {
        unreachable!()
    };
    assert_eq!(decoded.sealed_data(), Some(data_id));
    assert!(decoded.data().is_empty());
    // Resolving the payload never changes the encoding, so the id survives erasure.
    let resolved = decoded.with_resolved_data(r#"{"redacted":true}"#);
    assert_eq!(Object::from(resolved).to_encoded().id(), encoded.id());
}

#[test]
fn sealed_and_data_decoding_is_strict() {
    let good_id = "sha256:".to_owned() + &"ab".repeat(32);
    let sealed = |body: &str| format!("event sealed e {}\0{body}", body.len()).into_bytes();
    assert!(Object::decode(&sealed(&format!("data {good_id}\n"))).is_ok());
    for body in [
        format!("data {good_id}"),
        format!("data {good_id}\n\n"),
        format!("data  {good_id}\n"),
        format!("data {}\n", good_id.to_uppercase()),
        format!("data sha256:{}\n", "AB".repeat(32)),
        format!("date {good_id}\n"),
        "data sha256:abcd\n".to_owned(),
        String::new(),
    ] {
        assert!(
            matches!(
                Object::decode(&sealed(&body)),
                Err(DecodeError::BadSealedBody(_))
            ),
            "{body:?} decoded"
        );
    }
    let data = |body: &str| format!("data {}\0{body}", body.len()).into_bytes();
    assert!(Object::decode(&data(&format!("salt {}\n", "0f".repeat(16)))).is_ok());
    for body in [
        format!("salt {}", "0f".repeat(16)),
        format!("salt {}\n", "0F".repeat(16)),
        format!("salt {}\n", "0f".repeat(15)),
        format!("salt {}x\n", "0f".repeat(16)),
        format!("salt  {}\n", "0f".repeat(16)),
        format!("pepper {}\n", "0f".repeat(16)),
        String::new(),
    ] {
        assert_eq!(
            Object::decode(&data(&body)),
            Err(DecodeError::BadSalt),
            "{body:?}"
        );
    }
    assert!(matches!(
        Object::decode(b"event sealedx e 0\0"),
        Err(DecodeError::UnknownEncoding(_))
    ));
}

proptest! {
    #[test]
    fn versioned_events_round_trip(
        name in "[A-Za-z][A-Za-z0-9_.:-]{0,20}",
        data in ".{0,100}",
        version in 1u32..,
    ) {
        let event = Event::new(EventName::new(&name).unwrap(), data.as_bytes()).with_version(version);
        let bytes = Object::Event(event.clone()).encode();
        prop_assert_eq!(Object::decode(&bytes).unwrap(), Object::Event(event));
    }

    #[test]
    fn event_format_parsing_is_total_and_canonical(format in "((json|sealed)(;v=[0-9]{0,12})?|[ -~]{0,16})") {
        if let Ok(version) = parse_event_format(&format) {
            let base = if format.starts_with("sealed") { "sealed" } else { "json" };
            let canonical = if version == 1 { base.to_owned() } else { format!("{base};v={version}") };
            prop_assert_eq!(canonical, format);
        }
    }
}

proptest! {
    #[test]
    fn data_objects_round_trip(salt in any::<[u8; 16]>(), json in proptest::collection::vec(any::<u8>(), 0..200)) {
        let data = Data::new(salt, json);
        let encoded = Object::from(data.clone()).to_encoded();
        prop_assert_eq!(encoded.decode().unwrap(), Object::Data(data));
    }

    #[test]
    fn sealed_events_round_trip(name in "[A-Za-z][A-Za-z0-9_.:-]{0,20}", data_id in id_strategy()) {
        let event = Event::new_sealed(EventName::new(&name).unwrap(), data_id);
        let encoded = Object::from(event.clone()).to_encoded();
        prop_assert_eq!(encoded.decode().unwrap(), Object::Event(event));
    }

    #[test]
    fn bytes_after_a_sealed_or_data_header_never_panic(
        data_header in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = if data_header {
            format!("data {}\0", body.len()).into_bytes()
        } else {
            format!("event sealed e {}\0", body.len()).into_bytes()
        };
        bytes.extend_from_slice(&body);
        let _ = Object::decode(&bytes);
    }
}

#[test]
fn checkpoint_with_message_data_vector() {
    let mut checkpoint = Checkpoint::new(
        ObjectId::of(b"hello"),
        vec![],
        "s1",
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap(),
        "",
    )
    .unwrap();
    checkpoint.set_field(
        FieldKey::new(MESSAGE_DATA_KEY).unwrap(),
        FieldValue::new(DATA_VECTOR_ID).unwrap(),
    );
    let encoded = Object::from(checkpoint.clone()).to_encoded();
    let expected = format!(
        "checkpoint 202\0affix sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\ndate 2026-12-03T12:00:00Z\nmessage-data {DATA_VECTOR_ID}\nsession s1\n\n\n"
    );
    assert_eq!(String::from_utf8_lossy(encoded.bytes()), expected);
    assert_eq!(encoded.id(), id(MESSAGE_DATA_VECTOR_ID));
    let Object::Checkpoint(decoded) = encoded.decode().unwrap() else {
        unreachable!()
    };
    assert_eq!(decoded.message_data(), Some(id(DATA_VECTOR_ID)));
    let resolved = decoded.with_resolved_message(r#"{"path":"a","name":"b","params":{}}"#);
    assert_eq!(
        resolved.message(),
        br#"{"path":"a","name":"b","params":{}}"#
    );
    assert_eq!(Object::from(resolved).to_encoded().id(), encoded.id());
    // A message beside message-data, or a bad id, is refused.
    let bad = expected
        .replace("\n\n\n", "\n\nx\n")
        .replace("checkpoint 202", "checkpoint 203");
    assert!(Object::decode(bad.as_bytes()).is_err());
    let bad = expected.replace(
        DATA_VECTOR_ID,
        &DATA_VECTOR_ID.to_uppercase().replace("SHA256", "sha256"),
    );
    assert!(Object::decode(bad.as_bytes()).is_err());
}

const MESSAGE_DATA_VECTOR_ID: &str =
    "sha256:b63d74f79a397447ae723391d9a1aa763db5efad1a5f71d747c9c453d196ce9f";

/// The `log` field's vector (docs/format.md): a checkpoint whose only predecessor is its parent
/// `sha256("parent")` commits to the one-leaf log whose head is that id's leaf hash.
#[test]
fn checkpoint_with_log_vector() {
    let parent = ObjectId::of(b"parent");
    let mut frontier = checkpoint_log::Frontier::new();
    frontier.push_id(&parent);
    let head = frontier.head();
    assert_eq!(head.to_string(), format!("1 {LOG_VECTOR_LEAF}"));
    let mut checkpoint = Checkpoint::new(
        ObjectId::of(b"affix"),
        vec![parent],
        "s1",
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap(),
        r#"{"path":"accounts/a","name":"open","params":{}}"#,
    )
    .unwrap();
    checkpoint.set_log_head(head);
    let encoded = Object::from(checkpoint.clone()).to_encoded();
    let expected = format!(
        "checkpoint 314\0affix sha256:3875faf071b29a31d6d9a5f28f2b1504a5b3814615dc27610df3a8d86d638a26\nparent sha256:e47125968b3b71049fbc4802d1e40a71ea1359decfabacf70b34588037d4ff0c\ndate 2026-12-03T12:00:00Z\nlog 1 {LOG_VECTOR_LEAF}\nsession s1\n\n{{\"path\":\"accounts/a\",\"name\":\"open\",\"params\":{{}}}}\n"
    );
    assert_eq!(String::from_utf8_lossy(encoded.bytes()), expected);
    assert_eq!(encoded.id(), id(LOG_VECTOR_ID));
    let Object::Checkpoint(decoded) = encoded.decode().unwrap() else {
        unreachable!()
    };
    assert_eq!(decoded.log_head(), Some(head));
    // A malformed log field does not decode.
    for bad in [
        format!("log 01 {LOG_VECTOR_LEAF}"),
        format!("log 1 {}", LOG_VECTOR_LEAF.to_uppercase()),
        format!("log 1 {}", &LOG_VECTOR_LEAF[..62]).replace("log 1 ", "log 1   "),
        "log 1 xx".to_owned(),
    ] {
        let text = expected.replace(&format!("log 1 {LOG_VECTOR_LEAF}"), &bad);
        let len = text.split_once('\0').unwrap().1.len();
        let text = text.replace("checkpoint 314", &format!("checkpoint {len}"));
        let err = Object::decode(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("log"), "{bad}: {err}");
    }
}

const LOG_VECTOR_LEAF: &str = "7b3b34f6373e3411bb6ccc13c8b721af49be839518c0ba750b88fa41fdc2257c";
const LOG_VECTOR_ID: &str =
    "sha256:0b5ba8653cfb07754dfd7422c66e5894f2b25888899045d87b5743de010c74d5";
