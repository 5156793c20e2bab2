//! cat-object: -t, -s, -p, raw bytes, --batch, unique and ambiguous prefixes.

use std::collections::HashMap;

use crate::common::*;

#[test]
fn cat_object_kinds_sizes_and_raw_bytes() {
    let depot = TestDepot::with_history();
    let head = json(depot.ok(&["show", "--json"]).trim());
    let checkpoint = head["checkpoint"].as_str().unwrap();
    let affix = head["affix"].as_str().unwrap();
    let event = head["events"][0]["event"].as_str().unwrap();

    assert_eq!(depot.ok(&["cat-object", "-t", "HEAD"]), "checkpoint\n");
    assert_eq!(depot.ok(&["cat-object", "-t", checkpoint]), "checkpoint\n");
    assert_eq!(depot.ok(&["cat-object", "-t", affix]), "affix\n");
    assert_eq!(depot.ok(&["cat-object", "-t", event]), "event\n");

    // Raw: `<kind> <size>\0<body>`, and -s gives the body size.
    for (id, kind) in [
        (checkpoint, "checkpoint"),
        (affix, "affix"),
        (event, "event"),
    ] {
        let raw = depot.cmd().args(["cat-object", id]).output().unwrap();
        assert!(raw.status.success());
        let bytes = raw.stdout;
        let nul = bytes
            .iter()
            .position(|&b| b == 0)
            .expect("a NUL after the header");
        let header = std::str::from_utf8(&bytes[..nul]).unwrap();
        let size: usize = depot.ok(&["cat-object", "-s", id]).trim().parse().unwrap();
        assert!(
            header.starts_with(&format!("{kind} ")) && header.ends_with(&format!(" {size}")),
            "{header:?} is not '{kind} … {size}'"
        );
        assert_eq!(bytes.len() - nul - 1, size);
    }

    // -p: readable forms.
    let pretty = depot.ok(&["cat-object", "-p", "HEAD"]);
    assert!(
        pretty.starts_with(&format!("affix {affix}\nparent sha256:")),
        "{pretty}"
    );
    assert!(pretty.contains("\nsession s-ann\n"), "{pretty}");
    assert!(pretty.contains("\"amount\": 300"), "{pretty}");
    let pretty = depot.ok(&["cat-object", "-p", affix]);
    assert_eq!(pretty, format!("0 accounts/alice {event}\n"));
    let pretty = depot.ok(&["cat-object", "-p", event]);
    assert_eq!(pretty, "event Withdrawn\n{\n  \"amount\": 300\n}\n");
}

#[test]
fn cat_object_takes_unique_prefixes() {
    let depot = TestDepot::with_history();
    let head = json(depot.ok(&["show", "--json"]).trim());
    let id = head["checkpoint"].as_str().unwrap();
    let hex = &id[7..];
    for prefix in [&hex[..4], &hex[..5], &hex[..12], hex, &id[..11]] {
        assert_eq!(
            depot.ok(&["cat-object", "-t", prefix]),
            "checkpoint\n",
            "prefix {prefix}"
        );
    }
    let event = head["events"][0]["event"].as_str().unwrap();
    assert_eq!(depot.ok(&["cat-object", "-t", &event[7..13]]), "event\n");
    // Fewer than 4 hex digits is not a prefix.
    depot.fails_unchanged(&["cat-object", "-t", &hex[..3]], 1);
}

