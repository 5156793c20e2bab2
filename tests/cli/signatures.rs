//! `retro config signing-key` and `retro verify --signatures`: new checkpoints are signed, and the
//! check names an unsigned checkpoint, one signed by an untrusted key, and one whose signature
//! does not match its bytes.

use crate::common::*;

const OPEN_ALICE: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const DEPOSIT: &str = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5}}"#;

fn public_key(depot: &TestDepot) -> String {
    json(depot.ok(&["config", "signing-key", "--json"]).trim())["public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_generated_key_signs_every_new_checkpoint_and_verify_accepts_them() {
    let depot = TestDepot::new();
    assert_eq!(
        depot.ok(&["config", "signing-key"]),
        "no signing key: new checkpoints are not signed\n"
    );
    let out = depot.ok(&["config", "signing-key", "--generate"]);
    let key_file = depot.dir.join("signing.key");
    let secret = std::fs::read_to_string(&key_file).unwrap();
    assert!(secret.starts_with("retro-ed25519-secret "), "{secret}");
    // The secret is never printed, only the public key.
    assert!(!out.contains(&secret[21..85]), "{out}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = public_key(&depot);
    assert_eq!(out, format!("ed25519 {key} {}\n", key_file.display()));
    depot.apply(OPEN_ALICE);
    depot.apply(DEPOSIT);
    let raw = depot.ok(&["cat-object", "-p", "HEAD"]);
    assert!(raw.contains(&format!("signature ed25519:{key}:")), "{raw}");
    let run = depot.run(&["verify", "--signatures", "--trusted-key", &key]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("2 checkpoint(s) checked, 2 signed"),
        "{}",
        run.stderr
    );
    // A second --generate refuses to overwrite the key.
    depot.fails(&["config", "signing-key", "--generate"], 1);
    // --unset stops signing.
    depot.ok(&["config", "signing-key", "--unset"]);
    let unsigned = depot.apply(DEPOSIT);
    let run = depot.fails(&["verify", "--signatures", "--json"], 7);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines[0]["checkpoint"], unsigned.as_str());
    assert_eq!(lines[0]["problem"], "unsigned");
    assert_eq!(lines.last().unwrap()["problems"], 1);
}

#[test]
fn another_key_and_a_forged_signature_are_named() {
    // Plain events: the forgery below writes its command inline (a sealed depot's checkpoints
    // keep it in a data object, and one with both is not a checkpoint at all).
    let depot = TestDepot::plain();
    depot.ok(&["config", "signing-key", "--generate"]);
    let trusted = public_key(&depot);
    depot.apply(OPEN_ALICE);
    // Sign with another key file.
    let other = depot.tmp.path().join("other.key");
    std::fs::write(
        &other,
        depot::signing::Signer::from_seed([9; 32]).key_file_text(),
    )
    .unwrap();
    depot.ok(&["config", "signing-key", other.to_str().unwrap()]);
    let by_other = depot.apply(DEPOSIT);
    let run = depot.fails(&["verify", "--signatures", "--trusted-key", &trusted], 7);
    assert!(
        run.stdout
            .starts_with(&format!("untrusted {by_other} key ")),
        "{}",
        run.stdout
    );
    // Without --trusted-key any valid signature passes.
    depot.ok(&["verify", "--signatures"]);
    // A checkpoint whose signature field was copied from another: it does not verify.
    let forged = {
        let store = depot::Depot::open(&depot.dir).unwrap();
        let head = store.head().unwrap().unwrap();
        let signed = store.read_checkpoint(&head).unwrap();
        let mut copy = depot::Checkpoint::with_fields(
            signed.affix(),
            vec![head],
            signed
                .fields()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            b"{\"path\":\"accounts/alice\",\"name\":\"deposit\",\"params\":{\"amount\":6}}"
                .to_vec(),
        );
        copy.set_field(
            depot::FieldKey::new("date").unwrap(),
            depot::FieldValue::new("2026-12-03T12:00:00Z").unwrap(),
        );
        let encoded = depot::Object::Checkpoint(copy).to_encoded();
        store.write_objects(std::slice::from_ref(&encoded)).unwrap();
        store
            .update_refs(&[depot::RefEdit {
                name: depot::RefName::master(),
                expected: depot::Expected::MustBe(head),
                new: Some(depot::RefValue::Direct(encoded.id())),
                log: depot::LogInfo::default(),
            }])
            .unwrap();
        encoded.id().to_string()
    };
    let run = depot.fails(&["verify", "--signatures", "--json"], 7);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines[0]["checkpoint"], forged.as_str(), "{}", run.stdout);
    assert_eq!(lines[0]["problem"], "bad-signature");
    assert!(lines[0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    // A range leaves out what its start reaches.
    let run = depot.run(&["verify", "--signatures", "HEAD~1..HEAD"]);
    assert_eq!(run.code, 7);
    assert!(
        run.stderr.contains("1 checkpoint(s) checked"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_keys_and_settings_are_refused_clearly() {
    let depot = TestDepot::new();
    let bad = depot.tmp.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let run = depot.fails_unchanged(&["config", "signing-key", bad.to_str().unwrap()], 1);
    assert!(
        run.stderr.contains("not a retro signing key file"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not a key"), "{}", run.stderr);
    depot.fails_unchanged(&["config", "signing-key", "/nonexistent/key"], 1);
    depot.usage(&["verify", "--trusted-key", "00"]);
    depot.fails(&["verify", "--signatures", "--trusted-key", "xyz"], 1);
    // A configured key that went missing: commands say so instead of writing unsigned.
    let good = depot.tmp.path().join("good.key");
    std::fs::write(
        &good,
        depot::signing::Signer::from_seed([3; 32]).key_file_text(),
    )
    .unwrap();
    depot.ok(&["config", "signing-key", good.to_str().unwrap()]);
    std::fs::remove_file(&good).unwrap();
    let run = depot.fails_unchanged(&["apply", OPEN_ALICE], 1);
    assert!(run.stderr.contains("cannot be used"), "{}", run.stderr);
    depot.ok(&["config", "signing-key", "--unset"]);
    depot.apply(OPEN_ALICE);
}

#[test]
fn retro_signing_key_overrides_the_setting() {
    let depot = TestDepot::new();
    depot.ok(&["config", "signing-key", "--generate"]);
    let configured = public_key(&depot);
    let file = depot.tmp.path().join("env.key");
    let env_key = depot::signing::Signer::from_seed([5; 32]);
    std::fs::write(&file, env_key.key_file_text()).unwrap();
    let out = run(depot
        .cmd()
        .env("RETRO_SIGNING_KEY", &file)
        .args(["apply", OPEN_ALICE]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let raw = depot.ok(&["cat-object", "-p", "HEAD"]);
    assert!(
        raw.contains(&format!("signature ed25519:{}:", env_key.public_key_hex())),
        "{raw}"
    );
    assert_ne!(configured, env_key.public_key_hex());
    let run = depot.fails(&["verify", "--signatures", "--trusted-key", &configured], 7);
    assert!(run.stdout.starts_with("untrusted "), "{}", run.stdout);
}
