//! `retro test`: given/when/then specs run against the built-in bank and exec-handler manifests,
//! with the TAP report, the exit codes (0 all passed, 7 a case failed, 1 a malformed spec) and
//! the diff of a failing case.

use std::fs;

use crate::common::{
    assert_error, assert_no_panic, fixtures, manifest, misbehaving, retro_in, run, Run,
};

/// `retro test ARGS…` in an empty directory (no depot: none is needed).
fn retro_test(args: &[&str]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    run(retro_in(tmp.path()).arg("test").args(args))
}

/// Writes `text` to a spec file and runs `retro test` on it.
fn spec(text: &str, extra: &[&str]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("spec.jsonl");
    fs::write(&path, text).unwrap();
    let mut args: Vec<&str> = extra.to_vec();
    let path = path.to_str().unwrap().to_owned();
    args.push(&path);
    run(retro_in(tmp.path()).arg("test").args(&args))
}

const OPENED: &str = r#"{"partition":"accounts/a","name":"AccountOpened","data":{"owner":"A"}}"#;

#[test]
fn the_shipped_bank_spec_passes_with_a_tap_report() {
    let path = fixtures().join("specs/bank.jsonl");
    let out = retro_test(&[path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_no_panic(&out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let cases = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{'))
        .count();
    assert!(cases >= 8, "{cases}");
    assert_eq!(lines[0], format!("1..{cases}"));
    assert_eq!(lines.len(), cases + 1, "{}", out.stdout);
    for (i, line) in lines[1..].iter().enumerate() {
        assert!(line.starts_with(&format!("ok {} - ", i + 1)), "{line}");
    }
    assert!(
        out.stdout.contains("ok 7 - an overdraft is rejected\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_case_is_not_ok_with_the_diff_and_exits_7() {
    let text = format!(
        "{}\n{}\n",
        format_args!(
            r#"{{"name":"passes","given":[{OPENED}],"when":{{"path":"accounts/a","name":"deposit","params":{{"amount":5}}}},"then":{{"events":[{{"partition":"accounts/a","name":"Deposited","data":{{"amount":5}}}}]}}}}"#
        ),
        format_args!(
            r#"{{"name":"wrong amount","given":[{OPENED}],"when":{{"path":"accounts/a","name":"deposit","params":{{"amount":5}}}},"then":{{"events":[{{"partition":"accounts/a","name":"Deposited","data":{{"amount":6}}}}]}}}}"#
        ),
    );
    let out = spec(&text, &[]);
    assert_error(&out, 7);
    assert_eq!(
        out.stdout,
        "1..2\n\
         ok 1 - passes\n\
         not ok 2 - wrong amount\n  \
         emitted events differ from the expected ones at events[0] (1 expected, 1 emitted):\n    \
         events[0].data.amount: expected 6, actual 5\n  \
         expected:\n    \
         events[0] {\"partition\":\"accounts/a\",\"name\":\"Deposited\",\"data\":{\"amount\":6}}\n  \
         actual:\n    \
         events[0] {\"partition\":\"accounts/a\",\"name\":\"Deposited\",\"data\":{\"amount\":5}}\n"
    );
    assert!(
        out.stderr.contains("retro: error: 1 of 2 case(s) failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_wrong_rejection_code_says_what_happened() {
    let text = format!(
        r#"{{"name":"overdraw","given":[{OPENED}],"when":{{"path":"accounts/a","name":"withdraw","params":{{"amount":1}}}},"then":{{"rejected":"not_open"}}}}"#
    );
    let out = spec(&text, &[]);
    assert_error(&out, 7);
    assert!(out.stdout.contains("not ok 1 - overdraw\n  expected a rejection 'not_open', but the command was rejected: insufficient_funds: cannot withdraw 1 from accounts/a: the balance is 0\n"), "{}", out.stdout);
}

#[test]
fn a_malformed_line_is_invalid_input_naming_the_line_and_runs_nothing() {
    let good = r#"{"name":"n","when":{"path":"accounts/a","name":"open","params":{"owner":"A"}},"then":{"rejected":"x"}}"#;
    for (bad, why) in [
        (
            r#"{"name":"n","when":{"path":"a/1","name":"x"},"then":{"error":"e"},"extra":1}"#,
            "unknown key \"extra\"",
        ),
        (
            r#"{"name":"n","name":"m","when":{"path":"a/1","name":"x"},"then":{"error":"e"}}"#,
            "the key \"name\" is given twice",
        ),
        (
            r#"{"name":"n","when":{"path":"a/1","name":"x"}"#,
            "not valid JSON",
        ),
        (
            r#"{"name":"n","when":{"path":"a/1","name":"x"},"then":{"error":"e","rejected":"r"}}"#,
            "exactly one of",
        ),
    ] {
        // Line 4: a comment and a blank line count.
        let out = spec(&format!("# cases\n{good}\n\n{bad}\n{good}\n"), &[]);
        assert_error(&out, 1);
        assert!(out.stdout.is_empty(), "nothing runs: {}", out.stdout);
        assert!(
            out.stderr.contains("spec line 4 is not a valid case: ") && out.stderr.contains(why),
            "{bad}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("hint: a case looks like"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_missing_spec_or_manifest_is_an_error() {
    let out = retro_test(&["no-such-spec.jsonl"]);
    assert_error(&out, 1);
    assert!(
        out.stderr
            .contains("cannot read the spec 'no-such-spec.jsonl'"),
        "{}",
        out.stderr
    );
    let bank = fixtures().join("specs/bank.jsonl");
    let out = retro_test(&["--manifest", "no-such.json", bank.to_str().unwrap()]);
    assert_error(&out, 1);
}

#[test]
fn exec_handlers_are_tested_through_their_manifest() {
    let path = fixtures().join("specs/exec-domain.jsonl");
    let out = retro_test(&[
        "--manifest",
        manifest().to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("1..5\nok 1 - open (python handler)\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ok 4 - a note (shell handler)\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("not ok"), "{}", out.stdout);
    // The same spec against the built-in bank (no --manifest): its open emits no currency.
    let out = retro_test(&[path.to_str().unwrap()]);
    assert_error(&out, 7);
    assert!(
        out.stdout.contains("not ok 1 - open (python handler)\n")
            && out
                .stdout
                .contains("events[0].data.currency: expected \"EUR\", actual (none)"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_broken_exec_handler_is_an_error_case() {
    let text = concat!(
        r#"{"name":"garbage","when":{"path":"bad/1","name":"garbage"},"then":{"error":"printed invalid JSON"}}"#,
        "\n",
        r#"{"name":"crash","when":{"path":"bad/1","name":"crash"},"then":{"events":[]}}"#,
        "\n"
    );
    let out = spec(text, &["--manifest", misbehaving().to_str().unwrap()]);
    assert_error(&out, 7);
    assert!(out.stdout.starts_with("1..2\nok 1 - garbage\nnot ok 2 - crash\n  expected 0 event(s), but the command failed: handler 'bad/crash'"), "{}", out.stdout);
}

#[test]
fn a_spec_from_stdin_and_names_that_would_break_tap() {
    let tmp = tempfile::tempdir().unwrap();
    let line = r#"{"name":"two\nlines # not a directive","when":{"path":"accounts/a","name":"open","params":{"owner":"A"}},"then":{"rejected":"x"}}"#;
    let out = run(retro_in(tmp.path())
        .args(["test", "-"])
        .write_stdin(format!("{line}\n")));
    assert_error(&out, 7);
    assert!(
        out.stdout
            .starts_with("1..1\nnot ok 1 - two\\nlines \\# not a directive\n"),
        "{}",
        out.stdout
    );
    let out = run(retro_in(tmp.path())
        .args(["test", "-"])
        .write_stdin("\n# nothing\n"));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1..0\n"),
        "{}",
        out.stderr
    );
}