#[test]
fn cat_object_batch() {
    let depot = TestDepot::with_history();
    let head = json(depot.ok(&["show", "--json"]).trim());
    let id = head["checkpoint"].as_str().unwrap().to_owned();
    let raw_head = depot
        .cmd()
        .args(["cat-object", "HEAD"])
        .output()
        .unwrap()
        .stdout;
    let raw_parent = depot
        .cmd()
        .args(["cat-object", "HEAD~1"])
        .output()
        .unwrap()
        .stdout;
    let parent = json(depot.ok(&["show", "--json", "HEAD~1"]).trim())["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();

    let input = format!("HEAD\n\nnope\n{}\n", &parent[7..17]);
    let out = depot
        .cmd()
        .args(["cat-object", "--batch"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = format!("{id} checkpoint {}\n", raw_head.len()).into_bytes();
    expected.extend_from_slice(&raw_head);
    expected.extend_from_slice(b"\nnope missing\n");
    expected.extend_from_slice(format!("{parent} checkpoint {}\n", raw_parent.len()).as_bytes());
    expected.extend_from_slice(&raw_parent);
    expected.push(b'\n');
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected)
    );

    // The log piped into --batch, as in `retro help cat-object`.
    let ids: String = json_lines(&depot.ok(&["log", "--json"]))
        .iter()
        .map(|v| format!("{}\n", v["checkpoint"].as_str().unwrap()))
        .collect();
    let out = depot.ok_stdin(&["cat-object", "--batch"], &ids);
    assert_eq!(out.matches(" checkpoint ").count(), 8);
    assert!(!out.contains("missing"));
}

#[test]
fn ambiguous_prefix_is_an_error_with_candidates() {
    // 300 checkpoints of fixed content: 900 objects, so some share their first 4 hex digits.
    let depot = TestDepot::with_bulk(300);
    let mut ids: Vec<String> = Vec::new();
    for value in json_lines(&depot.ok(&["log", "--json"])) {
        ids.push(value["checkpoint"].as_str().unwrap().to_owned());
        ids.push(value["affix"].as_str().unwrap().to_owned());
    }
    for value in json_lines(&depot.ok(&["events", "--json"])) {
        ids.push(value["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 900);
    let mut by_prefix: HashMap<String, Vec<String>> = HashMap::new();
    for id in &ids {
        by_prefix
            .entry(id[7..11].to_owned())
            .or_default()
            .push(id.clone());
    }
    let mut shared: Vec<(&String, &Vec<String>)> =
        by_prefix.iter().filter(|(_, v)| v.len() > 1).collect();
    shared.sort();
    let (prefix, candidates) = shared
        .first()
        .expect("900 fixed objects include two sharing a 4-hex-digit prefix");

    for name in [prefix.to_string(), format!("sha256:{prefix}")] {
        let run = depot.fails_unchanged(&["cat-object", "-t", &name], 1);
        assert!(run.stderr.contains("ambiguous"), "{}", run.stderr);
        let hint = run
            .stderr
            .lines()
            .find(|l| l.starts_with("hint: candidates: "))
            .unwrap_or_else(|| panic!("no candidates hint:\n{}", run.stderr));
        for candidate in candidates.iter() {
            assert!(hint.contains(&candidate[7..19]), "{hint} lacks {candidate}");
        }
    }
    depot.fails_unchanged(&["show", prefix], 1);
    depot.fails_unchanged(&["log", prefix], 1);
    // A longer prefix that tells them apart works.
    let first = &candidates[0];
    let mut len = 5;
    while candidates
        .iter()
        .filter(|c| c[7..7 + len] == first[7..7 + len])
        .count()
        > 1
    {
        len += 1;
    }
    depot.ok(&["cat-object", "-t", &first[7..7 + len]]);
}

#[test]
fn i16_6_a_short_prefix_and_an_unknown_full_id_say_what_is_wrong() {
    let depot = TestDepot::new();
    let id = depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    // A prefix the id really starts with, but under 4 digits.
    let short = &id["sha256:".len().."sha256:".len() + 3];
    let run = depot.fails(&["cat-object", "-t", short], 1);
    assert!(
        run.stderr
            .contains("an id prefix needs at least 4 hex digits (this has 3)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("starts with it"), "{}", run.stderr);
    // A well-formed full id that is not in the depot.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let run = depot.fails(&["cat-object", "-t", &unknown], 1);
    assert!(
        run.stderr.contains(&format!("no such object '{unknown}'")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("starts with it"), "{}", run.stderr);
}
